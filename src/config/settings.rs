//! The validated settings the rest of the gateway reads: types that cannot hold an invalid
//! value (resolved addresses, compiled patterns, `HeaderName`s, asymmetric algorithms only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use regex::Regex;

use super::file::FileConfig;

// ---------------------------------------------------------------------------------------------
// Validated settings.
// ---------------------------------------------------------------------------------------------

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[api]`
    pub api: ApiSettings,
    /// `[auth]`
    pub auth: AuthSettings,
    /// `[observability]`
    pub observability: ObservabilitySettings,
    /// `[cors]`: `None` when CORS is off (no allowed origin).
    pub cors: Option<crate::cors::CorsPolicy>,
    /// `[rate_limit]`: `None` when off.
    pub rate_limit: Option<RateLimitSettings>,
    /// The file as read, every absent key given its default: what `check` prints.
    pub(super) file: FileConfig,
}

/// `[server]`: listeners and limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// Pingora worker threads.
    pub threads: usize,
    /// Largest accepted request body on the finish route.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// TLS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    pub tls_key: Option<PathBuf>,
    /// Largest request head (request line and headers); more is answered 431.
    pub max_header_bytes: usize,
    /// The whole request head must arrive within this, else the connection is closed.
    pub header_timeout: Duration,
    /// An idle client connection is closed after this; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
}

/// `[upstream]`: where requests go.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The configured servers, in order: names are resolved at run time (every address, again
    /// every `resolve_interval`), never at load.
    pub servers: Vec<UpstreamAddress>,
    /// How often upstream names are resolved again.
    pub resolve_interval: Duration,
    /// DNS servers asked for upstream names; empty: the system resolver (`/etc/hosts`,
    /// `/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// TLS to the upstream.
    pub tls: bool,
    /// SNI (and certificate name) used with `tls`.
    pub sni: String,
    /// PEM bundle of the CAs trusted for upstream certificates; the system's when `None`.
    pub ca_file: Option<PathBuf>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for each read from the upstream.
    pub read_timeout: Duration,
    /// The whole upstream answer (head and body) must arrive within this.
    pub response_timeout: Duration,
    /// How often each upstream is health checked.
    pub health_check_interval: Duration,
    /// Idle upstream connections kept for reuse.
    pub keepalive_pool_size: usize,
}

/// One `upstream.servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    /// A host name or a literal IP address (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl UpstreamAddress {
    /// The address itself when the host is a literal IP (no resolution needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `[api]`: the shape of the fronted API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Prefix under which the API lives: empty, or `/segment...` without a trailing slash.
    pub path_prefix: String,
    /// Pattern a well-formed upload ID matches.
    pub upload_id_pattern: Regex,
    /// Largest accepted `nb_chunks`.
    pub max_nb_chunks: u64,
}

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// Fetched over HTTP(S) and refreshed.
    Url(String),
    /// Read from a local file (re-read on refresh).
    File(PathBuf),
    /// Found by OpenID Connect discovery from the issuer: the `jwks_uri` of
    /// `{issuer without trailing /}/.well-known/openid-configuration`.
    Discovery {
        /// The configured issuer, which the document's `issuer` must equal exactly.
        issuer: String,
    },
}

/// One identity provider: where its keys come from and what its tokens must satisfy.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Its label in logs and metrics (`default` for the single-issuer `[auth]` form).
    pub name: String,
    /// The JWKS location.
    pub jwks: JwksSource,
    /// Required `iss`, when set; with several providers it is what picks this one.
    pub issuer: Option<String>,
    /// Accepted `aud` values (any match); empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms: asymmetric only.
    pub algorithms: Vec<Algorithm>,
    /// Scopes every token must carry.
    pub required_scopes: Vec<String>,
    /// Verified claims sent upstream as headers: (claim, header name), sorted by claim.
    pub claims_to_headers: Vec<(String, http::HeaderName)>,
}

/// `[auth]`: bearer token policy.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The identity providers: one for the single-issuer form, else `[[auth.providers]]`.
    pub providers: Vec<ProviderSettings>,
    /// Whether the token's `iss` picks the provider (the `[[auth.providers]]` form).
    pub select_by_issuer: bool,
    /// Every header any provider's `claims_to_headers` sets: removed from every client request.
    pub identity_headers: Vec<http::HeaderName>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`.
    pub leeway_s: u64,
    /// Longest accepted token lifetime.
    pub max_token_lifetime_s: u64,
    /// Exact paths that need no token.
    pub public_paths: Vec<String>,
    /// Lower clamp of the JWKS `max-age`.
    pub jwks_min_refresh: Duration,
    /// Upper clamp of the JWKS `max-age`.
    pub jwks_max_refresh: Duration,
    /// At most one unknown-kid refresh per this period, per provider.
    pub unknown_kid_cooldown: Duration,
    /// Whether `Authorization` goes upstream.
    pub forward_token: bool,
    /// Entries in the verified-token cache (shared by the providers).
    pub verified_cache_capacity: u64,
    /// The claim verified tokens keep for the rate limit (`[rate_limit] key`), if any.
    pub key_claim: Option<String>,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// A verified claim's value (tokens without it share one bucket).
    Claim(String),
    /// The TCP peer's address (`X-Forwarded-For` is never trusted for it).
    Ip,
}

/// `[rate_limit]`, when enabled.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// What the buckets are per.
    pub key: RateKey,
    /// Sustained requests per second per key.
    pub requests_per_second: u32,
    /// Requests a key may send at once.
    pub burst: u32,
    /// `true`: every request under the prefix; `false`: the finish call only.
    pub all_api_routes: bool,
    /// The Redis that shares the limit between instances (`redis_url`), if set.
    pub redis_url: Option<String>,
}

/// Log line encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `[observability]`
#[derive(Debug, Clone)]
pub struct ObservabilitySettings {
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`); `None` when set to "".
    pub admin_listen: Option<SocketAddr>,
    /// Log encoding.
    pub log_format: LogFormat,
    /// The OTLP/HTTP collector's base URL (`otlp_endpoint`), when spans are exported.
    pub otlp_endpoint: Option<String>,
}
