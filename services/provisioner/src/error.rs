//! The provisioner's errors, and the one table that maps them to gRPC codes.

use std::time::Duration;

use agentmesh_chassis::status;
use tonic::{Code, Status};

use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error("{field}: {problem}")]
    InvalidArgument { field: &'static str, problem: String },
    #[error("workspace {0} not found")]
    NotFound(String),
    /// The registry refused a lookup, e.g. an unknown parent.
    #[error("{message}")]
    RegistryNotFound { message: String },
    #[error("workspace {0} is removed; only DeleteWorkspace accepts it, to retry cleanup")]
    Removed(String),
    #[error("workspace {id} belongs to runtime instance {owner:?}, which this provisioner does not manage")]
    NotOwned { id: String, owner: String },
    #[error("the policy refuses this workspace: {0}")]
    PolicyDenied(String),
    #[error("{message}")]
    External { message: String, hint: String },
    #[error("{message}")]
    NotSupported { message: String, hint: String },
    #[error("{0}")]
    IllegalTransition(String),
    #[error("{0}")]
    ParentRemoved(String),
    /// The runtime answered and refused; the record shows the reason.
    #[error("{message}")]
    WorkloadFailed { message: String, workspace_id: Option<String> },
    #[error("workspace {0} has no workload")]
    NoWorkload(String),
    #[error("{0}")]
    PolicyInvalid(String),
    #[error("the active policy is revision {active}, not {expected}")]
    RevisionMismatch { active: u64, expected: u64 },
    #[error("the command ran out of time after {0:?}")]
    DeadlineExceeded(Duration),
    #[error("{message}")]
    RuntimeUnavailable { message: String, workspace_id: Option<String> },
    #[error("the registry is unavailable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused a call for a reason that is the caller's to fix
    /// (it carries its own code and details through).
    #[error("{}", .0.message())]
    Registry(Status),
    #[error("the provisioner store is unavailable")]
    StoreUnavailable(#[source] agentmesh_db::DbError),
    #[error("{0}")]
    Unauthenticated(&'static str),
}

impl ProvisionerError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        ProvisionerError::InvalidArgument { field, problem: problem.into() }
    }

    /// A runtime failure while acting on `workspace_id`.
    pub fn from_runtime(error: RuntimeError, workspace_id: &str) -> Self {
        let id = Some(workspace_id.to_owned());
        match error {
            RuntimeError::Unavailable(message) => ProvisionerError::RuntimeUnavailable { message, workspace_id: id },
            RuntimeError::Workload(message) => ProvisionerError::WorkloadFailed { message, workspace_id: id },
            RuntimeError::NoWorkload(_) => ProvisionerError::NoWorkload(workspace_id.to_owned()),
            RuntimeError::NotSupported { message, hint } => ProvisionerError::NotSupported { message, hint },
            RuntimeError::TimedOut(after) => ProvisionerError::DeadlineExceeded(after),
        }
    }
}

impl From<agentmesh_db::DbError> for ProvisionerError {
    fn from(e: agentmesh_db::DbError) -> Self {
        ProvisionerError::StoreUnavailable(e)
    }
}

impl From<sqlx::Error> for ProvisionerError {
    fn from(e: sqlx::Error) -> Self {
        ProvisionerError::StoreUnavailable(e.into())
    }
}

const RETRY: Option<Duration> = Some(Duration::from_secs(1));

impl From<ProvisionerError> for Status {
    fn from(error: ProvisionerError) -> Status {
        use ProvisionerError as E;
        let message = error.to_string();
        let precondition = |reason: &str, metadata: Vec<(&str, String)>| {
            status::with_reason(Code::FailedPrecondition, message.clone(), reason, metadata, None)
        };
        let named = |id: Option<String>| id.map(|id| ("workspace_id", id)).into_iter().collect::<Vec<_>>();
        match error {
            E::InvalidArgument { field, problem } => status::invalid_field(field, problem),
            E::NotFound(_) | E::RegistryNotFound { .. } => Status::not_found(message),
            E::Removed(_) => precondition("WORKSPACE_REMOVED", vec![]),
            E::NotOwned { .. } => precondition("NOT_OWNED", vec![]),
            E::PolicyDenied(_) => precondition("POLICY_DENIED", vec![]),
            E::External { hint, .. } => precondition("EXTERNAL_WORKSPACE", vec![("hint", hint)]),
            E::NotSupported { hint, .. } => precondition("NOT_SUPPORTED", vec![("hint", hint)]),
            E::IllegalTransition(_) => precondition("ILLEGAL_TRANSITION", vec![]),
            E::ParentRemoved(_) => precondition("PARENT_REMOVED", vec![]),
            E::WorkloadFailed { workspace_id, .. } => precondition("WORKLOAD_FAILED", named(workspace_id)),
            E::NoWorkload(_) => precondition("NO_WORKLOAD", vec![]),
            E::PolicyInvalid(_) => precondition("POLICY_INVALID", vec![]),
            E::RevisionMismatch { .. } => status::with_reason(Code::Aborted, message, "REVISION_MISMATCH", [], None),
            E::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            E::RuntimeUnavailable { workspace_id, .. } => {
                status::with_reason(Code::Unavailable, message, "RUNTIME_UNAVAILABLE", named(workspace_id), RETRY)
            }
            E::RegistryUnavailable(_) => status::unavailable(message, "REGISTRY_UNAVAILABLE", RETRY),
            E::Registry(status) => status,
            E::StoreUnavailable(source) => {
                // The cause stays in our logs: it may name hosts or credentials.
                tracing::warn!(error = %source, "store unavailable");
                status::unavailable(message, "STORE_UNAVAILABLE", RETRY)
            }
            E::Unauthenticated(_) => Status::unauthenticated(message),
        }
    }
}

pub type Result<T, E = ProvisionerError> = std::result::Result<T, E>;
