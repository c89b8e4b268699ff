//! The configuration file's format (SPEC §3): one struct per section, every key defaulted,
//! unknown keys refused. Deserialised from the TOML, serialised back by `check`; nothing here
//! says no to a value (that is [`super`]'s job).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The file format. Kept apart from the validated settings so that defaults and checks live in
// one place and the rest of the code never sees an unchecked string.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub(crate) server: FileServer,
    pub(crate) upstream: FileUpstream,
    pub(crate) api: FileApi,
    pub(crate) auth: FileAuth,
    pub(crate) observability: FileObservability,
    pub(crate) cors: FileCors,
    pub(crate) rate_limit: FileRateLimit,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileServer {
    pub(crate) listen: Vec<String>,
    pub(crate) threads: i64,
    pub(crate) max_body_bytes: i64,
    pub(crate) shutdown_grace_s: i64,
    pub(crate) tls_listen: Vec<String>,
    pub(crate) tls_cert: String,
    pub(crate) tls_key: String,
    pub(crate) max_header_bytes: i64,
    pub(crate) header_timeout_ms: i64,
    pub(crate) keepalive_timeout_s: i64,
}

impl Default for FileServer {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:8080".into()],
            threads: 2,
            max_body_bytes: 16384,
            shutdown_grace_s: 10,
            tls_listen: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_header_bytes: 32768,
            header_timeout_ms: 10000,
            keepalive_timeout_s: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileUpstream {
    pub(crate) servers: Vec<String>,
    pub(crate) tls: bool,
    pub(crate) sni: String,
    pub(crate) ca_file: String,
    pub(crate) connect_timeout_ms: i64,
    pub(crate) read_timeout_ms: i64,
    pub(crate) response_timeout_ms: i64,
    pub(crate) health_check_interval_ms: i64,
    pub(crate) keepalive_pool_size: i64,
    pub(crate) resolve_interval_ms: i64,
    pub(crate) dns_servers: Vec<String>,
}

impl Default for FileUpstream {
    fn default() -> Self {
        Self {
            servers: vec!["127.0.0.1:9000".into()],
            tls: false,
            sni: String::new(),
            ca_file: String::new(),
            connect_timeout_ms: 1000,
            read_timeout_ms: 30000,
            response_timeout_ms: 30000,
            health_check_interval_ms: 1000,
            keepalive_pool_size: 1024,
            resolve_interval_ms: 5000,
            dns_servers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileApi {
    pub(crate) path_prefix: String,
    pub(crate) upload_id_pattern: String,
    pub(crate) max_nb_chunks: i64,
}

impl Default for FileApi {
    fn default() -> Self {
        Self {
            path_prefix: "/v1".into(),
            upload_id_pattern: "^[0-9a-fA-F]{24}$".into(),
            max_nb_chunks: 10000,
        }
    }
}

/// `[auth]`. The per-provider keys are `Option`s: in the single-issuer form they describe the
/// one provider; with `[[auth.providers]]` they must not be written here at all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileAuth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwks_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwks_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) audiences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) leeway_s: i64,
    pub(crate) max_token_lifetime_s: i64,
    pub(crate) public_paths: Vec<String>,
    pub(crate) jwks_min_refresh_s: i64,
    pub(crate) jwks_max_refresh_s: i64,
    pub(crate) unknown_kid_cooldown_s: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) required_scopes: Option<Vec<String>>,
    pub(crate) forward_token: bool,
    pub(crate) verified_cache_capacity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) claims_to_headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) providers: Vec<FileProvider>,
}

impl Default for FileAuth {
    fn default() -> Self {
        Self {
            jwks_url: None,
            jwks_file: None,
            issuer: None,
            audiences: None,
            algorithms: None,
            leeway_s: 30,
            max_token_lifetime_s: 86400,
            public_paths: vec!["/healthz".into()],
            jwks_min_refresh_s: 10,
            jwks_max_refresh_s: 86400,
            unknown_kid_cooldown_s: 30,
            required_scopes: None,
            forward_token: true,
            verified_cache_capacity: 100_000,
            claims_to_headers: None,
            providers: Vec::new(),
        }
    }
}

/// The algorithms accepted when none are listed.
pub(crate) fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

/// One `[[auth.providers]]` table (SPEC §4.9).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileProvider {
    pub(crate) name: String,
    pub(crate) issuer: String,
    pub(crate) jwks_url: String,
    pub(crate) jwks_file: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<String>,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) claims_to_headers: BTreeMap<String, String>,
}

impl Default for FileProvider {
    fn default() -> Self {
        Self {
            name: String::new(),
            issuer: String::new(),
            jwks_url: String::new(),
            jwks_file: String::new(),
            audiences: Vec::new(),
            algorithms: default_algorithms(),
            required_scopes: Vec::new(),
            claims_to_headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileObservability {
    pub(crate) admin_listen: String,
    pub(crate) log_format: String,
    pub(crate) otlp_endpoint: String,
}

impl Default for FileObservability {
    fn default() -> Self {
        Self {
            admin_listen: "127.0.0.1:9091".into(),
            log_format: "json".into(),
            otlp_endpoint: String::new(),
        }
    }
}

/// `[cors]` (SPEC §4.11): empty `allowed_origins` turns CORS off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileCors {
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) allowed_methods: Vec<String>,
    pub(crate) allowed_headers: Vec<String>,
    pub(crate) expose_headers: Vec<String>,
    pub(crate) max_age_s: i64,
}

impl Default for FileCors {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "POST", "PUT", "DELETE"].map(String::from).to_vec(),
            allowed_headers: ["authorization", "content-type", "accept", "x-request-id"]
                .map(String::from)
                .to_vec(),
            expose_headers: vec!["x-request-id".into()],
            max_age_s: 600,
        }
    }
}

/// `[rate_limit]` (SPEC §4.10).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileRateLimit {
    pub(crate) enabled: bool,
    pub(crate) key: String,
    pub(crate) requests_per_second: i64,
    pub(crate) burst: i64,
    pub(crate) routes: String,
    /// Printed by `check` with its password hidden.
    #[serde(serialize_with = "serialize_without_password")]
    pub(crate) redis_url: String,
}

/// An address with its credentials replaced by `***` (`redis://***@host`), for printing.
fn serialize_without_password<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&without_password(url))
}

/// The address as `check` prints it: the whole userinfo (a lone name may be a password, as in
/// `redis://s3cret@host`) and every `pass`/`password` query parameter (the `redis+unix` form)
/// shown as `***`.
pub(crate) fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let rest = before_query.get(scheme_end..).unwrap_or_default();
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&rest[at..]);
        }
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs = query.split('&').map(|pair| match pair.split_once('=') {
            Some((name, _))
                if name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password") =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        });
        out.push_str(&pairs.collect::<Vec<_>>().join("&"));
    }
    out
}

impl Default for FileRateLimit {
    fn default() -> Self {
        Self {
            enabled: false,
            key: "sub".into(),
            requests_per_second: 10,
            burst: 20,
            routes: "finish".into(),
            redis_url: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn printed_redis_addresses_hide_their_password() {
        assert_eq!(
            without_password("redis://app:s3cr%40t@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            without_password("redis://:hunter2@10.0.0.1/"),
            "redis://***@10.0.0.1/"
        );
        // A lone name may be the password.
        assert_eq!(without_password("redis://s3cret@h/0"), "redis://***@h/0");
        assert_eq!(
            without_password("redis+unix:///tmp/r.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/r.sock?db=1&pass=***"
        );
        assert_eq!(
            without_password("redis+unix:///tmp/r.sock?PASSWORD=s3cret"),
            "redis+unix:///tmp/r.sock?PASSWORD=***"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(without_password(""), "");
        assert!(!without_password("redis://u:p@w@h/0").contains("p@w"));
    }
}
