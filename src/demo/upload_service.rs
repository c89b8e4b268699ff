//! The reference upload service (SPEC §6): a real HTTP server on loopback that answers the
//! finish call with the documented `COMPLETING` document, 404s unknown uploads, creates uploads
//! on `POST {prefix}/files/uploads`, and remembers what it received (in memory only) so tests can
//! see exactly what the gateway forwarded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use super::http::{respond, serve, ReceivedRequest, RunningServer};

/// The upload ID the documentation uses; always known.
pub const DOCUMENTED_UPLOAD_ID: &str = "5475f75ce4b084a392305dcb";

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct UploadServiceOptions {
    /// The API prefix it serves under (the gateway's `api.path_prefix`).
    pub prefix: String,
    /// Delay before every answer (for timeout and drain tests).
    pub delay: Duration,
}

impl Default for UploadServiceOptions {
    fn default() -> Self {
        Self {
            prefix: "/v1".into(),
            delay: Duration::ZERO,
        }
    }
}

struct State {
    options: UploadServiceOptions,
    known: Mutex<HashSet<String>>,
    received: Mutex<Vec<ReceivedRequest>>,
}

/// A running reference upload service; stops when dropped.
pub struct UploadService {
    server: RunningServer,
    state: Arc<State>,
}

impl UploadService {
    /// Starts the service on `addr` (port 0 for any free port) on the current tokio runtime.
    pub async fn start(addr: SocketAddr, options: UploadServiceOptions) -> std::io::Result<Self> {
        let state = Arc::new(State {
            options,
            known: Mutex::new(HashSet::from([DOCUMENTED_UPLOAD_ID.to_owned()])),
            received: Mutex::new(Vec::new()),
        });
        let handler_state = state.clone();
        let server = serve(addr, move |req| {
            let state = handler_state.clone();
            async move { state.answer(req).await }
        })
        .await?;
        Ok(Self { server, state })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

fn json_response(status: u16, value: &Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

fn envelope(code: &str, message: &str) -> Value {
    json!({"error": {"error_code": code, "error_message": message}})
}

/// The documented success document, with the caller's `nb_chunks` and upload ID.
pub fn completing_document(upload_id: &str, nb_chunks: &Value) -> Value {
    json!({
        "upload": {
            "form_post_url": "https://s3-eu-west-1.amazonaws.com/prd-xmc-xvid-s3-eu-west-1/",
            "status": "COMPLETING",
            "nb_chunks": nb_chunks,
            "storage_type": "S3",
            "object_key": "uploads/test.mp4",
            "pipeline": { "id": "547f3eede4b025bcbff38657" },
            "file": { "id": "598358fe6baa605b1e33754e" },
            "id": upload_id,
            // Not set until the pipeline finishes: `show_null=true` shows it.
            "completed_at": null
        }
    })
}

impl State {
    async fn answer(&self, req: ReceivedRequest) -> Response<Full<Bytes>> {
        if let Ok(mut received) = self.received.lock() {
            received.push(req.clone());
        }
        if !self.options.delay.is_zero() {
            tokio::time::sleep(self.options.delay).await;
        }
        let path = req.uri.path();
        let rest = path
            .strip_prefix(self.options.prefix.as_str())
            .unwrap_or("");
        match (&req.method, rest.strip_prefix("/files/uploads")) {
            (&http::Method::PUT, Some(id)) if id.len() > 1 => self.finish(&id[1..], &req.body),
            (&http::Method::POST, Some("")) => self.create(),
            _ => json_response(
                200,
                &json!({"echo": {"method": req.method.as_str(), "path": path}}),
            ),
        }
    }

    fn finish(&self, id: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let known = self.known.lock().map(|k| k.contains(id)).unwrap_or(false);
        if !known {
            return json_response(404, &envelope("0x0230002", "Requested file does not exist"));
        }
        let nb_chunks = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/upload/nb_chunks").cloned())
            .filter(Value::is_u64);
        match nb_chunks {
            Some(n) => json_response(200, &completing_document(id, &n)),
            None => json_response(400, &envelope("0x0230001", "Invalid Input")),
        }
    }

    fn create(&self) -> Response<Full<Bytes>> {
        let id: String = (0..24)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect();
        if let Ok(mut known) = self.known.lock() {
            known.insert(id.clone());
        }
        json_response(201, &json!({"upload": {"id": id, "status": "CREATED"}}))
    }
}
