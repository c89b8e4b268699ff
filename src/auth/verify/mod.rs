//! Bearer-token verification: is this request's token good, and what may go upstream.
//!
//! [`TokenVerifier::verify`] takes the raw `Authorization` value, the current [`KeySet`] and
//! the time, and either returns the [`VerifiedToken`] (with the identity headers already
//! rendered) or the one reason it was refused. It closes the traps JWT libraries leave open
//! (SPEC §4.4): only asymmetric algorithms, the key must fit the token's `alg`, `crit`
//! refused, embedded keys (`jku`, `x5u`, `jwk`, `x5c`) never used, a payload naming a member
//! twice refused, and every claim checked here against the caller's clock (`exp` required,
//! `nbf`, `iat`, `iss`/`aud` required when configured, lifetime cap, scopes).
//!
//! The JWS compact form is split and its header read here (jsonwebtoken cannot tell
//! `alg: none` from garbage), and the signature is checked by aws-lc-rs with the key the set
//! parsed once at load ([`super::keyset::UsableKey::verifies`]): jsonwebtoken's `decode`
//! would rebuild the public key and parse the header and the claims again on every token.
//! A verified token is cached by the SHA-256 of its text until it expires, so a repeated
//! token costs a hash and a lookup; `exp` is still checked on every hit.
//! It never logs, stores or displays the token itself, and never panics on hostile input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::AlgorithmFamily;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::UnitWeighter;
use serde_json::{Map, Value};

use super::keyset::{asymmetric_algorithm, KeySet};

mod bearer;
mod cache;
mod claims;
mod error;
mod policy;
mod token;

use bearer::bearer_token;
use cache::{fingerprint, Fingerprint, FingerprintHasher, TokenCache};
use claims::{
    check_audience, check_scopes, check_time_window, header_text, numeric_date, TokenHeader,
    TokenTimes,
};

pub use cache::CacheStats;
pub use error::AuthError;
pub use policy::{AuthPolicy, PolicyError};
pub use token::VerifiedToken;
use token::{Texts, FIRST_HEADER, KEY_CLAIM, SUBJECT};

/// Longest token accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// One provider's policy, checked.
struct Checks {
    policy: AuthPolicy,
    /// `claims_to_headers` names, parsed once and shared by every token of the provider.
    header_names: Arc<[http::HeaderName]>,
}

/// Verifies bearer tokens under one [`AuthPolicy`] per provider and caches the verified ones
/// in one cache for all providers, so a cache hit costs the same however many providers there
/// are (it names its provider).
pub struct TokenVerifier {
    providers: Vec<Checks>,
    /// Several providers: the token's (unverified) `iss` picks one before any key is looked
    /// up. One provider: every token goes to it, and a wrong `iss` is that policy's refusal.
    select_by_issuer: bool,
    /// `None` when caching is disabled (capacity 0).
    cache: Option<TokenCache>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A token read and looked up in the cache, with the provider that must verify it:
/// [`TokenVerifier::prepare`], then [`TokenVerifier::finish`] with that provider's key set.
pub struct Prepared<'a> {
    /// The provider (index into the policies) whose key set [`TokenVerifier::finish`] needs.
    pub provider: usize,
    token: &'a [u8],
    fingerprint: Fingerprint,
    cached: Option<Arc<VerifiedToken>>,
}

fn checks(policy: AuthPolicy) -> Result<Checks, PolicyError> {
    if policy.algorithms.is_empty() {
        return Err(PolicyError::NoAlgorithms);
    }
    if let Some(alg) = policy
        .algorithms
        .iter()
        .find(|alg| alg.family() == AlgorithmFamily::Hmac)
    {
        return Err(PolicyError::SymmetricAlgorithm(*alg));
    }
    let header_names = policy
        .claims_to_headers
        .iter()
        .map(|(_, name)| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PolicyError::InvalidHeaderName(name.clone()))
        })
        .collect::<Result<Arc<[_]>, _>>()?;
    Ok(Checks {
        header_names,
        policy,
    })
}

/// The `iss` of a token's payload, unverified: only to pick the provider whose keys and policy
/// then decide. `None` when absent or not a string; a payload that does not decode, or names
/// `iss` twice, is malformed.
fn unverified_issuer(token: &[u8]) -> Result<Option<String>, AuthError> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        #[serde(default)]
        iss: Option<Value>,
    }
    let payload = token
        .split(|&b| b == b'.')
        .nth(1)
        .ok_or(AuthError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    let issuer: Issuer = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    Ok(match issuer.iss {
        Some(Value::String(iss)) => Some(iss),
        _ => None,
    })
}

impl TokenVerifier {
    /// Builds a verifier for one provider, caching up to `cache_capacity` verified tokens (0
    /// disables caching).
    pub fn new(policy: AuthPolicy, cache_capacity: u64) -> Result<TokenVerifier, PolicyError> {
        Self::build(vec![checks(policy)?], false, cache_capacity)
    }

    /// Builds a verifier for several providers, each policy with its own `issuer` (required):
    /// a token's `iss` picks the provider, a token whose `iss` no provider has is refused
    /// ([`AuthError::UnknownIssuer`]).
    pub fn with_providers(
        policies: Vec<AuthPolicy>,
        cache_capacity: u64,
    ) -> Result<TokenVerifier, PolicyError> {
        let mut all = Vec::with_capacity(policies.len());
        for policy in policies {
            if policy.issuer.is_none() {
                return Err(PolicyError::NoIssuer);
            }
            all.push(checks(policy)?);
        }
        if all.is_empty() {
            return Err(PolicyError::NoProvider);
        }
        Self::build(all, true, cache_capacity)
    }

    fn build(
        providers: Vec<Checks>,
        select_by_issuer: bool,
        cache_capacity: u64,
    ) -> Result<TokenVerifier, PolicyError> {
        let cache = (cache_capacity > 0).then(|| {
            let items = usize::try_from(cache_capacity).unwrap_or(usize::MAX);
            Cache::with(
                items,
                cache_capacity,
                UnitWeighter,
                FingerprintHasher,
                DefaultLifecycle::default(),
            )
        });
        Ok(TokenVerifier {
            providers,
            select_by_issuer,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The policy of the first (or only) provider.
    pub fn policy(&self) -> &AuthPolicy {
        &self.providers[0].policy
    }

    /// How many providers this verifier serves.
    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    /// Verifies the token of an `Authorization` header value at time `now_s` (seconds since
    /// the epoch) against `keys`, whichever provider the token belongs to (the one-provider
    /// case). On [`AuthError::UnknownKid`] the caller may refresh `keys` and call again.
    pub fn verify(
        &self,
        keys: &KeySet,
        authorization: Option<&[u8]>,
        now_s: u64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let prepared = self.prepare(authorization)?;
        self.finish(&prepared, keys, now_s)
    }

    /// The first step: the bearer token read, looked up in the cache, and its provider
    /// chosen (from the cached entry, or from the token's `iss` when there are several).
    pub fn prepare<'a>(&self, authorization: Option<&'a [u8]>) -> Result<Prepared<'a>, AuthError> {
        let token = bearer_token(authorization)?;
        let fingerprint = fingerprint(token);
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&fingerprint));
        let provider = match &cached {
            Some(hit) => hit.provider(),
            None if self.select_by_issuer => {
                let iss = unverified_issuer(token)?.ok_or(AuthError::MissingIssuer)?;
                self.providers
                    .iter()
                    .position(|p| p.policy.issuer.as_deref() == Some(iss.as_str()))
                    .ok_or(AuthError::UnknownIssuer)?
            }
            None => 0,
        };
        Ok(Prepared {
            provider,
            token,
            fingerprint,
            cached,
        })
    }

    /// The second step: verify (or re-check the cached verification of) a prepared token
    /// against its provider's current key set.
    pub fn finish(
        &self,
        prepared: &Prepared<'_>,
        keys: &KeySet,
        now_s: u64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let Some(cache) = &self.cache else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return self.verify_uncached(prepared.provider, keys, prepared.token, now_s);
        };
        if let Some(cached) = &prepared.cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return self.recheck(cache, keys, &prepared.fingerprint, cached.clone(), now_s);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let verified = self.verify_uncached(prepared.provider, keys, prepared.token, now_s)?;
        cache.insert(prepared.fingerprint, Arc::clone(&verified));
        Ok(verified)
    }

    /// Drops the cached tokens that `keys` would no longer verify: their `kid` left the
    /// set, or now names other key material. Call it after every key-set swap (the
    /// one-provider case; see [`TokenVerifier::retain_keys_of`]).
    pub fn retain_keys(&self, keys: &KeySet) {
        self.retain_keys_of(0, keys);
    }

    /// [`TokenVerifier::retain_keys`] for the tokens of one provider: the others' stay.
    pub fn retain_keys_of(&self, provider: usize, keys: &KeySet) {
        let Some(cache) = &self.cache else {
            return;
        };
        let before = cache.len();
        cache.retain(|_, cached| cached.provider() != provider || verified_by(cached, keys));
        let dropped = before.saturating_sub(cache.len());
        if dropped > 0 {
            tracing::debug!(dropped, "verified tokens dropped after key set change");
        }
    }

    /// Cache counters since construction.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.as_ref().map_or(0, |c| c.len() as u64),
        }
    }

    fn recheck(
        &self,
        cache: &TokenCache,
        keys: &KeySet,
        fingerprint: &Fingerprint,
        cached: Arc<VerifiedToken>,
        now_s: u64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        // The key that verified the token must still be in the set: an entry inserted while a
        // refresh removed its key would otherwise outlive `retain_keys`.
        if !verified_by(&cached, keys) {
            cache.remove(fingerprint);
            return Err(AuthError::UnknownKid);
        }
        let leeway_s = self.providers[cached.provider()].policy.leeway_s;
        match check_time_window(cached.exp, cached.nbf(), now_s, leeway_s) {
            Ok(()) => Ok(cached),
            Err(error) => {
                if error == AuthError::Expired {
                    cache.remove(fingerprint);
                }
                Err(error)
            }
        }
    }

    fn verify_uncached(
        &self,
        provider: usize,
        keys: &KeySet,
        token: &[u8],
        now_s: u64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let checks = &self.providers[provider];
        // Only the JWS compact alphabet: also makes the token ASCII.
        if !token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(AuthError::Malformed);
        }
        let text = std::str::from_utf8(token).map_err(|_| AuthError::Malformed)?;
        let mut parts = text.split('.');
        let (encoded_header, payload, signature) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(header), Some(payload), Some(signature), None) => {
                    (header, payload, signature)
                }
                _ => return Err(AuthError::Malformed),
            };
        if encoded_header.is_empty() || payload.is_empty() {
            return Err(AuthError::Malformed);
        }
        // Our own header parse: jsonwebtoken cannot tell `alg: none` from garbage, and
        // `crit` must be refused before anything else is trusted.
        let header_json = URL_SAFE_NO_PAD
            .decode(encoded_header)
            .map_err(|_| AuthError::Malformed)?;
        let header: TokenHeader =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        let alg = asymmetric_algorithm(&header.alg)
            .ok()
            .filter(|alg| checks.policy.algorithms.contains(alg))
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        if header.crit {
            return Err(AuthError::CritUnsupported);
        }
        if signature.is_empty() {
            return Err(AuthError::BadSignature);
        }
        // jku / x5u / jwk / x5c are never read: the key comes from the key set only.
        let key = keys.select(header.kid.as_deref(), alg)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        // The signing input is the token up to its last dot: header, '.', payload.
        let signing_input = &token[..encoded_header.len() + 1 + payload.len()];
        if !key.verifies(alg, signing_input, &signature) {
            return Err(AuthError::BadSignature);
        }

        // One reading of every claim: a payload naming a member twice is refused.
        let payload_json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        if claims::has_duplicate_members(&payload_json) {
            return Err(AuthError::Malformed);
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload_json).map_err(|_| AuthError::Malformed)?;
        let times = checks.check_claims(&claims, now_s)?;
        let key_claim = checks
            .policy
            .key_claim
            .as_ref()
            .and_then(|name| header_text(claims.get(name)?));
        let header_texts: Vec<Option<String>> = checks
            .policy
            .claims_to_headers
            .iter()
            .map(|(claim, _)| header_text(claims.get(claim)?))
            .collect();
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(FIRST_HEADER + header_texts.len());
        texts.resize(FIRST_HEADER, None);
        texts[SUBJECT] = claims.get("sub").and_then(Value::as_str);
        texts[KEY_CLAIM] = key_claim.as_deref();
        texts.extend(header_texts.iter().map(Option::as_deref));
        let verified = VerifiedToken {
            exp: times.exp,
            nbf: times.nbf.unwrap_or(0),
            key_set: keys.generation(),
            key_thumbprint: thumbprint_prefix(key.thumbprint()),
            kid: key.kid_shared().cloned(),
            header_names: Arc::clone(&checks.header_names),
            texts: Texts::pack(&texts),
            provider: u32::try_from(provider).map_err(|_| AuthError::Malformed)?,
            alg,
            kid_in_header: header.kid.is_some(),
        };
        Ok(Arc::new(verified))
    }
}

impl Checks {
    /// Every claim check, in a fixed order so the reported reason is predictable; scopes
    /// last, since `insufficient_scope` is only meaningful for an otherwise valid token.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now_s: u64,
    ) -> Result<TokenTimes, AuthError> {
        let policy = &self.policy;
        let exp = numeric_date(claims, "exp")?.ok_or(AuthError::MissingExp)?;
        let nbf = numeric_date(claims, "nbf")?;
        let iat = numeric_date(claims, "iat")?;
        check_time_window(exp, nbf, now_s, policy.leeway_s)?;
        if iat.is_some_and(|iat| iat > now_s.saturating_add(policy.leeway_s)) {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(issuer) = &policy.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::MissingIssuer),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => return Err(AuthError::WrongIssuer),
            }
        }
        if !policy.audiences.is_empty() {
            check_audience(claims.get("aud"), &policy.audiences)?;
        }
        if exp.saturating_sub(iat.unwrap_or(now_s)) > policy.max_token_lifetime_s {
            return Err(AuthError::LifetimeTooLong);
        }
        if !policy.required_scopes.is_empty() {
            check_scopes(claims, &policy.required_scopes)?;
        }
        Ok(TokenTimes { exp, nbf })
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("policy", &self.policy())
            .field("providers", &self.providers.len())
            .field("cache", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

/// The part of a key's RFC 7638 thumbprint a verified token keeps: 128 bits tell the key
/// material of one issuer's set apart (the set is the issuer's, not the client's).
fn thumbprint_prefix(thumbprint: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&thumbprint[..16]);
    out
}

/// Whether `keys` still selects, for the token's header, the key that verified it. Under the
/// very set that verified it, it does, and the selection is skipped.
fn verified_by(token: &VerifiedToken, keys: &KeySet) -> bool {
    // With a header `kid`, the selection matched it exactly: it was the key's `kid`.
    let kid = if token.kid_in_header {
        token.kid()
    } else {
        None
    };
    token.key_set == keys.generation()
        || keys
            .select(kid, token.alg)
            .is_ok_and(|key| thumbprint_prefix(key.thumbprint()) == token.key_thumbprint)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::demo::issuer_keys::test_keys::keys;
    use crate::demo::issuer_keys::{
        encode_unsigned, encode_with, jwks_json, mint, mint_with_header, SigningKey,
    };
    use jsonwebtoken::Algorithm;

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "https://idp.example.com/";

    fn policy() -> AuthPolicy {
        AuthPolicy {
            issuer: Some(ISSUER.into()),
            audiences: vec!["upload-api".into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            leeway_s: 30,
            max_token_lifetime_s: 86_400,
            required_scopes: vec![],
            claims_to_headers: vec![("sub".into(), "X-Auth-Subject".into())],
            key_claim: None,
        }
    }

    fn verifier_with(policy: AuthPolicy) -> TokenVerifier {
        TokenVerifier::new(policy, 1_000).unwrap()
    }

    fn verifier() -> TokenVerifier {
        verifier_with(policy())
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": "upload-api",
            "sub": "alice",
            "iat": NOW - 10,
            "exp": NOW + 600,
            "scope": "uploads:write profile",
        })
    }

    /// `claims()` with `changes` applied (a null member removes the claim).
    fn claims_with(changes: Value) -> Value {
        let mut claims = claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn key_set(signing_keys: &[&SigningKey]) -> KeySet {
        let (set, skipped) = KeySet::from_jwks_json(jwks_json(signing_keys).as_bytes()).unwrap();
        assert!(skipped.is_empty());
        set
    }

    fn all_keys() -> KeySet {
        let k = keys();
        key_set(&[&k.rsa, &k.ec, &k.ed])
    }

    fn verify_at(
        verifier: &TokenVerifier,
        keys: &KeySet,
        token: &str,
        now_s: u64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        verifier.verify(keys, Some(format!("Bearer {token}").as_bytes()), now_s)
    }

    fn check(token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        verify_at(&verifier(), &all_keys(), token, NOW)
    }

    fn rsa_token(claims: &Value) -> String {
        mint(&keys().rsa, claims).unwrap()
    }

    #[test]
    fn valid_tokens_of_each_algorithm_are_accepted() {
        let k = keys();
        for key in [&k.rsa, &k.ec, &k.ed] {
            let verified = check(&mint(key, &claims()).unwrap()).unwrap();
            assert_eq!(verified.kid(), Some(key.kid.as_str()));
            assert_eq!(verified.exp(), NOW + 600);
            assert_eq!(verified.subject(), Some("alice"));
        }
    }

    #[test]
    fn ps256_token_is_accepted_by_an_rsa_jwk_without_alg() {
        let mut jwk = keys().rsa.public_jwk.clone();
        jwk.as_object_mut().unwrap().remove("alg");
        let jwks = json!({ "keys": [jwk] }).to_string();
        let (set, _) = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
        let mut policy = policy();
        policy.algorithms.push(Algorithm::PS256);
        let token = mint_with_header(&keys().rsa, &json!({ "alg": "PS256" }), &claims()).unwrap();
        assert!(verify_at(&verifier_with(policy), &set, &token, NOW).is_ok());
    }

    #[test]
    fn alg_none_token_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": "rsa-1" });
            let token = format!("{}.", encode_unsigned(&header, &claims()).unwrap());
            assert_eq!(check(&token).unwrap_err(), AuthError::AlgorithmNotAllowed);
        }
    }

    #[test]
    fn hs256_token_signed_with_the_rsa_public_key_is_refused() {
        let rsa = &keys().rsa;
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": "rsa-1" });
        let n = URL_SAFE_NO_PAD
            .decode(rsa.public_jwk["n"].as_str().unwrap())
            .unwrap();
        let jwk_text = rsa.public_jwk.to_string();
        for secret in [n.as_slice(), jwk_text.as_bytes()] {
            let key = jsonwebtoken::EncodingKey::from_secret(secret);
            let token = encode_with(&header, &claims(), &key, Algorithm::HS256).unwrap();
            assert_eq!(check(&token).unwrap_err(), AuthError::AlgorithmNotAllowed);
        }
    }

    #[test]
    fn policy_with_a_symmetric_algorithm_is_refused() {
        let mut policy = policy();
        policy.algorithms.push(Algorithm::HS256);
        assert_eq!(
            TokenVerifier::new(policy, 10).unwrap_err(),
            PolicyError::SymmetricAlgorithm(Algorithm::HS256)
        );
        let mut empty = self::policy();
        empty.algorithms.clear();
        assert_eq!(
            TokenVerifier::new(empty, 10).unwrap_err(),
            PolicyError::NoAlgorithms
        );
    }

    #[test]
    fn policy_with_an_invalid_header_name_is_refused() {
        let mut policy = policy();
        policy.claims_to_headers = vec![("sub".into(), "X-Auth Subject\r\n".into())];
        assert!(matches!(
            TokenVerifier::new(policy, 10),
            Err(PolicyError::InvalidHeaderName(_))
        ));
    }

    #[test]
    fn algorithm_outside_the_policy_is_refused() {
        let mut policy = policy();
        policy.algorithms = vec![Algorithm::RS256];
        let token = mint(&keys().ec, &claims()).unwrap();
        assert_eq!(
            verify_at(&verifier_with(policy), &all_keys(), &token, NOW).unwrap_err(),
            AuthError::AlgorithmNotAllowed
        );
    }

    #[test]
    fn forged_signature_under_a_known_kid_is_refused() {
        // The attacker's own RSA key, claiming kid rsa-1.
        let forged = mint(&keys().attacker_rsa, &claims()).unwrap();
        assert_eq!(check(&forged).unwrap_err(), AuthError::BadSignature);
        // A genuine token whose payload was swapped.
        let genuine = rsa_token(&claims());
        let evil = rsa_token(&claims_with(json!({ "sub": "root" })));
        let parts: Vec<&str> = genuine.split('.').collect();
        let evil_payload = evil.split('.').nth(1).unwrap();
        let spliced = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(check(&spliced).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn embedded_jwk_header_is_never_used() {
        let attacker = &keys().attacker_rsa;
        let token = mint_with_header(
            attacker,
            &json!({ "kid": null, "jwk": attacker.public_jwk }),
            &claims(),
        )
        .unwrap();
        // No kid: the single RS256 key of the set is used, not the embedded one.
        assert_eq!(check(&token).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn jku_and_x5u_headers_are_ignored() {
        let attacker = &keys().attacker_rsa;
        let urls = json!({
            "kid": "attacker-1",
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": ["MIIB"],
        });
        let token = mint_with_header(attacker, &urls, &claims()).unwrap();
        assert_eq!(check(&token).unwrap_err(), AuthError::UnknownKid);
        let mut under_known_kid = urls;
        under_known_kid["kid"] = json!("rsa-1");
        let token = mint_with_header(attacker, &under_known_kid, &claims()).unwrap();
        assert_eq!(check(&token).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn crit_header_is_refused() {
        for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
            let token = mint_with_header(&keys().rsa, &json!({ "crit": crit }), &claims()).unwrap();
            assert_eq!(check(&token).unwrap_err(), AuthError::CritUnsupported);
        }
    }

    #[test]
    fn rs384_and_ps256_tokens_against_an_rs256_jwk_are_refused() {
        let mut policy = policy();
        policy
            .algorithms
            .extend([Algorithm::RS384, Algorithm::PS256]);
        let verifier = verifier_with(policy);
        for alg in ["RS384", "PS256"] {
            // Genuinely signed by the RS256 key, with the algorithm the header names.
            let token = mint_with_header(&keys().rsa, &json!({ "alg": alg }), &claims()).unwrap();
            assert_eq!(
                verify_at(&verifier, &all_keys(), &token, NOW).unwrap_err(),
                AuthError::NoMatchingKey,
                "{alg}"
            );
        }
    }

    #[test]
    fn expired_token_is_refused_beyond_the_leeway() {
        let token = rsa_token(&claims_with(json!({ "exp": NOW - 31 })));
        assert_eq!(check(&token).unwrap_err(), AuthError::Expired);
        let token = rsa_token(&claims_with(json!({ "exp": NOW - 30 })));
        assert_eq!(check(&token).unwrap_err(), AuthError::Expired);
        let within_leeway = rsa_token(&claims_with(json!({ "exp": NOW - 29 })));
        assert!(check(&within_leeway).is_ok());
    }

    #[test]
    fn token_without_exp_is_refused() {
        let token = rsa_token(&claims_with(json!({ "exp": null })));
        assert_eq!(check(&token).unwrap_err(), AuthError::MissingExp);
    }

    #[test]
    fn non_numeric_time_claims_are_refused() {
        for claim in ["exp", "nbf", "iat"] {
            let mut change = Map::new();
            change.insert(claim.to_owned(), json!("soon"));
            let token = rsa_token(&claims_with(Value::Object(change)));
            assert!(
                matches!(check(&token), Err(AuthError::InvalidClaim { claim: c }) if c == claim),
                "{claim}"
            );
        }
        let negative = rsa_token(&claims_with(json!({ "nbf": -5 })));
        assert!(matches!(
            check(&negative),
            Err(AuthError::InvalidClaim { .. })
        ));
        let fractional = rsa_token(&claims_with(json!({ "exp": (NOW + 60) as f64 + 0.5 })));
        assert_eq!(check(&fractional).unwrap().exp, NOW + 60);
    }

    #[test]
    fn token_not_yet_valid_is_refused() {
        let token = rsa_token(&claims_with(json!({ "nbf": NOW + 31 })));
        assert_eq!(check(&token).unwrap_err(), AuthError::NotYetValid);
        let within_leeway = rsa_token(&claims_with(json!({ "nbf": NOW + 30 })));
        assert!(check(&within_leeway).is_ok());
    }

    #[test]
    fn token_issued_in_the_future_is_refused() {
        let token = rsa_token(&claims_with(json!({ "iat": NOW + 31 })));
        assert_eq!(check(&token).unwrap_err(), AuthError::IssuedInFuture);
        let within_leeway = rsa_token(&claims_with(json!({ "iat": NOW + 30 })));
        assert!(check(&within_leeway).is_ok());
    }

    #[test]
    fn wrong_issuer_is_refused() {
        for iss in [
            json!("https://evil.example/"),
            json!("https://idp.example.com"),
            json!([ISSUER]),
        ] {
            let token = rsa_token(&claims_with(json!({ "iss": iss })));
            assert_eq!(check(&token).unwrap_err(), AuthError::WrongIssuer, "{iss}");
        }
    }

    #[test]
    fn missing_issuer_is_refused_when_configured() {
        let token = rsa_token(&claims_with(json!({ "iss": null })));
        assert_eq!(check(&token).unwrap_err(), AuthError::MissingIssuer);
        let mut no_issuer = policy();
        no_issuer.issuer = None;
        assert!(verify_at(&verifier_with(no_issuer), &all_keys(), &token, NOW).is_ok());
    }

    #[test]
    fn missing_audience_is_refused_when_configured() {
        let token = rsa_token(&claims_with(json!({ "aud": null })));
        assert_eq!(check(&token).unwrap_err(), AuthError::MissingAudience);
        let mut no_audience = policy();
        no_audience.audiences.clear();
        assert!(verify_at(&verifier_with(no_audience), &all_keys(), &token, NOW).is_ok());
    }

    #[test]
    fn wrong_or_non_string_audience_is_refused() {
        for aud in [
            json!("other-api"),
            json!(["other-api"]),
            json!(42),
            json!({ "aud": "upload-api" }),
            json!(["upload-api", 42]),
            json!([]),
        ] {
            let token = rsa_token(&claims_with(json!({ "aud": aud })));
            assert_eq!(
                check(&token).unwrap_err(),
                AuthError::WrongAudience,
                "{aud}"
            );
        }
    }

    #[test]
    fn audience_array_with_a_configured_value_is_accepted() {
        let token = rsa_token(&claims_with(json!({ "aud": ["other-api", "upload-api"] })));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn lifetime_over_the_cap_is_refused() {
        let token = rsa_token(&claims_with(json!({ "iat": NOW, "exp": NOW + 86_401 })));
        assert_eq!(check(&token).unwrap_err(), AuthError::LifetimeTooLong);
        let at_cap = rsa_token(&claims_with(json!({ "iat": NOW, "exp": NOW + 86_400 })));
        assert!(check(&at_cap).is_ok());
        // Without iat, the remaining lifetime counts.
        let no_iat = rsa_token(&claims_with(json!({ "iat": null, "exp": NOW + 86_401 })));
        assert_eq!(check(&no_iat).unwrap_err(), AuthError::LifetimeTooLong);
    }

    #[test]
    fn oversized_token_is_refused_before_decoding() {
        // Validly signed, but over 8 KiB because of a huge claim.
        let big = rsa_token(&claims_with(json!({ "pad": "x".repeat(MAX_TOKEN_BYTES) })));
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(check(&big).unwrap_err(), AuthError::TooLarge);
        // Not decodable at all: still TooLarge, so nothing was decoded.
        let garbage = "!".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(check(&garbage).unwrap_err(), AuthError::TooLarge);
        let at_limit = "!".repeat(MAX_TOKEN_BYTES);
        assert_eq!(check(&at_limit).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn token_without_kid_is_accepted_when_one_key_fits() {
        let token = mint_with_header(&keys().rsa, &json!({ "kid": null }), &claims()).unwrap();
        let verified = check(&token).unwrap();
        assert_eq!(verified.kid(), Some("rsa-1"));
    }

    #[test]
    fn token_without_kid_is_refused_when_two_keys_fit() {
        let k = keys();
        let token = mint_with_header(&k.rsa, &json!({ "kid": null }), &claims()).unwrap();
        let two_rsa = key_set(&[&k.rsa, &k.rsa2]);
        assert_eq!(
            verify_at(&verifier(), &two_rsa, &token, NOW).unwrap_err(),
            AuthError::AmbiguousKey
        );
    }

    #[test]
    fn unknown_kid_asks_for_a_key_refresh() {
        let token = mint_with_header(&keys().rsa, &json!({ "kid": "rsa-9" }), &claims()).unwrap();
        let error = check(&token).unwrap_err();
        assert_eq!(error, AuthError::UnknownKid);
        assert!(error.wants_key_refresh());
        assert_eq!(error.reason(), "unknown_kid");
        assert!(!AuthError::BadSignature.wants_key_refresh());
        assert!(!AuthError::NoMatchingKey.wants_key_refresh());
    }

    #[test]
    fn missing_scope_is_insufficient_scope() {
        let mut policy = policy();
        policy.required_scopes = vec!["uploads:write".into(), "uploads:finish".into()];
        let token = rsa_token(&claims());
        let error = verify_at(&verifier_with(policy), &all_keys(), &token, NOW).unwrap_err();
        assert_eq!(error, AuthError::InsufficientScope);
        assert_eq!(error.www_authenticate_error(), "insufficient_scope");
        assert_eq!(AuthError::Expired.www_authenticate_error(), "invalid_token");
    }

    #[test]
    fn scope_string_and_scp_array_grant_scopes() {
        let mut policy = policy();
        policy.required_scopes = vec!["uploads:write".into(), "profile".into()];
        let verifier = verifier_with(policy);
        let keys = all_keys();
        let scope = rsa_token(&claims());
        assert!(verify_at(&verifier, &keys, &scope, NOW).is_ok());
        let scp = rsa_token(&claims_with(
            json!({ "scope": null, "scp": ["profile", "uploads:write"] }),
        ));
        assert!(verify_at(&verifier, &keys, &scp, NOW).is_ok());
        let partial = rsa_token(&claims_with(
            json!({ "scope": "uploads:write", "scp": ["uploads"] }),
        ));
        assert_eq!(
            verify_at(&verifier, &keys, &partial, NOW).unwrap_err(),
            AuthError::InsufficientScope
        );
        let prefix_only = rsa_token(&claims_with(json!({ "scope": "uploads:writer profile" })));
        assert_eq!(
            verify_at(&verifier, &keys, &prefix_only, NOW).unwrap_err(),
            AuthError::InsufficientScope
        );
    }

    #[test]
    fn cache_hit_skips_verification_but_rejects_once_expired() {
        let verifier = verifier();
        let token = rsa_token(&claims());
        let first = verify_at(&verifier, &all_keys(), &token, NOW).unwrap();
        // The same shared result and the hit counter prove a cache hit.
        let hit = verify_at(&verifier, &all_keys(), &token, NOW + 100).unwrap();
        assert!(Arc::ptr_eq(&first, &hit));
        let stats = verifier.cache_stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
        assert_eq!(
            verify_at(&verifier, &all_keys(), &token, NOW + 600 + 30).unwrap_err(),
            AuthError::Expired
        );
    }

    #[test]
    fn cache_hit_rechecks_nbf() {
        let verifier = verifier();
        let token = rsa_token(&claims_with(json!({ "nbf": NOW - 5 })));
        verify_at(&verifier, &all_keys(), &token, NOW).unwrap();
        // The clock stepped back: the cached token is not valid yet.
        assert_eq!(
            verify_at(&verifier, &all_keys(), &token, NOW - 100).unwrap_err(),
            AuthError::NotYetValid
        );
    }

    #[test]
    fn retain_keys_drops_entries_of_a_removed_kid() {
        let k = keys();
        let verifier = verifier();
        let rsa = rsa_token(&claims());
        let ec = mint(&k.ec, &claims()).unwrap();
        let no_kid = mint_with_header(&k.ed, &json!({ "kid": null }), &claims()).unwrap();
        let all = all_keys();
        for token in [&rsa, &ec, &no_kid] {
            verify_at(&verifier, &all, token, NOW).unwrap();
        }
        // rsa-1 left the set; ed-1 left too, which drops the kid-less EdDSA token.
        let remaining = key_set(&[&k.ec]);
        verifier.retain_keys(&remaining);
        assert_eq!(
            verify_at(&verifier, &remaining, &rsa, NOW).unwrap_err(),
            AuthError::UnknownKid
        );
        assert_eq!(
            verify_at(&verifier, &remaining, &no_kid, NOW).unwrap_err(),
            AuthError::NoMatchingKey
        );
        assert!(verify_at(&verifier, &remaining, &ec, NOW).is_ok());
    }

    #[test]
    fn cached_token_is_refused_once_its_key_left_the_set_even_without_a_sweep() {
        // A token verified against the old set while a refresh swapped in the new one can be
        // inserted after `retain_keys` ran: the hit itself must notice the key is gone.
        let k = keys();
        let verifier = verifier();
        let token = rsa_token(&claims());
        verify_at(&verifier, &all_keys(), &token, NOW).unwrap();
        let without_rsa = key_set(&[&k.ec, &k.ed]);
        assert_eq!(
            verify_at(&verifier, &without_rsa, &token, NOW).unwrap_err(),
            AuthError::UnknownKid
        );
        assert_eq!(verifier.cache_stats().hits, 1);
    }

    #[test]
    fn a_hit_under_a_reparsed_identical_set_reselects_the_key_and_still_hits() {
        let verifier = verifier();
        let token = rsa_token(&claims());
        let (first_set, second_set) = (all_keys(), all_keys());
        assert_ne!(first_set.generation(), second_set.generation());
        let first = verify_at(&verifier, &first_set, &token, NOW).unwrap();
        let same_set = verify_at(&verifier, &first_set, &token, NOW).unwrap();
        let reparsed = verify_at(&verifier, &second_set, &token, NOW).unwrap();
        assert!(Arc::ptr_eq(&first, &same_set) && Arc::ptr_eq(&first, &reparsed));
        assert_eq!(verifier.cache_stats().hits, 2);
        // After an identical refresh the sweep keeps the entry.
        verifier.retain_keys(&second_set);
        assert_eq!(verifier.cache_stats().entries, 1);
    }

    #[test]
    fn retain_keys_drops_entries_when_a_kid_is_reused_for_another_key() {
        let k = keys();
        let verifier = verifier();
        let token = rsa_token(&claims());
        verify_at(&verifier, &all_keys(), &token, NOW).unwrap();
        let mut rotated = k.rsa2.public_jwk.clone();
        rotated["kid"] = json!("rsa-1");
        let jwks = json!({ "keys": [rotated] }).to_string();
        let (set, _) = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
        verifier.retain_keys(&set);
        assert_eq!(
            verify_at(&verifier, &set, &token, NOW).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn claims_to_headers_forward_scalars_only() {
        let mut policy = policy();
        policy.claims_to_headers = vec![
            ("sub".into(), "X-Auth-Subject".into()),
            ("tenant".into(), "X-Tenant".into()),
            ("admin".into(), "X-Admin".into()),
            ("ratio".into(), "X-Ratio".into()),
            ("groups".into(), "X-Groups".into()),
            ("profile".into(), "X-Profile".into()),
            ("gone".into(), "X-Gone".into()),
            ("nothing".into(), "X-Nothing".into()),
            ("evil".into(), "X-Evil".into()),
        ];
        let token = rsa_token(&claims_with(json!({
            "tenant": 42,
            "admin": false,
            "ratio": 0.5,
            "groups": ["a", "b"],
            "profile": { "name": "A" },
            "nothing": null,
            "evil": "x\r\nX-Injected: 1",
        })));
        let verified = verify_at(&verifier_with(policy), &all_keys(), &token, NOW).unwrap();
        let expected: Vec<(String, String)> = [
            ("X-Auth-Subject", "alice"),
            ("X-Tenant", "42"),
            ("X-Admin", "false"),
            ("X-Ratio", "0.5"),
        ]
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
        let got: Vec<(String, String)> = verified
            .upstream_headers()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_owned()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn bearer_scheme_is_parsed_strictly_but_case_insensitively() {
        let verifier = verifier();
        let keys = all_keys();
        let token = rsa_token(&claims());
        let verify = |value: &str| verifier.verify(&keys, Some(value.as_bytes()), NOW);
        assert_eq!(
            verifier.verify(&keys, None, NOW).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(verify("").unwrap_err(), AuthError::Missing);
        assert_eq!(verify("  ").unwrap_err(), AuthError::Missing);
        assert_eq!(
            verify(&format!("Basic {token}")).unwrap_err(),
            AuthError::NotBearer
        );
        assert_eq!(
            verify(&format!("Bearer{token}")).unwrap_err(),
            AuthError::NotBearer
        );
        assert_eq!(verify("Bearer").unwrap_err(), AuthError::Malformed);
        assert_eq!(verify("Bearer   ").unwrap_err(), AuthError::Malformed);
        assert_eq!(
            verify(&format!("Bearer {token} {token}")).unwrap_err(),
            AuthError::Malformed
        );
        assert!(verify(&format!("bearer {token}")).is_ok());
        assert!(verify(&format!("BEARER {token}")).is_ok());
        assert!(verify(&format!(" \tBearer  {token}\t ")).is_ok());
    }

    #[test]
    fn a_payload_naming_a_claim_twice_is_refused() {
        let k = keys();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"rsa-1"}"#);
        for twice in [
            r#""tenant":"t1","tenant":"t2""#,
            r#""sub":"a","s\u0075b":"b""#,
        ] {
            let payload = format!(
                r#"{{"iss":"{ISSUER}","aud":"upload-api","iat":{},"exp":{},{twice}}}"#,
                NOW - 10,
                NOW + 600
            );
            let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &k.rsa.encoding_key,
                Algorithm::RS256,
            )
            .unwrap();
            assert_eq!(
                check(&format!("{message}.{signature}")).unwrap_err(),
                AuthError::Malformed,
                "{twice}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let token = rsa_token(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let not_json = URL_SAFE_NO_PAD.encode(b"not json");
        let bad_kid = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":7}"#);
        let duplicate_alg =
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","alg":"RS256","kid":"rsa-1"}"#);
        for bad in [
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.{}", parts[2]),
            format!(".{}.{}", parts[1], parts[2]),
            format!("{}..{}", parts[0], parts[2]),
            format!("{not_json}.{}.{}", parts[1], parts[2]),
            format!("{bad_kid}.{}.{}", parts[1], parts[2]),
            format!("{duplicate_alg}.{}.{}", parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}+", parts[0], parts[1], parts[2]),
            format!("{}.{}.A", parts[0], parts[1]),
            format!("{}.{}.é", parts[0], parts[1]),
        ] {
            assert_eq!(check(&bad).unwrap_err(), AuthError::Malformed, "{bad}");
        }
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(check(&unsigned).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn claims_that_are_not_an_object_are_refused() {
        let header = json!({ "alg": "RS256", "kid": "rsa-1" });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode("[1,2]")
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &keys().rsa.encoding_key,
            Algorithm::RS256,
        )
        .unwrap();
        assert_eq!(
            check(&format!("{message}.{signature}")).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let verifier = verifier();
        let keys = all_keys();
        let token = rsa_token(&claims()).into_bytes();
        // Deterministic mutations: flip, drop and duplicate bytes all over a valid token.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut mutated = token.clone();
            let at = (state as usize) % mutated.len();
            match state % 3 {
                0 => mutated[at] = (state >> 8) as u8,
                1 => {
                    mutated.remove(at);
                }
                _ => mutated.insert(at, mutated[at]),
            }
            let mut header = b"Bearer ".to_vec();
            header.extend_from_slice(&mutated);
            let _ = verifier.verify(&keys, Some(&header), NOW);
        }
    }

    #[test]
    fn error_display_never_contains_the_token() {
        let forged = mint(&keys().attacker_rsa, &claims()).unwrap();
        let error = check(&forged).unwrap_err();
        for part in forged.split('.') {
            assert!(!error.to_string().contains(part));
            assert!(!format!("{error:?}").contains(part));
        }
    }

    /// Cache-hit cost; run with
    /// `cargo test --release -- --ignored cache_hit_cost --nocapture`.
    #[test]
    #[ignore]
    fn cache_hit_cost() {
        let verifier = verifier();
        let keys = all_keys();
        let header = format!("Bearer {}", rsa_token(&claims()));
        verifier
            .verify(&keys, Some(header.as_bytes()), NOW)
            .unwrap();
        let rounds = 200_000;
        let started = Instant::now();
        for _ in 0..rounds {
            verifier
                .verify(&keys, Some(header.as_bytes()), NOW)
                .unwrap();
        }
        let per_hit = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..200 {
            if let Some(cache) = &verifier.cache {
                cache.remove(&fingerprint(&header.as_bytes()[7..]));
            }
            verifier
                .verify(&keys, Some(header.as_bytes()), NOW)
                .unwrap();
        }
        let per_miss = started.elapsed() / 200;
        println!(
            "token {} bytes: hit {per_hit:?}, miss (RS256) {per_miss:?}",
            header.len() - 7
        );
    }
}
