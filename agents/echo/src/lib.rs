//! An A2A agent that echoes every text message back, for tests and
//! benchmarks. It speaks A2A over JSON-RPC 2.0 in both the 1.0 shape (what
//! a2a-sdk 1.x clients send) and the 0.3 shape, and can be told to be slow,
//! busy, or to exit.
//!
//! # HTTP surface
//!
//! Plain HTTP/1.1, or over TLS when [`Config::tls`] is set (`--tls-cert`,
//! `--tls-key`).
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /.well-known/agent-card.json`, `GET /.well-known/agent.json` | the agent card (A2A 1.0 fields plus the 0.3 `url`, `protocolVersion`, `preferredTransport`) |
//! | `POST /` | JSON-RPC 2.0: `SendMessage`, `SendStreamingMessage`, `GetTask`, `CancelTask`, `SubscribeToTask` (1.0) and `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/resubscribe` (0.3) |
//! | `GET /agentmesh/status` | `{"active_tasks": n, "error_rate": x, "runtime_state": "", "capabilities": {"native_session": b, "native_scheduler": b, "native_status_mgmt": b}, "idle_timeout_seconds": n or null}`, read by the agent shim |
//! | `GET /healthz` | 200 |
//! | `POST /admin/busy` `{"busy": bool}` | answer every message busy until switched back |
//! | `POST /admin/health` `{"error_rate": x}` | report this error rate in `/agentmesh/status` from now on |
//! | `POST /admin/exit` `{"code": n}` | answer, then exit with code `n` (0..=255) |
//! | `GET /admin/received` | the texts of every accepted message, first deliveries only, in arrival order (text parts joined by `\n`) |
//! | `GET /admin/deliveries` | the same messages as `[{"message_id": "…" or null, "text": "…", "received_at_ms": n}]`, with their A2A message ids and arrival times (ms since the Unix epoch) |
//! | `GET /admin/stats` | `{"received": n, "duplicates": n}`: messages recorded, and deliveries of a message id already seen |
//! | `GET /admin/load` | `{"busy_answers": n, "peak_in_flight": n}`: messages answered busy, and the most messages ever processed at once |
//!
//! The reply to a message is one agent message with a single text part
//! `"echo: <text>"`, the request's `contextId` (a new one when absent) and a
//! new `messageId`. A streaming request gets a `working` status update at
//! once, the same update again every [`Config::progress_interval`] (if set)
//! while the configured delay runs, then that message. The agent keeps no
//! tasks, so every task method answers A2A's "task not found" (-32001).
//!
//! # Message ids
//!
//! The agent honours A2A message ids, as an agent must for the gateway's
//! redelivery to be exactly-once as far as the agent can see: a message
//! (sent or streamed, in either dialect) whose `messageId` it has already
//! taken in is answered again with the same `contextId`, reply `messageId`
//! and (streamed) `taskId` as the first time, still after the configured
//! delay, and is counted as a duplicate instead of being recorded. The last
//! [`Config::remembered_message_ids`] ids are remembered. A message answered
//! busy was never taken in, so its next delivery is its first.
//!
//! # The busy answer
//!
//! A message that arrives while the agent is switched busy, or while
//! `max_concurrent` messages are already in flight, is not processed (nor
//! recorded) and gets:
//!
//! ```text
//! HTTP/1.1 503 Service Unavailable
//! Retry-After: 1
//! Content-Type: application/json
//!
//! {"jsonrpc":"2.0","id":<request id>,"error":{"code":-32000,"message":"agent busy","data":{"retryAfterSeconds":1}}}
//! ```
//!
//! [`Config::busy_status`] turns the 503 into a 429 Too Many Requests, as a
//! rate-limiting agent answers, and [`Config::retry_after_seconds`] sets the
//! `Retry-After` header and `retryAfterSeconds` (1 by default).
//!
//! Only message methods are ever busy. Malformed requests are rejected before
//! the busy check, so a busy answer always means "the same request may succeed
//! later". Every other JSON-RPC error is an HTTP 200 with the standard codes
//! (-32700 parse, -32600 invalid request, -32601 method not found, -32602
//! invalid params).

mod card;
mod deliveries;
mod rpc;
mod tls;

use std::{
    future::IntoFuture,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::tls::TlsIdentity;

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the agent declares it does on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub native_session: bool,
    pub native_scheduler: bool,
    pub native_status_mgmt: bool,
}

/// The HTTP status of the busy answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BusyStatus {
    /// 503 Service Unavailable.
    #[default]
    Unavailable,
    /// 429 Too Many Requests.
    TooManyRequests,
}

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name in the agent card.
    pub name: String,
    /// The URL advertised in the card; derived from each request's `Host`
    /// header when absent.
    pub public_url: Option<String>,
    /// How long to wait before answering each message.
    pub delay: Duration,
    /// While a streamed answer waits out `delay`, repeat the `working`
    /// update this often, as an agent reporting progress does; `None` sends
    /// it once.
    pub progress_interval: Option<Duration>,
    /// Messages processed at once before the rest are answered busy; 0 means
    /// no limit.
    pub max_concurrent: usize,
    /// Exit on its own after this long, with this code.
    pub exit_after: Option<(Duration, u8)>,
    pub capabilities: Capabilities,
    pub idle_timeout_seconds: Option<u32>,
    /// How many of the latest message ids are remembered to recognise
    /// redeliveries; 0 turns recognition off.
    pub remembered_message_ids: usize,
    /// Answer with an empty text instead of the echo, as an agent that
    /// ignores the prompt would.
    pub silent: bool,
    /// The HTTP status of the busy answer.
    pub busy_status: BusyStatus,
    /// The `Retry-After` of the busy answer, in seconds.
    pub retry_after_seconds: u32,
    /// Serve over TLS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "echo".to_owned(),
            public_url: None,
            delay: Duration::ZERO,
            progress_interval: None,
            max_concurrent: 0,
            exit_after: None,
            capabilities: Capabilities::default(),
            idle_timeout_seconds: None,
            remembered_message_ids: 100_000,
            silent: false,
            busy_status: BusyStatus::Unavailable,
            retry_after_seconds: 1,
            tls: None,
        }
    }
}

struct AgentState {
    config: Config,
    card: card::Card,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    busy_answers: AtomicUsize,
    busy: AtomicBool,
    /// The error rate the agent reports to the shim, as `f64` bits.
    error_rate: AtomicU64,
    deliveries: Mutex<deliveries::Deliveries>,
    exit_code: AtomicU8,
    shutdown: CancellationToken,
}

impl AgentState {
    /// Counts a message in, or `None` when the agent must answer busy.
    fn admit(self: &Arc<Self>) -> Option<InFlight> {
        if self.busy.load(Ordering::Relaxed) {
            self.busy_answers.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = InFlight(self.clone());
        if self.config.max_concurrent != 0 && before >= self.config.max_concurrent {
            self.busy_answers.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.peak_in_flight.fetch_max(before + 1, Ordering::Relaxed);
        Some(admitted)
    }

    /// The record of deliveries. A panic elsewhere while holding it leaves
    /// it consistent (every update is a single push or insert), so a
    /// poisoned lock is still used.
    fn deliveries(&self) -> std::sync::MutexGuard<'_, deliveries::Deliveries> {
        self.deliveries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exit(&self, code: u8) {
        self.exit_code.store(code, Ordering::Relaxed);
        self.shutdown.cancel();
    }
}

/// One message in progress; counted until dropped (for a stream, until its
/// last event is produced).
struct InFlight(Arc<AgentState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the agent on `listener` until `shutdown` is cancelled or the agent
/// is told to exit, then lets in-flight requests finish (for at most
/// [`SHUTDOWN_GRACE`]). Returns the exit code the process should end with: 0
/// after `shutdown`, the requested code after `/admin/exit` or `exit_after`.
pub async fn serve(listener: TcpListener, config: Config, shutdown: CancellationToken) -> std::io::Result<u8> {
    let state = Arc::new(AgentState {
        card: card::Card::new(&config),
        deliveries: Mutex::new(deliveries::Deliveries::new(config.remembered_message_ids)),
        config,
        in_flight: AtomicUsize::new(0),
        peak_in_flight: AtomicUsize::new(0),
        busy_answers: AtomicUsize::new(0),
        busy: AtomicBool::new(false),
        error_rate: AtomicU64::new(0f64.to_bits()),
        exit_code: AtomicU8::new(0),
        shutdown: shutdown.clone(),
    });
    if let Some((after, code)) = state.config.exit_after {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(after) => {
                    tracing::info!(code, "exiting as configured");
                    state.exit(code);
                }
                () = state.shutdown.cancelled() => {}
            }
        });
    }

    let app = router(state.clone());
    let stopped = shutdown.clone().cancelled_owned();
    let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match &state.config.tls {
        Some(identity) => {
            let listener = tls::TlsListener::new(listener, identity.acceptor())?;
            Box::pin(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future())
        }
        None => Box::pin(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future()),
    };
    tokio::select! {
        served = server => served?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight requests did not finish in time");
        }
    }
    Ok(state.exit_code.load(Ordering::Relaxed))
}

fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/", post(rpc::handle))
        .route("/.well-known/agent-card.json", get(agent_card))
        .route("/.well-known/agent.json", get(agent_card))
        .route("/agentmesh/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/busy", post(set_busy))
        .route("/admin/health", post(set_health))
        .route("/admin/exit", post(exit))
        .route("/admin/received", get(received))
        .route("/admin/deliveries", get(deliveries))
        .route("/admin/stats", get(stats))
        .route("/admin/load", get(load))
        .with_state(state)
}

async fn agent_card(State(state): State<Arc<AgentState>>, headers: HeaderMap) -> Response {
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    ([(header::CONTENT_TYPE, "application/json")], state.card.render(host)).into_response()
}

#[derive(Serialize)]
struct Status {
    active_tasks: usize,
    error_rate: f64,
    runtime_state: &'static str,
    capabilities: Capabilities,
    idle_timeout_seconds: Option<u32>,
}

async fn status(State(state): State<Arc<AgentState>>) -> Json<Status> {
    Json(Status {
        active_tasks: state.in_flight.load(Ordering::Relaxed),
        error_rate: f64::from_bits(state.error_rate.load(Ordering::Relaxed)),
        runtime_state: "",
        capabilities: state.config.capabilities,
        idle_timeout_seconds: state.config.idle_timeout_seconds,
    })
}

#[derive(Serialize, Deserialize)]
struct Busy {
    busy: bool,
}

async fn set_busy(State(state): State<Arc<AgentState>>, Json(request): Json<Busy>) -> Json<Busy> {
    state.busy.store(request.busy, Ordering::Relaxed);
    tracing::info!(busy = request.busy, "busy switched");
    Json(request)
}

#[derive(Serialize, Deserialize)]
struct Health {
    error_rate: f64,
}

async fn set_health(State(state): State<Arc<AgentState>>, Json(request): Json<Health>) -> Json<Health> {
    state.error_rate.store(request.error_rate.to_bits(), Ordering::Relaxed);
    tracing::info!(error_rate = request.error_rate, "reported error rate set");
    Json(request)
}

#[derive(Deserialize)]
struct Exit {
    code: u8,
}

async fn exit(State(state): State<Arc<AgentState>>, Json(request): Json<Exit>) -> StatusCode {
    tracing::info!(code = request.code, "exiting on request");
    // Graceful shutdown still delivers this answer before the process ends.
    state.exit(request.code);
    StatusCode::OK
}

async fn received(State(state): State<Arc<AgentState>>) -> Json<Vec<String>> {
    Json(state.deliveries().texts().to_vec())
}

async fn deliveries(State(state): State<Arc<AgentState>>) -> Json<Vec<deliveries::Delivery>> {
    Json(state.deliveries().recorded().to_vec())
}

async fn stats(State(state): State<Arc<AgentState>>) -> Json<deliveries::Stats> {
    Json(state.deliveries().stats())
}

#[derive(Serialize)]
struct Load {
    busy_answers: usize,
    peak_in_flight: usize,
}

async fn load(State(state): State<Arc<AgentState>>) -> Json<Load> {
    Json(Load {
        busy_answers: state.busy_answers.load(Ordering::Relaxed),
        peak_in_flight: state.peak_in_flight.load(Ordering::Relaxed),
    })
}
