//! End to end, as an attacker would (SPEC §4.8): hostile clients on raw sockets (the HTTP is
//! often deliberately malformed, which no HTTP client library would send), hostile upstreams
//! written byte by byte, and a broken IdP, all on loopback against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const INVALID_INPUT: &str =
    r#"{"error":{"error_code":"0x0230001","error_message":"Invalid Input"}}"#;

/// Sends `request` on a fresh connection and reads until the gateway closes it (or 10 s pass).
/// Returns what arrived and whether the connection ended by itself.
fn raw(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The gateway may refuse before reading all of it: a failed write is part of the test.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn status_of(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A hostile upstream: every connection that sends a request head gets `script`'s answer.
struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// One step of a hostile answer.
#[derive(Clone)]
enum Step {
    Send(&'static [u8]),
    Drip(&'static [u8], Duration),
}

impl RawUpstream {
    async fn start(script: Vec<Step>) -> RawUpstream {
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let script = script.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Health checks connect and leave: only a full head is a request.
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    for step in script {
                        let ok = match step {
                            Step::Send(bytes) => socket.write_all(bytes).await.is_ok(),
                            Step::Drip(bytes, every) => {
                                let mut ok = true;
                                for b in bytes {
                                    ok &= socket.write_all(&[*b]).await.is_ok();
                                    tokio::time::sleep(every).await;
                                }
                                ok
                            }
                        };
                        if !ok {
                            return;
                        }
                    }
                    // Then the connection is closed (dropped) abruptly.
                });
            }
        });
        RawUpstream {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn gateway_over(upstream: SocketAddr, extra: &[(&'static str, &str)]) -> (Gateway, String) {
    let issuer = issuer().await;
    let mut config = GatewayConfig::new(vec![upstream], &issuer);
    for (section, lines) in extra {
        config = config.with(section, lines);
    }
    let gateway = Gateway::start(&config);
    let token = token(&issuer);
    // The issuer must outlive the test's requests only for the key set's first load.
    std::mem::forget(issuer);
    (gateway, token)
}

fn put(path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn access_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. The path: tricks before or inside the prefix

/// Sends each target a finish call with an invalid body: every one must be refused with the
/// Invalid Input envelope, and none may reach the upstream.
async fn assert_targets_refused_before_the_upstream(targets: impl Fn(&str) -> Vec<String>) {
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    let bad_body = r#"{"upload":{"nb_chunks":0}}"#;
    for path in targets(DOCUMENTED_UPLOAD_ID) {
        let (response, _) = raw(gateway.addr, &put(&path, &token, bad_body));
        assert_eq!(status_of(&response), 400, "{path:?}: {response}");
        assert_eq!(body_of(&response), INVALID_INPUT, "{path:?}");
    }
    assert!(
        service.received().is_empty(),
        "{:?}",
        service
            .received()
            .iter()
            .map(|r| r.uri.to_string())
            .collect::<Vec<_>>()
    );
}

/// Targets not rooted at `/`, and tabs or line breaks inside one, which URL parsers drop: a
/// lenient upstream reads them as the finish route (found by black-box attacks: they went
/// upstream unvalidated; the last three are `PUT  /v1/...`, a double space after the method).
#[tokio::test(flavor = "multi_thread")]
async fn targets_not_rooted_at_a_slash_never_carry_an_unvalidated_finish_body_upstream() {
    assert_targets_refused_before_the_upstream(|id| {
        vec![
            format!("\\v1/files/uploads/{id}"),
            format!("v1/files/uploads/{id}"),
            format!("/v1\t/files/uploads/{id}"),
            format!("\\V1\\files\\uploads\\{id}"),
            format!(" /v1/files/uploads/{id}"),
            format!("  /v1/files/uploads/{id}"),
            format!("%20/v1/files/uploads/{id}"),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_anywhere_never_carry_an_unvalidated_finish_body_upstream() {
    assert_targets_refused_before_the_upstream(|id| {
        vec![
            format!("/x/../v1/files/uploads/{id}"),
            format!("//v1/files/uploads/{id}"),
            format!("/v1;x/files/uploads/{id}"),
            format!("/v1%2Ffiles/uploads/{id}"),
            format!("/v1%2ffiles%2fuploads%2f{id}"),
            format!("/v1\\files/uploads/{id}"),
            format!("/./v1/files/uploads/{id}"),
            format!("/x/%2e%2e/v1/files/uploads/{id}"),
            format!("/x/%252e%252e/v1/files/uploads/{id}"),
            format!("/x/..;/v1/files/uploads/{id}"),
            format!("/v1%u002ffiles/uploads/{id}"),
            format!("/%2e/v1/files/uploads/{id}"),
            format!("/V1/./files/uploads/{id}"),
            format!("/v1./files/uploads/{id}"),
            format!("http://evil/v1/files/uploads/{id}"),
        ]
    })
    .await;
}

/// Found by a second black-box attack: network-path references (`//host/v1/...`, read by
/// URL parsers as authority + path) and a method spelled in lower case went upstream
/// unvalidated and unlimited.
#[tokio::test(flavor = "multi_thread")]
async fn network_paths_and_lower_case_methods_never_carry_an_unvalidated_finish_body() {
    assert_targets_refused_before_the_upstream(|id| {
        vec![
            format!("//x/v1/files/uploads/{id}"),
            format!("//x:80/v1/files/uploads/{id}"),
            format!("//v1.example/v1/files/uploads/{id}"),
        ]
    })
    .await;
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    for method in ["put", "Put", "pUT"] {
        let request =
            String::from_utf8(put(&finish_path(), &token, r#"{"upload":{"nb_chunks":0}}"#))
                .unwrap()
                .replacen("PUT", method, 1);
        let (response, _) = raw(gateway.addr, request.as_bytes());
        assert_eq!(status_of(&response), 400, "{method}: {response}");
        assert_eq!(body_of(&response), INVALID_INPUT, "{method}");
    }
    assert!(service.received().is_empty());
}

/// Found by a second black-box attack: an HTTP/1.1 request without `Host` was forwarded (two
/// are a routing differential), and a finish call's `Content-Range` or digest went upstream with
/// the rewritten body.
#[tokio::test(flavor = "multi_thread")]
async fn host_must_be_one_and_stale_body_descriptions_are_dropped() {
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    for hosts in ["", "Host: a\r\nHost: b\r\n"] {
        let request = format!(
            "GET /v1/other HTTP/1.1\r\n{hosts}Authorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        let (response, _) = raw(gateway.addr, request.as_bytes());
        assert_eq!(status_of(&response), 400, "{hosts:?}: {response}");
    }
    assert!(service.received().is_empty());
    let body = r#"{"upload": {"nb_chunks": 1}}"#;
    let request = String::from_utf8(put(&finish_path(), &token, body))
        .unwrap()
        .replacen(
            "Connection: close\r\n",
            "Connection: close\r\nContent-Range: bytes 0-27/28\r\nContent-MD5: x\r\n\
             Content-Digest: sha-256=:x:\r\n",
            1,
        );
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    let received = service.received();
    let headers = &received.last().unwrap().headers;
    for name in ["content-range", "content-md5", "content-digest"] {
        assert!(!headers.contains_key(name), "{name} went upstream");
    }
}

/// Found by a second black-box attack: the first `Authorization` was verified and both went
/// upstream; and a `Content-Length` list or repeated field was relayed as sent.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_authorization_and_content_length_lists_are_refused() {
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    let request = format!(
        "GET /v1/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Authorization: Bearer forged.token.here\r\nConnection: close\r\n\r\n"
    );
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert!(
        matches!(status_of(&response), 401 | 403),
        "a repeated Authorization was accepted: {response}"
    );
    for length in ["26, 26", "26,26"] {
        let body = r#"{"upload":{"nb_chunks":1}}"#;
        let request = format!(
            "PUT /v1/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {length}\r\nConnection: close\r\n\r\n{body}"
        );
        let (response, _) = raw(gateway.addr, request.as_bytes());
        assert_eq!(status_of(&response), 400, "{length}: {response}");
    }
    let body = r#"{"upload":{"nb_chunks":1}}"#;
    let request = format!(
        "PUT /v1/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 26\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{body}"
    );
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(service.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tricks_that_stay_outside_the_api_are_forwarded_unchanged() {
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    let request = format!(
        "GET /static/a;jsessionid=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert_ne!(status_of(&response), 400, "{response}");
    assert_eq!(service.received()[0].uri.path(), "/static/a;jsessionid=1");
}

// ---------------------------------------------------------------------------------------------
// 2. Upstream failures after the head: aborted, never disguised

/// Reads a response with reqwest and says whether its body arrived whole.
async fn body_completes(resp: reqwest::Response) -> bool {
    resp.bytes().await.is_ok()
}

/// A broken upstream answer on a rendered route: either seen before the head went out (the
/// answer is buffered for rendering) and answered with the 502 envelope, or seen after it and
/// the connection aborted. Never a complete answer of anything else.
async fn assert_502_envelope_or_aborted(resp: reqwest::Response) {
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(body) => {
            assert_eq!(status, 502);
            assert!(String::from_utf8_lossy(&body).contains("0x0000001"));
        }
        Err(_) => assert_eq!(status, 200),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_upstream_body_aborts_the_client_connection_and_logs_502() {
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\npartial",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    for path in ["/v1/files/other".to_owned(), "/elsewhere".to_owned()] {
        let resp = client()
            .get(gateway.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(!body_completes(resp).await, "{path}: body looked complete");
    }
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token)
        .send()
        .await
        .unwrap();
    assert!(
        !body_completes(resp).await,
        "finish call: body looked complete"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = access_lines(&gateway.logs());
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["status"], 502, "{line}");
        assert_eq!(line["aborted"], true, "{line}");
    }
    let metrics = http_get_blocking(gateway.admin, "/metrics").unwrap();
    assert!(metrics.contains(r#"status="502""#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunk_or_reset_after_the_head_is_never_completed_with_an_envelope() {
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n{\"a\":\r\nZZ\r\ngarbage",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    let resp = client()
        .get(gateway.url("/v1/files/other"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_502_envelope_or_aborted(resp).await;
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nZZ\r\n",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    let request =
        format!("GET /v1/files/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let (response, closed) = raw(gateway.addr, request.as_bytes());
    assert!(closed);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.contains("0x0000001"),
        "envelope spliced: {response}"
    );
    assert!(!response.ends_with("0\r\n\r\n"), "completed: {response:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. + 4. The request head: size and time

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_max_header_bytes_gets_431_in_the_format_asked() {
    let (service, _issuer, gateway) = started().await;
    let filler = "a".repeat(40_000);
    let request = format!("GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let (response, closed) = raw(gateway.addr, request.as_bytes());
    assert_eq!(status_of(&response), 431, "{response}");
    assert_eq!(body_of(&response), INVALID_INPUT);
    assert!(closed);
    let request = format!("GET /v1/x?format=xml HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert_eq!(status_of(&response), 431, "{response}");
    assert!(body_of(&response).contains("<error_code>0x0230001</error_code>"));
    // Many small headers count too, and nothing reached the upstream.
    // Many small headers: past Pingora's 256 headers it is malformed (400), past the size 431.
    let many: String = (0..6000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (response, _) = raw(
        gateway.addr,
        format!("GET /v1/x HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert!(matches!(status_of(&response), 400 | 431), "{response}");
    assert_eq!(body_of(&response), INVALID_INPUT);
    assert!(service.received().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = access_lines(&gateway.logs());
    assert!(lines.iter().all(|l| l["route"] == "malformed"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["status"] == 431).count(), 2);
    assert_eq!(lines.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_just_under_the_limit_is_served() {
    let (_service, issuer, gateway) = started().await;
    let token = token(&issuer);
    let base = format!(
        "GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nX-F: \r\n\r\n"
    );
    let filler = "b".repeat(32768 - base.len());
    let request = base.replace("X-F: ", &format!("X-F: {filler}"));
    assert_eq!(request.len(), 32768);
    let (response, _) = raw(gateway.addr, request.as_bytes());
    assert_eq!(
        status_of(&response),
        200,
        "{}",
        &response[..response.len().min(300)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_head_is_cut_off_at_the_header_timeout() {
    let (_service, _issuer, gateway) = started_with(&[("server", "header_timeout_ms = 600")]).await;
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let head =
        b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    'drip: for b in head.iter().cycle().take(200) {
        if stream.write_all(&[*b]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break 'drip;
            }
            Ok(_) => panic!("answered a head that never finished"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed_after = Some(started.elapsed());
                break 'drip;
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("connection never closed");
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(500),
        "{closed_after:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = access_lines(&gateway.logs());
    assert!(
        lines
            .iter()
            .any(|l| l["route"] == "malformed" && l["reason"] == "header_timeout"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_is_closed_after_keepalive_timeout() {
    let (_service, issuer, gateway) = started_with(&[("server", "keepalive_timeout_s = 1")]).await;
    let token = token(&issuer);
    let mut stream = TcpStream::connect(gateway.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 8192];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then silence: the gateway closes the connection.
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => panic!("not closed: {e}"),
        }
    }
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
}

async fn started_with(
    extra: &[(&'static str, &str)],
) -> (
    upload_gateway::demo::upload_service::UploadService,
    upload_gateway::demo::issuer::Issuer,
    Gateway,
) {
    let service = upload_service().await;
    let issuer = issuer().await;
    let mut config = GatewayConfig::new(vec![service.addr()], &issuer);
    for (section, lines) in extra {
        config = config.with(section, lines);
    }
    let gateway = Gateway::start(&config);
    (service, issuer, gateway)
}

#[test]
fn sixty_four_pending_one_megabyte_heads_stay_bounded_in_memory() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_service, _issuer, gateway) = runtime.block_on(started());
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap()
    };
    let before = rss(gateway.pid());
    let chunk = vec![b'a'; 64 * 1024];
    let mut streams = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(gateway.addr).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let _ = s.write_all(b"GET /v1/x HTTP/1.1\r\nX-Big: ");
        for _ in 0..16 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        streams.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = rss(gateway.pid());
    eprintln!("RSS before {before} kB, with 64 pending 1 MB heads {during} kB");
    // Without the edge limit each connection buffers its head: 64 MB and more.
    assert!(
        during < before + 16 * 1024,
        "RSS grew from {before} kB to {during} kB"
    );
    drop(streams);
}

// ---------------------------------------------------------------------------------------------
// 5. A dripping upstream

#[tokio::test(flavor = "multi_thread")]
async fn a_dripping_upstream_is_cut_at_the_response_timeout() {
    // The head arrives, then one body byte every 100 ms: per-read timeouts never fire.
    let upstream = RawUpstream::start(vec![
        Step::Send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"),
        Step::Drip(&[b'x'; 1000], Duration::from_millis(100)),
    ])
    .await;
    let (gateway, token) =
        gateway_over(upstream.addr, &[("upstream", "response_timeout_ms = 1000")]).await;
    for call in ["finish", "api", "other"] {
        let started = Instant::now();
        let request = match call {
            "finish" => finish_call(&client(), gateway.url(&finish_path()), &token),
            "api" => client().get(gateway.url("/v1/files/x")).bearer_auth(&token),
            _ => client().get(gateway.url("/outside")).bearer_auth(&token),
        };
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{call}");
        assert!(!body_completes(resp).await, "{call}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "{call}: {took:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = access_lines(&gateway.logs());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["status"] == 504), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_dripping_its_head_gets_504_before_anything_was_sent() {
    let upstream = RawUpstream::start(vec![Step::Drip(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        Duration::from_millis(100),
    )])
    .await;
    let (gateway, token) =
        gateway_over(upstream.addr, &[("upstream", "response_timeout_ms = 800")]).await;
    for path in [finish_path(), "/v1/files/x".to_owned()] {
        let started = Instant::now();
        let request = if path.contains("uploads") {
            finish_call(&client(), gateway.url(&path), &token)
        } else {
            client().get(gateway.url(&path)).bearer_auth(&token)
        };
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 504, "{path}");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(resp.text().await.unwrap().contains("0x0000001"));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Secrets in the log

#[tokio::test(flavor = "multi_thread")]
async fn no_query_token_header_or_body_byte_reaches_the_log() {
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: session=UPSTREAMSECRET\r\nBad Header Line UPSTREAMSECRET\r\n\r\n",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    let urls = [
        "/v1/files/x?access_token=QUERYSECRET",
        "/outside?access_token=QUERYSECRET",
    ];
    for url in urls {
        let resp = client()
            .get(gateway.url(url))
            .bearer_auth(&token)
            .header("x-api-key", "HEADERSECRET")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{url}");
    }
    let resp = client()
        .put(gateway.url(&format!("{}?access_token=QUERYSECRET", finish_path())))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1,"note":"BODYSECRET"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    // A malformed head carrying secrets too.
    let (response, _) = raw(
        gateway.addr,
        b"GET /v1/x?access_token=QUERYSECRET HTTP/1.1\r\nAuthorization: Bearer HEADERSECRET\r\nBad Header\r\n\r\n",
    );
    assert_eq!(status_of(&response), 400, "{response}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gateway.stop_and_logs();
    for secret in [
        "QUERYSECRET",
        "HEADERSECRET",
        "UPSTREAMSECRET",
        "BODYSECRET",
        &token,
    ] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A JWKS with no usable key

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_without_usable_keys_never_replaces_the_good_set() {
    let service = upload_service().await;
    let issuer = issuer_with(vec![rsa_key("k1")], 1).await;
    let config =
        GatewayConfig::new(vec![service.addr()], &issuer).with("auth", "jwks_min_refresh_s = 1");
    let gateway = Gateway::start(&config);
    let token = token(&issuer);
    // Now the IdP publishes an empty set, then one whose only key is too small to use.
    issuer.set_keys(Vec::new());
    let fetches = issuer.fetch_count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetch_count() < fetches + 2 {
        assert!(Instant::now() < deadline, "no refresh happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = finish_call(&client(), gateway.url(&finish_path()), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the good set was replaced");
    let metrics = http_get_blocking(gateway.admin, "/metrics").unwrap();
    assert!(
        metrics
            .contains(r#"upload_gateway_jwks_fetches_total{outcome="error",provider="default"}"#),
        "{metrics}"
    );
    assert!(gateway.logs().contains("no usable key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_gateway_whose_jwks_is_empty_is_not_ready() {
    let service = upload_service().await;
    let issuer = issuer_with(Vec::new(), 300).await;
    let config = GatewayConfig::new(vec![service.addr()], &issuer);
    let mut gateway = Gateway::spawn(&config, &[]);
    gateway.wait_listening();
    // Give it time to fetch the (empty) set and the upstream health check to pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let readyz = http_get_blocking(gateway.admin, "/readyz").unwrap();
    assert!(!readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    let minted = issuer.mint(&issuer.claims("alice", AUDIENCE, 3600));
    // No key to mint with either: a token from anywhere is answered 503.
    let bearer = minted.unwrap_or_else(|_| "a.b.c".into());
    let resp = finish_call(&client(), gateway.url(&finish_path()), &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(service.received().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 8. Other body fields byte-exact

#[tokio::test(flavor = "multi_thread")]
async fn other_body_fields_reach_the_upstream_digit_for_digit() {
    let (service, issuer, gateway) = started().await;
    let body = r#"{"upload":{"nb_chunks":2,"size":12345678901234567890123,"ratio":1.10,"e":1E+400,"id":123456789012345678901234567890}}"#;
    let resp = client()
        .put(gateway.url(&finish_path()))
        .bearer_auth(token(&issuer))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    // 1E+400 overflows a double: refused, like every number serde_json cannot read.
    assert_eq!(resp.status(), 400);
    let body = r#"{"upload": {"nb_chunks": 2, "size": 12345678901234567890123, "ratio": 1.10, "id": -123456789012345678901234567890}}"#;
    let resp = client()
        .put(gateway.url(&finish_path()))
        .bearer_auth(token(&issuer))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = service.received();
    assert_eq!(
        String::from_utf8_lossy(&received[0].body),
        r#"{"upload":{"nb_chunks":2,"size":12345678901234567890123,"ratio":1.10,"id":-123456789012345678901234567890}}"#
    );
}

// ---------------------------------------------------------------------------------------------
// Also seen: 204/304 framing, malformed requests

#[tokio::test(flavor = "multi_thread")]
async fn no_content_and_not_modified_are_relayed_without_framing() {
    for (status_line, code) in [
        (&b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Type: application/json\r\n\r\n"[..], 204),
        (&b"HTTP/1.1 304 Not Modified\r\nContent-Length: 120\r\nETag: \"x\"\r\n\r\n"[..], 304),
    ] {
        let upstream = RawUpstream::start(vec![Step::Send(status_line)]).await;
        let (gateway, token) = gateway_over(upstream.addr, &[]).await;
        let put = put(&finish_path(), &token, r#"{"upload":{"nb_chunks":1}}"#);
        let get = format!(
            "GET /v1/files/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        for request in [put, get.into_bytes()] {
            let (response, _) = raw(gateway.addr, &request);
            assert_eq!(status_of(&response), code, "{response}");
            let head = response.to_ascii_lowercase();
            assert!(!head.contains("content-length"), "{response}");
            assert!(!head.contains("transfer-encoding"), "{response}");
            assert!(body_of(&response).is_empty(), "{response}");
        }
        assert_eq!(upstream.requests(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_the_envelope_and_are_counted_and_logged() {
    let (service, _issuer, gateway) = started().await;
    for request in [
        &b"GET /v1/x HTTP/1.1\r\nBad Header Line\r\n\r\n"[..],
        b"GET /v1/x?format=xml HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        // Pingora's bare 405 for CONNECT, before any phase (found by a black-box attack).
        b"CONNECT /v1/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (response, closed) = raw(gateway.addr, request);
        assert_eq!(status_of(&response), 400, "{response}");
        assert!(body_of(&response).contains("0x0230001"), "{response}");
        assert!(closed);
    }
    let (response, _) = raw(
        gateway.addr,
        b"GET /v1/x?format=xml HTTP/1.1\r\nBad Header Line\r\n\r\n",
    );
    assert!(
        body_of(&response).contains("<error_code>0x0230001</error_code>"),
        "{response}"
    );
    assert!(service.received().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = http_get_blocking(gateway.admin, "/metrics").unwrap();
    assert!(
        metrics.contains(r#"upload_gateway_requests_total{route="malformed",status="400"} 6"#),
        "{metrics}"
    );
    let lines = access_lines(&gateway.logs());
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines.iter().all(|l| l["route"] == "malformed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_body_that_claims_json_but_is_not_is_a_failure_never_relabelled() {
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":tru",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    // The finish call buffers before answering: a 502 envelope, nothing of the upstream's.
    let url = gateway.url(&format!("{}?format=xml", finish_path()));
    let resp = finish_call(&client(), url, &token).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<error_code>0x0000001</error_code>"));
    // Other API routes: never a complete answer labelled XML carrying the broken JSON.
    let resp = client()
        .get(gateway.url("/v1/files/x?format=xml"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_502_envelope_or_aborted(resp).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = access_lines(&gateway.logs());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["status"] == 502), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop headers: one list, every route, both ways

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_never_reach_the_upstream_on_any_route() {
    let (service, issuer, gateway) = started().await;
    let token = token(&issuer);
    for path in ["/v1/anything", "/elsewhere", "/v1/files/uploads"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
             Connection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
             TE: trailers\r\nProxy-Authorization: Basic eDp5\r\nX-Kept: 1\r\n\r\n"
        );
        let (response, _) = raw(gateway.addr, request.as_bytes());
        assert!(status_of(&response) > 0, "{path}: {response}");
        let received = service.received();
        let upstream = received.last().expect("forwarded");
        assert_eq!(upstream.uri.path(), path);
        for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
            assert!(
                upstream.headers.get(gone).is_none(),
                "{path}: {gone} reached the upstream"
            );
        }
        assert_eq!(upstream.headers["x-kept"], "1", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_of_the_upstream_never_reach_the_client_on_any_route() {
    let upstream = RawUpstream::start(vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
          Connection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Authenticate: Basic\r\nX-Kept: 1\r\n\r\nok",
    )])
    .await;
    let (gateway, token) = gateway_over(upstream.addr, &[]).await;
    for path in ["/v1/files/other", "/elsewhere"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        let (response, _) = raw(gateway.addr, request.as_bytes());
        assert_eq!(status_of(&response), 200, "{path}: {response}");
        let head = response.split_once("\r\n\r\n").map_or("", |(h, _)| h);
        let head = head.to_ascii_lowercase();
        for gone in ["x-internal:", "keep-alive:", "proxy-authenticate:"] {
            assert!(
                !head.contains(gone),
                "{path}: {gone} reached the client\n{head}"
            );
        }
        assert!(head.contains("x-kept: 1"), "{path}: {head}");
        assert_eq!(body_of(&response), "ok");
    }
}
