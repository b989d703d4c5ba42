//! Logs and traces, set up once per binary.
//!
//! Traces are exported over OTLP when an endpoint is configured, and W3C
//! trace context is read from every incoming request so that one request
//! crossing several services is one trace.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::ServerConfig;

/// Whether spans are exported, i.e. whether spans carry trace ids.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Flushes pending spans when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (or the configured filter),
/// text or JSON lines, and the OTLP layer when an endpoint is configured.
pub fn init(service_name: &'static str, config: &ServerConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log))?;
    let fmt = if config.log_json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        // Colour only for a person at a terminal: log files and container
        // logs get plain text.
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer().with_ansi(colour).boxed()
    };

    let (otel, provider) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone()).build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer(service_name);
            global::set_tracer_provider(provider.clone());
            EXPORTING.store(true, Ordering::Relaxed);
            (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
        }
        None => (None, None),
    };

    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// The W3C trace context fields of a request.
struct TraceFields<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for TraceFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        if self.tracestate.is_some() { vec!["traceparent", "tracestate"] } else { vec!["traceparent"] }
    }
}

/// The span of one incoming gRPC request, continuing the caller's trace.
pub fn request_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!("grpc.request", otel.name = %path, otel.kind = "server", rpc.system = "grpc");
    continue_trace(&span, request.headers());
    span
}

/// Makes `span` a child of the W3C trace context in `headers`; a missing or
/// malformed `traceparent` leaves it the root of a new trace.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    continue_trace_with(span, |name| headers.get(name).and_then(|v| v.to_str().ok()));
}

/// [`continue_trace`] for requests whose fields are not an
/// [`http::HeaderMap`]: `field` looks a field up by its lower-case name.
pub fn continue_trace_with<'a>(span: &tracing::Span, field: impl Fn(&str) -> Option<&'a str>) {
    // W3C trace context has no parent without `traceparent`: skip the
    // extraction, which is most of this function's cost.
    let Some(traceparent) = field("traceparent") else { return };
    let fields = TraceFields { traceparent, tracestate: field("tracestate") };
    let parent = global::get_text_map_propagator(|p| p.extract(&fields));
    let _ = span.set_parent(parent);
}

/// Whether spans are exported (an OTLP endpoint is configured): without an
/// exporter, a span made only to carry trace context is wasted work.
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The `traceparent` that makes a call made now part of the current span's
/// trace; `None` when no trace is being recorded.
pub fn current_traceparent() -> Option<String> {
    if !is_exporting() {
        // Without an exporter no span has a trace id of its own to pass on.
        return None;
    }
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value);
        if let (Ok(key), Ok(value)) = (key, value) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's W3C trace context into an outgoing request, so
/// the service called continues this trace.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut MetadataInjector(metadata)));
}
