//! The Pingora shell: a [`ProxyHttp`] implementation that moves bytes and calls the pure core.
//!
//! One straight path per request: `request_filter` decides everything (route, rendering, query,
//! token, body) and stores it in [`RequestCtx`]. The finish call is then forwarded and answered
//! right there (`exchange`): its body is already canonical, and a rendered answer with a length
//! goes out in one write. Every other request goes through Pingora's proxy loop:
//! `upstream_peer` picks a healthy upstream, the upstream filters write what was decided, the
//! response filters render. `logging` writes one line for both. No phase re-derives what an
//! earlier one decided, and nothing reaches the upstream before every check has passed.

pub mod ctx;
pub mod edge;
mod exchange;
mod request;
mod respond;
mod response;
pub mod route;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::Metrics;

pub use ctx::{InFlightCounter, RequestCtx};
use route::Route;

/// The gateway: configuration, upstreams, authentication and metrics, shared by all requests.
pub struct Gateway {
    config: Arc<Config>,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    in_flight: InFlightCounter,
    /// Upstream connections (and their keep-alive pool) of the finish call's own exchange.
    connector: Connector,
}

impl Gateway {
    /// Builds the proxy logic over an upstream pool whose health checks run elsewhere.
    pub fn new(
        config: Arc<Config>,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        connector: Connector,
    ) -> Self {
        Self {
            config,
            upstreams,
            auth,
            metrics,
            in_flight: InFlightCounter::default(),
            connector,
        }
    }

    /// The requests this gateway is handling right now (shared counter).
    pub fn in_flight(&self) -> InFlightCounter {
        self.in_flight.clone()
    }
}

/// Attempts per request: the first, plus one retry of a connect failure on another server.
const MAX_ATTEMPTS: u8 = 2;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        edge::request_accepted();
        RequestCtx::new(&self.in_flight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match self.decide(session, ctx).await {
            Ok(()) if ctx.route == Route::FinishUpload => {
                self.finish_upload(session, ctx).await?;
                Ok(true)
            }
            Ok(()) => Ok(false),
            Err(error) => {
                self.respond_error(session, ctx, error).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.select_peer(ctx)?))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing of the request has been sent yet (the finish call, whose body is read early,
        // does its own exchange), so one retry on another server is safe; more would only delay
        // the 502.
        e.set_retry(ctx.attempts < MAX_ATTEMPTS && self.config.upstream.servers.len() > 1);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + self.config.upstream.response_timeout;
        ctx.upstream_deadline = Some(deadline);
        #[cfg(unix)]
        {
            let socket = digest.and_then(|d| d.socket_digest.as_ref());
            let local = socket
                .and_then(|s| s.local_addr())
                .and_then(|a| a.as_inet());
            let peer = socket.and_then(|s| s.peer_addr()).and_then(|a| a.as_inet());
            if let (Some(local), Some(peer)) = (local, peer) {
                ctx.watchdog = Some(upstream::Watchdog::start(fd, *local, *peer, deadline));
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.write_upstream_request(session, upstream_request, ctx)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.head || response::is_bodiless(upstream_response.status.as_u16()) {
            // The exchange is complete with the head: the connection may go back to the pool.
            ctx.watchdog = None;
        }
        self.prepare_response(upstream_response, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            // Before Pingora returns the connection to its pool.
            ctx.watchdog = None;
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        response::render_body(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let mut failure = classify_failure(e);
        if failure.is_some() && ctx.watchdog.as_ref().is_some_and(upstream::Watchdog::fired) {
            // The watchdog ended the connection: the read failed because time was up.
            failure = Some(GatewayError::UpstreamTimeout);
        }
        ctx.watchdog = None;
        if session.response_written().is_some() {
            // The answer has begun: anything written now would complete it with another
            // status or splice an envelope into it. The connection is dropped unfinished, and
            // the log line and metrics carry the real outcome.
            ctx.aborted = true;
            let error_code = failure.as_ref().map_or(0, GatewayError::status);
            if failure.is_some() {
                ctx.error = failure;
            }
            return FailToProxy {
                error_code,
                can_reuse_downstream: false,
            };
        }
        let error_code = match failure {
            // The client went away: nothing can be written.
            None => 0,
            Some(error) => {
                let status = error.status();
                match self.respond_error(session, ctx, error).await {
                    Ok(()) => status,
                    Err(_) => 0,
                }
            }
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // Pingora's line would carry the request line with its query and raw upstream bytes;
        // the access line already records the failure (`proxy_error`, `reason`, `status`).
        true
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // What Pingora prints beside its own warnings: never the path, query or headers.
        format!(
            "{} {} request_id={}",
            session.req_header().method,
            ctx.route.template(),
            ctx.request_id.to_str().unwrap_or("")
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log_request(session, e, ctx);
    }
}

impl Gateway {
    /// Picks a healthy upstream for the next attempt, preferring one other than the last
    /// attempt's, and counts the attempt.
    fn select_peer(&self, ctx: &mut RequestCtx) -> Result<HttpPeer> {
        ctx.attempts += 1;
        let previous = ctx.upstream;
        let backend = self
            .upstreams
            .select_with(b"", 256, |b, healthy| {
                healthy && Some(b.addr.as_inet().copied()).flatten() != previous
            })
            .or_else(|| self.upstreams.select(b"", 256));
        let Some(backend) = backend else {
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "no healthy upstream",
            ));
        };
        ctx.upstream = backend.addr.as_inet().copied();
        let upstream = &self.config.upstream;
        let mut peer = HttpPeer::new(backend.addr.clone(), upstream.tls, upstream.sni.clone());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout = Some(upstream.connect_timeout * 2);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(peer)
    }
}

/// Maps a Pingora failure to the gateway's error, or `None` when the client is gone.
fn classify_failure(e: &Error) -> Option<GatewayError> {
    use ErrorType::*;
    let upstream = matches!(e.esource(), ErrorSource::Upstream);
    match e.etype() {
        ConnectTimedout => Some(GatewayError::UpstreamTimeout),
        // A slow client is not an upstream timeout.
        ReadTimedout | WriteTimedout if upstream => Some(GatewayError::UpstreamTimeout),
        HTTPStatus(code) if *code == 504 => Some(GatewayError::UpstreamTimeout),
        // An upstream answer that is not HTTP, or a body that is not what it claims.
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 if upstream => {
            Some(GatewayError::UpstreamInvalid)
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Some(GatewayError::UpstreamUnreachable),
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed | WriteTimedout => None,
                _ => Some(GatewayError::BadRequest),
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                ReadTimedout | WriteTimedout => Some(GatewayError::UpstreamTimeout),
                ConnectNoRoute | ConnectRefused | ConnectError | ConnectProxyFailure => {
                    Some(GatewayError::UpstreamUnreachable)
                }
                _ => Some(GatewayError::Internal("proxy_failure")),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(etype: ErrorType, source: ErrorSource) -> Option<u16> {
        let mut e = Error::new(etype);
        e.esource = source;
        classify_failure(&e).map(|g| g.status())
    }

    #[test]
    fn upstream_timeouts_are_504_and_refusals_502() {
        assert_eq!(
            failure(ErrorType::ReadTimedout, ErrorSource::Upstream),
            Some(504)
        );
        assert_eq!(
            failure(ErrorType::ConnectTimedout, ErrorSource::Upstream),
            Some(504)
        );
        assert_eq!(
            failure(ErrorType::ConnectRefused, ErrorSource::Upstream),
            Some(502)
        );
    }

    #[test]
    fn a_slow_client_is_not_an_upstream_timeout() {
        assert_eq!(
            failure(ErrorType::ReadTimedout, ErrorSource::Downstream),
            Some(400)
        );
        assert_eq!(
            failure(ErrorType::WriteTimedout, ErrorSource::Downstream),
            None
        );
    }
}
