//! End to end: the process's life as an operator sees it (SPEC §5): fail fast on listeners
//! that cannot open (at start and in `check`), the pid file, SIGTERM in the foreground and
//! under `--daemon`, SIGHUP, upstream names resolved at run time against a real (loopback)
//! DNS server, and the operator's signals: the startup line, JWKS errors with host and cause,
//! upstream latency from the upstream write, the new metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dns::DnsServer;
use common::{
    binary, client, finish_call, finish_path, free_port, http_get_blocking, issuer, token,
    upload_service, Gateway, GatewayConfig,
};
use upload_gateway::demo::upload_service::{UploadService, UploadServiceOptions};

/// A configuration file of the test's own, with `listen`, `admin` and extra TOML.
fn write_config(dir: &Path, listen: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n{extra}\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\n\
             [auth]\njwks_url = \"http://127.0.0.1:9/jwks.json\"\n\n\
             [observability]\nadmin_listen = \"{admin}\"\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs the gateway on `config` and waits for it to exit (at most 15 s): (success, output).
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (status.success(), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after 15 s: it did not fail fast");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}

#[test]
fn a_listener_that_cannot_open_stops_the_process_and_check_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let (_, other_key) = self_signed(dir.path(), "b");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_string_lossy().into_owned();
    let tls = |c: &str, k: &str| {
        format!(
            "tls_listen = [\"{}\"]\ntls_cert = \"{c}\"\ntls_key = \"{k}\"\n",
            free_port()
        )
    };
    // (listen, admin, extra [server] lines, the key the message must name, a detail)
    let cases: Vec<(SocketAddr, SocketAddr, String, &str, String)> = vec![
        (
            taken_addr,
            free_port(),
            String::new(),
            "server.listen",
            taken_addr.to_string(),
        ),
        (
            free_port(),
            taken_addr,
            String::new(),
            "observability.admin_listen",
            taken_addr.to_string(),
        ),
        (
            // A documentation address (RFC 5737): not on this machine, nothing is sent.
            "192.0.2.1:8080".parse().unwrap(),
            free_port(),
            String::new(),
            "server.listen",
            "192.0.2.1:8080".to_owned(),
        ),
        (
            free_port(),
            free_port(),
            tls(&cert, &other_key),
            "server.tls_key",
            "does not fit".to_owned(),
        ),
        (
            free_port(),
            free_port(),
            tls(&garbage, &key),
            "server.tls_cert",
            "no PEM certificate".to_owned(),
        ),
        (
            free_port(),
            free_port(),
            tls(&cert, &garbage),
            "server.tls_key",
            "no PEM private key".to_owned(),
        ),
    ];
    for (listen, admin, extra, key, detail) in cases {
        let config = write_config(dir.path(), listen, admin, &extra);
        let (ok, out) = run_to_exit(&["--config", &config]);
        assert!(!ok, "{key}: started anyway:\n{out}");
        assert!(out.contains(key), "{key}: {out}");
        assert!(out.contains(&detail), "{key} / {detail}: {out}");
        assert!(out.contains(": line "), "no line: {out}");
        let (ok, out) = run_to_exit(&["check", "--config", &config]);
        assert!(!ok, "check passed a config whose {key} cannot open");
        assert!(out.contains(key) && out.contains(&detail), "{out}");
        assert!(out.contains(": line "), "no line: {out}");
    }
    drop(taken);
}

/// A port taken while start-up waits for the first key set (here on an IdP that never
/// answers) still ends the process, non-zero, naming the key, instead of leaving it running
/// without its proxy port.
#[test]
fn a_port_taken_after_the_check_still_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let idp = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free_port();
    let admin = free_port();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n\
             [auth]\njwks_url = \"http://{}/jwks.json\"\n\
             [observability]\nadmin_listen = \"{admin}\"\n",
            idp.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first JWKS fetch arrives after the listeners were checked: take the port now.
    let (_held_idp_connection, _) = idp.accept().unwrap();
    let squatter = TcpListener::bind(listen).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // Never ready in the meantime.
        if let Some(answer) = http_get_blocking(admin, "/readyz") {
            assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        assert!(Instant::now() < deadline, "still running without its port");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("server.listen"), "{stderr}");
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_probes_the_listeners_and_names_every_missing_part() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The startup line lists the listeners.
    let logs = gateway.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("upload-gateway serving"))
        .unwrap_or_else(|| panic!("no startup line: {logs}"));
    assert!(line.contains(&gateway.addr.to_string()), "{line}");
    assert!(line.contains(&gateway.admin.to_string()), "{line}");
}

#[test]
fn the_pid_file_is_written_in_the_foreground_and_sigterm_exits_once_drained() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (service, issuer) = rt.block_on(async { (upload_service().await, issuer().await) });
    // A grace period far longer than the test waits: exiting early proves the drain watch.
    let mut gateway = Gateway::start(
        &GatewayConfig::new(vec![service.addr()], &issuer).with("server", "shutdown_grace_s = 60"),
    );
    let pid_file = gateway.config_path.with_file_name("gateway.pid");
    let written = std::fs::read_to_string(&pid_file).expect("no pid file in the foreground");
    assert_eq!(written.trim(), gateway.pid().to_string());
    let started = Instant::now();
    gateway.terminate();
    let (ok, logs) = gateway
        .wait_exit(Duration::from_secs(20))
        .expect("SIGTERM did not end the gateway");
    assert!(ok, "{logs}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!pid_file.exists(), "the pid file was left behind");
}

/// The daemon's pid, read from its pid file; it is killed when the guard drops.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn sigterm_under_daemon_exits_once_drained_and_removes_the_pid_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (service, issuer) = rt.block_on(async { (upload_service().await, issuer().await) });
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let admin = free_port();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\nshutdown_grace_s = 60\n\
             [upstream]\nservers = [\"{}\"]\n\
             [auth]\njwks_url = \"{}\"\n\
             [observability]\nadmin_listen = \"{admin}\"\n",
            service.addr(),
            issuer.jwks_url()
        ),
    )
    .unwrap();
    let pid_file = dir.path().join("daemon.pid");
    let status = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("--daemon")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--upgrade-sock")
        .arg(dir.path().join("upgrade.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the daemonising parent failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the daemon wrote no pid file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _guard = Daemon(pid);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "the daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    while alive(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon waited out its grace period"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_file.exists(), "the daemon left its pid file behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_fetches_the_key_sets_again_and_keeps_serving() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let before = issuer.fetch_count();
    gateway.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetch_count() == before {
        assert!(Instant::now() < deadline, "SIGHUP fetched nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = finish_call(&client(), gateway.url(&finish_path()), &token(&issuer))
        .send()
        .await
        .expect("the gateway died on SIGHUP");
    assert_eq!(answer.status(), 200);
    assert!(gateway.logs().contains("SIGHUP"), "{}", gateway.logs());
}

/// Two upload services on the same port of two loopback addresses, so one name can resolve to
/// either or both.
async fn services_on_two_addresses() -> (UploadService, UploadService, u16) {
    for _ in 0..20 {
        let a = UploadService::start(
            (Ipv4Addr::new(127, 0, 0, 1), 0).into(),
            UploadServiceOptions::default(),
        )
        .await
        .unwrap();
        let port = a.addr().port();
        if let Ok(b) = UploadService::start(
            (Ipv4Addr::new(127, 0, 0, 2), port).into(),
            UploadServiceOptions::default(),
        )
        .await
        {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_names_are_resolved_at_run_time_every_address_followed() {
    let (a, b, port) = services_on_two_addresses().await;
    let dns = DnsServer::start();
    let issuer = issuer().await;
    let config = GatewayConfig::new(vec![], &issuer)
        .with_server_names(&[format!("upload.service.test:{port}")])
        .with(
            "upstream",
            &format!(
                "resolve_interval_ms = 200\ndns_servers = [\"{}\"]",
                dns.addr
            ),
        );
    // The name does not resolve yet: the gateway starts, is not ready, answers 502.
    let gateway = Gateway::start(&config);
    let ready = || http_get_blocking(gateway.admin, "/readyz").unwrap_or_default();
    assert!(
        ready().contains("no upstream address resolved"),
        "{}",
        ready()
    );
    let http = client();
    let token = token(&issuer);
    let status = finish_call(&http, gateway.url(&finish_path()), &token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 502);

    // Which services answer within a few seconds of a DNS change.
    let reached = |expect_a: bool, expect_b: bool| {
        let http = http.clone();
        let url = gateway.url(&finish_path());
        let token = token.clone();
        let (a, b) = (&a, &b);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (before_a, before_b) = (a.received().len(), b.received().len());
                let mut ok = true;
                for _ in 0..6 {
                    let answer = finish_call(&http, url.clone(), &token)
                        .send()
                        .await
                        .unwrap();
                    ok &= answer.status() == 200;
                }
                let got_a = a.received().len() > before_a;
                let got_b = b.received().len() > before_b;
                if ok && got_a == expect_a && got_b == expect_b {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "expected a={expect_a} b={expect_b}, got a={got_a} b={got_b} (all 200: {ok})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    dns.set(&[Ipv4Addr::new(127, 0, 0, 1)]);
    reached(true, false).await;
    // A headless service grows: every address is used.
    dns.set(&[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]);
    reached(true, true).await;
    // And moves.
    dns.set(&[Ipv4Addr::new(127, 0, 0, 2)]);
    reached(false, true).await;
    assert!(dns.queries() >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_failure_is_logged_with_the_host_and_the_cause() {
    let service = upload_service().await;
    let closed = free_port();
    let issuer = issuer().await;
    let mut config = GatewayConfig::new(vec![service.addr()], &issuer);
    config.jwks_url = format!("http://{closed}/keys?secret=do-not-log");
    let mut gateway = Gateway::spawn(&config, &[]);
    gateway.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logs = gateway.logs();
        if let Some(line) = logs.lines().find(|l| l.contains("jwks fetch failed")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no fetch failure logged: {logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains(&closed.to_string()), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert!(!line.contains("do-not-log"), "{line}");
}

/// The upstream latency is the upstream's time: a client that drips its body for a second
/// makes the request long, not the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_latency_starts_at_the_upstream_write_and_new_metrics_are_exposed() {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let token = token(&issuer);
    let addr = gateway.addr;
    let path = finish_path();
    tokio::task::spawn_blocking(move || {
        let body = br#"{"upload":{"nb_chunks":1}}"#;
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        for chunk in body.chunks(9) {
            std::thread::sleep(Duration::from_millis(400));
            stream.write_all(chunk).unwrap();
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = common::scrape(&gateway).await;
    let value = |name: &str| -> f64 {
        common::metric_value(&metrics, name).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    let whole =
        value("upload_gateway_request_duration_seconds_sum{route=\"PUT /files/uploads/{id}\"}");
    let upstream =
        value("upload_gateway_upstream_latency_seconds_sum{route=\"PUT /files/uploads/{id}\"}");
    assert!(whole >= 1.0, "request duration {whole}");
    assert!(
        upstream < 0.5,
        "upstream latency {upstream} includes the body read"
    );
    assert_eq!(value("upload_gateway_build_info{"), 1.0);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert_eq!(
        value(&format!(
            "upload_gateway_upstream_healthy{{upstream=\"{}\"}}",
            service.addr()
        )),
        1.0
    );
}

#[test]
fn a_pid_file_that_cannot_be_written_stops_the_start_even_under_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), free_port(), "");
    for daemon in [false, true] {
        let mut args = vec!["--config", &config, "--pid-file", "/nonexistent/dir/gw.pid"];
        if daemon {
            args.push("--daemon");
        }
        let (ok, out) = run_to_exit(&args);
        assert!(!ok, "daemon={daemon}: exited 0:\n{out}");
        assert!(out.contains("--pid-file"), "{out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn sigint_cuts_a_long_drain_short() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let slow = rt.block_on(async {
        UploadService::start(
            (Ipv4Addr::LOCALHOST, 0).into(),
            UploadServiceOptions {
                delay: Duration::from_secs(20),
                ..UploadServiceOptions::default()
            },
        )
        .await
        .unwrap()
    });
    let issuer = rt.block_on(issuer());
    let mut gateway = Gateway::start(
        &GatewayConfig::new(vec![slow.addr()], &issuer)
            .with("server", "shutdown_grace_s = 60")
            .with(
                "upstream",
                "read_timeout_ms = 60000\nresponse_timeout_ms = 60000",
            ),
    );
    // A request that will not finish for a long time.
    let token = token(&issuer);
    let url = gateway.url(&finish_path());
    let _pending = rt.spawn(async move { finish_call(&client(), url, &token).send().await });
    std::thread::sleep(Duration::from_millis(500));
    gateway.terminate();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        gateway.wait_exit(Duration::ZERO).is_none(),
        "SIGTERM did not wait for the request"
    );
    let started = Instant::now();
    gateway.signal("INT");
    let (_, logs) = gateway
        .wait_exit(Duration::from_secs(10))
        .expect("SIGINT during the drain was ignored");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(logs.contains("SIGINT during the drain"), "{logs}");
}

#[test]
fn check_without_bind_accepts_the_config_of_a_running_instance() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (service, issuer) = rt.block_on(async { (upload_service().await, issuer().await) });
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    let config = gateway.config_path.to_string_lossy().into_owned();
    let (ok, out) = run_to_exit(&["check", "--config", &config]);
    assert!(!ok, "its ports are taken: {out}");
    assert!(
        out.contains("server.listen") && out.contains("line "),
        "{out}"
    );
    let (ok, out) = run_to_exit(&["check", "--no-bind", "--config", &config]);
    assert!(ok, "{out}");
}
