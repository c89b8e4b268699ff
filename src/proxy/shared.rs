//! What every phase reads and nothing on the request path changes: the configuration, the
//! upstream pool, the authenticator, the metrics, the in-flight counter and the finish call's
//! upstream connector. Data only; the phases are plain functions over it.

use std::sync::Arc;

use pingora::connectors::http::Connector;
use pingora::lb::{selection::RoundRobin, LoadBalancer};

use super::ctx::InFlightCounter;
use crate::config::Config;
use crate::jwks::Authenticator;
use crate::metrics::Metrics;

/// The state shared by all requests of one [`super::UploadApi`].
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The upstream pool, health checked by a background service.
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    /// The live key set and the token verifier.
    pub auth: Arc<Authenticator>,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Requests in flight (shutdown waits for them).
    pub in_flight: InFlightCounter,
    /// Upstream connections (and their keep-alive pool) of the finish call's own exchange.
    pub connector: Connector,
    /// `[rate_limit]`, when enabled.
    pub limiter: Option<crate::rate_limit::Limiter>,
    /// `observability.otlp_endpoint`: the span export, when set.
    pub spans: Option<Arc<crate::otlp::SpanExport>>,
}
