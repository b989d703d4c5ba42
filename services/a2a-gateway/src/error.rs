//! The gateway's errors, and the one table that maps them to gRPC codes.
//! The A2A front over HTTP derives its answers from the same table.

use std::time::Duration;

use agentmesh_chassis::status;
use agentmesh_proto::gateway::v1::UnavailableReason;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{field}: {problem}")]
    InvalidArgument { field: &'static str, problem: String },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// The target will not take messages until an operator acts (stopped,
    /// failed, policy-stopped, removed): queueing would only hide that.
    #[error("{message}")]
    TargetUnavailable { message: String, workspace_id: String, status: String },
    /// The target refused the agent URL check at dispatch time (SEC-3).
    #[error("the agent URL of workspace {workspace_id} is refused: {reason}")]
    UrlRefused { workspace_id: String, reason: String },
    #[error("{detail}")]
    Unavailable { reason: UnavailableReason, detail: String, workspace_id: String, retry_after: Duration },
    #[error("the agent's reply is larger than {limit} bytes")]
    ReplyTooLarge { limit: usize },
    #[error("the agent answered with something that is not JSON-RPC: {0}")]
    BadAgentReply(String),
    #[error("the agent could not be reached: {0}")]
    AgentUnreachable(String),
    /// A queued message that is past being canceled: being delivered, or
    /// delivered (then the agent's own task is the one to cancel).
    #[error("{0}")]
    TaskNotCancelable(String),
    /// A queued message's task has no push-notification config of that id.
    #[error("{0}")]
    PushConfigNotFound(String),
}

impl GatewayError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        GatewayError::InvalidArgument { field, problem: problem.into() }
    }

    pub fn registry_unavailable(detail: impl Into<String>) -> Self {
        GatewayError::Unavailable {
            reason: UnavailableReason::RegistryUnavailable,
            detail: detail.into(),
            workspace_id: String::new(),
            retry_after: Duration::from_secs(1),
        }
    }

    pub fn store_unavailable(source: &dyn std::fmt::Display) -> Self {
        // The cause stays in our logs: it may name hosts or credentials.
        tracing::warn!(error = %source, "gateway store unavailable");
        GatewayError::Unavailable {
            reason: UnavailableReason::StoreUnavailable,
            detail: "the gateway's store is unavailable".to_owned(),
            workspace_id: String::new(),
            retry_after: Duration::from_secs(1),
        }
    }

    pub fn code(&self) -> Code {
        use GatewayError as E;
        match self {
            E::InvalidArgument { .. } => Code::InvalidArgument,
            E::Unauthenticated(_) => Code::Unauthenticated,
            E::PermissionDenied(_) => Code::PermissionDenied,
            E::NotFound(_) | E::PushConfigNotFound(_) => Code::NotFound,
            E::TargetUnavailable { .. } | E::UrlRefused { .. } | E::TaskNotCancelable(_) => Code::FailedPrecondition,
            E::Unavailable { .. } | E::AgentUnreachable(_) => Code::Unavailable,
            E::ReplyTooLarge { .. } | E::BadAgentReply(_) => Code::Unknown,
        }
    }

    /// The HTTP status the A2A front answers with, from the same table.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self.code() {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The machine-readable reason (`ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        use GatewayError as E;
        match self {
            E::InvalidArgument { .. } => "INVALID_ARGUMENT",
            E::Unauthenticated(_) => "UNAUTHENTICATED",
            E::PermissionDenied(_) => "PERMISSION_DENIED",
            E::NotFound(_) => "WORKSPACE_NOT_FOUND",
            E::TargetUnavailable { .. } => "TARGET_NOT_ACCEPTING",
            E::UrlRefused { .. } => "AGENT_URL_REFUSED",
            E::Unavailable { reason, .. } => reason.as_str_name().trim_start_matches("UNAVAILABLE_REASON_"),
            E::AgentUnreachable(_) => "AGENT_UNREACHABLE",
            E::ReplyTooLarge { .. } => "REPLY_TOO_LARGE",
            E::BadAgentReply(_) => "BAD_AGENT_REPLY",
            E::TaskNotCancelable(_) => "TASK_NOT_CANCELABLE",
            E::PushConfigNotFound(_) => "TASK_NOT_FOUND",
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Unavailable { retry_after, .. } => Some(*retry_after),
            GatewayError::AgentUnreachable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The workspace the error concerns, when there is one.
    pub fn workspace_id(&self) -> Option<&str> {
        match self {
            GatewayError::TargetUnavailable { workspace_id, .. }
            | GatewayError::UrlRefused { workspace_id, .. }
            | GatewayError::Unavailable { workspace_id, .. }
                if !workspace_id.is_empty() =>
            {
                Some(workspace_id)
            }
            _ => None,
        }
    }
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Status {
        let message = error.to_string();
        match &error {
            GatewayError::InvalidArgument { field, problem } => status::invalid_field(field, problem.clone()),
            GatewayError::Unauthenticated(_) => Status::unauthenticated(message),
            GatewayError::PermissionDenied(_) => Status::permission_denied(message),
            GatewayError::NotFound(_) => Status::not_found(message),
            _ => {
                let mut metadata: Vec<(&str, String)> = Vec::new();
                if let Some(id) = error.workspace_id() {
                    metadata.push(("workspace_id", id.to_owned()));
                }
                if let GatewayError::TargetUnavailable { status, .. } = &error {
                    metadata.push(("status", status.clone()));
                }
                status::with_reason(error.code(), message, error.reason(), metadata, error.retry_after())
            }
        }
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
