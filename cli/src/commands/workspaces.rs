//! `agentmesh workspaces`: list, inspect, create and run workspaces.

use std::{collections::BTreeMap, io::Write, process::ExitCode, time::Duration};

use agentmesh_proto::{provisioner::v1 as ppb, registry::v1 as rpb};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{STATUSES, every_status, list_workspaces, parse_word, runtime_word, status_word, word, workspace_id};
use crate::{
    args::{CreateArgs, ExecArgs, ListArgs, LogsArgs, StopArgs, WorkspaceCommand},
    connect::{Mesh, ask, unreachable_or},
    failure::Failure,
    output::{Printer, age, person_on_stderr, rfc3339, short},
};

/// A workspace as the command line shows it, and as scripts read it.
#[derive(Debug, Serialize)]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub status: String,
    pub status_reason: String,
    pub runtime: String,
    pub runtime_instance: String,
    pub url: String,
    pub labels: BTreeMap<String, String>,
    pub parent_id: Option<String>,
    pub active_tasks: u32,
    pub max_concurrent_tasks: u32,
    pub error_rate: f64,
    pub capabilities: Vec<String>,
    pub last_heartbeat_at: Option<String>,
    pub created_at: Option<String>,
}

impl From<&rpb::Workspace> for WorkspaceView {
    fn from(w: &rpb::Workspace) -> Self {
        let capabilities = w.capabilities.as_ref().map_or_else(Vec::new, |c| {
            [
                ("native_session", c.native_session),
                ("native_scheduler", c.native_scheduler),
                ("native_status_mgmt", c.native_status_mgmt),
            ]
            .into_iter()
            .filter(|(_, declared)| *declared)
            .map(|(name, _)| name.to_owned())
            .collect()
        });
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            role: w.role.clone(),
            status: status_word(w.status()),
            status_reason: w.status_reason.clone(),
            runtime: runtime_word(w.runtime_kind()),
            runtime_instance: w.runtime_instance.clone(),
            url: w.url.clone(),
            labels: w.labels.clone().into_iter().collect(),
            parent_id: w.parent_id.clone(),
            active_tasks: w.active_tasks,
            max_concurrent_tasks: w.max_concurrent_tasks,
            error_rate: w.error_rate,
            capabilities,
            last_heartbeat_at: rfc3339(w.last_heartbeat_at.as_ref()),
            created_at: rfc3339(w.created_at.as_ref()),
        }
    }
}

const HEADER: &[&str] = &["NAME", "ID", "RUNTIME", "STATUS", "LOAD", "HEARTBEAT"];
const WIDE: &[&str] = &["URL", "LABELS", "CREATED"];

fn row(printer: &Printer, w: &rpb::Workspace) -> Vec<String> {
    let status = printer.status(&status_word(w.status()));
    let status = if w.status_reason.is_empty() { status } else { format!("{status} ({})", w.status_reason) };
    let mut row = vec![
        w.name.clone(),
        short(&w.id),
        format!("{}/{}", runtime_word(w.runtime_kind()), w.runtime_instance),
        status,
        format!("{}/{}", w.active_tasks, w.max_concurrent_tasks),
        age(w.last_heartbeat_at.as_ref()),
    ];
    if printer.wide() {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row.extend([w.url.clone(), labels.join(","), age(w.created_at.as_ref())]);
    }
    row
}

fn header(printer: &Printer) -> Vec<&'static str> {
    let mut header = HEADER.to_vec();
    if printer.wide() {
        header.extend(WIDE);
    }
    header
}

fn show(printer: &Printer, workspaces: &[rpb::Workspace]) -> Result<(), Failure> {
    if printer.structured() {
        let views: Vec<WorkspaceView> = workspaces.iter().map(WorkspaceView::from).collect();
        return printer.record(&views);
    }
    printer.table(&header(printer), workspaces.iter().map(|w| row(printer, w)).collect())
}

pub async fn run(mesh: &Mesh, printer: &Printer, command: WorkspaceCommand) -> Result<ExitCode, Failure> {
    match command {
        WorkspaceCommand::List(args) => list(mesh, printer, args).await?,
        WorkspaceCommand::Get { workspace } => {
            let found = get(mesh, &workspace_id(mesh, &workspace).await?).await?;
            if printer.structured() {
                printer.record(&WorkspaceView::from(&found))?;
            } else {
                show(printer, &[found])?;
            }
        }
        WorkspaceCommand::Create(args) => return create(mesh, printer, *args).await,
        WorkspaceCommand::Start { workspace } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = ppb::StartWorkspaceRequest { workspace_id, reason: "agentmesh start".into() };
            let started = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.start_workspace(request)).await?;
            done(printer, started.workspace, if started.changed { "started" } else { "already running" })?;
        }
        WorkspaceCommand::Stop(StopArgs { workspace, grace }) => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = ppb::StopWorkspaceRequest {
                workspace_id,
                reason: "agentmesh stop".into(),
                grace_period_seconds: grace.unwrap_or_default(),
            };
            let stopped = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.stop_workspace(request)).await?;
            done(printer, stopped.workspace, if stopped.already_gone { "already stopped" } else { "stopped" })?;
        }
        WorkspaceCommand::Restart(StopArgs { workspace, grace }) => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = ppb::RestartWorkspaceRequest {
                workspace_id,
                reason: "agentmesh restart".into(),
                grace_period_seconds: grace.unwrap_or_default(),
            };
            let restarted =
                ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.restart_workspace(request)).await?;
            done(printer, restarted.workspace, "restarted")?;
        }
        WorkspaceCommand::Hibernate { workspace } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = ppb::HibernateWorkspaceRequest { workspace_id, reason: "agentmesh hibernate".into() };
            let slept =
                ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.hibernate_workspace(request)).await?;
            done(printer, slept.workspace, if slept.changed { "hibernated" } else { "already hibernated" })?;
        }
        WorkspaceCommand::Wake { workspace } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request = ppb::WakeWorkspaceRequest { workspace_id, reason: "agentmesh wake".into() };
            let woken = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.wake_workspace(request)).await?;
            done(printer, woken.workspace, if woken.changed { "woken" } else { "already awake" })?;
        }
        WorkspaceCommand::Delete { workspace } => {
            let workspace_id = workspace_id(mesh, &workspace).await?;
            let request =
                ppb::DeleteWorkspaceRequest { workspace_id, reason: "agentmesh delete".into(), ..Default::default() };
            let deleted =
                ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.delete_workspace(request)).await?;
            let what = if deleted.workload_removed {
                "deleted".to_owned()
            } else {
                format!("deleted; its workload is left for the orphan sweeper: {}", deleted.cleanup_error)
            };
            done(printer, deleted.workspace, &what)?;
        }
        WorkspaceCommand::Logs(args) => logs(mesh, args).await?,
        WorkspaceCommand::Exec(args) => return exec(mesh, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(mesh: &Mesh, workspace_id: &str) -> Result<rpb::Workspace, Failure> {
    let request = rpb::GetWorkspaceRequest { workspace_id: workspace_id.to_owned() };
    let reply = ask(&mesh.resolved.context.registry, mesh.registry()?.get_workspace(request)).await?;
    reply.workspace.ok_or_else(|| Failure::NotFound(format!("no workspace {workspace_id}")))
}

/// What a lifecycle command did, in a line (or the workspace as a record).
fn done(printer: &Printer, workspace: Option<rpb::Workspace>, what: &str) -> Result<(), Failure> {
    let Some(workspace) = workspace else { return Ok(()) };
    if printer.structured() {
        return printer.record(&WorkspaceView::from(&workspace));
    }
    say!(
        "workspace {} ({}) {what}: {}",
        workspace.name,
        short(&workspace.id),
        printer.status(&status_word(workspace.status()))
    );
    Ok(())
}

async fn list(mesh: &Mesh, printer: &Printer, args: ListArgs) -> Result<(), Failure> {
    let mut statuses = Vec::new();
    for written in &args.status {
        let status = parse_word(written, "WORKSPACE_STATUS_", "status", rpb::WorkspaceStatus::from_str_name, STATUSES)?;
        statuses.push(status as i32);
    }
    if statuses.is_empty() {
        statuses = every_status(args.all);
    }
    let request = rpb::ListWorkspacesRequest {
        statuses: statuses.clone(),
        label_selector: args.label.clone().unwrap_or_default(),
        ..Default::default()
    };
    // The selector applied to changes as the registry applies it to listings.
    let selector = agentmesh_registry::validate::label_selector(&request.label_selector)
        .map_err(|e| Failure::Usage(format!("--label: {e}")))?;
    // Watching starts before listing, so that no change falls between them.
    let watch = if args.watch { Some(watch_all(mesh).await?) } else { None };
    let listed = list_workspaces(mesh, request).await?;
    let structured = printer.structured();
    let Some(mut events) = watch else { return show(printer, &listed) };
    // A watch prints records one per line from the start, so that a script
    // reads the listing and the changes alike.
    if structured {
        for workspace in &listed {
            printer.stream_record(&WorkspaceView::from(workspace))?;
        }
    } else {
        show(printer, &listed)?;
    }
    while let Some(reply) = events.next().await {
        let reply = reply.map_err(|status| unreachable_or(&mesh.resolved.context.registry, status))?;
        let Some(event) = reply.event else { continue };
        if event.r#type() == rpb::EventType::Heartbeat {
            continue;
        }
        let Ok(workspace) = get(mesh, &event.workspace_id).await else { continue };
        let label = |key: &str| workspace.labels.get(key).map(String::as_str);
        if !statuses.contains(&(workspace.status() as i32)) || !selector.iter().all(|term| term.admits(label)) {
            continue;
        }
        if structured {
            printer.stream_record(&WorkspaceView::from(&workspace))?;
        } else {
            let line: Vec<String> = row(printer, &workspace);
            say!("{}", line.join("   "));
        }
    }
    Ok(())
}

async fn watch_all(mesh: &Mesh) -> Result<tonic::Streaming<rpb::WatchEventsResponse>, Failure> {
    let request = rpb::WatchEventsRequest { after_cursor: None, ..Default::default() };
    ask(&mesh.resolved.context.registry, mesh.registry()?.watch_events(request)).await
}

/// A workspace spec as written in a file: the fields of `WorkspaceSpec`,
/// with enum values as people write them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    role: Option<String>,
    description: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    parent: Option<String>,
    runtime: Option<String>,
    runtime_instance: Option<String>,
    agent_runtime: Option<String>,
    image: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    tier: Option<String>,
    max_concurrent_tasks: Option<u32>,
    restart: Option<String>,
    hibernate_after_idle_seconds: Option<u32>,
}

fn pairs(what: &str, written: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    written
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(Failure::Usage(format!("{what} {pair:?}: expected KEY=value"))),
        })
        .collect()
}

async fn spec(mesh: &Mesh, args: &CreateArgs) -> Result<ppb::WorkspaceSpec, Failure> {
    let mut file = match &args.file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
            serde_yaml_ng::from_str::<SpecFile>(&text)
                .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?
        }
        None => SpecFile::default(),
    };
    file.labels.extend(pairs("--label", &args.labels)?);
    file.env.extend(pairs("--env", &args.env)?);
    if !args.args.is_empty() {
        file.args.clone_from(&args.args);
    }
    let pick = |flag: &Option<String>, file: Option<String>| flag.clone().or(file);
    let runtime = pick(&args.runtime, file.runtime).unwrap_or_else(|| "docker".to_owned());
    let runtime_kind = parse_word(
        &runtime,
        "RUNTIME_KIND_",
        "runtime",
        rpb::RuntimeKind::from_str_name,
        &["docker", "kubernetes", "process", "external"],
    )?;
    let restart = pick(&args.restart, file.restart).unwrap_or_else(|| "never".to_owned());
    let restart_policy = parse_word(
        &restart,
        "RESTART_POLICY_",
        "restart policy",
        ppb::RestartPolicy::from_str_name,
        &["never", "on-failure", "always"],
    )?;
    let parent_id = match pick(&args.parent, file.parent) {
        Some(parent) => Some(workspace_id(mesh, &parent).await?),
        None => None,
    };
    Ok(ppb::WorkspaceSpec {
        name: pick(&args.name, file.name).ok_or_else(|| Failure::Usage("a workspace needs a --name".into()))?,
        role: pick(&args.role, file.role).unwrap_or_default(),
        description: file.description.unwrap_or_default(),
        labels: file.labels.into_iter().collect(),
        parent_id,
        runtime_kind: runtime_kind as i32,
        runtime_instance: pick(&args.runtime_instance, file.runtime_instance).unwrap_or_default(),
        agent_runtime: file.agent_runtime.unwrap_or_default(),
        image: pick(&args.image, file.image).unwrap_or_default(),
        command: pick(&args.command, file.command).unwrap_or_default(),
        args: file.args,
        env: file.env.into_iter().collect(),
        tier: pick(&args.tier, file.tier).unwrap_or_default(),
        max_concurrent_tasks: args.max_tasks.or(file.max_concurrent_tasks).unwrap_or_default(),
        restart_policy: restart_policy as i32,
        hibernate_after_idle_seconds: file.hibernate_after_idle_seconds,
    })
}

async fn create(mesh: &Mesh, printer: &Printer, args: CreateArgs) -> Result<ExitCode, Failure> {
    let spec = spec(mesh, &args).await?;
    // Watching starts before the create, so no step of its way is missed.
    let events = if args.wait { Some(watch_all(mesh).await?) } else { None };
    let request = ppb::CreateWorkspaceRequest { spec: Some(spec) };
    let created = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.create_workspace(request)).await?;
    let workspace =
        created.workspace.ok_or_else(|| Failure::Failed("the provisioner answered without a workspace".into()))?;
    if !printer.structured() {
        say!(
            "workspace {} ({}) created: {}",
            workspace.name,
            workspace.id,
            printer.status(&status_word(workspace.status()))
        );
        if let Some(connection) = &created.connection {
            say!(
                "connect its agent (through the agent shim) with AGENTMESH_REGISTRY_ADDR={} AGENTMESH_WORKSPACE_ID={} \
                 AGENTMESH_TOKEN={}",
                connection.registry_address,
                connection.workspace_id,
                connection.token
            );
        }
    }
    let connection = created.connection.map(|c| Connection { registry_address: c.registry_address, token: c.token });
    let Some(events) = events else {
        if printer.structured() {
            printer.record(&Created { workspace: WorkspaceView::from(&workspace), connection })?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let reached = wait_until_settled(mesh, &workspace, events, Duration::from_secs(args.timeout)).await?;
    if printer.structured() {
        printer.record(&Created { workspace: WorkspaceView::from(&reached), connection })?;
    } else {
        say!("workspace {} is {}", reached.name, printer.status(&status_word(reached.status())));
    }
    // Degraded is up: its agent heartbeats, reporting errors.
    match reached.status() {
        rpb::WorkspaceStatus::Online | rpb::WorkspaceStatus::Degraded | rpb::WorkspaceStatus::AwaitingAgent => {
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Failure::Failed(format!(
            "workspace {} is {}: {}",
            reached.name,
            status_word(other),
            reached.status_reason
        ))),
    }
}

/// A created workspace, with what its external agent needs to connect.
#[derive(Serialize)]
struct Created {
    #[serde(flatten)]
    workspace: WorkspaceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<Connection>,
}

#[derive(Serialize)]
struct Connection {
    registry_address: String,
    token: String,
}

/// Follows a new workspace until it is online, awaits its external agent,
/// or ends (failed, stopped, policy-stopped, removed); shows its progress on
/// a terminal.
async fn wait_until_settled(
    mesh: &Mesh,
    workspace: &rpb::Workspace,
    mut events: tonic::Streaming<rpb::WatchEventsResponse>,
    timeout: Duration,
) -> Result<rpb::Workspace, Failure> {
    use rpb::WorkspaceStatus as S;
    let settled = |status: S| {
        matches!(
            status,
            S::Online | S::Degraded | S::AwaitingAgent | S::Failed | S::Stopped | S::PolicyStopped | S::Removed
        )
    };
    let progress = person_on_stderr().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let show = |status: S, reason: &str| {
        if let Some(bar) = &progress {
            bar.set_message(format!("{}: {} {reason}", workspace.name, status_word(status)));
        }
    };
    show(workspace.status(), &workspace.status_reason);
    let follow = async {
        let mut current = get(mesh, &workspace.id).await?;
        while !settled(current.status()) {
            let Some(reply) = events.next().await else { break };
            let reply = reply.map_err(|status| unreachable_or(&mesh.resolved.context.registry, status))?;
            if reply.event.is_some_and(|event| event.workspace_id == workspace.id) {
                current = get(mesh, &workspace.id).await?;
                show(current.status(), &current.status_reason);
            }
        }
        Ok::<_, Failure>(current)
    };
    let outcome = tokio::time::timeout(timeout, follow).await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    outcome.map_err(|_| Failure::Failed(format!("workspace {} did not settle within {timeout:?}", workspace.name)))?
}

async fn logs(mesh: &Mesh, args: LogsArgs) -> Result<(), Failure> {
    let workspace_id = workspace_id(mesh, &args.workspace).await?;
    let request = ppb::GetLogsRequest { workspace_id, tail_lines: args.tail, since: None, follow: args.follow };
    let mut stream = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.get_logs(request)).await?;
    while let Some(reply) = stream.next().await {
        let reply = reply.map_err(|status| unreachable_or(&mesh.resolved.context.provisioner, status))?;
        for line in reply.lines {
            let stream = word(line.stream().as_str_name(), "LOG_STREAM_");
            if stream == "stderr" {
                eprintln!("{}", line.text);
            } else {
                say!("{}", line.text);
            }
        }
    }
    Ok(())
}

async fn exec(mesh: &Mesh, args: ExecArgs) -> Result<ExitCode, Failure> {
    let workspace_id = workspace_id(mesh, &args.workspace).await?;
    let request = ppb::ExecRequest { workspace_id, command: args.command, timeout_seconds: 0 };
    let output = ask(&mesh.resolved.context.provisioner, mesh.provisioner()?.exec(request)).await?;
    std::io::stdout().write_all(output.stdout.as_bytes())?;
    std::io::stderr().write_all(output.stderr.as_bytes())?;
    Ok(ExitCode::from(u8::try_from(output.exit_code).unwrap_or(1)))
}
