//! The shell side of authentication: one live key set per identity provider (SPEC §4.4,
//! §4.9), fetched from its `jwks_url` (or `jwks_file`, or the `jwks_uri` its OpenID discovery
//! document names), kept behind a lock-free swap, refreshed in the background on the JWKS
//! `Cache-Control: max-age`, and refreshed early (single flight, at most once per cooldown, per
//! provider) when a token names an unknown kid.
//!
//! The token's `iss` picks the provider before any key is looked up (the pure verifier does
//! that, and its one cache serves every provider), so a key of one provider never verifies a
//! token naming another, whatever the `kid`s.
//!
//! It fails closed: a provider whose key set never loaded answers its tokens 503 while the
//! others keep working, a failed fetch (a document without one usable key included) keeps the
//! last good set, and a key that leaves a set takes its cached tokens with it. It never
//! contacts any URL but the configured ones (a token's `jku`/`x5u` are never followed).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use crate::auth::keyset::KeySet;
use crate::auth::verify::{AuthPolicy, PolicyError, TokenVerifier, VerifiedToken};
use crate::config::{AuthSettings, ProviderSettings};
use crate::error::GatewayError;
use crate::metrics::Metrics;

use super::fetch::{FetchError, Fetched, Fetcher};

/// Why an [`Authenticator`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The JWKS client cannot be built.
    #[error("jwks client: {0}")]
    Client(#[from] FetchError),
}

/// Refresh period when the JWKS response has no usable `max-age` (SPEC §4.4).
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// The unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One provider's live key set and its refresh state.
struct Provider {
    name: String,
    keys: ArcSwapOption<KeySet>,
    /// Bumped on every successful load, so waiters can tell that someone else refreshed.
    generation: AtomicU64,
    /// When the last successful load asked to be refreshed, in ms after it.
    next_refresh_ms: AtomicU64,
    /// Unix time of the last successful load (0 = never).
    loaded_at: AtomicI64,
    fetcher: Fetcher,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    /// Single flight: one fetch at a time, shared by every request that needs it.
    fetch_lock: tokio::sync::Mutex<()>,
}

/// Authentication for the request path: every provider's live key set plus the verifier.
pub struct Authenticator {
    providers: Vec<Provider>,
    verifier: TokenVerifier,
    min_refresh: Duration,
    max_refresh: Duration,
    cooldown: Duration,
    metrics: Arc<Metrics>,
}

fn policy(settings: &AuthSettings, provider: &ProviderSettings) -> AuthPolicy {
    AuthPolicy {
        issuer: provider.issuer.clone(),
        audiences: provider.audiences.clone(),
        algorithms: provider.algorithms.clone(),
        leeway_s: settings.leeway_s,
        max_token_lifetime_s: settings.max_token_lifetime_s,
        required_scopes: provider.required_scopes.clone(),
        claims_to_headers: provider
            .claims_to_headers
            .iter()
            .map(|(claim, header)| (claim.clone(), header.as_str().to_owned()))
            .collect(),
        key_claim: settings.key_claim.clone(),
    }
}

impl Authenticator {
    /// An authenticator with no key set yet: it refuses every token until the first load.
    pub fn new(settings: &AuthSettings, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let policies: Vec<AuthPolicy> = settings
            .providers
            .iter()
            .map(|p| policy(settings, p))
            .collect();
        let verifier = if settings.select_by_issuer {
            TokenVerifier::with_providers(policies, settings.verified_cache_capacity)?
        } else {
            let single = policies.into_iter().next().ok_or(PolicyError::NoProvider)?;
            TokenVerifier::new(single, settings.verified_cache_capacity)?
        };
        let mut providers = Vec::with_capacity(settings.providers.len());
        for p in &settings.providers {
            providers.push(Provider {
                name: p.name.clone(),
                keys: ArcSwapOption::empty(),
                generation: AtomicU64::new(0),
                next_refresh_ms: AtomicU64::new(0),
                loaded_at: AtomicI64::new(0),
                fetcher: Fetcher::new(p.jwks.clone(), settings.jwks_max_refresh)?,
                last_unknown_kid_fetch: Mutex::new(None),
                fetch_lock: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Self {
            providers,
            verifier,
            min_refresh: settings.jwks_min_refresh,
            max_refresh: settings.jwks_max_refresh,
            cooldown: settings.unknown_kid_cooldown,
            metrics,
        })
    }

    /// Whether at least one provider has a key set (readiness).
    pub fn has_key_set(&self) -> bool {
        self.providers.iter().any(|p| p.keys.load().is_some())
    }

    /// The names of the providers without a key set, for `/readyz`.
    pub fn providers_without_keys(&self) -> Vec<&str> {
        self.providers
            .iter()
            .filter(|p| p.keys.load().is_none())
            .map(|p| p.name.as_str())
            .collect()
    }

    /// How many providers there are.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// The name of provider `index` (its label in logs and metrics).
    pub fn provider_name(&self, index: usize) -> &str {
        self.providers.get(index).map_or("", |p| p.name.as_str())
    }

    /// Verifies the `Authorization` header value of a request: the provider that the token
    /// belongs to (when one could be told), and the verdict.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> (Option<usize>, Result<Arc<VerifiedToken>, GatewayError>) {
        let prepared = match self.verifier.prepare(authorization) {
            Ok(prepared) => prepared,
            Err(e) => return (None, Err(e.into())),
        };
        let index = prepared.provider;
        let Some(provider) = self.providers.get(index) else {
            return (Some(index), Err(GatewayError::KeySetUnavailable));
        };
        let generation = provider.generation.load(Ordering::Acquire);
        let Some(keys) = provider.keys.load_full() else {
            return (Some(index), Err(GatewayError::KeySetUnavailable));
        };
        let verdict = match self.verifier.finish(&prepared, &keys, unix_now()) {
            Err(e) if e.wants_key_refresh() => {
                if self.refresh_for_unknown_kid(index, generation).await {
                    match provider.keys.load_full() {
                        Some(keys) => self
                            .verifier
                            .finish(&prepared, &keys, unix_now())
                            .map_err(GatewayError::from),
                        None => Err(e.into()),
                    }
                } else {
                    Err(e.into())
                }
            }
            other => other.map_err(GatewayError::from),
        };
        (Some(index), verdict)
    }

    /// Brings the verified-token cache counters and the key-set ages into the metrics (called
    /// before a scrape).
    pub fn sync_metrics(&self) {
        let stats = self.verifier.cache_stats();
        for (label, total) in [("hit", stats.hits), ("miss", stats.misses)] {
            let counter = self.metrics.token_cache.with_label_values(&[label]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.metrics.token_cache_entries.set(stats.entries as i64);
        for provider in &self.providers {
            let loaded_at = provider.loaded_at.load(Ordering::Acquire);
            let age = if loaded_at > 0 {
                (unix_now() as i64 - loaded_at).max(0)
            } else {
                -1
            };
            self.metrics
                .jwks_age
                .with_label_values(&[&provider.name])
                .set(age);
            self.metrics
                .jwks_loaded_at
                .with_label_values(&[&provider.name])
                .set(loaded_at);
        }
    }

    /// An unknown kid may mean the issuer rotated keys: refresh, but at most once per cooldown
    /// and once for all the requests waiting at the same time. True when a newer set is in.
    async fn refresh_for_unknown_kid(&self, index: usize, seen_generation: u64) -> bool {
        let Some(provider) = self.providers.get(index) else {
            return false;
        };
        let _flight = provider.fetch_lock.lock().await;
        if provider.generation.load(Ordering::Acquire) != seen_generation {
            return true;
        }
        {
            let Ok(mut last) = provider.last_unknown_kid_fetch.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < self.cooldown) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.load_locked(index).await.is_ok()
    }

    /// Fetches and installs every provider's key set now, all at once (start-up, SIGHUP).
    pub async fn refresh(&self) {
        let all = (0..self.providers.len()).map(|index| self.refresh_provider(index));
        // Each failure is logged and counted where it happens.
        let _ = futures::future::join_all(all).await;
    }

    /// Fetches and installs provider `index`'s key set now; returns when to refresh next.
    pub async fn refresh_provider(&self, index: usize) -> Result<Duration, FetchError> {
        let Some(provider) = self.providers.get(index) else {
            return Err(FetchError::Invalid("no such provider".to_owned()));
        };
        let _flight = provider.fetch_lock.lock().await;
        self.load_locked(index).await
    }

    async fn load_locked(&self, index: usize) -> Result<Duration, FetchError> {
        let Some(provider) = self.providers.get(index) else {
            return Err(FetchError::Invalid("no such provider".to_owned()));
        };
        let result = provider.fetcher.fetch().await;
        if let Err(e) = &result {
            tracing::warn!(
                provider = %provider.name,
                jwks = %provider.fetcher.origin(),
                error = %e,
                "jwks fetch failed"
            );
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .jwks_fetches
            .with_label_values(&[outcome, &provider.name])
            .inc();
        let Fetched { keys, max_age } = result?;
        tracing::info!(provider = %provider.name, keys = keys.len(), "jwks loaded");
        // Publish first, then sweep the cache: a token verified against the old set after the
        // sweep is still caught on its next hit, which re-checks its key.
        let keys = Arc::new(keys);
        provider.keys.store(Some(keys.clone()));
        self.verifier.retain_keys_of(index, &keys);
        provider.generation.fetch_add(1, Ordering::AcqRel);
        provider
            .loaded_at
            .store(unix_now() as i64, Ordering::Release);
        let next = max_age
            .unwrap_or(DEFAULT_REFRESH)
            .clamp(self.min_refresh, self.max_refresh);
        provider
            .next_refresh_ms
            .store(next.as_millis() as u64, Ordering::Release);
        Ok(next)
    }

    /// Whether provider `index` has a key set.
    pub(super) fn provider_has_keys(&self, index: usize) -> bool {
        self.providers
            .get(index)
            .is_some_and(|p| p.keys.load().is_some())
    }

    /// How long provider `index`'s last successful load asked to wait before the next refresh.
    pub(super) fn next_refresh(&self, index: usize) -> Duration {
        self.providers.get(index).map_or(DEFAULT_REFRESH, |p| {
            Duration::from_millis(p.next_refresh_ms.load(Ordering::Acquire))
        })
    }
}
