//! End to end: metrics, readiness and logs on the admin listener and the process output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(gateway: &Gateway) -> String {
    client()
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_moves_with_the_traffic_it_counts() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let token = token(&issuer);
    let before = scrape(&gateway).await;
    assert!(
        metric(
            &before,
            "upload_gateway_jwks_fetches_total{outcome=\"ok\",provider=\"default\"}"
        ) >= 1.0,
        "{before}"
    );
    assert!(
        metric(
            &before,
            "upload_gateway_jwks_last_success_timestamp_seconds{provider=\"default\"}"
        ) > 0.0
    );

    let put = |auth: Option<&str>, body: &'static str| {
        let mut request = client()
            .put(gateway.url(&finish_path()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        put(Some(&token), r#"{"upload":{"nb_chunks":1}}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put(Some(&token), r#"{"upload":{"nb_chunks":2}}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put(None, r#"{"upload":{"nb_chunks":1}}"#)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        put(Some(&token), r#"{"upload":{"nb_chunks":0}}"#)
            .await
            .unwrap()
            .status(),
        400
    );

    // Request metrics are recorded in the logging phase, after the answer has been flushed:
    // give the last request's phase time to run before reading them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape(&gateway).await;
    let route = "route=\"PUT /files/uploads/{id}\"";
    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(
        moved(&format!(
            "upload_gateway_requests_total{{{route},status=\"200\"}}"
        )),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!(
            "upload_gateway_requests_total{{{route},status=\"403\"}}"
        )),
        1.0
    );
    assert_eq!(
        moved(&format!(
            "upload_gateway_requests_total{{{route},status=\"400\"}}"
        )),
        1.0
    );
    assert_eq!(
        moved("upload_gateway_auth_failures_total{provider=\"\",reason=\"missing\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("upload_gateway_body_rejections_total{reason=\"body_nb_chunks_out_of_range\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("upload_gateway_token_cache_lookups_total{result=\"miss\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("upload_gateway_token_cache_lookups_total{result=\"hit\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!(
            "upload_gateway_upstream_latency_seconds_count{{{route}}}"
        )),
        2.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "upload_gateway_jwks_key_set_age_seconds{provider=\"default\"}"
        ) >= 0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_flips_with_the_upstreams() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let ready = || http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready().starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "never ready: {}", ready());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthz = http_get_blocking(gateway.admin, "/healthz").unwrap();
    assert!(healthz.starts_with("HTTP/1.1 200"));

    drop(service);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ready();
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("no healthy upstream"), "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "still ready with no upstream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_carry_a_token_a_signature_or_a_body() {
    let service = upload_service().await;
    let issuer = issuer().await;
    for level in ["info", "debug"] {
        let gateway = Gateway::start_with_env(
            &GatewayConfig::new(vec![service.addr()], &issuer),
            &[("RUST_LOG", level)],
        );
        let token = token(&issuer);
        let signature = token.rsplit('.').next().unwrap().to_owned();
        let marker = "BODY-MARKER-7f3a";
        let body = format!(r#"{{"upload":{{"nb_chunks":1,"note":"{marker}"}}}}"#);
        let ok = client()
            .put(gateway.url(&format!("{}?human=true", finish_path())))
            .bearer_auth(&token)
            .header("x-request-id", "log-test-1")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        // The same token with one signature character changed.
        let (message, _) = token.rsplit_once('.').unwrap();
        let first = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{message}.{first}{}", &signature[1..]);
        let refused = client()
            .put(gateway.url(&finish_path()))
            .bearer_auth(&forged)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs = gateway.stop_and_logs();

        assert!(!logs.contains(&token), "{level}: token in the log");
        assert!(!logs.contains(&signature), "{level}: signature in the log");
        assert!(!logs.contains(&forged), "{level}: forged token in the log");
        assert!(!logs.contains(marker), "{level}: body in the log");
        let access: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["target"] == "access")
            .collect();
        assert_eq!(access.len(), 2, "{level}: {logs}");
        let line = &access[0];
        assert_eq!(line["request_id"], "log-test-1");
        assert_eq!(line["method"], "PUT");
        assert_eq!(line["route"], "PUT /files/uploads/{id}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["auth"], "ok");
        assert_eq!(line["upstream"], service.addr().to_string());
        assert!(line["latency_us"].as_u64().is_some());
        assert_eq!(access[1]["status"], 403);
        assert_eq!(access[1]["reason"], "bad_signature");
    }
}
