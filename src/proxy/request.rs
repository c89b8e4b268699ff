//! The request side of the shell: decide everything in `request_filter`, then write the
//! decision into the upstream request. Reading the body happens here, bounded by
//! `server.max_body_bytes` before a byte is buffered past it, and only after authentication.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT,
    TRANSFER_ENCODING,
};
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::{RequestCtx, UpstreamQuery};
use super::route::{self, Route};
use super::Gateway;
use crate::error::GatewayError;
use crate::request::{body, query};

/// A client that trickles its body slower than this is cut off: the body is small by contract.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

const X_REQUEST_ID: &str = "x-request-id";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

impl Gateway {
    /// Everything decided before the upstream is contacted, in the order of SPEC §4.
    pub(super) async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        ctx.request_id = request_id(req.headers.get(X_REQUEST_ID));
        ctx.head = req.method == Method::HEAD;
        let path = req.uri.path();
        let raw_query = req.uri.query();
        let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        ctx.route = route::classify(&self.config.api, req.method == Method::PUT, req.raw_path());
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

        if self.config.auth.public_paths.iter().any(|p| p == path) {
            ctx.auth_outcome = "public";
        } else {
            let authorization = req.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
            match self.auth.authenticate(authorization).await {
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
                let raw = read_body(session, self.config.server.max_body_bytes).await?;
                let finish = body::validate_finish_body(
                    content_type.as_deref(),
                    &raw,
                    self.config.api.max_nb_chunks,
                )?;
                ctx.body = Some(Bytes::from(finish.canonical));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Writes the decisions into the request Pingora sends upstream.
    pub(super) fn write_upstream_request(
        &self,
        session: &Session,
        req: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        req.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
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
            req.insert_header(CONTENT_TYPE, "application/json")?;
            req.insert_header(CONTENT_LENGTH, body.len())?;
        }

        if ctx.route.is_api() {
            // Frameworks that honour these would run a POST as the finish call, unvalidated.
            for name in METHOD_OVERRIDES {
                req.remove_header(name);
            }
        }
        // Identity headers come from the verified token only, never from the client; CGI-style
        // upstreams read `X_Auth_Subject` as `X-Auth-Subject`, so both spellings go.
        if !self.config.auth.claims_to_headers.is_empty() {
            let forged: Vec<http::HeaderName> = req
                .headers
                .keys()
                .filter(|name| self.is_identity_header(name.as_str()))
                .cloned()
                .collect();
            for name in forged {
                req.remove_header(&name);
            }
        }
        if let Some(token) = &ctx.token {
            for (name, value) in &token.upstream_headers {
                if let Ok(value) = HeaderValue::from_str(value) {
                    req.insert_header(name.clone(), value)?;
                }
            }
        }
        if !self.config.auth.forward_token {
            req.remove_header(&AUTHORIZATION);
        }
        Ok(())
    }
}

/// Headers that ask a framework to treat the request as another method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

impl Gateway {
    /// Whether a header name is, or would be read by a CGI-style upstream as, one of the
    /// headers the gateway fills from verified claims.
    fn is_identity_header(&self, name: &str) -> bool {
        self.config
            .auth
            .claims_to_headers
            .iter()
            .any(|(_, header)| {
                let header = header.as_str().as_bytes();
                name.len() == header.len()
                    && name
                        .bytes()
                        .zip(header)
                        .all(|(a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
            })
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

pub(super) fn generate_request_id() -> HeaderValue {
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
