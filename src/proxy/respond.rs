//! The gateway's own answers (refusals and upstream failures) and the one log line per request.
//!
//! An answer is always the API's envelope in the negotiated format, with `X-Request-Id`, and
//! the connection is closed when an unread request body would otherwise poison it. The log line
//! never carries a token, a body or a query string.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, VARY, WWW_AUTHENTICATE};
use http::HeaderValue;
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
        let status = match (&ctx.error, ctx.aborted) {
            // What was begun never completed: the outcome is the failure, not the head sent.
            (Some(error), true) => error.status(),
            _ => session.response_written().map_or(0, |r| r.status.as_u16()),
        };
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
        AccessLine {
            request_id: &ctx.request_id,
            method: session.req_header().method.as_str(),
            route,
            status,
            upstream: ctx.upstream,
            latency: ctx.started.elapsed(),
            upstream_latency: ctx.upstream_latency,
            auth: ctx.auth_outcome,
            reason: ctx.error.as_ref().map(GatewayError::reason),
            proxy_error: e.map(|e| e.etype().as_str()),
            aborted: ctx.aborted,
        }
        .write();
    }
}

/// The one access-log line of a request: what was asked (method, route template), what came
/// of it and why. Never a query, a header value, a token or a body byte.
pub(super) struct AccessLine<'a> {
    pub request_id: &'a HeaderValue,
    pub method: &'a str,
    pub route: &'static str,
    pub status: u16,
    pub upstream: Option<SocketAddr>,
    pub latency: Duration,
    pub upstream_latency: Option<Duration>,
    pub auth: &'static str,
    pub reason: Option<&'static str>,
    pub proxy_error: Option<&'static str>,
    /// The answer had begun when the exchange failed: the client connection was aborted.
    pub aborted: bool,
}

impl AccessLine<'_> {
    pub fn write(&self) {
        // The fields cost allocations: build them only when the line is written.
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let upstream = self.upstream.map(|a| a.to_string());
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or(""),
            method = self.method,
            route = self.route,
            status = self.status,
            upstream = upstream.as_deref(),
            latency_us = self.latency.as_micros() as u64,
            upstream_latency_us = self.upstream_latency.map(|d| d.as_micros() as u64),
            auth = self.auth,
            reason = self.reason,
            proxy_error = self.proxy_error,
            aborted = self.aborted.then_some(true),
        );
    }
}
