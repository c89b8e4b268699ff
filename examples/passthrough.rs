//! The load benchmark's baseline: a bare Pingora reverse proxy with nothing but
//! `upstream_peer` (no auth, no rendering, no logging), one worker thread.
//!
//! ```sh
//! cargo run --release --example passthrough -- --listen 127.0.0.1:8081 --upstream 127.0.0.1:9000
//! ```
//!
//! It takes the same listen/upstream arguments as the gateway's config, so that
//! `benches/load/run.sh` can compare the two built with the same release profile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

use async_trait::async_trait;

// The same allocator as the gateway binary: the comparison is about the proxy logic.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Passthrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn usage() -> ! {
    eprintln!("usage: passthrough --listen HOST:PORT --upstream HOST:PORT [--threads N]");
    std::process::exit(2);
}

fn main() {
    let mut listen = None;
    let mut upstream = None;
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => upstream = Some(value),
            "--threads" => threads = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        usage()
    };

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Passthrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
