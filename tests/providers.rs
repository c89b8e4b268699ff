//! End to end: several identity providers (SPEC §4.9) against real issuers on loopback that
//! serve JWKS and OpenID discovery documents over HTTP: two providers side by side, colliding
//! `kid`s, unknown issuers, discovery (mismatch, issuers with a path), one IdP down at start,
//! rotation in one provider while the other serves, and jittered refreshes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    client, finish_call, finish_path, http_get_blocking, issuer_with, loopback, rsa_key,
    upload_service, Gateway, GatewayConfig, AUDIENCE,
};
use upload_gateway::demo::issuer::Issuer;
use upload_gateway::demo::issuer_keys::{mint, SigningKey};
use upload_gateway::demo::upload_service::UploadService;

fn token_of(issuer: &Issuer, subject: &str) -> String {
    issuer
        .mint(&issuer.claims(subject, AUDIENCE, 3600))
        .unwrap()
}

/// A `[[auth.providers]]` table. `jwks_url` empty: found by discovery.
fn provider(name: &str, issuer: &str, jwks_url: &str, header: &str) -> String {
    format!(
        "[[auth.providers]]\nname = \"{name}\"\nissuer = \"{issuer}\"\njwks_url = \"{jwks_url}\"\n\
         audiences = [\"{AUDIENCE}\"]\nclaims_to_headers = {{ sub = \"{header}\" }}\n"
    )
}

async fn put(gateway: &Gateway, token: &str) -> reqwest::Response {
    finish_call(&client(), gateway.url(&finish_path()), token)
        .send()
        .await
        .unwrap()
}

fn last_header(service: &UploadService, name: &str) -> Option<String> {
    service
        .received()
        .last()
        .and_then(|r| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned()))
}

async fn scrape(gateway: &Gateway) -> String {
    reqwest::get(gateway.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_providers_each_verify_their_own_tokens() {
    let service = upload_service().await;
    let corp = issuer_with(vec![rsa_key("corp-1")], 300).await;
    let partner = issuer_with(vec![rsa_key("partner-1")], 300).await;
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        // No jwks_url: found by OpenID discovery from the issuer.
        provider("partner", &partner.issuer, "", "X-Partner-Subject"),
    ));
    let gateway = Gateway::start(&config);

    let answer = put(&gateway, &token_of(&corp, "alice")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        last_header(&service, "x-corp-subject").as_deref(),
        Some("alice")
    );

    // A client forging the other provider's identity header loses it.
    let answer = finish_call(
        &client(),
        gateway.url(&finish_path()),
        &token_of(&corp, "alice"),
    )
    .header("X-Partner-Subject", "mallory")
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(last_header(&service, "x-partner-subject"), None);

    let answer = put(&gateway, &token_of(&partner, "bob")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        last_header(&service, "x-partner-subject").as_deref(),
        Some("bob")
    );
    assert_eq!(last_header(&service, "x-corp-subject"), None);
    assert!(partner.discovery_count() >= 1, "partner was not discovered");

    // A refusal is labelled with the provider whose token it was.
    let expired = partner
        .mint(&serde_json::json!({
            "iss": partner.issuer, "sub": "bob", "aud": AUDIENCE,
            "iat": 1_000_000_000u64, "exp": 1_000_000_600u64,
        }))
        .unwrap();
    assert_eq!(put(&gateway, &expired).await.status(), 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = scrape(&gateway).await;
    assert!(
        metrics.contains(
            "upload_gateway_auth_failures_total{provider=\"partner\",reason=\"expired\"} 1"
        ),
        "{metrics}"
    );
    for name in ["corp", "partner"] {
        assert!(
            metrics.contains(&format!(
                "upload_gateway_jwks_fetches_total{{outcome=\"ok\",provider=\"{name}\"}}"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "upload_gateway_jwks_key_set_age_seconds{{provider=\"{name}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn colliding_kids_never_let_one_providers_key_verify_anothers_issuer() {
    let service = upload_service().await;
    let corp_key = rsa_key("shared-kid");
    let partner_key = rsa_key("shared-kid");
    let corp = issuer_with(vec![corp_key.clone()], 300).await;
    let partner = issuer_with(vec![partner_key.clone()], 300).await;
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        provider(
            "partner",
            &partner.issuer,
            &partner.jwks_url(),
            "X-Partner-Subject"
        ),
    ));
    let gateway = Gateway::start(&config);
    assert_eq!(put(&gateway, &token_of(&corp, "alice")).await.status(), 200);
    assert_eq!(
        put(&gateway, &token_of(&partner, "bob")).await.status(),
        200
    );

    // Whoever holds the partner's key claims to be corp: same kid, the other provider's key.
    let forged = mint(&partner_key, &corp.claims("mallory", AUDIENCE, 3600)).unwrap();
    let answer = put(&gateway, &forged).await;
    assert_eq!(answer.status(), 403);
    assert!(answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    // And the other way round.
    let forged = mint(&corp_key, &partner.claims("mallory", AUDIENCE, 3600)).unwrap();
    assert_eq!(put(&gateway, &forged).await.status(), 403);
    assert!(service.received().iter().all(|r| r
        .headers
        .get("x-corp-subject")
        .is_none_or(|v| v != "mallory")
        && r.headers
            .get("x-partner-subject")
            .is_none_or(|v| v != "mallory")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_of_no_configured_issuer_is_refused_as_unknown_issuer() {
    let service = upload_service().await;
    let corp = issuer_with(vec![rsa_key("k1")], 300).await;
    let partner = issuer_with(vec![rsa_key("k2")], 300).await;
    let stranger = issuer_with(vec![rsa_key("k1")], 300).await;
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        provider(
            "partner",
            &partner.issuer,
            &partner.jwks_url(),
            "X-Partner-Subject"
        ),
    ));
    let gateway = Gateway::start(&config);
    let answer = put(&gateway, &token_of(&stranger, "eve")).await;
    assert_eq!(answer.status(), 403);
    let body: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["error_code"], "0x0000003");
    // The stranger's key was never asked for.
    assert_eq!(stranger.fetch_count(), 0);
    // Without iss at all.
    let no_iss = mint(
        &rsa_key("k1"),
        &serde_json::json!({"sub": "eve", "aud": AUDIENCE, "exp": 4_000_000_000u64}),
    )
    .unwrap();
    assert_eq!(put(&gateway, &no_iss).await.status(), 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = scrape(&gateway).await;
    assert!(
        metrics.contains(
            "upload_gateway_auth_failures_total{provider=\"\",reason=\"unknown_issuer\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "upload_gateway_auth_failures_total{provider=\"\",reason=\"missing_issuer\"} 1"
        ),
        "{metrics}"
    );
    let logs = gateway.logs();
    assert!(logs.contains("unknown_issuer"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let service = upload_service().await;
    let corp = issuer_with(vec![rsa_key("k1")], 300).await;
    let liar = issuer_with(vec![rsa_key("k2")], 300).await;
    liar.set_discovery_issuer(Some("https://someone-else.example/"));
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        provider("liar", &liar.issuer, "", "X-Liar-Subject"),
    ));
    let gateway = Gateway::start(&config);
    // The lying provider never got keys: its tokens wait (503), corp's are served.
    let answer = put(&gateway, &token_of(&liar, "eve")).await;
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    assert_eq!(
        liar.fetch_count(),
        0,
        "the JWKS of a refused document was fetched"
    );
    assert_eq!(put(&gateway, &token_of(&corp, "alice")).await.status(), 200);
    // Ready (one provider has keys, the upstream is healthy), naming the other.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let answer = http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        assert!(Instant::now() < deadline, "never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(ready.contains("providers without keys: liar"), "{ready}");
    assert!(gateway.logs().contains("discovery"), "{}", gateway.logs());

    // The document is corrected: discovery is retried and the provider comes up.
    liar.set_discovery_issuer(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while put(&gateway, &token_of(&liar, "eve")).await.status() != 200 {
        assert!(Instant::now() < deadline, "the provider never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issuers_with_a_path_are_discovered_under_their_path() {
    let service = upload_service().await;
    let tenant_a = Issuer::start_at(loopback(), vec![rsa_key("k1")], 300, "/tenant-a")
        .await
        .unwrap();
    let tenant_b = Issuer::start_at(loopback(), vec![rsa_key("k1")], 300, "/tenant-b/")
        .await
        .unwrap();
    assert!(tenant_a.issuer.ends_with("/tenant-a"));
    let config = GatewayConfig::new(vec![service.addr()], &tenant_a).with_providers(&format!(
        "{}{}",
        provider("tenant-a", &tenant_a.issuer, "", "X-Tenant-A"),
        provider("tenant-b", &tenant_b.issuer, "", "X-Tenant-B"),
    ));
    let gateway = Gateway::start(&config);
    assert_eq!(put(&gateway, &token_of(&tenant_a, "a")).await.status(), 200);
    assert_eq!(put(&gateway, &token_of(&tenant_b, "b")).await.status(), 200);
    assert!(tenant_a.discovery_count() >= 1 && tenant_b.discovery_count() >= 1);
    assert!(tenant_a.fetch_count() >= 1 && tenant_b.fetch_count() >= 1);
    // Same kid on both: tenant-a's key never verifies a token claiming tenant-b.
    let a_key_b_claims = tenant_a
        .mint(&tenant_b.claims("x", AUDIENCE, 3600))
        .unwrap();
    assert_eq!(put(&gateway, &a_key_b_claims).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_idp_down_at_start_refuses_only_its_own_tokens_until_it_returns() {
    let service = upload_service().await;
    let corp = issuer_with(vec![rsa_key("k1")], 300).await;
    let partner = issuer_with(vec![rsa_key("k2")], 300).await;
    partner.set_available(false);
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        provider(
            "partner",
            &partner.issuer,
            &partner.jwks_url(),
            "X-Partner-Subject"
        ),
    ));
    let gateway = Gateway::start(&config);
    assert_eq!(put(&gateway, &token_of(&corp, "alice")).await.status(), 200);
    let answer = put(&gateway, &token_of(&partner, "bob")).await;
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    let ready = http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
    assert!(ready.contains("providers without keys: partner"), "{ready}");

    partner.set_available(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while put(&gateway, &token_of(&partner, "bob")).await.status() != 200 {
        assert!(Instant::now() < deadline, "the partner never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
    assert!(!ready.contains("without keys"), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_in_one_provider_leaves_the_other_untouched() {
    let service = upload_service().await;
    let corp = issuer_with(vec![rsa_key("corp-1")], 300).await;
    let partner = issuer_with(vec![rsa_key("partner-1")], 300).await;
    let config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        provider("corp", &corp.issuer, &corp.jwks_url(), "X-Corp-Subject"),
        provider(
            "partner",
            &partner.issuer,
            &partner.jwks_url(),
            "X-Partner-Subject"
        ),
    ));
    let gateway = Gateway::start(&config);
    let partner_token = token_of(&partner, "bob");
    assert_eq!(put(&gateway, &partner_token).await.status(), 200);
    let partner_fetches = partner.fetch_count();

    // Corp rotates to a new key: its new tokens name an unknown kid, one refresh of corp only.
    let rotated: SigningKey = rsa_key("corp-2");
    corp.set_keys(vec![rotated.clone()]);
    let new_token = mint(&rotated, &corp.claims("alice", AUDIENCE, 3600)).unwrap();
    assert_eq!(put(&gateway, &new_token).await.status(), 200);
    assert_eq!(put(&gateway, &partner_token).await.status(), 200);
    assert_eq!(
        partner.fetch_count(),
        partner_fetches,
        "the partner was refetched"
    );
}

/// Providers started at the same moment with the same refresh period drift apart: every wait
/// is jittered by ±10 %, so a fleet does not hit its IdP in lockstep.
#[tokio::test(flavor = "multi_thread")]
async fn background_refreshes_are_jittered() {
    let service = upload_service().await;
    let mut issuers = Vec::new();
    for i in 0..4 {
        issuers.push(issuer_with(vec![rsa_key(&format!("k{i}"))], 1).await);
    }
    let tables: String = issuers
        .iter()
        .enumerate()
        .map(|(i, iss)| {
            provider(
                &format!("p{i}"),
                &iss.issuer,
                &iss.jwks_url(),
                &format!("X-P{i}"),
            )
        })
        .collect();
    let config = GatewayConfig::new(vec![service.addr()], &issuers[0])
        .with("auth", "jwks_min_refresh_s = 1")
        .with_providers(&tables);
    let _gateway = Gateway::start(&config);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let mut intervals = Vec::new();
    let mut last_fetches = Vec::new();
    for issuer in &issuers {
        let times = issuer.fetch_times();
        assert!(times.len() >= 4, "only {} fetches", times.len());
        for pair in times.windows(2) {
            intervals.push(pair[1].duration_since(pair[0]).as_secs_f64());
        }
        last_fetches.push(*times.last().unwrap());
    }
    // Every wait within the ±10 % band (plus scheduling slack)...
    for interval in &intervals {
        assert!(
            (0.85..1.3).contains(interval),
            "interval {interval} s: {intervals:?}"
        );
    }
    // ...and not all the same: the waits are spread over the band.
    let min = intervals.iter().copied().fold(f64::MAX, f64::min);
    let max = intervals.iter().copied().fold(f64::MIN, f64::max);
    assert!(max - min > 0.05, "intervals not jittered: {intervals:?}");
    let first = last_fetches.iter().min().unwrap();
    let spread = last_fetches
        .iter()
        .map(|t| t.duration_since(*first).as_secs_f64())
        .fold(0.0, f64::max);
    assert!(
        spread > 0.02,
        "the providers still fetch together: {spread} s"
    );
}

/// A discovery outage after a failed JWKS fetch must not stop key rotation: the jwks_uri found
/// before keeps being used until discovery answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_discovery_outage_does_not_stop_key_rotation() {
    let service = upload_service().await;
    let old = rsa_key("k1");
    let idp = issuer_with(vec![old.clone()], 1).await;
    let config = GatewayConfig::new(vec![service.addr()], &idp)
        .with("auth", "jwks_min_refresh_s = 1")
        .with_providers(&provider("idp", &idp.issuer, "", "X-Subject"));
    let gateway = Gateway::start(&config);
    let old_token = mint(&old, &idp.claims("alice", AUDIENCE, 3600)).unwrap();
    assert_eq!(put(&gateway, &old_token).await.status(), 200);
    // Everything fails for a moment (a JWKS fetch fails), then only discovery stays down.
    idp.set_available(false);
    let failed = idp.fetch_count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while idp.fetch_count() == failed {
        assert!(Instant::now() < deadline, "no refresh while down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.set_discovery_available(false);
    idp.set_available(true);
    // The key rotates: k1 is revoked, k2 is the new one.
    let new = rsa_key("k2");
    idp.set_keys(vec![new.clone()]);
    let new_token = mint(&new, &idp.claims("alice", AUDIENCE, 3600)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (new_status, old_status) = (
            put(&gateway, &new_token).await.status(),
            put(&gateway, &old_token).await.status(),
        );
        if new_status == 200 && old_status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation stuck while discovery is down: new {new_status}, revoked {old_status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
