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

/// The demo's gateway configuration for the given helper servers: two identity providers,
/// `demo` (its JWKS URL given) and `partner` (found by OpenID discovery from its issuer).
pub fn demo_config(
    options: &DemoOptions,
    upstream: SocketAddr,
    jwks_url: &str,
    issuer: &str,
    partner_issuer: &str,
) -> Result<Config, DemoError> {
    let listen = options.listen;
    let admin = options.admin_listen;
    let text = format!(
        r#"[server]
listen = ["{listen}"]
shutdown_grace_s = 1

[upstream]
servers = ["{upstream}"]

[api]
path_prefix = "/v1"

[observability]
admin_listen = "{admin}"
log_format = "text"

[[auth.providers]]
name = "demo"
issuer = "{issuer}"
jwks_url = "{jwks_url}"
audiences = ["{DEMO_AUDIENCE}"]
claims_to_headers = {{ sub = "X-Auth-Subject" }}

[[auth.providers]]
name = "partner"
issuer = "{partner_issuer}"
audiences = ["{DEMO_AUDIENCE}"]
claims_to_headers = {{ sub = "X-Partner-Subject" }}
"#
    );
    Ok(Config::from_toml(&text)?)
}

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The gateway's listener (`127.0.0.1:8080` by default, as in the documentation).
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin_listen: SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9091).into(),
        }
    }
}

/// The ready-to-paste commands the demo prints, one per line, using `$TOKEN`: the finish call
/// in JSON, in XML, and in JSON with `show_null=true`.
pub fn curl_commands(listen: SocketAddr) -> [String; 3] {
    let url = format!("http://{listen}/v1/files/uploads/{DOCUMENTED_UPLOAD_ID}");
    let put = |query: &str, json_body: bool| {
        let content_type = if json_body {
            " -H 'Content-Type: application/json'"
        } else {
            ""
        };
        format!(
            "curl -sS -X PUT -H \"Authorization: Bearer $TOKEN\"{content_type} \
             -d '{{\"upload\":{{\"nb_chunks\":1}}}}' '{url}?{query}'"
        )
    };
    [
        put("human=true", true),
        put("format=xml&human=true", false),
        put("human=true&show_null=true", true),
    ]
}

/// Runs the demo until Ctrl-C.
pub fn run(options: &DemoOptions) -> Result<(), DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (service, issuer, partner) = runtime.block_on(async {
        let key = SigningKey::generate(Algorithm::RS256, "demo-rs256")?;
        let partner_key = SigningKey::generate(Algorithm::ES256, "partner-es256")?;
        let service = UploadService::start(loopback, UploadServiceOptions::default()).await?;
        let issuer = Issuer::start(loopback, vec![key], 300).await?;
        let partner = Issuer::start_at(loopback, vec![partner_key], 300, "/partner").await?;
        Ok::<_, DemoError>((service, issuer, partner))
    })?;
    let config = demo_config(
        options,
        service.addr(),
        &issuer.jwks_url(),
        &issuer.issuer,
        &partner.issuer,
    )?;
    let token = issuer.mint(&issuer.claims("demo-user", DEMO_AUDIENCE, 3600))?;
    let gateway = server::build(config, &RunOptions::default())?;
    issuer.serve_tokens("demo-user", DEMO_AUDIENCE);
    partner.serve_tokens("partner-user", DEMO_AUDIENCE);
    let [json, xml, with_null] = curl_commands(options.listen);
    let token_url = issuer.token_url();
    let partner_token_url = partner.token_url();
    println!(
        "upload-gateway demo\n\
         gateway         http://{} (prefix /v1)\n\
         upload service  http://{}\n\
         issuer (JWKS)   {}\n\
         metrics         http://{}/metrics\n\n\
         A token valid for one hour:\n\n\
         export TOKEN={token}\n\n\
         Finish the documented upload, JSON:\n\n{json}\n\n\
         The same as human-readable XML:\n\n{xml}\n\n\
         Keys without a value too (show_null):\n\n{with_null}\n\n\
         A fresh token when this one expires:\n\n\
         export TOKEN=$(curl -sS {token_url})\n\n\
         A second identity provider, \"partner\" (found by OpenID discovery from its issuer\n\
         {}): its tokens work the same, and X-Partner-Subject reaches the upstream:\n\n\
         export TOKEN=$(curl -sS {partner_token_url})\n\n\
         Ctrl-C stops everything.",
        options.listen,
        service.addr(),
        issuer.jwks_url(),
        options.admin_listen,
        partner.issuer,
    );
    // The helper servers live on `runtime`, which must outlive the gateway.
    let _keep = (runtime, service, issuer, partner);
    gateway.run();
}
