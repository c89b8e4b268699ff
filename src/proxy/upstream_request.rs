//! `upstream_request_filter`: writes what `request_filter` decided into the request that goes
//! upstream, the same on Pingora's proxy loop and on the finish call's exchange: hop-by-hop
//! headers out, `X-Request-Id` and `X-Forwarded-*` in, the normalised query, JSON asked of the
//! upstream on the API, the canonical body's framing, identity headers from the verified token
//! only. It never forwards a client's claim to an identity, nor a method override on the API.

use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING,
};
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::{RequestCtx, UpstreamQuery};
use super::shared::Shared;
use super::upstream::headers::{self, X_REQUEST_ID};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Writes the decisions into the request that goes upstream, on either path.
pub fn write(
    api: &Shared,
    session: &Session,
    req: &mut RequestHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    headers::strip_request(req);
    req.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
    // The gateway is a hop of the trace: its own span id is the upstream's parent.
    if let Some(trace) = &ctx.trace {
        req.insert_header(headers::TRACEPARENT, trace.traceparent())?;
        if trace.parent_span_id.is_none() {
            // A new trace carries no state of another one (W3C: a `tracestate` without a
            // valid `traceparent` is not read).
            req.remove_header(headers::TRACESTATE);
        }
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let forwarded = match req
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip.to_string(),
        };
        req.insert_header(X_FORWARDED_FOR, forwarded)?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    req.insert_header(X_FORWARDED_PROTO, if tls { "https" } else { "http" })?;

    if let Some(UpstreamQuery(query)) = &ctx.upstream_query {
        let path = req.uri.path();
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let uri = uri
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "rewritten uri invalid"))?;
        req.set_uri(uri);
    }
    if ctx.route.is_api() {
        // The upstream always answers JSON, uncompressed: the gateway renders it.
        req.insert_header(ACCEPT, "application/json")?;
        req.insert_header(ACCEPT_ENCODING, "identity")?;
    }
    if let Some(body) = &ctx.body {
        req.remove_header(&TRANSFER_ENCODING);
        req.remove_header(&EXPECT);
        // Fields that describe the client's bytes, which the canonical body replaced (found by
        // a black-box attack: a stale Content-Range or digest went upstream with the new body).
        for name in BODY_DESCRIPTIONS {
            req.remove_header(name);
        }
        req.insert_header(CONTENT_TYPE, "application/json")?;
        req.insert_header(CONTENT_LENGTH, body.len())?;
    }

    if ctx.route.is_api() {
        // Frameworks that honour these would run a POST as the finish call, unvalidated.
        for name in METHOD_OVERRIDES {
            req.remove_header(name);
        }
    }
    // Identity headers come from the verified token only, never from the client (those of
    // every provider, whichever verified the token); CGI-style upstreams read
    // `X_Auth_Subject` as `X-Auth-Subject`, so both spellings go.
    if !api.config.auth.identity_headers.is_empty() {
        let forged: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| is_identity_header(api, name.as_str()))
            .cloned()
            .collect();
        for name in forged {
            req.remove_header(&name);
        }
    }
    if let Some(token) = &ctx.token {
        for (name, value) in token.upstream_headers() {
            if let Ok(value) = HeaderValue::from_str(value) {
                req.insert_header(name.clone(), value)?;
            }
        }
    }
    if !api.config.auth.forward_token {
        req.remove_header(&AUTHORIZATION);
    }
    Ok(())
}

/// Headers about the client's body bytes that no longer hold once it is rewritten.
const BODY_DESCRIPTIONS: [&str; 5] = [
    "content-range",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Headers that ask a framework to treat the request as another method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a header name is, or would be read by a CGI-style upstream as, one of the
/// headers the gateway fills from verified claims.
fn is_identity_header(api: &Shared, name: &str) -> bool {
    api.config.auth.identity_headers.iter().any(|header| {
        let header = header.as_str().as_bytes();
        name.len() == header.len()
            && name
                .bytes()
                .zip(header)
                .all(|(a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    })
}
