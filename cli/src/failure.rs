//! How a command fails: one line for a person (what went wrong, the
//! service's reason and hint), and an exit code for a script.

use std::process::ExitCode;

use tonic::{Code, Status};
use tonic_types::StatusExt;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration (contexts, a spec file) is wrong or missing.
    #[error("{0}")]
    Config(String),
    /// The command line asks for something that cannot be.
    #[error("{0}")]
    Usage(String),
    /// A service answered with an error.
    #[error("{}", describe(.0))]
    Rpc(Box<Status>),
    /// A service could not be reached at all.
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// Services answered that they do not serve (or did not answer).
    #[error("not serving: {0}")]
    NotServing(String),
    /// What the command waited for ended otherwise (a workspace failed).
    #[error("{0}")]
    Failed(String),
    /// Not found locally (no workspace by that name).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Rpc(Box::new(status))
    }
}

impl Failure {
    /// The exit code `agentmesh --help` documents.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    fn code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::Unreachable { .. } | Failure::NotServing(_) => 5,
            Failure::Rpc(status) => match status.code() {
                Code::NotFound => 3,
                Code::Unauthenticated | Code::PermissionDenied => 4,
                Code::Unavailable | Code::DeadlineExceeded => 5,
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::OutOfRange
                | Code::ResourceExhausted
                | Code::Aborted => 6,
                _ => 1,
            },
            Failure::Failed(_) | Failure::Io(_) => 1,
        }
    }
}

/// A service's error as one line: its message, then the reason and hint its
/// details carry, then when to retry.
fn describe(status: &Status) -> String {
    let mut line = match status.code() {
        Code::Unauthenticated => format!("not authenticated: {}", status.message()),
        Code::PermissionDenied => format!("not allowed: {}", status.message()),
        _ => status.message().to_owned(),
    };
    if line.is_empty() {
        line = format!("{:?}", status.code());
    }
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        line.push_str(&format!(" ({})", info.reason));
        if let Some(hint) = info.metadata.get("hint") {
            line.push_str(&format!("; hint: {hint}"));
        }
    }
    if let Some(retry) = details.retry_info().and_then(|retry| retry.retry_delay) {
        line.push_str(&format!("; retry in {} s", retry.as_secs().max(1)));
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_status_is_one_line_with_its_reason_hint_and_retry() {
        let status = agentmesh_chassis::status::with_reason(
            Code::FailedPrecondition,
            "workspace w is external",
            "EXTERNAL_WORKSPACE",
            [("hint", "read the agent's logs where it runs".to_owned())],
            Some(Duration::from_secs(3)),
        );
        let failure = Failure::from(status);
        assert_eq!(
            failure.to_string(),
            "workspace w is external (EXTERNAL_WORKSPACE); hint: read the agent's logs where it runs; retry in 3 s"
        );
        assert_eq!(failure.code(), 6);
    }

    #[test]
    fn exit_codes_tell_missing_from_forbidden_from_down() {
        let code = |code: Code| Failure::from(Status::new(code, "x")).code();
        assert_eq!(code(Code::NotFound), 3);
        assert_eq!(code(Code::Unauthenticated), 4);
        assert_eq!(code(Code::PermissionDenied), 4);
        assert_eq!(code(Code::Unavailable), 5);
        assert_eq!(code(Code::InvalidArgument), 6);
        assert_eq!(code(Code::Internal), 1);
        let unauthenticated = Failure::from(Status::unauthenticated("a\nb")).to_string();
        assert_eq!(unauthenticated, "not authenticated: a b");
    }
}
