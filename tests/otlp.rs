//! End to end: one span per request exported over OTLP/HTTP (SPEC §4.12) to a loopback receiver
//! that decodes the protobuf export requests: the span's ids are the ones sent upstream, its
//! parent the caller's span, its attributes the route template, method, status, upstream, auth
//! outcome; no token, query or body byte anywhere in what was exported. A collector that
//! refuses connections, or accepts them and never answers, costs the requests nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    client, closed_port, finish_call, finish_path, issuer, token, upload_service, Gateway,
    GatewayConfig,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use upload_gateway::demo::http::{respond, serve, RunningServer};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A loopback OTLP/HTTP receiver: keeps every raw export body POSTed to `/v1/traces`.
struct Receiver {
    server: RunningServer,
    bodies: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl Receiver {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let kept = bodies.clone();
        let server = serve(common::loopback(), move |req| {
            let kept = kept.clone();
            async move {
                let content_type = req
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                if req.method == http::Method::POST && req.uri.path() == "/v1/traces" {
                    kept.lock().unwrap().push((content_type, req.body));
                    respond(200, "application/x-protobuf", Bytes::new())
                } else {
                    respond(404, "text/plain", "not here\n")
                }
            }
        })
        .await
        .unwrap();
        Self { server, bodies }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Every span received so far, decoded.
    fn spans(&self) -> Vec<Span> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(content_type, body)| {
                assert_eq!(content_type, "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                request
                    .resource_spans
                    .into_iter()
                    .inspect(|rs| {
                        let service = rs
                            .resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                            .and_then(|a| a.value.as_ref())
                            .and_then(|v| v.value.clone());
                        assert_eq!(service, Some(Value::StringValue("upload-gateway".into())));
                    })
                    .flat_map(|rs| rs.scope_spans)
                    .flat_map(|ss| ss.spans)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect()
    }

    /// Waits (bounded) for at least `n` spans.
    async fn wait_spans(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans arrived",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn exporting(
    upstream: std::net::SocketAddr,
    issuer: &upload_gateway::demo::issuer::Issuer,
    endpoint: &str,
) -> Gateway {
    let config = GatewayConfig::new(vec![upstream], issuer)
        .with("observability", &format!("otlp_endpoint = \"{endpoint}\""));
    Gateway::start(&config)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_is_one_span_whose_id_the_upstream_got_as_its_parent() {
    let receiver = Receiver::start().await;
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = exporting(service.addr(), &issuer, &receiver.endpoint());
    gateway.wait_keys_loaded();
    let bearer = token(&issuer);

    let resp = finish_call(
        &client(),
        gateway.url(&format!("{}?format=xml&human=true", finish_path())),
        &bearer,
    )
    .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let sent_upstream = service.received().last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let upstream_parent = sent_upstream.split('-').nth(2).unwrap().to_owned();

    // A refusal is a request too: no token, 403 (the API's catalogue), still one span.
    let resp = client()
        .put(gateway.url(&finish_path()))
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let spans = receiver.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "one span per request");
    let finish = spans
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE)
        .expect("the finish call's span");
    assert_eq!(
        hex(&finish.span_id),
        upstream_parent,
        "not the id sent upstream"
    );
    assert_eq!(hex(&finish.parent_span_id), CALLER_SPAN);
    assert_eq!(finish.name, "PUT /files/uploads/{id}");
    assert_eq!(finish.kind, 2, "SPAN_KIND_SERVER");
    assert!(finish.end_time_unix_nano >= finish.start_time_unix_nano);
    assert!(finish.start_time_unix_nano > 0);
    assert_eq!(
        attribute(finish, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(
        attribute(finish, "http.request.method"),
        Some(Value::StringValue("PUT".into()))
    );
    assert_eq!(
        attribute(finish, "http.route"),
        Some(Value::StringValue("PUT /files/uploads/{id}".into()))
    );
    assert_eq!(
        attribute(finish, "upload_gateway.auth"),
        Some(Value::StringValue("ok".into()))
    );
    assert_eq!(
        attribute(finish, "server.port"),
        Some(Value::IntValue(i64::from(service.addr().port())))
    );

    let refused = spans.iter().find(|s| hex(&s.trace_id) != TRACE).unwrap();
    assert!(
        refused.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    assert_eq!(
        attribute(refused, "http.response.status_code"),
        Some(Value::IntValue(403))
    );
    assert_eq!(
        attribute(refused, "upload_gateway.auth"),
        Some(Value::StringValue("refused".into()))
    );
    assert!(attribute(refused, "upload_gateway.reason").is_some());

    // Nothing the caller sent as a secret or as data was exported.
    let raw = receiver.raw();
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(bearer.as_bytes()), "the token was exported");
    assert!(!contains(b"human=true"), "the query was exported");
    assert!(!contains(b"nb_chunks"), "the body was exported");
    assert!(
        !contains(common::DOCUMENTED_UPLOAD_ID.as_bytes()),
        "the path was exported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_or_hung_costs_the_requests_nothing() {
    let service = upload_service().await;
    let issuer = issuer().await;
    // One that refuses connections, one that accepts them and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for endpoint in [
        format!("http://{}", closed_port()),
        format!("http://{}", hung.local_addr().unwrap()),
    ] {
        let gateway = exporting(service.addr(), &issuer, &endpoint);
        gateway.wait_keys_loaded();
        let bearer = token(&issuer);
        let http = client();
        for _ in 0..200 {
            let resp = finish_call(&http, gateway.url(&finish_path()), &bearer)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{endpoint}");
        }
        let ready = reqwest::get(gateway.admin_url("/readyz")).await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "a collector is not a readiness condition"
        );
        // The loss is not silent: counted, and warned once (found by a black-box attack:
        // nothing said spans were lost). The hung one fails after the export timeout (5 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let metrics = common::scrape(&gateway).await;
            let lost = common::metric_value(&metrics, "upload_gateway_otlp_export_errors_total ")
                .unwrap_or(0.0);
            if lost > 0.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{endpoint}: no export error counted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs = gateway.logs();
        let warnings = logs.matches("span export failed").count();
        assert_eq!(warnings, 1, "{endpoint}: {logs}");
    }
}

#[test]
fn check_refuses_an_endpoint_that_is_not_an_http_base_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    for (endpoint, ok) in [
        ("http://collector:4318", true),
        ("https://otel.example.com", true),
        ("collector:4318", false),
        ("grpc://collector:4317", false),
        ("http://collector:4318/?token=x", false),
    ] {
        std::fs::write(
            &path,
            format!(
                "[auth]\njwks_url = \"http://127.0.0.1:1/j\"\n[observability]\n\
                 otlp_endpoint = \"{endpoint}\"\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::binary())
            .args(["check", "--no-bind", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{endpoint}: {stderr}");
        if !ok {
            assert!(stderr.contains("observability.otlp_endpoint"), "{stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let receiver = Receiver::start().await;
    let service = upload_service().await;
    let issuer = issuer().await;
    let mut gateway = exporting(service.addr(), &issuer, &receiver.endpoint());
    gateway.wait_keys_loaded();
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // At once: the batch's scheduled export (1 s) has not come yet.
    gateway.terminate();
    let (clean, stderr) = tokio::task::spawn_blocking(move || {
        gateway.wait_exit(Duration::from_secs(20)).expect("exited")
    })
    .await
    .unwrap();
    assert!(clean, "{stderr}");
    assert_eq!(
        receiver.spans().len(),
        1,
        "the queued span was lost at exit"
    );
}
