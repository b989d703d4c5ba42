//! One module per group of commands; what they share: naming enum values
//! as people write them, and finding a workspace by name or id.

pub mod config;
pub mod dev;
pub mod events;
pub mod mesh;
pub mod queue;
pub mod schedules;
pub mod send;
pub mod workspaces;

use agentmesh_proto::registry::v1 as rpb;

use crate::{
    connect::{Mesh, ask},
    failure::Failure,
};

/// An enum value as people write it: `WORKSPACE_STATUS_POLICY_STOPPED` with
/// its `prefix` gone, in lower case: `policy_stopped`.
pub fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

/// The enum value people wrote (`policy-stopped`, `policy_stopped`), by its
/// proto name with `prefix`; the known words are named in the error.
pub fn parse_word<T>(
    written: &str,
    prefix: &str,
    what: &str,
    from_name: impl Fn(&str) -> Option<T>,
    known: &[&str],
) -> Result<T, Failure> {
    let name = format!("{prefix}{}", written.trim().to_ascii_uppercase().replace('-', "_"));
    from_name(&name).ok_or_else(|| Failure::Usage(format!("unknown {what} {written:?} (one of: {})", known.join(", "))))
}

pub fn status_word(status: rpb::WorkspaceStatus) -> String {
    word(status.as_str_name(), "WORKSPACE_STATUS_")
}

pub fn runtime_word(kind: rpb::RuntimeKind) -> String {
    word(kind.as_str_name(), "RUNTIME_KIND_")
}

pub const STATUSES: &[&str] = &[
    "provisioning",
    "awaiting_agent",
    "online",
    "degraded",
    "offline",
    "failed",
    "stopping",
    "stopped",
    "policy_stopped",
    "hibernated",
    "removed",
];

/// The id of the workspace `reference` names: its id, a unique prefix of
/// its id, or its name.
pub async fn workspace_id(mesh: &Mesh, reference: &str) -> Result<String, Failure> {
    if uuid::Uuid::parse_str(reference).is_ok() {
        return Ok(reference.to_owned());
    }
    let candidates = all_workspaces(mesh, true).await?;
    // A name freed by a removed workspace may be taken again: the live one
    // is meant, and a removed one only when no live one matches.
    let (live, removed): (Vec<&rpb::Workspace>, Vec<&rpb::Workspace>) =
        candidates.iter().partition(|w| w.status() != rpb::WorkspaceStatus::Removed);
    let prefix = reference.to_ascii_lowercase();
    let matching = [live, removed]
        .into_iter()
        .map(|pool| {
            let named: Vec<&rpb::Workspace> = pool.iter().copied().filter(|w| w.name == reference).collect();
            if named.is_empty() {
                pool.into_iter().filter(|w| prefix.len() >= 4 && w.id.starts_with(&prefix)).collect()
            } else {
                named
            }
        })
        .find(|matching: &Vec<&rpb::Workspace>| !matching.is_empty())
        .unwrap_or_default();
    match matching.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Failure::NotFound(format!("no workspace is named {reference:?} or has an id starting so"))),
        many => {
            let ids: Vec<String> = many.iter().map(|w| format!("{} ({})", w.id, w.name)).collect();
            Err(Failure::Usage(format!("{reference:?} names several workspaces: {}", ids.join(", "))))
        }
    }
}

/// Every workspace, removed ones too when `removed`.
pub async fn all_workspaces(mesh: &Mesh, removed: bool) -> Result<Vec<rpb::Workspace>, Failure> {
    list_workspaces(mesh, rpb::ListWorkspacesRequest { statuses: every_status(removed), ..Default::default() }).await
}

/// Every status a listing can ask for; `removed` too when asked.
pub fn every_status(removed: bool) -> Vec<i32> {
    let statuses = rpb::WorkspaceStatus::Provisioning as i32..=rpb::WorkspaceStatus::Removed as i32;
    statuses.filter(|s| removed || *s != rpb::WorkspaceStatus::Removed as i32).collect()
}

/// Every page of a listing.
pub async fn list_workspaces(
    mesh: &Mesh,
    mut request: rpb::ListWorkspacesRequest,
) -> Result<Vec<rpb::Workspace>, Failure> {
    let mut client = mesh.registry()?;
    let address = &mesh.resolved.context.registry;
    request.page_size = 500;
    let mut all = Vec::new();
    loop {
        let page = ask(address, client.list_workspaces(request.clone())).await?;
        all.extend(page.workspaces);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_read_and_parse_as_people_write_them() {
        assert_eq!(status_word(rpb::WorkspaceStatus::PolicyStopped), "policy_stopped");
        assert_eq!(runtime_word(rpb::RuntimeKind::Docker), "docker");
        let parse =
            |written| parse_word(written, "WORKSPACE_STATUS_", "status", rpb::WorkspaceStatus::from_str_name, STATUSES);
        assert_eq!(parse("policy-stopped").unwrap(), rpb::WorkspaceStatus::PolicyStopped);
        assert_eq!(parse("Online").unwrap(), rpb::WorkspaceStatus::Online);
        let unknown = parse("asleep").unwrap_err().to_string();
        assert!(unknown.starts_with("unknown status \"asleep\" (one of: provisioning,"), "{unknown}");
    }
}
