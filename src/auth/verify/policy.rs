//! The token policy: what a token must satisfy, and why a policy cannot be used.

use jsonwebtoken::Algorithm;

/// What a token must satisfy. Plain data built by the config layer; checked by
/// [`TokenVerifier::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Exact `iss` required when set.
    pub issuer: Option<String>,
    /// When non-empty, `aud` is required and one of its values must be in this list.
    /// When empty, `aud` is not checked.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms; asymmetric only (HS* is refused at construction).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: u64,
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`), in seconds.
    pub max_token_lifetime_s: u64,
    /// Scopes that must all appear in `scope` (space-separated) or `scp`.
    pub required_scopes: Vec<String>,
    /// (claim, header name): top-level claims sent upstream as headers.
    pub claims_to_headers: Vec<(String, String)>,
    /// A top-level claim whose value (as text) the verified token keeps for the caller (the
    /// rate limit's key).
    pub key_claim: Option<String>,
}

/// Why an [`AuthPolicy`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `algorithms` is empty: no token could ever be accepted.
    #[error("auth.algorithms is empty")]
    NoAlgorithms,
    /// A shared-secret algorithm was listed; only asymmetric algorithms are allowed.
    #[error("auth.algorithms: {0:?} is a shared-secret algorithm and is never accepted")]
    SymmetricAlgorithm(Algorithm),
    /// A `claims_to_headers` header name is not a valid HTTP field name.
    #[error("auth.claims_to_headers: {0:?} is not a valid header name")]
    InvalidHeaderName(String),
    /// Several providers, and one without the `issuer` that selects it.
    #[error("auth.providers: every provider needs an issuer")]
    NoIssuer,
    /// A verifier for several providers was asked for with none.
    #[error("auth.providers is empty")]
    NoProvider,
}
