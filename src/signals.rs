//! Process signals and the pid file (SPEC §5, README "Signals").
//!
//! - `SIGTERM`: stop accepting, let in-flight requests finish, exit as soon as none is left (at
//!   the latest after `server.shutdown_grace_s`). Pingora alone sleeps through the whole grace
//!   period, so a drain watcher exits early; it is started when the signal arrives, which is
//!   after `--daemon` has forked (a thread started before the fork would not exist in the
//!   daemon).
//! - `SIGQUIT`: Pingora's graceful upgrade (the listeners go to the `--upgrade` instance), then
//!   the same drain.
//! - `SIGINT`: fast shutdown.
//! - `SIGHUP`: every key set is fetched again at once (a key rotation announced out of band);
//!   the configuration file is not re-read. It is logged, never a silent kill.
//!
//! The pid file (`--pid-file`) is written in the foreground as well as under `--daemon` (where
//! Pingora writes it), and removed at exit when it still holds this process's pid (after an
//! upgrade it holds the new instance's).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::broadcast;

use crate::jwks::Authenticator;
use crate::proxy::InFlightCounter;

/// The pid file of this process, if any.
#[derive(Debug, Clone, Default)]
pub struct PidFile(Option<PathBuf>);

impl PidFile {
    /// The file at `path` (`None`: no pid file).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self(path)
    }

    /// Writes this process's pid (the foreground case; Pingora writes it under `--daemon`).
    pub fn write(&self) -> std::io::Result<()> {
        match &self.0 {
            Some(path) => std::fs::write(path, format!("{}\n", std::process::id())),
            None => Ok(()),
        }
    }

    /// The path, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.0.as_deref()
    }

    /// Removes the file if it still names this process.
    pub fn remove(&self) {
        let Some(path) = &self.0 else {
            return;
        };
        let ours = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Pingora's shutdown signal watch, extended with SIGHUP and the drain watcher.
pub struct Signals {
    auth: Arc<Authenticator>,
    in_flight: InFlightCounter,
    phases: std::sync::Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pid_file: PidFile,
    grace: Duration,
    spans: Option<Arc<crate::otlp::SpanExport>>,
}

/// What the process does on its way out of a drain: the spans still queued are exported
/// (briefly) and the pid file is removed.
fn before_exit(pid_file: &PidFile, spans: Option<&crate::otlp::SpanExport>) {
    if let Some(spans) = spans {
        spans.flush(Duration::from_secs(2));
    }
    pid_file.remove();
}

impl Signals {
    /// Signals for a server whose phases `phases` reports.
    pub fn new(
        auth: Arc<Authenticator>,
        in_flight: InFlightCounter,
        phases: broadcast::Receiver<ExecutionPhase>,
        pid_file: PidFile,
        grace: Duration,
        spans: Option<Arc<crate::otlp::SpanExport>>,
    ) -> Self {
        Self {
            auth,
            in_flight,
            phases: std::sync::Mutex::new(Some(phases)),
            pid_file,
            grace,
            spans,
        }
    }

    fn start_drain_watch(&self) {
        let Some(phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let in_flight = self.in_flight.clone();
        let pid_file = self.pid_file.clone();
        let grace = self.grace;
        let spans = self.spans.clone();
        // Without the watcher the gateway still exits, only at the end of the grace period.
        let _ = std::thread::Builder::new()
            .name("drain-watch".into())
            .spawn(move || exit_when_drained(phases, &in_flight, &pid_file, spans, grace));
        // Pingora stops watching signals once the drain starts, and a handled SIGINT no longer
        // kills: keep honouring it, so an operator can cut a long drain short.
        let in_flight = self.in_flight.clone();
        let pid_file = self.pid_file.clone();
        let spans = self.spans.clone();
        tokio::spawn(async move {
            let mut int = install(SignalKind::interrupt(), "SIGINT");
            next(&mut int).await;
            tracing::warn!(
                in_flight = in_flight.get(),
                "SIGINT during the drain: exiting now, cutting the requests still in flight"
            );
            before_exit(&pid_file, spans.as_deref());
            std::process::exit(0);
        });
    }
}

/// Waits for the grace period, then exits once nothing has been in flight for a few polls.
/// Pingora 0.9's grace period is an unconditional sleep inside `Server::run` with no hook, so
/// ending the process is the only way to finish early.
fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    in_flight: &InFlightCounter,
    pid_file: &PidFile,
    spans: Option<Arc<crate::otlp::SpanExport>>,
    grace: Duration,
) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => break,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
    // Several idle observations in a row, so a request caught between accept and its context
    // being created is not cut off.
    let mut idle_polls = 0;
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        // Pingora ends the process when the grace period runs out: say what that cuts.
        if !warned && started.elapsed() + Duration::from_millis(100) >= grace {
            let left = in_flight.get();
            if left > 0 {
                tracing::warn!(
                    in_flight = left,
                    "the shutdown grace period (server.shutdown_grace_s) is over: cutting the \
                     requests still in flight"
                );
            }
            warned = true;
        }
        if in_flight.get() == 0 {
            idle_polls += 1;
            if idle_polls >= 3 {
                tracing::info!("all in-flight requests finished; exiting");
                before_exit(pid_file, spans.as_deref());
                std::process::exit(0);
            }
        } else {
            idle_polls = 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn install(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| tracing::error!(signal = name, error = %e, "cannot handle signal"))
        .ok()
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = install(SignalKind::quit(), "SIGQUIT");
        let mut term = install(SignalKind::terminate(), "SIGTERM");
        let mut int = install(SignalKind::interrupt(), "SIGINT");
        let mut hup = install(SignalKind::hangup(), "SIGHUP");
        loop {
            tokio::select! {
                () = next(&mut quit) => {
                    self.start_drain_watch();
                    return ShutdownSignal::GracefulUpgrade;
                }
                () = next(&mut term) => {
                    self.start_drain_watch();
                    return ShutdownSignal::GracefulTerminate;
                }
                () = next(&mut int) => return ShutdownSignal::FastShutdown,
                () = next(&mut hup) => {
                    tracing::info!(
                        "SIGHUP: fetching every key set again now; the configuration file is \
                         not re-read (restart, or start a new instance with --upgrade, to \
                         change it)"
                    );
                    let auth = self.auth.clone();
                    tokio::spawn(async move {
                        let _ = auth.refresh().await;
                    });
                }
            }
        }
    }
}
