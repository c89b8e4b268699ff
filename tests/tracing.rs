//! End to end: W3C Trace Context through the gateway (SPEC §4.12): the upstream receives the
//! caller's trace id with the gateway's own span id, `tracestate` unchanged, a new trace when
//! the caller sent none or an invalid one, and the access line carries the trace id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::Duration;

use common::{client, finish_call, finish_path, started, token};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1].len(), 32);
    assert_eq!(fields[2].len(), 16);
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gets_the_callers_trace_with_the_gateways_span() {
    let (service, issuer, gateway) = started().await;
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=opaque,other=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = service.received();
    let headers = &received.last().unwrap().headers;
    let (trace, span, flags) = parts(headers["traceparent"].to_str().unwrap());
    assert_eq!(trace, TRACE);
    assert_ne!(span, CALLER_SPAN, "the caller's span id was passed on");
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(headers["tracestate"], "vendor=opaque,other=1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = gateway.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"target\":\"access\"") && l.contains(TRACE))
        .unwrap_or_else(|| panic!("no access line with the trace id: {logs}"));
    assert!(
        line.contains(&format!("\"trace_id\":\"{TRACE}\"")),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
    let (service, issuer, gateway) = started().await;
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OTHER: &str = "00-11111111111111111111111111111111-00f067aa0ba902b7-01";
    let mut traces = Vec::new();
    for sent in [
        vec![],
        vec!["00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
        vec!["garbage"],
        vec!["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        // W3C: two traceparent headers are none.
        vec![VALID, OTHER],
    ] {
        let mut request = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
            .header("tracestate", "vendor=opaque");
        for value in &sent {
            request = request.header("traceparent", *value);
        }
        assert_eq!(request.send().await.unwrap().status(), 200);
        let received = service.received();
        let headers = &received.last().unwrap().headers;
        let (trace, span, _) = parts(headers["traceparent"].to_str().unwrap());
        assert_ne!(trace, "00000000000000000000000000000000");
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "sent {sent:?}");
        assert_ne!(trace, "11111111111111111111111111111111", "sent {sent:?}");
        assert_ne!(span, "0000000000000000");
        // A new trace carries no state of another one.
        assert!(
            !headers.contains_key("tracestate"),
            "tracestate forwarded on a new trace (sent {sent:?})"
        );
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(
        traces.len(),
        5,
        "the new traces are not distinct: {traces:?}"
    );
}
