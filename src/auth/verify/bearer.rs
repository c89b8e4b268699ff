//! The `Authorization` header: one `Bearer` token (RFC 6750), bounded in size before anything
//! is decoded.

use super::error::AuthError;
use super::MAX_TOKEN_BYTES;

/// The token of a `Bearer` credential: scheme case-insensitive, surrounding whitespace
/// ignored, exactly one token (whitespace inside it is malformed), at most
/// [`MAX_TOKEN_BYTES`], all checked without decoding anything.
pub(super) fn bearer_token(authorization: Option<&[u8]>) -> Result<&[u8], AuthError> {
    let value = authorization.map(trim_whitespace).unwrap_or_default();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = match value.iter().position(|&b| is_whitespace(b)) {
        Some(end) => value.split_at(end),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = trim_whitespace(rest);
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    if token.iter().any(|&b| is_whitespace(b)) {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

pub(super) fn is_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

pub(super) fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_whitespace(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_whitespace(b))
        .map_or(start, |last| last + 1);
    bytes.get(start..end).unwrap_or_default()
}
