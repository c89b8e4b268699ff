//! Prometheus metrics (SPEC §5): counters and histograms the request path and the JWKS service
//! update, exposed by the admin listener. Label values are fixed vocabularies (route templates,
//! status codes, reason labels), never user input, so cardinality stays bounded.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The gateway's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    auth_failures: IntCounterVec,
    body_rejections: IntCounterVec,
    upstream_latency: HistogramVec,
    /// JWKS fetches by outcome (`ok`, `error`, `not_modified`).
    pub jwks_fetches: IntCounterVec,
    /// Unix time of the last successful JWKS load (0 = never).
    pub jwks_loaded_at: IntGauge,
    /// Seconds since the last successful JWKS load (-1 = never), set at each scrape.
    pub jwks_age: IntGauge,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub token_cache: IntCounterVec,
    /// Tokens in the verified-token cache.
    pub token_cache_entries: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("upload_gateway".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by route template and status"),
            &["route", "status"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "Refused tokens by reason"),
            &["reason"],
        )?;
        let body_rejections = IntCounterVec::new(
            Opts::new(
                "body_rejections_total",
                "Refused finish-upload bodies by reason",
            ),
            &["reason"],
        )?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "upstream_latency_seconds",
                "Time from request arrival to upstream response header",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "JWKS fetches by outcome"),
            &["outcome"],
        )?;
        let jwks_loaded_at = IntGauge::new(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS load (0 = never); key-set age = now - this",
        )?;
        let jwks_age = IntGauge::new(
            "jwks_key_set_age_seconds",
            "Seconds since the key set was last loaded (-1 = never loaded)",
        )?;
        registry.register(Box::new(jwks_age.clone()))?;
        let token_cache = IntCounterVec::new(
            Opts::new("token_cache_lookups_total", "Verified-token cache lookups"),
            &["result"],
        )?;
        let token_cache_entries = IntGauge::new(
            "token_cache_entries",
            "Tokens in the verified-token cache (approximate)",
        )?;
        registry.register(Box::new(token_cache_entries.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(body_rejections.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        registry.register(Box::new(jwks_loaded_at.clone()))?;
        registry.register(Box::new(token_cache.clone()))?;
        Ok(Self {
            registry,
            requests,
            auth_failures,
            body_rejections,
            upstream_latency,
            jwks_fetches,
            jwks_loaded_at,
            jwks_age,
            token_cache,
            token_cache_entries,
        })
    }

    /// Counts one finished request.
    pub fn observe_request(&self, route: &str, status: u16, upstream: Option<Duration>) {
        let mut buf = itoa::Buffer::new();
        self.requests
            .with_label_values(&[route, buf.format(status)])
            .inc();
        if let Some(d) = upstream {
            self.upstream_latency
                .with_label_values(&[route])
                .observe(d.as_secs_f64());
        }
    }

    /// Counts one refused token.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Counts one refused body.
    pub fn body_rejection(&self, reason: &str) {
        self.body_rejections.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
