//! What a workspace runs: the validated spec, stored with the workload so
//! that every later start (restart, wake, a restart policy's) uses the same.

use std::collections::BTreeMap;

use agentmesh_chassis::status::echo;
use serde::{Deserialize, Serialize};

use crate::{
    error::{ProvisionerError, Result},
    runtime::RuntimeKind,
};
use agentmesh_proto::provisioner::v1 as pb;

pub const MAX_NAME: usize = 128;
pub const MAX_IMAGE: usize = 512;
pub const MAX_COMMAND: usize = 1024;
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG: usize = 4096;
pub const MAX_ENV: usize = 256;
pub const MAX_ENV_VALUE: usize = 32 * 1024;
pub const MAX_RUNTIME_INSTANCE: usize = 256;
pub const MAX_REASON: usize = 1024;
pub const MAX_GRACE_SECS: u32 = 600;
pub const MAX_CONCURRENT_TASKS: u32 = 10_000;
pub const HIBERNATE_RANGE: std::ops::RangeInclusive<u32> = 60..=2_592_000;

pub const ENV_WORKSPACE_ID: &str = "AGENTMESH_WORKSPACE_ID";
pub const ENV_REGISTRY_ADDR: &str = "AGENTMESH_REGISTRY_ADDR";
pub const ENV_TOKEN: &str = "AGENTMESH_TOKEN";
/// The variables the provisioner sets itself (the identity it injects and
/// the marks the process runtime finds its workloads by); specs may not set
/// them. Other AGENTMESH_* names stay free for the agent shim's settings.
pub const RESERVED_ENV: [&str; 5] =
    [ENV_WORKSPACE_ID, ENV_REGISTRY_ADDR, ENV_TOKEN, "AGENTMESH_MESH_ID", "AGENTMESH_RUNTIME_INSTANCE"];

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

impl RestartPolicy {
    /// Whether a workload that ended on its own (`clean` for exit code 0)
    /// is started again.
    pub fn restarts(self, clean: bool) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Always => true,
        }
    }
}

/// A validated workspace spec. Fields the registry keeps (name, role,
/// labels …) are passed on to it at create and kept here too, so a
/// workload can be re-created from this alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceSpec {
    pub name: String,
    pub role: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub parent_id: Option<String>,
    #[serde(with = "kind_serde")]
    pub runtime_kind: RuntimeKind,
    /// Empty in a request: the kind's default instance.
    pub runtime_instance: String,
    pub agent_runtime: String,
    pub image: String,
    pub command: String,
    pub args: Vec<String>,
    /// The spec's own variables; the injected ones are added at each start.
    pub env: BTreeMap<String, String>,
    /// Empty in a request: the default tier.
    pub tier: String,
    pub max_concurrent_tasks: u32,
    pub restart_policy: RestartPolicy,
    /// None: the provisioner's default; Some(0): never.
    pub hibernate_after_idle_secs: Option<u32>,
}

mod kind_serde {
    use agentmesh_chassis::status::echo;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::{policy, runtime::RuntimeKind};

    pub fn serialize<S: Serializer>(kind: &RuntimeKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(policy::kind_name(*kind))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RuntimeKind, D::Error> {
        let name = String::deserialize(d)?;
        policy::kind_from_name(&name).ok_or_else(|| D::Error::custom(format!("unknown runtime kind {}", echo(&name))))
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ProvisionerError {
    ProvisionerError::invalid(field, problem)
}

/// A bounded, printable single line (empty allowed).
fn line(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(invalid(field, format!("at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

pub fn workspace_id(field: &'static str, value: &str) -> Result<String> {
    uuid::Uuid::parse_str(value)
        .map(|id| id.to_string())
        .map_err(|_| invalid(field, format!("{} is not a UUID", echo(value))))
}

pub fn reason(value: &str) -> Result<String> {
    if value.chars().count() > MAX_REASON {
        return Err(invalid("reason", format!("at most {MAX_REASON} characters")));
    }
    Ok(value.to_owned())
}

/// A grace period; 0 means the configured default.
pub fn grace(value: u32, default: std::time::Duration) -> Result<std::time::Duration> {
    match value {
        0 => Ok(default),
        1..=MAX_GRACE_SECS => Ok(std::time::Duration::from_secs(value.into())),
        _ => Err(invalid("grace_period_seconds", format!("at most {MAX_GRACE_SECS}"))),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

fn is_tier(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl WorkspaceSpec {
    /// Validates a request's spec field by field (SEC-2). Name, role, labels
    /// and the like are checked again by the registry, which owns them.
    pub fn from_request(spec: Option<pb::WorkspaceSpec>) -> Result<Self> {
        let spec = spec.ok_or_else(|| invalid("spec", "is required"))?;
        let runtime_kind = match spec.runtime_kind() {
            RuntimeKind::Unspecified => return Err(invalid("spec.runtime_kind", "is required")),
            kind => kind,
        };
        let name = spec.name.trim();
        if name.is_empty() {
            return Err(invalid("spec.name", "is required"));
        }
        line("spec.name", name, MAX_NAME)?;
        line("spec.runtime_instance", &spec.runtime_instance, MAX_RUNTIME_INSTANCE)?;
        let parent_id = spec.parent_id.as_deref().map(|id| workspace_id("spec.parent_id", id)).transpose()?;
        let external = runtime_kind == RuntimeKind::External;
        line("spec.image", &spec.image, MAX_IMAGE)?;
        line("spec.command", &spec.command, MAX_COMMAND)?;
        if spec.image.contains(char::is_whitespace) {
            return Err(invalid("spec.image", "must not contain whitespace"));
        }
        match runtime_kind {
            RuntimeKind::Docker | RuntimeKind::Kubernetes if spec.image.is_empty() => {
                return Err(invalid("spec.image", "is required for docker and kubernetes workspaces"));
            }
            RuntimeKind::Process if !spec.image.is_empty() => {
                return Err(invalid("spec.image", "must be empty for process workspaces"));
            }
            RuntimeKind::Process if spec.command.is_empty() => {
                return Err(invalid("spec.command", "is required for process workspaces"));
            }
            _ => {}
        }
        if external {
            for (field, given) in [
                ("spec.image", !spec.image.is_empty()),
                ("spec.command", !spec.command.is_empty()),
                ("spec.args", !spec.args.is_empty()),
                ("spec.env", !spec.env.is_empty()),
            ] {
                if given {
                    return Err(invalid(field, "must be empty for external workspaces: the mesh does not run them"));
                }
            }
        }
        if spec.args.len() > MAX_ARGS {
            return Err(invalid("spec.args", format!("at most {MAX_ARGS} arguments")));
        }
        if spec.args.iter().any(|a| a.chars().count() > MAX_ARG || a.contains('\0')) {
            return Err(invalid("spec.args", format!("each argument at most {MAX_ARG} characters, no NUL")));
        }
        if spec.env.len() > MAX_ENV {
            return Err(invalid("spec.env", format!("at most {MAX_ENV} variables")));
        }
        for (name, value) in &spec.env {
            if !is_env_name(name) {
                return Err(invalid(
                    "spec.env",
                    format!("{} is not a variable name ([A-Za-z_][A-Za-z0-9_]*, 1-128)", echo(name)),
                ));
            }
            if RESERVED_ENV.contains(&name.as_str()) {
                return Err(invalid("spec.env", format!("{name} is reserved: the provisioner sets it")));
            }
            if value.chars().count() > MAX_ENV_VALUE || value.contains('\0') {
                return Err(invalid(
                    "spec.env",
                    format!("the value of {name} is over {MAX_ENV_VALUE} characters or holds NUL"),
                ));
            }
        }
        if !spec.tier.is_empty() && !is_tier(&spec.tier) {
            return Err(invalid("spec.tier", "1-64 characters of [a-z0-9_-]"));
        }
        if spec.max_concurrent_tasks > MAX_CONCURRENT_TASKS {
            return Err(invalid("spec.max_concurrent_tasks", format!("at most {MAX_CONCURRENT_TASKS}")));
        }
        let restart_policy = match pb::RestartPolicy::try_from(spec.restart_policy) {
            Ok(pb::RestartPolicy::Unspecified | pb::RestartPolicy::Never) => RestartPolicy::Never,
            Ok(pb::RestartPolicy::OnFailure) => RestartPolicy::OnFailure,
            Ok(pb::RestartPolicy::Always) => RestartPolicy::Always,
            Err(_) => return Err(invalid("spec.restart_policy", format!("unknown value {}", spec.restart_policy))),
        };
        if let Some(secs) = spec.hibernate_after_idle_seconds
            && secs != 0
            && !HIBERNATE_RANGE.contains(&secs)
        {
            return Err(invalid("spec.hibernate_after_idle_seconds", "0 (never) or 60..2592000"));
        }
        Ok(Self {
            name: name.to_owned(),
            role: spec.role,
            description: spec.description,
            labels: spec.labels.into_iter().collect(),
            parent_id,
            runtime_kind,
            runtime_instance: spec.runtime_instance,
            agent_runtime: spec.agent_runtime,
            image: spec.image,
            command: spec.command,
            args: spec.args,
            env: spec.env.into_iter().collect(),
            tier: if external { String::new() } else { spec.tier },
            max_concurrent_tasks: spec.max_concurrent_tasks,
            restart_policy: if external { RestartPolicy::Never } else { restart_policy },
            hibernate_after_idle_secs: if external { Some(0) } else { spec.hibernate_after_idle_seconds },
        })
    }
}
