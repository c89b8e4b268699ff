//! The finish call's upstream exchange, done by the gateway itself inside `request_filter`.
//!
//! By the time the finish call gets here, the whole client body has been read and replaced by
//! its canonical form, so nothing needs streaming on the way up. Doing the exchange here instead
//! of through Pingora's generic proxy loop lets the rendered answer go out with a
//! `Content-Length` in one write (the proxy loop must send the header before the body is
//! rendered, which forces chunked framing and three writes), and skips the loop's channels and
//! tasks. Forwarding keeps the proxy path's guarantees: everything is built from the
//! parts the loop uses: the request written by [`upstream_request::write`], the peer, timeouts
//! and retry rule of [`super`], the one failure classification, the same stamping of the
//! answer; the upstream's body is relayed untouched whenever it is not rendered.

use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::deadline::before;
use super::headers::{is_bodiless, stamp_response};
use super::{classify_upstream, retry_stale, select_peer};
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::response_filter::{is_renderable, mark_rendered, rendered, RENDER_LIMIT};
use crate::proxy::shared::Shared;
use crate::proxy::{respond, upstream_request};

/// Informational responses skipped before the final one; more means a misbehaving upstream.
const MAX_INFORMATIONAL: u8 = 8;

/// Sends the validated finish call upstream and answers the client. Every failure before the
/// answer's header is written becomes the API's envelope; a failure after it can only close
/// the connection, which the returned error does.
pub async fn finish_upload(
    api: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let (mut upstream, peer) = match send_upstream(api, session, ctx).await {
        Ok(exchange) => exchange,
        Err(error) => return respond::error(session, ctx, error).await,
    };
    let Some(header) = upstream.response_header() else {
        return respond::error(session, ctx, GatewayError::UpstreamInvalid).await;
    };
    let mut resp = Box::new(header.clone());
    stamp_response(&mut resp, ctx, true)?;

    let deadline = ctx.upstream_deadline;
    if is_renderable(&resp, false) {
        let raw = match read_bounded(&mut upstream, deadline).await {
            Ok(raw) => raw,
            Err(error) => return respond::error(session, ctx, error).await,
        };
        release(api, upstream, &peer).await;
        let Some(body) = rendered(raw, ctx.render) else {
            return respond::error(session, ctx, GatewayError::UpstreamInvalid).await;
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
        release(api, upstream, &peer).await;
    }
    Ok(())
}

/// Connects (retrying as described in the module), sends the request and reads the
/// response header.
async fn send_upstream(
    api: &Shared,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Result<(HttpSession, HttpPeer), GatewayError> {
    let body = ctx.body.clone().unwrap_or_default();
    let mut stale = 0u8;
    loop {
        let peer = select_peer(api, ctx).map_err(|e| classify_upstream(&e))?;
        let (mut upstream, reused) = match api.connector.get_http_session(&peer).await {
            Ok(connected) => connected,
            Err(_) if super::retry_connect(api, ctx) => continue,
            Err(e) => return Err(classify_upstream(&e)),
        };
        // The proxy loop applies the peer's timeouts itself; here they are set by hand.
        upstream.set_read_timeout(peer.options.read_timeout);
        upstream.set_write_timeout(peer.options.write_timeout);
        let request = upstream_request(api, session, ctx)
            .map_err(|_| GatewayError::Internal("upstream_request"))?;
        let deadline = super::request_sent(api, ctx);
        match exchange(&mut upstream, request, body.clone(), deadline).await {
            Ok(()) => {
                super::answered(ctx);
                return Ok((upstream, peer));
            }
            Err(e) if retry_stale(reused, &e, stale) => {
                // A pooled connection the upstream had already closed: PUT is idempotent
                // and nothing was answered, so try again.
                stale += 1;
                // The stale attempt does not count against the connect retry.
                ctx.attempts = ctx.attempts.saturating_sub(1);
            }
            Err(e) => return Err(classify_upstream(&e)),
        }
    }
}

/// The request the upstream gets: the client's, without hop-by-hop headers, as HTTP/1.1,
/// with everything [`upstream_request::write`] decides (which also frames the
/// canonical body: `Content-Length`, no `Expect`).
fn upstream_request(
    api: &Shared,
    session: &Session,
    ctx: &RequestCtx,
) -> Result<Box<RequestHeader>> {
    let mut req = Box::new(session.req_header().clone());
    if req.version == Version::HTTP_2 && !req.headers.contains_key(HOST) {
        // HTTP/2 carries the host as :authority; HTTP/1.1 upstreams need it as Host.
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) {
            req.insert_header(HOST, authority)?;
        }
    }
    req.set_version(Version::HTTP_11);
    upstream_request::write(api, session, &mut req, ctx)?;
    Ok(req)
}

/// Returns a finished exchange's connection to the pool, when it can be reused.
async fn release(api: &Shared, upstream: HttpSession, peer: &HttpPeer) {
    api.connector
        .release_http_session(upstream, peer, peer.options.idle_timeout)
        .await;
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
        .map_err(|e| classify_upstream(&e))?
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
