//! Configuration: the TOML file format (SPEC §3) turned into validated settings.
//!
//! This is the one place that says no to a bad configuration. Every key is parsed, defaulted and
//! checked here, and an error always names the key (`server.max_body_bytes: ...`). The rest of
//! the gateway receives [`Config`], whose values cannot be invalid: compiled patterns, resolved
//! upstream addresses, asymmetric algorithms only. It must never accept a value it would later
//! have to second-guess on the request path.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::keyset::asymmetric_algorithm;

mod file;
mod locate;
mod settings;

use file::{FileApi, FileAuth, FileConfig, FileObservability, FileServer, FileUpstream};
pub use settings::{
    ApiSettings, AuthSettings, Config, JwksSource, LogFormat, ObservabilitySettings,
    ProviderSettings, RateKey, RateLimitSettings, ServerSettings, UpstreamAddress,
    UpstreamSettings,
};

/// The largest request body the gateway will buffer: Pingora's retry buffer holds 64 KiB, and a
/// body beyond it could not be replayed on a retried connection.
pub const MAX_BODY_BYTES_LIMIT: usize = 65536;

/// The largest request head `server.max_header_bytes` may allow: Pingora's own limit.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1_048_575;

/// The smallest: a request line and a bearer token must fit.
pub const MIN_HEADER_BYTES: usize = 1024;

/// A configuration that cannot be used, with the key at fault and, where the file has it, its
/// line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (syntax, unknown key, wrong type), or a key
    /// holds a value the gateway refuses.
    #[error("{}{key}: {problem}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        /// The dotted key, e.g. `server.max_body_bytes` (the section for a bad table header).
        key: String,
        /// What is wrong with it.
        problem: String,
        /// The 1-based line of the key (or of its section when the key is defaulted).
        line: Option<usize>,
    },
}

impl ConfigError {
    /// The dotted key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } => None,
        }
    }
}

/// The 1-based line of the dotted `key` in configuration `text` (of its section when the key
/// is defaulted), for messages about a key found wrong after loading (a listener that cannot
/// open).
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    locate::line_of_key(text, key)
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
        line: None,
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let line = locate::line_of(&text, text.len());
            ConfigError::Invalid {
                key: locate::key_at_line(&text, line).unwrap_or_else(|| "(file)".to_owned()),
                problem: "not UTF-8 text (TOML files are UTF-8)".to_owned(),
                line: Some(line),
            }
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| shape_error(text, &e))?;
        file.validate().map_err(|e| match e {
            ConfigError::Invalid {
                key,
                problem,
                line: None,
            } => ConfigError::Invalid {
                line: locate::line_of_key(text, &key),
                key,
                problem,
            },
            other => other,
        })
    }

    /// The effective configuration as TOML, as `check` prints it: every key, defaults filled
    /// in, in the file's own spelling.
    pub fn to_toml(&self) -> String {
        // Plain strings, numbers, booleans and tables: serialising them cannot fail.
        toml::to_string(&self.file).unwrap_or_default()
    }
}

/// A syntax or shape error: the key from the path serde was deserialising (or, for a syntax
/// error, from the text), the line from toml's span, toml's message without its source excerpt.
fn shape_error(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let inner = e.inner();
    let line = inner.span().map(|span| locate::line_of(text, span.start));
    let path = e.path().to_string();
    let key = if path.is_empty() || path == "." {
        line.and_then(|l| locate::key_at_line(text, l))
            .unwrap_or_else(|| "(file)".to_owned())
    } else {
        path
    };
    // One line: toml's multi-line messages joined, serde's Rust type names said in words.
    let message = inner
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false");
    // serde names an unknown key by the table that holds it; say the key itself.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, rest)| {
            (
                field.to_owned(),
                rest.trim_start_matches(',').trim().to_owned(),
            )
        });
    let (key, problem) = match unknown {
        Some((field, expected)) => {
            let key = if key.ends_with(field.as_str()) {
                key
            } else {
                format!("{key}.{field}")
            };
            (key, format!("unknown key, {expected}"))
        }
        None => (key, message),
    };
    ConfigError::Invalid { key, problem, line }
}

fn int_in(key: &str, value: i64, min: i64, max: i64) -> Result<u64, ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ));
    }
    u64::try_from(value).map_err(|_| invalid(key, format!("must not be negative (got {value})")))
}

fn socket_addrs(key: &str, items: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    items
        .iter()
        .map(|item| resolve(key, item))
        .collect::<Result<Vec<_>, _>>()
}

fn resolve(key: &str, item: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = item.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = item
        .to_socket_addrs()
        .map_err(|e| invalid(key, format!("{item:?} is not a host:port address ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(key, format!("{item:?} resolves to no address")))
}

/// Whether every match of `pattern` spans the whole text: each alternative starts with `^` (or
/// `\A`) and ends with `$` (or `\z`), read from the parsed pattern rather than its spelling, so
/// `^a|b$` and `(?m)^a$` are not taken for anchored.
fn is_anchored(pattern: &str) -> bool {
    use regex_syntax::hir::Look;
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return false;
    };
    let props = hir.properties();
    props.look_set_prefix().contains(Look::Start) && props.look_set_suffix().contains(Look::End)
}

/// Every listener on its own address and a real port: two listeners on one address (or one on
/// a wildcard address and one on a specific address of the same port) cannot both open, and
/// port 0 would listen on a port nobody knows.
fn distinct_listeners(config: &Config) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, SocketAddr)> = Vec::new();
    let all = config
        .server
        .listen
        .iter()
        .map(|a| ("server.listen", *a))
        .chain(
            config
                .server
                .tls_listen
                .iter()
                .map(|a| ("server.tls_listen", *a)),
        )
        .chain(
            config
                .observability
                .admin_listen
                .map(|a| ("observability.admin_listen", a)),
        );
    for (key, addr) in all {
        if addr.port() == 0 {
            return Err(invalid(
                key,
                format!("{addr}: port 0 would listen on a port chosen at random"),
            ));
        }
        let clash = seen.iter().find(|(_, other)| {
            other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other_key, other)) = clash {
            return Err(invalid(
                key,
                format!(
                    "{addr} is also {other_key} ({other}): every listener needs its own address"
                ),
            ));
        }
        seen.push((key, addr));
    }
    Ok(())
}

/// An `upstream.servers` entry: `host:port` or `[v6]:port`, checked for shape only. Names are
/// resolved at run time, so a Service name that does not resolve yet is not a load error.
fn upstream_address(item: &str) -> Result<UpstreamAddress, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "upstream.servers",
            format!("{item:?} is not a host:port address ({why})"),
        )
    };
    if let Ok(addr) = item.parse::<SocketAddr>() {
        return Ok(UpstreamAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = item.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number 0-65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // A fully qualified name may end with the root's dot.
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_name && host.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("not a host name or IP address"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(UpstreamAddress {
        host: host.to_owned(),
        port,
    })
}

fn optional_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

impl FileConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut file = self.clone();
        let config = Config {
            file: FileConfig::default(),
            server: self.server.validate()?,
            upstream: self.upstream.validate()?,
            api: self.api.validate()?,
            auth: self.auth.validate()?,
            observability: self.observability.validate()?,
            cors: self.cors.validate()?,
            rate_limit: self.rate_limit.validate()?,
        };
        distinct_listeners(&config)?;
        // The rate limit reads one verified claim: the verifier keeps it on each token.
        let mut config = config;
        if let Some(settings::RateLimitSettings {
            key: settings::RateKey::Claim(claim),
            ..
        }) = &config.rate_limit
        {
            config.auth.key_claim = Some(claim.clone());
        }
        // What `check` prints is what the gateway will use: every default filled in, header
        // names as sent.
        let headers = |p: &ProviderSettings| -> std::collections::BTreeMap<String, String> {
            p.claims_to_headers
                .iter()
                .map(|(claim, header)| (claim.clone(), header.as_str().to_owned()))
                .collect()
        };
        if config.auth.select_by_issuer {
            for (printed, provider) in file.auth.providers.iter_mut().zip(&config.auth.providers) {
                printed.claims_to_headers = headers(provider);
            }
        } else if let Some(provider) = config.auth.providers.first() {
            let auth = &mut file.auth;
            auth.audiences.get_or_insert_with(Vec::new);
            auth.algorithms.get_or_insert_with(file::default_algorithms);
            auth.required_scopes.get_or_insert_with(Vec::new);
            auth.claims_to_headers = Some(headers(provider));
        }
        Ok(Config { file, ..config })
    }
}

impl FileServer {
    fn validate(self) -> Result<ServerSettings, ConfigError> {
        let listen = socket_addrs("server.listen", &self.listen)?;
        let tls_listen = socket_addrs("server.tls_listen", &self.tls_listen)?;
        if listen.is_empty() && tls_listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "no listener: give at least one address in listen or tls_listen",
            ));
        }
        let tls_cert = optional_path(&self.tls_cert);
        let tls_key = optional_path(&self.tls_key);
        if !tls_listen.is_empty() {
            if tls_cert.is_none() {
                return Err(invalid(
                    "server.tls_cert",
                    "required when tls_listen is set",
                ));
            }
            if tls_key.is_none() {
                return Err(invalid("server.tls_key", "required when tls_listen is set"));
            }
        }
        for (key, path) in [("server.tls_cert", &tls_cert), ("server.tls_key", &tls_key)] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(key, format!("{} is not a file", path.display())));
                }
            }
        }
        Ok(ServerSettings {
            listen,
            threads: int_in("server.threads", self.threads, 1, 1024)? as usize,
            max_body_bytes: int_in(
                "server.max_body_bytes",
                self.max_body_bytes,
                1,
                MAX_BODY_BYTES_LIMIT as i64,
            )? as usize,
            shutdown_grace: Duration::from_secs(int_in(
                "server.shutdown_grace_s",
                self.shutdown_grace_s,
                0,
                3600,
            )?),
            tls_listen,
            tls_cert,
            tls_key,
            max_header_bytes: int_in(
                "server.max_header_bytes",
                self.max_header_bytes,
                MIN_HEADER_BYTES as i64,
                MAX_HEADER_BYTES_LIMIT as i64,
            )? as usize,
            header_timeout: Duration::from_millis(int_in(
                "server.header_timeout_ms",
                self.header_timeout_ms,
                100,
                600_000,
            )?),
            keepalive_timeout: Duration::from_secs(int_in(
                "server.keepalive_timeout_s",
                self.keepalive_timeout_s,
                0,
                3600,
            )?),
        })
    }
}

impl FileUpstream {
    fn validate(self) -> Result<UpstreamSettings, ConfigError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "upstream.servers",
                "is empty: give at least one host:port",
            ));
        }
        let servers = self
            .servers
            .iter()
            .map(|item| upstream_address(item))
            .collect::<Result<Vec<_>, _>>()?;
        let sni = if self.sni.is_empty() && self.tls {
            // Without an explicit name, certificate checks use the configured host.
            servers[0].host.clone()
        } else {
            self.sni
        };
        let ca_file = optional_path(&self.ca_file);
        if let Some(path) = &ca_file {
            if !path.is_file() {
                return Err(invalid(
                    "upstream.ca_file",
                    format!("{} is not a file", path.display()),
                ));
            }
        }
        Ok(UpstreamSettings {
            servers,
            resolve_interval: Duration::from_millis(int_in(
                "upstream.resolve_interval_ms",
                self.resolve_interval_ms,
                100,
                3_600_000,
            )?),
            dns_servers: self
                .dns_servers
                .iter()
                .map(|item| {
                    item.parse::<SocketAddr>()
                        .or_else(|_| format!("{item}:53").parse::<SocketAddr>())
                        .map_err(|_| {
                            invalid(
                                "upstream.dns_servers",
                                format!("{item:?} is not an IP address (with an optional :port)"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            tls: self.tls,
            sni,
            ca_file,
            connect_timeout: Duration::from_millis(int_in(
                "upstream.connect_timeout_ms",
                self.connect_timeout_ms,
                1,
                600_000,
            )?),
            read_timeout: Duration::from_millis(int_in(
                "upstream.read_timeout_ms",
                self.read_timeout_ms,
                1,
                3_600_000,
            )?),
            response_timeout: Duration::from_millis(int_in(
                "upstream.response_timeout_ms",
                self.response_timeout_ms,
                1,
                3_600_000,
            )?),
            health_check_interval: Duration::from_millis(int_in(
                "upstream.health_check_interval_ms",
                self.health_check_interval_ms,
                100,
                3_600_000,
            )?),
            keepalive_pool_size: int_in(
                "upstream.keepalive_pool_size",
                self.keepalive_pool_size,
                0,
                1_000_000,
            )? as usize,
        })
    }
}

impl FileApi {
    fn validate(self) -> Result<ApiSettings, ConfigError> {
        let prefix = self.path_prefix;
        if !prefix.is_empty()
            && (!prefix.starts_with('/')
                || prefix.ends_with('/')
                || prefix.contains(['?', '#', '%', ' ', '\\', ';'])
                || prefix.contains("//")
                || prefix
                    .split('/')
                    .any(|segment| segment == "." || segment == ".."))
        {
            return Err(invalid(
                "api.path_prefix",
                format!(
                    "{prefix:?} must be empty, or '/'-separated segments starting with '/' \
                     (no trailing '/', no empty, '.' or '..' segment, no '?', '#', '%', '\\', \
                     ';' or space)"
                ),
            ));
        }
        let upload_id_pattern = regex::RegexBuilder::new(&self.upload_id_pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                invalid(
                    "api.upload_id_pattern",
                    format!("is not a valid regular expression: {e}"),
                )
            })?;
        if !is_anchored(&self.upload_id_pattern) {
            return Err(invalid(
                "api.upload_id_pattern",
                "must be anchored at both ends (^...$), else an ID that merely contains a match \
                 is accepted: e.g. ^[0-9a-fA-F]{24}$",
            ));
        }
        if upload_id_pattern.is_match("") {
            return Err(invalid(
                "api.upload_id_pattern",
                "matches the empty string: e.g. ^[0-9a-fA-F]{24}$",
            ));
        }
        Ok(ApiSettings {
            path_prefix: prefix,
            upload_id_pattern,
            max_nb_chunks: int_in("api.max_nb_chunks", self.max_nb_chunks, 1, 1 << 40)?,
        })
    }
}

/// The per-provider keys, as written in `[auth]` or in one `[[auth.providers]]` table.
struct ProviderKeys<'a> {
    /// `auth` or `auth.providers[N]`: the prefix of every key named in an error.
    at: String,
    name: String,
    issuer: &'a str,
    jwks_url: &'a str,
    jwks_file: &'a str,
    audiences: &'a [String],
    algorithms: &'a [String],
    required_scopes: &'a [String],
    claims_to_headers: &'a std::collections::BTreeMap<String, String>,
}

/// Headers a verified claim may not be sent as: the gateway sets them itself, or they are
/// hop-by-hop.
const RESERVED_HEADERS: [&str; 19] = [
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept",
    "accept-encoding",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "traceparent",
];

impl ProviderKeys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.at)
    }

    fn validate(&self, discovery_allowed: bool) -> Result<ProviderSettings, ConfigError> {
        let jwks =
            match (self.jwks_url.is_empty(), self.jwks_file.is_empty()) {
                (false, true) => {
                    let url = self.jwks_url;
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid(
                            self.key("jwks_url"),
                            format!("{url:?} must be an http:// or https:// URL"),
                        ));
                    }
                    JwksSource::Url(url.to_owned())
                }
                (true, false) => JwksSource::File(PathBuf::from(self.jwks_file)),
                (false, false) => {
                    return Err(invalid(
                        self.key("jwks_url"),
                        "set either jwks_url or jwks_file, not both",
                    ))
                }
                (true, true) if discovery_allowed => JwksSource::Discovery {
                    issuer: self.issuer.to_owned(),
                },
                (true, true) => return Err(invalid(
                    self.key("jwks_url"),
                    "missing: set jwks_url or jwks_file (every protected request needs a key set)",
                )),
            };
        if let JwksSource::Discovery { issuer } = &jwks {
            let parsed = reqwest::Url::parse(issuer).ok();
            let usable = parsed.as_ref().is_some_and(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host_str().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !usable {
                return Err(invalid(
                    self.key("issuer"),
                    format!(
                        "{issuer:?}: without jwks_url or jwks_file the key set is found by OpenID \
                         Connect discovery, which needs an http(s) issuer URL without query or \
                         fragment"
                    ),
                ));
            }
        }
        if self.algorithms.is_empty() {
            return Err(invalid(self.key("algorithms"), "is empty"));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for name in self.algorithms {
            let alg = asymmetric_algorithm(name)
                .map_err(|p| invalid(self.key("algorithms"), p.to_string()))?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(invalid(self.key("audiences"), "contains an empty string"));
        }
        let mut claims_to_headers = Vec::with_capacity(self.claims_to_headers.len());
        for (claim, header) in self.claims_to_headers {
            let name = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                invalid(
                    self.key("claims_to_headers"),
                    format!("{header:?} is not a valid header name"),
                )
            })?;
            if claims_to_headers
                .iter()
                .any(|(_, h): &(String, http::HeaderName)| *h == name)
            {
                return Err(invalid(
                    self.key("claims_to_headers"),
                    format!("{header:?} is the header of two claims"),
                ));
            }
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(invalid(
                    self.key("claims_to_headers"),
                    format!("{header:?} is a header the gateway manages itself"),
                ));
            }
            claims_to_headers.push((claim.clone(), name));
        }
        if self
            .required_scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' '))
        {
            return Err(invalid(
                self.key("required_scopes"),
                "scopes must be non-empty and contain no spaces",
            ));
        }
        Ok(ProviderSettings {
            name: self.name.clone(),
            jwks,
            issuer: (!self.issuer.is_empty()).then(|| self.issuer.to_owned()),
            audiences: self.audiences.to_vec(),
            algorithms,
            required_scopes: self.required_scopes.to_vec(),
            claims_to_headers,
        })
    }
}

impl FileAuth {
    /// The providers: the one the single-issuer keys describe, or the `[[auth.providers]]`.
    fn providers(&self) -> Result<(Vec<ProviderSettings>, bool), ConfigError> {
        let no_vec: Vec<String> = Vec::new();
        let no_map = std::collections::BTreeMap::new();
        if self.providers.is_empty() {
            let default_algorithms = file::default_algorithms();
            let single = ProviderKeys {
                at: "auth".to_owned(),
                name: "default".to_owned(),
                issuer: self.issuer.as_deref().unwrap_or_default(),
                jwks_url: self.jwks_url.as_deref().unwrap_or_default(),
                jwks_file: self.jwks_file.as_deref().unwrap_or_default(),
                audiences: self.audiences.as_deref().unwrap_or(&no_vec),
                algorithms: self.algorithms.as_deref().unwrap_or(&default_algorithms),
                required_scopes: self.required_scopes.as_deref().unwrap_or(&no_vec),
                claims_to_headers: self.claims_to_headers.as_ref().unwrap_or(&no_map),
            };
            return Ok((vec![single.validate(false)?], false));
        }
        // With providers, the per-provider keys live in each provider only.
        let written_here = [
            ("jwks_url", self.jwks_url.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
            ("issuer", self.issuer.is_some()),
            ("audiences", self.audiences.is_some()),
            ("algorithms", self.algorithms.is_some()),
            ("required_scopes", self.required_scopes.is_some()),
            ("claims_to_headers", self.claims_to_headers.is_some()),
        ];
        if let Some((key, _)) = written_here.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("auth.{key}"),
                "is a per-provider key: with [[auth.providers]] it belongs in each provider, \
                 not in [auth]",
            ));
        }
        let mut providers: Vec<ProviderSettings> = Vec::with_capacity(self.providers.len());
        for (index, p) in self.providers.iter().enumerate() {
            let at = format!("auth.providers[{index}]");
            if p.issuer.is_empty() {
                return Err(invalid(
                    format!("{at}.issuer"),
                    "missing: a provider is picked by its issuer (the token's iss)",
                ));
            }
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(invalid(
                    format!("{at}.name"),
                    format!(
                        "{:?}: a provider needs a name of letters, digits, '-', '_' or '.' (its \
                         label in logs and metrics)",
                        p.name
                    ),
                ));
            }
            if providers.iter().any(|q| q.name == p.name) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("{:?} names two providers", p.name),
                ));
            }
            if providers
                .iter()
                .any(|q| q.issuer.as_deref() == Some(p.issuer.as_str()))
            {
                return Err(invalid(
                    format!("{at}.issuer"),
                    format!("{:?} is the issuer of two providers", p.issuer),
                ));
            }
            let keys = ProviderKeys {
                at,
                name: p.name.clone(),
                issuer: &p.issuer,
                jwks_url: &p.jwks_url,
                jwks_file: &p.jwks_file,
                audiences: &p.audiences,
                algorithms: &p.algorithms,
                required_scopes: &p.required_scopes,
                claims_to_headers: &p.claims_to_headers,
            };
            providers.push(keys.validate(true)?);
        }
        Ok((providers, true))
    }

    fn validate(self) -> Result<AuthSettings, ConfigError> {
        let (providers, select_by_issuer) = self.providers()?;
        let mut identity_headers: Vec<http::HeaderName> = Vec::new();
        for (_, header) in providers.iter().flat_map(|p| &p.claims_to_headers) {
            if !identity_headers.contains(header) {
                identity_headers.push(header.clone());
            }
        }
        for path in &self.public_paths {
            if !path.starts_with('/') {
                return Err(invalid(
                    "auth.public_paths",
                    format!("{path:?} must start with '/'"),
                ));
            }
        }
        let min = int_in(
            "auth.jwks_min_refresh_s",
            self.jwks_min_refresh_s,
            1,
            86400 * 7,
        )?;
        let max = int_in(
            "auth.jwks_max_refresh_s",
            self.jwks_max_refresh_s,
            1,
            86400 * 7,
        )?;
        if min > max {
            return Err(invalid(
                "auth.jwks_min_refresh_s",
                format!("is larger than auth.jwks_max_refresh_s ({min} > {max})"),
            ));
        }
        Ok(AuthSettings {
            providers,
            select_by_issuer,
            identity_headers,
            leeway_s: int_in("auth.leeway_s", self.leeway_s, 0, 3600)?,
            max_token_lifetime_s: int_in(
                "auth.max_token_lifetime_s",
                self.max_token_lifetime_s,
                1,
                86400 * 366,
            )?,
            public_paths: self.public_paths,
            jwks_min_refresh: Duration::from_secs(min),
            jwks_max_refresh: Duration::from_secs(max),
            // At least a second: zero would let a flood of random kids hammer the issuer.
            unknown_kid_cooldown: Duration::from_secs(int_in(
                "auth.unknown_kid_cooldown_s",
                self.unknown_kid_cooldown_s,
                1,
                86400,
            )?),
            forward_token: self.forward_token,
            verified_cache_capacity: int_in(
                "auth.verified_cache_capacity",
                self.verified_cache_capacity,
                0,
                100_000_000,
            )?,
            key_claim: None,
        })
    }
}

impl file::FileRateLimit {
    fn validate(self) -> Result<Option<settings::RateLimitSettings>, ConfigError> {
        let requests_per_second = int_in(
            "rate_limit.requests_per_second",
            self.requests_per_second,
            1,
            1_000_000,
        )? as u32;
        let burst = int_in("rate_limit.burst", self.burst, 1, 1_000_000)? as u32;
        let key = match self.key.as_str() {
            "" => {
                return Err(invalid(
                    "rate_limit.key",
                    "is empty: a claim's name, or \"ip\"",
                ))
            }
            "ip" => settings::RateKey::Ip,
            // `"ip "` would silently key every token on a claim nobody has.
            claim if claim.trim() != claim || claim.chars().any(char::is_control) => {
                return Err(invalid(
                    "rate_limit.key",
                    format!(
                        "{claim:?} has spaces or control characters: a claim's name, or \"ip\""
                    ),
                ))
            }
            claim => settings::RateKey::Claim(claim.to_owned()),
        };
        let all_api_routes = match self.routes.as_str() {
            "finish" => false,
            "api" => true,
            other => {
                return Err(invalid(
                    "rate_limit.routes",
                    format!("{other:?} is neither \"finish\" nor \"api\""),
                ))
            }
        };
        let redis_url = match self.redis_url.trim() {
            "" => None,
            url => {
                // The parser's own message may quote the address, password included.
                if redis::Client::open(url).is_err() {
                    return Err(invalid(
                        "rate_limit.redis_url",
                        "is not a Redis address this build can use: \
                         redis://[user:password@]host:port[/db] or redis+unix:///path \
                         (TLS, rediss://, is not built in)",
                    ));
                }
                Some(url.to_owned())
            }
        };
        Ok(self.enabled.then_some(settings::RateLimitSettings {
            key,
            requests_per_second,
            burst,
            all_api_routes,
            redis_url,
        }))
    }
}

impl file::FileCors {
    fn validate(self) -> Result<Option<crate::cors::CorsPolicy>, ConfigError> {
        let max_age = int_in("cors.max_age_s", self.max_age_s, 0, 86400)?;
        crate::cors::CorsPolicy::new(
            &self.allowed_origins,
            &self.allowed_methods,
            &self.allowed_headers,
            &self.expose_headers,
            max_age,
        )
        .map_err(|(key, problem)| invalid(key, problem))
    }
}

impl FileObservability {
    fn validate(self) -> Result<ObservabilitySettings, ConfigError> {
        let admin_listen = if self.admin_listen.is_empty() {
            None
        } else {
            Some(resolve("observability.admin_listen", &self.admin_listen)?)
        };
        let log_format = match self.log_format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(invalid(
                    "observability.log_format",
                    format!("{other:?} is neither \"json\" nor \"text\""),
                ))
            }
        };
        let otlp_endpoint = match self.otlp_endpoint.trim() {
            "" => None,
            endpoint => Some(otlp_base_url(endpoint)?),
        };
        Ok(ObservabilitySettings {
            admin_listen,
            log_format,
            otlp_endpoint,
        })
    }
}

/// `observability.otlp_endpoint`: an `http://` or `https://` base URL with a host and no
/// query, fragment or credentials (spans go to `{endpoint}/v1/traces`), without its trailing
/// slash.
fn otlp_base_url(endpoint: &str) -> Result<String, ConfigError> {
    const KEY: &str = "observability.otlp_endpoint";
    let uri: http::Uri = endpoint.parse().map_err(|_| {
        invalid(
            KEY,
            "is not a URL: an OTLP/HTTP base URL such as \"http://collector:4318\"",
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid(KEY, "must start with http:// or https://"));
    }
    match uri.authority() {
        None => return Err(invalid(KEY, "has no host")),
        Some(a) if a.as_str().contains('@') => {
            return Err(invalid(KEY, "must not carry credentials"));
        }
        Some(a) if a.host().is_empty() => return Err(invalid(KEY, "has no host")),
        Some(_) => {}
    }
    if uri.query().is_some() || endpoint.contains('#') {
        return Err(invalid(
            KEY,
            "must not have a query or a fragment (spans are POSTed to {endpoint}/v1/traces)",
        ));
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        return Err(invalid(
            KEY,
            "is the base URL: spans go to {endpoint}/v1/traces, so leave /v1/traces out",
        ));
    }
    Ok(base.to_owned())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;

    #[test]
    fn otlp_endpoints_are_http_base_urls() {
        for good in [
            "http://127.0.0.1:4318",
            "http://collector:4318/",
            "https://otel.example.com/base",
        ] {
            assert!(super::otlp_base_url(good).is_ok(), "{good}");
        }
        assert_eq!(
            super::otlp_base_url("http://collector:4318/").unwrap(),
            "http://collector:4318"
        );
        for bad in [
            "collector:4318",
            "grpc://collector:4317",
            "http://",
            "http://u:p@collector:4318",
            "http://collector:4318/?x=1",
            "http://collector:4318/#f",
            "not a url",
            // Spans would go to /v1/traces/v1/traces (found by a black-box attack).
            "http://collector:4318/v1/traces",
            "http://collector:4318/v1/traces/",
        ] {
            assert!(super::otlp_base_url(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    const MINIMAL: &str = "[auth]\njwks_file = \"/dev/null\"\n";

    fn with(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{MINIMAL}{extra}"))
    }

    /// The error without its `line N: ` prefix (the line is asserted on its own).
    fn error_of(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => {
                let text = e.to_string();
                match text.strip_prefix("line ").and_then(|t| t.split_once(": ")) {
                    Some((_, rest)) => rest.to_owned(),
                    None => text,
                }
            }
        }
    }

    fn line_and_key(text: &str) -> (Option<usize>, String) {
        match Config::from_toml(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(ConfigError::Invalid { key, line, .. }) => (line, key),
            Err(e) => panic!("{e}"),
        }
    }

    const TWO: &str = "[[auth.providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com/\"\njwks_url = \"https://idp.example.com/jwks\"\n\
                       [[auth.providers]]\nname = \"partner\"\nissuer = \"https://partner.example/tenant-a\"\nclaims_to_headers = { sub = \"X-Partner-Sub\" }\n";

    #[test]
    fn providers_are_read_with_their_defaults_and_discovery() {
        let c = Config::from_toml(TWO).unwrap();
        assert!(c.auth.select_by_issuer);
        assert_eq!(c.auth.providers.len(), 2);
        assert_eq!(
            c.auth.providers[0].jwks,
            JwksSource::Url("https://idp.example.com/jwks".into())
        );
        // No key source: OpenID discovery from the issuer.
        assert_eq!(
            c.auth.providers[1].jwks,
            JwksSource::Discovery {
                issuer: "https://partner.example/tenant-a".into()
            }
        );
        assert_eq!(
            c.auth.providers[1].algorithms,
            [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        assert_eq!(c.auth.identity_headers.len(), 1);
        // An empty jwks_url counts as absent.
        let c = Config::from_toml(&TWO.replace(
            "jwks_url = \"https://idp.example.com/jwks\"",
            "jwks_url = \"\"",
        ))
        .unwrap();
        assert!(matches!(
            c.auth.providers[0].jwks,
            JwksSource::Discovery { .. }
        ));
        // What check prints reads back the same.
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.auth.providers.len(), 2);
        assert_eq!(again.auth.providers[1].name, "partner");
    }

    #[test]
    fn the_single_issuer_form_is_one_provider_named_default() {
        let c = with("").unwrap();
        assert!(!c.auth.select_by_issuer);
        assert_eq!(c.auth.providers.len(), 1);
        assert_eq!(c.auth.providers[0].name, "default");
        assert_eq!(
            c.auth.providers[0].jwks,
            JwksSource::File("/dev/null".into())
        );
    }

    #[test]
    fn provider_refusals_name_the_key() {
        let cases = [
            // Per-provider keys in [auth] and providers.
            (
                format!("[auth]\naudiences = [\"x\"]\n{TWO}"),
                "auth.audiences",
            ),
            (
                format!("[auth]\njwks_url = \"https://a/\"\n{TWO}"),
                "auth.jwks_url",
            ),
            (
                format!("[auth]\nalgorithms = [\"RS256\"]\n{TWO}"),
                "auth.algorithms",
            ),
            // Two providers with the same issuer or name.
            (
                TWO.replace(
                    "https://partner.example/tenant-a",
                    "https://idp.example.com/",
                ),
                "auth.providers[1].issuer",
            ),
            (
                TWO.replace("\"partner\"", "\"corp\""),
                "auth.providers[1].name",
            ),
            // A provider without issuer, or without a name.
            (
                TWO.replace("issuer = \"https://partner.example/tenant-a\"\n", ""),
                "auth.providers[1].issuer",
            ),
            (
                TWO.replace("name = \"partner\"\n", ""),
                "auth.providers[1].name",
            ),
            // Their own keys, checked as in [auth].
            (
                TWO.replace("X-Partner-Sub", "Host"),
                "auth.providers[1].claims_to_headers",
            ),
            (
                format!("{TWO}algorithms = [\"HS256\"]\n"),
                "auth.providers[1].algorithms",
            ),
            (
                TWO.replace("https://partner.example/tenant-a", "partner"),
                "auth.providers[1].issuer",
            ),
        ];
        for (text, key) in cases {
            let (_, got) = line_and_key(&text);
            assert_eq!(got, key, "{text}");
        }
        // The line of a provider's key is found in its own table.
        let (line, _) = line_and_key(&TWO.replace("X-Partner-Sub", "Host"));
        assert_eq!(line, Some(8));
    }

    #[test]
    fn listeners_need_their_own_address_and_a_real_port() {
        let cases = [
            (
                "[server]\nlisten = [\"127.0.0.1:8081\", \"127.0.0.1:8081\"]\n",
                "server.listen",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:8081\", \"127.0.0.1:8081\"]\n",
                "server.listen",
            ),
            (
                "[server]\nlisten = [\"127.0.0.1:9091\"]\n",
                "observability.admin_listen",
            ),
            ("[server]\nlisten = [\"127.0.0.1:0\"]\n", "server.listen"),
        ];
        for (text, key) in cases {
            let e = error_of(&format!("{MINIMAL}{text}"));
            assert!(e.starts_with(&format!("{key}:")), "{text}: {e}");
        }
        assert!(with("[server]\nlisten = [\"127.0.0.1:8081\", \"127.0.0.2:8081\"]\n").is_ok());
    }

    #[test]
    fn a_prefix_with_dot_or_empty_segments_is_refused() {
        for prefix in ["/v1/../x", "/./v1", "/v1//x", "/v1\\\\x", "/v1;x"] {
            let e = error_of(&format!("{MINIMAL}[api]\npath_prefix = '{prefix}'\n"));
            assert!(e.starts_with("api.path_prefix:"), "{prefix}: {e}");
        }
        assert!(with("[api]\npath_prefix = \"/api/v1\"\n").is_ok());
    }

    #[test]
    fn two_claims_may_not_share_a_header() {
        let e = error_of(&format!(
            "{MINIMAL}[auth.claims_to_headers]\nsub = \"X-A\"\nemail = \"x-a\"\n"
        ));
        assert!(e.starts_with("auth.claims_to_headers:"), "{e}");
    }

    #[test]
    fn every_problem_names_its_key_and_line() {
        let cases = [
            // Type errors.
            ("[server]\nthreads = \"two\"\n", 2, "server.threads"),
            (
                "[auth]\njwks_file = \"/dev/null\"\n\n[upstream]\nservers = \"a:1\"\n",
                5,
                "upstream.servers",
            ),
            // Unknown keys, named with their section.
            ("[server]\nlisten = []\nthread = 2\n", 3, "server.thread"),
            (
                "[auth]\njwks_file = \"/dev/null\"\n[nope]\nx = 1\n",
                3,
                "nope",
            ),
            // Syntax errors.
            ("[server]\nthreads = = 2\n", 2, "server.threads"),
            ("[server]\nthreads = 2\n[api\n", 3, "api"),
            // Values the gateway refuses.
            (
                "[auth]\njwks_file = \"/dev/null\"\n[server]\n\nmax_body_bytes = 70000\n",
                5,
                "server.max_body_bytes",
            ),
            (
                "[auth]\njwks_file = \"/dev/null\"\n[api]\nupload_id_pattern = \"[0-9a-f]{24}\"\n",
                4,
                "api.upload_id_pattern",
            ),
        ];
        for (text, line, key) in cases {
            let (got_line, got_key) = line_and_key(text);
            assert_eq!(got_key, key, "{text:?}");
            assert_eq!(got_line, Some(line), "{text:?}");
            let message = Config::from_toml(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                message.starts_with(&format!("line {line}: {key}: ")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_defaulted_key_points_at_its_section_or_has_no_line() {
        // No [auth] section at all: the key is named, without a line.
        let (line, key) = line_and_key("[server]\nthreads = 2\n");
        assert_eq!(key, "auth.jwks_url");
        assert_eq!(line, None);
        let (line, key) = line_and_key("[server]\nthreads = 2\n[auth]\nissuer = \"x\"\n");
        assert_eq!(key, "auth.jwks_url");
        assert_eq!(line, Some(3));
    }

    #[test]
    fn unanchored_upload_id_patterns_are_refused() {
        for pattern in [
            "[0-9a-f]{24}",
            "^[0-9a-f]{24}",
            "[0-9a-f]{24}$",
            "^[0-9a-f]{24}|x$",
            "(?m)^[0-9a-f]{24}$",
            "^[0-9a-f]{24}\\$",
            "^x|^[0-9a-f]{24}$",
        ] {
            let text = format!("{MINIMAL}[api]\nupload_id_pattern = '{pattern}'\n");
            let e = error_of(&text);
            assert!(
                e.starts_with("api.upload_id_pattern: must be anchored"),
                "{pattern}: {e}"
            );
        }
        for pattern in [
            "^[0-9a-f]{24}$",
            "\\A[0-9a-f]{24}\\z",
            "^(?:[0-9a-f]{24}|[0-9a-f]{32})$",
            "^[0-9a-f]{24}$|^[0-9a-f]{32}$",
        ] {
            let text = format!("{MINIMAL}[api]\nupload_id_pattern = '{pattern}'\n");
            assert!(Config::from_toml(&text).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn upstream_names_are_checked_for_shape_and_never_resolved_at_load() {
        // A Service name that does not resolve (yet) is accepted: it is resolved at run time.
        let c = with("[upstream]\nservers = [\"upload-service.invalid:9000\", \"[::1]:9001\", \"10.0.0.1:80\", \"svc.ns.svc.cluster.local.:80\"]\n").unwrap();
        let servers: Vec<String> = c.upstream.servers.iter().map(ToString::to_string).collect();
        assert_eq!(
            servers,
            [
                "upload-service.invalid:9000",
                "[::1]:9001",
                "10.0.0.1:80",
                "svc.ns.svc.cluster.local.:80"
            ]
        );
        assert_eq!(
            c.upstream.servers[1].literal(),
            Some("[::1]:9001".parse().unwrap())
        );
        assert_eq!(c.upstream.servers[0].literal(), None);
        for bad in [
            "nohost",
            "host:",
            "host:70000",
            ":80",
            "bad host:80",
            "a/b:80",
            "host:0",
        ] {
            let e = error_of(&format!("{MINIMAL}[upstream]\nservers = [\"{bad}\"]\n"));
            assert!(e.starts_with("upstream.servers:"), "{bad}: {e}");
        }
    }

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = with("").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.server.max_body_bytes, 16384);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(1000));
        assert_eq!(c.upstream.read_timeout, Duration::from_millis(30000));
        assert_eq!(c.api.path_prefix, "/v1");
        assert_eq!(c.api.max_nb_chunks, 10000);
        assert_eq!(
            c.auth.providers[0].algorithms,
            vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        );
        assert_eq!(c.auth.max_token_lifetime_s, 86400);
        assert_eq!(c.observability.log_format, LogFormat::Json);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../conf/gateway.toml");
        let c = Config::from_toml(text).unwrap();
        assert!(!c.upstream.servers.is_empty());
    }

    #[test]
    fn max_body_bytes_over_retry_buffer_is_refused_naming_the_key() {
        let e = error_of(&format!("{MINIMAL}[server]\nmax_body_bytes = 65537\n"));
        assert!(e.starts_with("server.max_body_bytes:"), "{e}");
        assert!(with("[server]\nmax_body_bytes = 65536\n").is_ok());
    }

    #[test]
    fn symmetric_or_unknown_algorithms_are_refused_naming_the_key() {
        for alg in ["HS256", "none", "XYZ"] {
            let e = error_of(&format!("{MINIMAL}algorithms = [\"{alg}\"]\n"));
            assert!(e.starts_with("auth.algorithms:"), "{alg}: {e}");
        }
    }

    #[test]
    fn empty_server_list_is_refused_naming_the_key() {
        let e = error_of(&format!("{MINIMAL}[upstream]\nservers = []\n"));
        assert!(e.starts_with("upstream.servers:"), "{e}");
    }

    #[test]
    fn invalid_upload_id_pattern_is_refused_naming_the_key() {
        let e = error_of(&format!("{MINIMAL}[api]\nupload_id_pattern = \"([\"\n"));
        assert!(e.starts_with("api.upload_id_pattern:"), "{e}");
        let e = error_of(&format!("{MINIMAL}[api]\nupload_id_pattern = \".*\"\n"));
        assert!(e.starts_with("api.upload_id_pattern:"), "{e}");
    }

    #[test]
    fn claims_may_not_overwrite_headers_the_gateway_manages() {
        for header in ["X-Forwarded-For", "Accept", "Upgrade", "Host"] {
            let e = error_of(&format!(
                "{MINIMAL}[auth.claims_to_headers]\nsub = \"{header}\"\n"
            ));
            assert!(e.starts_with("auth.claims_to_headers:"), "{header}: {e}");
        }
    }

    #[test]
    fn edge_limits_have_their_documented_defaults() {
        let c = with("").unwrap();
        assert_eq!(c.server.max_header_bytes, 32768);
        assert_eq!(c.server.header_timeout, Duration::from_millis(10000));
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(c.upstream.response_timeout, Duration::from_millis(30000));
    }

    #[test]
    fn edge_limits_out_of_range_are_refused_naming_the_key() {
        for (section, line, key) in [
            (
                "server",
                "max_header_bytes = 100",
                "server.max_header_bytes:",
            ),
            (
                "server",
                "max_header_bytes = 2000000",
                "server.max_header_bytes:",
            ),
            (
                "server",
                "header_timeout_ms = 0",
                "server.header_timeout_ms:",
            ),
            (
                "server",
                "keepalive_timeout_s = -1",
                "server.keepalive_timeout_s:",
            ),
            (
                "upstream",
                "response_timeout_ms = 0",
                "upstream.response_timeout_ms:",
            ),
        ] {
            let e = error_of(&format!("{MINIMAL}[{section}]\n{line}\n"));
            assert!(e.starts_with(key), "{line}: {e}");
        }
    }

    #[test]
    fn unknown_kid_cooldown_of_zero_is_refused() {
        let e = error_of(&format!("{MINIMAL}unknown_kid_cooldown_s = 0\n"));
        assert!(e.starts_with("auth.unknown_kid_cooldown_s:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = error_of(&format!("{MINIMAL}[server]\nlisten_on = []\n"));
        assert!(e.contains("listen_on"), "{e}");
    }

    #[test]
    fn missing_key_source_is_refused() {
        let e = error_of("");
        assert!(e.starts_with("auth.jwks_url:"), "{e}");
    }

    #[test]
    fn effective_config_round_trips_through_check_output() {
        let c = with("[auth.claims_to_headers]\nsub = \"X-Auth-Subject\"\n").unwrap();
        let printed = c.to_toml();
        let again = Config::from_toml(&printed).unwrap();
        assert_eq!(again.to_toml(), printed);
        // The header name as the gateway sends it, under `[auth.claims_to_headers]`.
        let table: toml::Table = printed.parse().unwrap();
        assert_eq!(
            table["auth"]["claims_to_headers"]["sub"].as_str(),
            Some("x-auth-subject"),
            "{printed}"
        );
    }
}
