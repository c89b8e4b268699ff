//! The background service that keeps the key set fresh: loads at start (unless start-up already
//! did), then refreshes on the schedule the issuer asks for, retrying failures with a capped
//! backoff. It stops with the server's shutdown and never exits the process.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::live::Authenticator;

/// Retry backoff cap while fetches fail.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Pingora background service: loads at start, then refreshes on the schedule the issuer asks
/// for, retrying failures with a backoff capped at 30 s.
pub struct JwksRefresher(Arc<Authenticator>);

impl JwksRefresher {
    /// The refresher of `auth`'s key set.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self(auth)
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(250);
        // A set loaded before the listeners opened is fresh: wait out its refresh period first.
        if self.0.has_key_set() {
            let wait = self.0.next_refresh();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        loop {
            let wait = match self.0.refresh().await {
                Ok(next) => {
                    backoff = Duration::from_millis(250);
                    next
                }
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
