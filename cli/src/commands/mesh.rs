//! The mesh as a whole: `runtimes`, `policy` and `status`.

use std::{path::Path, process::ExitCode};

use agentmesh_proto::{provisioner::v1 as ppb, registry::v1 as rpb};
use serde::{Deserialize, Serialize};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{parse_word, runtime_word, word};
use crate::{
    args::PolicyCommand,
    connect::{Mesh, ask},
    failure::Failure,
    output::{Printer, age, rfc3339},
};

#[derive(Debug, Serialize)]
struct RuntimeView {
    name: String,
    kind: String,
    default: bool,
    health: String,
    detail: String,
    engine_version: String,
    workloads: u64,
    last_resync_at: Option<String>,
}

pub async fn runtimes(mesh: &Mesh, printer: &Printer) -> Result<ExitCode, Failure> {
    let request = ppb::ListRuntimesRequest::default();
    let listed = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.list_runtimes(request)).await?;
    let views: Vec<RuntimeView> = listed
        .runtimes
        .iter()
        .map(|r| RuntimeView {
            name: r.name.clone(),
            kind: runtime_word(r.kind()),
            default: r.is_default,
            health: word(r.health().as_str_name(), "RUNTIME_HEALTH_"),
            detail: r.detail.clone(),
            engine_version: r.engine_version.clone(),
            workloads: r.workload_count,
            last_resync_at: rfc3339(r.last_resync_at.as_ref()),
        })
        .collect();
    if printer.structured() {
        return printer
            .record(&serde_json::json!({"mesh_id": listed.mesh_id, "runtimes": views}))
            .map(|()| ExitCode::SUCCESS);
    }
    let rows = views
        .into_iter()
        .zip(&listed.runtimes)
        .map(|(view, runtime)| {
            let health =
                if view.detail.is_empty() { view.health } else { format!("{} ({})", view.health, view.detail) };
            let name = if view.default { format!("{} (default)", view.name) } else { view.name };
            vec![
                name,
                view.kind,
                health,
                view.engine_version,
                view.workloads.to_string(),
                age(runtime.last_resync_at.as_ref()),
            ]
        })
        .collect();
    say!("mesh id: {}", listed.mesh_id);
    printer.table(&["NAME", "KIND", "HEALTH", "ENGINE", "WORKLOADS", "RESYNC"], rows)?;
    Ok(ExitCode::SUCCESS)
}

/// A policy as written in a file and as shown: what `ReloadPolicy` takes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyView {
    /// Shown, and accepted back (ignored) so that `policy show` output can
    /// be edited and applied.
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    allowed_images: Vec<String>,
    #[serde(default)]
    allowed_registries: Vec<String>,
    #[serde(default)]
    allowed_runtime_kinds: Vec<String>,
    #[serde(default)]
    allowed_tiers: Vec<String>,
    #[serde(default)]
    allowed_commands: Vec<String>,
    #[serde(default)]
    allow_exec: bool,
}

impl From<&ppb::Policy> for PolicyView {
    fn from(p: &ppb::Policy) -> Self {
        Self {
            revision: p.revision,
            allowed_images: p.allowed_images.clone(),
            allowed_registries: p.allowed_registries.clone(),
            allowed_runtime_kinds: p.allowed_runtime_kinds().map(runtime_word).collect(),
            allowed_tiers: p.allowed_tiers.clone(),
            allowed_commands: p.allowed_commands.clone(),
            allow_exec: p.allow_exec,
        }
    }
}

fn read_policy(path: &Path) -> Result<ppb::Policy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
    let view: PolicyView =
        toml::from_str(&text).map_err(|e| Failure::Config(format!("{}: {}", path.display(), e.message())))?;
    let mut kinds = Vec::new();
    for kind in &view.allowed_runtime_kinds {
        let known = &["docker", "kubernetes", "process", "external"];
        kinds.push(parse_word(kind, "RUNTIME_KIND_", "runtime kind", rpb::RuntimeKind::from_str_name, known)? as i32);
    }
    Ok(ppb::Policy {
        allowed_images: view.allowed_images,
        allowed_registries: view.allowed_registries,
        allowed_runtime_kinds: kinds,
        allowed_tiers: view.allowed_tiers,
        allowed_commands: view.allowed_commands,
        allow_exec: view.allow_exec,
        ..Default::default()
    })
}

pub async fn policy(mesh: &Mesh, printer: &Printer, command: PolicyCommand) -> Result<ExitCode, Failure> {
    let address = &mesh.resolved.context.provisioner;
    let mut client = mesh.provisioner()?;
    match command {
        PolicyCommand::Show => {
            let shown = ask(address, client.get_policy(ppb::GetPolicyRequest::default())).await?;
            let view = PolicyView::from(&shown.policy.unwrap_or_default());
            if printer.structured() {
                printer.record(&view)?;
            } else {
                let text = toml::to_string_pretty(&view).map_err(|e| Failure::Failed(e.to_string()))?;
                say!("{}", text.trim_end());
            }
        }
        PolicyCommand::Reload { file, dry_run } => {
            let policy = file.as_deref().map(read_policy).transpose()?;
            let request = ppb::ReloadPolicyRequest { policy, expected_revision: None, dry_run };
            let reloaded = ask(address, client.reload_policy(request)).await?;
            if printer.structured() {
                let violations: Vec<_> = reloaded
                    .violations
                    .iter()
                    .map(|v| serde_json::json!({"workspace_id": v.workspace_id, "workspace_name": v.workspace_name, "reason": v.reason}))
                    .collect();
                let policy = reloaded.policy.as_ref().map(PolicyView::from);
                let record = serde_json::json!({"changed": reloaded.changed, "would_change": reloaded.would_change, "dry_run": dry_run, "policy": policy, "violations": violations});
                printer.record(&record)?;
            } else {
                let would = if dry_run { "would " } else { "" };
                match (reloaded.changed, reloaded.would_change) {
                    (true, _) => say!("the policy changed"),
                    (false, true) => say!("the policy would change"),
                    (false, false) => say!("the policy is unchanged"),
                }
                for violation in &reloaded.violations {
                    say!("{would}stop {} ({}): {}", violation.workspace_name, violation.workspace_id, violation.reason);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    service: &'static str,
    address: String,
    health: String,
    version: String,
}

/// Every service's health and version; fails (exit 5) when one is not serving.
pub async fn status(mesh: &Mesh, printer: &Printer) -> Result<ExitCode, Failure> {
    let context = &mesh.resolved.context;
    let services = [
        ("registry", &context.registry),
        ("provisioner", &context.provisioner),
        ("a2a-gateway", &context.gateway),
        ("scheduler", &context.scheduler),
    ];
    let mut statuses = Vec::new();
    for (service, address) in services {
        let mut health = HealthClient::new(mesh.plain(address)?);
        let checked = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            health.check(HealthCheckRequest { service: String::new() }),
        )
        .await;
        let (health, version) = match checked {
            Ok(Ok(response)) => {
                let version = response.metadata().get(agentmesh_chassis::server::VERSION_HEADER.as_str());
                let version = version.and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
                (word(response.into_inner().status().as_str_name(), ""), version)
            }
            Ok(Err(status)) => (format!("unreachable: {}", status.message()), "-".to_owned()),
            Err(_) => ("unreachable: no answer in 5 s".to_owned(), "-".to_owned()),
        };
        statuses.push(ServiceStatus { service, address: address.clone(), health, version });
    }
    if printer.structured() {
        printer.record(&statuses)?;
    } else {
        let rows = statuses
            .iter()
            .map(|s| {
                let health = match s.health.as_str() {
                    "serving" if printer.styled => format!("🟢 {}", s.health),
                    "serving" => s.health.clone(),
                    other if printer.styled => format!("❌ {other}"),
                    other => other.to_owned(),
                };
                vec![s.service.to_owned(), s.address.clone(), health, s.version.clone()]
            })
            .collect();
        say!("context: {}", mesh.resolved.name);
        printer.table(&["SERVICE", "ADDRESS", "HEALTH", "VERSION"], rows)?;
    }
    let down: Vec<&str> = statuses.iter().filter(|s| s.health != "serving").map(|s| s.service).collect();
    match down.is_empty() {
        true => Ok(ExitCode::SUCCESS),
        false => Err(Failure::NotServing(down.join(", "))),
    }
}
