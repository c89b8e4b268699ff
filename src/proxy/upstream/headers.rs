//! The headers the gateway owns on the way through, for every route and both directions: the
//! one list of hop-by-hop headers, and the headers stamped on every answer.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and are never passed on, nor
//! is any header a `Connection` header nominates. The message framing (`Content-Length`,
//! `Transfer-Encoding`) is not in the list: each path frames what it sends itself (Pingora's
//! writers from the body it relays, the finish call from its canonical body), and a
//! nomination can never remove it. `Upgrade` is stripped: the gateway tunnels no protocol.

use http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, VARY};
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

use crate::proxy::ctx::RequestCtx;

/// The request id header, on the upstream request and on every answer.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Hop-by-hop headers: none of them is the sender's to pass on.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
];

/// Every header of `headers` that must not be passed on: the hop-by-hop list and the names the
/// `Connection` header nominates (never the framing or `Host`).
fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| *name != TRANSFER_ENCODING && *name != CONTENT_LENGTH && *name != HOST)
        .collect();
    names.extend(
        HOP_BY_HOP
            .iter()
            .filter(|name| headers.contains_key(**name))
            .map(|name| HeaderName::from_static(name)),
    );
    names
}

/// Removes the hop-by-hop headers from a request on its way upstream.
pub fn strip_request(req: &mut RequestHeader) {
    for name in hop_by_hop(&req.headers) {
        req.remove_header(&name);
    }
}

/// Removes the hop-by-hop headers from an upstream answer on its way to the client.
pub fn strip_response(resp: &mut ResponseHeader) {
    for name in hop_by_hop(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// The W3C Trace Context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C Trace Context vendor state, forwarded with a valid `traceparent` only.
pub const TRACESTATE: &str = "tracestate";

/// The CORS headers of an answer.
const CORS_RESPONSE_HEADERS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// Answers that never have a body (RFC 9110 §6.4.1): relayed without one and without framing.
pub fn is_bodiless(status: u16) -> bool {
    matches!(status, 204 | 304) || (100..200).contains(&status)
}

/// The headers every answer to the client carries, whoever wrote it (the upstream relayed or
/// rendered, or the gateway's own envelope): `X-Request-Id`, `Vary: Accept` on the API (the
/// format follows `Accept`). An upstream answer also loses its hop-by-hop headers, and its
/// framing when it cannot have a body.
pub fn stamp_response(
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
    from_upstream: bool,
) -> Result<()> {
    if from_upstream {
        strip_response(resp);
        if is_bodiless(resp.status.as_u16()) {
            resp.remove_header(&CONTENT_LENGTH);
            resp.remove_header(&TRANSFER_ENCODING);
        }
    }
    resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
    if ctx.route.is_api() {
        resp.append_header(VARY, "Accept")?;
    }
    if ctx.cors_enabled {
        // The gateway owns CORS on the API: an upstream's own grants never reach the browser.
        if from_upstream {
            for name in CORS_RESPONSE_HEADERS {
                resp.remove_header(name);
            }
        }
        resp.append_header(VARY, "Origin")?;
        if let Some(headers) = &ctx.cors_headers {
            for (name, value) in headers {
                resp.insert_header(*name, value.clone())?;
            }
        }
    }
    Ok(())
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
        req.insert_header("proxy-authorization", "Basic eDp5")
            .unwrap();
        req.insert_header("content-length", "10").unwrap();
        req.insert_header("x-kept", "1").unwrap();
        strip_request(&mut req);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
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
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        resp.insert_header("etag", "\"a\"").unwrap();
        strip_response(&mut resp);
        for gone in ["connection", "x-internal", "keep-alive"] {
            assert!(!resp.headers.contains_key(gone), "{gone} still there");
        }
        assert!(resp.headers.contains_key("etag"));
        assert!(resp.headers.contains_key("transfer-encoding"));
    }
}
