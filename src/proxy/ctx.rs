//! The per-request context: everything `request_filter` decided, carried to the later phases so
//! that none of them re-derives it. It holds no token and no raw body, only decisions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;

use crate::auth::VerifiedToken;
use crate::error::GatewayError;
use crate::render::RenderOptions;
use crate::route::Route;

/// How the upstream's response body is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponsePlan {
    /// Relay bytes unchanged.
    #[default]
    PassThrough,
    /// Buffer the JSON body and render it as decided (format, human, show_null).
    Render,
}

/// What one request carries between Pingora's phases.
#[derive(Debug)]
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// `X-Request-Id`: the client's when acceptable, else generated.
    pub request_id: HeaderValue,
    /// The route, decided once.
    pub route: Route,
    /// A HEAD request: its response has no body to render.
    pub head: bool,
    /// How every response on this request is rendered.
    pub render: RenderOptions,
    /// The query to send upstream, when it differs from the client's.
    pub upstream_query: Option<UpstreamQuery>,
    /// The canonical finish-upload body, replayed on every upstream attempt.
    pub body: Option<Bytes>,
    /// The verified token, when the route needed one.
    pub token: Option<Arc<VerifiedToken>>,
    /// Auth outcome label for the log line.
    pub auth_outcome: &'static str,
    /// The identity provider the token belongs to, when one could be told.
    pub provider: Option<usize>,
    /// CORS is on for this request's route: upstream CORS headers are replaced by the
    /// gateway's, and every answer varies on `Origin`.
    pub cors_enabled: bool,
    /// The CORS headers every answer to this request carries (its `Origin` is allowed).
    pub cors_headers: Option<[(&'static str, http::HeaderValue); 2]>,
    /// The request's place in a W3C trace (the gateway's span in it).
    pub trace: Option<crate::trace_context::TraceContext>,
    /// A preflight to answer 204 with these headers.
    pub preflight: Option<Vec<(&'static str, http::HeaderValue)>>,
    /// Upstream attempts so far.
    pub attempts: u8,
    /// The upstream of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// When the upstream response header arrived.
    pub upstream_latency: Option<std::time::Duration>,
    /// The refusal or failure answered on this request, for the log line.
    pub error: Option<GatewayError>,
    /// What happens to the upstream's response body.
    pub response_plan: ResponsePlan,
    /// The upstream body being buffered for rendering.
    pub response_buffer: Vec<u8>,
    /// When the whole upstream answer must have arrived (`upstream.response_timeout_ms`,
    /// counted from the upstream write).
    pub upstream_deadline: Option<Instant>,
    /// When the upstream request was (last) written: the upstream latency starts here.
    pub upstream_sent: Option<Instant>,
    /// Ends the proxy loop's upstream connection at the deadline (see `upstream`).
    pub watchdog: Option<super::upstream::deadline::Watchdog>,
    /// The answer had begun when the exchange failed: the client connection was aborted, and
    /// `error` holds the real outcome.
    pub aborted: bool,
    /// Counts this request as in flight until the context is dropped.
    _in_flight: InFlight,
}

/// Requests in flight: shutdown waits for this to reach zero (or the grace period to end).
#[derive(Debug, Clone, Default)]
pub struct InFlightCounter(Arc<AtomicUsize>);

impl InFlightCounter {
    /// Requests currently being handled.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }
}

#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The rewritten query for the upstream: `None` inside means "no query at all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamQuery(pub Option<String>);

impl RequestCtx {
    /// A fresh context for a request that has not been looked at yet, counted in `in_flight`.
    pub fn new(in_flight: &InFlightCounter) -> Self {
        Self {
            started: Instant::now(),
            request_id: HeaderValue::from_static(""),
            route: Route::Other,
            head: false,
            render: RenderOptions::default(),
            upstream_query: None,
            body: None,
            token: None,
            auth_outcome: "none",
            attempts: 0,
            upstream: None,
            upstream_latency: None,
            error: None,
            response_plan: ResponsePlan::PassThrough,
            response_buffer: Vec::new(),
            upstream_deadline: None,
            upstream_sent: None,
            provider: None,
            cors_enabled: false,
            cors_headers: None,
            preflight: None,
            trace: None,
            watchdog: None,
            aborted: false,
            _in_flight: in_flight.enter(),
        }
    }
}
