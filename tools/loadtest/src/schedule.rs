//! The scheduler's fire lag and memory. Loads N schedules spread over W
//! online workspaces, all but DUE on a timetable that does not come round
//! during the run. Then, round after round, creates DUE more that all fall
//! due in one second T, reads back from the run history when each run was
//! fired (its send began) and finished, and deletes them again.
//!
//! The nearest limit, measured in the same round: DUE `SendMessage` calls
//! made by this client through the gateway's gRPC binding (the path the
//! scheduler's runs take), all released at one instant with as many in
//! flight as the scheduler allows itself (`max_in_flight`). That is the work
//! a burst cannot avoid, with no timetable, store or claim around it.
//!
//! The scheduler's resident memory (VmRSS) is read before and after the
//! load and after every burst.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::Write,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agentmesh_proto::{
    a2a::v1::{self as a2a, Part, Role, SendMessageRequest, a2a_service_client::A2aServiceClient, part::Content},
    registry::v1::{self as registry, registry_service_client::RegistryServiceClient},
    scheduler::v1::{
        CreateScheduleRequest, DeleteScheduleRequest, ListRunsRequest, OverlapPolicy, RunOutcome, ScheduleRun,
        scheduler_service_client::SchedulerServiceClient,
    },
};
use anyhow::{Context, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use prost_types::Timestamp;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinHandle};
use tonic::{
    Code,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{
    ScheduleLagArgs,
    a2a::cpu::{self, Usage, Watched},
    auth::{authorised, bearer},
    report::quantile_ms,
};

/// A timetable that does not come round during a run: once a year.
const DORMANT_CRON: &str = "0 0 1 1 *";

/// How long a new workspace may stay unknown to the scheduler (it learns
/// of workspaces from the registry) before CreateSchedule's NOT_FOUND counts.
const WORKSPACE_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The outcomes a run ends with; everything but IN_PROGRESS.
const FINAL_OUTCOMES: [RunOutcome; 6] = [
    RunOutcome::Delivered,
    RunOutcome::Queued,
    RunOutcome::SkippedNative,
    RunOutcome::SkippedBusy,
    RunOutcome::Failed,
    RunOutcome::EmptyReply,
];

pub async fn run(args: ScheduleLagArgs) -> anyhow::Result<()> {
    ensure!(args.due > 0, "--due must be positive");
    ensure!(args.schedules >= args.due, "--schedules counts the due ones too, so it must be at least --due");
    ensure!(args.workspaces > 0, "--workspaces must be positive");
    ensure!(args.rounds > 0, "--rounds must be positive");
    ensure!(args.concurrency > 0 && args.burst_concurrency > 0, "concurrencies must be positive");
    ensure!(args.poll_ms > 0, "--poll-ms must be positive");
    let operator_token =
        fs::read_to_string(&args.token_file).with_context(|| format!("cannot read {}", args.token_file.display()))?;
    let operator = bearer(operator_token.trim())?;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut watched = vec![Watched { name: "scheduler".to_owned(), pids: vec![args.scheduler_pid] }];
    watched.extend(args.processes.iter().cloned());
    let mut results_file = args.results_file.as_deref().map(open_results).transpose()?;

    let workspaces = bring_online(&args, &operator, &tag).await?;
    let _online = keep_online(&args.registry, &workspaces, Duration::from_secs(args.heartbeat_secs.max(1))).await?;
    let scheduler = Scheduler { client: SchedulerServiceClient::new(connect(&args.scheduler).await?), operator };
    let gateway = Gateway { client: A2aServiceClient::new(connect(&args.gateway_grpc).await?), tag: tag.clone() };
    // The gateway's first message to a workspace looks the workspace up in
    // the registry; neither side of the comparison should pay for that.
    let ids: Vec<&str> = workspaces.iter().map(|w| w.id.as_str()).collect();
    gateway.send_all(&ids, "warm", &scheduler.operator, args.concurrency).await?;

    let memory_before = resident_bytes(args.scheduler_pid)?;
    let dormant = args.schedules - args.due;
    let requests = (0..dormant).map(|i| CreateScheduleRequest {
        workspace_id: ids[i % ids.len()].to_owned(),
        name: format!("dormant-{tag}-{i}"),
        cron_expression: DORMANT_CRON.to_owned(),
        message_text: format!("dormant schedule {i}"),
        ..Default::default()
    });
    let load = scheduler.create_all(requests, args.concurrency).await?;
    let memory_loaded = resident_bytes(args.scheduler_pid)?;
    let memory = Memory { before: memory_before, loaded: memory_loaded, schedules: dormant };
    println!(
        "loaded {dormant} schedules over {} workspaces in {:.1} s ({:.0}/s), CreateSchedule p50 {:.2} ms, p99 {:.2} ms \
         ({} in flight); scheduler RSS {} before, {} after: {}",
        ids.len(),
        load.elapsed.as_secs_f64(),
        load.rate(),
        quantile_ms(&load.latencies_us, 0.5),
        quantile_ms(&load.latencies_us, 0.99),
        args.concurrency,
        mib(memory.before),
        mib(memory.loaded),
        memory.describe(),
    );
    if let Some(file) = &mut results_file {
        writeln!(file, "{}", load_json(&args, &load, &memory))?;
    }

    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let result = run_round(round, &args, &scheduler, &gateway, &ids, &tag, &watched).await?;
        println!("{}", describe_round(&result, args.due));
        if let Some(file) = &mut results_file {
            writeln!(file, "{}", round_json(&args, &result))?;
        }
        rounds.push(result);
    }
    summarize(&args, &load, &memory, &rounds);
    Ok(())
}

async fn connect(address: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(address.to_owned()).with_context(|| format!("invalid address {address}"))?;
    endpoint.tcp_nodelay(true).connect().await.with_context(|| format!("cannot connect to {address}"))
}

fn open_results(path: &Path) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An online workspace and its agent's credential.
struct OnlineWorkspace {
    id: String,
    token: AsciiMetadataValue,
}

/// Creates external workspaces for the echo agent, registers its URL with
/// each workspace's own token and heartbeats each ONLINE, as the agent's
/// shim would.
async fn bring_online(
    args: &ScheduleLagArgs,
    operator: &AsciiMetadataValue,
    tag: &str,
) -> anyhow::Result<Vec<OnlineWorkspace>> {
    let registry = RegistryServiceClient::new(connect(&args.registry).await?);
    let card = json!({"name": "scheduler benchmark", "description": "echo agent under benchmark",
        "version": "1.0.0", "capabilities": {}, "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"], "skills": []})
    .to_string();
    let started = Instant::now();
    let workspaces: Vec<OnlineWorkspace> = stream::iter(0..args.workspaces)
        .map(|i| {
            let mut registry = registry.clone();
            let create = registry::CreateWorkspaceRequest {
                name: format!("bench-schedule-{tag}-{i}"),
                role: "scheduler benchmark target".to_owned(),
                runtime_kind: registry::RuntimeKind::External.into(),
                runtime_instance: "external".to_owned(),
                max_concurrent_tasks: args.max_concurrent_tasks,
                issue_token: true,
                ..Default::default()
            };
            let (operator, card) = (operator.clone(), card.clone());
            async move {
                let created =
                    registry.create_workspace(authorised(create, &operator)).await.context("CreateWorkspace")?;
                let created = created.into_inner();
                let id = created.workspace.context("CreateWorkspace returned no workspace")?.id;
                let token = bearer(&created.token)?;
                let register = registry::RegisterRequest {
                    workspace_id: id.clone(),
                    url: args.agent.clone(),
                    agent_card_json: card,
                    ..Default::default()
                };
                registry.register(authorised(register, &token)).await.context("Register")?;
                let heartbeat = registry::HeartbeatRequest { workspace_id: id.clone(), ..Default::default() };
                let status = registry.heartbeat(authorised(heartbeat, &token)).await.context("Heartbeat")?;
                let status = status.into_inner().status();
                ensure!(status == registry::WorkspaceStatus::Online, "workspace {id} is {status:?} after a heartbeat");
                Ok(OnlineWorkspace { id, token })
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    eprintln!(
        "{} workspaces online in {:.1} s (max_concurrent_tasks {})",
        workspaces.len(),
        started.elapsed().as_secs_f64(),
        args.max_concurrent_tasks
    );
    Ok(workspaces)
}

/// Stops the workspaces' heartbeats when dropped.
struct KeepOnline(JoinHandle<()>);

impl Drop for KeepOnline {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Heartbeats every workspace every `every`, so that the registry's
/// liveness sweep leaves them online for the whole run.
async fn keep_online(
    registry_address: &str,
    workspaces: &[OnlineWorkspace],
    every: Duration,
) -> anyhow::Result<KeepOnline> {
    let mut registry = RegistryServiceClient::new(connect(registry_address).await?);
    let beats: Vec<(String, AsciiMetadataValue)> = workspaces.iter().map(|w| (w.id.clone(), w.token.clone())).collect();
    Ok(KeepOnline(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for (id, token) in &beats {
                let heartbeat = registry::HeartbeatRequest { workspace_id: id.clone(), ..Default::default() };
                if let Err(status) = registry.heartbeat(authorised(heartbeat, token)).await {
                    eprintln!("warning: a keep-alive heartbeat of {id} failed: {status}");
                }
            }
        }
    })))
}

/// The scheduler's API, as the operator.
struct Scheduler {
    client: SchedulerServiceClient<Channel>,
    operator: AsciiMetadataValue,
}

/// Schedules created in one go.
struct Created {
    ids: Vec<String>,
    elapsed: Duration,
    /// Sorted, in microseconds.
    latencies_us: Vec<u32>,
}

impl Created {
    fn rate(&self) -> f64 {
        self.ids.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Scheduler {
    async fn create(&self, request: CreateScheduleRequest) -> anyhow::Result<String> {
        let deadline = Instant::now() + WORKSPACE_VISIBLE_WITHIN;
        loop {
            let call = self.client.clone().create_schedule(authorised(request.clone(), &self.operator)).await;
            match call {
                Ok(reply) => return Ok(reply.into_inner().schedule.context("CreateSchedule returned no schedule")?.id),
                Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) if status.code() == Code::ResourceExhausted => bail!(
                    "CreateSchedule {}: {} (raise the scheduler's max_schedules_per_workspace, or --workspaces)",
                    request.name,
                    status.message()
                ),
                Err(status) => bail!("CreateSchedule {}: {:?}: {}", request.name, status.code(), status.message()),
            }
        }
    }

    async fn create_all(
        &self,
        requests: impl Iterator<Item = CreateScheduleRequest>,
        in_flight: usize,
    ) -> anyhow::Result<Created> {
        let started = Instant::now();
        let made: Vec<(String, u32)> = stream::iter(requests)
            .map(|request| async move {
                let sent = Instant::now();
                let id = self.create(request).await?;
                Ok::<_, anyhow::Error>((id, micros_since(sent)))
            })
            .buffer_unordered(in_flight)
            .enumerate()
            .map(|(i, made)| {
                if (i + 1) % 10_000 == 0 {
                    eprintln!("created {} schedules in {:.1} s", i + 1, started.elapsed().as_secs_f64());
                }
                made
            })
            .try_collect()
            .await?;
        let elapsed = started.elapsed();
        let mut latencies_us: Vec<u32> = made.iter().map(|(_, us)| *us).collect();
        latencies_us.sort_unstable();
        let ids = made.into_iter().map(|(id, _)| id).collect();
        Ok(Created { ids, elapsed, latencies_us })
    }

    async fn delete_all(&self, ids: &[String], in_flight: usize) -> anyhow::Result<()> {
        stream::iter(ids)
            .map(|id| async move {
                let request = DeleteScheduleRequest { schedule_id: id.clone() };
                self.client.clone().delete_schedule(authorised(request, &self.operator)).await.context("DeleteSchedule")
            })
            .buffer_unordered(in_flight)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Every run scheduled in the second starting at `second` (unix) that
    /// has an outcome, page by page.
    async fn finished_runs(&self, second: i64) -> anyhow::Result<Vec<ScheduleRun>> {
        let mut runs = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListRunsRequest {
                outcomes: FINAL_OUTCOMES.iter().map(|&o| o.into()).collect(),
                scheduled_after: Some(Timestamp { seconds: second, nanos: 0 }),
                scheduled_before: Some(Timestamp { seconds: second + 1, nanos: 0 }),
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = self.client.clone().list_runs(authorised(request, &self.operator)).await.context("ListRuns")?;
            let page = page.into_inner();
            runs.extend(page.runs);
            if page.next_page_token.is_empty() {
                return Ok(runs);
            }
            page_token = page.next_page_token;
        }
    }
}

/// The gateway's A2A gRPC binding, for the direct burst.
struct Gateway {
    client: A2aServiceClient<Channel>,
    tag: String,
}

/// The direct burst: every send released at one instant.
struct DirectBurst {
    /// From the instant of release to each reply, sorted, in microseconds.
    completion_us: Vec<u32>,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
    usage: Usage,
}

impl Gateway {
    /// One `SendMessage` to each workspace in turn, `in_flight` at a time,
    /// all of which must be answered.
    async fn send_all(
        &self,
        workspace_ids: &[&str],
        label: &str,
        operator: &AsciiMetadataValue,
        in_flight: usize,
    ) -> anyhow::Result<()> {
        stream::iter(workspace_ids.iter().enumerate())
            .map(|(i, workspace_id)| async move {
                let request = self.message(workspace_id, &format!("{label}-{i}"));
                let reply = self.client.clone().send_message(authorised(request, operator)).await;
                reply.with_context(|| format!("SendMessage to {workspace_id} through the gateway"))
            })
            .buffer_unordered(in_flight)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    fn message(&self, workspace_id: &str, id_suffix: &str) -> SendMessageRequest {
        SendMessageRequest {
            tenant: workspace_id.to_owned(),
            message: Some(a2a::Message {
                message_id: format!("bench-{}-{id_suffix}", self.tag),
                role: Role::User.into(),
                parts: vec![Part {
                    content: Some(Content::Text(format!("direct burst {id_suffix}"))),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `count` sends to the workspaces round-robin, each in a task of its
    /// own waiting for one of `in_flight` slots, as the scheduler fires runs.
    async fn burst(
        &self,
        workspace_ids: &[&str],
        count: usize,
        in_flight: usize,
        round: usize,
        operator: &AsciiMetadataValue,
        watched: &[Watched],
    ) -> anyhow::Result<DirectBurst> {
        let requests: Vec<SendMessageRequest> = (0..count)
            .map(|i| self.message(workspace_ids[i % workspace_ids.len()], &format!("r{round}-{i}")))
            .collect();
        let slots = Arc::new(Semaphore::new(in_flight));
        let before = cpu::snapshot(watched);
        let released = Instant::now();
        let sends: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let (slots, mut client, operator) = (slots.clone(), self.client.clone(), operator.clone());
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await.expect("the slots are never closed");
                    let reply = client.send_message(authorised(request, &operator)).await;
                    (reply.map(|_| ()), micros_since(released))
                })
            })
            .collect();
        let mut completion_us = Vec::with_capacity(count);
        let mut errors = BTreeMap::new();
        let mut first_error = None;
        for send in sends {
            match send.await? {
                (Ok(()), us) => completion_us.push(us),
                (Err(status), _) => {
                    *errors.entry(format!("{:?}", status.code())).or_default() += 1;
                    first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
        let usage = cpu::usage(watched, &before, &cpu::snapshot(watched));
        completion_us.sort_unstable();
        Ok(DirectBurst { completion_us, errors, first_error, usage })
    }
}

/// The scheduler's side of one burst, from the run history.
#[derive(Debug, PartialEq)]
struct Fired {
    /// scheduled_at → fired_at, sorted, in microseconds.
    fire_lag_us: Vec<u32>,
    /// scheduled_at → finished_at: when the burst's work was done.
    finish_lag_us: Vec<u32>,
    /// fired_at → finished_at: the send itself.
    dispatch_us: Vec<u32>,
    outcomes: BTreeMap<String, usize>,
    first_error: Option<String>,
}

/// The lags of the runs of `schedule_ids`, once every one of them has an
/// outcome; `None` while some have not. Runs of other schedules, or a
/// schedule run twice in the second, are a broken run history.
fn lags_of(runs: &[ScheduleRun], schedule_ids: &HashSet<&str>) -> anyhow::Result<Option<Fired>> {
    let mut seen = HashSet::with_capacity(runs.len());
    for run in runs {
        ensure!(schedule_ids.contains(run.schedule_id.as_str()), "run {} is of an unexpected schedule", run.id);
        ensure!(seen.insert(run.schedule_id.as_str()), "schedule {} ran twice in one second", run.schedule_id);
    }
    if seen.len() < schedule_ids.len() {
        return Ok(None);
    }
    let mut result = Fired {
        fire_lag_us: Vec::with_capacity(runs.len()),
        finish_lag_us: Vec::with_capacity(runs.len()),
        dispatch_us: Vec::with_capacity(runs.len()),
        outcomes: BTreeMap::new(),
        first_error: None,
    };
    for run in runs {
        let at = |time: &Option<Timestamp>, what: &str| {
            time.as_ref().map(timestamp_micros).with_context(|| format!("run {} has no {what}", run.id))
        };
        let (scheduled, fired, finished) = (
            at(&run.scheduled_at, "scheduled_at")?,
            at(&run.fired_at, "fired_at")?,
            at(&run.finished_at, "finished_at")?,
        );
        result.fire_lag_us.push(micros_between(scheduled, fired));
        result.finish_lag_us.push(micros_between(scheduled, finished));
        result.dispatch_us.push(micros_between(fired, finished));
        *result
            .outcomes
            .entry(run.outcome().as_str_name().trim_start_matches("RUN_OUTCOME_").to_owned())
            .or_default() += 1;
        if !run.error.is_empty() {
            result.first_error.get_or_insert_with(|| run.error.clone());
        }
    }
    result.fire_lag_us.sort_unstable();
    result.finish_lag_us.sort_unstable();
    result.dispatch_us.sort_unstable();
    Ok(Some(result))
}

struct Round {
    round: usize,
    /// The second (unix) the round's schedules fell due.
    due_second: i64,
    created: Created,
    fired: Fired,
    /// From the due second until every run was seen finished.
    usage: Usage,
    direct: DirectBurst,
    resident_after: u64,
}

impl Round {
    /// The scheduler's p99 lag over the direct burst's p99 completion.
    fn fire_vs_direct(&self) -> f64 {
        quantile_ms(&self.fired.fire_lag_us, 0.99) / quantile_ms(&self.direct.completion_us, 0.99).max(1e-3)
    }

    fn finish_vs_direct(&self) -> f64 {
        quantile_ms(&self.fired.finish_lag_us, 0.99) / quantile_ms(&self.direct.completion_us, 0.99).max(1e-3)
    }
}

async fn run_round(
    round: usize,
    args: &ScheduleLagArgs,
    scheduler: &Scheduler,
    gateway: &Gateway,
    workspace_ids: &[&str],
    tag: &str,
    watched: &[Watched],
) -> anyhow::Result<Round> {
    let due_second = unix_now().as_secs() as i64 + 1 + args.lead_secs as i64;
    let cron = cron_at(due_second);
    let requests = (0..args.due).map(|i| CreateScheduleRequest {
        workspace_id: workspace_ids[i % workspace_ids.len()].to_owned(),
        name: format!("due-{tag}-r{round}-{i}"),
        cron_expression: cron.clone(),
        message_text: format!("due round {round} schedule {i}"),
        overlap_policy: OverlapPolicy::Queue.into(),
        ..Default::default()
    });
    let created = scheduler.create_all(requests, args.concurrency).await?;
    let margin = Duration::from_secs(due_second as u64).saturating_sub(unix_now());
    ensure!(
        margin >= Duration::from_secs(1),
        "creating the due schedules took {:.1} s, too close to their second; raise --lead-secs",
        created.elapsed.as_secs_f64()
    );
    eprintln!(
        "round {round}: {} schedules due at {cron:?} UTC (in {:.1} s), created at {:.0}/s",
        args.due,
        margin.as_secs_f64(),
        created.rate()
    );
    tokio::time::sleep(margin).await;
    let before = cpu::snapshot(watched);
    let schedule_ids: HashSet<&str> = created.ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let fired = loop {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        let runs = scheduler.finished_runs(due_second).await?;
        if let Some(fired) = lags_of(&runs, &schedule_ids)? {
            break fired;
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} runs had an outcome {} s after their second",
            runs.len(),
            args.due,
            args.timeout_secs
        );
    };
    let usage = cpu::usage(watched, &before, &cpu::snapshot(watched));
    let resident_after = resident_bytes(args.scheduler_pid)?;
    scheduler.delete_all(&created.ids, args.concurrency).await?;

    let direct =
        gateway.burst(workspace_ids, args.due, args.burst_concurrency, round, &scheduler.operator, watched).await?;
    Ok(Round { round, due_second, created, fired, usage, direct, resident_after })
}

/// A 6-field expression (seconds first) that matches `second` (unix) once a
/// day, read in UTC.
fn cron_at(second: i64) -> String {
    let of_day = second.rem_euclid(86_400);
    format!("{} {} {} * * *", of_day % 60, of_day / 60 % 60, of_day / 3600)
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970")
}

fn timestamp_micros(time: &Timestamp) -> i64 {
    time.seconds * 1_000_000 + i64::from(time.nanos) / 1000
}

/// Microseconds from `from` to `to` (both unix microseconds); a clock that
/// went backwards counts as no time.
fn micros_between(from: i64, to: i64) -> u32 {
    u32::try_from((to - from).max(0)).unwrap_or(u32::MAX)
}

fn micros_since(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// A process's resident set (VmRSS), in bytes.
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}; is {pid} running?"))?;
    vm_rss(&status).with_context(|| format!("{path} has no VmRSS line"))
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The scheduler's resident memory around the load.
struct Memory {
    before: u64,
    loaded: u64,
    schedules: usize,
}

impl Memory {
    /// What the loaded schedules added, scaled to 100,000 of them.
    fn per_100k(&self) -> f64 {
        let added = self.loaded as f64 - self.before as f64;
        added * 100_000.0 / self.schedules.max(1) as f64
    }

    fn describe(&self) -> String {
        let added = self.loaded as f64 - self.before as f64;
        format!(
            "{:+.1} MiB for {} schedules, {:.0} bytes each, {:.1} MiB per 100,000",
            added / 1_048_576.0,
            self.schedules,
            added / self.schedules.max(1) as f64,
            self.per_100k() / 1_048_576.0
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// p50 / p90 / p99 / max of sorted microseconds, in ms.
fn spread_ms(sorted: &[u32]) -> [f64; 4] {
    [0.5, 0.9, 0.99, 1.0].map(|q| quantile_ms(sorted, q))
}

fn describe_round(r: &Round, due: usize) -> String {
    let [lag50, lag90, lag99, lag_max] = spread_ms(&r.fired.fire_lag_us);
    let [direct50, _, direct99, direct_max] = spread_ms(&r.direct.completion_us);
    let direct_errors: usize = r.direct.errors.values().sum();
    let direct_errors = match &r.direct.first_error {
        Some(first) => format!("{direct_errors} errors {:?}, first: {first}", r.direct.errors),
        None => "0 errors".to_owned(),
    };
    let run_error = r.fired.first_error.as_deref().map(|e| format!(", first run error: {e}")).unwrap_or_default();
    format!(
        "round {}: {due} runs due at {}: fire lag p50 {lag50:.1} ms, p90 {lag90:.1} ms, p99 {lag99:.1} ms, max \
         {lag_max:.1} ms; finished p99 {:.1} ms; dispatch→finish p50 {:.1} ms, p99 {:.1} ms; outcomes {:?}{run_error} \
         (CPU: {}); scheduler RSS {}. Direct burst: p50 {direct50:.1} ms, p99 {direct99:.1} ms, max {direct_max:.1} \
         ms, {direct_errors} (CPU: {}). Fire p99 / direct p99 {:.2}×, finished p99 / direct p99 {:.2}×",
        r.round,
        cron_at(r.due_second),
        quantile_ms(&r.fired.finish_lag_us, 0.99),
        quantile_ms(&r.fired.dispatch_us, 0.5),
        quantile_ms(&r.fired.dispatch_us, 0.99),
        r.fired.outcomes,
        r.usage.describe(),
        mib(r.resident_after),
        r.direct.usage.describe(),
        r.fire_vs_direct(),
        r.finish_vs_direct(),
    )
}

fn load_json(args: &ScheduleLagArgs, load: &Created, memory: &Memory) -> serde_json::Value {
    json!({
        "part": "schedule-load",
        "label": args.label,
        "schedules": load.ids.len(),
        "workspaces": args.workspaces,
        "concurrency": args.concurrency,
        "load_secs": round3(load.elapsed.as_secs_f64()),
        "load_per_sec": load.rate().round(),
        "create_p50_ms": round3(quantile_ms(&load.latencies_us, 0.5)),
        "create_p99_ms": round3(quantile_ms(&load.latencies_us, 0.99)),
        "rss_before_bytes": memory.before,
        "rss_loaded_bytes": memory.loaded,
        "rss_bytes_per_100k": memory.per_100k().round(),
    })
}

fn round_json(args: &ScheduleLagArgs, r: &Round) -> serde_json::Value {
    let ms = |sorted: &[u32]| {
        let [p50, p90, p99, max] = spread_ms(sorted).map(round3);
        json!({"p50": p50, "p90": p90, "p99": p99, "max": max})
    };
    json!({
        "part": "schedule-lag",
        "label": args.label,
        "round": r.round,
        "schedules": args.schedules,
        "due": args.due,
        "due_second": r.due_second,
        "due_created_per_sec": r.created.rate().round(),
        "fire_lag_ms": ms(&r.fired.fire_lag_us),
        "finish_lag_ms": ms(&r.fired.finish_lag_us),
        "dispatch_ms": ms(&r.fired.dispatch_us),
        "outcomes": r.fired.outcomes,
        "first_run_error": r.fired.first_error,
        "burst_cpu_cores": r.usage.json(),
        "burst_cpu_secs": round3(r.usage.seconds),
        "rss_after_burst_bytes": r.resident_after,
        "direct_burst_concurrency": args.burst_concurrency,
        "direct_completion_ms": ms(&r.direct.completion_us),
        "direct_errors": r.direct.errors,
        "direct_cpu_cores": r.direct.usage.json(),
        "direct_cpu_secs": round3(r.direct.usage.seconds),
        "fire_p99_vs_direct_p99": round3(r.fire_vs_direct()),
        "finish_p99_vs_direct_p99": round3(r.finish_vs_direct()),
    })
}

fn summarize(args: &ScheduleLagArgs, load: &Created, memory: &Memory, rounds: &[Round]) {
    println!();
    println!(
        "== summary: {} schedules over {} workspaces, {} due in one second per round; ms from that second \
         (direct burst: from its release)",
        args.schedules, args.workspaces, args.due
    );
    println!(
        "| round | fire lag p50 | p90 | p99 | max | finished p99 | dispatch→finish p50 / p99 | direct burst p50 | \
         p99 | fire p99 / direct p99 | finished p99 / direct p99 | outcomes | scheduler RSS after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in rounds {
        let [lag50, lag90, lag99, lag_max] = spread_ms(&r.fired.fire_lag_us);
        let outcomes: Vec<String> = r.fired.outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
        println!(
            "| {} | {lag50:.1} | {lag90:.1} | **{lag99:.1}** | {lag_max:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} | \
             **{:.2}×** | {:.2}× | {} | {} |",
            r.round,
            quantile_ms(&r.fired.finish_lag_us, 0.99),
            quantile_ms(&r.fired.dispatch_us, 0.5),
            quantile_ms(&r.fired.dispatch_us, 0.99),
            quantile_ms(&r.direct.completion_us, 0.5),
            quantile_ms(&r.direct.completion_us, 0.99),
            r.fire_vs_direct(),
            r.finish_vs_direct(),
            outcomes.join(", "),
            mib(r.resident_after),
        );
    }
    println!(
        "load: {} schedules in {:.1} s ({:.0}/s, {} in flight); scheduler RSS {} before, {} after ({})",
        load.ids.len(),
        load.elapsed.as_secs_f64(),
        load.rate(),
        args.concurrency,
        mib(memory.before),
        mib(memory.loaded),
        memory.describe()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_expression_names_the_second_in_utc() {
        // 2023-11-14T22:13:20Z.
        assert_eq!(cron_at(1_700_000_000), "20 13 22 * * *");
        assert_eq!(cron_at(1_700_000_000 - 22 * 3600 - 13 * 60 - 20), "0 0 0 * * *");
        assert_eq!(cron_at(1_700_000_000 + 86_399 - 80_000), "59 59 23 * * *");
    }

    #[test]
    fn resident_memory_is_read_from_vm_rss() {
        let status = "Name:\tagentmesh-sched\nVmPeak:\t  900000 kB\nVmRSS:\t   51234 kB\nRssAnon:\t 40000 kB\n";
        assert_eq!(vm_rss(status), Some(51234 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn memory_per_100k_scales_what_the_load_added() {
        let memory = Memory { before: 10 << 20, loaded: 30 << 20, schedules: 50_000 };
        assert_eq!(memory.per_100k(), f64::from(40 << 20));
    }

    fn run(id: &str, schedule: &str, scheduled: i64, fired_ms: i64, finished_ms: Option<i64>) -> ScheduleRun {
        let at = |ms: i64| Timestamp { seconds: scheduled + ms / 1000, nanos: (ms % 1000) as i32 * 1_000_000 };
        ScheduleRun {
            id: id.to_owned(),
            schedule_id: schedule.to_owned(),
            scheduled_at: Some(Timestamp { seconds: scheduled, nanos: 0 }),
            fired_at: Some(at(fired_ms)),
            finished_at: finished_ms.map(at),
            outcome: RunOutcome::Delivered.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lags_are_measured_from_the_due_second_once_every_run_is_in() {
        let ids: HashSet<&str> = ["a", "b"].into();
        let first = [run("1", "a", 100, 40, Some(45))];
        assert_eq!(lags_of(&first, &ids).unwrap(), None);
        let both = [run("1", "a", 100, 40, Some(45)), run("2", "b", 100, 1250, Some(1260))];
        let result = lags_of(&both, &ids).unwrap().unwrap();
        assert_eq!(result.fire_lag_us, [40_000, 1_250_000]);
        assert_eq!(result.finish_lag_us, [45_000, 1_260_000]);
        assert_eq!(result.dispatch_us, [5_000, 10_000]);
        assert_eq!(result.outcomes, BTreeMap::from([("DELIVERED".to_owned(), 2)]));
    }

    #[test]
    fn a_run_of_another_schedule_or_a_second_run_is_an_error() {
        let ids: HashSet<&str> = ["a", "b"].into();
        assert!(lags_of(&[run("1", "c", 100, 40, Some(45))], &ids).is_err());
        let twice = [run("1", "a", 100, 40, Some(45)), run("2", "a", 100, 50, Some(55))];
        assert!(lags_of(&twice, &ids).is_err());
        let unfinished = [run("1", "a", 100, 40, Some(45)), run("2", "b", 100, 50, None)];
        assert!(lags_of(&unfinished, &ids).is_err());
    }
}
