//! The gateway's own answers (refusals and upstream failures) and the one log line per request.
//!
//! An answer is always the API's envelope in the negotiated format, with `X-Request-Id`, and
//! the connection is closed when an unread request body would otherwise poison it. The log line
//! never carries a token, a body or a query string.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, VARY, WWW_AUTHENTICATE};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, Result};

use super::ctx::RequestCtx;
use super::Gateway;
use crate::error::GatewayError;

/// How long a client should wait before retrying while no key set is loaded.
const RETRY_AFTER_S: &str = "5";

impl Gateway {
    /// Writes `error` as the API's envelope and records it on the context.
    pub(super) async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: GatewayError,
    ) -> Result<()> {
        let status = error.status();
        let body = error.api_error().render(ctx.render);
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header(CONTENT_TYPE, ctx.render.format.content_type())?;
        resp.insert_header(CONTENT_LENGTH, body.len())?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        if ctx.route.is_api() {
            resp.insert_header(VARY, "Accept")?;
        }
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

    /// One structured line per request, and the request metrics.
    pub(super) fn log_request(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.template();
        self.metrics
            .observe_request(route, status, ctx.upstream_latency);
        match &ctx.error {
            Some(GatewayError::Auth(e)) => self.metrics.auth_failure(e.reason()),
            Some(error @ (GatewayError::Body(_) | GatewayError::BodyTooLarge { .. })) => {
                self.metrics.body_rejection(error.reason())
            }
            _ => {}
        }
        // The fields cost allocations: build them only when the line is written.
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let upstream = ctx.upstream.map(|a| a.to_string());
        tracing::info!(
            target: "access",
            request_id = ctx.request_id.to_str().unwrap_or(""),
            method = session.req_header().method.as_str(),
            route,
            status,
            upstream = upstream.as_deref(),
            latency_us = ctx.started.elapsed().as_micros() as u64,
            upstream_latency_us = ctx.upstream_latency.map(|d| d.as_micros() as u64),
            auth = ctx.auth_outcome,
            reason = ctx.error.as_ref().map(GatewayError::reason),
            proxy_error = e.map(|e| e.etype().as_str()),
        );
    }
}
