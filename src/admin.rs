//! The admin listener (`observability.admin_listen`): `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process is alive) and `GET /readyz` (every listener accepts connections,
//! a key set is loaded and at least one upstream address is healthy; the body says what is
//! missing). It serves operators, never API clients: it reads no bodies and
//! exposes nothing but counters and readiness.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
    /// The proxy's listeners: each must accept a connection for the gateway to be ready.
    listeners: Vec<SocketAddr>,
}

/// A listener that does not accept within this is not serving.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether something accepts TCP connections on `addr` (a wildcard address is probed on
/// loopback).
async fn accepts(addr: SocketAddr) -> bool {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}

impl AdminService {
    /// An admin app over the gateway's shared state.
    pub fn new(
        metrics: Arc<Metrics>,
        auth: Arc<Authenticator>,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
        listeners: Vec<SocketAddr>,
    ) -> Self {
        Self {
            metrics,
            auth,
            upstreams,
            listeners,
        }
    }

    /// Empty when ready, else every reason it is not.
    async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for addr in &self.listeners {
            if !accepts(*addr).await {
                reasons.push(format!("listener {addr} is not accepting connections"));
            }
        }
        if !self.auth.has_key_set() {
            if self.auth.provider_count() > 1 {
                let names = self.auth.providers_without_keys().join(", ");
                reasons.push(format!(
                    "no key set loaded (providers without keys: {names})"
                ));
            } else {
                reasons.push("no key set loaded".to_owned());
            }
        }
        let backends = self.upstreams.backends();
        let all = backends.get_backend();
        if all.is_empty() {
            reasons.push("no upstream address resolved (upstream.servers)".to_owned());
        } else if !all.iter().any(|b| backends.ready(b)) {
            reasons.push("no healthy upstream".to_owned());
        }
        reasons
    }

    /// Sets the per-upstream health gauge from the load balancer's view.
    fn sync_upstream_health(&self) {
        let backends = self.upstreams.backends();
        self.metrics.upstream_healthy.reset();
        for backend in backends.get_backend().iter() {
            let healthy = i64::from(backends.ready(backend));
            self.metrics
                .upstream_healthy
                .with_label_values(&[&backend.addr.to_string()])
                .set(healthy);
        }
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
                self.sync_upstream_health();
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let reasons = self.not_ready_reasons().await;
                // Ready with one provider's keys; the others are named all the same.
                let without = self.auth.providers_without_keys();
                let missing = if without.is_empty() || without.len() == self.auth.provider_count() {
                    String::new()
                } else {
                    format!("; providers without keys: {}", without.join(", "))
                };
                if reasons.is_empty() {
                    text(
                        StatusCode::OK,
                        "text/plain",
                        format!("ready{missing}\n").into_bytes(),
                    )
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {}{missing}\n", reasons.join("; ")).into_bytes(),
                    )
                }
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
