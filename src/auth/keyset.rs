//! The verification keys of the identity provider, built from a JWKS document.
//!
//! A [`KeySet`] holds only keys the gateway may verify with: asymmetric (RSA of 2048 to 8192
//! bits, EC P-256 / P-384, Ed25519), meant for signatures (`use`, `key_ops`), each parsed
//! once when the set is loaded into an aws-lc-rs `ParsedPublicKey` per algorithm it may verify,
//! never per request. (jsonwebtoken 11's `decode` rebuilds the public key from its JWK
//! components inside every verification, which for RSA means a new `EVP_PKEY` and Montgomery
//! context per token: measured in BENCHMARKS.md, "Cold token".) Every other key is
//! skipped with a reason the caller logs; one bad key never makes the whole document
//! unusable. [`KeySet::select`] picks the key for a token by `kid` and makes sure it fits the
//! token's `alg`, closing the traps jsonwebtoken leaves open (it never compares the JWK's
//! `alg`/`use`/`key_ops` with the token). Pure: no I/O, no clock; fetching and refreshing
//! the document is the caller's job.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{
    ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED,
    ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384,
    RSA_PKCS1_2048_8192_SHA512, RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA384,
    RSA_PSS_2048_8192_SHA512,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::{Map, Value};

/// Smallest RSA modulus accepted, in bits (SPEC §4.4).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted, in bits: aws-lc-rs verifies 2048 to 8192 bits only.
pub const MAX_RSA_BITS: u32 = 8192;

/// What kind of public key a [`UsableKey`] is, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (`kty: RSA`): RS256/384/512 and PS256/384/512.
    Rsa {
        /// Size of the modulus.
        bits: u32,
    },
    /// EC P-256 (`kty: EC`, `crv: P-256`): ES256 only.
    EcP256,
    /// EC P-384 (`kty: EC`, `crv: P-384`): ES384 only.
    EcP384,
    /// Ed25519 (`kty: OKP`, `crv: Ed25519`): EdDSA only.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify a signature made with `alg`.
    pub fn supports(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa { .. } => alg.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One key of the set that may verify tokens.
#[derive(Clone)]
pub struct UsableKey {
    /// Shared with every verified token this key verified (no copy per cached token).
    kid: Option<Arc<str>>,
    kind: KeyKind,
    alg: Option<Algorithm>,
    /// The key parsed for each algorithm it fits (one for EC and Ed25519; for RSA the JWK's
    /// `alg`, or all six RSA algorithms when it names none).
    verifiers: Box<[(Algorithm, ParsedPublicKey)]>,
    thumbprint: [u8; 32],
}

impl UsableKey {
    /// The JWK's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `kid`, shared.
    pub fn kid_shared(&self) -> Option<&Arc<str>> {
        self.kid.as_ref()
    }

    /// The kind of key (from `kty`/`crv`).
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The JWK's `alg`, if it has one; when present, tokens must use exactly this algorithm.
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// Whether `signature` is this key's signature of `message` under `alg`. False when the
    /// key does not fit `alg` (see [`UsableKey::fits`]).
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(own, _)| *own == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// SHA-256 JWK thumbprint (RFC 7638 members, over the canonical base64url values):
    /// identifies the key material whatever its `kid`.
    pub fn thumbprint(&self) -> &[u8; 32] {
        &self.thumbprint
    }

    /// Whether this key may verify a token signed with `alg`: the key kind must support it
    /// and, when the JWK names an `alg`, it must be exactly that one (an RS256 JWK never
    /// verifies an RS384 or PS256 token).
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.kind.supports(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

impl fmt::Debug for UsableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsableKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document. Immutable; a refresh builds a new set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<UsableKey>,
    /// Unique per parsed document (0 for the empty set): a token verified under this very set
    /// needs no re-check of its key.
    generation: u64,
}

/// The next [`KeySet::generation`].
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The document is not a JWKS at all (as opposed to single keys being unusable).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The body is not JSON.
    #[error("JWKS is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The JSON is not an object with a `keys` array.
    #[error("JWKS is not an object with a \"keys\" array")]
    NotAJwks,
}

/// Why no key was selected for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// The token names a `kid` the set does not have (the caller may refresh the set).
    #[error("unknown kid")]
    UnknownKid,
    /// No key with that `kid` (or, without `kid`, no key at all) fits the token's `alg`.
    #[error("no key fits the token's algorithm")]
    NoMatchingKey,
    /// The token has no `kid` and several keys fit its `alg`.
    #[error("token without kid and several keys fit its algorithm")]
    AmbiguousKey,
}

/// A JWK of the document that was left out of the set, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The JWK's `kid`, when it has a string one.
    pub kid: Option<String>,
    /// Why it is not usable.
    pub reason: SkipReason,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "JWK kid={kid:?} skipped: {}", self.reason),
            None => write!(f, "JWK without kid skipped: {}", self.reason),
        }
    }
}

/// Why a JWK is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `kty: oct`: a shared secret has no place in a public key set.
    SymmetricKey,
    /// `use` is not `sig`.
    NotForSignatures,
    /// `key_ops` is present without `verify`.
    VerifyNotAllowed,
    /// `kty` other than RSA, EC, OKP.
    UnsupportedKeyType,
    /// EC or OKP curve other than P-256, P-384, Ed25519.
    UnsupportedCurve,
    /// RSA modulus under [`MIN_RSA_BITS`].
    RsaKeyTooSmall {
        /// Size of the modulus.
        bits: u32,
    },
    /// RSA modulus over [`MAX_RSA_BITS`].
    RsaKeyTooLarge {
        /// Size of the modulus.
        bits: u32,
    },
    /// `alg` is not an allowed asymmetric algorithm (HS*, none, encryption algorithms...).
    AlgorithmNotAllowed,
    /// `alg` cannot be used with this kind of key (`ES256` on an RSA key...).
    AlgorithmDoesNotFitKey,
    /// A member is missing, of the wrong type, or does not encode a valid key; names the
    /// member or the check.
    Malformed(&'static str),
    /// Another usable key earlier in the document has the same `kid`.
    DuplicateKid,
}

impl SkipReason {
    /// A short snake_case label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::SymmetricKey => "symmetric_key",
            SkipReason::NotForSignatures => "not_for_signatures",
            SkipReason::VerifyNotAllowed => "verify_not_in_key_ops",
            SkipReason::UnsupportedKeyType => "unsupported_kty",
            SkipReason::UnsupportedCurve => "unsupported_crv",
            SkipReason::RsaKeyTooSmall { .. } => "rsa_key_too_small",
            SkipReason::RsaKeyTooLarge { .. } => "rsa_key_too_large",
            SkipReason::AlgorithmNotAllowed => "alg_not_allowed",
            SkipReason::AlgorithmDoesNotFitKey => "alg_does_not_fit_key",
            SkipReason::Malformed(_) => "malformed",
            SkipReason::DuplicateKid => "duplicate_kid",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::RsaKeyTooSmall { bits } => {
                write!(
                    f,
                    "RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
                )
            }
            SkipReason::RsaKeyTooLarge { bits } => {
                write!(
                    f,
                    "RSA key of {bits} bits (at most {MAX_RSA_BITS} supported)"
                )
            }
            SkipReason::Malformed(what) => write!(f, "malformed ({what})"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl KeySet {
    /// A set without keys (every token is refused).
    pub fn empty() -> KeySet {
        KeySet::default()
    }

    /// Builds the set from a JWKS document. Fails only when the document itself is not a
    /// JWKS; unusable keys are returned beside the set, for the caller to log. An empty set
    /// is not an error here: the caller decides whether to keep the previous one.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), JwksError> {
        let document: Value = serde_json::from_slice(bytes)?;
        let jwks = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAJwks)?;
        let mut keys: Vec<UsableKey> = Vec::with_capacity(jwks.len());
        let mut skipped = Vec::new();
        for jwk in jwks {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
            let outcome = match jwk.as_object() {
                Some(jwk) => usable_key(jwk),
                None => Err(SkipReason::Malformed("JWK is not an object")),
            };
            match outcome {
                Ok(key)
                    if key.kid.is_some() && keys.iter().any(|earlier| earlier.kid == key.kid) =>
                {
                    skipped.push(SkippedKey {
                        kid,
                        reason: SkipReason::DuplicateKid,
                    });
                }
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(SkippedKey { kid, reason }),
            }
        }
        let generation = NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((KeySet { keys, generation }, skipped))
    }

    /// Which parse of a JWKS this set is: two sets with the same generation are the same set.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Picks the key that verifies a token with header `kid` and `alg`.
    ///
    /// With a `kid`, the key of that `kid` must fit `alg`; an unknown `kid` is
    /// [`KeyLookupError::UnknownKid`] so the caller can refresh the set. Without a `kid`,
    /// exactly one key of the set must fit `alg` (SPEC §4.4).
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&UsableKey, KeyLookupError> {
        match kid {
            Some(kid) => {
                // Duplicate kids are skipped at load time, so at most one key matches.
                let key = self
                    .keys
                    .iter()
                    .find(|key| key.kid() == Some(kid))
                    .ok_or(KeyLookupError::UnknownKid)?;
                if key.fits(alg) {
                    Ok(key)
                } else {
                    Err(KeyLookupError::NoMatchingKey)
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|key| key.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    (None, _) => Err(KeyLookupError::NoMatchingKey),
                    (Some(_), Some(_)) => Err(KeyLookupError::AmbiguousKey),
                }
            }
        }
    }

    /// The `kid`s of the usable keys, in document order.
    pub fn kids(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys.iter().filter_map(UsableKey::kid)
    }

    /// Whether a usable key has this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid() == Some(kid))
    }

    /// The usable keys, in document order.
    pub fn keys(&self) -> &[UsableKey] {
        &self.keys
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks one JWK and builds its decoding key.
fn usable_key(jwk: &Map<String, Value>) -> Result<UsableKey, SkipReason> {
    let kid = optional_str(jwk, "kid")?.map(Arc::from);
    let kty = optional_str(jwk, "kty")?.ok_or(SkipReason::Malformed("kty"))?;
    if kty == "oct" {
        return Err(SkipReason::SymmetricKey);
    }
    if optional_str(jwk, "use")?.is_some_and(|key_use| key_use != "sig") {
        return Err(SkipReason::NotForSignatures);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops.as_array().ok_or(SkipReason::Malformed("key_ops"))?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err(SkipReason::VerifyNotAllowed);
        }
    }
    let alg = optional_str(jwk, "alg")?
        .map(|name| asymmetric_algorithm(name).map_err(|_| SkipReason::AlgorithmNotAllowed))
        .transpose()?;

    let material = match kty {
        "RSA" => rsa_material(jwk)?,
        "EC" => ec_material(jwk)?,
        "OKP" => okp_material(jwk)?,
        _ => return Err(SkipReason::UnsupportedKeyType),
    };
    if alg.is_some_and(|alg| !material.kind.supports(alg)) {
        return Err(SkipReason::AlgorithmDoesNotFitKey);
    }
    let thumbprint = digest::digest(&digest::SHA256, material.thumbprint_input.as_bytes());
    let mut thumbprint_bytes = [0u8; 32];
    thumbprint_bytes.copy_from_slice(thumbprint.as_ref());
    Ok(UsableKey {
        kid,
        kind: material.kind,
        alg,
        verifiers: material.verifiers(alg)?,
        thumbprint: thumbprint_bytes,
    })
}

/// The public key of a JWK, decoded.
struct KeyMaterial {
    kind: KeyKind,
    public: PublicKey,
    /// RFC 7638 JSON (required members, sorted, no whitespace).
    thumbprint_input: String,
}

/// An RSA key's components (parsed later, once per algorithm), or an EC or Ed25519 key
/// already parsed for the one algorithm it verifies.
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Single(Algorithm, ParsedPublicKey),
}

/// The RSA algorithms and their aws-lc-rs parameters (jsonwebtoken's own mapping).
const RSA_ALGORITHMS: [(Algorithm, &RsaParameters); 6] = [
    (Algorithm::RS256, &RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &RSA_PSS_2048_8192_SHA512),
];

impl KeyMaterial {
    /// The key parsed for every algorithm it may verify (`alg`: the JWK's own, if any).
    fn verifiers(
        self,
        alg: Option<Algorithm>,
    ) -> Result<Box<[(Algorithm, ParsedPublicKey)]>, SkipReason> {
        match self.public {
            PublicKey::Rsa { n, e } => {
                let components = RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                };
                RSA_ALGORITHMS
                    .iter()
                    .filter(|(rsa_alg, _)| alg.is_none_or(|own| own == *rsa_alg))
                    .map(|(rsa_alg, params)| {
                        components
                            .to_parsed_public_key(params)
                            .map(|key| (*rsa_alg, key))
                            .map_err(|_| SkipReason::Malformed("RSA key rejected"))
                    })
                    .collect()
            }
            PublicKey::Single(only, key) => Ok(Box::new([(only, key)])),
        }
    }
}

fn rsa_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    // Leading zero octets are stripped: some issuers publish them, and aws-lc refuses them
    // at verification time, which would otherwise reject every token of the key.
    let n_bytes = base64url_member(jwk, "n")?;
    let n = strip_leading_zeros(&n_bytes);
    let e_bytes = base64url_member(jwk, "e")?;
    let e = strip_leading_zeros(&e_bytes);
    let bits = modulus_bits(n);
    if bits < MIN_RSA_BITS {
        return Err(SkipReason::RsaKeyTooSmall { bits });
    }
    if bits > MAX_RSA_BITS {
        return Err(SkipReason::RsaKeyTooLarge { bits });
    }
    // A usable public exponent is odd, at least 3 and fits in 32 bits.
    let exponent_ok = !e.is_empty()
        && e.len() <= 4
        && e.last().is_some_and(|last| last & 1 == 1)
        && !matches!(e, [small] if *small < 3);
    if !exponent_ok {
        return Err(SkipReason::Malformed("e"));
    }
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| SkipReason::Malformed("RSA key rejected"))?;
    Ok(KeyMaterial {
        kind: KeyKind::Rsa { bits },
        public: PublicKey::Rsa {
            n: n.to_vec(),
            e: e.to_vec(),
        },
        thumbprint_input: format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(e),
            URL_SAFE_NO_PAD.encode(n)
        ),
    })
}

fn ec_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let crv = optional_str(jwk, "crv")?.ok_or(SkipReason::Malformed("crv"))?;
    let (kind, alg, coordinate_len, verification) = match crv {
        "P-256" => (
            KeyKind::EcP256,
            Algorithm::ES256,
            32,
            &ECDSA_P256_SHA256_FIXED,
        ),
        "P-384" => (
            KeyKind::EcP384,
            Algorithm::ES384,
            48,
            &ECDSA_P384_SHA384_FIXED,
        ),
        _ => return Err(SkipReason::UnsupportedCurve),
    };
    let x = base64url_member(jwk, "x")?;
    let y = base64url_member(jwk, "y")?;
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err(SkipReason::Malformed("EC coordinate length"));
    }
    // Uncompressed SEC1 point, the form jsonwebtoken's aws-lc EC verifier expects.
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let parsed = ParsedPublicKey::new(verification, &point)
        .map_err(|_| SkipReason::Malformed("EC point not on the curve"))?;
    Ok(KeyMaterial {
        kind,
        public: PublicKey::Single(alg, parsed),
        thumbprint_input: format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&x),
            URL_SAFE_NO_PAD.encode(&y)
        ),
    })
}

fn okp_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let crv = optional_str(jwk, "crv")?.ok_or(SkipReason::Malformed("crv"))?;
    if crv != "Ed25519" {
        return Err(SkipReason::UnsupportedCurve);
    }
    let x = base64url_member(jwk, "x")?;
    if x.len() != 32 {
        return Err(SkipReason::Malformed("Ed25519 key length"));
    }
    let parsed = ParsedPublicKey::new(&ED25519, &x)
        .map_err(|_| SkipReason::Malformed("Ed25519 key rejected"))?;
    Ok(KeyMaterial {
        kind: KeyKind::Ed25519,
        public: PublicKey::Single(Algorithm::EdDSA, parsed),
        thumbprint_input: format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&x)
        ),
    })
}

/// Why an algorithm name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmRefused {
    /// An HMAC algorithm: verifying it would mean sharing the signing secret, and a public key
    /// used as an HMAC secret would let anyone mint tokens.
    #[error("{0} is symmetric and never accepted: a gateway must not share the signing secret")]
    Symmetric(String),
    /// `none`, or a name jsonwebtoken does not know.
    #[error(
        "unknown algorithm {0:?} (allowed: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
    )]
    Unknown(String),
}

/// The asymmetric algorithm named `name` (jsonwebtoken's names, `Algorithm::from_str`): the
/// one parser of algorithm names, for the configuration, JWKs and token headers alike.
pub fn asymmetric_algorithm(name: &str) -> Result<Algorithm, AlgorithmRefused> {
    match name.parse::<Algorithm>() {
        Ok(alg) if alg.family() == AlgorithmFamily::Hmac => {
            Err(AlgorithmRefused::Symmetric(name.to_owned()))
        }
        Ok(alg) => Ok(alg),
        Err(_) => Err(AlgorithmRefused::Unknown(name.to_owned())),
    }
}

fn optional_str<'a>(
    jwk: &'a Map<String, Value>,
    member: &'static str,
) -> Result<Option<&'a str>, SkipReason> {
    match jwk.get(member) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(SkipReason::Malformed(member)),
    }
}

fn base64url_member(jwk: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, SkipReason> {
    let text = optional_str(jwk, member)?.ok_or(SkipReason::Malformed(member))?;
    // RFC 7517 forbids padding, but tolerating it costs nothing and some issuers add it.
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| SkipReason::Malformed(member))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Bit length of a big-endian integer without leading zero octets.
fn modulus_bits(n: &[u8]) -> u32 {
    match n.first() {
        None => 0,
        Some(&top) => {
            let len = u32::try_from(n.len()).unwrap_or(u32::MAX / 8);
            (len - 1).saturating_mul(8) + (8 - top.leading_zeros())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::demo::issuer_keys::test_keys::keys;
    use crate::demo::issuer_keys::{jwks_json, RSA_1024_PUBLIC_JWK};

    fn load(jwks: &Value) -> (KeySet, Vec<SkippedKey>) {
        KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap()
    }

    fn load_one(jwk: Value) -> Result<KeySet, SkipReason> {
        let (set, skipped) = load(&json!({ "keys": [jwk] }));
        match skipped.first() {
            Some(skip) => Err(skip.reason),
            None => Ok(set),
        }
    }

    fn with(jwk: &Value, member: &str, value: Value) -> Value {
        let mut jwk = jwk.clone();
        if value.is_null() {
            jwk.as_object_mut().unwrap().remove(member);
        } else {
            jwk[member] = value;
        }
        jwk
    }

    #[test]
    fn generated_keys_of_each_kind_are_usable() {
        let k = keys();
        let jwks = jwks_json(&[&k.rsa, &k.ec, &k.ed]);
        let (set, skipped) = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.kids().collect::<Vec<_>>(), ["rsa-1", "ec-1", "ed-1"]);
        assert_eq!(set.keys()[0].kind(), KeyKind::Rsa { bits: 2048 });
        assert_eq!(set.keys()[1].kind(), KeyKind::EcP256);
        assert_eq!(set.keys()[2].kind(), KeyKind::Ed25519);
        assert!(set.contains_kid("ec-1"));
        assert!(!set.contains_kid("nope"));
    }

    #[test]
    fn document_that_is_not_a_jwks_is_an_error() {
        assert!(matches!(
            KeySet::from_jwks_json(b"not json"),
            Err(JwksError::NotJson(_))
        ));
        assert!(matches!(
            KeySet::from_jwks_json(br#"{"keys":{}}"#),
            Err(JwksError::NotAJwks)
        ));
        assert!(matches!(
            KeySet::from_jwks_json(b"[]"),
            Err(JwksError::NotAJwks)
        ));
    }

    #[test]
    fn rsa_key_under_2048_bits_is_skipped() {
        let jwk: Value = serde_json::from_str(RSA_1024_PUBLIC_JWK).unwrap();
        assert_eq!(
            load_one(jwk).unwrap_err(),
            SkipReason::RsaKeyTooSmall { bits: 1024 }
        );
    }

    #[test]
    fn key_for_encryption_is_skipped() {
        let jwk = with(&keys().rsa.public_jwk, "use", json!("enc"));
        assert_eq!(load_one(jwk).unwrap_err(), SkipReason::NotForSignatures);
    }

    #[test]
    fn symmetric_key_is_skipped() {
        let jwk = json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256" });
        assert_eq!(load_one(jwk).unwrap_err(), SkipReason::SymmetricKey);
    }

    #[test]
    fn key_ops_without_verify_is_skipped_and_with_verify_kept() {
        let rsa = &keys().rsa.public_jwk;
        let jwk = with(rsa, "key_ops", json!(["encrypt"]));
        assert_eq!(load_one(jwk).unwrap_err(), SkipReason::VerifyNotAllowed);
        assert!(load_one(with(rsa, "key_ops", json!(["verify"]))).is_ok());
    }

    #[test]
    fn symmetric_or_unknown_jwk_alg_is_skipped() {
        let rsa = &keys().rsa.public_jwk;
        for alg in ["HS256", "none", "RSA-OAEP", "ES512"] {
            let jwk = with(rsa, "alg", json!(alg));
            assert_eq!(load_one(jwk).unwrap_err(), SkipReason::AlgorithmNotAllowed);
        }
        let jwk = with(rsa, "alg", json!("ES256"));
        assert_eq!(
            load_one(jwk).unwrap_err(),
            SkipReason::AlgorithmDoesNotFitKey
        );
    }

    #[test]
    fn unsupported_kty_and_curves_are_skipped() {
        let ec = &keys().ec.public_jwk;
        let ed = &keys().ed.public_jwk;
        assert_eq!(
            load_one(with(ec, "crv", json!("P-521"))).unwrap_err(),
            SkipReason::UnsupportedCurve
        );
        assert_eq!(
            load_one(with(ed, "crv", json!("Ed448"))).unwrap_err(),
            SkipReason::UnsupportedCurve
        );
        assert_eq!(
            load_one(with(ec, "kty", json!("EC2"))).unwrap_err(),
            SkipReason::UnsupportedKeyType
        );
    }

    #[test]
    fn malformed_keys_are_skipped_without_failing_the_document() {
        let k = keys();
        let rsa = &k.rsa.public_jwk;
        let ec = &k.ec.public_jwk;
        let mut off_curve = ec.clone();
        off_curve["y"] = ec["x"].clone();
        let jwks = json!({ "keys": [
            with(rsa, "n", json!("***")),
            with(rsa, "e", json!("AAE")),
            with(rsa, "kty", Value::Null),
            with(ec, "x", json!("AAAA")),
            off_curve,
            with(&k.ed.public_jwk, "x", json!(42)),
            "not an object",
            k.ed.public_jwk.clone(),
        ]});
        let (set, skipped) = load(&jwks);
        assert_eq!(set.kids().collect::<Vec<_>>(), ["ed-1"]);
        assert_eq!(skipped.len(), 7);
        assert!(skipped
            .iter()
            .all(|skip| matches!(skip.reason, SkipReason::Malformed(_))));
    }

    #[test]
    fn duplicate_kid_keeps_the_first_key() {
        let k = keys();
        let second = with(&k.rsa2.public_jwk, "kid", json!("rsa-1"));
        let (set, skipped) = load(&json!({ "keys": [k.rsa.public_jwk, second] }));
        assert_eq!(set.len(), 1);
        assert_eq!(skipped[0].reason, SkipReason::DuplicateKid);
        assert_eq!(
            set.keys()[0].thumbprint(),
            load_one(k.rsa.public_jwk.clone()).unwrap().keys()[0].thumbprint()
        );
    }

    #[test]
    fn rsa_modulus_with_leading_zero_octet_is_accepted() {
        let rsa = &keys().rsa.public_jwk;
        let mut n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        n.insert(0, 0);
        let set = load_one(with(rsa, "n", json!(URL_SAFE_NO_PAD.encode(&n)))).unwrap();
        assert_eq!(set.keys()[0].kind(), KeyKind::Rsa { bits: 2048 });
    }

    #[test]
    fn rs256_jwk_fits_only_rs256() {
        let set = load_one(keys().rsa.public_jwk.clone()).unwrap();
        assert!(set.select(Some("rsa-1"), Algorithm::RS256).is_ok());
        for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::ES256] {
            assert_eq!(
                set.select(Some("rsa-1"), alg).unwrap_err(),
                KeyLookupError::NoMatchingKey
            );
        }
    }

    #[test]
    fn rsa_jwk_without_alg_fits_every_rsa_algorithm_only() {
        let set = load_one(with(&keys().rsa.public_jwk, "alg", Value::Null)).unwrap();
        for alg in AlgorithmFamily::Rsa.algorithms() {
            assert!(set.select(Some("rsa-1"), *alg).is_ok(), "{alg:?}");
        }
        assert!(set.select(Some("rsa-1"), Algorithm::EdDSA).is_err());
        assert!(set.select(Some("rsa-1"), Algorithm::HS256).is_err());
    }

    /// The key is parsed once per algorithm at load: each of those parses verifies its own
    /// algorithm's signatures, and no other algorithm's.
    #[test]
    fn rsa_jwk_without_alg_verifies_signatures_of_every_rsa_algorithm() {
        use crate::demo::issuer_keys::mint_with_header;
        let set = load_one(with(&keys().rsa.public_jwk, "alg", Value::Null)).unwrap();
        let key = set.select(Some("rsa-1"), Algorithm::RS256).unwrap();
        let claims = json!({ "sub": "s" });
        for alg in AlgorithmFamily::Rsa.algorithms() {
            let name = format!("{alg:?}");
            let token = mint_with_header(&keys().rsa, &json!({ "alg": name }), &claims).unwrap();
            let (input, signature) = token.rsplit_once('.').unwrap();
            let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            assert!(key.verifies(*alg, input.as_bytes(), &signature), "{alg:?}");
            let others = AlgorithmFamily::Rsa.algorithms().iter();
            for other in others.filter(|other| *other != alg) {
                assert!(
                    !key.verifies(*other, input.as_bytes(), &signature),
                    "{alg:?} as {other:?}"
                );
            }
            assert!(!key.verifies(Algorithm::EdDSA, input.as_bytes(), &signature));
            signature[10] ^= 1;
            assert!(
                !key.verifies(*alg, input.as_bytes(), &signature),
                "{alg:?} altered"
            );
        }
    }

    #[test]
    fn ec_and_ed_keys_fit_only_their_algorithm() {
        let k = keys();
        let (set, _) = load(&json!({ "keys": [
            with(&k.ec.public_jwk, "alg", Value::Null),
            with(&k.ed.public_jwk, "alg", Value::Null),
        ]}));
        assert!(set.select(Some("ec-1"), Algorithm::ES256).is_ok());
        assert!(set.select(Some("ec-1"), Algorithm::ES384).is_err());
        assert!(set.select(Some("ed-1"), Algorithm::EdDSA).is_ok());
        assert!(set.select(Some("ed-1"), Algorithm::ES256).is_err());
    }

    #[test]
    fn unknown_kid_is_its_own_error() {
        let set = load_one(keys().rsa.public_jwk.clone()).unwrap();
        assert_eq!(
            set.select(Some("rotated"), Algorithm::RS256).unwrap_err(),
            KeyLookupError::UnknownKid
        );
    }

    #[test]
    fn no_kid_selects_the_single_fitting_key_only() {
        let k = keys();
        let (one, _) = load(&json!({ "keys": [k.rsa.public_jwk, k.ec.public_jwk] }));
        assert_eq!(
            one.select(None, Algorithm::RS256).unwrap().kid(),
            Some("rsa-1")
        );
        assert_eq!(
            one.select(None, Algorithm::EdDSA).unwrap_err(),
            KeyLookupError::NoMatchingKey
        );
        let (two, _) = load(&json!({ "keys": [k.rsa.public_jwk, k.rsa2.public_jwk] }));
        assert_eq!(
            two.select(None, Algorithm::RS256).unwrap_err(),
            KeyLookupError::AmbiguousKey
        );
    }

    #[test]
    fn skipped_key_display_names_kid_and_reason() {
        let skipped = SkippedKey {
            kid: Some("k1".into()),
            reason: SkipReason::RsaKeyTooSmall { bits: 1024 },
        };
        assert_eq!(
            skipped.to_string(),
            r#"JWK kid="k1" skipped: RSA key of 1024 bits (at least 2048 required)"#
        );
    }
}
