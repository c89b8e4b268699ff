//! End to end: forwarding, failover, 502/504, request ids, forwarded headers, SIGTERM drain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use upload_gateway::demo::upload_service::UploadServiceOptions;

const INTERNAL_ERROR: &str =
    r#"{"error":{"error_code":"0x0000001","error_message":"Internal Error"}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn finish_call_is_forwarded_with_request_id_and_forwarded_headers() {
    let (service, issuer, gateway) = started().await;

    let resp = client()
        .put(gateway.url(&finish_path()))
        .bearer_auth(token(&issuer))
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":3}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let response_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response_id.len(), 32, "generated id: {response_id}");
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["upload"]["status"], "COMPLETING");
    assert_eq!(body["upload"]["nb_chunks"], 3);

    let received = service.received();
    assert_eq!(received.len(), 1);
    let upstream = &received[0];
    assert_eq!(upstream.headers["x-request-id"], response_id.as_str());
    assert_eq!(upstream.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(upstream.headers["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_request_id_is_kept_and_forwarded_for_is_appended() {
    let (service, issuer, gateway) = started().await;

    let resp = client()
        .get(gateway.url("/v1/anything"))
        .bearer_auth(token(&issuer))
        .header("x-request-id", "client-id-42")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let upstream = &service.received()[0];
    assert_eq!(upstream.headers["x-request-id"], "client-id-42");
    assert_eq!(
        upstream.headers["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_outside_the_api_are_proxied_unchanged() {
    let (service, issuer, gateway) = started().await;

    let resp = client()
        .post(gateway.url("/other/path?b=2&format=weird&a=1"))
        .bearer_auth(token(&issuer))
        .header("content-type", "text/plain")
        .body("raw body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = &service.received()[0];
    assert_eq!(upstream.method, "POST");
    assert_eq!(
        upstream.uri.path_and_query().unwrap().as_str(),
        "/other/path?b=2&format=weird&a=1"
    );
    assert_eq!(upstream.body.as_ref(), b"raw body");
    assert_eq!(upstream.headers["content-type"], "text/plain");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_dead_upstream_of_two_causes_no_client_visible_error() {
    let alive = upload_service().await;
    let doomed = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(
        vec![alive.addr(), doomed.addr()],
        &issuer,
    ));
    let client = client();
    let token = token(&issuer);

    // Both upstreams serve, then one dies without the gateway being told.
    for _ in 0..4 {
        let resp = client
            .get(gateway.url("/v1/ping"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(
        !doomed.received().is_empty(),
        "round robin used both upstreams"
    );
    drop(doomed);

    for i in 0..20 {
        let resp = finish_call(&client, gateway.url(&finish_path()), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i} after the upstream died");
    }
    let finish_calls = alive
        .received()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(finish_calls, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_upstream_port_gives_502_with_internal_error_envelope() {
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![closed_port()], &issuer));

    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.text().await.unwrap(), INTERNAL_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_slower_than_read_timeout_gives_504_with_internal_error_envelope() {
    let slow = upload_service_with(UploadServiceOptions {
        delay: Duration::from_secs(3),
        ..UploadServiceOptions::default()
    })
    .await;
    let issuer = issuer().await;
    let config =
        GatewayConfig::new(vec![slow.addr()], &issuer).with("upstream", "read_timeout_ms = 300");
    let gateway = Gateway::start(&config);

    let started = Instant::now();
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(resp.text().await.unwrap(), INTERNAL_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_call_finish_then_exits() {
    let slow = upload_service_with(UploadServiceOptions {
        delay: Duration::from_millis(1500),
        ..UploadServiceOptions::default()
    })
    .await;
    let issuer = issuer().await;
    let config =
        GatewayConfig::new(vec![slow.addr()], &issuer).with("server", "shutdown_grace_s = 3");
    let mut gateway = Gateway::start(&config);

    let request = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer)).send();
    let in_flight = tokio::spawn(request);
    // Let the request reach the upstream before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.received().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.terminate();

    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["upload"]["status"], "COMPLETING");

    let exited = tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        exited.is_some(),
        "gateway did not exit within the grace period"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_hands_the_listeners_over_without_a_failed_request() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let mut old = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let token = token(&issuer);
    let put = |url: String| {
        client()
            .put(url)
            .bearer_auth(&token)
            .body(r#"{"upload":{"nb_chunks":1}}"#)
            .send()
    };
    assert_eq!(put(old.url(&finish_path())).await.unwrap().status(), 200);

    let new = old.spawn_upgrade();
    // The new process must be waiting on the upgrade socket before the old one is told.
    let sock = old.config_path.with_file_name("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "new process never opened the upgrade socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    old.signal("QUIT");

    // Requests keep succeeding while the old process drains and the new one takes over.
    for i in 0..30 {
        let resp = put(new.url(&finish_path())).await.unwrap();
        assert_eq!(resp.status(), 200, "request {i} during the upgrade");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(exited.is_some(), "the old process did not exit");
    let resp = put(new.url(&finish_path())).await.unwrap();
    assert_eq!(resp.status(), 200, "the new process serves alone");
    assert!(new.logs().contains("jwks loaded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn method_override_headers_never_reach_the_upstream() {
    let (service, issuer, gateway) = started().await;
    let resp = client()
        .post(gateway.url(&finish_path()))
        .bearer_auth(token(&issuer))
        .header("x-http-method-override", "PUT")
        .header("x-http-method", "PUT")
        .header("x-method-override", "PUT")
        .body(r#"{"upload":{"nb_chunks":1e9}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = &service.received()[0];
    assert_eq!(upstream.method, "POST");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(
            upstream.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
}
