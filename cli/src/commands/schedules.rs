//! `agentmesh schedules`: cron schedules that fire messages into workspaces.

use std::process::ExitCode;

use agentmesh_proto::scheduler::v1 as spb;
use serde::Serialize;

use super::{parse_word, word, workspace_id};
use crate::{
    args::{ScheduleCommand, ScheduleCreateArgs, ScheduleUpdateArgs},
    connect::{Mesh, ask},
    failure::Failure,
    output::{Printer, age, rfc3339, short},
};

#[derive(Debug, Serialize)]
struct ScheduleView {
    id: String,
    workspace_id: String,
    name: String,
    cron: String,
    timezone: String,
    text: String,
    enabled: bool,
    disabled_reason: String,
    overlap: String,
    catch_up: String,
    next_run_at: Option<String>,
    last_run_at: Option<String>,
    last_outcome: String,
    last_error: String,
    stale: bool,
}

impl From<&spb::Schedule> for ScheduleView {
    fn from(s: &spb::Schedule) -> Self {
        Self {
            id: s.id.clone(),
            workspace_id: s.workspace_id.clone(),
            name: s.name.clone(),
            cron: s.cron_expression.clone(),
            timezone: s.timezone.clone(),
            text: s.message_text.clone(),
            enabled: s.enabled,
            disabled_reason: s.disabled_reason.clone(),
            overlap: word(s.overlap_policy().as_str_name(), "OVERLAP_POLICY_"),
            catch_up: word(s.catch_up_policy().as_str_name(), "CATCH_UP_POLICY_"),
            next_run_at: rfc3339(s.next_run_at.as_ref()),
            last_run_at: rfc3339(s.last_run_at.as_ref()),
            last_outcome: word(s.last_outcome().as_str_name(), "RUN_OUTCOME_"),
            last_error: s.last_error.clone(),
            stale: s.stale,
        }
    }
}

#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    trigger: String,
    scheduled_at: Option<String>,
    fired_at: Option<String>,
    /// Seconds from the scheduled time to the firing.
    lag_seconds: Option<f64>,
    outcome: String,
    error: String,
    summary: String,
    message_id: String,
    queue_id: String,
}

impl From<&spb::ScheduleRun> for RunView {
    fn from(r: &spb::ScheduleRun) -> Self {
        Self {
            id: r.id.clone(),
            trigger: word(r.trigger().as_str_name(), "RUN_TRIGGER_"),
            scheduled_at: rfc3339(r.scheduled_at.as_ref()),
            fired_at: rfc3339(r.fired_at.as_ref()),
            lag_seconds: lag(r),
            outcome: word(r.outcome().as_str_name(), "RUN_OUTCOME_"),
            error: r.error.clone(),
            summary: r.summary.clone(),
            message_id: r.message_id.clone(),
            queue_id: r.queue_id.clone(),
        }
    }
}

fn lag(run: &spb::ScheduleRun) -> Option<f64> {
    let (scheduled, fired) = (run.scheduled_at.as_ref()?, run.fired_at.as_ref()?);
    let seconds = (fired.seconds - scheduled.seconds) as f64 + f64::from(fired.nanos - scheduled.nanos) / 1e9;
    Some(seconds)
}

const OVERLAP: &[&str] = &["skip", "queue"];
const CATCH_UP: &[&str] = &["skip-missed", "fire-once"];

fn overlap(written: &str) -> Result<spb::OverlapPolicy, Failure> {
    parse_word(written, "OVERLAP_POLICY_", "overlap policy", spb::OverlapPolicy::from_str_name, OVERLAP)
}

fn catch_up(written: &str) -> Result<spb::CatchUpPolicy, Failure> {
    parse_word(written, "CATCH_UP_POLICY_", "catch-up policy", spb::CatchUpPolicy::from_str_name, CATCH_UP)
}

pub async fn run(mesh: &Mesh, printer: &Printer, command: ScheduleCommand) -> Result<ExitCode, Failure> {
    let address = &mesh.resolved.context.scheduler;
    let mut client = mesh.scheduler()?;
    match command {
        ScheduleCommand::List { workspace } => {
            let workspace_id = match workspace {
                Some(workspace) => workspace_id(mesh, &workspace).await?,
                None => String::new(),
            };
            let mut request = spb::ListSchedulesRequest { workspace_id, page_size: 500, ..Default::default() };
            let mut schedules = Vec::new();
            loop {
                let page = ask(address, client.list_schedules(request.clone())).await?;
                schedules.extend(page.schedules);
                if page.next_page_token.is_empty() {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            show(printer, &schedules)?;
        }
        ScheduleCommand::Get { schedule } => {
            let found = ask(address, client.get_schedule(spb::GetScheduleRequest { schedule_id: schedule })).await?;
            let found = found.schedule.into_iter().collect::<Vec<_>>();
            match (printer.structured(), found.first()) {
                (true, Some(schedule)) => printer.record(&ScheduleView::from(schedule))?,
                _ => show(printer, &found)?,
            }
        }
        ScheduleCommand::Create(args) => {
            let request = create_request(mesh, args).await?;
            let created = ask(address, client.create_schedule(request)).await?;
            done(printer, created.schedule, "created")?;
        }
        ScheduleCommand::Update(args) => {
            let request = update_request(args)?;
            let updated = ask(address, client.update_schedule(request)).await?;
            done(printer, updated.schedule, "updated")?;
        }
        ScheduleCommand::Enable { schedule } => {
            let resumed =
                ask(address, client.resume_schedule(spb::ResumeScheduleRequest { schedule_id: schedule })).await?;
            done(printer, resumed.schedule, "enabled")?;
        }
        ScheduleCommand::Disable { schedule } => {
            let request = spb::PauseScheduleRequest { schedule_id: schedule, reason: "agentmesh disable".into() };
            let paused = ask(address, client.pause_schedule(request)).await?;
            done(printer, paused.schedule, "disabled")?;
        }
        ScheduleCommand::Trigger { schedule } => {
            // A fresh request id per command: each trigger is a run of its own.
            let request_id = Some(uuid::Uuid::new_v4().to_string());
            let request = spb::TriggerScheduleRequest { schedule_id: schedule, request_id };
            let triggered = ask(address, client.trigger_schedule(request)).await?;
            let runs: Vec<spb::ScheduleRun> = triggered.run.into_iter().collect();
            show_runs(printer, &runs)?;
        }
        ScheduleCommand::Runs { schedule, limit } => {
            let request = spb::ListRunsRequest { schedule_id: schedule, page_size: limit, ..Default::default() };
            let runs = ask(address, client.list_runs(request)).await?.runs;
            show_runs(printer, &runs)?;
        }
        ScheduleCommand::Delete { schedule } => {
            ask(address, client.delete_schedule(spb::DeleteScheduleRequest { schedule_id: schedule.clone() })).await?;
            if !printer.structured() {
                say!("schedule {schedule} deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create_request(mesh: &Mesh, args: ScheduleCreateArgs) -> Result<spb::CreateScheduleRequest, Failure> {
    Ok(spb::CreateScheduleRequest {
        workspace_id: workspace_id(mesh, &args.workspace).await?,
        name: args.name,
        cron_expression: args.cron,
        timezone: args.timezone,
        message_text: args.text,
        message_metadata_json: String::new(),
        enabled: Some(!args.disabled),
        overlap_policy: overlap(&args.overlap)? as i32,
        catch_up_policy: catch_up(&args.catch_up)? as i32,
    })
}

fn update_request(args: ScheduleUpdateArgs) -> Result<spb::UpdateScheduleRequest, Failure> {
    Ok(spb::UpdateScheduleRequest {
        schedule_id: args.schedule,
        name: args.name,
        cron_expression: args.cron,
        timezone: args.timezone,
        message_text: args.text,
        overlap_policy: args.overlap.as_deref().map(overlap).transpose()?.map(|p| p as i32),
        catch_up_policy: args.catch_up.as_deref().map(catch_up).transpose()?.map(|p| p as i32),
        ..Default::default()
    })
}

fn done(printer: &Printer, schedule: Option<spb::Schedule>, what: &str) -> Result<(), Failure> {
    let Some(schedule) = schedule else { return Ok(()) };
    if printer.structured() {
        return printer.record(&ScheduleView::from(&schedule));
    }
    say!("schedule {} ({}) {what}", schedule.name, schedule.id);
    Ok(())
}

fn show(printer: &Printer, schedules: &[spb::Schedule]) -> Result<(), Failure> {
    if printer.structured() {
        return printer.record(&schedules.iter().map(ScheduleView::from).collect::<Vec<_>>());
    }
    let mut header = vec!["NAME", "ID", "WORKSPACE", "CRON", "TIMEZONE", "ENABLED", "NEXT RUN", "LAST OUTCOME"];
    if printer.wide() {
        header.extend(["TEXT", "OVERLAP", "CATCH-UP"]);
    }
    let rows = schedules
        .iter()
        .map(|s| {
            let view = ScheduleView::from(s);
            let enabled = if view.enabled { "yes".to_owned() } else { format!("no ({})", view.disabled_reason) };
            let outcome = if view.stale { format!("{} (stale)", view.last_outcome) } else { view.last_outcome.clone() };
            let mut row = vec![
                view.name.clone(),
                short(&view.id),
                short(&view.workspace_id),
                view.cron.clone(),
                view.timezone.clone(),
                enabled,
                view.next_run_at.clone().unwrap_or_else(|| "-".into()),
                outcome,
            ];
            if printer.wide() {
                row.extend([view.text, view.overlap, view.catch_up]);
            }
            row
        })
        .collect();
    printer.table(&header, rows)
}

fn show_runs(printer: &Printer, runs: &[spb::ScheduleRun]) -> Result<(), Failure> {
    if printer.structured() {
        return printer.record(&runs.iter().map(RunView::from).collect::<Vec<_>>());
    }
    let rows = runs
        .iter()
        .map(|run| {
            let view = RunView::from(run);
            let lag = view.lag_seconds.map_or_else(|| "-".to_owned(), |lag| format!("{lag:.2}s"));
            let detail = if view.error.is_empty() { view.summary.clone() } else { view.error.clone() };
            vec![short(&view.id), view.trigger, age(run.scheduled_at.as_ref()), lag, view.outcome, detail]
        })
        .collect();
    printer.table(&["RUN", "TRIGGER", "SCHEDULED", "LAG", "OUTCOME", "DETAIL"], rows)
}
