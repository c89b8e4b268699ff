//! End to end: bearer tokens against a real JWKS server on loopback (SPEC §4.4). Every refused
//! case also checks that the upstream never saw the request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use upload_gateway::demo::issuer::Issuer;
use upload_gateway::demo::issuer_keys::{
    encode_unsigned, encode_with, mint, mint_with_header, SigningKey,
};
use upload_gateway::demo::upload_service::UploadService;
use upload_gateway::jwks::unix_now;

struct Setup {
    service: UploadService,
    issuer: Issuer,
    gateway: Gateway,
}

async fn setup_with(keys: Vec<SigningKey>, max_age_s: u64, auth_extra: &str) -> Setup {
    let service = upload_service().await;
    let issuer = issuer_with(keys, max_age_s).await;
    let config = GatewayConfig::new(vec![service.addr()], &issuer).with("auth", auth_extra);
    let gateway = Gateway::start(&config);
    Setup {
        service,
        issuer,
        gateway,
    }
}

async fn setup() -> Setup {
    setup_with(vec![rsa_key("k1")], 300, "").await
}

impl Setup {
    fn claims(&self) -> Value {
        self.issuer.claims("alice", AUDIENCE, 3600)
    }

    async fn call(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut request = client()
            .put(self.gateway.url(&finish_path()))
            .header("content-type", "application/json")
            .body(r#"{"upload":{"nb_chunks":1}}"#);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.unwrap()
    }

    async fn status_with(&self, token: &str) -> u16 {
        self.call(Some(&format!("Bearer {token}")))
            .await
            .status()
            .as_u16()
    }

    /// Asserts a 403 with the catalogue envelope and challenge, and no upstream contact.
    async fn assert_refused(&self, token: &str) {
        let resp = self.call(Some(&format!("Bearer {token}"))).await;
        assert_eq!(resp.status(), 403);
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":{"error_code":"0x0000003","error_message":"Invalid access token"}}"#
        );
        assert!(
            self.service.received().is_empty(),
            "the upstream saw a refused token"
        );
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn with_claim(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without_claim(mut claims: Value, name: &str) -> Value {
    if let Some(object) = claims.as_object_mut() {
        object.remove(name);
    }
    claims
}

/// Waits until the issuer has served more than `count` JWKS requests.
async fn wait_for_fetch_beyond(issuer: &Issuer, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetch_count() <= count {
        assert!(Instant::now() < deadline, "no JWKS refresh happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the gateway install what it fetched.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_rs256_es256_and_eddsa_tokens_are_accepted() {
    let rsa = rsa_key("rsa");
    let ec = SigningKey::generate(Algorithm::ES256, "ec").unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed").unwrap();
    let s = setup_with(vec![rsa.clone(), ec.clone(), ed.clone()], 300, "").await;
    for key in [&rsa, &ec, &ed] {
        let token = mint(key, &s.claims()).unwrap();
        assert_eq!(s.status_with(&token).await, 200, "{:?}", key.alg);
    }
    assert_eq!(s.service.received().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_non_bearer_authorization_is_refused_and_scheme_is_case_insensitive() {
    let s = setup().await;
    assert_eq!(s.call(None).await.status(), 403);
    let token = s.issuer.mint(&s.claims()).unwrap();
    assert_eq!(s.call(Some(&format!("Basic {token}"))).await.status(), 403);
    assert!(s.service.received().is_empty());
    assert_eq!(s.call(Some(&format!("bEARER {token}"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn alg_none_token_is_refused() {
    let s = setup().await;
    let unsigned = encode_unsigned(
        &json!({"alg": "none", "typ": "JWT", "kid": "k1"}),
        &s.claims(),
    )
    .unwrap();
    s.assert_refused(&format!("{unsigned}.")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let key = rsa_key("k1");
    let s = setup_with(vec![key.clone()], 300, "").await;
    // The classic confusion attack: the public key material used as an HMAC secret.
    let public = serde_json::to_vec(&key.public_jwk).unwrap();
    let n = key.public_jwk["n"].as_str().unwrap().as_bytes().to_vec();
    for secret in [public, n] {
        let token = encode_with(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
            &s.claims(),
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
        )
        .unwrap();
        s.assert_refused(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_signature_under_a_known_kid_is_refused() {
    let s = setup().await;
    let attacker = rsa_key("k1");
    s.assert_refused(&mint(&attacker, &s.claims()).unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_jwk_header_is_never_trusted() {
    let s = setup().await;
    let attacker = rsa_key("attacker");
    for kid in [Value::Null, json!("attacker"), json!("k1")] {
        let token = mint_with_header(
            &attacker,
            &json!({"jwk": attacker.public_jwk, "kid": kid}),
            &s.claims(),
        )
        .unwrap();
        s.assert_refused(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jku_and_x5u_pointing_at_an_attacker_server_are_never_contacted() {
    let s = setup().await;
    let attacker_key = rsa_key("attacker");
    let attacker = issuer_with(vec![attacker_key.clone()], 300).await;
    let token = mint_with_header(
        &attacker_key,
        &json!({"jku": attacker.jwks_url(), "x5u": attacker.jwks_url()}),
        &s.claims(),
    )
    .unwrap();
    s.assert_refused(&token).await;
    assert_eq!(attacker.fetch_count(), 0, "the attacker's JWKS was fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_with_crit_header_is_refused() {
    let key = rsa_key("k1");
    let s = setup_with(vec![key.clone()], 300, "").await;
    let token = mint_with_header(&key, &json!({"crit": ["exp"]}), &s.claims()).unwrap();
    s.assert_refused(&token).await;
    // The same token without crit is fine: the refusal is about crit, not the signature.
    assert_eq!(s.status_with(&mint(&key, &s.claims()).unwrap()).await, 200);
}

/// A 1024-bit RSA key (test fixture) signing RS256 outside aws-lc-rs, which refuses such keys.
fn sign_rs256_with_1024_bit_key(kid: &str, claims: &Value) -> (Value, String) {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    let private = rsa::RsaPrivateKey::from_pkcs1_pem(include_str!("fixtures/rsa1024.pem")).unwrap();
    let jwk = json!({
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be()),
    });
    let message =
        encode_unsigned(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), claims).unwrap();
    let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(private);
    let signature = signer.sign(message.as_bytes()).to_bytes();
    (jwk, format!("{message}.{}", b64(&signature)))
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_key_under_2048_bits_is_skipped() {
    let s = setup().await;
    let (jwk, token) = sign_rs256_with_1024_bit_key("small", &s.claims());
    // Publish the small key beside the good one: the set loads, the small key is unusable.
    let keys_json = json!({"keys": [jwk, rsa_key("k1").public_jwk]});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), keys_json.to_string()).unwrap();
    let service = upload_service().await;
    let mut config = GatewayConfig::new(vec![service.addr()], &s.issuer);
    config.jwks_url = String::new();
    let config = config.with(
        "auth",
        &format!("jwks_file = \"{}\"", file.path().display()),
    );
    let gateway = Gateway::start(&config);
    let resp = client()
        .put(gateway.url(&finish_path()))
        .bearer_auth(&token)
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(service.received().is_empty());
    let logs = gateway.stop_and_logs();
    assert!(logs.contains("jwks key skipped"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn encryption_key_is_not_used_for_signatures() {
    let mut enc = rsa_key("enc");
    enc.public_jwk["use"] = json!("enc");
    let s = setup_with(vec![rsa_key("k1"), enc.clone()], 300, "").await;
    s.assert_refused(&mint(&enc, &s.claims()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rs384_and_ps256_tokens_against_an_rs256_jwk_are_refused() {
    let key = rsa_key("k1");
    let s = setup_with(
        vec![key.clone()],
        300,
        "algorithms = [\"RS256\", \"RS384\", \"PS256\"]",
    )
    .await;
    for alg in ["RS384", "PS256"] {
        let token = mint_with_header(&key, &json!({"alg": alg}), &s.claims()).unwrap();
        s.assert_refused(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refused() {
    let s = setup().await;
    let now = unix_now();
    let claims = with_claim(s.claims(), "exp", json!(now - 120));
    let claims = with_claim(claims, "iat", json!(now - 600));
    let claims = with_claim(claims, "nbf", json!(now - 600));
    s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_without_exp_is_refused() {
    let s = setup().await;
    let claims = without_claim(s.claims(), "exp");
    s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_yet_valid_token_is_refused() {
    let s = setup().await;
    let claims = with_claim(s.claims(), "nbf", json!(unix_now() + 600));
    s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_issued_in_the_future_is_refused() {
    let s = setup().await;
    let claims = with_claim(s.claims(), "iat", json!(unix_now() + 600));
    let claims = without_claim(claims, "nbf");
    s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_issuer_is_refused() {
    let s = setup().await;
    for claims in [
        with_claim(s.claims(), "iss", json!("https://evil.example/")),
        without_claim(s.claims(), "iss"),
        with_claim(s.claims(), "iss", json!(42)),
    ] {
        s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_wrong_or_non_string_audience_is_refused() {
    let s = setup().await;
    for claims in [
        without_claim(s.claims(), "aud"),
        with_claim(s.claims(), "aud", json!("other-api")),
        with_claim(s.claims(), "aud", json!([1, 2])),
    ] {
        s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
    }
    let listed = with_claim(s.claims(), "aud", json!(["other", AUDIENCE]));
    assert_eq!(s.status_with(&s.issuer.mint(&listed).unwrap()).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_over_the_cap_is_refused() {
    let s = setup_with(vec![rsa_key("k1")], 300, "max_token_lifetime_s = 3600").await;
    let claims = with_claim(s.claims(), "exp", json!(unix_now() + 7200));
    s.assert_refused(&s.issuer.mint(&claims).unwrap()).await;
    let without_iat = without_claim(claims, "iat");
    s.assert_refused(&s.issuer.mint(&without_iat).unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_token_is_refused() {
    let s = setup().await;
    let claims = with_claim(s.claims(), "pad", json!("p".repeat(9000)));
    let token = s.issuer.mint(&claims).unwrap();
    assert!(token.len() > 8192);
    s.assert_refused(&token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_without_kid_needs_exactly_one_fitting_key() {
    let k1 = rsa_key("k1");
    let single = setup_with(vec![k1.clone()], 300, "").await;
    let token = mint_with_header(&k1, &json!({"kid": null}), &single.claims()).unwrap();
    assert_eq!(single.status_with(&token).await, 200);

    let k2 = rsa_key("k2");
    let double = setup_with(vec![k1.clone(), k2], 300, "").await;
    let token = mint_with_header(&k1, &json!({"kid": null}), &double.claims()).unwrap();
    double.assert_refused(&token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_key_is_accepted_without_restart_after_exactly_one_fetch() {
    let k1 = rsa_key("k1");
    let s = setup_with(vec![k1.clone()], 3600, "").await;
    let fetches_before = s.issuer.fetch_count();
    let k2 = rsa_key("k2");
    s.issuer.set_keys(vec![k1, k2.clone()]);
    let token = mint(&k2, &s.claims()).unwrap();
    assert_eq!(s.status_with(&token).await, 200);
    assert_eq!(s.issuer.fetch_count(), fetches_before + 1);
    assert_eq!(s.status_with(&token).await, 200);
    assert_eq!(s.issuer.fetch_count(), fetches_before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let s = setup_with(vec![rsa_key("k1")], 3600, "unknown_kid_cooldown_s = 60").await;
    let fetches_before = s.issuer.fetch_count();
    let attacker = rsa_key("x");
    let claims = s.claims();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let token =
            mint_with_header(&attacker, &json!({"kid": format!("random-{i}")}), &claims).unwrap();
        let url = s.gateway.url(&finish_path());
        tasks.push(tokio::spawn(async move {
            client()
                .put(url)
                .bearer_auth(token)
                .body(r#"{"upload":{"nb_chunks":1}}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 403);
    }
    assert!(
        s.issuer.fetch_count() <= fetches_before + 1,
        "{} fetches for one cooldown",
        s.issuer.fetch_count() - fetches_before
    );
    assert!(s.service.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn idp_outage_after_start_keeps_the_last_good_key_set() {
    let s = setup_with(vec![rsa_key("k1")], 1, "jwks_min_refresh_s = 1").await;
    s.issuer.set_available(false);
    let fetches = s.issuer.fetch_count();
    wait_for_fetch_beyond(&s.issuer, fetches).await;
    // A token never seen before, so the verified-token cache cannot be what answers.
    let fresh = s
        .issuer
        .mint(&s.issuer.claims("bob", AUDIENCE, 1800))
        .unwrap();
    assert_eq!(s.status_with(&fresh).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn idp_outage_at_start_answers_503_then_recovers() {
    let service = upload_service().await;
    let issuer = issuer().await;
    issuer.set_available(false);
    let config = GatewayConfig::new(vec![service.addr()], &issuer);
    let mut gateway = Gateway::spawn(&config, &[]);
    gateway.wait_listening();
    let token = token(&issuer);
    let put = || {
        client()
            .put(gateway.url(&finish_path()))
            .bearer_auth(&token)
            .body(r#"{"upload":{"nb_chunks":1}}"#)
            .send()
    };
    let resp = put().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"error_code":"0x0000001","error_message":"Internal Error"}}"#
    );
    let ready = http_get_blocking(gateway.admin, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(service.received().is_empty());

    issuer.set_available(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = put().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = http_get_blocking(gateway.admin, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_key_tokens_are_refused_after_the_next_refresh_even_when_cached() {
    let k1 = rsa_key("k1");
    let k2 = rsa_key("k2");
    let s = setup_with(vec![k1.clone(), k2.clone()], 1, "jwks_min_refresh_s = 1").await;
    let token = mint(&k2, &s.claims()).unwrap();
    assert_eq!(s.status_with(&token).await, 200);
    s.issuer.set_keys(vec![k1]);
    let fetches = s.issuer.fetch_count();
    wait_for_fetch_beyond(&s.issuer, fetches).await;
    let resp = s.call(Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(s.service.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_required_scope_is_refused_with_insufficient_scope() {
    let s = setup_with(
        vec![rsa_key("k1")],
        300,
        "required_scopes = [\"upload:write\"]",
    )
    .await;
    let token = s.issuer.mint(&s.claims()).unwrap();
    let resp = s.call(Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="insufficient_scope""#
    );
    assert!(s.service.received().is_empty());
    for claims in [
        with_claim(s.claims(), "scope", json!("read upload:write")),
        with_claim(s.claims(), "scp", json!(["upload:write"])),
    ] {
        assert_eq!(s.status_with(&s.issuer.mint(&claims).unwrap()).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_headers_come_from_the_token_never_from_the_client() {
    let s = setup_with(
        vec![rsa_key("k1")],
        300,
        "forward_token = false\nclaims_to_headers = { sub = \"X-Auth-Subject\" }",
    )
    .await;
    let token = s.issuer.mint(&s.claims()).unwrap();
    let resp = client()
        .put(s.gateway.url(&finish_path()))
        .bearer_auth(&token)
        .header("x-auth-subject", "mallory")
        .header("x_auth_subject", "mallory")
        .header("X_Auth-Subject", "mallory")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = &s.service.received()[0];
    let subjects: Vec<_> = upstream.headers.get_all("x-auth-subject").iter().collect();
    assert_eq!(subjects, ["alice"]);
    let names: Vec<_> = upstream.headers.keys().map(|k| k.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.contains('_')),
        "an underscore spelling of the identity header reached the upstream: {names:?}"
    );
    assert!(upstream.headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn public_paths_need_no_token() {
    let s = setup().await;
    let resp = client()
        .get(s.gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.service.received()[0].uri.path(), "/healthz");
    let other = client()
        .get(s.gateway.url("/healthz/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
}
