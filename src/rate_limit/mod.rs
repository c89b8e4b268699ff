//! Per-key rate limits (SPEC §4.10): a GCRA token bucket of `requests_per_second` and `burst`
//! per key. Each instance has its own, from the `governor` crate (keyed state in a concurrent
//! map); with `redis_url` the buckets live in Redis and every instance shares them
//! ([`shared`]), the local ones standing in whenever Redis is down or slow. Checked after
//! authentication and before the body is read, so a refused token costs no budget. Local keys
//! that have not been seen for a while are dropped now and then, so the map stays as large as
//! the set of active callers.

pub mod shared;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{RateKey, RateLimitSettings};
use crate::metrics::Metrics;
use shared::Backend;

/// The bucket of tokens that lack the claim the limit is keyed on: they share one.
pub const NO_CLAIM_KEY: &str = "\u{0}no-claim";

/// Every this many checks, buckets that are full again (idle callers) are dropped.
const PRUNE_EVERY: u64 = 1 << 16;

/// The limiter of one gateway instance.
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    settings: RateLimitSettings,
    checks: AtomicU64,
    shared: Option<Arc<Backend>>,
}

impl Limiter {
    /// A limiter for `settings`. With a `redis_url`, the limit is shared once
    /// [`shared::BackendService`] (over [`Limiter::backend`]) runs on the same server; until
    /// then, and whenever Redis fails, it is local.
    pub fn new(settings: RateLimitSettings, metrics: &Metrics) -> Self {
        let per_second = NonZeroU32::new(settings.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let shared = settings.redis_url.clone().map(|url| {
            Arc::new(Backend::new(
                url,
                settings.requests_per_second,
                settings.burst,
                metrics.rate_limit_backend_errors.clone(),
                metrics.rate_limit_backend_up.clone(),
            ))
        });
        Self {
            buckets: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            settings,
            checks: AtomicU64::new(0),
            shared,
        }
    }

    /// The Redis side, when the limit is shared: its [`shared::BackendService`] must run.
    pub fn backend(&self) -> Option<Arc<Backend>> {
        self.shared.clone()
    }

    /// Whether the limit applies to a route: the finish call only, or all of the API.
    pub fn applies(&self, is_finish: bool, is_api: bool) -> bool {
        if self.settings.all_api_routes {
            is_api
        } else {
            is_finish
        }
    }

    /// The key of a request: the verified claim's value (the shared no-claim bucket without
    /// it), or the TCP peer's address.
    pub fn key(&self, claim: Option<&str>, peer: Option<IpAddr>) -> String {
        match &self.settings.key {
            RateKey::Claim(_) => claim.unwrap_or(NO_CLAIM_KEY).to_owned(),
            RateKey::Ip => peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        }
    }

    /// Takes one request from `key`'s bucket, shared when Redis answers within 50 ms, local
    /// otherwise; `Err` with the wait until the next one would be admitted.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            if let Some(verdict) = shared.check(key).await {
                return verdict;
            }
        }
        self.check_local(key)
    }

    /// [`Limiter::check`] on this instance's own buckets.
    pub fn check_local(&self, key: &str) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Whole seconds to announce in `Retry-After` for a wait (at least 1).
    pub fn retry_after_s(wait: Duration) -> u64 {
        wait.as_secs_f64().ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: u32, burst: u32) -> Limiter {
        let metrics = Metrics::new().expect("metrics");
        Limiter::new(
            RateLimitSettings {
                key: RateKey::Claim("sub".into()),
                requests_per_second: rps,
                burst,
                all_api_routes: false,
                redis_url: None,
            },
            &metrics,
        )
    }

    #[test]
    fn a_burst_is_admitted_then_the_sustained_rate() {
        let l = limiter(1, 3);
        for _ in 0..3 {
            assert!(l.check_local("alice").is_ok());
        }
        let wait = l.check_local("alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(Limiter::retry_after_s(wait), 1);
        // Another key has its own bucket.
        assert!(l.check_local("bob").is_ok());
    }

    #[test]
    fn tokens_without_the_claim_share_one_bucket() {
        let l = limiter(1, 1);
        assert_eq!(l.key(None, None), NO_CLAIM_KEY);
        assert!(l.check_local(&l.key(None, None)).is_ok());
        assert!(l.check_local(&l.key(None, None)).is_err());
        assert_eq!(l.key(Some("alice"), None), "alice");
    }
}
