//! End to end: the command line (`check`, `--help`, missing config).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::process::Command;

fn check(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &str = "[auth]\njwks_url = \"http://127.0.0.1:1/jwks.json\"\n";

#[test]
fn check_accepts_the_shipped_example_and_prints_the_effective_config() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.toml")).unwrap();
    let (ok, stdout, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("max_body_bytes = 16384"), "{stdout}");
    assert!(stdout.contains("[observability]"), "{stdout}");
}

#[test]
fn check_prints_defaults_for_missing_keys() {
    let (ok, stdout, _) = check(BASE);
    assert!(ok);
    assert!(stdout.contains("path_prefix = \"/v1\""), "{stdout}");
    assert!(stdout.contains("read_timeout_ms = 30000"), "{stdout}");
}

#[test]
fn check_rejects_each_invalid_value_naming_the_key() {
    let cases = [
        (
            "[server]\nmax_body_bytes = 70000\n",
            "server.max_body_bytes",
        ),
        ("algorithms = [\"HS256\"]\n", "auth.algorithms"),
        ("algorithms = [\"RS999\"]\n", "auth.algorithms"),
        ("algorithms = [\"none\"]\n", "auth.algorithms"),
        ("[upstream]\nservers = []\n", "upstream.servers"),
        (
            "[api]\nupload_id_pattern = \"[unclosed\"\n",
            "api.upload_id_pattern",
        ),
        ("[server]\nthreads = 0\n", "server.threads"),
        (
            "[observability]\nlog_format = \"xml\"\n",
            "observability.log_format",
        ),
    ];
    for (extra, key) in cases {
        let (ok, _, stderr) = check(&format!("{BASE}{extra}"));
        assert!(!ok, "accepted {extra:?}");
        assert!(stderr.contains(key), "{extra:?}: {stderr}");
    }
}

#[test]
fn check_rejects_unknown_keys_naming_them() {
    let (ok, _, stderr) = check(&format!("{BASE}[server]\nlisten_port = 80\n"));
    assert!(!ok);
    assert!(stderr.contains("listen_port"), "{stderr}");
}

#[test]
fn running_without_a_config_explains_what_is_missing() {
    let out = Command::new(common::binary()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn check_names_the_line_and_the_key_of_every_kind_of_problem() {
    let cases = [
        (
            "[server]\nthreads = \"two\"\n",
            "line 2: server.threads: invalid type",
        ),
        (
            "[server]\nlisten = []\n\nthread = 2\n",
            "line 4: server.thread: unknown key",
        ),
        ("[server]\nthreads = = 2\n", "line 2: server.threads:"),
        ("[upstream]\nservers = [\"a:1\"]\n[api\n", "line 3: api:"),
        (
            "[api]\nupload_id_pattern = \"[0-9a-f]{24}\"\n",
            "line 2: api.upload_id_pattern: must be anchored",
        ),
        (
            "[server]\nmax_body_bytes = 70000\n",
            "line 2: server.max_body_bytes: must be between",
        ),
    ];
    for (text, expected) in cases {
        let (ok, _, stderr) = check(&format!("{text}{BASE}"));
        assert!(!ok, "accepted {text:?}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn check_accepts_upstream_names_that_do_not_resolve_yet() {
    let (ok, stdout, stderr) = check(&format!(
        "{BASE}[upstream]\nservers = [\"upload-service.not-yet.invalid:9000\"]\n"
    ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("upload-service.not-yet.invalid:9000"),
        "{stdout}"
    );
}

#[test]
fn check_names_the_line_of_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, b"[server]\nthreads = 2\nlisten = [\"\xff\"]\n").unwrap();
    let out = Command::new(common::binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 3: server.listen: not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn the_two_provider_example_in_the_shipped_config_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.toml")).unwrap();
    let start = text.find("#   [[auth.providers]]").expect("no example");
    let end = start + text[start..].find("# Where the signing keys").unwrap();
    let example: String = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let (ok, stdout, stderr) = check(&format!("[auth]\nleeway_s = 30\n\n{example}"));
    assert!(ok, "{example}\n{stderr}");
    assert_eq!(stdout.matches("[[auth.providers]]").count(), 2, "{stdout}");
    assert!(stdout.contains("name = \"partner\""), "{stdout}");
}
