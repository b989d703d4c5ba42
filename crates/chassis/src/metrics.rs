//! Prometheus metrics, served at `/metrics` on a listener of their own.
//!
//! The Prometheus project's `prometheus-client` holds the metrics: every
//! service gets a registry of its own rather than a process-wide recorder,
//! so the four services that `agentmesh dev` runs in one process each
//! report only themselves, and label sets are Rust types, which keeps their
//! cardinality bounded by construction (no workspace id can become a label).
//!
//! Counters are counted where things happen; gauges that must agree across
//! replicas (how many workspaces are online, how deep the queue is) are read
//! from the shared store when Prometheus scrapes, through hooks the services
//! register with [`Metrics::on_scrape`].

mod grpc;
mod process;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use grpc::GrpcMetricsLayer;

/// How long a scrape waits for the store-backed gauges before answering
/// with the values of the last scrape: Prometheus' own timeout is 10 s.
const SCRAPE_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Buckets for latencies of work done within the mesh, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

type ScrapeHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    service: &'static str,
    version: &'static str,
}

/// One service's metrics: what the chassis measures for every service
/// (build, process, gRPC calls) and what the service registers itself.
pub struct Metrics {
    registry: Registry,
    hooks: Vec<ScrapeHook>,
    grpc: grpc::GrpcMetrics,
    serving: Gauge,
}

impl Metrics {
    /// The metrics of `service` (`registry`, `a2a-gateway`…).
    pub fn new(service: &'static str) -> Self {
        let mut registry = Registry::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { service, version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("agentmesh_build_info", "The agentmesh version serving, always 1", build);
        registry.register_collector(Box::new(process::ProcessCollector));
        let grpc = grpc::GrpcMetrics::register(&mut registry);
        let serving = Gauge::default();
        registry.register(
            "agentmesh_serving",
            "1 while the service reports SERVING through grpc.health.v1, else 0",
            serving.clone(),
        );
        Self { registry, hooks: Vec::new(), grpc, serving }
    }

    /// Where the service registers its own metrics: their names begin with
    /// `agentmesh_<section>_`.
    pub fn section(&mut self, section: &str) -> &mut Registry {
        self.registry.sub_registry_with_prefix(format!("agentmesh_{section}"))
    }

    /// Runs `hook` before every scrape is answered, to bring gauges read
    /// from the store up to date. A hook that fails should leave its gauges
    /// as they were and log why.
    pub fn on_scrape<F, Fut>(&mut self, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.push(Arc::new(move || Box::pin(hook())));
    }

    /// The gauge that follows the service's health.
    pub(crate) fn serving(&self) -> Gauge {
        self.serving.clone()
    }

    /// The layer that counts and times every gRPC call of `services` (fully
    /// qualified names); calls to anything else count under `unknown`, so a
    /// caller inventing paths cannot invent series.
    pub(crate) fn grpc_layer(&self, services: &[&str], enabled: bool) -> GrpcMetricsLayer {
        self.grpc.layer(services, enabled)
    }

    /// Serves `/metrics` on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let exposition = Arc::new(Exposition { registry: self.registry, hooks: self.hooks });
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let exposition = exposition.clone();
                async move { exposition.render().await.into_response() }
            }),
        );
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
    }
}

struct Exposition {
    registry: Registry,
    hooks: Vec<ScrapeHook>,
}

impl Exposition {
    async fn render(&self) -> axum::response::Response {
        let hooks = self.hooks.iter().map(|hook| tokio::time::timeout(SCRAPE_HOOK_TIMEOUT, hook()));
        for timed_out in futures::future::join_all(hooks).await {
            if timed_out.is_err() {
                tracing::warn!("a metric read from the store took too long; its last value is served");
            }
        }
        let mut body = String::with_capacity(16 * 1024);
        match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response(),
            Err(_) => (http::StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded").into_response(),
        }
    }
}

/// Binds the metrics listener configured as `metrics_listen`.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::binary::bind(address, "metrics_listen").await
}

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A family of latency histograms, one per label set.
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An empty [`LatencyFamily`].
pub fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram)
}
