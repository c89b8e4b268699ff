//! `logging`: the one access line per request and the request metrics, for both paths and
//! for the edge's refusals. The line never carries a token, a body, a query string or a header
//! value: the route is its template, the outcome its status and reason.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;
use pingora::proxy::Session;
use pingora::Error;

use super::ctx::RequestCtx;
use super::shared::Shared;
use crate::error::GatewayError;

/// One structured line per request, and the request metrics.
pub fn run(api: &Shared, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = match (&ctx.error, ctx.aborted) {
        // What was begun never completed: the outcome is the failure, not the head sent.
        (Some(error), true) => error.status(),
        _ => session.response_written().map_or(0, |r| r.status.as_u16()),
    };
    let route = ctx.route.template();
    let latency = ctx.started.elapsed();
    let provider = ctx.provider.map(|i| api.auth.provider_name(i));
    api.metrics
        .observe_request(route, status, latency, ctx.upstream_latency);
    match &ctx.error {
        Some(GatewayError::Auth(e)) => api.metrics.auth_failure(e.reason(), provider.unwrap_or("")),
        Some(GatewayError::RateLimited { .. }) => {
            api.metrics.rate_limited.with_label_values(&[route]).inc();
        }
        Some(error @ (GatewayError::Body(_) | GatewayError::BodyTooLarge { .. })) => {
            api.metrics.body_rejection(error.reason())
        }
        _ => {}
    }
    let method = session.req_header().method.as_str();
    let reason = ctx.error.as_ref().map(GatewayError::reason);
    if let (Some(spans), Some(trace)) = (&api.spans, &ctx.trace) {
        spans.export(&crate::otlp::RequestSpan {
            trace,
            route,
            method,
            status,
            upstream: ctx.upstream,
            auth: ctx.auth_outcome,
            provider,
            reason,
            latency,
        });
    }
    AccessLine {
        request_id: &ctx.request_id,
        method,
        route,
        status,
        upstream: ctx.upstream,
        latency,
        upstream_latency: ctx.upstream_latency,
        auth: ctx.auth_outcome,
        provider,
        trace: ctx.trace.as_ref(),
        reason,
        proxy_error: e.map(|e| e.etype().as_str()),
        aborted: ctx.aborted,
    }
    .write();
}

/// What Pingora prints beside its own warnings: never the path, query or headers.
pub fn summary(session: &Session, ctx: &RequestCtx) -> String {
    format!(
        "{} {} request_id={}",
        session.req_header().method,
        ctx.route.template(),
        ctx.request_id.to_str().unwrap_or("")
    )
}

/// The one access-log line of a request: what was asked (method, route template), what came
/// of it and why. Never a query, a header value, a token or a body byte.
pub(crate) struct AccessLine<'a> {
    pub request_id: &'a HeaderValue,
    pub method: &'a str,
    pub route: &'static str,
    pub status: u16,
    pub upstream: Option<SocketAddr>,
    pub latency: Duration,
    pub upstream_latency: Option<Duration>,
    pub auth: &'static str,
    /// The identity provider the token belonged to, when one could be told.
    pub provider: Option<&'a str>,
    /// The request's trace (its id goes on the line).
    pub trace: Option<&'a crate::trace_context::TraceContext>,
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
        let trace_id = self
            .trace
            .map(crate::trace_context::TraceContext::trace_id_hex);
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
            provider = self.provider,
            trace_id = trace_id.as_deref(),
            reason = self.reason,
            proxy_error = self.proxy_error,
            aborted = self.aborted.then_some(true),
        );
    }
}
