//! The registry's errors, and the one table that maps them to gRPC codes.

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::status;
use tonic::Status;
use uuid::Uuid;

use crate::transition::IllegalTransition;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{field}: {problem}")]
    InvalidArgument { field: &'static str, problem: String },
    #[error("workspace {0} not found")]
    NotFound(Uuid),
    #[error("workspace {0} is removed; a removed workspace never comes back")]
    Removed(Uuid),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("workspace {id} is owned by runtime instance {owner:?}, not {actor:?}")]
    NotOwner { id: Uuid, owner: String, actor: String },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("event cursor {cursor} is older than the retention window (events up to {pruned_through} were pruned)")]
    CursorExpired { cursor: u64, pruned_through: u64 },
    #[error("the registry store is unavailable")]
    StoreUnavailable(#[source] Arc<agentmesh_db::DbError>),
    #[error("the registry is shutting down")]
    ShuttingDown,
    /// A bug on our side; the request may be retried.
    #[error("{0}")]
    Internal(&'static str),
}

impl RegistryError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        RegistryError::InvalidArgument { field, problem: problem.into() }
    }
}

impl From<agentmesh_db::DbError> for RegistryError {
    fn from(e: agentmesh_db::DbError) -> Self {
        RegistryError::StoreUnavailable(Arc::new(e))
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::StoreUnavailable(Arc::new(e.into()))
    }
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Status {
        let message = error.to_string();
        match error {
            RegistryError::InvalidArgument { field, problem } => status::invalid_field(field, problem),
            RegistryError::NotFound(_) => Status::not_found(message),
            RegistryError::Removed(_) => status::failed_precondition(message, "WORKSPACE_REMOVED"),
            RegistryError::IllegalTransition(_) => status::failed_precondition(message, "ILLEGAL_TRANSITION"),
            RegistryError::FailedPrecondition(_) => Status::failed_precondition(message),
            RegistryError::NotOwner { .. } => status::failed_precondition(message, "NOT_OWNER"),
            RegistryError::Unauthenticated(_) => Status::unauthenticated(message),
            RegistryError::PermissionDenied(_) => Status::permission_denied(message),
            RegistryError::CursorExpired { .. } => Status::out_of_range(message),
            RegistryError::StoreUnavailable(source) => {
                // The cause stays in our logs: it may name hosts or credentials.
                tracing::warn!(error = %source, "store unavailable");
                status::unavailable(message, "STORE_UNAVAILABLE", Some(Duration::from_secs(1)))
            }
            RegistryError::ShuttingDown => status::unavailable(message, "SHUTTING_DOWN", Some(Duration::from_secs(1))),
            RegistryError::Internal(_) => Status::internal(message),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
