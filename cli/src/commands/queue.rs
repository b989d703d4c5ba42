//! `agentmesh queue`: the gateway's durable queue.

use std::process::ExitCode;

use agentmesh_proto::gateway::v1 as gpb;
use serde::Serialize;

use super::{parse_word, word, workspace_id};
use crate::{
    args::QueueCommand,
    connect::{Mesh, ask},
    failure::Failure,
    output::{Printer, age, rfc3339, short},
};

#[derive(Debug, Serialize)]
struct StatsView {
    workspace_id: String,
    queued: u64,
    in_flight: u64,
    dead_letters: u64,
    oldest_queued_age_seconds: u64,
}

impl From<&gpb::QueueStats> for StatsView {
    fn from(s: &gpb::QueueStats) -> Self {
        Self {
            workspace_id: s.workspace_id.clone(),
            queued: s.queued,
            in_flight: s.in_flight,
            dead_letters: s.dead_letters,
            oldest_queued_age_seconds: s.oldest_queued_age_seconds,
        }
    }
}

#[derive(Debug, Serialize)]
struct ItemView {
    id: String,
    workspace_id: String,
    message_id: String,
    state: String,
    reason: String,
    attempts: u32,
    last_error: String,
    enqueued_at: Option<String>,
    delivered_at: Option<String>,
}

impl From<&gpb::QueueItem> for ItemView {
    fn from(i: &gpb::QueueItem) -> Self {
        Self {
            id: i.id.clone(),
            workspace_id: i.workspace_id.clone(),
            message_id: i.message_id.clone(),
            state: word(i.state().as_str_name(), "QUEUE_ITEM_STATE_"),
            reason: word(i.queue_reason().as_str_name(), "QUEUE_REASON_"),
            attempts: i.attempts,
            last_error: i.last_error.clone(),
            enqueued_at: rfc3339(i.enqueued_at.as_ref()),
            delivered_at: rfc3339(i.delivered_at.as_ref()),
        }
    }
}

const STATES: &[&str] = &["queued", "in-flight", "delivered", "dead-letter", "dropped"];

pub async fn run(mesh: &Mesh, printer: &Printer, command: QueueCommand) -> Result<ExitCode, Failure> {
    let address = &mesh.resolved.context.gateway;
    let mut client = mesh.gateway()?;
    match command {
        QueueCommand::Stats => {
            let mut request = gpb::GetQueueStatsRequest { page_size: 1000, ..Default::default() };
            let mut pages = Vec::new();
            let totals = loop {
                let page = ask(address, client.get_queue_stats(request.clone())).await?;
                pages.extend(page.workspaces);
                if page.next_page_token.is_empty() {
                    break page.totals.unwrap_or_default();
                }
                request.page_token = page.next_page_token;
            };
            if printer.structured() {
                #[derive(Serialize)]
                struct Stats {
                    totals: StatsView,
                    workspaces: Vec<StatsView>,
                }
                let workspaces = pages.iter().map(StatsView::from).collect();
                printer.record(&Stats { totals: StatsView::from(&totals), workspaces })?;
            } else {
                let mut rows: Vec<Vec<String>> = pages.iter().map(stats_row).collect();
                rows.push(stats_row(&gpb::QueueStats { workspace_id: "(all)".into(), ..totals }));
                printer.table(&["WORKSPACE", "QUEUED", "IN FLIGHT", "DEAD", "OLDEST"], rows)?;
            }
        }
        QueueCommand::List { workspace, state } => {
            let workspace_id = match workspace {
                Some(workspace) => workspace_id(mesh, &workspace).await?,
                None => String::new(),
            };
            let mut states = Vec::new();
            for written in &state {
                let written = if written == "dead" { "dead-letter" } else { written.as_str() };
                let parsed =
                    parse_word(written, "QUEUE_ITEM_STATE_", "state", gpb::QueueItemState::from_str_name, STATES)?;
                states.push(parsed as i32);
            }
            let mut request =
                gpb::ListQueueItemsRequest { workspace_id, states, page_size: 1000, ..Default::default() };
            let mut items = Vec::new();
            loop {
                let page = ask(address, client.list_queue_items(request.clone())).await?;
                items.extend(page.items);
                if page.next_page_token.is_empty() {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            if printer.structured() {
                printer.record(&items.iter().map(ItemView::from).collect::<Vec<_>>())?;
            } else {
                let rows = items
                    .iter()
                    .map(|item| {
                        let view = ItemView::from(item);
                        vec![
                            short(&view.id),
                            short(&view.workspace_id),
                            view.state,
                            view.reason,
                            view.attempts.to_string(),
                            age(item.enqueued_at.as_ref()),
                            view.last_error,
                        ]
                    })
                    .collect();
                printer.table(&["ID", "WORKSPACE", "STATE", "REASON", "ATTEMPTS", "AGE", "LAST ERROR"], rows)?;
            }
        }
        QueueCommand::RequeueDead { workspace } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = gpb::RequeueDeadLettersRequest { workspace_id, ..Default::default() };
            let requeued = ask(address, client.requeue_dead_letters(request)).await?;
            if printer.structured() {
                printer
                    .record(&serde_json::json!({"requeued": requeued.requeued_ids, "skipped": requeued.skipped_ids}))?;
            } else {
                say!("{} dead letters queued again", requeued.requeued_count);
            }
        }
        QueueCommand::Drop { workspace, older_than, expired, dead, dry_run } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = gpb::DropStaleItemsRequest {
                workspace_id,
                older_than_seconds: older_than,
                expired,
                include_dead_letters: dead,
                dry_run,
                reason: "agentmesh queue drop".into(),
                ..Default::default()
            };
            let dropped = ask(address, client.drop_stale_items(request)).await?;
            if printer.structured() {
                printer.record(&serde_json::json!({"dropped": dropped.dropped_ids, "dry_run": dry_run}))?;
            } else {
                let verb = if dry_run { "would be dropped" } else { "dropped" };
                say!("{} messages {verb}", dropped.dropped_count);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stats_row(stats: &gpb::QueueStats) -> Vec<String> {
    let id = if stats.workspace_id.starts_with('(') { stats.workspace_id.clone() } else { short(&stats.workspace_id) };
    let oldest = if stats.queued == 0 { "-".to_owned() } else { format!("{}s", stats.oldest_queued_age_seconds) };
    vec![id, stats.queued.to_string(), stats.in_flight.to_string(), stats.dead_letters.to_string(), oldest]
}
