//! Authentication core: which keys may verify tokens, and is this bearer token good.
//!
//! [`keyset`] turns a JWKS document into the usable verification keys; [`verify`] checks a
//! request's `Authorization` value against them under an [`AuthPolicy`] and caches verified
//! tokens. Both are pure (no I/O, no Pingora, the clock is a parameter): fetching and
//! refreshing the JWKS ([`crate::jwks`]), and turning an [`AuthError`] into a 403, belong to
//! the shell. Nothing here imports the error catalogue, Pingora, tokio or an HTTP client.
//! Nothing here ever logs or displays a token.

pub mod keyset;
pub mod verify;

pub use keyset::{JwksError, KeyKind, KeyLookupError, KeySet, SkipReason, SkippedKey, UsableKey};
pub use verify::{
    AuthError, AuthPolicy, CacheStats, PolicyError, TokenVerifier, VerifiedToken, MAX_TOKEN_BYTES,
};
