//! Test harness: the real `upload-gateway` binary as a child process, the reference upload
//! service and issuer as real servers on 127.0.0.1, and deterministic shutdown (the child is
//! killed and reaped on drop, the servers stop when dropped).
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use upload_gateway::demo::issuer::Issuer;
use upload_gateway::demo::issuer_keys::SigningKey;
use upload_gateway::demo::upload_service::{UploadService, UploadServiceOptions};

pub use upload_gateway::demo::upload_service::DOCUMENTED_UPLOAD_ID;

pub mod dns;
pub mod redis;

pub const AUDIENCE: &str = "upload-api";

pub fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// A port nobody listens on right now (bound, then released). The gateway cannot report a port
/// it was given as 0, so this is the one place a port is chosen in advance; it is fresh per
/// call, never fixed.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

/// An address that refuses connections.
pub fn closed_port() -> SocketAddr {
    free_port()
}

pub async fn upload_service() -> UploadService {
    upload_service_with(UploadServiceOptions::default()).await
}

pub async fn upload_service_with(options: UploadServiceOptions) -> UploadService {
    UploadService::start(loopback(), options)
        .await
        .expect("start upload service")
}

pub fn rsa_key(kid: &str) -> SigningKey {
    SigningKey::generate(Algorithm::RS256, kid).expect("generate RSA key")
}

pub async fn issuer() -> Issuer {
    issuer_with(vec![rsa_key("k1")], 300).await
}

pub async fn issuer_with(keys: Vec<SigningKey>, max_age_s: u64) -> Issuer {
    Issuer::start(loopback(), keys, max_age_s)
        .await
        .expect("start issuer")
}

/// The usual set-up: the reference upload service, an issuer, and a gateway in front of both.
pub async fn started() -> (UploadService, Issuer, Gateway) {
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = Gateway::start(&GatewayConfig::new(vec![service.addr()], &issuer));
    (service, issuer, gateway)
}

/// A valid one-hour token from `issuer`.
pub fn token(issuer: &Issuer) -> String {
    issuer
        .mint(&issuer.claims("alice", AUDIENCE, 3600))
        .expect("mint")
}

/// Configuration text for a gateway in front of `upstreams`, trusting `issuer`.
pub struct GatewayConfig {
    pub upstreams: Vec<SocketAddr>,
    pub jwks_url: String,
    pub issuer: String,
    /// Extra TOML appended per section: (section, lines).
    pub extra: Vec<(&'static str, String)>,
    /// `upstream.servers` as written, instead of `upstreams` (host names).
    pub server_names: Option<Vec<String>>,
    /// `[[auth.providers]]` tables, instead of the single-issuer keys of `[auth]`.
    pub providers: Option<String>,
    /// Whole sections appended at the end (`[cors]`, ...).
    pub extra_tail: Option<String>,
}

impl GatewayConfig {
    pub fn new(upstreams: Vec<SocketAddr>, issuer: &Issuer) -> Self {
        Self {
            upstreams,
            jwks_url: issuer.jwks_url(),
            issuer: issuer.issuer.clone(),
            extra: Vec::new(),
            server_names: None,
            providers: None,
            extra_tail: None,
        }
    }

    /// `[[auth.providers]]` tables (TOML) instead of the single issuer.
    pub fn with_providers(mut self, tables: &str) -> Self {
        self.providers = Some(tables.to_owned());
        self
    }

    /// `upstream.servers` written as these names (resolved by the gateway at run time).
    pub fn with_server_names(mut self, names: &[String]) -> Self {
        self.server_names = Some(names.to_vec());
        self
    }

    pub fn with(mut self, section: &'static str, lines: &str) -> Self {
        self.extra.push((section, lines.to_owned()));
        self
    }

    fn section(&self, name: &str) -> String {
        self.extra
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    fn render(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        let servers: Vec<String> = match &self.server_names {
            Some(names) => names.iter().map(|n| format!("\"{n}\"")).collect(),
            None => self.upstreams.iter().map(|a| format!("\"{a}\"")).collect(),
        };
        let tail = [self.extra_tail.as_deref(), self.providers.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n");
        let single = match &self.providers {
            Some(_) => String::new(),
            None => format!(
                "jwks_url = \"{}\"\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n",
                self.jwks_url, self.issuer
            ),
        };
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n{}\n\
             [upstream]\nservers = [{}]\nconnect_timeout_ms = 500\nhealth_check_interval_ms = 200\n{}\n\
             [api]\n{}\n\
             [auth]\n{single}{}\n\
             [observability]\nadmin_listen = \"{admin}\"\nlog_format = \"json\"\n{}\n{}",
            self.section("server"),
            servers.join(", "),
            self.section("upstream"),
            self.section("api"),
            self.section("auth"),
            self.section("observability"),
            tail,
        )
    }
}

/// The gateway binary running as a child process.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The binary under test: this build's, or `UPLOAD_GATEWAY_BIN` (to run the suite against
/// another build, e.g. the release binary or an older commit's).
pub fn binary() -> String {
    std::env::var("UPLOAD_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_upload-gateway").to_owned())
}

impl Gateway {
    /// Starts the gateway and waits until it listens and has loaded its key set.
    pub fn start(config: &GatewayConfig) -> Gateway {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &GatewayConfig, env: &[(&str, &str)]) -> Gateway {
        Self::start_program(&binary(), config, env)
    }

    /// Starts `binary` (a build of the gateway, or a program that embeds it and takes the same
    /// `--config`, `--pid-file` and `--upgrade-sock`) and waits like [`Gateway::start`].
    /// The ports are chosen free just before the start, so another test binary may take one in
    /// between: a start that fails for an address in use is retried on fresh ports.
    pub fn start_program(program: &str, config: &GatewayConfig, env: &[(&str, &str)]) -> Gateway {
        for _ in 0..5 {
            let mut gateway = Self::spawn_program(program, config, env);
            match gateway.ready_or_exit() {
                Ok(()) => return gateway,
                Err(stderr) if stderr.contains("in use") => continue,
                Err(stderr) => panic!("gateway exited at start:\n{stderr}"),
            }
        }
        panic!("gateway found its ports taken on 5 starts in a row");
    }

    /// Waits until the proxy listener accepts and the admin listener reports a loaded key set,
    /// watching the process all along: a port chosen free can be taken by another test binary
    /// before the gateway binds it, and then a connect reaches that stranger while the gateway
    /// exits "in use" (this made a CI run wait 20 s for keys and fail).
    fn ready_or_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, stderr)) = self.wait_exit(Duration::ZERO) {
                return Err(stderr);
            }
            if TcpStream::connect(self.addr).is_ok() && self.keys_loaded() {
                // Still ours: the process that answered has not exited since.
                return match self.wait_exit(Duration::from_millis(50)) {
                    Some((_, stderr)) => Err(stderr),
                    None => Ok(()),
                };
            }
            assert!(
                Instant::now() < deadline,
                "gateway never listened with its key set loaded:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys_loaded(&self) -> bool {
        let body = http_get_blocking(self.admin, "/readyz").unwrap_or_default();
        body.starts_with("HTTP/1.1 ") && !body.contains("no key set")
    }

    /// Starts the gateway without waiting for anything.
    pub fn spawn(config: &GatewayConfig, env: &[(&str, &str)]) -> Gateway {
        Self::spawn_program(&binary(), config, env)
    }

    fn spawn_program(program: &str, config: &GatewayConfig, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_port();
        let admin = free_port();
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config.render(addr, admin)).expect("write config");
        // A file, not a pipe: a pipe nobody drains would block a chatty gateway.
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--pid-file")
            .arg(dir.path().join("gateway.pid"))
            .arg("--upgrade-sock")
            .arg(dir.path().join("upgrade.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn gateway");
        Gateway {
            child: Some(child),
            addr,
            admin,
            config_path,
            log_path,
            _dir: dir,
        }
    }

    /// Starts a second gateway with this one's configuration and `--upgrade`: it waits on the
    /// upgrade socket for this gateway's listeners (send this one SIGQUIT to hand them over).
    pub fn spawn_upgrade(&self) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let upgrade_sock = self.config_path.with_file_name("upgrade.sock");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade")
            .arg("--pid-file")
            .arg(dir.path().join("gateway.pid"))
            .arg("--upgrade-sock")
            .arg(upgrade_sock)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn gateway");
        Gateway {
            child: Some(child),
            addr: self.addr,
            admin: self.admin,
            config_path: self.config_path.clone(),
            log_path,
            _dir: dir,
        }
    }

    /// Sends a signal by name (`TERM`, `QUIT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if let Some((_, stderr)) = self.wait_exit(Duration::ZERO) {
                panic!("gateway exited at start:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "gateway did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the admin listener reports a loaded key set (readiness may still be false
    /// for lack of a healthy upstream).
    pub fn wait_keys_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.keys_loaded() {
            assert!(
                Instant::now() < deadline,
                "gateway never loaded its key set:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit; returns (exit success, stderr).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(bool, String)> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status.success(), self.logs()));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the gateway has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the gateway and returns everything it logged.
    pub fn stop_and_logs(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.logs()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal blocking GET used while waiting for readiness (no async runtime needed).
pub fn http_get_blocking(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An HTTP client that never pools (each test request is independent).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The gateway's `/metrics` page.
pub async fn scrape(gateway: &Gateway) -> String {
    reqwest::get(gateway.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the first metric line that starts with `line_start` (a name, with its labels
/// when it has some), when there is one.
pub fn metric_value(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn finish_path() -> String {
    format!("/v1/files/uploads/{DOCUMENTED_UPLOAD_ID}")
}

/// A valid finish call (`PUT`, bearer token, JSON body with `nb_chunks: 1`) to a gateway URL.
pub fn finish_call(client: &reqwest::Client, url: String, token: &str) -> reqwest::RequestBuilder {
    client
        .put(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"upload":{"nb_chunks":1}}"#)
}
