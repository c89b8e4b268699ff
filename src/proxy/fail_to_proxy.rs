//! `fail_to_proxy`: what a failed request on Pingora's proxy loop becomes. Before the answer
//! has begun, the failure is classified once ([`upstream::classify`]) and answered with the
//! API's envelope; after, nothing more is written: the connection is dropped unfinished and the
//! log line carries the real outcome. A failure is never completed as a success.

use pingora::proxy::{FailToProxy, Session};
use pingora::Error;

use super::ctx::RequestCtx;
use super::shared::Shared;
use super::upstream::deadline::Watchdog;
use super::{respond, upstream};
use crate::error::GatewayError;

/// Answers (or aborts) the failed request; the error code is what the log and metrics carry.
pub async fn run(
    _api: &Shared,
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
) -> FailToProxy {
    let mut failure = upstream::classify(e);
    if failure.is_some() && ctx.watchdog.as_ref().is_some_and(Watchdog::fired) {
        // The watchdog ended the connection: the read failed because time was up.
        failure = Some(GatewayError::UpstreamTimeout);
    }
    ctx.watchdog = None;
    if session.response_written().is_some() {
        // The answer has begun: anything written now would complete it with another status or
        // splice an envelope into it.
        ctx.aborted = true;
        let error_code = failure.as_ref().map_or(0, GatewayError::status);
        if failure.is_some() {
            ctx.error = failure;
        }
        return FailToProxy {
            error_code,
            can_reuse_downstream: false,
        };
    }
    let error_code = match failure {
        // The client went away: nothing can be written.
        None => 0,
        Some(error) => {
            let status = error.status();
            match respond::error(session, ctx, error).await {
                Ok(()) => status,
                Err(_) => 0,
            }
        }
    };
    FailToProxy {
        error_code,
        can_reuse_downstream: false,
    }
}
