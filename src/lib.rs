//! upload-gateway: an edge API gateway on Pingora for the finish-upload call.
//!
//! The pure core (no I/O, no Pingora types) is usable on its own by platform teams composing
//! their own proxy: [`request`] (negotiation, query normalisation, body validation),
//! [`render`] (JSON/XML rendering), [`auth`] (token verification and the key set) and
//! [`error`] (the API's error catalogue). [`proxy::Gateway`] is the ready `ProxyHttp`
//! implementation and [`server::build`] assembles a whole server from a [`config::Config`].

#![deny(missing_docs)]
// No unwrap, expect or panic on any request path: errors are typed and end as the envelope.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod render;
pub mod request;
pub mod server;
