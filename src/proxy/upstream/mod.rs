//! Upstream policy, in one place for both ways a request reaches the upstream (Pingora's proxy
//! loop, and the finish call's own [`exchange`]): which server (round robin over the healthy
//! ones, another one on a retry), the timeouts, when a failed attempt is retried, what a
//! Pingora failure means for the client ([`classify`]), the headers that never pass
//! ([`headers`]), and the answer's deadline ([`deadline`]).
//!
//! It must never retry anything the upstream may have acted on: a connect failure is retried
//! once on another server, a pooled connection found closed before any answer is retried on a
//! fresh one (PUT is idempotent, nothing was answered), and nothing else.

pub mod deadline;
pub mod discovery;
pub mod exchange;
pub mod headers;

use std::time::{Duration, Instant};

use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::ctx::RequestCtx;
use super::shared::Shared;
use crate::error::GatewayError;

/// Attempts per request: the first, plus one retry of a connect failure on another server.
pub const MAX_ATTEMPTS: u8 = 2;

/// Pooled connections found closed by the upstream that are retried on a fresh attempt.
pub const MAX_STALE_RETRIES: u8 = 4;

/// How long an idle pooled upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Picks a healthy upstream for the next attempt, preferring one other than the last
/// attempt's, counts the attempt, and sets the configured timeouts on the peer.
pub fn select_peer(api: &Shared, ctx: &mut RequestCtx) -> Result<HttpPeer> {
    ctx.attempts += 1;
    let previous = ctx.upstream;
    let backend = api
        .upstreams
        .select_with(b"", 256, |b, healthy| {
            healthy && Some(b.addr.as_inet().copied()).flatten() != previous
        })
        .or_else(|| api.upstreams.select(b"", 256));
    let Some(backend) = backend else {
        return Err(Error::explain(
            ErrorType::ConnectNoRoute,
            "no healthy upstream",
        ));
    };
    ctx.upstream = backend.addr.as_inet().copied();
    let upstream = &api.config.upstream;
    let mut peer = HttpPeer::new(backend.addr.clone(), upstream.tls, upstream.sni.clone());
    peer.options.connection_timeout = Some(upstream.connect_timeout);
    peer.options.total_connection_timeout = Some(upstream.connect_timeout * 2);
    peer.options.read_timeout = Some(upstream.read_timeout);
    peer.options.write_timeout = Some(upstream.read_timeout);
    peer.options.idle_timeout = Some(IDLE_TIMEOUT);
    Ok(peer)
}

/// Whether a failed connect may be tried again (on another server): nothing was sent.
pub fn retry_connect(api: &Shared, ctx: &RequestCtx) -> bool {
    ctx.attempts < MAX_ATTEMPTS && api.upstreams.backends().get_backend().len() > 1
}

/// Whether a failed exchange on a reused connection may be tried again on a fresh one: the
/// upstream had closed the pooled connection, and nothing was answered.
pub fn retry_stale(reused: bool, e: &Error, stale_retries: u8) -> bool {
    let closed = matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    );
    reused && closed && stale_retries < MAX_STALE_RETRIES
}

/// The request has been written: the answer's deadline starts now.
pub fn request_sent(api: &Shared, ctx: &mut RequestCtx) -> Instant {
    let now = Instant::now();
    ctx.upstream_sent = Some(now);
    let deadline = now + api.config.upstream.response_timeout;
    ctx.upstream_deadline = Some(deadline);
    deadline
}

/// The upstream's response head arrived: the upstream latency the metrics and the log carry,
/// from the upstream write (not the request's arrival: the body read and the token check are
/// the gateway's time, not the upstream's).
pub fn answered(ctx: &mut RequestCtx) {
    ctx.upstream_latency = ctx.upstream_sent.map(|sent| sent.elapsed());
}

/// The proxy loop connected to the upstream: the answer's deadline starts, and a watchdog
/// holds the connection to it.
#[cfg(unix)]
pub fn watch(
    api: &Shared,
    fd: std::os::unix::io::RawFd,
    digest: Option<&pingora::protocols::Digest>,
    ctx: &mut RequestCtx,
) {
    let deadline = request_sent(api, ctx);
    let socket = digest.and_then(|d| d.socket_digest.as_ref());
    let local = socket
        .and_then(|s| s.local_addr())
        .and_then(|a| a.as_inet());
    let peer = socket.and_then(|s| s.peer_addr()).and_then(|a| a.as_inet());
    if let (Some(local), Some(peer)) = (local, peer) {
        ctx.watchdog = Some(deadline::Watchdog::start(fd, *local, *peer, deadline));
    }
}

/// Maps a Pingora failure to the gateway's error, or `None` when the client is gone. The one
/// mapping for every route: timeouts are 504, an answer that is not HTTP (or a body that is
/// not what it claims) is 502 `upstream_invalid`, any other upstream failure 502.
pub fn classify(e: &Error) -> Option<GatewayError> {
    let upstream = matches!(e.esource(), ErrorSource::Upstream);
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => {
            Some(GatewayError::UpstreamTimeout)
        }
        // A slow client is not an upstream timeout.
        ErrorType::ReadTimedout | ErrorType::WriteTimedout if upstream => {
            Some(GatewayError::UpstreamTimeout)
        }
        ErrorType::HTTPStatus(code) if *code == 504 => Some(GatewayError::UpstreamTimeout),
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::InvalidH2
            if upstream =>
        {
            Some(GatewayError::UpstreamInvalid)
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Some(GatewayError::UpstreamUnreachable),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError
                | ErrorType::ReadError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout => None,
                _ => Some(GatewayError::BadRequest),
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    Some(GatewayError::UpstreamTimeout)
                }
                ErrorType::ConnectNoRoute
                | ErrorType::ConnectRefused
                | ErrorType::ConnectError
                | ErrorType::ConnectProxyFailure => Some(GatewayError::UpstreamUnreachable),
                _ => Some(GatewayError::Internal("proxy_failure")),
            },
        },
    }
}

/// [`classify`] for a failure known to be on the upstream side (the finish call's exchange):
/// never "the client is gone".
pub fn classify_upstream(e: &Error) -> GatewayError {
    let mut upstream = Error::new(e.etype().clone());
    upstream.as_up();
    classify(&upstream).unwrap_or(GatewayError::UpstreamUnreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(etype: ErrorType, source: ErrorSource) -> Option<u16> {
        let mut e = Error::new(etype);
        e.esource = source;
        classify(&e).map(|g| g.status())
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

    #[test]
    fn a_tls_handshake_timeout_is_504_on_every_path() {
        // It was 504 on the finish call and 502 elsewhere when each path had its classifier.
        for source in [
            ErrorSource::Upstream,
            ErrorSource::Internal,
            ErrorSource::Unset,
        ] {
            assert_eq!(failure(ErrorType::TLSHandshakeTimedout, source), Some(504));
        }
        let e = Error::new(ErrorType::TLSHandshakeTimedout);
        assert_eq!(classify_upstream(&e).status(), 504);
    }

    #[test]
    fn the_exchange_and_the_loop_agree() {
        for etype in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectionClosed,
            ErrorType::ReadTimedout,
            ErrorType::ConnectTimedout,
            ErrorType::InvalidHTTPHeader,
            ErrorType::H1Error,
            ErrorType::ReadError,
        ] {
            let loop_side = failure(etype.clone(), ErrorSource::Upstream);
            let exchange_side = Some(classify_upstream(&Error::new(etype)).status());
            assert_eq!(loop_side, exchange_side);
        }
        assert!(matches!(
            classify_upstream(&Error::new(ErrorType::InvalidHTTPHeader)),
            GatewayError::UpstreamInvalid
        ));
    }
}
