//! Create→online latency of the echo agent through the provisioner, beside
//! the same image started with `docker run`, and kill→offline latency of the
//! provisioner's reconciliation.
//!
//! Every arm is timed the same way: from the moment this client asks (the
//! CreateWorkspace call, the `docker run` or `docker kill` process) until
//! the registry's event stream delivers the status here. The phases in
//! between come from two wall clocks on this host: the registry's event
//! times and the Docker engine's own event times.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agentmesh_proto::{
    provisioner::v1::{self as ppb, provisioner_service_client::ProvisionerServiceClient},
    registry::v1::{self as rpb, EventType, WorkspaceStatus, registry_service_client::RegistryServiceClient},
};
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::watch,
};
use tonic::{
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{
    Arm, ProvisionArgs,
    auth::{authorised, bearer},
};

/// The registry record owner named by workspaces the `docker run` arms use;
/// no provisioner manages it, so none touches their containers.
const DOCKER_RUN_INSTANCE: &str = "bench:docker-run";

/// Where the provisioner mounts a workspace's volume (its Docker runtime's `DATA_DIR`).
const DATA_DIR: &str = "/data";

/// Items keyed by workspace id or container name, appended by a reader task
/// and awaited by the measuring loop.
struct Tracker<T> {
    log: Mutex<Log<T>>,
    tick: watch::Sender<u64>,
}

struct Log<T> {
    by_key: HashMap<String, Vec<T>>,
    /// Why the source stopped, once it has.
    ended: Option<String>,
}

impl<T: Clone> Tracker<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self { log: Mutex::new(Log { by_key: HashMap::new(), ended: None }), tick: watch::Sender::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log<T>> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, key: String, item: T) {
        self.lock().by_key.entry(key).or_default().push(item);
        self.tick.send_modify(|n| *n += 1);
    }

    fn end(&self, why: String) {
        self.lock().ended.get_or_insert(why);
        self.tick.send_modify(|n| *n += 1);
    }

    fn find(&self, key: &str, wanted: impl Fn(&T) -> bool) -> Option<T> {
        self.lock().by_key.get(key).and_then(|items| items.iter().find(|item| wanted(item)).cloned())
    }

    /// The first item under `key` that `wanted` accepts, seen before or after the call.
    async fn wait(&self, key: &str, within: Duration, what: &str, wanted: impl Fn(&T) -> bool) -> anyhow::Result<T> {
        let mut ticks = self.tick.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            ticks.borrow_and_update();
            if let Some(found) = self.find(key, &wanted) {
                return Ok(found);
            }
            if let Some(why) = &self.lock().ended {
                bail!("{what}: {why}");
            }
            match tokio::time::timeout_at(deadline, ticks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("{what}: the event source is gone"),
                Err(_) => bail!("{what}: not seen within {within:?}"),
            }
        }
    }

    fn forget(&self, key: &str) {
        self.lock().by_key.remove(key);
    }
}

/// One registry event as the stream delivered it.
#[derive(Clone)]
struct Seen {
    kind: EventType,
    status: WorkspaceStatus,
    reason: String,
    /// When the registry wrote it.
    written: Option<SystemTime>,
    /// When it reached this client.
    arrived: Instant,
}

/// One Docker engine event.
#[derive(Clone)]
struct EngineEvent {
    action: String,
    at: SystemTime,
}

/// Follows every workspace's lifecycle events from now on (heartbeats left out).
async fn follow_registry(
    mut client: RegistryServiceClient<Channel>,
    operator: &AsciiMetadataValue,
) -> anyhow::Result<Arc<Tracker<Seen>>> {
    let types = [
        EventType::WorkspaceCreated,
        EventType::WorkspaceRegistered,
        EventType::StatusChanged,
        EventType::LivenessExpired,
        EventType::ProvisionFailed,
    ];
    let request =
        rpb::WatchEventsRequest { workspace_ids: vec![], types: types.map(i32::from).to_vec(), after_cursor: None };
    // Awaited here, not in the task: the registry fixes the stream's start
    // before answering, so nothing created after this returns is missed.
    let mut stream =
        client.watch_events(authorised(request, operator)).await.context("WatchEvents failed")?.into_inner();
    let tracker = Tracker::new();
    let events = tracker.clone();
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(reply)) => {
                    let arrived = Instant::now();
                    let Some(event) = reply.event else { continue };
                    let written = event.time.and_then(|t| {
                        let nanos = u32::try_from(t.nanos).ok()?;
                        Some(UNIX_EPOCH + Duration::new(u64::try_from(t.seconds).ok()?, nanos))
                    });
                    let seen = Seen {
                        kind: event.r#type(),
                        status: event.status(),
                        reason: event.reason.clone(),
                        written,
                        arrived,
                    };
                    events.push(event.workspace_id, seen);
                }
                Ok(None) => return events.end("the registry ended the event stream".to_owned()),
                Err(status) => return events.end(format!("the event stream failed: {status}")),
            }
        }
    });
    Ok(tracker)
}

/// Follows the engine's container and volume events, replayed from just
/// before the call so that none is lost while `docker events` connects.
fn follow_engine() -> anyhow::Result<(Arc<Tracker<EngineEvent>>, tokio::process::Child)> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs().saturating_sub(1);
    let mut child = Command::new("docker")
        .args(["events", "--format", "{{json .}}", "--since", &since.to_string()])
        .args(["--filter", "type=container", "--filter", "type=volume"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run `docker events`")?;
    let stdout = child.stdout.take().context("no stdout from `docker events`")?;
    let tracker = Tracker::new();
    let events = tracker.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((key, event)) = engine_event(&line) {
                events.push(key, event);
            }
        }
        events.end("`docker events` ended".to_owned());
    });
    Ok((tracker, child))
}

/// A line of `docker events --format '{{json .}}'`, keyed by container or volume name.
fn engine_event(line: &str) -> Option<(String, EngineEvent)> {
    let value: Value = serde_json::from_str(line).ok()?;
    let actor = value.get("Actor")?;
    let key = match value.get("Type")?.as_str()? {
        "container" => actor.get("Attributes")?.get("name")?.as_str()?,
        "volume" => actor.get("ID")?.as_str()?,
        _ => return None,
    };
    let nanos = value.get("timeNano")?.as_u64()?;
    let event =
        EngineEvent { action: value.get("Action")?.as_str()?.to_owned(), at: UNIX_EPOCH + Duration::from_nanos(nanos) };
    Some((key.to_owned(), event))
}

/// Runs the Docker CLI; `env` reaches the CLI only (`-e NAME` passes it on),
/// so tokens stay out of the command line.
async fn docker(args: &[String], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run the docker CLI")?;
    ensure!(
        output.status.success(),
        "docker {} failed: {}",
        args.first().map_or("", String::as_str),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A failure with the container's last output attached: the clean-up
/// after it removes the container, and with it the only trace of why.
async fn with_logs<T>(outcome: anyhow::Result<T>, container: &str) -> anyhow::Result<T> {
    let Err(error) = outcome else { return outcome };
    let output = Command::new("docker")
        .args(["logs", "--timestamps", "--tail", "40", container])
        .stdin(Stdio::null())
        .output()
        .await;
    let logs = match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        Err(e) => format!("(cannot run docker logs: {e})"),
    };
    let state = docker(&strings(&["inspect", "--format", "{{json .State}}", container]), &[]).await;
    let state = state.unwrap_or_else(|e| format!("(cannot inspect: {e:#})"));
    Err(anyhow::anyhow!("{error:#}\n    container {container}: {state}; last output:\n{}", logs.trim_end()))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `later - origin`, when the clocks put it after.
fn since(origin: SystemTime, later: Option<SystemTime>) -> Option<Duration> {
    later?.duration_since(origin).ok()
}

/// One measured create, with its phases as offsets from the ask.
#[derive(Default)]
struct CreateRun {
    /// Ask → ONLINE delivered here.
    total: Duration,
    /// Ask → CreateWorkspace (or `docker run`) returned.
    returned: Duration,
    /// Provisioner: ask → the registry wrote the record. Docker arms: the
    /// registry CreateWorkspace call made before the clock starts.
    record: Option<Duration>,
    volume_created: Option<Duration>,
    container_created: Option<Duration>,
    container_started: Option<Duration>,
    registered: Option<Duration>,
    online_written: Option<Duration>,
}

/// One measured kill.
#[derive(Default)]
struct KillRun {
    /// `docker kill` started → OFFLINE delivered here.
    total: Duration,
    /// `docker kill` started → it returned.
    returned: Duration,
    died: Option<Duration>,
    offline_written: Option<Duration>,
    reason: String,
}

struct Bench {
    args: ProvisionArgs,
    operator: AsciiMetadataValue,
    registry: RegistryServiceClient<Channel>,
    provisioner: ProvisionerServiceClient<Channel>,
    workload_registry: String,
    mesh_id: String,
    /// `docker run` options mirroring what the provisioner's Docker runtime
    /// sets for the default tier.
    provisioner_flags: Vec<String>,
    events: Arc<Tracker<Seen>>,
    engine: Arc<Tracker<EngineEvent>>,
    within: Duration,
}

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    ensure!(args.runs > 0, "--runs must be positive");
    ensure!(!args.arms.is_empty(), "--arms names no arm");
    let token = fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read {}", args.token_file.display()))?
        .trim()
        .to_owned();
    let operator = bearer(&token)?;
    let registry_channel = Endpoint::from_shared(args.registry.clone())
        .context("invalid --registry")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.registry))?;
    let provisioner_channel = Endpoint::from_shared(args.provisioner.clone())
        .context("invalid --provisioner")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.provisioner))?;
    let registry = RegistryServiceClient::new(registry_channel);
    let mut provisioner = ProvisionerServiceClient::new(provisioner_channel);

    let runtimes = provisioner
        .list_runtimes(authorised(ppb::ListRuntimesRequest::default(), &operator))
        .await
        .context("ListRuntimes failed")?
        .into_inner();
    ensure!(
        runtimes.runtimes.iter().any(|r| r.kind() == rpb::RuntimeKind::Docker && r.is_default),
        "the provisioner has no default Docker runtime instance"
    );
    let policy =
        provisioner.get_policy(authorised(ppb::GetPolicyRequest {}, &operator)).await.context("GetPolicy failed")?;
    let provisioner_flags = provisioner_flags(&policy.into_inner());

    let events = follow_registry(registry.clone(), &operator).await?;
    let (engine, _engine_child) = follow_engine()?;
    let bench = Bench {
        workload_registry: args.workload_registry.clone().unwrap_or_else(|| args.registry.clone()),
        within: Duration::from_secs(args.timeout_secs),
        args,
        operator,
        registry,
        provisioner,
        mesh_id: runtimes.mesh_id,
        provisioner_flags,
        events,
        engine,
    };
    bench.measure().await
}

/// `docker run` options for what the provisioner's Docker runtime adds to
/// a bare container: an init process, the default tier's limits, a volume.
fn provisioner_flags(policy: &ppb::GetPolicyResponse) -> Vec<String> {
    let mut flags = strings(&["--init", "--restart", "no", "--stop-timeout", "10"]);
    flags.extend(["--mount".to_owned(), format!("type=volume,target={DATA_DIR}")]);
    if let Some(tier) = policy.tiers.iter().find(|t| t.name == policy.default_tier) {
        if tier.cpu_millis > 0 {
            flags.extend(["--cpus".to_owned(), format!("{}", f64::from(tier.cpu_millis) / 1000.0)]);
        }
        if tier.memory_bytes > 0 {
            let bytes = tier.memory_bytes.to_string();
            flags.extend(["--memory".to_owned(), bytes.clone(), "--memory-swap".to_owned(), bytes]);
        }
        if tier.pids_limit > 0 {
            flags.extend(["--pids-limit".to_owned(), tier.pids_limit.to_string()]);
        }
    }
    flags
}

impl Bench {
    async fn measure(&self) -> anyhow::Result<()> {
        let args = &self.args;
        let mut creates: HashMap<Arm, Vec<CreateRun>> = HashMap::new();
        let mut failures: HashMap<Arm, Vec<String>> = HashMap::new();
        let mut kills: Vec<KillRun> = Vec::new();
        let mut kill_failures: Vec<String> = Vec::new();
        let mut raw = Vec::new();
        let rounds = args.warmup + args.runs;
        eprintln!(
            "{rounds} rounds ({} warm-up) of {}, one after another",
            args.warmup,
            args.arms.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
        );
        for round in 0..rounds {
            let measured = round >= args.warmup;
            for &arm in &args.arms {
                let name = format!("bench-{}-{}{round}", args.run_id, arm.short());
                let outcome = match arm {
                    Arm::Provisioner => self.provisioner_round(&name, !args.no_kill).await,
                    Arm::Docker | Arm::DockerFlags => self.docker_round(&name, arm).await.map(|c| (c, None)),
                };
                tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
                if !measured {
                    if let Err(e) = outcome {
                        eprintln!("warm-up {} failed: {e:#}", arm.name());
                    }
                    continue;
                }
                match outcome {
                    Ok((create, kill)) => {
                        raw.push(create_json(arm, round, &create));
                        creates.entry(arm).or_default().push(create);
                        match kill {
                            Some(Ok(kill)) => {
                                raw.push(kill_json(round, &kill));
                                kills.push(kill);
                            }
                            Some(Err(e)) => {
                                eprintln!("kill in round {round} failed: {e:#}");
                                kill_failures.push(format!("{e:#}"));
                            }
                            None => {}
                        }
                    }
                    Err(e) => {
                        eprintln!("{} round {round} failed: {e:#}", arm.name());
                        failures.entry(arm).or_default().push(format!("{e:#}"));
                    }
                }
            }
            if measured {
                eprintln!("round {}/{} done", round + 1 - args.warmup, args.runs);
            }
        }
        if let Some(path) = &args.runs_file {
            write_lines(path, &raw)?;
        }
        self.report(&creates, &failures, &kills, &kill_failures);
        Ok(())
    }

    /// CreateWorkspace → ONLINE, then (optionally) `docker kill` → OFFLINE,
    /// then DeleteWorkspace.
    async fn provisioner_round(
        &self,
        name: &str,
        kill: bool,
    ) -> anyhow::Result<(CreateRun, Option<anyhow::Result<KillRun>>)> {
        let spec = ppb::WorkspaceSpec {
            name: name.to_owned(),
            role: "provisioner benchmark".to_owned(),
            runtime_kind: rpb::RuntimeKind::Docker.into(),
            image: self.args.image.clone(),
            // Nothing may restart a killed workload behind the measurement.
            restart_policy: ppb::RestartPolicy::Never.into(),
            ..Default::default()
        };
        let request = authorised(ppb::CreateWorkspaceRequest { spec: Some(spec) }, &self.operator);
        let asked_at = SystemTime::now();
        let asked = Instant::now();
        let reply = self.provisioner.clone().create_workspace(request).await;
        let returned = asked.elapsed();
        let reply = reply.context("CreateWorkspace failed")?.into_inner();
        let id = reply.workspace.context("CreateWorkspace returned no workspace")?.id;
        let container = format!("am-{}-{id}", self.mesh_id);
        let measured = self.until_online(&id, asked, asked_at, returned, None, &container).await;
        let measured = with_logs(measured, &container).await;
        let kill = match (&measured, kill) {
            (Ok(_), true) => Some(self.kill(&id, &container).await),
            _ => None,
        };
        let request = ppb::DeleteWorkspaceRequest {
            workspace_id: id.clone(),
            reason: "benchmark done".to_owned(),
            grace_period_seconds: 1,
        };
        match self.provisioner.clone().delete_workspace(authorised(request, &self.operator)).await {
            Ok(reply) if !reply.get_ref().workload_removed => {
                eprintln!("warning: {id}: cleanup pending: {}", reply.get_ref().cleanup_error);
            }
            Ok(_) => {}
            Err(status) => eprintln!("warning: DeleteWorkspace {id} failed: {status}"),
        }
        self.events.forget(&id);
        self.engine.forget(&container);
        Ok((measured?, kill))
    }

    /// `docker run` of the same image with what the agent needs to register
    /// → ONLINE, then `docker rm` and a REMOVED record.
    async fn docker_round(&self, name: &str, arm: Arm) -> anyhow::Result<CreateRun> {
        let request = rpb::CreateWorkspaceRequest {
            name: name.to_owned(),
            role: "provisioner benchmark baseline".to_owned(),
            runtime_kind: rpb::RuntimeKind::Docker.into(),
            runtime_instance: DOCKER_RUN_INSTANCE.to_owned(),
            issue_token: true,
            ..Default::default()
        };
        let started = Instant::now();
        let reply = self.registry.clone().create_workspace(authorised(request, &self.operator)).await;
        let record = started.elapsed();
        let reply = reply.context("registry CreateWorkspace failed")?.into_inner();
        let id = reply.workspace.context("CreateWorkspace returned no workspace")?.id;

        // What the provisioner injects, so the shim registers the same way.
        let env = [
            ("AGENTMESH_WORKSPACE_ID", id.as_str()),
            ("AGENTMESH_REGISTRY_ADDR", self.workload_registry.as_str()),
            ("AGENTMESH_TOKEN", reply.token.as_str()),
        ];
        let mut run = strings(&["run", "-d", "--name", name, "--network", &self.args.network]);
        run.extend(["--label".to_owned(), format!("{}={}", self.args.bench_label, self.args.run_id)]);
        for (variable, _) in env {
            run.extend(["-e".to_owned(), variable.to_owned()]);
        }
        if arm == Arm::DockerFlags {
            run.extend(self.provisioner_flags.iter().cloned());
        }
        run.push(self.args.image.clone());
        let asked_at = SystemTime::now();
        let asked = Instant::now();
        let launched = docker(&run, &env).await;
        let returned = asked.elapsed();
        let measured = match launched {
            Ok(_) => with_logs(self.until_online(&id, asked, asked_at, returned, Some(record), name).await, name).await,
            Err(e) => Err(e),
        };
        if let Err(e) = docker(&strings(&["rm", "-f", "-v", name]), &[]).await {
            eprintln!("warning: {e:#}");
        }
        let remove = rpb::TransitionWorkspaceRequest {
            workspace_id: id.clone(),
            status: WorkspaceStatus::Removed.into(),
            reason: "benchmark done".to_owned(),
            ..Default::default()
        };
        if let Err(status) = self.registry.clone().transition_workspace(authorised(remove, &self.operator)).await {
            eprintln!("warning: cannot mark {id} removed: {status}");
        }
        self.events.forget(&id);
        self.engine.forget(name);
        measured
    }

    async fn until_online(
        &self,
        id: &str,
        asked: Instant,
        asked_at: SystemTime,
        returned: Duration,
        record: Option<Duration>,
        container: &str,
    ) -> anyhow::Result<CreateRun> {
        let settled = |s: &Seen| {
            matches!(
                s.status,
                WorkspaceStatus::Online
                    | WorkspaceStatus::Failed
                    | WorkspaceStatus::Offline
                    | WorkspaceStatus::Stopped
                    | WorkspaceStatus::Removed
            )
        };
        let online = self.events.wait(id, self.within, &format!("{id} ONLINE"), settled).await?;
        ensure!(
            online.status == WorkspaceStatus::Online,
            "{id} went {:?} instead of ONLINE: {}",
            online.status,
            online.reason
        );
        let at = |key: &str, action: &str| self.engine.find(key, |e| e.action == action).map(|e| e.at);
        let event = |kind: EventType| self.events.find(id, |s| s.kind == kind).and_then(|s| s.written);
        // The provisioner's volume; `docker run` arms have none by that name.
        let volume_name = format!("{container}-data");
        Ok(CreateRun {
            total: online.arrived - asked,
            returned,
            record: record.or_else(|| since(asked_at, event(EventType::WorkspaceCreated))),
            volume_created: since(asked_at, at(&volume_name, "create")),
            container_created: since(asked_at, at(container, "create")),
            container_started: since(asked_at, at(container, "start")),
            registered: since(asked_at, event(EventType::WorkspaceRegistered)),
            online_written: since(asked_at, online.written),
        })
    }

    /// `docker kill`, outside the mesh → OFFLINE.
    async fn kill(&self, id: &str, container: &str) -> anyhow::Result<KillRun> {
        let asked_at = SystemTime::now();
        let asked = Instant::now();
        docker(&strings(&["kill", container]), &[]).await?;
        let returned = asked.elapsed();
        let ended = |s: &Seen| {
            s.arrived > asked
                && matches!(s.status, WorkspaceStatus::Offline | WorkspaceStatus::Failed | WorkspaceStatus::Stopped)
        };
        let offline = self.events.wait(id, self.within, &format!("{id} OFFLINE"), ended).await?;
        ensure!(
            offline.status == WorkspaceStatus::Offline,
            "{id} went {:?} instead of OFFLINE: {}",
            offline.status,
            offline.reason
        );
        let died = self.engine.find(container, |e| e.action == "die").map(|e| e.at);
        Ok(KillRun {
            total: offline.arrived - asked,
            returned,
            died: since(asked_at, died),
            offline_written: since(asked_at, offline.written),
            reason: offline.reason,
        })
    }

    fn report(
        &self,
        creates: &HashMap<Arm, Vec<CreateRun>>,
        failures: &HashMap<Arm, Vec<String>>,
        kills: &[KillRun],
        kill_failures: &[String],
    ) {
        let label = if self.args.label.is_empty() { "provision" } else { self.args.label.as_str() };
        let mut summary = serde_json::Map::new();
        summary.insert("label".to_owned(), json!(label));
        summary.insert("runs".to_owned(), json!(self.args.runs));
        let baseline = creates.get(&Arm::Docker).map(|runs| Stats::of(runs.iter().map(|r| r.total)));
        for &arm in &self.args.arms {
            let runs = creates.get(&arm).map(Vec::as_slice).unwrap_or_default();
            let failed = failures.get(&arm).map(Vec::as_slice).unwrap_or_default();
            let total = Stats::of(runs.iter().map(|r| r.total));
            let phase = |f: fn(&CreateRun) -> Option<Duration>| median(runs.iter().filter_map(f));
            let phases = [
                ("record written", phase(|r| r.record)),
                ("volume created", phase(|r| r.volume_created)),
                ("container created", phase(|r| r.container_created)),
                ("container started", phase(|r| r.container_started)),
                ("call returned", phase(|r| Some(r.returned))),
                ("agent registered", phase(|r| r.registered)),
                ("ONLINE written", phase(|r| r.online_written)),
            ];
            let mut line = format!(
                "{label} {}: create→online {} ({} ok, {} failed)",
                arm.name(),
                total.human(),
                runs.len(),
                failed.len()
            );
            let mut ratio = serde_json::Value::Null;
            if let Some(base) = baseline.as_ref().filter(|_| arm != Arm::Docker) {
                let [p50, p90, max] = total.ratio(base);
                let _ = write!(line, "; vs docker run: p50 {p50:.2}×, p90 {p90:.2}×, max {max:.2}×");
                ratio = json!({"p50": round2(p50), "p90": round2(p90), "max": round2(max)});
            }
            line.push_str("\n    medians from the ask:");
            for (name, value) in &phases {
                if let Some(value) = value {
                    let _ = write!(line, " {name} {:.0} ms,", ms(*value));
                }
            }
            line.pop();
            if arm != Arm::Provisioner {
                line.push_str(" (record written: the registry call made before the clock starts)");
            }
            println!("{line}");
            if let Some(first) = failed.first() {
                println!("    first failure: {first}");
            }
            let phases_json: serde_json::Map<String, Value> =
                phases.iter().map(|(name, value)| (name.replace(' ', "_") + "_ms", json!(value.map(ms)))).collect();
            summary.insert(
                arm.name().to_owned(),
                json!({"create_to_online": total.json(), "failed": failed.len(), "vs_docker_run": ratio,
                       "median_phases": phases_json}),
            );
        }
        if !self.args.no_kill && self.args.arms.contains(&Arm::Provisioner) {
            let total = Stats::of(kills.iter().map(|k| k.total));
            let returned = median(kills.iter().map(|k| k.returned));
            let died = median(kills.iter().filter_map(|k| k.died));
            let written = median(kills.iter().filter_map(|k| k.offline_written));
            println!(
                "{label} reconciliation: docker kill→offline {} ({} ok, {} failed)\n    medians from the kill: \
                 container died {}, docker kill returned {}, OFFLINE written {}; reason {:?}",
                total.human(),
                kills.len(),
                kill_failures.len(),
                shown(died),
                shown(returned),
                shown(written),
                kills.first().map(|k| k.reason.as_str()).unwrap_or_default(),
            );
            if let Some(first) = kill_failures.first() {
                println!("    first failure: {first}");
            }
            summary.insert(
                "reconciliation".to_owned(),
                json!({"kill_to_offline": total.json(), "failed": kill_failures.len(), "median_phases": {
                    "container_died_ms": died.map(ms), "docker_kill_returned_ms": returned.map(ms),
                    "offline_written_ms": written.map(ms)}}),
            );
        }
        println!("{}", Value::Object(summary));
    }
}

fn shown(value: Option<Duration>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{:.0} ms", ms(v)))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// p50, p90 and max by nearest rank.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn of(values: impl Iterator<Item = Duration>) -> Self {
        let mut sorted: Vec<Duration> = values.collect();
        sorted.sort_unstable();
        Self { sorted }
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.sorted, q)
    }

    fn three(&self) -> [Option<Duration>; 3] {
        [0.5, 0.9, 1.0].map(|q| self.quantile(q))
    }

    fn human(&self) -> String {
        let [p50, p90, max] = self.three().map(shown);
        format!("p50 {p50}, p90 {p90}, max {max}")
    }

    fn json(&self) -> Value {
        let [p50, p90, max] = self.three().map(|v| v.map(ms));
        json!({"n": self.sorted.len(), "p50_ms": p50, "p90_ms": p90, "max_ms": max})
    }

    /// This arm's p50, p90 and max over `base`'s.
    fn ratio(&self, base: &Stats) -> [f64; 3] {
        let mine = self.three();
        let theirs = base.three();
        std::array::from_fn(|i| match (mine[i], theirs[i]) {
            (Some(a), Some(b)) if !b.is_zero() => a.as_secs_f64() / b.as_secs_f64(),
            _ => f64::NAN,
        })
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn median(values: impl Iterator<Item = Duration>) -> Option<Duration> {
    Stats::of(values).quantile(0.5)
}

fn create_json(arm: Arm, round: usize, run: &CreateRun) -> Value {
    let opt = |d: Option<Duration>| d.map(ms);
    json!({
        "kind": "create", "arm": arm.name(), "round": round,
        "total_ms": ms(run.total), "returned_ms": ms(run.returned), "record_ms": opt(run.record),
        "volume_created_ms": opt(run.volume_created), "container_created_ms": opt(run.container_created),
        "container_started_ms": opt(run.container_started), "registered_ms": opt(run.registered),
        "online_written_ms": opt(run.online_written),
    })
}

fn kill_json(round: usize, run: &KillRun) -> Value {
    json!({
        "kind": "kill", "arm": "provisioner", "round": round, "total_ms": ms(run.total),
        "returned_ms": ms(run.returned), "died_ms": run.died.map(ms), "offline_written_ms": run.offline_written.map(ms),
        "reason": run.reason,
    })
}

fn write_lines(path: &Path, lines: &[Value]) -> anyhow::Result<()> {
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_events_are_keyed_by_container_or_volume_name() {
        let container = r#"{"status":"start","id":"abc","Type":"container","Action":"start",
            "Actor":{"ID":"abc","Attributes":{"image":"x","name":"am-m-1"}},"time":1,"timeNano":1500000000}"#;
        let (key, event) = engine_event(&container.replace('\n', "")).unwrap();
        assert_eq!((key.as_str(), event.action.as_str()), ("am-m-1", "start"));
        assert_eq!(event.at, UNIX_EPOCH + Duration::from_millis(1500));
        let volume = r#"{"Type":"volume","Action":"create","Actor":{"ID":"am-m-1-data","Attributes":{}},"timeNano":7}"#;
        assert_eq!(engine_event(volume).unwrap().0, "am-m-1-data");
        assert!(engine_event("not json").is_none());
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(Duration::from_millis(10)));
        assert_eq!(quantile(&sorted, 0.9), Some(Duration::from_millis(18)));
        assert_eq!(quantile(&sorted, 1.0), Some(Duration::from_millis(20)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn a_waiter_sees_items_pushed_before_and_after_it_waits() {
        let tracker: Arc<Tracker<u32>> = Tracker::new();
        tracker.push("a".to_owned(), 1);
        assert_eq!(tracker.wait("a", Duration::from_secs(1), "a", |v| *v == 1).await.unwrap(), 1);
        let pusher = tracker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pusher.push("a".to_owned(), 2);
        });
        assert_eq!(tracker.wait("a", Duration::from_secs(1), "a", |v| *v == 2).await.unwrap(), 2);
        assert!(tracker.wait("b", Duration::from_millis(30), "b", |_| true).await.is_err());
    }
}
