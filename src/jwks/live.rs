//! The shell side of authentication. The live key set: fetched from `auth.jwks_url` (or read from `auth.jwks_file`), kept behind a
//! lock-free swap, refreshed in the background on the JWKS `Cache-Control: max-age`, and
//! refreshed early (single flight, at most once per cooldown) when a token names an unknown kid.
//!
//! It fails closed: with no key set ever loaded every protected request gets 503, a failed fetch
//! (a document without one usable key included) keeps the last good set, and a key that leaves the set takes its cached tokens with it.
//! It never contacts any URL but the configured one (a token's `jku`/`x5u` are never followed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use crate::auth::keyset::KeySet;
use crate::auth::verify::{AuthPolicy, PolicyError, TokenVerifier, VerifiedToken};
use crate::config::AuthSettings;
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

/// Authentication for the request path: the live key set plus the token verifier.
pub struct Authenticator {
    keys: ArcSwapOption<KeySet>,
    /// Bumped on every successful load, so waiters can tell that someone else refreshed.
    generation: AtomicU64,
    /// When the last successful load asked to be refreshed, in ms after it.
    next_refresh_ms: AtomicU64,
    verifier: TokenVerifier,
    fetcher: Fetcher,
    min_refresh: Duration,
    max_refresh: Duration,
    cooldown: Duration,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    /// Single flight: one fetch at a time, shared by every request that needs it.
    fetch_lock: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

/// The unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authenticator {
    /// An authenticator with no key set yet: it refuses every token until the first load.
    pub fn new(settings: &AuthSettings, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let policy = AuthPolicy {
            issuer: settings.issuer.clone(),
            audiences: settings.audiences.clone(),
            algorithms: settings.algorithms.clone(),
            leeway_s: settings.leeway_s,
            max_token_lifetime_s: settings.max_token_lifetime_s,
            required_scopes: settings.required_scopes.clone(),
            claims_to_headers: settings
                .claims_to_headers
                .iter()
                .map(|(claim, header)| (claim.clone(), header.as_str().to_owned()))
                .collect(),
        };
        Ok(Self {
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            next_refresh_ms: AtomicU64::new(0),
            verifier: TokenVerifier::new(policy, settings.verified_cache_capacity)?,
            fetcher: Fetcher::new(settings.jwks.clone())?,
            min_refresh: settings.jwks_min_refresh,
            max_refresh: settings.jwks_max_refresh,
            cooldown: settings.unknown_kid_cooldown,
            last_unknown_kid_fetch: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// Whether a key set has been loaded (readiness).
    pub fn has_key_set(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Verifies the `Authorization` header value of a request.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Arc<VerifiedToken>, GatewayError> {
        let generation = self.generation.load(Ordering::Acquire);
        let Some(keys) = self.keys.load_full() else {
            return Err(GatewayError::KeySetUnavailable);
        };
        match self.verifier.verify(&keys, authorization, unix_now()) {
            Err(e) if e.wants_key_refresh() => {
                if self.refresh_for_unknown_kid(generation).await {
                    if let Some(keys) = self.keys.load_full() {
                        return Ok(self.verifier.verify(&keys, authorization, unix_now())?);
                    }
                }
                Err(e.into())
            }
            other => Ok(other?),
        }
    }

    /// Brings the verified-token cache counters into the metrics (called before a scrape).
    pub fn sync_metrics(&self) {
        let stats = self.verifier.cache_stats();
        for (label, total) in [("hit", stats.hits), ("miss", stats.misses)] {
            let counter = self.metrics.token_cache.with_label_values(&[label]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.metrics.token_cache_entries.set(stats.entries as i64);
        let loaded_at = self.metrics.jwks_loaded_at.get();
        let age = if loaded_at > 0 {
            (unix_now() as i64 - loaded_at).max(0)
        } else {
            -1
        };
        self.metrics.jwks_age.set(age);
    }

    /// An unknown kid may mean the issuer rotated keys: refresh, but at most once per cooldown
    /// and once for all the requests waiting at the same time. True when a newer set is in.
    async fn refresh_for_unknown_kid(&self, seen_generation: u64) -> bool {
        let _flight = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return true;
        }
        {
            let Ok(mut last) = self.last_unknown_kid_fetch.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < self.cooldown) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.load_locked().await.is_ok()
    }

    /// Fetches and installs the key set now; returns when to refresh next.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let _flight = self.fetch_lock.lock().await;
        self.load_locked().await
    }

    async fn load_locked(&self) -> Result<Duration, FetchError> {
        let result = self.fetcher.fetch().await;
        if let Err(e) = &result {
            tracing::warn!(jwks = %self.fetcher.origin(), error = %e, "jwks fetch failed");
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .jwks_fetches
            .with_label_values(&[outcome])
            .inc();
        let Fetched { keys, max_age } = result?;
        tracing::info!(keys = keys.len(), "jwks loaded");
        // Publish first, then sweep the cache: a token verified against the old set after the
        // sweep is still caught on its next hit, which re-checks its key.
        let keys = Arc::new(keys);
        self.keys.store(Some(keys.clone()));
        self.verifier.retain_keys(&keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.jwks_loaded_at.set(unix_now() as i64);
        let next = max_age
            .unwrap_or(DEFAULT_REFRESH)
            .clamp(self.min_refresh, self.max_refresh);
        self.next_refresh_ms
            .store(next.as_millis() as u64, Ordering::Release);
        Ok(next)
    }

    /// How long the last successful load asked to wait before the next refresh.
    pub(super) fn next_refresh(&self) -> Duration {
        Duration::from_millis(self.next_refresh_ms.load(Ordering::Acquire))
    }
}
