//! Log output: `tracing` with JSON or text lines (`observability.log_format`), level from
//! `RUST_LOG` (default `info`). Pingora's own `log` records are routed here too. Nothing in the
//! gateway ever logs a token, a signature or a body; this module only chooses the encoding.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
