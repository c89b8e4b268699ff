//! End to end: the local rate limit (SPEC §4.10): a burst admitted, then 429 with
//! `Retry-After` and the `0x0000004` envelope in the negotiated format, nothing upstream; one
//! bucket per claim value; a refused token costs no budget; the metric moves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::Duration;

use common::{
    client, finish_call, finish_path, issuer, upload_service, Gateway, GatewayConfig, AUDIENCE,
};

fn limited(
    service: std::net::SocketAddr,
    issuer: &upload_gateway::demo::issuer::Issuer,
    key: &str,
) -> Gateway {
    let mut config = GatewayConfig::new(vec![service], issuer);
    config.extra_tail = Some(format!(
        "[rate_limit]\nenabled = true\nkey = \"{key}\"\nrequests_per_second = 1\nburst = 3\n"
    ));
    Gateway::start(&config)
}

/// The status of one finish call with `token`.
async fn finish_status(gateway: &Gateway, token: &str) -> u16 {
    finish_call(&client(), gateway.url(&finish_path()), token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_admitted_then_429_with_retry_after_and_the_envelope() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = limited(service.addr(), &issuer, "sub");
    let alice = issuer
        .mint(&issuer.claims("alice", AUDIENCE, 3600))
        .unwrap();
    for _ in 0..3 {
        let resp = finish_call(&client(), gateway.url(&finish_path()), &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = finish_call(
        &client(),
        gateway.url(&format!("{}?format=xml", finish_path())),
        &alice,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("<error_code>0x0000004</error_code>"),
        "{body}"
    );
    assert!(body.contains("Too Many Requests"), "{body}");
    assert_eq!(
        service.received().len(),
        3,
        "the refused call reached the upstream"
    );

    // Another subject has a bucket of its own.
    let bob = issuer.mint(&issuer.claims("bob", AUDIENCE, 3600)).unwrap();
    let resp = finish_call(&client(), gateway.url(&finish_path()), &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // One second later one more request of alice's is admitted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = finish_call(&client(), gateway.url(&finish_path()), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = common::scrape(&gateway).await;
    assert!(
        metrics.contains("upload_gateway_rate_limited_total{route=\"PUT /files/uploads/{id}\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_costs_no_budget() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = limited(service.addr(), &issuer, "ip");
    for _ in 0..5 {
        let resp = client()
            .put(gateway.url(&finish_path()))
            .bearer_auth("not-a-token")
            .body(r#"{"upload":{"nb_chunks":1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    let token = issuer
        .mint(&issuer.claims("carol", AUDIENCE, 3600))
        .unwrap();
    for _ in 0..3 {
        let resp = finish_call(&client(), gateway.url(&finish_path()), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
}

#[test]
fn check_refuses_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("routes = \"everything\"", "rate_limit.routes"),
        ("burst = 0", "rate_limit.burst"),
        ("key = \"\"", "rate_limit.key"),
        // Found by a black-box attack: "ip " silently became a claim nobody has.
        ("key = \"ip \"", "rate_limit.key"),
    ] {
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            format!("[auth]\njwks_url = \"http://127.0.0.1:1/j\"\n[rate_limit]\nenabled = true\n{extra}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(common::binary())
            .args(["check", "--no-bind", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(stderr.contains(key), "{extra}: {stderr}");
    }
}

/// `sub` is unique within one issuer only: with two providers, the same `sub` from each is two
/// callers with a bucket each (found by a black-box attack: a partner's "alice" drained the
/// corp's "alice").
#[tokio::test(flavor = "multi_thread")]
async fn the_same_subject_from_two_providers_has_two_buckets() {
    let service = upload_service().await;
    let corp = common::issuer_with(vec![common::rsa_key("corp-1")], 300).await;
    let partner = common::issuer_with(vec![common::rsa_key("partner-1")], 300).await;
    let table = |name: &str, issuer: &upload_gateway::demo::issuer::Issuer| {
        format!(
            "[[auth.providers]]\nname = \"{name}\"\nissuer = \"{}\"\njwks_url = \"{}\"\n\
             audiences = [\"{AUDIENCE}\"]\n",
            issuer.issuer,
            issuer.jwks_url()
        )
    };
    let mut config = GatewayConfig::new(vec![service.addr()], &corp).with_providers(&format!(
        "{}{}",
        table("corp", &corp),
        table("partner", &partner)
    ));
    config.extra_tail = Some(
        "[rate_limit]\nenabled = true\nkey = \"sub\"\nrequests_per_second = 1\nburst = 2\n".into(),
    );
    let gateway = Gateway::start(&config);
    let corp_alice = corp.mint(&corp.claims("alice", AUDIENCE, 3600)).unwrap();
    let partner_alice = partner
        .mint(&partner.claims("alice", AUDIENCE, 3600))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(finish_status(&gateway, &corp_alice).await, 200);
    }
    assert_eq!(finish_status(&gateway, &corp_alice).await, 429);
    for _ in 0..2 {
        assert_eq!(
            finish_status(&gateway, &partner_alice).await,
            200,
            "partner's alice"
        );
    }
    assert_eq!(finish_status(&gateway, &partner_alice).await, 429);
}

/// With `routes = "api"`, requests without a token (a public path under the prefix) are
/// limited by address, not in the bucket of tokens that lack the claim (found by a black-box
/// attack: anonymous requests locked every such token out).
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_requests_never_drain_the_bucket_of_tokens_without_the_claim() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let mut config = GatewayConfig::new(vec![service.addr()], &issuer)
        .with("auth", "public_paths = [\"/v1/status\"]");
    config.extra_tail = Some(
        "[rate_limit]\nenabled = true\nkey = \"tenant\"\nrequests_per_second = 1\nburst = 2\n\
         routes = \"api\"\n"
            .into(),
    );
    let gateway = Gateway::start(&config);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = client()
            .get(gateway.url("/v1/status"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    // The token has no `tenant` claim: its bucket is untouched by the anonymous requests.
    let token = issuer
        .mint(&issuer.claims("alice", AUDIENCE, 3600))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(finish_status(&gateway, &token).await, 200);
    }
}
