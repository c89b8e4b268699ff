//! `request_filter`: everything decided before the upstream is contacted, in the order of
//! SPEC §4 (route, format, query, token, body), stored once in the [`RequestCtx`]. A refusal is
//! answered here with the API's envelope; the finish call, once its body is validated, is
//! forwarded and answered here too ([`upstream::exchange`]). Reading the body happens only
//! after authentication, bounded by `server.max_body_bytes` before a byte is buffered past it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, ORIGIN,
};
use http::{HeaderValue, Method};
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::{RequestCtx, UpstreamQuery};
use super::shared::Shared;
use super::upstream::headers::{TRACEPARENT, X_REQUEST_ID};
use super::{respond, upstream};
use crate::cors::Preflight;
use crate::error::GatewayError;
use crate::request::{body, query};
use crate::route::{self, Route};

/// A client that trickles its body slower than this is cut off: the body is small by contract.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides, then answers a refusal or the finish call; `Ok(false)` hands the request to
/// Pingora's proxy loop.
pub async fn run(api: &Shared, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    match decide(api, session, ctx).await {
        Ok(()) if ctx.preflight.is_some() => {
            respond::preflight(session, ctx).await?;
            Ok(true)
        }
        Ok(()) if ctx.route == Route::FinishUpload => {
            upstream::exchange::finish_upload(api, session, ctx).await?;
            Ok(true)
        }
        Ok(()) => Ok(false),
        Err(error) => {
            respond::error(session, ctx, error).await?;
            Ok(true)
        }
    }
}

/// Everything decided before the upstream is contacted, in the order of SPEC §4.
async fn decide(
    api: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let req = session.req_header();
    ctx.request_id = request_id(req.headers.get(X_REQUEST_ID));
    ctx.trace = Some(crate::trace_context::TraceContext::from_header(
        single(&req.headers, TRACEPARENT),
        || fastrand::u64(..),
    ));
    ctx.head = req.method == Method::HEAD;
    if !plain_content_length(&req.headers) || !one_host(req) {
        return Err(GatewayError::MalformedRequest);
    }
    let path = req.uri.path();
    let raw_query = req.uri.query();
    let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    ctx.route = route::classify_request(&api.config.api, req.method.as_str(), req.raw_path());
    // The query is read once, before authentication, so that even a 403 comes back in the
    // format asked for; an invalid query falls back to the lenient reading here and is
    // refused only after the token passed.
    let normalised = query::normalise(raw_query);
    if ctx.route.is_api() {
        ctx.render = match &normalised {
            Ok(q) => q.render_options(accept),
            Err(_) => query::lenient_render_options(raw_query, accept),
        };
    }

    // CORS before the token: a preflight carries none.
    if let (Some(cors), true) = (&api.config.cors, ctx.route.is_api()) {
        ctx.cors_enabled = true;
        let origin = single(&req.headers, ORIGIN);
        let asked = |name: &str| req.headers.get(name).map(HeaderValue::as_bytes);
        match cors.preflight(
            &req.method,
            origin,
            asked("access-control-request-method"),
            asked("access-control-request-headers"),
        ) {
            Preflight::Allowed(headers) => {
                ctx.auth_outcome = "preflight";
                ctx.preflight = Some(headers);
                return Ok(());
            }
            Preflight::Refused => return Err(GatewayError::CorsRefused),
            Preflight::No => {
                ctx.cors_headers = origin
                    .and_then(|o| cors.allowed_origin(o))
                    .map(|allowed| cors.answer_headers(allowed));
            }
        }
    }

    if api.config.auth.public_paths.iter().any(|p| p == path) {
        ctx.auth_outcome = "public";
    } else {
        // A repeated Authorization (a singleton field) reads as an empty one: refused, never
        // one verified while the upstream reads the other (found by a black-box attack).
        let authorization = single(&req.headers, AUTHORIZATION);
        let (provider, verdict) = api.auth.authenticate(authorization).await;
        ctx.provider = provider;
        match verdict {
            Ok(token) => {
                ctx.auth_outcome = "ok";
                ctx.token = Some(token);
            }
            Err(e) => {
                ctx.auth_outcome = "refused";
                return Err(e);
            }
        }
    }

    // The rate limit, after the token (a refused one costs no budget), before the body.
    if let Some(limiter) = &api.limiter {
        let is_finish = matches!(ctx.route, Route::FinishUpload | Route::FinishUploadBadId);
        if limiter.applies(is_finish, ctx.route.is_api()) {
            let token = ctx.token.as_ref().map(|t| (t.provider(), t.key_claim()));
            let peer = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Err(wait) = limiter.check(&limiter.key(token, peer)).await {
                return Err(GatewayError::RateLimited {
                    retry_after_s: crate::rate_limit::Limiter::retry_after_s(wait),
                });
            }
        }
    }

    match ctx.route {
        Route::Other => return Ok(()),
        Route::Ambiguous => return Err(GatewayError::AmbiguousPath),
        Route::Api | Route::FinishUpload | Route::FinishUploadBadId => {}
    }
    let normalised = normalised?;
    if normalised.upstream_query.as_deref() != raw_query {
        ctx.upstream_query = Some(UpstreamQuery(normalised.upstream_query));
    }
    match ctx.route {
        Route::FinishUploadBadId => Err(GatewayError::MalformedUploadId),
        Route::FinishUpload => {
            let content_type = req
                .headers
                .get(CONTENT_TYPE)
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .map_err(|_| GatewayError::BadRequest)
                })
                .transpose()?;
            let raw = read_body(session, api.config.server.max_body_bytes).await?;
            let finish = body::validate_finish_body(
                content_type.as_deref(),
                &raw,
                api.config.api.max_nb_chunks,
            )?;
            ctx.body = Some(Bytes::from(finish.canonical));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads the whole request body, refusing it as soon as it is known to exceed `limit`.
async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let headers = &session.req_header().headers;
    // The gateway validates bytes as they are: an encoded body would be validated as garbage,
    // and a mislabelled one would reach the upstream with a wrong label.
    if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(GatewayError::Body(body::BodyError::UnsupportedContentType));
    }
    // Clients that wait for `100 Continue` before sending the body would otherwise stall
    // until the read deadline. Only asked once the token and the declared size passed.
    if headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        session
            .write_continue_response()
            .await
            .map_err(|_| GatewayError::BadRequest)?;
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(1024, |l| l as usize));
    let read_all = async {
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|_| GatewayError::BadRequest)?
        {
            if buf.len() + chunk.len() > limit {
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read_all)
        .await
        .map_err(|_| GatewayError::BadRequest)??;
    Ok(buf.freeze())
}

/// Whether the request's `Content-Length` is absent or one field of digits: a list
/// (`26, 26`) or a repeated field is refused on every route rather than relayed for an
/// upstream to frame its own way (found by a black-box attack: Pingora accepted both and
/// forwarded them as sent).
fn plain_content_length(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => {
            let digits = value.as_bytes();
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        }
        (Some(_), Some(_)) => false,
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host` (found by a black-box
/// attack: one without it was forwarded; two are a routing differential).
fn one_host(req: &pingora::http::RequestHeader) -> bool {
    let hosts = req.headers.get_all(http::header::HOST).iter().count();
    match req.version {
        http::Version::HTTP_11 => hosts == 1,
        _ => hosts <= 1,
    }
}

/// A header that means something only once (`Origin`, `traceparent`): its value, or, when the
/// request repeats it, an empty value, which no origin rule and no trace parser accepts (two
/// origins are no origin; W3C reads two `traceparent`s as none).
fn single(headers: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Option<&[u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    match values.next() {
        None => Some(first.as_bytes()),
        Some(_) => Some(b""),
    }
}

/// The client's `X-Request-Id` when it is a sane token, else a fresh random one. Anything else
/// (too long, control characters, spaces) is replaced, so it is safe in logs and headers.
fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    if let Some(value) = client {
        let bytes = value.as_bytes();
        let sane = (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if sane {
            return value.clone();
        }
    }
    generate_request_id()
}

/// A fresh random request id: 32 lowercase hex digits.
pub fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for slot in out.iter_mut() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_id_is_kept_when_sane() {
        let id = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&id)), id);
    }

    #[test]
    fn hostile_request_id_is_replaced() {
        let long = "a".repeat(129);
        for bad in ["has space", "quote\"", long.as_str()] {
            let id = HeaderValue::from_str(bad).unwrap();
            let got = request_id(Some(&id));
            assert_ne!(got, id);
            assert_eq!(got.len(), 32);
        }
    }

    #[test]
    fn generated_request_ids_differ() {
        assert_ne!(generate_request_id(), generate_request_id());
    }
}
