//! The live key set: fetched from `auth.jwks_url` (or read from `auth.jwks_file`), kept behind a
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
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::keyset::KeySet;
use super::verify::{AuthPolicy, PolicyError, TokenVerifier, VerifiedToken};
use crate::config::{AuthSettings, JwksSource};
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// Refresh period when the JWKS response has no usable `max-age` (SPEC §4.4).
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Retry backoff cap while fetches fail.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A JWKS document larger than this is refused unread.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// One fetch may take this long in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a key set could not be loaded (logged and counted, never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network or HTTP-level failure.
    #[error("fetch failed: {0}")]
    Http(String),
    /// The issuer answered with a non-200 status.
    #[error("issuer answered status {0}")]
    Status(u16),
    /// The document is larger than the limit.
    #[error("document over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The key file could not be read.
    #[error("cannot read key file: {0}")]
    File(String),
    /// The document is not a JWKS.
    #[error("not a JWKS: {0}")]
    Invalid(String),
    /// The document holds no key the gateway can use: publishing it would refuse every token.
    #[error("no usable key ({skipped} skipped)")]
    NoUsableKey {
        /// Keys refused one by one (each logged with its reason).
        skipped: usize,
    },
}

/// Authentication for the request path: the live key set plus the token verifier.
pub struct Authenticator {
    keys: ArcSwapOption<KeySet>,
    /// Bumped on every successful load, so waiters can tell that someone else refreshed.
    generation: AtomicU64,
    /// When the last successful load asked to be refreshed, in ms after it.
    next_refresh_ms: AtomicU64,
    verifier: TokenVerifier,
    source: JwksSource,
    client: reqwest::Client,
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
    pub fn new(settings: &AuthSettings, metrics: Arc<Metrics>) -> Result<Self, PolicyError> {
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
        // No pooling: fetches are minutes apart and may run on different runtimes (the first
        // one happens before Pingora's runtimes exist).
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Self {
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            next_refresh_ms: AtomicU64::new(0),
            verifier: TokenVerifier::new(policy, settings.verified_cache_capacity)?,
            source: settings.jwks.clone(),
            client,
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
        let result = self.fetch().await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "jwks fetch failed");
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .jwks_fetches
            .with_label_values(&[outcome])
            .inc();
        let (keys, max_age) = result?;
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

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let (bytes, max_age) = match &self.source {
            JwksSource::Url(url) => self.fetch_url(url).await?,
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| FetchError::File(e.to_string()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(FetchError::TooLarge);
                }
                (bytes, None)
            }
        };
        let (keys, skipped) =
            KeySet::from_jwks_json(&bytes).map_err(|e| FetchError::Invalid(e.to_string()))?;
        for skip in &skipped {
            tracing::warn!(key = %skip, "jwks key skipped");
        }
        if keys.is_empty() {
            // Counted as a failed fetch: the last good set keeps serving, and a gateway that
            // never had one stays not ready.
            return Err(FetchError::NoUsableKey {
                skipped: skipped.len(),
            });
        }
        Ok((keys, max_age))
    }

    async fn fetch_url(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }

    /// The background service that keeps the key set fresh.
    pub fn refresher(self: &Arc<Self>) -> JwksRefresher {
        JwksRefresher(self.clone())
    }
}

/// `max-age=N` from a `Cache-Control` value; `no-cache`/`no-store` mean "as soon as allowed".
fn max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("max-age") {
            result = arg
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
    }
    result
}

/// Pingora background service: loads at start, then refreshes on the schedule the issuer asks
/// for, retrying failures with a backoff capped at 30 s.
pub struct JwksRefresher(Arc<Authenticator>);

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(250);
        // A set loaded before the listeners opened is fresh: wait out its refresh period first.
        if self.0.has_key_set() {
            let wait = Duration::from_millis(self.0.next_refresh_ms.load(Ordering::Acquire));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        loop {
            let wait = match self.0.refresh().await {
                Ok(next) => {
                    backoff = Duration::from_millis(250);
                    next
                }
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
