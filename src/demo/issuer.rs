//! The reference token issuer (SPEC §6): a real HTTP server on loopback publishing a JWKS at
//! `/.well-known/jwks.json` with `Cache-Control: max-age`, and minting tokens in process. Tests
//! rotate its keys, count its fetches and take it down to play an IdP outage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::http::{respond, serve, RunningServer};
use super::issuer_keys::{jwks_json, mint, IssuerKeyError, SigningKey};
use crate::jwks::unix_now;

/// The path the JWKS is served on.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The path that mints a fresh token, once [`Issuer::serve_tokens`] has been called.
pub const TOKEN_PATH: &str = "/token";

/// The OpenID Connect discovery document's path, under the issuer's own path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

struct State {
    keys: RwLock<Vec<SigningKey>>,
    /// The issuer's own `iss`, known once the server is bound.
    issuer: std::sync::OnceLock<String>,
    /// `(subject, audience)` of the tokens `GET /token` mints; `None`: no such endpoint.
    token_claims: RwLock<Option<(String, String)>>,
    max_age_s: u64,
    fetches: AtomicU64,
    /// When each JWKS request arrived.
    fetch_times: std::sync::Mutex<Vec<std::time::Instant>>,
    discoveries: AtomicU64,
    available: AtomicBool,
    /// The discovery document alone answers 503 while false.
    discovery_available: AtomicBool,
    /// The issuer's path (`""`, or `/tenant-a`): every endpoint lives under it.
    path: String,
    /// The `issuer` the discovery document claims, when not the real one (tests of a
    /// mismatch).
    discovery_issuer: RwLock<Option<String>>,
    /// The `jwks_uri` of the discovery document, known once bound.
    jwks_uri: std::sync::OnceLock<String>,
}

/// A running issuer; stops when dropped.
pub struct Issuer {
    server: RunningServer,
    state: Arc<State>,
    /// The `iss` of the tokens it mints.
    pub issuer: String,
}

/// Standard claims from `issuer` for a token valid for `lifetime_s` from now.
fn claims(issuer: &str, subject: &str, audience: &str, lifetime_s: u64) -> Value {
    let now = unix_now();
    json!({
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_s,
    })
}

impl State {
    /// The OpenID Provider Metadata: `issuer` and `jwks_uri` (what the gateway reads).
    fn discovery_document(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        self.discoveries.fetch_add(1, Ordering::SeqCst);
        if !self.available.load(Ordering::SeqCst)
            || !self.discovery_available.load(Ordering::SeqCst)
        {
            return respond(503, "text/plain", "down\n");
        }
        let claimed = self.discovery_issuer.read().ok().and_then(|c| c.clone());
        let issuer = claimed
            .or_else(|| self.issuer.get().cloned())
            .unwrap_or_default();
        let document = json!({
            "issuer": issuer,
            "jwks_uri": self.jwks_uri.get().cloned().unwrap_or_default(),
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        respond(200, "application/json", document.to_string())
    }

    /// `GET /token`: a fresh token, one hour, with the first published key.
    fn mint_on_request(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let who = self.token_claims.read().ok().and_then(|c| c.clone());
        let (Some((subject, audience)), Some(issuer)) = (who, self.issuer.get()) else {
            return respond(404, "text/plain", "not found\n");
        };
        let mut fresh = claims(issuer, &subject, &audience, 3600);
        // A new token every call, even within one second.
        fresh["jti"] = Value::String(format!("{:016x}", fastrand::u64(..)));
        let token = self
            .keys
            .read()
            .ok()
            .and_then(|keys| mint(keys.first()?, &fresh).ok());
        match token {
            Some(token) => respond(200, "text/plain", format!("{token}\n")),
            None => respond(500, "text/plain", "no signing key\n"),
        }
    }
}

impl Issuer {
    /// Starts an issuer on `addr` publishing `keys` with `Cache-Control: max-age=max_age_s`.
    pub async fn start(
        addr: SocketAddr,
        keys: Vec<SigningKey>,
        max_age_s: u64,
    ) -> std::io::Result<Self> {
        Self::start_at(addr, keys, max_age_s, "").await
    }

    /// [`Issuer::start`] for an issuer with a path (`/tenant-a`): its `iss` is
    /// `http://addr/tenant-a` and its JWKS, discovery document and token endpoint live under
    /// that path (OpenID Connect Discovery §4).
    pub async fn start_at(
        addr: SocketAddr,
        keys: Vec<SigningKey>,
        max_age_s: u64,
        path: &str,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State {
            keys: RwLock::new(keys),
            issuer: std::sync::OnceLock::new(),
            token_claims: RwLock::new(None),
            max_age_s,
            fetches: AtomicU64::new(0),
            fetch_times: std::sync::Mutex::new(Vec::new()),
            discoveries: AtomicU64::new(0),
            available: AtomicBool::new(true),
            discovery_available: AtomicBool::new(true),
            path: path.trim_end_matches('/').to_owned(),
            discovery_issuer: RwLock::new(None),
            jwks_uri: std::sync::OnceLock::new(),
        });
        let handler_state = state.clone();
        let server = serve(addr, move |req| {
            let state = handler_state.clone();
            async move {
                let Some(path) = req.uri.path().strip_prefix(state.path.as_str()) else {
                    return respond(404, "text/plain", "not found\n");
                };
                if path == TOKEN_PATH {
                    return state.mint_on_request();
                }
                if path == DISCOVERY_PATH {
                    return state.discovery_document();
                }
                if path != JWKS_PATH {
                    return respond(404, "text/plain", "not found\n");
                }
                state.fetches.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut times) = state.fetch_times.lock() {
                    times.push(std::time::Instant::now());
                }
                if !state.available.load(Ordering::SeqCst) {
                    return respond(503, "text/plain", "down\n");
                }
                let body = state
                    .keys
                    .read()
                    .map(|keys| jwks_json(&keys.iter().collect::<Vec<_>>()))
                    .unwrap_or_default();
                let mut resp = respond(200, "application/json", body);
                if let Ok(value) = format!("public, max-age={}", state.max_age_s).parse() {
                    resp.headers_mut()
                        .insert(http::header::CACHE_CONTROL, value);
                }
                resp
            }
        })
        .await?;
        let issuer = if state.path.is_empty() {
            format!("http://{}/", server.addr())
        } else {
            format!("http://{}{}", server.addr(), state.path)
        };
        let _ = state.issuer.set(issuer.clone());
        let _ = state
            .jwks_uri
            .set(format!("http://{}{}{JWKS_PATH}", server.addr(), state.path));
        Ok(Self {
            server,
            state,
            issuer,
        })
    }

    /// The JWKS URL to configure as `auth.jwks_url`.
    pub fn jwks_url(&self) -> String {
        format!(
            "http://{}{}{JWKS_PATH}",
            self.server.addr(),
            self.state.path
        )
    }

    /// When each JWKS request arrived, in order.
    pub fn fetch_times(&self) -> Vec<std::time::Instant> {
        self.state
            .fetch_times
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Discovery documents served so far.
    pub fn discovery_count(&self) -> u64 {
        self.state.discoveries.load(Ordering::SeqCst)
    }

    /// Makes the discovery document alone answer 503 (`false`) or itself (`true`).
    pub fn set_discovery_available(&self, available: bool) {
        self.state
            .discovery_available
            .store(available, Ordering::SeqCst);
    }

    /// Makes the discovery document claim another `issuer` (`None`: the real one).
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        if let Ok(mut claimed) = self.state.discovery_issuer.write() {
            *claimed = issuer.map(str::to_owned);
        }
    }

    /// JWKS requests served so far (including refused ones).
    pub fn fetch_count(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Replaces the published keys (rotation).
    pub fn set_keys(&self, keys: Vec<SigningKey>) {
        if let Ok(mut current) = self.state.keys.write() {
            *current = keys;
        }
    }

    /// Makes the JWKS endpoint answer 503 (`false`) or the key set (`true`).
    pub fn set_available(&self, available: bool) {
        self.state.available.store(available, Ordering::SeqCst);
    }

    /// Standard claims for a token valid for `lifetime_s` from now.
    pub fn claims(&self, subject: &str, audience: &str, lifetime_s: u64) -> Value {
        claims(&self.issuer, subject, audience, lifetime_s)
    }

    /// Makes `GET /token` answer a fresh one-hour token for `subject` and `audience` (the
    /// demo's way to get another token when the first expires). Off unless called.
    pub fn serve_tokens(&self, subject: &str, audience: &str) {
        if let Ok(mut claims) = self.state.token_claims.write() {
            *claims = Some((subject.to_owned(), audience.to_owned()));
        }
    }

    /// The URL of `GET /token`.
    pub fn token_url(&self) -> String {
        format!(
            "http://{}{}{TOKEN_PATH}",
            self.server.addr(),
            self.state.path
        )
    }

    /// Mints a token with the first published key.
    pub fn mint(&self, claims: &Value) -> Result<String, IssuerKeyError> {
        let keys = self
            .state
            .keys
            .read()
            .map_err(|_| IssuerKeyError::Signing)?;
        let key = keys.first().ok_or(IssuerKeyError::Signing)?;
        mint(key, claims)
    }
}
