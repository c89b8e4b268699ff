//! `upload-gateway demo`: the gateway plus the reference upload service and the reference
//! issuer, all on loopback, with a freshly minted token and ready-to-paste curl commands. The
//! same servers back the integration tests and the benchmarks.

pub mod http;
pub mod issuer;
pub mod issuer_keys;
pub mod upload_service;

use std::net::SocketAddr;

use jsonwebtoken::Algorithm;

use crate::config::Config;
use crate::server::{self, RunOptions};
use issuer::Issuer;
use issuer_keys::SigningKey;
use upload_service::{UploadService, UploadServiceOptions, DOCUMENTED_UPLOAD_ID};

/// The audience the demo's gateway expects and its tokens carry.
pub const DEMO_AUDIENCE: &str = "upload-api";
/// Where the demo gateway listens.
pub const DEMO_LISTEN: &str = "127.0.0.1:8080";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A helper server could not start.
    #[error("demo servers: {0}")]
    Io(#[from] std::io::Error),
    /// Key generation or minting failed.
    #[error("demo issuer: {0}")]
    Issuer(#[from] issuer_keys::IssuerKeyError),
    /// The generated configuration was refused.
    #[error("demo config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The gateway could not be assembled.
    #[error("{0}")]
    Start(#[from] server::StartError),
}

/// The demo's gateway configuration for the given helper servers.
pub fn demo_config(
    upstream: SocketAddr,
    jwks_url: &str,
    issuer: &str,
) -> Result<Config, DemoError> {
    let text = format!(
        r#"[server]
listen = ["{DEMO_LISTEN}"]
shutdown_grace_s = 1

[upstream]
servers = ["{upstream}"]

[api]
path_prefix = "/v1"

[auth]
jwks_url = "{jwks_url}"
issuer = "{issuer}"
audiences = ["{DEMO_AUDIENCE}"]

[observability]
admin_listen = "127.0.0.1:9091"
log_format = "text"
"#
    );
    Ok(Config::from_toml(&text)?)
}

/// Runs the demo until Ctrl-C.
pub fn run() -> Result<(), DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (service, issuer) = runtime.block_on(async {
        let key = SigningKey::generate(Algorithm::RS256, "demo-rs256")?;
        let service = UploadService::start(loopback, UploadServiceOptions::default()).await?;
        let issuer = Issuer::start(loopback, vec![key], 300).await?;
        Ok::<_, DemoError>((service, issuer))
    })?;
    let config = demo_config(service.addr(), &issuer.jwks_url(), &issuer.issuer)?;
    let token = issuer.mint(&issuer.claims("demo-user", DEMO_AUDIENCE, 3600))?;
    let url = format!("http://{DEMO_LISTEN}/v1/files/uploads/{DOCUMENTED_UPLOAD_ID}");
    println!(
        "upload-gateway demo\n\
         gateway         http://{DEMO_LISTEN} (prefix /v1)\n\
         upload service  http://{}\n\
         issuer (JWKS)   {}\n\
         admin           http://127.0.0.1:9091/metrics\n\n\
         A token valid for one hour:\n\n  TOKEN={token}\n\n\
         Finish the documented upload (JSON):\n\n  \
         curl -X PUT -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n    \
         -d '{{\"upload\":{{\"nb_chunks\":1}}}}' '{url}'\n\n\
         The same, as human-readable XML:\n\n  \
         curl -X PUT -H \"Authorization: Bearer $TOKEN\" -d '{{\"upload\":{{\"nb_chunks\":1}}}}' \\\n    \
         '{url}?format=xml&human=true'\n\n\
         Ctrl-C stops everything.\n",
        service.addr(),
        issuer.jwks_url(),
    );
    let gateway = server::build(config, &RunOptions::default())?;
    // The helper servers live on `runtime`, which must outlive the gateway.
    let _keep = (runtime, service, issuer);
    gateway.run_forever();
}
