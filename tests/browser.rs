//! End to end with a real browser: a page served from one loopback origin calls the gateway on
//! another with `fetch`, a bearer token and a JSON body (so Chromium sends a preflight first),
//! and reads the answer, its exposed `X-Request-Id`, and the gateway's own 403 envelope.
//! Headless Chromium from Debian's packages (`scripts/setup` installs it), run with
//! `--dump-dom`: the page writes what it saw into the document, which Chromium prints.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    issuer, loopback, token, upload_service, Gateway, GatewayConfig, DOCUMENTED_UPLOAD_ID,
};
use upload_gateway::demo::http::{respond, serve};

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.to_owned();
        }
    }
    panic!("no Chromium on PATH: run scripts/setup (it installs Debian's chromium)");
}

fn page(gateway: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
(async () => {{
  const out = document.getElementById('out');
  const url = '{gateway}/v1/files/uploads/{DOCUMENTED_UPLOAD_ID}?human=true';
  const body = JSON.stringify({{upload: {{nb_chunks: 1}}}});
  try {{
    const ok = await fetch(url, {{method: 'PUT', body,
      headers: {{'Authorization': 'Bearer {token}', 'Content-Type': 'application/json'}}}});
    const okBody = await ok.json();
    const refused = await fetch(url, {{method: 'PUT', body,
      headers: {{'Content-Type': 'application/json'}}}});
    const refusedBody = await refused.json();
    out.textContent = JSON.stringify({{
      status: ok.status, upload: okBody.upload.status, requestId: ok.headers.get('x-request-id'),
      refused: refused.status, code: refusedBody.error.error_code}});
  }} catch (e) {{
    out.textContent = 'FAILED ' + e;
  }}
}})();
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_page_on_another_origin_calls_the_gateway_through_cors() {
    let browser = chromium();
    let service = upload_service().await;
    let issuer = issuer().await;
    // The page's server first: its origin goes into the gateway's configuration.
    let html = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let served = html.clone();
    let page_server = serve(loopback(), move |_req| {
        let body = served.lock().unwrap().clone();
        async move { respond(200, "text/html; charset=utf-8", body) }
    })
    .await
    .unwrap();
    let origin = format!("http://{}", page_server.addr());
    let mut config = GatewayConfig::new(vec![service.addr()], &issuer);
    config.extra_tail = Some(format!("[cors]\nallowed_origins = [\"{origin}\"]\n"));
    let gateway = Gateway::start(&config);
    *html.lock().unwrap() = page(&format!("http://{}", gateway.addr), &token(&issuer));

    let profile = tempfile::tempdir().unwrap();
    let url = format!("{origin}/");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&browser)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--virtual-time-budget=15000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--dump-dom", &url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium did not finish")
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"out\">").expect("no output element") + 14;
    let end = start + dom[start..].find("</pre>").unwrap();
    let seen = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap_or_else(|_| {
        panic!(
            "the page saw: {seen}\nchromium stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["upload"], "COMPLETING", "{seen}");
    assert!(
        seen["requestId"].as_str().is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["refused"], 403, "{seen}");
    assert_eq!(seen["code"], "0x0000003", "{seen}");
    // The preflights were answered by the gateway: only the authenticated PUT went upstream.
    let received = service.received();
    assert_eq!(
        received.len(),
        1,
        "{:?}",
        received.iter().map(|r| &r.method).collect::<Vec<_>>()
    );
    assert_eq!(received[0].method, http::Method::PUT);
    drop(page_server);
}
