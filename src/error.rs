//! The API's error catalogue (SPEC §4.7) and the gateway's typed errors.
//!
//! Every answer the gateway gives on its own account comes from here: a [`GatewayError`] maps to
//! exactly one catalogue row (status, `error_code`, `error_message`) and carries an internal
//! reason for logs and metrics. The client only ever sees the catalogue row, never the reason:
//! no token, no body, no upstream address leaks through an error.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::auth::AuthError;
use crate::render::{render_error_envelope, RenderOptions, ResponseFormat};
use crate::request::body::BodyError;
use crate::request::query::QueryError;

/// One row of the API's error catalogue: what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiError {
    /// `0x0230001 Invalid Input` (400, 413).
    InvalidInput,
    /// `0x0000003 Invalid access token` (403).
    InvalidAccessToken,
    /// `0x0230002 Requested file does not exist` (404).
    FileNotFound,
    /// `0x0000001 Internal Error` (500, 502, 503, 504).
    Internal,
    /// `0x0000004 Too Many Requests` (429).
    TooManyRequests,
}

impl ApiError {
    /// The catalogue's `error_code`.
    pub fn code(self) -> &'static str {
        match self {
            ApiError::InvalidInput => "0x0230001",
            ApiError::InvalidAccessToken => "0x0000003",
            ApiError::FileNotFound => "0x0230002",
            ApiError::Internal => "0x0000001",
            ApiError::TooManyRequests => "0x0000004",
        }
    }

    /// The catalogue's `error_message`.
    pub fn message(self) -> &'static str {
        match self {
            ApiError::InvalidInput => "Invalid Input",
            ApiError::InvalidAccessToken => "Invalid access token",
            ApiError::FileNotFound => "Requested file does not exist",
            ApiError::Internal => "Internal Error",
            ApiError::TooManyRequests => "Too Many Requests",
        }
    }

    /// The envelope rendered as the request asked (format, human). Each of the 20 variants is
    /// rendered once per process and then shared: refusals cost no rendering.
    pub fn render(self, opts: RenderOptions) -> Bytes {
        static RENDERED: OnceLock<Vec<Bytes>> = OnceLock::new();
        let slot = |error: ApiError, format: ResponseFormat, human: bool| {
            (error as usize) * 4 + (format as usize) * 2 + usize::from(human)
        };
        let table = RENDERED.get_or_init(|| {
            let mut table = vec![Bytes::new(); Self::ALL.len() * 4];
            for error in Self::ALL {
                for format in [ResponseFormat::Json, ResponseFormat::Xml] {
                    for human in [false, true] {
                        let opts = RenderOptions {
                            format,
                            human,
                            show_null: false,
                        };
                        let body = render_error_envelope(error.code(), error.message(), opts);
                        if let Some(entry) = table.get_mut(slot(error, format, human)) {
                            *entry = Bytes::from(body);
                        }
                    }
                }
            }
            table
        });
        table
            .get(slot(self, opts.format, opts.human))
            .cloned()
            .unwrap_or_default()
    }

    const ALL: [ApiError; 5] = [
        ApiError::InvalidInput,
        ApiError::InvalidAccessToken,
        ApiError::FileNotFound,
        ApiError::Internal,
        ApiError::TooManyRequests,
    ];
}

/// Everything the gateway refuses or fails at, one variant per cause.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A query parameter the API does not accept.
    #[error("invalid query: {0}")]
    Query(#[from] QueryError),
    /// A finish-upload body that is not valid.
    #[error("invalid body: {0}")]
    Body(#[from] BodyError),
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A path under the prefix with dot segments, `//` or encoded separators.
    #[error("ambiguous path")]
    AmbiguousPath,
    /// The upload ID does not match `api.upload_id_pattern`.
    #[error("malformed upload id")]
    MalformedUploadId,
    /// The bearer token was refused.
    #[error("token refused: {0}")]
    Auth(#[from] AuthError),
    /// No key set has ever been loaded: the gateway cannot tell good tokens from bad.
    #[error("no key set loaded")]
    KeySetUnavailable,
    /// No upstream accepted a connection.
    #[error("no upstream reachable")]
    UpstreamUnreachable,
    /// The upstream's answer could not be read as HTTP, or was too large to render.
    #[error("upstream answer invalid")]
    UpstreamInvalid,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The client's request could not be read (malformed HTTP, body cut short).
    #[error("client request unreadable")]
    BadRequest,
    /// The request head is not HTTP the gateway's parser accepts.
    #[error("malformed request")]
    MalformedRequest,
    /// The request head is larger than `server.max_header_bytes`.
    #[error("request head over {limit} bytes")]
    HeaderTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request head did not arrive within `server.header_timeout_ms` (the connection is
    /// closed without an answer; the status is the log's and the metrics').
    #[error("request head not received in time")]
    HeaderTimeout,
    /// The caller's rate limit (`[rate_limit]`) is spent.
    #[error("rate limited")]
    RateLimited {
        /// Whole seconds until the next request would be admitted (at least 1).
        retry_after_s: u64,
    },
    /// A CORS preflight from an origin not allowed, or asking for a method or header not
    /// allowed.
    #[error("cors preflight refused")]
    CorsRefused,
    /// A fault inside the gateway.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl GatewayError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Query(_)
            | GatewayError::Body(_)
            | GatewayError::AmbiguousPath
            | GatewayError::BadRequest
            | GatewayError::MalformedRequest => 400,
            GatewayError::HeaderTimeout => 408,
            GatewayError::HeaderTooLarge { .. } => 431,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::MalformedUploadId => 404,
            GatewayError::Auth(_) | GatewayError::CorsRefused => 403,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::KeySetUnavailable => 503,
            GatewayError::UpstreamUnreachable | GatewayError::UpstreamInvalid => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::Internal(_) => 500,
        }
    }

    /// The catalogue row the client sees.
    pub fn api_error(&self) -> ApiError {
        match self.status() {
            400 | 413 | 431 => ApiError::InvalidInput,
            403 => ApiError::InvalidAccessToken,
            404 => ApiError::FileNotFound,
            429 => ApiError::TooManyRequests,
            _ => ApiError::Internal,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Query(e) => e.reason(),
            GatewayError::Body(e) => e.reason(),
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::AmbiguousPath => "ambiguous_path",
            GatewayError::MalformedUploadId => "malformed_upload_id",
            GatewayError::Auth(e) => e.reason(),
            GatewayError::KeySetUnavailable => "key_set_unavailable",
            GatewayError::UpstreamUnreachable => "upstream_unreachable",
            GatewayError::UpstreamInvalid => "upstream_invalid",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::BadRequest => "bad_request",
            GatewayError::MalformedRequest => "malformed_request",
            GatewayError::HeaderTooLarge { .. } => "header_too_large",
            GatewayError::HeaderTimeout => "header_timeout",
            GatewayError::CorsRefused => "cors_refused",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::Internal(reason) => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_maps_to_exactly_its_catalogue_row() {
        let cases = [
            (GatewayError::BodyTooLarge { limit: 1 }, 413, "0x0230001"),
            (GatewayError::MalformedUploadId, 404, "0x0230002"),
            (GatewayError::KeySetUnavailable, 503, "0x0000001"),
            (
                GatewayError::RateLimited { retry_after_s: 1 },
                429,
                "0x0000004",
            ),
            (GatewayError::CorsRefused, 403, "0x0000003"),
            (GatewayError::UpstreamUnreachable, 502, "0x0000001"),
            (GatewayError::UpstreamInvalid, 502, "0x0000001"),
            (GatewayError::UpstreamTimeout, 504, "0x0000001"),
            (GatewayError::BadRequest, 400, "0x0230001"),
            (GatewayError::MalformedRequest, 400, "0x0230001"),
            (GatewayError::HeaderTooLarge { limit: 1 }, 431, "0x0230001"),
            (GatewayError::Internal("x"), 500, "0x0000001"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(error.api_error().code(), code, "{error}");
        }
    }

    #[test]
    fn every_envelope_variant_is_rendered_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for error in ApiError::ALL {
            for format in [ResponseFormat::Json, ResponseFormat::Xml] {
                for human in [false, true] {
                    let body = error.render(RenderOptions {
                        format,
                        human,
                        show_null: true,
                    });
                    let text = String::from_utf8(body.to_vec()).unwrap();
                    assert!(text.contains(error.code()), "{text}");
                    assert!(text.contains(error.message()), "{text}");
                    assert_eq!(human, text.contains('\n'), "{text}");
                    assert!(seen.insert(text));
                }
            }
        }
        assert_eq!(seen.len(), ApiError::ALL.len() * 4);
    }

    #[test]
    fn envelope_is_the_documented_json() {
        let body = ApiError::Internal.render(RenderOptions::default());
        assert_eq!(
            body.as_ref(),
            br#"{"error":{"error_code":"0x0000001","error_message":"Internal Error"}}"#
        );
    }

    #[test]
    fn envelope_renders_as_xml_when_asked() {
        let opts = RenderOptions {
            format: ResponseFormat::Xml,
            ..RenderOptions::default()
        };
        let body = String::from_utf8(ApiError::InvalidAccessToken.render(opts).to_vec()).unwrap();
        assert!(body.contains(
            "<error><error_code>0x0000003</error_code><error_message>Invalid access token</error_message></error>"
        ), "{body}");
    }
}
