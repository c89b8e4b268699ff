//! upload-gateway: an edge API gateway on Pingora for the finish-upload call.
//!
//! The pure core (no I/O, no Pingora types) is usable on its own by platform teams composing
//! their own proxy: [`request`] (negotiation, query normalisation, body validation),
//! [`render`] (JSON/XML rendering), [`auth`] (token verification and the key set) and
//! [`error`] (the API's error catalogue). [`proxy::Gateway`] is the ready `ProxyHttp`
//! implementation and [`server::build`] assembles a whole server from a [`config::Config`].
//!
//! The pure core needs no server. A finish-call body in XML becomes the canonical JSON the
//! upstream receives, and the upstream's JSON answer is rendered as the client asked:
//!
//! ```
//! use upload_gateway::render::{render_upstream_body, RenderOptions, ResponseFormat};
//! use upload_gateway::request::body::validate_finish_body;
//!
//! let body = b"<upload><nb_chunks>3</nb_chunks><name>clip.mp4</name></upload>";
//! let finish = validate_finish_body(Some("application/xml"), body, 10_000).unwrap();
//! assert_eq!(finish.nb_chunks, 3);
//! assert_eq!(finish.canonical, br#"{"upload":{"nb_chunks":3,"name":"clip.mp4"}}"#);
//!
//! let answer = br#"{"upload":{"status":"COMPLETING","nb_chunks":3,"error":null}}"#;
//! let xml = RenderOptions { format: ResponseFormat::Xml, human: false, show_null: false };
//! assert_eq!(
//!     render_upstream_body(answer, xml).unwrap(),
//!     b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
//!       <upload><status>COMPLETING</status><nb_chunks>3</nb_chunks></upload>"
//! );
//! ```

// Lints live in Cargo.toml's `[lints]`: missing docs, and no unwrap, expect or panic on any
// request path (errors are typed and end as the envelope). Unit tests may panic to assert.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests assert by panicking"
    )
)]

pub mod admin;
#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod auth;
pub mod config;
pub mod cors;
pub mod demo;
pub mod error;
pub mod jwks;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod otlp;
pub mod preflight;
pub mod proxy;
pub mod rate_limit;
pub mod render;
pub mod request;
pub mod route;
pub mod server;
pub mod signals;
pub mod trace_context;
pub mod xml_names;
