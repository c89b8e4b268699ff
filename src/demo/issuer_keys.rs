//! Signing keys and token minting for the demo issuer, the tests and the benches.
//!
//! Keys are generated at runtime with aws-lc-rs (RSA 2048 for RS256, P-256 for ES256,
//! Ed25519 for EdDSA), their public halves are published as JWKs, and tokens are minted
//! by hand (base64url(header).base64url(claims).signature) so that any header can be
//! produced, including the hostile ones (`crit`, `jwk`, `jku`, `alg` swaps) the gateway
//! must refuse. Pure: no I/O, no clock. This is a test and demo issuer; it must never be
//! mistaken for a production IdP (keys live only in memory and are never persisted).

use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};

/// Public JWK of a 1024-bit RSA key, generated once with `openssl genrsa 1024`.
///
/// aws-lc-rs only generates RSA keys of 2048 bits and more, so the "RSA keys under 2048 bits
/// are refused" test uses this constant. Only the public half exists: the key must be
/// skipped when the JWKS is loaded, so nothing is ever verified or signed with it.
pub const RSA_1024_PUBLIC_JWK: &str = r#"{"kty":"RSA","kid":"rsa-1024","use":"sig","alg":"RS256","e":"AQAB","n":"wtFvEfY0Jx11XrsDPxlE07JobKh6at6QzHJt30anJES9oj8z0x8I7xrXNz-I-2rYaO_PH4bemdMet6plmLEP1mXRTReDqAxt9vzTbZ68hPI8UNW96vuWbI77Vwbhbel9yXezIgQskB-c1auHONm3LTrTf3oFO2ev6L7_t-ENL30"}"#;

/// Why a key could not be generated or a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum IssuerKeyError {
    /// aws-lc-rs failed to generate or serialise a key pair.
    #[error("key generation failed for {0}")]
    KeyGeneration(&'static str),
    /// The algorithm is not one this issuer generates keys for (RS256, ES256, EdDSA).
    #[error("the demo issuer does not generate {0:?} keys")]
    UnsupportedAlgorithm(Algorithm),
    /// The header or the claims are not a JSON object.
    #[error("the token {0} must be a JSON object")]
    NotAnObject(&'static str),
    /// The signature could not be produced.
    #[error("signing failed")]
    Signing,
}

/// A private signing key with its published public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id, written into the `kid` header of every token and into the JWK.
    pub kid: String,
    /// Algorithm the key signs with by default (also the JWK's `alg`).
    pub alg: Algorithm,
    /// The private key in the form jsonwebtoken signs with (also usable with
    /// `jsonwebtoken::encode`).
    pub encoding_key: EncodingKey,
    /// The public JWK (`kty`, `kid`, `use: sig`, `alg`, and `n`/`e`, `crv`/`x`/`y` or `crv`/`x`).
    pub public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    // The private key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg`: RS256 (RSA 2048), ES256 (P-256) or EdDSA (Ed25519).
    pub fn generate(alg: Algorithm, kid: &str) -> Result<SigningKey, IssuerKeyError> {
        match alg {
            Algorithm::RS256 => generate_rsa(kid),
            Algorithm::ES256 => generate_es256(kid),
            Algorithm::EdDSA => generate_ed25519(kid),
            other => Err(IssuerKeyError::UnsupportedAlgorithm(other)),
        }
    }
}

/// Generates an RSA 2048 key signing RS256 (it can also sign RS384/512 and PS256/384/512
/// through [`mint_with_header`]).
pub fn generate_rsa(kid: &str) -> Result<SigningKey, IssuerKeyError> {
    let failed = || IssuerKeyError::KeyGeneration("RSA 2048");
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| failed())?;
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let pkcs8 = pair.as_der().map_err(|_| failed())?;
    // jsonwebtoken's aws-lc RSA signer wants the PKCS#1 RSAPrivateKey, aws-lc-rs only
    // exports PKCS#8: unwrap the inner structure.
    let pkcs1 = pkcs8_private_key(pkcs8.as_ref()).ok_or_else(failed)?;
    Ok(SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding_key: EncodingKey::from_rsa_der(pkcs1),
        public_jwk: json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": b64(&public.n),
            "e": b64(&public.e),
        }),
    })
}

/// Generates a P-256 key signing ES256.
pub fn generate_es256(kid: &str) -> Result<SigningKey, IssuerKeyError> {
    let failed = || IssuerKeyError::KeyGeneration("EC P-256");
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| failed())?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| failed())?;
    // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
    let (x, y) = match pair.public_key().as_ref() {
        [0x04, coordinates @ ..] if coordinates.len() == 64 => coordinates.split_at(32),
        _ => return Err(failed()),
    };
    Ok(SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding_key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_jwk: json!({
            "kty": "EC",
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
            "crv": "P-256",
            "x": b64(x),
            "y": b64(y),
        }),
    })
}

/// Generates an Ed25519 key signing EdDSA.
pub fn generate_ed25519(kid: &str) -> Result<SigningKey, IssuerKeyError> {
    let failed = || IssuerKeyError::KeyGeneration("Ed25519");
    let pair = Ed25519KeyPair::generate().map_err(|_| failed())?;
    let pkcs8 = pair.to_pkcs8().map_err(|_| failed())?;
    Ok(SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        encoding_key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        public_jwk: json!({
            "kty": "OKP",
            "kid": kid,
            "use": "sig",
            "alg": "EdDSA",
            "crv": "Ed25519",
            "x": b64(pair.public_key().as_ref()),
        }),
    })
}

/// The JWKS document (`{"keys":[...]}`) publishing the public halves of `keys`.
pub fn jwks_json(keys: &[&SigningKey]) -> String {
    let keys: Vec<&Value> = keys.iter().map(|key| &key.public_jwk).collect();
    json!({ "keys": keys }).to_string()
}

/// Mints a token signed by `key` with the header `{"alg","typ":"JWT","kid"}`.
pub fn mint(key: &SigningKey, claims: &Value) -> Result<String, IssuerKeyError> {
    mint_with_header(key, &Value::Object(Map::new()), claims)
}

/// Mints a token whose header is the default one of [`mint`] changed by `overrides`: each
/// member of `overrides` replaces or adds a header field, a `null` member removes it.
///
/// The signature uses the header's `alg` when `key` can produce it (an RSA key signs RS384
/// or PS256 when asked), otherwise `key.alg`; so `"alg":"none"` or `"alg":"HS256"` yield a
/// token that claims one algorithm and carries a signature of another, as an attacker would.
pub fn mint_with_header(
    key: &SigningKey,
    overrides: &Value,
    claims: &Value,
) -> Result<String, IssuerKeyError> {
    let Value::Object(overrides) = overrides else {
        return Err(IssuerKeyError::NotAnObject("header"));
    };
    let mut header = Map::new();
    header.insert("alg".into(), alg_value(key.alg));
    header.insert("typ".into(), Value::from("JWT"));
    header.insert("kid".into(), Value::from(key.kid.as_str()));
    for (name, value) in overrides {
        if value.is_null() {
            header.remove(name);
        } else {
            header.insert(name.clone(), value.clone());
        }
    }
    let signing_alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|name| Algorithm::from_str(name).ok())
        .filter(|alg| alg.family() == key.alg.family())
        .unwrap_or(key.alg);
    encode_with(
        &Value::Object(header),
        claims,
        &key.encoding_key,
        signing_alg,
    )
}

/// Low level: `base64url(header).base64url(claims)` signed with `alg` under `key`, header
/// taken verbatim. Lets a test sign HS256 with an RSA public key as the HMAC secret.
pub fn encode_with(
    header: &Value,
    claims: &Value,
    key: &EncodingKey,
    alg: Algorithm,
) -> Result<String, IssuerKeyError> {
    let message = encode_unsigned(header, claims)?;
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg)
        .map_err(|_| IssuerKeyError::Signing)?;
    Ok(format!("{message}.{signature}"))
}

/// `base64url(header).base64url(claims)` without the signature part (append `.` for an
/// unsecured `alg: none` token).
pub fn encode_unsigned(header: &Value, claims: &Value) -> Result<String, IssuerKeyError> {
    if !header.is_object() {
        return Err(IssuerKeyError::NotAnObject("header"));
    }
    if !claims.is_object() {
        return Err(IssuerKeyError::NotAnObject("claims"));
    }
    Ok(format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    ))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn alg_value(alg: Algorithm) -> Value {
    // Algorithm serialises as its JOSE name ("RS256", "EdDSA").
    serde_json::to_value(alg).unwrap_or(Value::Null)
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`
/// (`SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey, ... }`).
fn pkcs8_private_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (version_tag, _, rest) = der_element(info)?;
    let (algorithm_tag, _, rest) = der_element(rest)?;
    let (key_tag, key, _) = der_element(rest)?;
    (version_tag == 0x02 && algorithm_tag == 0x30 && key_tag == 0x04).then_some(key)
}

/// Splits one DER element off `input`: (tag, contents, rest). Definite lengths only.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(octets);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

/// Keys shared by every test of the crate: RSA generation is slow in debug builds, so each
/// key is generated once per test binary.
#[cfg(test)]
pub(crate) mod test_keys {
    use std::sync::OnceLock;

    use super::{generate_ed25519, generate_es256, generate_rsa, SigningKey};

    /// The fixed key set of the tests.
    pub(crate) struct TestKeys {
        /// RS256, kid `rsa-1`.
        pub rsa: SigningKey,
        /// A second RS256 key, kid `rsa-2`.
        pub rsa2: SigningKey,
        /// ES256, kid `ec-1`.
        pub ec: SigningKey,
        /// EdDSA, kid `ed-1`.
        pub ed: SigningKey,
        /// An RSA key that is never published (the attacker's), kid `rsa-1` to impersonate.
        pub attacker_rsa: SigningKey,
    }

    pub(crate) fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| TestKeys {
            rsa: generate_rsa("rsa-1").unwrap(),
            rsa2: generate_rsa("rsa-2").unwrap(),
            ec: generate_es256("ec-1").unwrap(),
            ed: generate_ed25519("ed-1").unwrap(),
            attacker_rsa: generate_rsa("rsa-1").unwrap(),
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, DecodingKey, Header, Validation};

    use super::test_keys::keys;
    use super::*;

    fn claims() -> Value {
        json!({ "sub": "alice", "exp": 4_000_000_000u64 })
    }

    fn header_of(token: &str) -> Value {
        let first = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap()
    }

    fn verifies_with_public_jwk(key: &SigningKey, token: &str, alg: Algorithm) -> bool {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk.clone()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        decode::<Value>(token, &decoding, &Validation::new(alg)).is_ok()
    }

    #[test]
    fn minted_tokens_verify_against_the_published_jwk() {
        let k = keys();
        for key in [&k.rsa, &k.ec, &k.ed] {
            let token = mint(key, &claims()).unwrap();
            assert!(
                verifies_with_public_jwk(key, &token, key.alg),
                "{}",
                key.kid
            );
            assert_eq!(header_of(&token)["kid"], key.kid.as_str());
        }
    }

    #[test]
    fn encoding_key_works_with_jsonwebtoken_encode() {
        let k = keys();
        for key in [&k.rsa, &k.ec, &k.ed] {
            let token =
                jsonwebtoken::encode(&Header::new(key.alg), &claims(), &key.encoding_key).unwrap();
            assert!(
                verifies_with_public_jwk(key, &token, key.alg),
                "{}",
                key.kid
            );
        }
    }

    #[test]
    fn header_overrides_add_replace_and_remove_fields() {
        let k = keys();
        let token = mint_with_header(
            &k.rsa,
            &json!({ "kid": null, "crit": ["exp"], "alg": "PS256" }),
            &claims(),
        )
        .unwrap();
        let header = header_of(&token);
        assert!(header.get("kid").is_none());
        assert_eq!(header["crit"], json!(["exp"]));
        // An RSA key signs the PS256 the header asks for.
        assert!(verifies_with_public_jwk(&k.rsa, &token, Algorithm::PS256));
    }

    #[test]
    fn published_rsa_key_is_2048_bits_with_standard_exponent() {
        let jwk = &keys().rsa.public_jwk;
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert!(n[0] >= 0x80);
        assert_eq!(jwk["e"], "AQAB");
    }

    #[test]
    fn jwks_document_lists_every_key() {
        let k = keys();
        let doc: Value = serde_json::from_str(&jwks_json(&[&k.rsa, &k.ec, &k.ed])).unwrap();
        let kids: Vec<&str> = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| jwk["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["rsa-1", "ec-1", "ed-1"]);
    }

    #[test]
    fn rsa_1024_constant_is_a_1024_bit_key() {
        let jwk: Value = serde_json::from_str(RSA_1024_PUBLIC_JWK).unwrap();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 128);
    }

    #[test]
    fn der_walker_refuses_truncated_input() {
        assert!(pkcs8_private_key(&[0x30, 0x82, 0x01]).is_none());
        assert!(pkcs8_private_key(&[]).is_none());
        assert!(der_element(&[0x04, 0x05, 1, 2]).is_none());
    }

    #[test]
    fn generate_refuses_algorithms_it_does_not_issue() {
        assert!(matches!(
            SigningKey::generate(Algorithm::HS256, "x"),
            Err(IssuerKeyError::UnsupportedAlgorithm(Algorithm::HS256))
        ));
    }
}
