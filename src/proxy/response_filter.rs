//! `response_filter` and `response_body_filter`: the upstream's answer on its way to the
//! client. The head is stamped like every answer ([`stamp_response`]); whether the body is
//! rendered (JSON, not encoded, not HEAD/204/206/304) is decided once from it, and a rendered
//! body is buffered and rendered at its end.
//!
//! It must never send a stale `Content-Length`, never touch a body it cannot parse as JSON, and
//! never buffer more than [`RENDER_LIMIT`] bytes of an upstream answer.

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, TRANSFER_ENCODING};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::ctx::{RequestCtx, ResponsePlan};
use super::upstream::{
    self,
    headers::{is_bodiless, stamp_response},
};
use crate::media;
use crate::render::{render_upstream_body, RenderOptions};

/// The largest upstream body the gateway buffers to render: finish-call answers are a few
/// hundred bytes, so anything near this is a misbehaving upstream.
pub const RENDER_LIMIT: usize = 1 << 20;

/// Stamps the upstream's answer and decides the response plan.
pub fn run(resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    if ctx.head || is_bodiless(resp.status.as_u16()) {
        // The exchange is complete with the head: the connection may go back to the pool.
        ctx.watchdog = None;
    }
    upstream::answered(ctx);
    stamp_response(resp, ctx, true)?;
    if !ctx.route.is_api() {
        return Ok(());
    }
    if ctx.head && is_renderable(resp, false) {
        // HEAD describes what GET would send: the negotiated type, a length not yet known.
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ETAG);
        resp.insert_header(CONTENT_TYPE, ctx.render.format.content_type())?;
        return Ok(());
    }
    if !is_renderable(resp, ctx.head) {
        return Ok(());
    }
    ctx.response_plan = ResponsePlan::Render;
    resp.remove_header(&CONTENT_LENGTH);
    resp.insert_header(TRANSFER_ENCODING, "chunked")?;
    mark_rendered(resp, ctx.render)
}

/// The headers of a rendered answer that do not depend on its framing.
pub fn mark_rendered(resp: &mut ResponseHeader, render: RenderOptions) -> Result<()> {
    // The rendered body is another representation: the upstream's validator is not its own.
    resp.remove_header(&ETAG);
    resp.insert_header(CONTENT_TYPE, render.format.content_type())?;
    Ok(())
}

/// The upstream's JSON body as the client asked for it; an empty body stays empty. `None` for
/// a body that claims JSON but is not: a broken upstream answer (502), never relayed under a
/// label that would then be false, and never replaced by invented content.
pub fn rendered(raw: Bytes, render: RenderOptions) -> Option<Bytes> {
    if raw.is_empty() {
        return Some(raw);
    }
    render_upstream_body(&raw, render).map(Bytes::from)
}

/// Whether the upstream answer's body is rendered: identity-encoded JSON, within
/// [`RENDER_LIMIT`], on a status whose body is a whole representation.
pub fn is_renderable(resp: &ResponseHeader, head: bool) -> bool {
    let status = resp.status.as_u16();
    // 206 carries a byte range of the upstream's representation: rendering it would lie.
    if head || matches!(status, 204 | 206 | 304) || (100..200).contains(&status) {
        return false;
    }
    let headers = &resp.headers;
    let identity = headers
        .get(CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(media::is_json);
    let small = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_none_or(|len| len <= RENDER_LIMIT);
    identity && json && small
}

/// Buffers the upstream body while rendering, and swaps in the rendered body at the end.
pub fn render_body(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if ctx.response_plan != ResponsePlan::Render {
        return Ok(());
    }
    if let Some(chunk) = body.as_mut() {
        if ctx.response_buffer.len() + chunk.len() > RENDER_LIMIT {
            return Err(Error::explain(
                ErrorType::InternalError,
                "upstream body over the render limit",
            ));
        }
        ctx.response_buffer.extend_from_slice(chunk);
        *chunk = Bytes::new();
    }
    if end_of_stream {
        let raw = std::mem::take(&mut ctx.response_buffer);
        let Some(out) = rendered(Bytes::from(raw), ctx.render) else {
            let mut e = Error::explain(ErrorType::InvalidHTTPHeader, "upstream JSON invalid");
            e.as_up();
            return Err(e);
        };
        *body = Some(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.insert_header(*k, *v).unwrap();
        }
        r
    }

    #[test]
    fn only_identity_json_bodies_are_rendered() {
        let json = ("content-type", "application/json");
        assert!(is_renderable(&response(200, &[json]), false));
        assert!(!is_renderable(&response(200, &[json]), true));
        assert!(!is_renderable(&response(204, &[json]), false));
        assert!(!is_renderable(&response(304, &[json]), false));
        assert!(!is_renderable(&response(206, &[json]), false));
        assert!(!is_renderable(
            &response(200, &[json, ("content-encoding", "gzip")]),
            false
        ));
        assert!(!is_renderable(
            &response(200, &[("content-type", "text/plain")]),
            false
        ));
        assert!(!is_renderable(
            &response(200, &[json, ("content-length", "2000000")]),
            false
        ));
    }
}
