//! Log output: `tracing` with JSON or text lines (`observability.log_format`), level from
//! `RUST_LOG` (default `info`). Pingora's own `log` records are routed here too.
//!
//! Nothing may ever log a token, a signature or a body. The gateway's own events never carry
//! them; Pingora's debug records print whole request headers (`Authorization` included), so
//! Pingora is capped at `info` whatever `RUST_LOG` asks for (and so is everything that logs
//! through the `log` crate).
//!
//! Colour (ANSI escapes) only when the output is a terminal, never into files or pipes.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, registry};

use crate::config::LogFormat;

/// Whether a record may be written at all, before `RUST_LOG` is consulted.
fn is_safe(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    if target.starts_with(PINGORA_HEADER_VALUES) {
        // Its warnings quote the offending `Content-Length` value as received.
        return *meta.level() <= Level::ERROR;
    }
    if target == PINGORA_POOL && *meta.level() == Level::ERROR {
        // Its one error, "failed to acquire reusable stream", is a benign pool race that fires
        // on successful requests: the request simply opens a fresh connection.
        return false;
    }
    !(target.starts_with("pingora") && *meta.level() > Level::INFO)
}

/// The Pingora module whose warnings print raw header values.
const PINGORA_HEADER_VALUES: &str = "pingora_core::protocols::http::v1::common";

/// The connection pool's module (exactly: not its submodules).
const PINGORA_POOL: &str = "pingora_core::connectors";

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let most_verbose = filter.max_level_hint();
    let _ = subscriber(filter, format).try_init();
    // Pingora logs through the `log` crate; every record below this level is dropped by the
    // filters above anyway, so let `log` drop it at its own cheap level check instead of
    // building and dispatching it on every request.
    log::set_max_level(log_level(most_verbose).min(log::LevelFilter::Info));
}

/// The subscriber [`init`] installs. One filter (`is_safe` and `RUST_LOG` combined), so that
/// `tracing::enabled!` is false for what it drops: with two nested filters it answered true
/// for the access line under `RUST_LOG=warn`, and every request built the line's fields (three
/// allocations) for nothing.
fn subscriber(filter: EnvFilter, format: LogFormat) -> impl tracing::Subscriber + Send + Sync {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    registry().with(output.with_filter(filter_fn(is_safe).and(filter)))
}

fn log_level(level: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter as T;
    match level {
        Some(T::OFF) => log::LevelFilter::Off,
        Some(T::ERROR) => log::LevelFilter::Error,
        Some(T::WARN) => log::LevelFilter::Warn,
        Some(T::INFO) => log::LevelFilter::Info,
        Some(T::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// A warning that repeats while a dependency stays down (Redis, the OTLP collector) is written
/// at most once a minute: [`Throttle::ready`] says whether this one may be.
#[derive(Debug)]
pub struct Throttle {
    epoch: std::time::Instant,
    /// Milliseconds after `epoch` of the last warning, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// How long a warning keeps the next one quiet.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// A throttle that lets its first warning through.
    pub fn new() -> Self {
        Self {
            epoch: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a warning may be written now (then the next minute's are not).
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now - last < Self::EVERY.as_millis() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_enabled(directives: &str) -> bool {
        let subscriber = subscriber(EnvFilter::new(directives), LogFormat::Json);
        tracing::subscriber::with_default(
            subscriber,
            || tracing::enabled!(target: "access", Level::INFO),
        )
    }

    #[test]
    fn a_throttle_lets_one_warning_through_per_minute() {
        let throttle = Throttle::new();
        assert!(throttle.ready());
        assert!(!throttle.ready());
        assert!(!throttle.ready());
    }

    #[test]
    fn the_access_line_is_enabled_exactly_when_rust_log_asks_for_it() {
        assert!(!access_enabled("warn"));
        assert!(!access_enabled("error"));
        assert!(access_enabled("info"));
        assert!(access_enabled("warn,access=info"));
        assert!(!access_enabled("info,access=warn"));
    }
}
