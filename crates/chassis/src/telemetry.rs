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
        let writer = LineWriter::named(service_name, &config.replica);
        tracing_subscriber::fmt::layer().with_ansi(colour).event_format(writer).boxed()
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

thread_local! {
    /// The service a thread works for, where one process runs several (as
    /// `agentmesh dev` does): set by [`runtime_for`]'s threads.
    static THREAD_SERVICE: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A Tokio runtime whose threads log as `service`: for running several
/// services in one process, each on its own runtime, with every line still
/// naming who wrote it.
pub fn runtime_for(service: &'static str, threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(service)
        .on_thread_start(move || THREAD_SERVICE.set(Some(service)))
        .enable_all()
        .build()
}

/// Text log lines that begin with who wrote them (`registry`, or
/// `registry[replica]`), as a log collector or a shared terminal needs, in
/// front of tracing's own format.
struct LineWriter {
    name: String,
    format: tracing_subscriber::fmt::format::Format,
}

impl LineWriter {
    fn named(service: &str, replica: &str) -> Self {
        let name = match replica.trim() {
            "" => service.to_owned(),
            replica => format!("{service}[{replica}]"),
        };
        Self { name, format: tracing_subscriber::fmt::format::Format::default() }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineWriter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let name = match THREAD_SERVICE.get() {
            Some(service) => service,
            None => self.name.as_str(),
        };
        if writer.has_ansi_escapes() {
            write!(writer, "\x1b[1m{name}\x1b[0m ")?;
        } else {
            write!(writer, "{name} ")?;
        }
        self.format.format_event(context, writer, event)
    }
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
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        trace_id = tracing::field::Empty,
    );
    continue_trace(&span, request.headers());
    record_trace_id(&span);
    span
}

/// Records the trace `span` belongs to in its `trace_id` field, so that the
/// log lines written under it carry it. Nothing is recorded when no trace is
/// exported: there is no trace to look up.
pub fn record_trace_id(span: &tracing::Span) {
    if !is_exporting() {
        return;
    }
    let trace_id = opentelemetry::trace::TraceContextExt::span(&span.context()).span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Everything the subscriber writes, for reading back.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Written {
        type Writer = Written;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(writer: LineWriter, ansi: bool, log: impl FnOnce()) -> String {
        let written = Written::default();
        let layer = tracing_subscriber::fmt::layer().with_ansi(ansi).event_format(writer).with_writer(written.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        String::from_utf8(written.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_line_begins_with_the_service_and_its_replica() {
        let printed = lines_of(LineWriter::named("registry", "registry-0"), false, || {
            tracing::info!("ready");
            tracing::warn!(error = "down", "not ready");
        });
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 2, "{printed}");
        assert!(lines.iter().all(|line| line.starts_with("registry[registry-0] ")), "{printed}");
        assert!(lines[0].ends_with("ready") && lines[1].contains("error=\"down\""), "{printed}");
        assert!(!printed.contains('\x1b'), "no colour where none was asked for: {printed:?}");

        let alone = lines_of(LineWriter::named("scheduler", " "), false, || tracing::info!("ready"));
        assert!(alone.starts_with("scheduler ") && !alone.contains('['), "{alone}");
    }

    #[test]
    fn a_line_logged_under_a_request_carries_its_trace_id() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
        let provider = SdkTracerProvider::builder().build();
        let written = Written::default();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(LineWriter::named("registry", ""))
            .with_writer(written.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(fmt);
        tracing::subscriber::with_default(subscriber, || {
            let request = http::Request::builder()
                .uri("/agentmesh.registry.v1.RegistryService/Heartbeat")
                .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .body(())
                .unwrap();
            let span = request_span(&request);
            let _entered = span.enter();
            tracing::info!("heartbeat accepted");
        });
        let printed = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        assert!(printed.starts_with("registry "), "{printed}");
        assert!(printed.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"), "{printed}");
    }

    #[test]
    fn a_thread_of_a_services_runtime_writes_under_its_name() {
        let runtime = runtime_for("provisioner", 1).unwrap();
        let printed = lines_of(LineWriter::named("agentmesh-dev", ""), true, || {
            // The subscriber is this thread's; the runtime's thread logs
            // through the global default, so the name is read here, as the
            // formatter reads it on that thread.
            let on_runtime = runtime.block_on(async { tokio::spawn(async { THREAD_SERVICE.get() }).await.unwrap() });
            assert_eq!(on_runtime, Some("provisioner"));
            tracing::info!("from the main thread");
        });
        assert!(printed.starts_with("\x1b[1magentmesh-dev\x1b[0m "), "{printed:?}");
    }
}
