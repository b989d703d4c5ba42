//! `agentmesh events`: the registry's event stream, live, resumable.

use std::process::ExitCode;

use agentmesh_proto::registry::v1 as rpb;
use futures::StreamExt;
use serde::Serialize;

use super::{parse_word, status_word, word, workspace_id};
use crate::{
    args::EventsArgs,
    connect::{Mesh, ask, unreachable_or},
    failure::Failure,
    output::{Printer, rfc3339, short},
};

#[derive(Debug, Serialize)]
struct EventView {
    /// Resume after this with `--from-cursor`.
    cursor: u64,
    r#type: String,
    workspace_id: String,
    time: Option<String>,
    status: String,
    previous_status: String,
    reason: String,
    active_tasks: u32,
    max_concurrent_tasks: u32,
}

const TYPES: &[&str] = &[
    "workspace-created",
    "workspace-registered",
    "heartbeat",
    "status-changed",
    "capabilities-changed",
    "liveness-expired",
    "provision-failed",
];

pub async fn run(mesh: &Mesh, printer: &Printer, args: EventsArgs) -> Result<ExitCode, Failure> {
    let mut types = Vec::new();
    for written in &args.types {
        // `created` and `registered` are the workspace's own events.
        let written = match written.as_str() {
            "created" | "registered" => format!("workspace-{written}"),
            "status" => "status-changed".to_owned(),
            other => other.to_owned(),
        };
        types.push(parse_word(&written, "EVENT_TYPE_", "event type", rpb::EventType::from_str_name, TYPES)? as i32);
    }
    let workspace_ids = match &args.workspace {
        Some(workspace) => vec![workspace_id(mesh, workspace).await?],
        None => vec![],
    };
    let request = rpb::WatchEventsRequest { workspace_ids, types, after_cursor: args.from_cursor };
    let address = &mesh.resolved.context.registry;
    let mut events = ask(address, mesh.registry()?.watch_events(request)).await?;
    while let Some(reply) = events.next().await {
        let reply = reply.map_err(|status| unreachable_or(address, status))?;
        let Some(event) = reply.event else { continue };
        let view = EventView {
            cursor: event.cursor,
            r#type: word(event.r#type().as_str_name(), "EVENT_TYPE_"),
            workspace_id: event.workspace_id.clone(),
            time: rfc3339(event.time.as_ref()),
            status: status_word(event.status()),
            previous_status: status_word(event.previous_status()),
            reason: event.reason.clone(),
            active_tasks: event.active_tasks,
            max_concurrent_tasks: event.max_concurrent_tasks,
        };
        if printer.structured() {
            printer.stream_record(&view)?;
        } else {
            let status = match event.r#type() {
                rpb::EventType::StatusChanged | rpb::EventType::LivenessExpired | rpb::EventType::ProvisionFailed => {
                    format!("{} → {}", view.previous_status, printer.status(&view.status))
                }
                _ => printer.status(&view.status),
            };
            let reason = if view.reason.is_empty() { String::new() } else { format!(" ({})", view.reason) };
            say!(
                "{:>8}  {}  {:<20}  {}  {status}{reason}",
                view.cursor,
                view.time.as_deref().unwrap_or("-"),
                view.r#type,
                short(&view.workspace_id)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
