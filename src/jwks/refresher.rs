//! The background service that keeps every provider's key set fresh: each loads at start
//! (unless start-up already did), then refreshes on the schedule its issuer asks for, retrying
//! failures with a capped backoff, every wait jittered by ±10 %. It stops with the server's
//! shutdown and never exits the process.

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

/// `period` moved by a random ±10 %, so a fleet started together does not fetch together
/// (SPEC §4.9).
pub fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.9 + 0.2 * fastrand::f64())
}

impl JwksRefresher {
    /// One provider's loop: refresh on its own schedule until shutdown.
    async fn run(&self, index: usize, mut shutdown: ShutdownWatch) {
        let auth = &self.0;
        let mut backoff = Duration::from_millis(250);
        // A set loaded before the listeners opened is fresh: wait out its refresh period first.
        if auth.provider_has_keys(index) {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(jittered(auth.next_refresh(index))) => {}
            }
        }
        loop {
            let wait = match auth.refresh_provider(index).await {
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
                _ = tokio::time::sleep(jittered(wait)) => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        // Each provider on its own schedule, all on this one task.
        let loops = (0..self.0.provider_count()).map(|index| self.run(index, shutdown.clone()));
        futures::future::join_all(loops).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let period = Duration::from_secs(100);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(period)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(90) && *w <= Duration::from_secs(110)));
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_secs(95))
            .count();
        let high = waits
            .iter()
            .filter(|w| **w > Duration::from_secs(105))
            .count();
        assert!(
            low > 100 && high > 100,
            "not spread: {low} low, {high} high"
        );
    }
}
