//! Prometheus metrics (SPEC §5): counters and histograms the request path and the JWKS service
//! update, exposed by the admin listener. Label values are fixed vocabularies (route templates,
//! status codes, reason labels), never user input, so cardinality stays bounded.

use std::sync::OnceLock;
use std::time::Duration;

use crate::route::Route;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for latencies, from half a millisecond to half a minute.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gateway's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    /// Unprefixed: the process collector's standard `process_*` names.
    process: Registry,
    request_duration: HistogramVec,
    /// Requests refused by the rate limit, by route template.
    pub rate_limited: IntCounterVec,
    /// Failed or slow (> 50 ms) operations on the rate limit's Redis, connection attempts
    /// included; each one meant the local limit was used.
    pub rate_limit_backend_errors: IntCounter,
    /// 1 while the rate limit's Redis answers (the shared limit applies), else 0.
    pub rate_limit_backend_up: IntGauge,
    /// Spans the OTLP exporter failed to deliver.
    pub otlp_export_errors: IntCounter,
    /// Upstream names that failed to resolve (each failed attempt).
    pub upstream_resolve_errors: IntCounter,
    /// 1 for each upstream address the health checks find healthy, 0 otherwise; set at each
    /// scrape from the load balancer.
    pub upstream_healthy: IntGaugeVec,
    requests: IntCounterVec,
    auth_failures: IntCounterVec,
    body_rejections: IntCounterVec,
    upstream_latency: HistogramVec,
    /// JWKS fetches by outcome (`ok`, `error`) and provider.
    pub jwks_fetches: IntCounterVec,
    /// Unix time of each provider's last successful JWKS load (0 = never), set at each scrape.
    pub jwks_loaded_at: IntGaugeVec,
    /// Seconds since each provider's last successful JWKS load (-1 = never), set at each
    /// scrape.
    pub jwks_age: IntGaugeVec,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub token_cache: IntCounterVec,
    /// Tokens in the verified-token cache.
    pub token_cache_entries: IntGauge,
    /// The request metrics' handles of each route template, resolved on first use.
    route_handles: [RouteHandles; ROUTES.len()],
}

/// Every route template requests are counted under (`Route::template`, and the edge's own).
const ROUTES: [&str; 5] = [
    Route::FinishUpload.template(),
    Route::Api.template(),
    Route::Ambiguous.template(),
    Route::Other.template(),
    crate::proxy::edge::MALFORMED_ROUTE,
];

/// Statuses a response can have (three digits).
const STATUSES: usize = 1000;

/// One route's request-metric handles: looked up in the vectors once (a label hash, a read
/// lock and a reference count each), then used directly. A series appears on first use, as it
/// does through the vectors.
struct RouteHandles {
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    by_status: Box<[OnceLock<IntCounter>]>,
}

/// Uses the handle in `cell`, resolving it with `resolve` the first time; without a cell
/// (a route or status outside the table), resolves it every time.
fn resolved<T>(cell: Option<&OnceLock<T>>, resolve: impl FnOnce() -> T, apply: impl FnOnce(&T)) {
    match cell {
        Some(cell) => apply(cell.get_or_init(resolve)),
        None => apply(&resolve()),
    }
}

impl RouteHandles {
    fn new() -> Self {
        Self {
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
            by_status: (0..STATUSES).map(|_| OnceLock::new()).collect(),
        }
    }
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
            Opts::new(
                "auth_failures_total",
                "Refused tokens by reason and provider (\"\" when none could be told)",
            ),
            &["reason", "provider"],
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
                "Time from the upstream request's write to the upstream response head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Whole requests, from arrival to the last byte of the answer, by route template",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Requests refused by the rate limit (429)",
            ),
            &["route"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let rate_limit_backend_errors = IntCounter::new(
            "rate_limit_backend_errors_total",
            "Failed or slow rate-limit Redis operations (the local limit was used instead)",
        )?;
        registry.register(Box::new(rate_limit_backend_errors.clone()))?;
        let rate_limit_backend_up = IntGauge::new(
            "rate_limit_backend_up",
            "1 while the rate limit's Redis answers and the limit is shared, else 0",
        )?;
        registry.register(Box::new(rate_limit_backend_up.clone()))?;
        let otlp_export_errors = IntCounter::new(
            "otlp_export_errors_total",
            "Spans the OTLP exporter failed to deliver (collector down, refusing or too slow)",
        )?;
        registry.register(Box::new(otlp_export_errors.clone()))?;
        let upstream_resolve_errors = IntCounter::new(
            "upstream_resolve_errors_total",
            "Failed resolutions of upstream names (the last addresses are kept)",
        )?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "upstream_healthy",
                "1 when the upstream address passes its health check, else 0",
            ),
            &["upstream"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1; the labels say what is running"),
            &["version", "pingora"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), "0.9"])
            .set(1);
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_resolve_errors.clone()))?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        registry.register(Box::new(build_info))?;
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "JWKS fetches by outcome and provider"),
            &["outcome", "provider"],
        )?;
        let jwks_loaded_at = IntGaugeVec::new(
            Opts::new(
                "jwks_last_success_timestamp_seconds",
                "Unix time of the provider's last successful JWKS load (0 = never)",
            ),
            &["provider"],
        )?;
        let jwks_age = IntGaugeVec::new(
            Opts::new(
                "jwks_key_set_age_seconds",
                "Seconds since the provider's key set was last loaded (-1 = never loaded)",
            ),
            &["provider"],
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
            process,
            request_duration,
            rate_limited,
            rate_limit_backend_errors,
            rate_limit_backend_up,
            otlp_export_errors,
            upstream_resolve_errors,
            upstream_healthy,
            requests,
            auth_failures,
            body_rejections,
            upstream_latency,
            jwks_fetches,
            jwks_loaded_at,
            jwks_age,
            token_cache,
            token_cache_entries,
            route_handles: std::array::from_fn(|_| RouteHandles::new()),
        })
    }

    /// Counts one finished request.
    pub fn observe_request(
        &self,
        route: &str,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let handles = ROUTES
            .iter()
            .position(|known| *known == route)
            .and_then(|i| self.route_handles.get(i));
        resolved(
            handles.and_then(|h| h.by_status.get(usize::from(status))),
            || {
                let mut buf = itoa::Buffer::new();
                self.requests
                    .with_label_values(&[route, buf.format(status)])
            },
            IntCounter::inc,
        );
        resolved(
            handles.map(|h| &h.duration),
            || self.request_duration.with_label_values(&[route]),
            |h| h.observe(total.as_secs_f64()),
        );
        if let Some(d) = upstream {
            resolved(
                handles.map(|h| &h.upstream),
                || self.upstream_latency.with_label_values(&[route]),
                |h| h.observe(d.as_secs_f64()),
            );
        }
    }

    /// Counts one refused token of `provider` ("" when none could be told).
    pub fn auth_failure(&self, reason: &str, provider: &str) {
        self.auth_failures
            .with_label_values(&[reason, provider])
            .inc();
    }

    /// Counts one refused body.
    pub fn body_rejection(&self, reason: &str) {
        self.body_rejections.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        #[cfg(feature = "alloc-count")]
        {
            let (allocations, bytes) = crate::alloc_count::totals();
            out.extend_from_slice(
                format!(
                    "# TYPE upload_gateway_allocations_total counter\n\
                     upload_gateway_allocations_total {allocations}\n\
                     # TYPE upload_gateway_allocated_bytes_total counter\n\
                     upload_gateway_allocated_bytes_total {bytes}\n"
                )
                .as_bytes(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn resolved_handles_count_as_the_labelled_vectors_do() {
        let metrics = Metrics::new().unwrap();
        let finish = Route::FinishUpload.template();
        // No series before the first request of a route and status.
        assert!(!exposition(&metrics).contains("requests_total{"));
        for _ in 0..3 {
            metrics.observe_request(finish, 200, Duration::from_millis(2), None);
        }
        metrics.observe_request(finish, 502, Duration::from_millis(1), Some(Duration::ZERO));
        // A template outside the table still counts (through the vectors).
        metrics.observe_request("elsewhere", 200, Duration::from_millis(1), None);
        let text = exposition(&metrics);
        let finish_label = format!("route=\"{finish}\"");
        let line = |status: &str, route: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("upload_gateway_requests_total{")
                        && l.contains(route)
                        && l.contains(&format!("status=\"{status}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(line("200", &finish_label).as_deref(), Some("3"));
        assert_eq!(line("502", &finish_label).as_deref(), Some("1"));
        assert_eq!(line("200", "route=\"elsewhere\"").as_deref(), Some("1"));
        assert!(text.contains(&format!(
            "upload_gateway_request_duration_seconds_count{{{finish_label}}} 4"
        )));
        assert!(text.contains(&format!(
            "upload_gateway_upstream_latency_seconds_count{{{finish_label}}} 1"
        )));
    }
}
