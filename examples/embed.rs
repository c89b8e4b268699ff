//! Embedding the gateway's treatment in a Pingora proxy of one's own (SPEC §4.13).
//!
//! A platform team's proxy with routes of its own: `GET /platform/health` is answered by the
//! proxy itself, every other path outside the upload API goes to another service
//! (`EMBED_OTHER_UPSTREAM`, a `host:port`) untouched and without a token, and the upload API
//! (`api.path_prefix` of the gateway's configuration) gets the gateway's whole treatment: JWT,
//! query normalisation, body validation, XML <-> JSON, its upstreams and error envelopes.
//!
//! ```text
//! EMBED_OTHER_UPSTREAM=127.0.0.1:9000 cargo run --example embed -- --config conf/gateway.toml
//! ```
//!
//! The wiring is what any embedder writes: build the [`Parts`] from a [`Config`], add its
//! background services to the server, keep a [`RequestCtx`] in the proxy's own context for the
//! requests routed to the API, and call [`UploadApi`]'s method from each phase for those
//! requests. Which requests are the API's is asked of [`route::classify`], never guessed from a
//! prefix: a path that only reads as the API after decoding still goes to the treatment, which
//! refuses it, instead of reaching the other service.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Opt};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::{Error, Result};
use upload_gateway::admin::AdminService;
use upload_gateway::config::Config;
use upload_gateway::proxy::upstream::headers;
use upload_gateway::proxy::{RequestCtx, UploadApi};
use upload_gateway::route::{self, Route};
use upload_gateway::server::{parts, Parts};

/// The platform's proxy: its own routes, and the upload API's treatment for the API.
struct Platform {
    uploads: UploadApi,
    other: SocketAddr,
}

/// Per request: the treatment's context when the request is the upload API's.
#[derive(Default)]
struct PlatformCtx {
    uploads: Option<RequestCtx>,
}

#[async_trait]
impl ProxyHttp for Platform {
    type CTX = PlatformCtx;

    fn new_ctx(&self) -> PlatformCtx {
        PlatformCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut PlatformCtx) -> Result<bool> {
        let req = session.req_header();
        let api = &self.uploads.config().api;
        if route::classify_request(api, req.method.as_str(), req.raw_path()) != Route::Other {
            let uploads = ctx.uploads.insert(self.uploads.new_ctx());
            return self.uploads.request_filter(session, uploads).await;
        }
        if req.method == Method::GET && req.uri.path() == "/platform/health" {
            let body = Bytes::from_static(br#"{"platform":"ok"}"#);
            let mut resp = ResponseHeader::build(200, Some(2))?;
            resp.insert_header("content-type", "application/json")?;
            resp.insert_header("content-length", body.len())?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _: &mut Session, ctx: &mut PlatformCtx) -> Result<Box<HttpPeer>> {
        match &mut ctx.uploads {
            Some(uploads) => self.uploads.upstream_peer(uploads),
            None => Ok(Box::new(HttpPeer::new(self.other, false, String::new()))),
        }
    }

    fn fail_to_connect(
        &self,
        _: &mut Session,
        _: &HttpPeer,
        ctx: &mut PlatformCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        match &mut ctx.uploads {
            Some(uploads) => self.uploads.fail_to_connect(uploads, e),
            None => e,
        }
    }

    async fn connected_to_upstream(
        &self,
        _: &mut Session,
        _: bool,
        _: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut PlatformCtx,
    ) -> Result<()> {
        #[cfg(unix)]
        if let Some(uploads) = &mut ctx.uploads {
            self.uploads.connected_to_upstream(fd, digest, uploads);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut PlatformCtx,
    ) -> Result<()> {
        match &ctx.uploads {
            Some(uploads) => {
                self.uploads
                    .upstream_request_filter(session, upstream_request, uploads)
            }
            None => Ok(()),
        }
    }

    async fn response_filter(
        &self,
        _: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut PlatformCtx,
    ) -> Result<()> {
        match &mut ctx.uploads {
            Some(uploads) => self.uploads.response_filter(upstream_response, uploads),
            None => {
                headers::strip_response(upstream_response);
                Ok(())
            }
        }
    }

    fn upstream_response_body_filter(
        &self,
        _: &mut Session,
        _: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut PlatformCtx,
    ) -> Result<Option<Duration>> {
        if let Some(uploads) = &mut ctx.uploads {
            self.uploads
                .upstream_response_body_filter(end_of_stream, uploads);
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut PlatformCtx,
    ) -> Result<Option<Duration>> {
        if let Some(uploads) = &mut ctx.uploads {
            self.uploads
                .response_body_filter(body, end_of_stream, uploads)?;
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut PlatformCtx,
    ) -> FailToProxy {
        match &mut ctx.uploads {
            Some(uploads) => self.uploads.fail_to_proxy(session, e, uploads).await,
            None => FailToProxy {
                error_code: 502,
                can_reuse_downstream: false,
            },
        }
    }

    fn suppress_error_log(&self, _: &Session, _: &PlatformCtx, _: &Error) -> bool {
        // Pingora's own error line carries the request line (query included), the Host and raw
        // upstream bytes; the access line records the failure without them.
        true
    }

    fn request_summary(&self, session: &Session, ctx: &PlatformCtx) -> String {
        match &ctx.uploads {
            Some(uploads) => self.uploads.request_summary(session, uploads),
            None => format!("{} (platform route)", session.req_header().method),
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut PlatformCtx) {
        if let Some(uploads) = &ctx.uploads {
            self.uploads.logging(session, e, uploads);
        }
    }
}

/// `--config PATH` (required), `--pid-file PATH`, `--upgrade-sock PATH`.
fn arguments() -> Result<(String, ServerConf), String> {
    let mut config = None;
    let mut conf = ServerConf::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--config" => config = Some(value),
            "--pid-file" => conf.pid_file = value,
            "--upgrade-sock" => conf.upgrade_sock = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((config.ok_or("--config is required")?, conf))
}

fn run() -> Result<(), String> {
    let (path, mut conf) = arguments()?;
    let config = Config::load(path.as_ref()).map_err(|e| e.to_string())?;
    let other: SocketAddr = std::env::var("EMBED_OTHER_UPSTREAM")
        .map_err(|_| "EMBED_OTHER_UPSTREAM (host:port of the other service) is not set")?
        .parse()
        .map_err(|e| format!("EMBED_OTHER_UPSTREAM: {e}"))?;
    upload_gateway::logging::init(config.observability.log_format);
    conf.threads = config.server.threads;
    conf.grace_period_seconds = Some(config.server.shutdown_grace.as_secs());
    conf.graceful_shutdown_timeout_seconds = Some(1);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let config = Arc::new(config);
    let Parts { api, services } = parts(config.clone(), &server).map_err(|e| e.to_string())?;
    server.add_services(services);
    if let Some(admin) = config.observability.admin_listen {
        let (metrics, auth, upstreams) = api.admin_handles();
        let mut service = pingora::services::listening::Service::new(
            "admin".into(),
            AdminService::new(metrics, auth, upstreams, config.server.listen.clone()),
        );
        service.add_tcp(&admin.to_string());
        server.add_service(service);
    }
    let platform = Platform {
        uploads: api,
        other,
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, platform);
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server.run_forever()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::from(2)
        }
    }
}
