//! One span per request exported over OTLP/HTTP (SPEC §4.12, `observability.otlp_endpoint`):
//! the `opentelemetry-otlp` exporter (protobuf, POSTed to `{endpoint}/v1/traces`) behind the
//! SDK's batch span processor, which queues spans in a bounded channel and exports them from
//! its own thread. The request path only fills a [`SpanData`] and hands it over (`try_send`):
//! a collector that is down or slow fills the queue, and further spans are dropped (the SDK
//! counts them), never waited for. A failed export (collector down, refusing, hung past the
//! timeout) is counted in `otlp_export_errors_total` (spans lost) and warned at most once a
//! minute, so a lost trace pipeline shows on the dashboard instead of going silent.
//!
//! The span is built as data rather than through a `Tracer`: its span id must be the one the
//! gateway already sent upstream as the parent id (`traceparent`), and the SDK's tracer always
//! draws span ids of its own.
//!
//! What a span carries: the route template (its name), the method, the status, the upstream
//! address, the auth outcome, the provider and the refusal reason. Never the token, the query,
//! a header value or the body.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;

use crate::logging::Throttle;

use crate::trace_context::TraceContext;

/// How long one export may take before the exporter gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting for export at most; beyond, new ones are dropped.
const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;
/// Queued spans wait this long at most for a batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("observability.otlp_endpoint: the OTLP exporter could not be built: {0}")]
pub struct ExportError(String);

/// The span export of one gateway.
pub struct SpanExport {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

/// What one finished request contributes to its span.
pub struct RequestSpan<'a> {
    /// Its trace: the ids of the span (the one sent upstream) and of its parent.
    pub trace: &'a TraceContext,
    /// The route template: the span's name.
    pub route: &'static str,
    /// The request method.
    pub method: &'a str,
    /// The status answered (0: none was).
    pub status: u16,
    /// The upstream address, when one was used.
    pub upstream: Option<SocketAddr>,
    /// The auth outcome (`ok`, `refused`, `public`, ...).
    pub auth: &'static str,
    /// The identity provider of the token, when one could be told.
    pub provider: Option<&'a str>,
    /// Why the gateway refused or failed the request, if it did.
    pub reason: Option<&'static str>,
    /// From arrival to the last byte of the answer.
    pub latency: Duration,
}

impl SpanExport {
    /// An exporter to `endpoint` (a validated `http://` or `https://` base URL); spans it
    /// fails to export are counted in `errors`.
    pub fn new(endpoint: &str, errors: IntCounter) -> Result<Self, ExportError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| ExportError(e.to_string()))?;
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .with_scheduled_delay(FLUSH_EVERY)
            .build();
        let exporter = Watched {
            inner: exporter,
            errors,
            warnings: Throttle::new(),
        };
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build();
        processor.set_resource(
            &Resource::builder()
                .with_service_name(env!("CARGO_PKG_NAME"))
                .build(),
        );
        Ok(Self {
            processor,
            scope: InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Queues the span of a finished request (never blocks).
    pub fn export(&self, span: &RequestSpan<'_>) {
        let end_time = SystemTime::now();
        let mut attributes = Vec::with_capacity(8);
        attributes.push(KeyValue::new("http.request.method", span.method.to_owned()));
        attributes.push(KeyValue::new("http.route", span.route));
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(span.status),
        ));
        attributes.push(KeyValue::new("upload_gateway.auth", span.auth));
        if let Some(upstream) = span.upstream {
            attributes.push(KeyValue::new("server.address", upstream.ip().to_string()));
            attributes.push(KeyValue::new("server.port", i64::from(upstream.port())));
        }
        if let Some(provider) = span.provider {
            attributes.push(KeyValue::new(
                "upload_gateway.provider",
                provider.to_owned(),
            ));
        }
        if let Some(reason) = span.reason {
            attributes.push(KeyValue::new("upload_gateway.reason", reason));
        }
        let status = if span.status >= 500 || span.status == 0 {
            Status::error(span.reason.unwrap_or("server error"))
        } else {
            Status::Unset
        };
        let trace = span.trace;
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(trace.span_id),
                TraceFlags::new(trace.flags),
                false,
                TraceState::NONE,
            ),
            parent_span_id: trace
                .parent_span_id
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: trace.parent_span_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(span.route),
            start_time: end_time.checked_sub(span.latency).unwrap_or(end_time),
            end_time,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Exports what is queued, waiting at most `timeout` (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.processor.shutdown_with_timeout(timeout);
    }
}

/// The OTLP exporter, with its failures counted and warned (at most once a minute).
#[derive(Debug)]
struct Watched<E> {
    inner: E,
    errors: IntCounter,
    warnings: Throttle,
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.errors.inc_by(spans);
            if self.warnings.ready() {
                // The endpoint holds no credentials (check refuses them); the error names
                // the cause (refused, timed out, an HTTP status).
                tracing::warn!(
                    "span export failed ({spans} spans lost): {error} (logged at most once a \
                     minute; counted in upload_gateway_otlp_export_errors_total)"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
