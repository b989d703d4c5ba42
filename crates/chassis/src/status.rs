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

/// The most characters of a caller's value an error repeats back.
const ECHOED_CHARS: usize = 64;
/// The longest problem, in bytes, an error describes: it travels twice,
/// percent-encoded as `grpc-message` (up to three times longer) and in the
/// base64 of the details, and the whole must stay well inside the 8 KiB of
/// metadata clients accept by default.
const MAX_PROBLEM_BYTES: usize = 1024;

/// A caller's value as an error quotes it: whole when short, else its
/// first characters and its length, so that no error grows with the input
/// (a 1 MiB id must not come back as 3 MiB of trailers).
pub fn echo(value: &str) -> String {
    if value.chars().count() <= ECHOED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(ECHOED_CHARS).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// `INVALID_ARGUMENT` naming the offending field.
pub fn invalid_field(field: &str, problem: impl Into<String>) -> Status {
    let mut problem = problem.into();
    if problem.len() > MAX_PROBLEM_BYTES {
        let cut = (0..=MAX_PROBLEM_BYTES).rev().find(|at| problem.is_char_boundary(*at)).unwrap_or_default();
        problem.truncate(cut);
        problem.push('…');
    }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a caller sends, the error quoting it stays small.
        #[test]
        fn errors_quoting_any_value_stay_bounded(value in any::<String>(), repeat in 1usize..3000) {
            let value = value.repeat(repeat);
            let quoted = echo(&value);
            prop_assert!(quoted.len() <= 4 * 6 * ECHOED_CHARS + 32, "{} bytes", quoted.len());
            let status = invalid_field("id", format!("{quoted} is not a UUID, {value}"));
            let mut trailers = http::HeaderMap::new();
            status.add_header(&mut trailers).unwrap();
            let size: usize = trailers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
            prop_assert!(size < 8 << 10, "{size} bytes of trailers");
        }
    }

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_by_their_start_and_length() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = "x".repeat(100_000);
        assert_eq!(echo(&long), format!("{:?}… (100000 bytes)", "x".repeat(64)));
    }
}
