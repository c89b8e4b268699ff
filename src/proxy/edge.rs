//! The connection layer under Pingora's HTTP/1 parser: every client connection's request heads
//! are bounded in size (`server.max_header_bytes`) and time (`server.header_timeout_ms`), idle
//! kept-alive connections are closed (`server.keepalive_timeout_s`), and heads Pingora refuses
//! as malformed are answered with the API's envelope, counted and logged like any request.
//!
//! Written by hand because Pingora 0.9 offers none of it: its head limit is a fixed 1 MiB, its
//! timeouts are per read (one byte a second keeps a connection forever), and a head it cannot
//! parse gets a bare 400 without reaching any `ProxyHttp` phase. So [`EdgeApp`] runs the HTTP/1
//! keep-alive loop itself (as Pingora's own `ServerApp` would) over a [`HeadGuard`]-wrapped
//! stream, and hands each request to Pingora's proxy untouched. The guard never parses HTTP:
//! it counts the bytes of the head up to the first blank line (the earliest end any HTTP/1
//! parser accepts, so it can never cut a head short) and keeps a copy of them only to render a
//! refusal in the format the request asked for. Once the head is complete the stream is passed
//! through byte for byte. TLS connections that negotiate h2 go to Pingora directly: HTTP/2
//! bounds its header block with its own settings.
//!
//! It must never buffer more of a pending head than the limit, never answer for a request the
//! proxy accepted, and never log anything of the head but its outcome.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

use super::logging::AccessLine;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::render::RenderOptions;
use crate::request::query;
use pingora::proxy::ProxyHttp;

/// Route label of requests refused before they were parsed (SPEC §4.8).
pub const MALFORMED_ROUTE: &str = "malformed";

/// After a refusal, how long the client's remaining bytes are read and dropped before the
/// connection closes, so that closing with unread data (a TCP reset) does not destroy the
/// answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is drained while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// The limits one client connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// The whole head must arrive within this.
    pub header_timeout: Duration,
    /// Idle time allowed between two requests; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
}

tokio::task_local! {
    /// The connection whose request the current task is handling (HTTP/1 only).
    static CONNECTION: Arc<ConnectionState>;
}

/// Tells the connection layer that the proxy accepted the current request head: from now on
/// every byte written is the proxy's answer. Called from `new_ctx`; a no-op outside
/// [`EdgeApp`] (HTTP/2 streams, embedders).
pub fn request_accepted() {
    let _ = CONNECTION.try_with(|c| c.accepted.store(true, Ordering::Release));
}

/// What the guard decided about a head, for the log line and the metrics.
#[derive(Debug)]
struct Refusal {
    error: GatewayError,
    request_id: http::HeaderValue,
}

/// State shared by the keep-alive loop and the guard of one connection.
#[derive(Debug, Default)]
struct ConnectionState {
    /// Set by the loop before each request: the next read starts a new head.
    new_head: AtomicBool,
    /// Set by the proxy once it accepted the head.
    accepted: AtomicBool,
    /// A head the guard refused (or whose refusal by Pingora it rewrote).
    refusal: Mutex<Option<Refusal>>,
}

impl ConnectionState {
    fn refuse(&self, refusal: Refusal) {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal);
        }
    }

    fn take_refusal(&self) -> Option<Refusal> {
        self.refusal.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Pingora's proxy behind the connection layer: the service every listener runs.
///
/// Any `ProxyHttp` can run behind it (an embedder's own proxy too); its `new_ctx` should call
/// [`request_accepted`], as [`super::UploadApi::new_ctx`] does.
pub struct EdgeApp<SV> {
    proxy: Arc<HttpProxy<SV>>,
    limits: EdgeLimits,
    metrics: Arc<Metrics>,
    cors: Option<Arc<EdgeCors>>,
}

/// What the edge needs to put CORS headers on its own refusals (SPEC §4.11: every answer to
/// an allowed origin on the API carries them), as the request filter does on the others.
#[derive(Debug)]
pub struct EdgeCors {
    /// The API's shape, to tell whether a refused head was for the API.
    pub api: crate::config::ApiSettings,
    /// The CORS policy of `[cors]`.
    pub policy: crate::cors::CorsPolicy,
}

impl<SV> EdgeApp<SV> {
    /// Wraps `proxy` so that every HTTP/1 connection is held to `limits`.
    pub fn new(proxy: HttpProxy<SV>, limits: EdgeLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            limits,
            metrics,
            cors: None,
        }
    }

    /// Refusals of heads for the API from an allowed origin carry the CORS headers too.
    pub fn with_cors(mut self, cors: EdgeCors) -> Self {
        self.cors = Some(Arc::new(cors));
        self
    }

    fn keepalive_seconds(&self) -> Option<u64> {
        let seconds = self.limits.keepalive_timeout.as_secs();
        (seconds > 0).then_some(seconds)
    }

    fn report(&self, state: &ConnectionState, started: Instant) {
        let Some(refusal) = state.take_refusal() else {
            return;
        };
        let status = refusal.error.status();
        let latency = started.elapsed();
        self.metrics
            .observe_request(MALFORMED_ROUTE, status, latency, None);
        AccessLine {
            request_id: &refusal.request_id,
            method: "",
            route: MALFORMED_ROUTE,
            status,
            upstream: None,
            latency,
            upstream_latency: None,
            auth: "none",
            provider: None,
            trace: None,
            reason: Some(refusal.error.reason()),
            proxy_error: None,
            aborted: false,
        }
        .write();
    }
}

#[async_trait]
impl<SV> ServerApp for EdgeApp<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let state = Arc::new(ConnectionState::default());
        let guarded: Stream = Box::new(HeadGuard::new(
            stream,
            state.clone(),
            self.limits,
            self.cors.clone(),
        ));
        let mut session = ServerSession::new_http1(guarded);
        let keepalive = if *shutdown.borrow() {
            None
        } else {
            self.keepalive_seconds()
        };
        session.set_keepalive(keepalive);
        loop {
            state.new_head.store(true, Ordering::Release);
            state.accepted.store(false, Ordering::Release);
            let started = Instant::now();
            let reused = CONNECTION
                .scope(
                    state.clone(),
                    self.proxy.process_new_http(session, shutdown),
                )
                .await;
            self.report(&state, started);
            let (stream, settings) = reused?.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// Where the guard is in the current request.
#[derive(Debug)]
enum Phase {
    /// Reading a head: bytes are counted, copied and scanned for its end.
    Head,
    /// The head is complete: bytes pass through untouched.
    Passthrough,
    /// Writing the guard's own answer instead of anything the proxy writes.
    Answer {
        bytes: Bytes,
        written: usize,
        /// Then linger and close (a refusal from the read side) or just swallow what the
        /// proxy still writes (a rewritten refusal of Pingora's).
        linger: bool,
    },
    /// The answer is out: the proxy's writes are dropped.
    Swallow,
    /// Reading and dropping what the client still sends, until [`LINGER`] ends.
    Linger { until: Instant, drained: usize },
    /// Nothing more is read.
    Closed,
}

/// Where the scan for the blank line ending the head stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Only CR/LF so far: parsers skip empty lines before the request line.
    Leading,
    /// Inside a line.
    Line,
    /// Just after a LF.
    AfterLf,
    /// After LF CR.
    AfterLfCr,
}

impl Scan {
    /// Feeds `bytes`; returns how many were consumed when the head ended among them.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *self = match (*self, b) {
                (Scan::Leading, b'\r' | b'\n') => Scan::Leading,
                (Scan::AfterLf | Scan::AfterLfCr, b'\n') => return Some(i + 1),
                (Scan::AfterLf, b'\r') => Scan::AfterLfCr,
                (_, b'\n') => Scan::AfterLf,
                _ => Scan::Line,
            };
        }
        None
    }
}

/// A client stream whose request heads are held to [`EdgeLimits`].
pub struct HeadGuard {
    inner: Stream,
    state: Arc<ConnectionState>,
    limits: EdgeLimits,
    cors: Option<Arc<EdgeCors>>,
    phase: Phase,
    scan: Scan,
    /// The current head as far as it came, for rendering a refusal; cleared at the next one.
    head: Vec<u8>,
    /// When the current head must be complete (or, before its first byte on a kept-alive
    /// connection, when the idle connection is closed).
    deadline: Instant,
    /// Waiting for the first byte of a head on a reused connection.
    idle: bool,
    /// Heads started on this connection.
    heads: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl HeadGuard {
    fn new(
        inner: Stream,
        state: Arc<ConnectionState>,
        limits: EdgeLimits,
        cors: Option<Arc<EdgeCors>>,
    ) -> Self {
        Self {
            inner,
            state,
            limits,
            cors,
            phase: Phase::Passthrough,
            scan: Scan::Leading,
            head: Vec::new(),
            deadline: Instant::now() + limits.header_timeout,
            idle: false,
            heads: 0,
            timer: None,
        }
    }

    /// Starts the next head: from the connection's start for the first one, from its first
    /// byte for later ones (until then the keep-alive timeout applies).
    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.scan = Scan::Leading;
        self.head.clear();
        let now = Instant::now();
        if self.heads == 0 {
            // The deadline set when the connection was accepted stands.
            self.idle = false;
        } else {
            self.deadline = now + self.limits.keepalive_timeout;
            self.idle = true;
        }
        self.heads += 1;
    }

    /// Whether the deadline passed (arming the timer to wake the task when it does).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// The refusal's answer, rendered as the request asked as far as its head tells.
    fn answer(&self, error: &GatewayError, request_id: &http::HeaderValue) -> Bytes {
        let head = HeadView::of(&self.head);
        let render = head.render_options();
        let body = error.api_error().render(render);
        let status = error.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut out = Vec::with_capacity(body.len() + 200);
        out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(render.format.content_type().as_bytes());
        out.extend_from_slice(format!("\r\ncontent-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\nvary: Accept\r\n");
        if let Some(cors) = self.cors.as_deref() {
            let target = head.target.as_bytes();
            if crate::route::classify(&cors.api, false, target).is_api() {
                out.extend_from_slice(b"vary: Origin\r\n");
                let allowed = head
                    .single("origin")
                    .and_then(|origin| cors.policy.allowed_origin(origin.as_bytes()));
                for (name, value) in allowed
                    .map(|a| cors.policy.answer_headers(a))
                    .into_iter()
                    .flatten()
                {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    fn refuse(&mut self, error: GatewayError, linger: bool) {
        let request_id = super::request_filter::generate_request_id();
        let bytes = self.answer(&error, &request_id);
        self.record(error, request_id);
        self.phase = Phase::Answer {
            bytes,
            written: 0,
            linger,
        };
    }

    /// Hands the refusal to the keep-alive loop for the log line and the metrics, and drops
    /// the head's copy.
    fn record(&mut self, error: GatewayError, request_id: http::HeaderValue) {
        self.state.refuse(Refusal { error, request_id });
        self.head = Vec::new();
    }

    /// Writes what is left of the guard's own answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Answer {
            bytes,
            written,
            linger,
        } = &mut self.phase
        {
            if *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
                continue;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.phase = if *linger {
                ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                Phase::Linger {
                    until: Instant::now() + LINGER,
                    drained: 0,
                }
            } else {
                Phase::Swallow
            };
        }
        Poll::Ready(Ok(()))
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let seen = self.head.len();
        if seen >= self.limits.max_header_bytes {
            self.refuse(
                GatewayError::HeaderTooLarge {
                    limit: self.limits.max_header_bytes,
                },
                true,
            );
            return self.poll_read_refused(cx);
        }
        let budget = self.limits.max_header_bytes - seen;
        let mut limited = buf.take(budget);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        match polled {
            Poll::Ready(Ok(())) => {
                // SAFETY: `limited` is a view of `buf`'s unfilled part, and the inner read
                // initialised and filled its first `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                let fresh = &buf.filled()[buf.filled().len() - n..];
                if self.idle {
                    self.idle = false;
                    self.deadline = Instant::now() + self.limits.header_timeout;
                }
                // The copy is kept until the next head: Pingora may still refuse this one.
                match self.scan.feed(fresh) {
                    Some(end) => {
                        self.head.extend_from_slice(&fresh[..end]);
                        self.phase = Phase::Passthrough;
                    }
                    None => self.head.extend_from_slice(fresh),
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !self.poll_deadline(cx) {
                    return Poll::Pending;
                }
                // An idle connection is not a request: it is closed without a word or a line.
                let idle = self.idle || (self.head.is_empty() && self.scan == Scan::Leading);
                if !idle {
                    let request_id = super::request_filter::generate_request_id();
                    self.record(GatewayError::HeaderTimeout, request_id);
                }
                self.phase = Phase::Closed;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reading while the guard answers or lingers: the proxy sees the end of the stream once
    /// the answer is out and the client's rest drained.
    fn poll_read_refused(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.phase {
                Phase::Answer { .. } => {
                    if let Err(e) = ready!(self.poll_answer(cx)) {
                        self.phase = Phase::Closed;
                        return Poll::Ready(Err(e));
                    }
                }
                Phase::Linger { until, drained } => {
                    if *drained >= LINGER_BYTES || Instant::now() >= *until {
                        self.phase = Phase::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut sink) {
                        Poll::Ready(Ok(())) if !sink.filled().is_empty() => {
                            *drained += sink.filled().len();
                        }
                        Poll::Ready(_) => self.phase = Phase::Closed,
                        Poll::Pending => {
                            self.deadline = *until;
                            if !self.poll_deadline(cx) {
                                return Poll::Pending;
                            }
                            self.phase = Phase::Closed;
                        }
                    }
                }
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    /// A write while the current head was never accepted by the proxy: Pingora refusing it
    /// with a bare status. A 400 or 405 is replaced by the API's envelope; anything else
    /// passes.
    fn intercept(&mut self, data: &[u8]) {
        if !matches!(self.phase, Phase::Head | Phase::Passthrough | Phase::Closed)
            || self.heads == 0
            || self.state.accepted.load(Ordering::Acquire)
        {
            return;
        }
        let status = data
            .get(9..12)
            .filter(|_| data.starts_with(b"HTTP/1."))
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse::<u16>().ok());
        // The only other status Pingora sends here is 405 for CONNECT (refused before any
        // phase): a request this API cannot serve, answered like any other malformed one
        // (found by a black-box attack: a bare 405, no envelope, never logged or counted).
        if matches!(status, Some(400 | 405)) {
            self.refuse(GatewayError::MalformedRequest, false);
        }
    }
}

/// A (possibly partial) head read leniently, for rendering its refusal: the request target
/// and the header lines that arrived complete.
struct HeadView {
    target: String,
    headers: Vec<(String, String)>,
}

impl HeadView {
    fn of(head: &[u8]) -> Self {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let request_line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or("");
        let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        // A last line without its newline may be cut short: it is not read.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let headers = complete
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .skip_while(|l| l.is_empty())
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self { target, headers }
    }

    /// The value of a header that must come once (`None` when absent or repeated).
    fn single(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some((_, value)), None) => Some(value),
            _ => None,
        }
    }

    /// The rendering options the head asks for: the request line's `format`, `human` and
    /// `show_null` and the `Accept` header.
    fn render_options(&self) -> RenderOptions {
        let query = self.target.split_once('?').map(|(_, q)| q);
        let accept = self
            .headers
            .iter()
            .find(|(name, _)| name == "accept")
            .map(|(_, value)| value.as_str());
        query::lenient_render_options(query, accept)
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.new_head.swap(false, Ordering::AcqRel) {
            this.start_head();
        }
        match this.phase {
            Phase::Passthrough => Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Head => this.poll_head(cx, buf),
            Phase::Closed | Phase::Swallow => Poll::Ready(Ok(())),
            Phase::Answer { .. } | Phase::Linger { .. } => this.poll_read_refused(cx),
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.intercept(data);
        match this.phase {
            Phase::Answer { .. } => {
                ready!(this.poll_answer(cx))?;
                Poll::Ready(Ok(data.len()))
            }
            Phase::Swallow | Phase::Linger { .. } => Poll::Ready(Ok(data.len())),
            _ => Pin::new(&mut this.inner).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.intercept(first);
        }
        match this.phase {
            Phase::Answer { .. } => {
                ready!(this.poll_answer(cx))?;
                Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
            }
            Phase::Swallow | Phase::Linger { .. } => {
                Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
            }
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Phase::Answer { .. } = this.phase {
            ready!(this.poll_answer(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Phase::Answer { .. } = this.phase {
            ready!(this.poll_answer(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        let _ = self.flush().await;
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ResponseFormat;

    fn end_of_head(chunks: &[&[u8]]) -> Option<usize> {
        let mut scan = Scan::Leading;
        let mut offset = 0;
        for chunk in chunks {
            if let Some(n) = scan.feed(chunk) {
                return Some(offset + n);
            }
            offset += chunk.len();
        }
        None
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_in_every_spelling() {
        assert_eq!(
            end_of_head(&[b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY"]),
            Some(24)
        );
        assert_eq!(end_of_head(&[b"GET / HTTP/1.1\n\nBODY"]), Some(16));
        assert_eq!(end_of_head(&[b"GET / HTTP/1.1\r\n\nX"]), Some(17));
        assert_eq!(end_of_head(&[b"GET / HTTP/1.1\n\r\nX"]), Some(17));
        // Split anywhere, even inside the terminator.
        assert_eq!(
            end_of_head(&[b"GET / HTTP/1.1\r\nA: b\r", b"\n\r", b"\nBODY"]),
            Some(24)
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_do_not_end_the_head() {
        assert_eq!(end_of_head(&[b"\r\n\r\n\n"]), None);
        assert_eq!(end_of_head(&[b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), Some(22));
    }

    #[test]
    fn an_unfinished_head_has_no_end() {
        assert_eq!(end_of_head(&[b"GET / HTTP/1.1\r\nA: b\r\nC: d"]), None);
        assert_eq!(end_of_head(&[b"GET / HTTP/1.1\r\nA: b\r\r\n"]), None);
    }

    #[test]
    fn a_refusal_is_rendered_as_the_partial_head_asks() {
        let xml =
            HeadView::of(b"GET /v1/x?format=xml&human HTTP/1.1\r\nX-Big: aaaa").render_options();
        assert_eq!(xml.format, ResponseFormat::Xml);
        assert!(xml.human);
        let accept =
            HeadView::of(b"PUT /v1/x HTTP/1.1\r\nHost: a\r\naccept: text/xml\r\n").render_options();
        assert_eq!(accept.format, ResponseFormat::Xml);
        let garbage = HeadView::of(b"\xff\xfe").render_options();
        assert_eq!(garbage.format, ResponseFormat::Json);
    }
}
