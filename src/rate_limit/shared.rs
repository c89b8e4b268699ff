//! The limit shared by every instance through one Redis (SPEC §4.10): one atomic GCRA step per
//! check, a Lua script run with EVALSHA by the `redis` crate's connection manager. The script is
//! the only hand-written part: no crate of the field ships a Redis-side GCRA.
//!
//! Redis never holds a request up for long and never fails one: a check that errs or takes more
//! than 50 ms falls back to the instance's local limit, counts
//! `rate_limit_backend_errors_total` and marks the backend down; while it is down, requests go
//! straight to the local limit and a background task reconnects and probes (PING) twice a
//! second, marking it up again once Redis answers. Warnings are logged at most once a minute,
//! never with the address (it may carry a password).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::logging::Throttle;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounter, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

/// The longest a request waits for Redis before the local limit decides.
pub const BACKEND_TIMEOUT: Duration = Duration::from_millis(50);
/// How often a down backend is reconnected and probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Where the buckets live in Redis: this prefix, then the key.
const KEY_PREFIX: &str = "upload-gateway:rate:";

/// One GCRA step on `KEYS[1]`, atomically: ARGV[1] is the emission interval and ARGV[2] the
/// burst tolerance (interval × burst), both in microseconds; Redis's own clock is the time, so
/// instances with skewed clocks agree. Returns `{1, 0}` when admitted, `{0, wait_us}` when not.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local excess = new_tat - now - tolerance
if excess > 0 then return {0, excess} end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
";

/// The Redis side of a limiter, shared by the request path and the background task that keeps
/// it connected.
pub struct Backend {
    url: String,
    connection: ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    script: Script,
    interval_us: u64,
    tolerance_us: u64,
    errors: IntCounter,
    up_gauge: IntGauge,
    warnings: Throttle,
}

impl Backend {
    /// A backend for `url` (validated by the configuration), down until the background task
    /// first reaches it.
    pub fn new(
        url: String,
        requests_per_second: u32,
        burst: u32,
        errors: IntCounter,
        up_gauge: IntGauge,
    ) -> Self {
        let interval_us = 1_000_000 / u64::from(requests_per_second.max(1));
        up_gauge.set(0);
        Self {
            url,
            connection: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            script: Script::new(GCRA),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1)),
            errors,
            up_gauge,
            warnings: Throttle::new(),
        }
    }

    /// The shared verdict for `key`, or `None` when Redis is down, failed or was slow (the
    /// caller then asks the local limit).
    pub async fn check(&self, key: &str) -> Option<Result<(), Duration>> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        let mut connection = ConnectionManager::clone(&*self.connection.load_full()?);
        let mut invocation = self.script.key(format!("{KEY_PREFIX}{key}"));
        invocation.arg(self.interval_us).arg(self.tolerance_us);
        let step = tokio::time::timeout(
            BACKEND_TIMEOUT,
            invocation.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        match step {
            Ok(Ok((1, _))) => Some(Ok(())),
            Ok(Ok((_, wait_us))) => Some(Err(Duration::from_micros(wait_us.max(1) as u64))),
            Ok(Err(e)) => {
                self.failed(&format!("failed ({:?})", e.kind()));
                None
            }
            Err(_) => {
                self.failed("took more than 50 ms");
                None
            }
        }
    }

    /// Whether the shared limit currently applies.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn failed(&self, what: &str) {
        self.errors.inc();
        if self.up.swap(false, Ordering::AcqRel) {
            self.up_gauge.set(0);
        }
        self.warn(what);
    }

    fn warn(&self, what: &str) {
        if self.warnings.ready() {
            tracing::warn!(
                "rate limit: Redis {what}; each instance limits on its own until it answers \
                 again (logged at most once a minute)"
            );
        }
    }

    /// Connects (a new connection manager each time, bounded by the timeout) and PINGs.
    async fn probe(&self) -> Result<(), String> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|_| "address unusable".to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(BACKEND_TIMEOUT))
            .set_response_timeout(Some(BACKEND_TIMEOUT))
            .set_number_of_retries(1);
        let attempt = async {
            let mut manager = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING")
                .query_async::<String>(&mut manager)
                .await
                .map(|_| manager)
        };
        match tokio::time::timeout(BACKEND_TIMEOUT * 4, attempt).await {
            Ok(Ok(manager)) => {
                self.connection.store(Some(Arc::new(manager)));
                Ok(())
            }
            Ok(Err(e)) => Err(format!("unreachable ({:?})", e.kind())),
            Err(_) => Err("did not answer within 200 ms".to_owned()),
        }
    }
}

/// The background task that connects the backend and reconnects it after a failure.
pub struct BackendService(pub Arc<Backend>);

#[async_trait]
impl BackgroundService for BackendService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let backend = &self.0;
        loop {
            if !backend.is_up() {
                match backend.probe().await {
                    Ok(()) => {
                        backend.up.store(true, Ordering::Release);
                        backend.up_gauge.set(1);
                        tracing::info!("rate limit: Redis answers; the limit is shared");
                    }
                    Err(what) => {
                        backend.errors.inc();
                        backend.warn(&what);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
