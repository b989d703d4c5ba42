//! The scheduler's errors, and the one table that maps them to gRPC codes.

use std::{collections::HashMap, time::Duration};

use agentmesh_chassis::status;
use agentmesh_db::StoreFailure;
use agentmesh_proto::scheduler::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{field}: {problem}")]
    InvalidArgument { field: &'static str, problem: String },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("schedule {0} not found")]
    ScheduleNotFound(Uuid),
    #[error("run {0} not found")]
    RunNotFound(Uuid),
    #[error("workspace {0} not found")]
    WorkspaceNotFound(Uuid),
    #[error("workspace {0} is removed")]
    WorkspaceRemoved(Uuid),
    #[error("the workspace already has a schedule named {0:?}")]
    NameTaken(String),
    #[error("the workspace already has the most schedules allowed ({limit})")]
    TooManySchedules { limit: u32 },
    #[error("the stored revision is {stored}, not {expected}; re-read and retry")]
    RevisionMismatch { expected: u64, stored: u64 },
    #[error("the scheduler store is unavailable")]
    StoreUnavailable,
    #[error("the registry is unavailable: {0}")]
    RegistryUnavailable(String),
    /// The store failed in a way retrying will not fix: a bug or a corrupt
    /// row, never the caller's doing.
    #[error("the scheduler store failed: {0}")]
    Store(String),
}

impl SchedulerError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        SchedulerError::InvalidArgument { field, problem: problem.into() }
    }

    pub fn registry_unavailable(detail: impl Into<String>) -> Self {
        SchedulerError::RegistryUnavailable(detail.into())
    }
}

impl From<StoreError> for SchedulerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Backend(StoreFailure::Unavailable(source)) => {
                // The cause stays in our logs: it may name hosts or credentials.
                tracing::warn!(error = %source, "scheduler store unavailable");
                SchedulerError::StoreUnavailable
            }
            StoreError::NameTaken(name) => SchedulerError::NameTaken(name),
            StoreError::TooManySchedules { limit } => SchedulerError::TooManySchedules { limit },
            StoreError::RevisionMismatch { expected, stored } => SchedulerError::RevisionMismatch { expected, stored },
            StoreError::InvalidPageToken => {
                SchedulerError::invalid("page_token", "not a token this scheduler handed out")
            }
            other => SchedulerError::Store(with_causes(&other)),
        }
    }
}

/// The error and every cause under it: a store error's own text rarely says
/// what went wrong, and this text is all the log will have.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

const RETRY: Option<Duration> = Some(Duration::from_secs(1));

/// The `ErrorInfo.reason` of `reason`: its proto name without the enum
/// prefix, taken from the generated code so it cannot drift from the contract.
fn reason_name(reason: ErrorReason) -> &'static str {
    reason.as_str_name().trim_start_matches("ERROR_REASON_")
}

/// INVALID_ARGUMENT carrying both the `BadRequest` every agentmesh service
/// sends and the `ErrorInfo` (reason INVALID_FIELD, metadata "field") that
/// the scheduler's contract promises.
fn invalid_field(field: &'static str, problem: String) -> Status {
    let message = format!("{field}: {problem}");
    let mut details = ErrorDetails::with_bad_request_violation(field, problem);
    let metadata = HashMap::from([("field".to_owned(), field.to_owned())]);
    details.set_error_info(reason_name(ErrorReason::InvalidField), status::ERROR_DOMAIN, metadata);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Status {
        use SchedulerError as E;
        let message = error.to_string();
        let workspace = |id: Uuid| vec![("workspace_id", id.to_string())];
        let (code, reason, metadata, retry_after) = match error {
            E::InvalidArgument { field, problem } => return invalid_field(field, problem),
            E::Unauthenticated(_) => return Status::unauthenticated(message),
            E::PermissionDenied(_) => return Status::permission_denied(message),
            E::ScheduleNotFound(_) | E::RunNotFound(_) => return Status::not_found(message),
            E::Store(cause) => {
                // The cause may quote rows or SQL; the caller learns only that it is ours.
                tracing::error!(error = %cause, "scheduler store failed");
                return Status::internal("the scheduler store failed; see the scheduler's log");
            }
            E::WorkspaceNotFound(id) => (Code::NotFound, ErrorReason::WorkspaceNotFound, workspace(id), None),
            E::WorkspaceRemoved(id) => (Code::FailedPrecondition, ErrorReason::WorkspaceRemoved, workspace(id), None),
            E::NameTaken(_) => (Code::AlreadyExists, ErrorReason::NameTaken, vec![], None),
            E::TooManySchedules { limit } => {
                (Code::ResourceExhausted, ErrorReason::TooManySchedules, vec![("limit", limit.to_string())], None)
            }
            E::RevisionMismatch { stored, .. } => {
                (Code::Aborted, ErrorReason::RevisionMismatch, vec![("revision", stored.to_string())], None)
            }
            E::StoreUnavailable => (Code::Unavailable, ErrorReason::StoreUnavailable, vec![], RETRY),
            E::RegistryUnavailable(_) => (Code::Unavailable, ErrorReason::RegistryUnavailable, vec![], RETRY),
        };
        status::with_reason(code, message, reason_name(reason), metadata, retry_after)
    }
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn error_info(status: &Status) -> tonic_types::ErrorInfo {
        status.get_error_details().error_info().cloned().expect("an ErrorInfo detail")
    }

    #[test]
    fn invalid_argument_names_the_field_in_error_info_and_bad_request() {
        let status = Status::from(SchedulerError::invalid("cron_expression", "expected 5 or 6 fields"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "cron_expression: expected 5 or 6 fields");
        let info = error_info(&status);
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(info.domain, "agentmesh.dev");
        assert_eq!(info.metadata.get("field").map(String::as_str), Some("cron_expression"));
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("a BadRequest detail").field_violations;
        let fields: Vec<&str> = violations.iter().map(|violation| violation.field.as_str()).collect();
        assert_eq!(fields, ["cron_expression"]);
    }

    #[test]
    fn each_reason_has_its_code_and_proto_name() {
        let id = Uuid::from_u128(7);
        let cases = [
            (SchedulerError::WorkspaceNotFound(id), Code::NotFound, "WORKSPACE_NOT_FOUND"),
            (SchedulerError::WorkspaceRemoved(id), Code::FailedPrecondition, "WORKSPACE_REMOVED"),
            (SchedulerError::NameTaken("daily".to_owned()), Code::AlreadyExists, "NAME_TAKEN"),
            (SchedulerError::TooManySchedules { limit: 3 }, Code::ResourceExhausted, "TOO_MANY_SCHEDULES"),
            (SchedulerError::RevisionMismatch { expected: 1, stored: 2 }, Code::Aborted, "REVISION_MISMATCH"),
            (SchedulerError::StoreUnavailable, Code::Unavailable, "STORE_UNAVAILABLE"),
            (SchedulerError::registry_unavailable("connection refused"), Code::Unavailable, "REGISTRY_UNAVAILABLE"),
        ];
        for (error, code, reason) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{reason}");
            let info = error_info(&status);
            assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, "agentmesh.dev"));
        }
    }

    #[test]
    fn metadata_says_which_workspace_limit_and_revision() {
        let id = Uuid::from_u128(7);
        let removed = error_info(&Status::from(SchedulerError::WorkspaceRemoved(id)));
        assert_eq!(removed.metadata.get("workspace_id"), Some(&id.to_string()));
        let full = error_info(&Status::from(SchedulerError::TooManySchedules { limit: 3 }));
        assert_eq!(full.metadata.get("limit").map(String::as_str), Some("3"));
        let raced = error_info(&Status::from(SchedulerError::RevisionMismatch { expected: 1, stored: 2 }));
        assert_eq!(raced.metadata.get("revision").map(String::as_str), Some("2"));
    }

    #[test]
    fn only_unavailable_errors_ask_for_a_retry_after_one_second() {
        for error in [SchedulerError::StoreUnavailable, SchedulerError::registry_unavailable("down")] {
            let details = Status::from(error).get_error_details();
            let retry = details.retry_info().expect("a RetryInfo detail");
            assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
        }
        let removed = Status::from(SchedulerError::WorkspaceRemoved(Uuid::from_u128(7)));
        assert!(removed.get_error_details().retry_info().is_none());
    }

    #[test]
    fn store_errors_become_the_callers_or_ours() {
        let unavailable =
            SchedulerError::from(StoreError::Backend(StoreFailure::Unavailable(sqlx::Error::PoolTimedOut)));
        assert!(matches!(unavailable, SchedulerError::StoreUnavailable), "{unavailable:?}");
        let taken = SchedulerError::from(StoreError::NameTaken("daily".to_owned()));
        assert!(matches!(&taken, SchedulerError::NameTaken(name) if name == "daily"), "{taken:?}");
        let full = SchedulerError::from(StoreError::TooManySchedules { limit: 5 });
        assert!(matches!(full, SchedulerError::TooManySchedules { limit: 5 }), "{full:?}");
        let raced = SchedulerError::from(StoreError::RevisionMismatch { expected: 3, stored: 4 });
        assert!(matches!(raced, SchedulerError::RevisionMismatch { expected: 3, stored: 4 }), "{raced:?}");
        let token = SchedulerError::from(StoreError::InvalidPageToken);
        assert!(matches!(token, SchedulerError::InvalidArgument { field: "page_token", .. }), "{token:?}");
        let protocol = sqlx::Error::Protocol("unexpected frame".to_owned());
        let broken = SchedulerError::from(StoreError::Backend(StoreFailure::Database(protocol)));
        match broken {
            SchedulerError::Store(cause) => assert!(cause.contains("unexpected frame"), "the cause is kept: {cause}"),
            other => panic!("expected an internal store failure, got {other:?}"),
        }
    }

    #[test]
    fn caller_errors_keep_their_codes_and_store_failures_hide_their_cause() {
        let id = Uuid::from_u128(9);
        assert_eq!(Status::from(SchedulerError::Unauthenticated("no token")).code(), Code::Unauthenticated);
        assert_eq!(Status::from(SchedulerError::PermissionDenied("not yours".into())).code(), Code::PermissionDenied);
        assert_eq!(Status::from(SchedulerError::ScheduleNotFound(id)).code(), Code::NotFound);
        assert_eq!(Status::from(SchedulerError::RunNotFound(id)).code(), Code::NotFound);
        let internal = Status::from(SchedulerError::Store("row 12: password=hunter2".to_owned()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("hunter2"), "{}", internal.message());
    }
}
