//! Per-key rate limits (SPEC §4.10): a GCRA token bucket of `requests_per_second` and `burst`
//! per key. Each instance has its own, from the `governor` crate (keyed state in a concurrent
//! map); with `redis_url` the buckets live in Redis and every instance shares them
//! ([`shared`]), the local ones standing in whenever Redis is down or slow. Checked after
//! authentication and before the body is read, so a refused token costs no budget. A claim's
//! bucket belongs to its identity provider (`sub` is unique only within one issuer), and a
//! request without a token (a public path, with `routes = "api"`) is limited by its address,
//! never in the bucket of tokens without the claim. Local keys
//! that have not been seen for a while are dropped now and then, so the map stays as large as
//! the set of active callers.

pub mod shared;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{RateKey, RateLimitSettings};
use crate::metrics::Metrics;
use shared::Backend;

/// The bucket of tokens that lack the claim the limit is keyed on: they share one.
pub const NO_CLAIM_KEY: &str = "\u{0}no-claim";

/// About every this many checks, buckets that are full again (idle callers) are dropped.
const PRUNE_EVERY: u64 = 1 << 16;

/// The limiter of one gateway instance.
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    settings: RateLimitSettings,
    /// Per identity provider (by index): the key prefix of its tokens' buckets.
    token_prefixes: Vec<String>,
    shared: Option<Arc<Backend>>,
}

impl Limiter {
    /// A limiter for `settings`. With a `redis_url`, the limit is shared once
    /// [`shared::BackendService`] (over [`Limiter::backend`]) runs on the same server; until
    /// then, and whenever Redis fails, it is local. `providers` names each identity provider
    /// (by index) in a way every instance sharing the Redis agrees on: its issuer, or its name
    /// when it has none.
    pub fn new(settings: RateLimitSettings, providers: &[&str], metrics: &Metrics) -> Self {
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
        // Length-prefixed parts, so no claim value can reach another provider's or claim's key.
        let token_prefixes = match &settings.key {
            RateKey::Claim(claim) => providers
                .iter()
                .map(|provider| format!("{}:{claim}{}:{provider}", claim.len(), provider.len()))
                .collect(),
            RateKey::Ip => Vec::new(),
        };
        Self {
            buckets: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            settings,
            token_prefixes,
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

    /// The key of a request. Keyed on a claim: with a verified token (`token`: its provider's
    /// index and the claim's value), the claim's value within its provider (the provider's
    /// no-claim bucket when the token lacks it); without a token, the TCP peer's address.
    /// Keyed on `ip`: the TCP peer's address.
    pub fn key(&self, token: Option<(usize, Option<&str>)>, peer: Option<IpAddr>) -> String {
        match (&self.settings.key, token) {
            (RateKey::Claim(_), Some((provider, claim))) => {
                let prefix = self.token_prefixes.get(provider).map_or("", String::as_str);
                format!("{prefix}{}", claim.unwrap_or(NO_CLAIM_KEY))
            }
            _ => match peer {
                Some(ip) => format!("ip:{ip}"),
                None => "ip:unknown".to_owned(),
            },
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
        // One check in PRUNE_EVERY, drawn from the thread's own generator: a shared counter
        // would bounce its cache line between the worker threads on every request
        // (criterion `contention/rate_limit_local`).
        if fastrand::u64(..PRUNE_EVERY) == 0 {
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

    fn limiter_on(key: RateKey, rps: u32, burst: u32) -> Limiter {
        let metrics = Metrics::new().expect("metrics");
        Limiter::new(
            RateLimitSettings {
                key,
                requests_per_second: rps,
                burst,
                all_api_routes: false,
                redis_url: None,
            },
            &["https://idp.example/", "https://partner.example/"],
            &metrics,
        )
    }

    fn limiter(rps: u32, burst: u32) -> Limiter {
        limiter_on(RateKey::Claim("sub".into()), rps, burst)
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
        let no_claim = l.key(Some((0, None)), None);
        assert!(no_claim.ends_with(NO_CLAIM_KEY), "{no_claim:?}");
        assert!(l.check_local(&no_claim).is_ok());
        assert!(l.check_local(&l.key(Some((0, None)), None)).is_err());
        assert!(l
            .check_local(&l.key(Some((0, Some("alice"))), None))
            .is_ok());
    }

    /// `sub` is unique within one issuer only: the same value from two providers is two
    /// callers (found by a black-box attack: one drained the other's budget).
    #[test]
    fn the_same_claim_from_two_providers_has_two_buckets() {
        let l = limiter(1, 1);
        let corp = l.key(Some((0, Some("alice"))), None);
        let partner = l.key(Some((1, Some("alice"))), None);
        assert_ne!(corp, partner);
        assert!(l.check_local(&corp).is_ok());
        assert!(l.check_local(&partner).is_ok());
        assert!(l.check_local(&corp).is_err());
    }

    /// A request without a token (a public path under `routes = "api"`) is limited by its
    /// address, never in the bucket of tokens that lack the claim (found by a black-box
    /// attack: anonymous requests locked those tokens out), and no claim value can name an
    /// address's bucket.
    #[test]
    fn requests_without_a_token_are_limited_by_address_apart_from_tokens() {
        let l = limiter(1, 1);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let anonymous = l.key(None, Some(peer));
        assert!(l.check_local(&anonymous).is_ok());
        assert!(l.check_local(&l.key(None, Some(peer))).is_err());
        assert!(l.check_local(&l.key(Some((0, None)), Some(peer))).is_ok());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(l.check_local(&l.key(None, Some(other))).is_ok());
        for claim in [anonymous.as_str(), "192.0.2.7", "ip:192.0.2.7"] {
            assert_ne!(l.key(Some((0, Some(claim))), Some(peer)), anonymous);
        }
        let by_ip = limiter_on(RateKey::Ip, 1, 1);
        assert_eq!(
            by_ip.key(Some((1, Some("alice"))), Some(peer)),
            by_ip.key(None, Some(peer))
        );
    }
}
