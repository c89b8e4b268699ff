//! End to end: the finish-upload call through the real proxy (SPEC §4.1-4.3, §4.6, §4.7).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use quick_xml::events::Event;
use serde_json::Value;
use upload_gateway::demo::http::{respond, serve, ReceivedRequest, RunningServer};
use upload_gateway::demo::issuer::Issuer;
use upload_gateway::demo::upload_service::UploadService;

struct Setup {
    service: UploadService,
    issuer: Issuer,
    gateway: Gateway,
    token: String,
}

async fn setup() -> Setup {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let token = token(&issuer);
    Setup {
        service,
        issuer,
        gateway,
        token,
    }
}

impl Setup {
    fn put(&self, path_and_query: &str) -> reqwest::RequestBuilder {
        client()
            .put(self.gateway.url(path_and_query))
            .bearer_auth(&self.token)
    }

    /// A finish call with a token, a content type and a body.
    async fn finish(
        &self,
        path_and_query: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.put(path_and_query)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    fn upstream_calls(&self) -> usize {
        self.service.received().len()
    }
}

/// An upstream that answers every request with a fixed body and records what it got.
async fn fixed_upstream(
    content_type: &'static str,
    body: &'static [u8],
    extra_header: Option<(&'static str, &'static str)>,
) -> (RunningServer, Arc<Mutex<Vec<ReceivedRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = serve(loopback(), move |req| {
        record.lock().unwrap().push(req);
        async move {
            let mut resp = respond(200, content_type, body);
            if let Some((k, v)) = extra_header {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
    })
    .await
    .unwrap();
    (server, seen)
}

/// Parses an XML document to the end; returns the root name and every element name in order.
fn xml_elements(text: &str) -> (String, Vec<String>) {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut names = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) => {
                names.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap())
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (names.first().cloned().unwrap_or_default(), names)
}

const PRETTY_INVALID_INPUT: &str = "{\n  \"error\": {\n    \"error_code\": \"0x0230001\",\n    \"error_message\": \"Invalid Input\"\n  }\n}";

#[tokio::test(flavor = "multi_thread")]
async fn json_finish_call_forwards_canonical_json_and_renders_compact_json() {
    let s = setup().await;
    let resp = s
        .put(&format!("{}?format=json&trace=1", finish_path()))
        .header("content-type", "application/json; charset=utf-8")
        .header("accept", "application/xml")
        .body("\u{feff} { \"nb_chunks\" : 4 , \"note\": \"hi\" } ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["vary"], "Accept");
    let text = resp.text().await.unwrap();
    assert!(text.starts_with(r#"{"upload":{"form_post_url":"#), "{text}");
    assert!(!text.contains('\n'));

    let upstream = &s.service.received()[0];
    assert_eq!(
        upstream.body.as_ref(),
        br#"{"upload":{"nb_chunks":4,"note":"hi"}}"#
    );
    assert_eq!(upstream.headers["content-type"], "application/json");
    assert_eq!(
        upstream.headers["content-length"],
        upstream.body.len().to_string().as_str()
    );
    assert_eq!(upstream.headers["accept"], "application/json");
    assert_eq!(upstream.headers["accept-encoding"], "identity");
    assert_eq!(
        upstream.uri.query(),
        Some("trace=1"),
        "format never goes upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xml_body_reaches_the_upstream_as_canonical_json() {
    let s = setup().await;
    let resp = s.finish(&finish_path(), "application/xml", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><upload><nb_chunks>2</nb_chunks><name>a &amp; b</name></upload>").await;
    assert_eq!(resp.status(), 200);
    let upstream = &s.service.received()[0];
    assert_eq!(
        upstream.body.as_ref(),
        br#"{"upload":{"nb_chunks":2,"name":"a & b"}}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn format_xml_human_true_renders_indented_xml_with_the_upload_root() {
    let s = setup().await;
    let resp = s
        .finish(
            &format!("{}?format=xml&human=true", finish_path()),
            "application/json",
            r#"{"upload":{"nb_chunks":1}}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    assert!(resp.headers().get("content-length").is_none_or(|l| l
        .to_str()
        .unwrap()
        .parse::<usize>()
        .is_ok()));
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<upload>\n"),
        "{text}"
    );
    assert!(text.contains("\n  <status>COMPLETING</status>\n"), "{text}");
    assert!(
        text.contains("\n  <pipeline>\n    <id>547f3eede4b025bcbff38657</id>\n  </pipeline>\n"),
        "{text}"
    );
    let (root, names) = xml_elements(&text);
    assert_eq!(root, "upload");
    assert!(names.contains(&"nb_chunks".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_xml_selects_xml_for_success_and_errors() {
    let s = setup().await;
    let ok = s
        .put(&finish_path())
        .header("accept", "text/html;q=0.9, application/xml")
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap();
    assert_eq!(xml_elements(&text).0, "upload");

    let bad = s
        .put(&finish_path())
        .header("accept", "application/xml")
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    let text = bad.text().await.unwrap();
    assert!(text.contains("<error><error_code>0x0230001</error_code><error_message>Invalid Input</error_message></error>"), "{text}");
    let (root, names) = xml_elements(&text);
    assert_eq!(root, "error");
    assert_eq!(names, ["error", "error_code", "error_message"]);
    assert_eq!(
        s.upstream_calls(),
        1,
        "the invalid body never reached the upstream"
    );
}

/// The documented example, byte for byte as curl sends it: `-d` means
/// `application/x-www-form-urlencoded`, the single-quoted body keeps its backslashes, and the
/// trailing comma makes it invalid JSON; `-H "application/json"` has no colon and is not sent.
const DOCUMENTED_CURL_BODY: &str = "{ \\ \n \"upload\": { \\\n     \"nb_chunks\": 1, \\\n  } \\\n}";

#[tokio::test(flavor = "multi_thread")]
async fn documented_example_request_gets_a_pretty_400_envelope() {
    let s = setup().await;
    let resp = s
        .finish(
            &format!("{}?human=true&show_null=true", finish_path()),
            "application/x-www-form-urlencoded",
            DOCUMENTED_CURL_BODY,
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), PRETTY_INVALID_INPUT);
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_request_with_a_valid_body_and_curls_content_type_succeeds() {
    let s = setup().await;
    let resp = s
        .finish(
            &format!("{}?human=true&show_null=true", finish_path()),
            "application/x-www-form-urlencoded",
            "{ \"upload\": { \"nb_chunks\": 1 } }",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("{\n  \"upload\": {\n    \"form_post_url\""),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["upload"]["status"], "COMPLETING");
    assert_eq!(
        s.service.received()[0].uri.query(),
        Some("human=true&show_null=true")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn show_null_decides_whether_null_keys_survive_in_json_and_xml() {
    let (upstream, _) = fixed_upstream(
        "application/json",
        br#"{"upload":{"status":"COMPLETING","finished_at":null,"tags":[]}}"#,
        None,
    )
    .await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![upstream.addr()], &issuer));
    let token = token(&issuer);
    let get = |query: &str| {
        client()
            .get(gateway.url(&format!("/v1/files/uploads/x{query}")))
            .bearer_auth(&token)
            .send()
    };

    let hidden = get("").await.unwrap().text().await.unwrap();
    assert_eq!(hidden, r#"{"upload":{"status":"COMPLETING","tags":[]}}"#);
    let shown = get("?show_null=1").await.unwrap().text().await.unwrap();
    assert_eq!(
        shown,
        r#"{"upload":{"status":"COMPLETING","finished_at":null,"tags":[]}}"#
    );
    let xml = get("?show_null=true&format=xml")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains(r#"<finished_at xsi:nil="true"/>"#), "{xml}");
    assert!(
        xml.contains(r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#),
        "{xml}"
    );
    xml_elements(&xml);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_is_normalised_before_it_goes_upstream() {
    let s = setup().await;
    let resp = s
        .put(&format!(
            "{}?b=2&HUMAN=x&human=1&%66ormat=XML&show_null=0&human=TRUE&a=%20",
            finish_path()
        ))
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/xml; charset=utf-8"
    );
    assert_eq!(
        s.service.received()[0].uri.query(),
        Some("b=2&HUMAN=x&human=true&show_null=false&a=%20")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_or_conflicting_query_values_are_refused_before_the_upstream() {
    let s = setup().await;
    for query in [
        "human=maybe",
        "format=yaml",
        "show_null=2",
        "format=xml&format=json",
        "human=true&human=false",
    ] {
        let resp = s
            .finish(
                &format!("{}?{query}", finish_path()),
                "application/json",
                r#"{"upload":{"nb_chunks":1}}"#,
            )
            .await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json_value().await;
        assert_eq!(body["error"]["error_code"], "0x0230001", "{query}");
    }
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_upload_id_is_404_before_the_upstream() {
    let s = setup().await;
    let resp = s
        .finish(
            "/v1/files/uploads/not-an-id",
            "application/json",
            r#"{"upload":{"nb_chunks":1}}"#,
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"error_code":"0x0230002","error_message":"Requested file does not exist"}}"#
    );
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_is_413_whether_declared_or_streamed() {
    let s = setup().await;
    let big = format!(
        r#"{{"upload":{{"nb_chunks":1,"pad":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    let declared = s
        .finish(&finish_path(), "application/json", big.clone())
        .await;
    assert_eq!(declared.status(), 413);
    assert_eq!(
        declared.json_value().await["error"]["error_code"],
        "0x0230001"
    );

    // Chunked: no Content-Length, so the limit is enforced while reading.
    let addr = s.gateway.addr;
    let token = s.token.clone();
    let head = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            finish_path()
        );
        for chunk in big.as_bytes().chunks(1000) {
            request.push_str(&format!(
                "{:x}\r\n{}\r\n",
                chunk.len(),
                std::str::from_utf8(chunk).unwrap()
            ));
        }
        request.push_str("0\r\n\r\n");
        // The gateway may answer and close before it has read everything: ignore write errors.
        let _ = stream.write_all(request.as_bytes());
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bodies_are_400_and_never_reach_the_upstream() {
    let s = setup().await;
    let cases: [(&str, &str); 9] = [
        ("application/json", ""),
        ("application/json", r#"{"upload":{"nb_chunks":1.0}}"#),
        ("application/json", r#"{"upload":{"nb_chunks":"1"}}"#),
        ("application/json", r#"{"upload":{"nb_chunks":10001}}"#),
        (
            "application/json",
            r#"{"upload":{"nb_chunks":1,"nb_chunks":2}}"#,
        ),
        ("application/json", r#"{"upload":{"nb_chunks":1}} trailing"#),
        (
            "application/xml",
            "<!DOCTYPE upload><upload><nb_chunks>1</nb_chunks></upload>",
        ),
        ("application/xml", "<other><nb_chunks>1</nb_chunks></other>"),
        (
            "application/xml",
            "<upload><nb_chunks>1</nb_chunks><nb_chunks>2</nb_chunks></upload>",
        ),
    ];
    for (content_type, body) in cases {
        let resp = s.finish(&finish_path(), content_type, body).await;
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(resp.json_value().await["error"]["error_code"], "0x0230001");
    }
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_refusal_is_rendered_in_the_requested_format() {
    let s = setup().await;
    let resp = client()
        .put(
            s.gateway
                .url(&format!("{}?format=xml&human=bogus", finish_path())),
        )
        .header("authorization", "Bearer not-a-token")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let text = resp.text().await.unwrap();
    assert_eq!(xml_elements(&text).0, "error");
    assert!(
        text.contains("<error_code>0x0000003</error_code>"),
        "{text}"
    );
    assert_eq!(s.upstream_calls(), 0);
    drop(s.issuer);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_json_and_encoded_upstream_bodies_pass_through_untouched() {
    let (plain, _) = fixed_upstream("text/plain", b"plain {\"a\":null}", None).await;
    let (gzipped, seen) = fixed_upstream(
        "application/json",
        b"\x1f\x8b\x08\x00not-really-gzip",
        Some(("content-encoding", "gzip")),
    )
    .await;
    let issuer = issuer().await;
    let token = token(&issuer);
    for (upstream, expected) in [
        (plain.addr(), &b"plain {\"a\":null}"[..]),
        (gzipped.addr(), &b"\x1f\x8b\x08\x00not-really-gzip"[..]),
    ] {
        let gateway = Gateway::start(&GatewayConfig::new(vec![upstream], &issuer));
        let resp = client()
            .get(gateway.url("/v1/files/uploads/x?format=xml"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), expected);
        // The finish call's own exchange relays them just the same.
        let url = gateway.url(&format!("{}?format=xml", finish_path()));
        let resp = finish_call(&client(), url, &token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), expected);
    }
    assert_eq!(
        seen.lock().unwrap()[0].headers["accept-encoding"],
        "identity"
    );
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_bodies_are_refused_before_the_upstream() {
    let s = setup().await;
    let resp = s
        .put(&finish_path())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(s.upstream_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let s = setup().await;
    let addr = s.gateway.addr;
    let token = s.token.clone();
    let (interim, final_head) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let body = r#"{"upload":{"nb_chunks":1}}"#;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\nConnection: close\r\n\r\n",
            finish_path(),
            body.len()
        )
        .unwrap();
        // Like a strict client: no body until the server says continue.
        let mut interim = [0u8; 25];
        let read = stream.read(&mut interim).unwrap_or(0);
        let interim = String::from_utf8_lossy(&interim[..read]).into_owned();
        stream.write_all(body.as_bytes()).unwrap();
        let mut rest = String::new();
        let _ = stream.read_to_string(&mut rest);
        (interim, rest)
    })
    .await
    .unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    assert!(final_head.contains("HTTP/1.1 200"), "{final_head}");
    assert_eq!(s.upstream_calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_responses_drop_the_upstreams_etag_and_head_matches_get() {
    let (upstream, _) = fixed_upstream(
        "application/json",
        br#"{"upload":{"status":"COMPLETING"}}"#,
        Some(("etag", "\"json-v1\"")),
    )
    .await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![upstream.addr()], &issuer));
    let token = token(&issuer);
    let url = gateway.url("/v1/files/uploads/x?format=xml");
    let get = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert!(get.headers().get("etag").is_none());
    let head = client()
        .head(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-type"],
        get.headers()["content-type"]
    );
    assert!(head.headers().get("etag").is_none());
    assert!(head.headers().get("content-length").is_none());
}

/// An upstream speaking raw HTTP/1.1 over TCP: `answer(n)` gives the bytes written for the n-th
/// request on a connection (counting from 0), or `None` to close that connection unanswered.
async fn raw_upstream(
    answer: fn(usize) -> Option<Vec<u8>>,
) -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *counted.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    // One request: the header, then Content-Length bytes of body.
                    let body_start = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..body_start]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < body_start + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.drain(..body_start + length);
                    match answer(n) {
                        Some(bytes) => {
                            if stream.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    (addr, connections)
}

/// A finish call through a fresh gateway in front of `upstream`: status, headers and the whole
/// body, read before the gateway stops.
async fn finish_through(
    upstream: std::net::SocketAddr,
    query: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![upstream], &issuer));
    let url = gateway.url(&format!("{}{query}", finish_path()));
    let resp = finish_call(&client(), url, &token(&issuer))
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.text().await.unwrap();
    drop(gateway);
    (status, headers, body)
}

const INTERNAL_ERROR: &str =
    r#"{"error":{"error_code":"0x0000001","error_message":"Internal Error"}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn rendered_answer_carries_its_exact_length_instead_of_chunks() {
    let s = setup().await;
    let resp = s
        .finish(
            &format!("{}?format=xml&human=true", finish_path()),
            "application/json",
            r#"{"upload":{"nb_chunks":1}}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("transfer-encoding").is_none());
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = resp.text().await.unwrap();
    assert_eq!(length, text.len());
    assert!(text.starts_with("<?xml"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upstream_json_over_the_render_limit_is_a_502_envelope() {
    fn huge(_: usize) -> Option<Vec<u8>> {
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..20 {
            out.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        Some(out)
    }
    let (upstream, _) = raw_upstream(huge).await;
    let (status, _, body) = finish_through(upstream, "").await;
    assert_eq!(status, 502);
    assert_eq!(body, INTERNAL_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_answer_that_is_not_http_is_a_502_envelope() {
    fn garbage(_: usize) -> Option<Vec<u8>> {
        Some(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec())
    }
    let (upstream, _) = raw_upstream(garbage).await;
    let (status, _, body) = finish_through(upstream, "").await;
    assert_eq!(status, 502);
    assert_eq!(body, INTERNAL_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_the_upstream_dropped_is_retried_on_a_fresh_one() {
    // Each connection answers its first request and silently drops the second: the gateway's
    // pooled connection is dead when the next finish call takes it.
    fn once_per_connection(n: usize) -> Option<Vec<u8>> {
        let body = br#"{"upload":{"status":"COMPLETING"}}"#;
        (n == 0).then(|| {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        })
    }
    let (upstream, connections) = raw_upstream(once_per_connection).await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![upstream], &issuer));
    let token = token(&issuer);
    for i in 0..3 {
        let resp = finish_call(&client(), gateway.url(&finish_path()), &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "call {i}: {}", gateway.logs());
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"upload":{"status":"COMPLETING"}}"#
        );
    }
    // Three answers took three connections (plus health-check probes, which send nothing).
    assert!(*connections.lock().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_and_connection_nominated_headers_stay_with_the_gateway() {
    let s = setup().await;
    let resp = s
        .put(&finish_path())
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-kept", "1")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = &s.service.received()[0];
    assert!(upstream.headers.get("x-hop").is_none());
    assert!(upstream.headers.get("keep-alive").is_none());
    assert_eq!(upstream.headers["x-kept"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upstream_answers_are_joined_to_render_and_relayed_chunk_by_chunk() {
    fn chunked_json(_: usize) -> Option<Vec<u8>> {
        Some(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
              B\r\n{\"upload\":{\r\n13\r\n\"status\":\"COMPLETE\"\r\n2\r\n}}\r\n0\r\n\r\n"
                .to_vec(),
        )
    }
    fn chunked_text(_: usize) -> Option<Vec<u8>> {
        Some(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        )
    }
    let (json, _) = raw_upstream(chunked_json).await;
    let (status, headers, body) = finish_through(json, "?format=xml").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><upload><status>COMPLETE</status></upload>"
    );
    let (text, _) = raw_upstream(chunked_text).await;
    let (status, headers, body) = finish_through(text, "?format=xml").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, "hello world");
}
