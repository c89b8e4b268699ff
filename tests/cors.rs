//! End to end: CORS for browser callers (SPEC §4.11) with plain HTTP requests: preflights
//! answered by the gateway (no token, nothing upstream) or refused, and the CORS headers on
//! every answer to an allowed origin, the gateway's own envelopes included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use common::{
    client, finish_call, finish_path, issuer, token, upload_service, Gateway, GatewayConfig,
};
use upload_gateway::demo::issuer::Issuer;
use upload_gateway::demo::upload_service::UploadService;

const APP: &str = "https://app.example.com";

fn cors_config(origins: &str) -> String {
    format!("[cors]\nallowed_origins = {origins}\n")
}

async fn started(origins: &str) -> (UploadService, Issuer, Gateway) {
    let service = upload_service().await;
    let issuer = issuer().await;
    let mut config = GatewayConfig::new(vec![service.addr()], &issuer);
    config.extra_tail = Some(cors_config(origins));
    let gateway = Gateway::start(&config);
    (service, issuer, gateway)
}

fn vary_has(resp: &reqwest::Response, value: &str) -> bool {
    resp.headers().get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case(value))
    })
}

/// The CORS headers that let the script on `APP` read an answer.
fn assert_readable_by_app(resp: &reqwest::Response) {
    assert_eq!(resp.headers()["access-control-allow-origin"], APP);
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    assert!(vary_has(resp, "Origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_preflight_is_answered_by_the_gateway_without_a_token() {
    let (service, _issuer, gateway) = started(&format!("[\"{APP}\"]")).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, gateway.url(&finish_path()))
        .header("origin", APP)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PUT"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert_eq!(h["access-control-max-age"], "600");
    assert!(vary_has(&resp, "Origin"));
    assert!(service.received().is_empty(), "the preflight went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_from_other_origins_or_for_other_methods_or_headers_are_refused() {
    let (service, _issuer, gateway) = started(&format!("[\"{APP}\"]")).await;
    let cases = [
        ("https://evil.example", "PUT", "authorization"),
        (APP, "PATCH", "authorization"),
        (APP, "PUT", "authorization, x-secret"),
    ];
    for (origin, method, headers) in cases {
        let resp = client()
            .request(reqwest::Method::OPTIONS, gateway.url(&finish_path()))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{origin} {method} {headers}");
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        let body = resp.text().await.unwrap();
        assert!(body.contains("0x0000003"), "{body}");
    }
    assert!(service.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_to_an_allowed_origin_carries_the_cors_headers() {
    let (_service, issuer, gateway) = started(&format!("[\"{APP}\"]")).await;
    // A success relayed from the upstream.
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_readable_by_app(&resp);
    // The gateway's own 403 envelope: the script can read it.
    let resp = client()
        .put(gateway.url(&finish_path()))
        .header("origin", APP)
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["access-control-allow-origin"], APP);
    // Another origin: handled as usual, without CORS headers.
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    assert!(vary_has(&resp, "Origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_allows_every_origin_with_a_star() {
    let (_service, issuer, gateway) = started("[\"*\"]").await;
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_allowed_origins_cors_is_off() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    assert!(!vary_has(&resp, "Origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edges_own_refusals_carry_the_cors_headers_too() {
    let (_service, issuer, gateway) = started(&format!("[\"{APP}\"]")).await;
    // A head over server.max_header_bytes is refused by the connection layer (431), before
    // any proxy phase: the script must still be able to read the envelope.
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", APP)
        .header("x-big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_readable_by_app(&resp);
    // Another origin: no CORS headers on the refusal either.
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("origin", "https://evil.example")
        .header("x-big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_origin_is_no_origin_and_an_empty_header_list_asks_for_none() {
    let (service, _issuer, gateway) = started(&format!("[\"{APP}\"]")).await;
    let preflight = || {
        client()
            .request(reqwest::Method::OPTIONS, gateway.url(&finish_path()))
            .header("access-control-request-method", "PUT")
    };
    // Two origins, the allowed one first: refused, never answered for the first.
    let resp = preflight()
        .header("origin", APP)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    // An empty Access-Control-Request-Headers asks for no header: allowed.
    let resp = preflight()
        .header("origin", APP)
        .header("access-control-request-headers", "")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], APP);
    assert!(service.received().is_empty());
}
