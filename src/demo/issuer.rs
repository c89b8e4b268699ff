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

struct State {
    keys: RwLock<Vec<SigningKey>>,
    max_age_s: u64,
    fetches: AtomicU64,
    available: AtomicBool,
}

/// A running issuer; stops when dropped.
pub struct Issuer {
    server: RunningServer,
    state: Arc<State>,
    /// The `iss` of the tokens it mints.
    pub issuer: String,
}

impl Issuer {
    /// Starts an issuer on `addr` publishing `keys` with `Cache-Control: max-age=max_age_s`.
    pub async fn start(
        addr: SocketAddr,
        keys: Vec<SigningKey>,
        max_age_s: u64,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State {
            keys: RwLock::new(keys),
            max_age_s,
            fetches: AtomicU64::new(0),
            available: AtomicBool::new(true),
        });
        let handler_state = state.clone();
        let server = serve(addr, move |req| {
            let state = handler_state.clone();
            async move {
                if req.uri.path() != JWKS_PATH {
                    return respond(404, "text/plain", "not found\n");
                }
                state.fetches.fetch_add(1, Ordering::SeqCst);
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
        let issuer = format!("http://{}/", server.addr());
        Ok(Self {
            server,
            state,
            issuer,
        })
    }

    /// The JWKS URL to configure as `auth.jwks_url`.
    pub fn jwks_url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.server.addr())
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
        let now = unix_now();
        json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
        })
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
