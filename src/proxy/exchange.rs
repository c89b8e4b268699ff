//! The finish call's upstream exchange, done by the gateway itself inside `request_filter`.
//!
//! By the time the finish call gets here, the whole client body has been read and replaced by
//! its canonical form, so nothing needs streaming on the way up. Doing the exchange here instead
//! of through Pingora's generic proxy loop lets the rendered answer go out with a
//! `Content-Length` in one write (the proxy loop must send the header before the body is
//! rendered, which forces chunked framing and three writes), and skips the loop's channels and
//! tasks. Forwarding keeps the proxy path's guarantees: the same headers as
//! [`Gateway::write_upstream_request`] writes, one retry of a connect failure on another server,
//! a retry on a fresh connection when a pooled one turns out closed, 502/504 envelopes, and the
//! upstream's body relayed untouched whenever it is not rendered.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderName, CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::Version;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::RequestCtx;
use super::response::{
    is_bodiless, is_renderable, mark_rendered, rendered, strip_bodiless_framing, RENDER_LIMIT,
};
use super::upstream::remaining;
use super::{Gateway, MAX_ATTEMPTS};
use crate::error::GatewayError;

/// Pooled connections found closed by the upstream that are retried on a fresh attempt.
const MAX_STALE_RETRIES: u8 = 4;

/// Informational responses skipped before the final one; more means a misbehaving upstream.
const MAX_INFORMATIONAL: u8 = 8;

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the gateway answers itself: none of them is
/// the client's to pass on.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

impl Gateway {
    /// Sends the validated finish call upstream and answers the client. Every failure before the
    /// answer's header is written becomes the API's envelope; a failure after it can only close
    /// the connection, which the returned error does.
    pub(super) async fn finish_upload(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (mut upstream, peer) = match self.send_upstream(session, ctx).await {
            Ok(exchange) => exchange,
            Err(error) => return self.respond_error(session, ctx, error).await,
        };
        let Some(header) = upstream.response_header() else {
            return self
                .respond_error(session, ctx, GatewayError::UpstreamInvalid)
                .await;
        };
        let mut resp = Box::new(header.clone());
        strip_response_hop_by_hop(&mut resp);
        strip_bodiless_framing(&mut resp);
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        resp.append_header(VARY, "Accept")?;

        let deadline = ctx.upstream_deadline;
        if is_renderable(&resp, false) {
            let raw = match read_bounded(&mut upstream, deadline).await {
                Ok(raw) => raw,
                Err(error) => return self.respond_error(session, ctx, error).await,
            };
            self.release(upstream, &peer).await;
            let Some(body) = rendered(raw, ctx.render) else {
                return self
                    .respond_error(session, ctx, GatewayError::UpstreamInvalid)
                    .await;
            };
            resp.remove_header(&TRANSFER_ENCODING);
            mark_rendered(&mut resp, ctx.render)?;
            resp.insert_header(CONTENT_LENGTH, body.len())?;
            // With a length, Pingora sends header and body in one write.
            session.write_response_header(resp, false).await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(());
        }

        // Not ours to render: relay as it comes, framed as the upstream framed it.
        let bodiless = upstream.response_done() || is_bodiless(resp.status.as_u16());
        session.write_response_header(resp, bodiless).await?;
        if !bodiless {
            loop {
                // From here on a failure can only abort the answer (see `fail_to_proxy`).
                let chunk = read_body_chunk(&mut upstream, deadline).await?;
                let end = chunk.is_none() || upstream.response_done();
                session.write_response_body(chunk, end).await?;
                if end {
                    break;
                }
            }
        }
        if upstream.response_done() {
            self.release(upstream, &peer).await;
        }
        Ok(())
    }

    /// Connects (retrying as described in the module), sends the request and reads the
    /// response header.
    async fn send_upstream(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<(HttpSession, HttpPeer), GatewayError> {
        let body = ctx.body.clone().unwrap_or_default();
        let mut connect_failures = 0u8;
        let mut stale = 0u8;
        loop {
            let peer = self
                .select_peer(ctx)
                .map_err(|_| GatewayError::UpstreamUnreachable)?;
            let (mut upstream, reused) = match self.connector.get_http_session(&peer).await {
                Ok(connected) => connected,
                Err(e) => {
                    connect_failures += 1;
                    if connect_failures < MAX_ATTEMPTS && self.config.upstream.servers.len() > 1 {
                        continue;
                    }
                    return Err(upstream_failure(&e));
                }
            };
            upstream.set_read_timeout(Some(self.config.upstream.read_timeout));
            upstream.set_write_timeout(Some(self.config.upstream.read_timeout));
            let request = self
                .upstream_request(session, ctx)
                .map_err(|_| GatewayError::Internal("upstream_request"))?;
            let deadline = std::time::Instant::now() + self.config.upstream.response_timeout;
            ctx.upstream_deadline = Some(deadline);
            match exchange(&mut upstream, request, body.clone(), deadline).await {
                Ok(()) => {
                    ctx.upstream_latency = Some(ctx.started.elapsed());
                    return Ok((upstream, peer));
                }
                Err(e) => {
                    let closed = matches!(
                        e.etype(),
                        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
                    );
                    if reused && closed && stale < MAX_STALE_RETRIES {
                        // A pooled connection the upstream had already closed: PUT is
                        // idempotent and nothing was answered, so try again.
                        stale += 1;
                        continue;
                    }
                    return Err(upstream_failure(&e));
                }
            }
        }
    }

    /// The request the upstream gets: the client's, without hop-by-hop headers, as HTTP/1.1,
    /// with everything [`Gateway::write_upstream_request`] decides (which also frames the
    /// canonical body: `Content-Length`, no `Expect`).
    fn upstream_request(&self, session: &Session, ctx: &RequestCtx) -> Result<Box<RequestHeader>> {
        let mut req = Box::new(session.req_header().clone());
        strip_request_hop_by_hop(&mut req);
        if req.version == Version::HTTP_2 && !req.headers.contains_key(HOST) {
            // HTTP/2 carries the host as :authority; HTTP/1.1 upstreams need it as Host.
            if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) {
                req.insert_header(HOST, authority)?;
            }
        }
        req.set_version(Version::HTTP_11);
        self.write_upstream_request(session, &mut req, ctx)?;
        Ok(req)
    }

    /// Returns a finished exchange's connection to the pool, when it can be reused.
    async fn release(&self, upstream: HttpSession, peer: &HttpPeer) {
        self.connector
            .release_http_session(upstream, peer, peer.options.idle_timeout)
            .await;
    }
}

/// Sends header and body and waits for the final response header, all before `deadline`.
async fn exchange(
    upstream: &mut HttpSession,
    request: Box<RequestHeader>,
    body: Bytes,
    deadline: Instant,
) -> Result<()> {
    // Pingora flushes the header on its own; corked, header and body leave in one segment
    // instead of two (each loopback segment costs the sender several microseconds).
    cork(upstream, true);
    let sent = send_request(upstream, request, body).await;
    cork(upstream, false);
    sent?;
    for _ in 0..MAX_INFORMATIONAL {
        before(deadline, upstream.read_response_header()).await?;
        let informational = upstream
            .response_header()
            .is_some_and(|r| r.status.is_informational());
        if !informational {
            return Ok(());
        }
    }
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "too many informational responses",
    )
}

async fn send_request(
    upstream: &mut HttpSession,
    request: Box<RequestHeader>,
    body: Bytes,
) -> Result<()> {
    upstream.write_request_header(request).await?;
    if !body.is_empty() {
        upstream.write_request_body(body, true).await?;
    }
    upstream.finish_request_body().await
}

/// Sets `TCP_CORK` on an HTTP/1 upstream connection. Clearing it sends what was held back.
/// Best effort: a socket that refuses the option is written to uncorked.
#[cfg(target_os = "linux")]
fn cork(upstream: &HttpSession, on: bool) {
    use pingora::protocols::UniqueID;
    use std::os::fd::BorrowedFd;
    if let HttpSession::H1(h1) = upstream {
        // The unique id of a Unix stream is its file descriptor.
        let raw = h1.id();
        // SAFETY: the descriptor is owned by `upstream`'s stream, which is borrowed for the
        // whole (synchronous) lifetime of `fd` and so cannot be closed meanwhile.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let _ = socket2::SockRef::from(&fd).set_tcp_cork(on);
    }
}

#[cfg(not(target_os = "linux"))]
fn cork(_upstream: &HttpSession, _on: bool) {}

/// Runs an upstream read, failing it as an upstream read timeout once `deadline` has passed.
async fn before<T>(deadline: Instant, read: impl Future<Output = Result<T>>) -> Result<T> {
    match pingora::time::fast_timeout::fast_timeout(remaining(deadline), read).await {
        Ok(result) => result,
        Err(_) => {
            let mut e = Error::explain(ErrorType::ReadTimedout, "upstream.response_timeout_ms");
            e.as_up();
            Err(e)
        }
    }
}

/// The next chunk of the upstream body (an upstream failure if it cannot be read in time).
async fn read_body_chunk(
    upstream: &mut HttpSession,
    deadline: Option<Instant>,
) -> Result<Option<Bytes>> {
    let read = async {
        upstream.read_response_body().await.map_err(|mut e| {
            e.as_up();
            e
        })
    };
    match deadline {
        Some(deadline) => before(deadline, read).await,
        None => read.await,
    }
}

/// Reads the whole upstream body, refusing one over [`RENDER_LIMIT`] before buffering it.
async fn read_bounded(
    upstream: &mut HttpSession,
    deadline: Option<Instant>,
) -> Result<Bytes, GatewayError> {
    // The usual answer arrives in one read: that chunk is kept as it is, and copied only when
    // more follow.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = read_body_chunk(upstream, deadline)
        .await
        .map_err(|e| upstream_failure(&e))?
    {
        total += chunk.len();
        if total > RENDER_LIMIT {
            return Err(GatewayError::UpstreamInvalid);
        }
        if first.is_none() && joined.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(earlier) = first.take() {
                joined.extend_from_slice(&earlier);
            }
            joined.extend_from_slice(&chunk);
        }
        if upstream.response_done() {
            break;
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// What the client is told about a failed exchange: 504 for a timeout, 502 otherwise.
fn upstream_failure(e: &Error) -> GatewayError {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout => {
            GatewayError::UpstreamTimeout
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 => GatewayError::UpstreamInvalid,
        _ => GatewayError::UpstreamUnreachable,
    }
}

/// Removes the hop-by-hop headers and every header the `Connection` header nominates.
fn strip_request_hop_by_hop(req: &mut RequestHeader) {
    for name in connection_nominated(&req.headers) {
        req.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(name);
    }
}

fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    for name in connection_nominated(&resp.headers) {
        resp.remove_header(&name);
    }
    // Connection and Transfer-Encoding are set by Pingora's writer from the framing it uses.
    for name in [&CONNECTION, &TE, &TRAILER, &UPGRADE] {
        resp.remove_header(name);
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// Header names listed in `Connection`, except the framing ones handled elsewhere.
fn connection_nominated(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| *name != TRANSFER_ENCODING && *name != CONTENT_LENGTH && *name != HOST)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_nominated_request_headers_are_removed() {
        let mut req = RequestHeader::build("PUT", b"/v1/files/uploads/x", None).unwrap();
        req.insert_header("connection", "keep-alive, X-Secret, content-length")
            .unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("te", "trailers").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        req.insert_header("content-length", "10").unwrap();
        req.insert_header("x-kept", "1").unwrap();
        strip_request_hop_by_hop(&mut req);
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!req.headers.contains_key(gone), "{gone} still there");
        }
        assert!(req.headers.contains_key("x-kept"));
        // A nomination cannot remove the message framing.
        assert!(req.headers.contains_key("content-length"));
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("connection", "close, x-internal")
            .unwrap();
        resp.insert_header("x-internal", "1").unwrap();
        resp.insert_header("keep-alive", "timeout=5").unwrap();
        resp.insert_header("etag", "\"a\"").unwrap();
        strip_response_hop_by_hop(&mut resp);
        for gone in ["connection", "x-internal", "keep-alive"] {
            assert!(!resp.headers.contains_key(gone), "{gone} still there");
        }
        assert!(resp.headers.contains_key("etag"));
    }

    #[test]
    fn upstream_failures_map_to_502_or_504() {
        let failure = |etype| upstream_failure(&Error::new(etype));
        assert_eq!(failure(ErrorType::ConnectRefused).status(), 502);
        assert_eq!(failure(ErrorType::ConnectionClosed).status(), 502);
        assert_eq!(failure(ErrorType::ReadTimedout).status(), 504);
        assert_eq!(failure(ErrorType::ConnectTimedout).status(), 504);
        assert!(matches!(
            failure(ErrorType::InvalidHTTPHeader),
            GatewayError::UpstreamInvalid
        ));
    }
}
