//! The upstream answer's deadline (`upstream.response_timeout_ms`): the whole answer, head and
//! body, must arrive within it, counted from the moment the request was written.
//!
//! The finish call's own exchange awaits every upstream read under the deadline directly.
//! Pingora's proxy loop, which the other routes take, only has per-read timeouts, which an
//! upstream dripping one byte a second never trips; so a [`Watchdog`] task shuts the loop's
//! upstream socket down when the deadline passes, the pending read fails, and the failure is
//! reported as the timeout it is. Before touching the socket the watchdog checks that the
//! descriptor still names the same connection (its two addresses), so a descriptor closed and
//! reused meanwhile is never touched; it is aborted when the request's context is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::{Error, ErrorType, Result};

/// A running deadline on one upstream connection of the proxy loop.
#[derive(Debug)]
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    /// Shuts the connection on descriptor `fd` down at `deadline`, if it is still the one
    /// between `local` and `peer`.
    #[cfg(unix)]
    pub fn start(
        fd: std::os::unix::io::RawFd,
        local: SocketAddr,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Self {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
            // SAFETY: the descriptor is only borrowed for these calls; it may have been closed
            // and reused, which the address check below detects before anything is done to it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let same = |a: std::io::Result<socket2::SockAddr>, b: SocketAddr| {
                a.ok().and_then(|a| a.as_socket()) == Some(b)
            };
            if same(socket.local_addr(), local) && same(socket.peer_addr(), peer) {
                flag.store(true, Ordering::Release);
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        });
        Self { fired, task }
    }

    /// Whether the deadline passed and the connection was ended.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What is left of the time until `deadline` (zero once it passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Runs an upstream read, failing it as an upstream read timeout once `deadline` has passed.
pub async fn before<T>(deadline: Instant, read: impl Future<Output = Result<T>>) -> Result<T> {
    match pingora::time::fast_timeout::fast_timeout(remaining(deadline), read).await {
        Ok(result) => result,
        Err(_) => {
            let mut e = Error::explain(ErrorType::ReadTimedout, "upstream.response_timeout_ms");
            e.as_up();
            Err(e)
        }
    }
}
