//! End to end: `upload-gateway demo` as a newcomer runs it: start it, paste the printed token
//! export and curl commands into a shell, get the documented COMPLETING response in JSON and
//! in XML.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port, http_get_blocking};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn printed_curl_commands_return_the_documented_response_in_json_and_xml() {
    let listen = free_port();
    let admin = free_port();
    let mut child = Command::new(binary())
        .args(["demo", "--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);

    let mut export = None;
    let mut commands = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("export TOKEN=") {
            export = Some(line.clone());
        } else if line.starts_with("curl ") {
            commands.push(line.clone());
        } else if line.contains("Ctrl-C") {
            break;
        }
    }
    let export = export.expect("the demo printed no token");
    assert_eq!(commands.len(), 2, "{commands:?}");

    // Ready once the key set is loaded and the upload service is healthy.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get_blocking(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "demo never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = |command: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{export}\n{command}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json = run(&commands[0]);
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(document["upload"]["status"], "COMPLETING");
    assert_eq!(document["upload"]["nb_chunks"], 1);
    assert!(json.starts_with("{\n  \"upload\": {\n"), "{json}");

    let xml = run(&commands[1]);
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<upload>\n"),
        "{xml}"
    );
    assert!(xml.contains("  <status>COMPLETING</status>\n"), "{xml}");
}
