//! The shell side of authentication: fetching the JWKS ([`fetch`]), the live key set and the
//! request-path check built on the pure core ([`live`]), and the background refresh
//! ([`refresher`]). Refusals become the API's errors here, never in [`crate::auth`].

pub mod fetch;
pub mod live;
pub mod refresher;

pub use fetch::{FetchError, Fetched, Fetcher, MAX_JWKS_BYTES};
pub use live::{unix_now, Authenticator, SetupError};
pub use refresher::JwksRefresher;
