//! The token's header and claims: the fields read from the JOSE header, the time window
//! (`exp`, `nbf`, `iat` against the caller's clock), audience, scopes, and the claims that
//! become upstream headers.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::AuthError;

/// The header members the verifier reads; everything else (jku, x5u, jwk, x5c...) is ignored.
#[derive(Deserialize)]
pub(super) struct TokenHeader {
    pub(super) alg: String,
    #[serde(default)]
    pub(super) kid: Option<String>,
    /// Whether `crit` is present at all (even empty or null, which RFC 7515 forbids).
    #[serde(default, deserialize_with = "present")]
    pub(super) crit: bool,
}

pub(super) fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

pub(super) struct TokenTimes {
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
}

pub(super) fn check_time_window(
    exp: u64,
    nbf: Option<u64>,
    now_s: u64,
    leeway_s: u64,
) -> Result<(), AuthError> {
    // RFC 7519: the token must not be accepted on or after `exp`.
    if now_s >= exp.saturating_add(leeway_s) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now_s.saturating_add(leeway_s)) {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

/// A NumericDate claim: a non-negative number of seconds (fractions are truncated).
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, AuthError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let number = value.as_number().ok_or(AuthError::InvalidClaim { claim })?;
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds));
    }
    match number.as_f64() {
        // `as` saturates, so a huge float becomes u64::MAX rather than wrapping.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds as u64)),
        _ => Err(AuthError::InvalidClaim { claim }),
    }
}

pub(super) fn check_audience(aud: Option<&Value>, audiences: &[String]) -> Result<(), AuthError> {
    let accepted = |candidate: &str| audiences.iter().any(|audience| audience == candidate);
    match aud {
        None => Err(AuthError::MissingAudience),
        Some(Value::String(aud)) if accepted(aud) => Ok(()),
        Some(Value::Array(values)) => {
            // Every member must be a string, even when another one matches.
            let mut matched = false;
            for value in values {
                let aud = value.as_str().ok_or(AuthError::WrongAudience)?;
                matched |= accepted(aud);
            }
            if matched {
                Ok(())
            } else {
                Err(AuthError::WrongAudience)
            }
        }
        Some(_) => Err(AuthError::WrongAudience),
    }
}

/// Every required scope must be granted by `scope` (space-separated string) or `scp`
/// (array of strings, or a space-separated string as some issuers send it).
pub(super) fn check_scopes(
    claims: &Map<String, Value>,
    required: &[String],
) -> Result<(), AuthError> {
    let granted = |wanted: &str| {
        ["scope", "scp"]
            .iter()
            .any(|claim| match claims.get(*claim) {
                Some(Value::String(list)) => list.split(' ').any(|scope| scope == wanted),
                Some(Value::Array(list)) => list.iter().any(|scope| scope.as_str() == Some(wanted)),
                _ => false,
            })
    };
    if required.iter().all(|scope| granted(scope)) {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope)
    }
}

/// A claim as header text: strings as they are, numbers and booleans as JSON writes them;
/// null, objects and arrays are not forwarded, nor text with control characters (a CR/LF
/// would let a claim forge headers).
pub(super) fn header_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    text.bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        .then_some(text)
}

/// Whether a JSON object names one member twice (escapes decoded: `"s\u0075b"` is `sub`).
/// jsonwebtoken keeps the last copy, a first-copy parser upstream would read the other: such a
/// token is refused rather than read one way here and another way there.
pub(super) fn has_duplicate_members(json: &[u8]) -> bool {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut duplicate = false;
            while let Some(key) = map.next_key::<String>()? {
                let _: serde::de::IgnoredAny = map.next_value()?;
                duplicate |= !seen.insert(key);
            }
            Ok(duplicate)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::Deserializer::deserialize_map(&mut de, Members).unwrap_or(true)
}
