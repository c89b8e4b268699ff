//! The admin listener (`observability.admin_listen`): `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process is alive) and `GET /readyz` (a key set is loaded and at least one
//! upstream is healthy). It serves operators, never API clients: it reads no bodies and
//! exposes nothing but counters and readiness.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::protocols::http::ServerSession;

use crate::jwks::Authenticator;
use crate::metrics::Metrics;

/// The admin HTTP application.
pub struct AdminService {
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
}

impl AdminService {
    /// An admin app over the gateway's shared state.
    pub fn new(
        metrics: Arc<Metrics>,
        auth: Arc<Authenticator>,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
    ) -> Self {
        Self {
            metrics,
            auth,
            upstreams,
        }
    }

    /// `None` when ready, else the reason it is not.
    fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.auth.has_key_set() {
            return Some("no key set loaded");
        }
        let backends = self.upstreams.backends();
        let any_healthy = backends.get_backend().iter().any(|b| backends.ready(b));
        (!any_healthy).then_some("no healthy upstream")
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(header::CONTENT_LENGTH, length.into());
    resp
}

#[async_trait]
impl ServeHttp for AdminService {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/metrics" => {
                self.auth.sync_metrics();
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.not_ready_reason() {
                None => text(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Some(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {reason}\n").into_bytes(),
                ),
            },
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
