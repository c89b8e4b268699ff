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
    let mut fresh_tokens = Vec::new();
    let mut commands = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("export TOKEN=$(") {
            fresh_tokens.push(line.clone());
        } else if line.starts_with("export TOKEN=") {
            export = Some(line.clone());
        } else if line.starts_with("curl ") {
            commands.push(line.clone());
        } else if line.contains("Ctrl-C") {
            break;
        }
    }
    let export = export.expect("the demo printed no token");
    // One for the demo issuer, one for the second provider ("partner").
    assert_eq!(fresh_tokens.len(), 2, "{fresh_tokens:?}");
    assert_eq!(commands.len(), 3, "{commands:?}");

    // Ready once the key set is loaded and the upload service is healthy.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get_blocking(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "demo never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let run_with = |export: &str, command: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{export}\n{command}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let run = |command: &str| run_with(&export, command);
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
    assert!(!json.contains("completed_at"), "{json}");

    // show_null shows the demo answer's unset field.
    let with_null = run(&commands[2]);
    let document: serde_json::Value = serde_json::from_str(&with_null).unwrap();
    assert!(document["upload"]["completed_at"].is_null(), "{with_null}");
    assert!(with_null.contains("\"completed_at\": null"), "{with_null}");

    // The printed ways to a fresh token give ones the gateway accepts, and new ones.
    for fresh_token in &fresh_tokens {
        let fresh = run_with(fresh_token, &format!("echo \"$TOKEN\"\n{}", commands[0]));
        let (token, answer) = fresh.split_once('\n').unwrap();
        assert!(token.len() > 100, "{fresh}");
        assert!(!export.contains(token), "the same token again");
        assert!(answer.contains("COMPLETING"), "{answer}");
    }
}

#[test]
fn the_demo_refuses_to_start_when_its_port_is_taken_and_prints_no_token() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let admin = free_port();
    let out = Command::new(binary())
        .args(["demo", "--listen", &port.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("TOKEN"), "{stdout}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
}

#[test]
fn the_demo_accepts_host_names() {
    let listen = free_port();
    let admin = free_port();
    let mut child = Command::new(binary())
        .args(["demo", "--listen", &format!("localhost:{}", listen.port())])
        .args(["--admin-listen", &format!("localhost:{}", admin.port())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let banner: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("Ctrl-C"))
        .collect();
    assert!(
        banner.iter().any(|l| l.starts_with("export TOKEN=")),
        "{banner:?}"
    );
}
