//! Status details that let clients act on an error without parsing prose.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every agentmesh error.
pub const ERROR_DOMAIN: &str = "agentmesh.dev";

/// `UNAVAILABLE` with a machine-readable reason and, when known, when to retry.
pub fn unavailable(message: impl Into<String>, reason: &str, retry_after: Option<Duration>) -> Status {
    with_reason(Code::Unavailable, message, reason, [], retry_after)
}

/// `INVALID_ARGUMENT` naming the offending field.
pub fn invalid_field(field: &str, problem: impl Into<String>) -> Status {
    let problem = problem.into();
    let details = ErrorDetails::with_bad_request_violation(field, problem.clone());
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {problem}"), details)
}

/// `FAILED_PRECONDITION` with a machine-readable reason.
pub fn failed_precondition(message: impl Into<String>, reason: &str) -> Status {
    with_reason(Code::FailedPrecondition, message, reason, [], None)
}

/// An error of `code` with a machine-readable reason, metadata such as a
/// "hint" of what to do instead, and, when known, when to retry.
pub fn with_reason<'a>(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
    retry_after: Option<Duration>,
) -> Status {
    let metadata = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<std::collections::HashMap<_, _>>();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}

/// A code's upper-case name, as gRPC's own documentation, other
/// ecosystems' metrics and `google.rpc.Status` in JSON write it, rather
/// than tonic's description.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
