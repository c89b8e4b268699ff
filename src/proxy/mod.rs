//! The Pingora shell: moves bytes and calls the pure core. [`UploadApi`] is the gateway's whole
//! treatment of the upload API as a part, one method per Pingora phase, for any `ProxyHttp` to
//! call from its own phases (SPEC §4.13); [`Gateway`] is the ready `ProxyHttp` that gives it
//! every request, one delegating line per phase.
//!
//! The path a request takes, one file per phase, each a plain function over [`UploadApi`]:
//! - [`request_filter`] decides everything once (route, format, query, token, body) into the
//!   [`RequestCtx`], answers a refusal with the API's envelope, and forwards the finish call
//!   itself ([`upstream::exchange`]): its body is already canonical, and its rendered answer
//!   goes out with a length in one write.
//! - every other request takes Pingora's proxy loop: [`upstream::select_peer`] picks the
//!   server, [`upstream_request`] writes what was decided, [`response_filter`] stamps the
//!   answer and renders its JSON body as decided.
//! - [`fail_to_proxy`] turns a failure into the envelope, or aborts an answer already begun.
//! - [`logging`] writes the one access line and the request metrics.
//!
//! Upstream policy (peer, timeouts, retries, failure classification, hop-by-hop headers,
//! stamping) lives in [`upstream`] and is the same for the loop and the exchange. No phase
//! re-derives what an earlier one decided, and nothing reaches the upstream before every check
//! has passed.

pub mod ctx;
pub mod edge;
pub mod fail_to_proxy;
pub mod logging;
pub mod request_filter;
pub mod respond;
pub mod response_filter;
pub mod shared;
pub mod upstream;
pub mod upstream_request;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, Result};

use crate::config::Config;
use crate::jwks::Authenticator;
use crate::metrics::Metrics;

pub use ctx::{InFlightCounter, RequestCtx};
use shared::Shared;

/// The gateway's treatment of the upload API, shared by all requests: configuration,
/// upstreams, authentication and metrics. Call its methods from the matching phases of a
/// `ProxyHttp` (with a [`RequestCtx`] kept in that proxy's own context) for every request the
/// proxy routes to the API; `examples/embed.rs` shows the whole wiring.
pub struct UploadApi {
    shared: Shared,
}

impl UploadApi {
    /// The treatment over an upstream pool whose health checks run elsewhere (see
    /// [`crate::server::parts`] for one assembled from a [`Config`]).
    pub fn new(
        config: Arc<Config>,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        connector: Connector,
    ) -> Self {
        let limiter = config.rate_limit.clone().map(|settings| {
            let providers: Vec<&str> = config
                .auth
                .providers
                .iter()
                .map(|p| p.issuer.as_deref().unwrap_or(&p.name))
                .collect();
            crate::rate_limit::Limiter::new(settings, &providers, &metrics)
        });
        let spans = config
            .observability
            .otlp_endpoint
            .as_deref()
            .and_then(|endpoint| {
                crate::otlp::SpanExport::new(endpoint, metrics.otlp_export_errors.clone())
                    .map(Arc::new)
                    .map_err(|e| tracing::error!("{e}; no span will be exported"))
                    .ok()
            });
        Self {
            shared: Shared {
                config,
                upstreams,
                auth,
                metrics,
                in_flight: InFlightCounter::default(),
                connector,
                limiter,
                spans,
            },
        }
    }

    /// The validated configuration the treatment runs on.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// What the admin listener reports on: metrics, key-set state, upstream health.
    pub fn admin_handles(
        &self,
    ) -> (
        Arc<Metrics>,
        Arc<Authenticator>,
        Arc<LoadBalancer<RoundRobin>>,
    ) {
        (
            self.shared.metrics.clone(),
            self.shared.auth.clone(),
            self.shared.upstreams.clone(),
        )
    }

    /// The rate limit's Redis side, when `[rate_limit] redis_url` is set: run a
    /// [`crate::rate_limit::shared::BackendService`] over it on the same server (
    /// [`crate::server::parts`] does), or the limit stays local.
    pub fn rate_limit_backend(&self) -> Option<Arc<crate::rate_limit::shared::Backend>> {
        self.shared.limiter.as_ref().and_then(|l| l.backend())
    }

    /// The span export (`observability.otlp_endpoint`), when set: flush it before the
    /// process exits, or the last second of spans is lost.
    pub fn span_export(&self) -> Option<Arc<crate::otlp::SpanExport>> {
        self.shared.spans.clone()
    }

    /// The requests this treatment is handling right now (shared counter).
    pub fn in_flight(&self) -> InFlightCounter {
        self.shared.in_flight.clone()
    }

    /// `new_ctx`: a fresh context, counted in flight until dropped.
    pub fn new_ctx(&self) -> RequestCtx {
        edge::request_accepted();
        RequestCtx::new(&self.shared.in_flight)
    }

    /// `request_filter`: true when the request has been answered (a refusal, or the finish
    /// call, which is forwarded and answered here).
    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        request_filter::run(&self.shared, session, ctx).await
    }

    /// `upstream_peer`: the server for this attempt.
    pub fn upstream_peer(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        upstream::select_peer(&self.shared, ctx).map(Box::new)
    }

    /// `fail_to_connect`: marks the failure retryable when the retry rule allows it.
    pub fn fail_to_connect(&self, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        e.set_retry(upstream::retry_connect(&self.shared, ctx));
        e
    }

    /// `connected_to_upstream`: starts the answer's deadline on this connection.
    pub fn connected_to_upstream(
        &self,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) {
        #[cfg(unix)]
        upstream::watch(&self.shared, fd, digest, ctx);
    }

    /// `upstream_request_filter`: writes what was decided into the upstream request.
    pub fn upstream_request_filter(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        upstream_request::write(&self.shared, session, upstream_request, ctx)
    }

    /// `response_filter`: stamps the answer and decides whether its body is rendered.
    pub fn response_filter(
        &self,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response_filter::run(upstream_response, ctx)
    }

    /// `upstream_response_body_filter`: ends the deadline with the upstream body.
    pub fn upstream_response_body_filter(&self, end_of_stream: bool, ctx: &mut RequestCtx) {
        if end_of_stream {
            // Before Pingora returns the connection to its pool.
            ctx.watchdog = None;
        }
    }

    /// `response_body_filter`: renders the buffered JSON body at its end.
    pub fn response_body_filter(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response_filter::render_body(body, end_of_stream, ctx)
    }

    /// `fail_to_proxy`: the envelope for a failure, or an abort when the answer has begun.
    pub async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        fail_to_proxy::run(&self.shared, session, e, ctx).await
    }

    /// `request_summary`: what Pingora may print about the request: never its path, query or
    /// headers.
    pub fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        logging::summary(session, ctx)
    }

    /// `logging`: the access line and the request metrics.
    pub fn logging(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        logging::run(&self.shared, session, e, ctx);
    }
}

/// The ready proxy: every request gets the upload API's treatment.
pub struct Gateway(pub UploadApi);

impl Gateway {
    /// The requests this gateway is handling right now (shared counter).
    pub fn in_flight(&self) -> InFlightCounter {
        self.0.in_flight()
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.0.new_ctx()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.0.request_filter(session, ctx).await
    }

    async fn upstream_peer(&self, _: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        self.0.upstream_peer(ctx)
    }

    fn fail_to_connect(
        &self,
        _: &mut Session,
        _: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.0.fail_to_connect(ctx, e)
    }

    async fn connected_to_upstream(
        &self,
        _: &mut Session,
        _: bool,
        _: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        #[cfg(unix)]
        self.0.connected_to_upstream(fd, digest, ctx);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.0
            .upstream_request_filter(session, upstream_request, ctx)
    }

    async fn response_filter(
        &self,
        _: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.0.response_filter(upstream_response, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        _: &mut Session,
        _: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.0.upstream_response_body_filter(end_of_stream, ctx);
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.0
            .response_body_filter(body, end_of_stream, ctx)
            .map(|()| None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.0.fail_to_proxy(session, e, ctx).await
    }

    fn suppress_error_log(&self, _: &Session, _: &RequestCtx, _: &Error) -> bool {
        // Pingora's line would carry the request line with its query and raw upstream bytes;
        // the access line already records the failure (`proxy_error`, `reason`, `status`).
        true
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        self.0.request_summary(session, ctx)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.0.logging(session, e, ctx);
    }
}
