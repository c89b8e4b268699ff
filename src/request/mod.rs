//! The pure request core: everything the gateway decides about a request before it talks to
//! the upstream — which format the client wants (`negotiate`), what query goes upstream
//! (`query`) and whether a finish-upload body is acceptable (`body`). Plain functions over
//! borrowed header and body bytes: no Pingora, no tokio, no I/O, and never a panic, whatever the
//! client sends.

pub mod body;
pub mod negotiate;
pub mod query;
