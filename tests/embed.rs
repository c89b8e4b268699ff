//! End to end: `examples/embed.rs`, a platform proxy of its own that embeds the gateway's
//! treatment (SPEC §4.13). Its own route is answered by itself, the other service gets its
//! requests untouched and without a token, and the upload API gets the whole treatment.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use upload_gateway::demo::http::{respond, serve, ReceivedRequest, RunningServer};

/// The example's binary, built by `cargo test` beside the test binaries.
fn embed_binary() -> String {
    let exe = std::env::current_exe().expect("current exe");
    let debug_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("target dir");
    let path = debug_dir.join("examples").join("embed");
    assert!(path.exists(), "{} not built", path.display());
    path.to_string_lossy().into_owned()
}

/// The platform's other service: answers every request and records it.
async fn other_service() -> (RunningServer, Arc<Mutex<Vec<ReceivedRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = serve(loopback(), move |req| {
        record.lock().unwrap().push(req);
        async move { respond(200, "text/plain", "other service") }
    })
    .await
    .unwrap();
    (server, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_treatment_serves_the_api_and_the_platform_keeps_its_routes() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let (other, other_seen) = other_service().await;
    let other_addr = other.addr().to_string();
    let platform = Gateway::start_program(
        &embed_binary(),
        &GatewayConfig::new(vec![service.addr()], &issuer),
        &[("EMBED_OTHER_UPSTREAM", other_addr.as_str())],
    );
    let client = client();

    // The API: the gateway's treatment, XML in and XML out.
    let resp = client
        .put(platform.url(&format!("{}?format=xml", finish_path())))
        .bearer_auth(token(&issuer))
        .header("content-type", "application/xml")
        .body("<upload><nb_chunks>2</nb_chunks></upload>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    let text = resp.text().await.unwrap();
    assert!(text.contains("<status>COMPLETING</status>"), "{text}");
    assert!(text.contains("<nb_chunks>2</nb_chunks>"), "{text}");
    let received = service.received();
    assert_eq!(received.len(), 1);
    assert_eq!(&received[0].body[..], br#"{"upload":{"nb_chunks":2}}"#);

    // The API without a token: the API's envelope, nothing forwarded anywhere.
    let resp = client
        .put(platform.url(&finish_path()))
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"error_code":"0x0000003","error_message":"Invalid access token"}}"#
    );

    // A path that reads as the API only once its slashes are merged goes to the treatment, which refuses
    // it: it never reaches the other service.
    let resp = client
        .put(platform.url(&format!("/v1//files/uploads/{DOCUMENTED_UPLOAD_ID}")))
        .bearer_auth(token(&issuer))
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // The platform's own route, answered by the platform.
    let resp = client
        .get(platform.url("/platform/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_none());
    assert_eq!(resp.text().await.unwrap(), r#"{"platform":"ok"}"#);

    // Everything else goes to the other service untouched, without a token.
    let resp = client
        .get(platform.url("/reports/7?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "other service");

    let seen = other_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only the other service's request reached it");
    assert_eq!(seen[0].uri.to_string(), "/reports/7?format=csv");
    assert!(seen[0].headers.get("x-request-id").is_none());
    assert_eq!(
        service.received().len(),
        1,
        "refusals never reach the upload service"
    );

    // The treatment writes its access line for each API request (200, 403, 400), none for the
    // platform's own requests.
    let logs = platform.stop_and_logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    let statuses: Vec<u64> = lines.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [200, 403, 400], "{logs}");
    assert_eq!(lines[0]["route"], "PUT /files/uploads/{id}");
    assert!(!logs.contains("format=csv"), "a query in the logs: {logs}");
}
