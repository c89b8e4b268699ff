//! The gateway's own answers (refusals and upstream failures): always the API's envelope in
//! the negotiated format, stamped like every answer, and the connection closed when an unread
//! request body would otherwise poison it.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::RequestCtx;
use super::upstream::headers::stamp_response;
use crate::error::GatewayError;

/// How long a client should wait before retrying while no key set is loaded.
const RETRY_AFTER_S: &str = "5";

/// Writes `error` as the API's envelope and records it on the context.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, error: GatewayError) -> Result<()> {
    let status = error.status();
    let body = error.api_error().render(ctx.render);
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(CONTENT_TYPE, ctx.render.format.content_type())?;
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    stamp_response(&mut resp, ctx, false)?;
    match &error {
        GatewayError::Auth(e) => {
            let challenge = match e.www_authenticate_error() {
                "insufficient_scope" => r#"Bearer error="insufficient_scope""#,
                _ => r#"Bearer error="invalid_token""#,
            };
            resp.insert_header(WWW_AUTHENTICATE, challenge)?;
        }
        GatewayError::KeySetUnavailable => {
            resp.insert_header(RETRY_AFTER, RETRY_AFTER_S)?;
        }
        GatewayError::RateLimited { retry_after_s } => {
            resp.insert_header(RETRY_AFTER, (*retry_after_s).max(1))?;
        }
        _ => {}
    }
    // A body left unread would be parsed as the next request on a kept-alive connection.
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    ctx.error = Some(error);
    session
        .write_response_header(Box::new(resp), ctx.head)
        .await?;
    if !ctx.head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answers an allowed CORS preflight: 204 with the preflight headers, stamped like every
/// answer; nothing goes upstream.
pub async fn preflight(session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let mut resp = ResponseHeader::build(204, Some(8))?;
    stamp_response(&mut resp, ctx, false)?;
    for (name, value) in ctx.preflight.take().unwrap_or_default() {
        resp.insert_header(name, value)?;
    }
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}
