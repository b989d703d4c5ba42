//! Every gRPC call counted by service, method and status code, and timed,
//! by a tower layer around the server: no handler knows about it.
//!
//! The status of a call is where gRPC puts it: in the response headers of a
//! trailers-only answer (an error before any message), else in the
//! trailers at the end of the body. A body dropped before its trailers is a
//! call the client gave up on: CANCELLED, as the client saw it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use prost::Message;
use tonic::Code;

use super::{LatencyFamily, latency_family};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

/// The families every service registers.
pub(super) struct GrpcMetrics {
    handled: Family<HandledLabels, Counter>,
    seconds: LatencyFamily<MethodLabels>,
}

impl GrpcMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let handled = Family::default();
        let seconds = latency_family();
        registry.register(
            "agentmesh_grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            handled.clone(),
        );
        registry.register(
            "agentmesh_grpc_server_handling_seconds",
            "Time from a gRPC call's arrival to its status, in seconds",
            seconds.clone(),
        );
        Self { handled, seconds }
    }

    /// A layer measuring the methods of `services` (and health and
    /// reflection), or passing calls through untouched when not `enabled`.
    pub(super) fn layer(&self, services: &[&str], enabled: bool) -> GrpcMetricsLayer {
        if !enabled {
            return GrpcMetricsLayer { methods: None };
        }
        let served: Vec<&str> = services
            .iter()
            .copied()
            .chain([
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ])
            .collect();
        let mut methods = HashMap::new();
        for descriptors in [
            agentmesh_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(descriptors) else { continue };
            for file in set.file {
                let package = file.package().to_owned();
                for service in file.service {
                    let name = match package.as_str() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    if !served.contains(&name.as_str()) {
                        continue;
                    }
                    for method in service.method {
                        let path = format!("/{name}/{}", method.name());
                        methods.insert(path, Arc::new(self.method(&name, method.name())));
                    }
                }
            }
        }
        let unknown = Arc::new(self.method("unknown", "unknown"));
        GrpcMetricsLayer { methods: Some(Arc::new(MethodTable { methods, unknown })) }
    }

    fn method(&self, service: &str, method: &str) -> MethodMetrics {
        let labels = MethodLabels { grpc_service: service.to_owned(), grpc_method: method.to_owned() };
        MethodMetrics {
            seconds: self.seconds.get_or_create(&labels).clone(),
            handled: self.handled.clone(),
            by_code: std::array::from_fn(|_| OnceLock::new()),
            labels,
        }
    }
}

/// One method's series, the counters made on first use of each code so
/// that codes a method never returns add no series.
struct MethodMetrics {
    labels: MethodLabels,
    seconds: Histogram,
    handled: Family<HandledLabels, Counter>,
    by_code: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    fn finish(&self, started: Instant, code: Code) {
        self.seconds.observe(started.elapsed().as_secs_f64());
        let index = (code as usize).min(self.by_code.len() - 1);
        self.by_code[index]
            .get_or_init(|| {
                let labels = HandledLabels {
                    grpc_service: self.labels.grpc_service.clone(),
                    grpc_method: self.labels.grpc_method.clone(),
                    grpc_code: crate::status::code_name(code),
                };
                self.handled.get_or_create(&labels).clone()
            })
            .inc();
    }
}

struct MethodTable {
    methods: HashMap<String, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

/// Measures every call of the service it wraps.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Option<Arc<MethodTable>>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, methods: self.methods.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    methods: Option<Arc<MethodTable>>,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for GrpcMetricsService<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<MeasuredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = MeasuredCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let call = self.methods.as_ref().map(|table| {
            let method = table.methods.get(request.uri().path()).unwrap_or(&table.unknown);
            CallRecord { method: method.clone(), started: Instant::now(), finished: false }
        });
        MeasuredCall { inner: self.inner.call(request), call }
    }
}

/// A call not yet finished; dropped unfinished, it is one the client
/// cancelled.
struct CallRecord {
    method: Arc<MethodMetrics>,
    started: Instant,
    finished: bool,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if !self.finished {
            self.finished = true;
            self.method.finish(self.started, code);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The status in `headers`, if they carry one.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    let status = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(status))
}

pin_project_lite::pin_project! {
    pub struct MeasuredCall<F> {
        #[pin]
        inner: F,
        call: Option<CallRecord>,
    }
}

impl<F, ResponseBody, E> Future for MeasuredCall<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = Result<Response<MeasuredBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(code) = status_in(response.headers())
                    && let Some(call) = call.as_mut()
                {
                    call.finish(code);
                }
                Ok(response.map(|inner| MeasuredBody { inner, call }))
            }
            Err(error) => {
                if let Some(call) = call.as_mut() {
                    call.finish(Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call's status from the trailers.
    pub struct MeasuredBody<B> {
        #[pin]
        inner: B,
        call: Option<CallRecord>,
    }
}

impl<B: Body> Body for MeasuredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_in) {
                        call.finish(code);
                    }
                }
                // The stream broke, or ended without a status: the client
                // sees an error it cannot attribute.
                Some(Err(_)) | None => call.finish(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
