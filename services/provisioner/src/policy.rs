//! The provisioning policy (PRV-6): a gate every start passes — create,
//! start, restart (also a restart policy's), wake — and the rules it checks.

use std::path::Path;

use agentmesh_chassis::status::echo;
use serde::{Deserialize, Serialize};

use crate::{runtime::RuntimeKind, spec::WorkspaceSpec};

/// The rules. Every list left empty places no restriction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Image patterns (`*` matches any run of characters).
    pub allowed_images: Vec<String>,
    /// Registry hosts; an image without one counts as "docker.io".
    pub allowed_registries: Vec<String>,
    /// Runtime kinds by name: docker, kubernetes, process, external.
    pub allowed_runtime_kinds: Vec<String>,
    /// Tier names.
    pub allowed_tiers: Vec<String>,
    /// Program patterns for process workloads.
    pub allowed_commands: Vec<String>,
    /// Whether Exec is allowed at all.
    pub allow_exec: bool,
}

/// The policy in force, as stored (shared by every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePolicy {
    pub policy: Policy,
    /// Increases with every change; 0 is the built-in allow-all policy.
    pub revision: u64,
    /// "builtin", "api" or "file:<path>".
    pub source: String,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl ActivePolicy {
    pub fn builtin() -> Self {
        Self { policy: Policy::default(), revision: 0, source: "builtin".to_owned(), updated_at: 0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read the policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the policy file {path} is malformed: {message}")]
    Malformed { path: String, message: String },
}

const MAX_PATTERNS: usize = 256;

impl Policy {
    pub fn from_file(path: &Path) -> Result<Self, PolicyFileError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read { path: shown.clone(), source })?;
        let policy: Policy = toml::from_str(&text)
            .map_err(|e| PolicyFileError::Malformed { path: shown.clone(), message: e.to_string() })?;
        policy.validate().map_err(|(field, problem)| PolicyFileError::Malformed {
            path: shown,
            message: format!("{field}: {problem}"),
        })?;
        Ok(policy)
    }

    /// Checks the shape of the rules; returns the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let lists: [(&'static str, &Vec<String>, usize); 4] = [
            ("allowed_images", &self.allowed_images, 512),
            ("allowed_registries", &self.allowed_registries, 256),
            ("allowed_tiers", &self.allowed_tiers, 64),
            ("allowed_commands", &self.allowed_commands, 1024),
        ];
        for (field, list, max_len) in lists {
            if list.len() > MAX_PATTERNS {
                return Err((field, format!("at most {MAX_PATTERNS} entries")));
            }
            if let Some(bad) =
                list.iter().find(|p| p.is_empty() || p.len() > max_len || p.chars().any(char::is_control))
            {
                return Err((field, format!("{} is not 1-{max_len} printable characters", echo(bad))));
            }
        }
        if let Some(bad) = self.allowed_runtime_kinds.iter().find(|k| k.parse::<KindName>().is_err()) {
            return Err((
                "allowed_runtime_kinds",
                format!("{} is not docker, kubernetes, process or external", echo(bad)),
            ));
        }
        Ok(())
    }

    /// Whether `spec` may run; the error names the rule it breaks.
    pub fn admit(&self, spec: &WorkspaceSpec, tier: &str) -> Result<(), String> {
        let kind = kind_name(spec.runtime_kind);
        if !self.allowed_runtime_kinds.is_empty() && !self.allowed_runtime_kinds.iter().any(|k| k == kind) {
            return Err(format!(
                "runtime kind {kind} is not allowed (allowed: {})",
                self.allowed_runtime_kinds.join(", ")
            ));
        }
        if spec.runtime_kind == RuntimeKind::External {
            return Ok(());
        }
        if !self.allowed_tiers.is_empty() && !self.allowed_tiers.iter().any(|t| t == tier) {
            return Err(format!("tier {tier} is not allowed (allowed: {})", self.allowed_tiers.join(", ")));
        }
        if !spec.image.is_empty() {
            if !self.allowed_images.is_empty() && !self.allowed_images.iter().any(|p| glob_match(p, &spec.image)) {
                return Err(format!("image {} matches no allowed image pattern", spec.image));
            }
            let registry = image_registry(&spec.image);
            if !self.allowed_registries.is_empty() && !self.allowed_registries.iter().any(|r| r == registry) {
                return Err(format!("registry {registry} of image {} is not allowed", spec.image));
            }
        }
        if spec.runtime_kind == RuntimeKind::Process
            && !self.allowed_commands.is_empty()
            && !self.allowed_commands.iter().any(|p| glob_match(p, &spec.command))
        {
            return Err(format!("command {} matches no allowed command pattern", spec.command));
        }
        Ok(())
    }
}

/// Runtime kinds as policy files name them.
struct KindName;

impl std::str::FromStr for KindName {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        matches!(s, "docker" | "kubernetes" | "process" | "external").then_some(KindName).ok_or(())
    }
}

pub fn kind_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Docker => "docker",
        RuntimeKind::Kubernetes => "kubernetes",
        RuntimeKind::Process => "process",
        RuntimeKind::External => "external",
        RuntimeKind::Unspecified => "unspecified",
    }
}

pub fn kind_from_name(name: &str) -> Option<RuntimeKind> {
    [RuntimeKind::Docker, RuntimeKind::Kubernetes, RuntimeKind::Process, RuntimeKind::External]
        .into_iter()
        .find(|k| kind_name(*k) == name)
}

/// The registry host of an image reference, "docker.io" when it names none.
/// The first path component is a host when it looks like one (has a dot or
/// a port, or is "localhost"), as Docker decides.
pub fn image_registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// `*` matches any run of characters, everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much of the text it has taken; on a
    // mismatch it takes one more character (linear backtracking).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(image: &str) -> WorkspaceSpec {
        WorkspaceSpec { runtime_kind: RuntimeKind::Docker, image: image.to_owned(), ..WorkspaceSpec::default() }
    }

    #[test]
    fn globs() {
        assert!(glob_match("ghcr.io/acme/*", "ghcr.io/acme/agent:1"));
        assert!(!glob_match("ghcr.io/acme/*", "ghcr.io/evil/agent"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b", "aXbY"));
        assert!(glob_match("agentmesh/echo-agent:dev", "agentmesh/echo-agent:dev"));
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(image_registry("alpine"), "docker.io");
        assert_eq!(image_registry("acme/agent:1"), "docker.io");
        assert_eq!(image_registry("ghcr.io/acme/agent"), "ghcr.io");
        assert_eq!(image_registry("registry.local:5000/agent"), "registry.local:5000");
        assert_eq!(image_registry("localhost/agent"), "localhost");
    }

    #[test]
    fn every_rule_must_allow() {
        let policy = Policy {
            allowed_images: vec!["agentmesh/*".into()],
            allowed_runtime_kinds: vec!["docker".into()],
            allowed_tiers: vec!["small".into()],
            ..Policy::default()
        };
        assert!(policy.admit(&docker("agentmesh/echo-agent:dev"), "small").is_ok());
        assert!(policy.admit(&docker("evil/miner"), "small").unwrap_err().contains("evil/miner"));
        assert!(policy.admit(&docker("agentmesh/echo-agent:dev"), "large").unwrap_err().contains("tier large"));
        let process = WorkspaceSpec { runtime_kind: RuntimeKind::Process, ..WorkspaceSpec::default() };
        assert!(policy.admit(&process, "small").unwrap_err().contains("runtime kind process"));
    }

    #[test]
    fn malformed_rules_name_their_field() {
        let policy = Policy { allowed_runtime_kinds: vec!["vm".into()], ..Policy::default() };
        assert_eq!(policy.validate().unwrap_err().0, "allowed_runtime_kinds");
        let policy = Policy { allowed_images: vec![String::new()], ..Policy::default() };
        assert_eq!(policy.validate().unwrap_err().0, "allowed_images");
    }
}
