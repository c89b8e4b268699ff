//! Why a token was refused: one [`AuthError`] per reason, each with its metric label and its
//! `WWW-Authenticate` error. `Display` never contains the token or any part of it.

use super::MAX_TOKEN_BYTES;
use crate::auth::keyset::KeyLookupError;

/// Why a request's token was refused. `Display` never contains the token or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or an empty one.
    #[error("no credentials")]
    Missing,
    /// An authorization scheme other than `Bearer`.
    #[error("authorization scheme is not Bearer")]
    NotBearer,
    /// Not a well-formed `Bearer <JWS compact>` value, or a part does not decode.
    #[error("malformed token")]
    Malformed,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// `alg` is `none`, HS*, unknown, or not in the policy.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header has `crit`; no extension is understood.
    #[error("token header has crit")]
    CritUnsupported,
    /// The `kid` is not in the key set (the caller may refresh it).
    #[error("unknown kid")]
    UnknownKid,
    /// No key fits the token's `kid`/`alg`.
    #[error("no key fits the token")]
    NoMatchingKey,
    /// No `kid`, and several keys fit the token's `alg`.
    #[error("token without kid matches several keys")]
    AmbiguousKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// No `exp` claim.
    #[error("token has no exp")]
    MissingExp,
    /// A time claim (`exp`, `nbf`, `iat`) is not a non-negative number.
    #[error("claim {claim} has an invalid value")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// An issuer is configured and the token has no `iss`.
    #[error("token has no iss")]
    MissingIssuer,
    /// `iss` is not the configured issuer (or not a string).
    #[error("wrong issuer")]
    WrongIssuer,
    /// Several providers are configured and none has the token's `iss`.
    #[error("no provider for the token's issuer")]
    UnknownIssuer,
    /// Audiences are configured and the token has no `aud`.
    #[error("token has no aud")]
    MissingAudience,
    /// No `aud` value is a configured audience, or `aud` is not a string / array of strings.
    #[error("wrong audience")]
    WrongAudience,
    /// The token lives longer than the policy allows.
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// A required scope is missing (the token itself is valid).
    #[error("insufficient scope")]
    InsufficientScope,
}

impl AuthError {
    /// The snake_case reason for logs and the auth-failure metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::NotBearer => "not_bearer",
            AuthError::Malformed => "malformed",
            AuthError::TooLarge => "too_large",
            AuthError::AlgorithmNotAllowed => "alg_not_allowed",
            AuthError::CritUnsupported => "crit_unsupported",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::NoMatchingKey => "no_matching_key",
            AuthError::AmbiguousKey => "ambiguous_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::MissingExp => "missing_exp",
            AuthError::InvalidClaim { .. } => "invalid_claim",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::MissingIssuer => "missing_issuer",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::MissingAudience => "missing_audience",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::LifetimeTooLong => "lifetime_too_long",
            AuthError::InsufficientScope => "insufficient_scope",
        }
    }

    /// Whether the caller should refresh the key set (rate-limited) and retry once.
    pub fn wants_key_refresh(&self) -> bool {
        matches!(self, AuthError::UnknownKid)
    }

    /// The RFC 6750 `error` value for `WWW-Authenticate`.
    pub fn www_authenticate_error(&self) -> &'static str {
        match self {
            AuthError::InsufficientScope => "insufficient_scope",
            _ => "invalid_token",
        }
    }
}

impl From<KeyLookupError> for AuthError {
    fn from(error: KeyLookupError) -> Self {
        match error {
            KeyLookupError::UnknownKid => AuthError::UnknownKid,
            KeyLookupError::NoMatchingKey => AuthError::NoMatchingKey,
            KeyLookupError::AmbiguousKey => AuthError::AmbiguousKey,
        }
    }
}
