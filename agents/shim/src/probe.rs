//! Reads the wrapped agent over HTTP on loopback: its agent card (which also
//! proves it is alive) and its optional status endpoint.

use std::time::Duration;

use agentmesh_proto::registry::v1::Capabilities;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The registry refuses cards above 64 KiB; status answers are far smaller.
const MAX_BODY: usize = 64 * 1024;

const CARD_PATHS: [&str; 2] = ["/.well-known/agent-card.json", "/.well-known/agent.json"];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to the agent: {0}")]
    Connect(#[source] std::io::Error),
    #[error("invalid request to the agent: {0}")]
    Request(#[from] http::Error),
    #[error("HTTP exchange with the agent failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent answered {0}")]
    Status(StatusCode),
    #[error("the agent's answer could not be read: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the agent's answer is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What an agent reports at its status endpoint. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AgentStatus {
    pub active_tasks: u32,
    pub error_rate: f64,
    pub runtime_state: String,
    pub current_task: String,
    pub sample_error: String,
    pub capabilities: Option<DeclaredCapabilities>,
    pub idle_timeout_seconds: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct DeclaredCapabilities {
    pub native_session: bool,
    pub native_scheduler: bool,
    pub native_status_mgmt: bool,
}

impl From<DeclaredCapabilities> for Capabilities {
    fn from(declared: DeclaredCapabilities) -> Self {
        Self {
            native_session: declared.native_session,
            native_scheduler: declared.native_scheduler,
            native_status_mgmt: declared.native_status_mgmt,
            ..Self::default()
        }
    }
}

pub struct Probe {
    port: u16,
    /// Sent as `Host`, so an agent that derives its card's URL from the
    /// request advertises the URL the shim registers.
    host: String,
    status_path: String,
    timeout: Duration,
}

impl Probe {
    pub fn new(port: u16, host: String, status_path: String) -> Self {
        Self { port, host, status_path, timeout: Duration::from_secs(2) }
    }

    /// The agent card as JSON text, from the current well-known path or the
    /// older one.
    pub async fn card(&self) -> Result<String, ProbeError> {
        let mut last = ProbeError::Status(StatusCode::NOT_FOUND);
        for path in CARD_PATHS {
            match self.get(path).await? {
                (StatusCode::OK, body) => {
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)?;
                    return String::from_utf8(body.to_vec()).map_err(|error| ProbeError::Body(error.into()));
                }
                (status, _) => last = ProbeError::Status(status),
            }
        }
        Err(last)
    }

    /// The agent's status, or `None` when it has no status endpoint.
    pub async fn status(&self) -> Result<Option<AgentStatus>, ProbeError> {
        match self.get(&self.status_path).await? {
            (StatusCode::OK, body) => Ok(Some(serde_json::from_slice(&body)?)),
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, _) => Err(ProbeError::Status(status)),
        }
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), ProbeError> {
        tokio::time::timeout(self.timeout, self.exchange(path)).await.map_err(|_| ProbeError::Timeout(self.timeout))?
    }

    async fn exchange(&self, path: &str) -> Result<(StatusCode, Bytes), ProbeError> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await.map_err(ProbeError::Connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, &self.host)
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(ProbeError::Body)?;
        Ok((status, body.to_bytes()))
    }
}
