//! A real `redis-server` (Debian's package, installed by `scripts/setup`) on a free loopback
//! port, with no persistence, killed and reaped on drop. Redis cannot be handed a bound
//! listener, so a fresh free port is chosen per start and the start is retried on another one
//! if some other process took it in between.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let addr = super::free_port();
            if let Some(child) = spawn(addr, dir.path()) {
                return Self {
                    child: Some(child),
                    addr,
                    dir,
                };
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// An address where no Redis listens (yet): [`RedisServer::start_on`] can start one there.
    pub fn absent() -> Self {
        Self {
            child: None,
            addr: super::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills it (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops or resumes the process (SIGSTOP / SIGCONT): a Redis that accepts nothing and
    /// answers nothing, as a hung one would.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("running").id();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Starts it (again) on its own address.
    pub fn start_on(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.addr, self.dir.path()) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The keys under `prefix`, asked over the wire (RESP, by hand: one short command).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let reply = command(self.addr, &["KEYS", &format!("{prefix}*")]).expect("KEYS");
        reply
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(addr: SocketAddr, dir: &std::path::Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run scripts/setup");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // the port was taken
        }
        if command(addr, &["PING"]).is_some_and(|r| r.starts_with("+PONG")) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn command(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // One reply; it is short, so read until a pause.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (!reply.is_empty()).then(|| String::from_utf8_lossy(&reply).into_owned())
}
