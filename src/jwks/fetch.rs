//! Fetching a JWKS document: over HTTP(S) from `auth.jwks_url` or from `auth.jwks_file`,
//! bounded in size and time, parsed into a [`KeySet`] by the pure core. It returns its own
//! outcome ([`Fetched`] or [`FetchError`]); what a failure means for requests is the caller's
//! decision. It never follows a redirect and never contacts a URL a token names.

use std::time::Duration;

use crate::auth::keyset::KeySet;
use crate::config::JwksSource;

/// A JWKS document larger than this is refused unread.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// One fetch may take this long in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a key set could not be loaded (logged and counted, never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network or HTTP-level failure.
    #[error("fetch failed: {0}")]
    Http(String),
    /// The issuer answered with a non-200 status.
    #[error("issuer answered status {0}")]
    Status(u16),
    /// The document is larger than the limit.
    #[error("document over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The key file could not be read.
    #[error("cannot read key file: {0}")]
    File(String),
    /// The document is not a JWKS.
    #[error("not a JWKS: {0}")]
    Invalid(String),
    /// OpenID discovery failed: the document could not be fetched, or was refused.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The document holds no key the gateway can use: publishing it would refuse every token.
    #[error("no usable key ({skipped} skipped)")]
    NoUsableKey {
        /// Keys refused one by one (each logged with its reason).
        skipped: usize,
    },
}

/// A key set as fetched, with the refresh period its source asked for.
pub struct Fetched {
    /// The usable keys (never empty).
    pub keys: KeySet,
    /// The `Cache-Control: max-age` of the answer, when it had one.
    pub max_age: Option<Duration>,
}

/// Reads key sets from one configured source.
pub struct Fetcher {
    source: JwksSource,
    client: reqwest::Client,
    /// Discovery only: the `jwks_uri` found, when, and whether a JWKS fetch from it failed
    /// since; found again when one did or `rediscover_after` has passed. While discovery
    /// itself fails, the last `jwks_uri` found keeps being used (a discovery outage must not
    /// stop key rotation, or keep a revoked key).
    discovered: std::sync::Mutex<Option<Discovered>>,
    rediscover_after: Duration,
}

/// A `jwks_uri` found by discovery.
struct Discovered {
    jwks_uri: String,
    at: std::time::Instant,
    failed_since: bool,
}

/// The members of an OpenID Provider Metadata document the gateway reads.
#[derive(serde::Deserialize)]
struct ProviderMetadata {
    issuer: String,
    jwks_uri: String,
}

/// A reqwest error with every cause under it (`error sending request: connection refused`),
/// without the URL (the caller logs the host; a path or query may carry a secret).
fn http_error(e: &reqwest::Error) -> FetchError {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    FetchError::Http(text)
}

/// The `User-Agent` of every fetch, so an IdP's operators can tell who is calling.
const USER_AGENT: &str = concat!("upload-gateway/", env!("CARGO_PKG_VERSION"));

impl Fetcher {
    /// A fetcher for `source`. Fails when the HTTP client cannot be built: silently falling
    /// back to a default client would drop the no-redirect policy and the timeout.
    /// With OpenID discovery the document is fetched again after `rediscover_after`.
    pub fn new(source: JwksSource, rediscover_after: Duration) -> Result<Self, FetchError> {
        // No pooling: fetches are minutes apart and may run on different runtimes (the first
        // one happens before Pingora's runtimes exist).
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| http_error(&e))?;
        Ok(Self {
            source,
            client,
            discovered: std::sync::Mutex::new(None),
            rediscover_after,
        })
    }

    /// Where keys come from, for logs: `host:port` of the URL (never its path or query), or the
    /// file.
    pub fn origin(&self) -> String {
        match &self.source {
            JwksSource::Url(url) | JwksSource::Discovery { issuer: url } => {
                reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port_or_known_default() {
                            Some(port) => format!("{host}:{port}"),
                            None => host,
                        })
                    })
                    .unwrap_or_else(|| "(unparsable url)".to_owned())
            }
            JwksSource::File(path) => path.display().to_string(),
        }
    }

    /// Fetches and parses the key set once. Keys refused one by one are logged with their
    /// reason; a document with no usable key at all is a failed fetch.
    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        let (bytes, max_age) = match &self.source {
            JwksSource::Url(url) => self.fetch_url(url).await?,
            JwksSource::Discovery { issuer } => {
                let jwks_uri = self.jwks_uri(issuer).await?;
                match self.fetch_url(&jwks_uri).await {
                    Ok(fetched) => fetched,
                    Err(e) => {
                        // The IdP may have moved its keys: discover again next time.
                        self.forget_discovery();
                        return Err(e);
                    }
                }
            }
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| FetchError::File(e.to_string()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(FetchError::TooLarge);
                }
                (bytes, None)
            }
        };
        let (keys, skipped) =
            KeySet::from_jwks_json(&bytes).map_err(|e| FetchError::Invalid(e.to_string()))?;
        for skip in &skipped {
            tracing::warn!(key = %skip, "jwks key skipped");
        }
        let mut kids: Vec<&str> = keys.kids().collect();
        kids.sort_unstable();
        for pair in kids.windows(2) {
            if pair[0] == pair[1] {
                tracing::warn!(
                    kid = pair[0],
                    "jwks has several keys with this kid: a token naming it is checked against \
                     the one that fits its alg, and refused when several fit"
                );
            }
        }
        if keys.is_empty() {
            // Counted as a failed fetch: the last good set keeps serving, and a gateway that
            // never had one stays not ready.
            return Err(FetchError::NoUsableKey {
                skipped: skipped.len(),
            });
        }
        Ok(Fetched { keys, max_age })
    }

    fn forget_discovery(&self) {
        if let Ok(mut found) = self.discovered.lock() {
            if let Some(found) = found.as_mut() {
                found.failed_since = true;
            }
        }
    }

    /// The `jwks_uri` of `issuer`'s OpenID Provider Metadata (OpenID Connect Discovery 1.0
    /// §4): `{issuer without trailing /}/.well-known/openid-configuration`, whose `issuer` must
    /// equal the configured one exactly (§4.3) and whose `jwks_uri` must use the issuer's
    /// scheme. Kept until a JWKS fetch fails or `rediscover_after` has passed.
    async fn jwks_uri(&self, issuer: &str) -> Result<String, FetchError> {
        let known = match self.discovered.lock() {
            Ok(found) => match found.as_ref() {
                Some(d) if !d.failed_since && d.at.elapsed() < self.rediscover_after => {
                    return Ok(d.jwks_uri.clone());
                }
                Some(d) => Some(d.jwks_uri.clone()),
                None => None,
            },
            Err(_) => None,
        };
        match self.discover(issuer).await {
            Ok(uri) => Ok(uri),
            Err(e) => match known {
                Some(uri) => {
                    tracing::warn!(
                        error = %e,
                        "discovery failed; fetching the key set from the jwks_uri found before"
                    );
                    Ok(uri)
                }
                None => Err(e),
            },
        }
    }

    async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self
            .fetch_url(&url)
            .await
            .map_err(|e| FetchError::Discovery(format!("fetching the discovery document: {e}")))?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Discovery(format!(
                "the discovery document is not provider metadata: {e}"
            ))
        })?;
        if metadata.issuer != issuer {
            return Err(FetchError::Discovery(format!(
                "the discovery document's issuer {:?} is not the configured {issuer:?}",
                metadata.issuer
            )));
        }
        let scheme = |u: &str| reqwest::Url::parse(u).ok().map(|u| u.scheme().to_owned());
        if scheme(&metadata.jwks_uri).is_none() || scheme(&metadata.jwks_uri) != scheme(issuer) {
            return Err(FetchError::Discovery(
                "the discovery document's jwks_uri is not a URL with the issuer's scheme"
                    .to_owned(),
            ));
        }
        if let Ok(mut found) = self.discovered.lock() {
            *found = Some(Discovered {
                jwks_uri: metadata.jwks_uri.clone(),
                at: std::time::Instant::now(),
                failed_since: false,
            });
        }
        Ok(metadata.jwks_uri)
    }

    async fn fetch_url(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| http_error(&e))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| http_error(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// `max-age=N` from a `Cache-Control` value; `no-cache`/`no-store` mean "as soon as allowed".
fn max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("max-age") {
            result = arg
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        } else if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
