//! A small HTTP/1.1 server harness (hyper) for the demo upload service and the demo issuer: binds
//! a loopback port (0 = any free one), serves until dropped, and records nothing on disk.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A request as the demo servers see it: head plus the whole body.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Method.
    pub method: http::Method,
    /// Path and query as sent.
    pub uri: http::Uri,
    /// Headers as sent.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Bodies above this are refused by the demo servers.
const MAX_DEMO_BODY: usize = 1 << 20;

/// A running server; stops when dropped.
pub struct RunningServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on `addr` on the current tokio runtime.
pub async fn serve<H, F>(addr: SocketAddr, handler: H) -> std::io::Result<RunningServer>
where
    H: Fn(ReceivedRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handle(req, handler.as_ref()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(RunningServer { addr, task })
}

async fn handle<H, F>(req: Request<Incoming>, handler: &H) -> Response<Full<Bytes>>
where
    H: Fn(ReceivedRequest) -> F,
    F: Future<Output = Response<Full<Bytes>>>,
{
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_DEMO_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(413, "text/plain", Bytes::from_static(b"too large\n")),
    };
    handler(ReceivedRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    })
    .await
}

/// A response with a body and content type.
pub fn respond(
    status: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
