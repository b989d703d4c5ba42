//! The process runtime (ARCH-4): each workspace's agent runs as a child
//! process of the provisioner on its own host, the default where no
//! container engine exists.
//!
//! The kernel and the state directory, not the provisioner's memory, say
//! what runs, so that agents outlive a provisioner crash and a restarted
//! provisioner recognises them:
//! - every child carries [`MESH_ID_ENV`], [`RUNTIME_INSTANCE_ENV`] and
//!   [`WORKSPACE_ID_ENV`] in its environment, where /proc/<pid>/environ shows
//!   them; a process without this instance's marks is never listed or
//!   signalled (PRV-9), and neither is one that later exec'd with a scrubbed
//!   environment;
//! - `<state_dir>/<workspace id>/workload.json` names the current run by pid
//!   and kernel start time, since pids get recycled, and holds its exit code
//!   once the provisioner saw it exit;
//! - a child starts in its own process group, so a Ctrl-C to the
//!   provisioner's terminal does not reach it and a stop reaches everything
//!   it started.
//!
//! A run ends when its main process ends, as a container's does: whatever it
//! left running in the background is killed then.
//!
//! The child's environment is exactly the spec's, plus the marks, plus PATH
//! and HOME from the provisioner where the spec sets neither: without PATH a
//! bare command name is not found, and many tools refuse to run without
//! HOME. Nothing else of the provisioner's environment (credentials, database
//! URLs) reaches the agent.
//!
//! Resource limits are not applied: that takes cgroups, which a provisioner
//! running as an ordinary user cannot count on.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::Display,
    io,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::{StreamExt, future, stream::BoxStream};
use nix::{
    errno::Errno,
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use tokio::{
    process::{Child, Command},
    sync::{OwnedMutexGuard, broadcast, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, interval, sleep, timeout},
};
use tokio_stream::wrappers::BroadcastStream;
use tracing::{info, warn};

use super::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, LogStream, ManagedWorkload, Probe, Runtime, RuntimeError,
    RuntimeKind, StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec,
};

mod logs;
mod procfs;

/// Environment variable marking a process with the mesh id (see [`super::labels::MESH_ID`]).
pub const MESH_ID_ENV: &str = "AGENTMESH_MESH_ID";
/// Environment variable marking a process with the runtime instance's name.
pub const RUNTIME_INSTANCE_ENV: &str = "AGENTMESH_RUNTIME_INSTANCE";
/// Environment variable naming the workspace a process runs.
pub const WORKSPACE_ID_ENV: &str = "AGENTMESH_WORKSPACE_ID";

const RECORD_FILE: &str = "workload.json";
const DATA_DIR: &str = "data";
const STDOUT_LOG: &str = "stdout.log";
const STDERR_LOG: &str = "stderr.log";

/// How often a stop looks whether the processes have exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long SIGKILL may take before a stop reports failure (a process in
/// uninterruptible sleep, e.g. on a dead NFS mount, survives it for a while).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a start waits for the kernel to show a new process's marks.
const EXEC_WAIT: Duration = Duration::from_secs(1);
/// How long a probe waits for a reaper that is about to record an exit code.
const REAPER_WAIT: Duration = Duration::from_secs(1);
/// How often runs that are not our children (started before a restart) are
/// checked: they cannot be waited for.
const ADOPTED_POLL: Duration = Duration::from_secs(1);

/// Runs workloads as local processes; see the module docs.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl ProcessRuntime {
    /// A runtime keeping each workspace's files under `<state_dir>/<workspace id>/`:
    /// `data/` (the working directory, kept across starts), `stdout.log`,
    /// `stderr.log` and `workload.json`. The directory belongs to this one
    /// runtime instance; it is created on first start.
    pub fn new(identity: Identity, state_dir: PathBuf) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                identity,
                state_dir,
                events,
                locks: Mutex::default(),
                reapers: Mutex::default(),
                poller: Mutex::default(),
            }),
        }
    }
}

struct Inner {
    identity: Identity,
    state_dir: PathBuf,
    events: broadcast::Sender<WorkloadEvent>,
    /// One lock per workspace around changing its run (start, stop, purge,
    /// recording an exit), so two starts cannot spawn two processes.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Runs this provisioner spawned and waits for, by workspace: the pid and
    /// whether the exit is recorded yet.
    reapers: Mutex<HashMap<String, (i32, watch::Receiver<bool>)>>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

/// workload.json: the workspace's current (or last) run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    /// Whose run it is, so a listing never reports another instance's.
    mesh_id: String,
    instance: String,
    pid: i32,
    /// The kernel's start time of `pid`; see [`procfs::Stat::starttime`].
    starttime: u64,
    started_at: SystemTime,
    exit_code: Option<i32>,
    /// Set, with `exit_code`, when the provisioner saw the process exit.
    finished_at: Option<SystemTime>,
}

impl RunRecord {
    fn running_info(&self) -> WorkloadInfo {
        WorkloadInfo {
            workload_id: self.pid.to_string(),
            detail: format!("running (pid {})", self.pid),
            exit_code: None,
            started_at: Some(self.started_at),
            finished_at: None,
        }
    }

    fn exited_info(&self) -> WorkloadInfo {
        let detail = match self.exit_code {
            Some(code) => format!("exited ({code})"),
            None => "exited (exit code unknown)".to_owned(),
        };
        WorkloadInfo {
            workload_id: self.pid.to_string(),
            detail,
            exit_code: self.exit_code,
            started_at: Some(self.started_at),
            finished_at: self.finished_at,
        }
    }

    /// The process is gone and nobody saw how it ended: it died while no
    /// provisioner that could wait for it was running.
    fn unobserved_info(&self) -> WorkloadInfo {
        WorkloadInfo {
            workload_id: self.pid.to_string(),
            detail: "exited while the provisioner was not watching".to_owned(),
            exit_code: None,
            started_at: Some(self.started_at),
            finished_at: None,
        }
    }
}

/// A live process carrying this instance's marks.
#[derive(Debug, Clone, Copy)]
struct Member {
    pid: i32,
    stat: procfs::Stat,
}

impl Member {
    fn running(&self) -> bool {
        match procfs::stat(self.pid) {
            Ok(stat) => stat.starttime == self.stat.starttime && !stat.exited(),
            // Unsure is running: a stop must not claim success it has not seen.
            Err(err) => !procfs::gone(&err),
        }
    }
}

/// What a workspace's listing or adoption takes as its main process: the
/// leader of its process group if that is among them.
fn leader(members: &[Member]) -> Option<Member> {
    members.iter().find(|m| m.pid == m.stat.pgrp).or_else(|| members.iter().min_by_key(|m| m.pid)).copied()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Group(i32),
    Process(i32),
}

fn signal_members(members: &[Member], signal: Signal) {
    let pids: HashSet<i32> = members.iter().map(|m| m.pid).collect();
    // A group signal also reaches children forked since the scan, but only a
    // group led by one of ours is wholly ours: others get one signal each.
    let targets: BTreeSet<Target> = members
        .iter()
        .map(|m| if pids.contains(&m.stat.pgrp) { Target::Group(m.stat.pgrp) } else { Target::Process(m.pid) })
        .collect();
    for target in targets {
        let result = match target {
            Target::Group(pgrp) => killpg(Pid::from_raw(pgrp), signal),
            Target::Process(pid) => kill(Pid::from_raw(pid), signal),
        };
        // ESRCH: it exited meanwhile, which is the point.
        if let Err(err) = result
            && err != Errno::ESRCH
        {
            warn!(?target, signal = signal.as_str(), %err, "cannot signal process workload");
        }
    }
}

/// Waits up to `within` for the members to exit; returns those still running.
async fn wait_gone(mut members: Vec<Member>, within: Duration) -> Vec<Member> {
    let deadline = Instant::now() + within;
    loop {
        members.retain(Member::running);
        if members.is_empty() || Instant::now() >= deadline {
            return members;
        }
        sleep(STOP_POLL).await;
    }
}

/// Waits (briefly) until the new program's environment shows in /proc.
/// The kernel lets the spawning parent go on before it publishes the
/// environment of the program being exec'd, and until then /proc shows none,
/// so a scan right after a start would not see the run as ours.
async fn await_exec(workspace_id: &str, pid: i32) {
    let deadline = Instant::now() + EXEC_WAIT;
    loop {
        let published = match procfs::stat(pid) {
            Ok(stat) if !stat.exited() => {
                procfs::marks(pid).map_or(true, |marks| marks.workspace_id.as_deref() == Some(workspace_id))
            }
            // Gone already: nothing to wait for.
            _ => true,
        };
        if published || Instant::now() >= deadline {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
}

/// Whether the run with this pid and start time is alive and still ours.
fn run_alive(identity: &Identity, workspace_id: &str, pid: i32, starttime: u64) -> io::Result<bool> {
    let stat = match procfs::stat(pid) {
        Ok(stat) => stat,
        Err(err) if procfs::gone(&err) => return Ok(false),
        Err(err) => return Err(err),
    };
    if stat.starttime != starttime || stat.exited() {
        return Ok(false);
    }
    match procfs::marks(pid) {
        Ok(marks) => Ok(workspace_of(identity, &marks) == Some(workspace_id)),
        Err(err) if procfs::gone(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The workspace a process belongs to, if its marks are this instance's.
fn workspace_of<'a>(identity: &Identity, marks: &'a procfs::Marks) -> Option<&'a str> {
    let ours = marks.mesh_id.as_deref() == Some(identity.mesh_id.as_str())
        && marks.instance.as_deref() == Some(identity.instance.as_str());
    marks.workspace_id.as_deref().filter(|id| ours && is_workspace_id(id))
}

/// Every live process on the host with this instance's marks. Processes
/// that vanish mid-scan or belong to other users are skipped.
fn scan(identity: &Identity) -> io::Result<Vec<(String, Member)>> {
    let own = i32::try_from(std::process::id()).ok();
    let mut found = Vec::new();
    for pid in procfs::pids()? {
        if Some(pid) == own {
            continue;
        }
        let Ok(marks) = procfs::marks(pid) else { continue };
        let Some(workspace_id) = workspace_of(identity, &marks) else { continue };
        let Ok(stat) = procfs::stat(pid) else { continue };
        if !stat.exited() {
            found.push((workspace_id.to_owned(), Member { pid, stat }));
        }
    }
    Ok(found)
}

/// Only the canonical form, so that one workspace has one directory and no
/// id can reach outside the state directory.
fn is_workspace_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id)
}

fn check_workspace_id(id: &str) -> Result<(), RuntimeError> {
    if is_workspace_id(id) {
        Ok(())
    } else {
        Err(RuntimeError::Workload(format!("{id:?} is not a workspace id (a lower-case hyphenated UUID)")))
    }
}

fn unavailable(context: impl Display, err: io::Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("{context}: {err}"))
}

/// Opens a log file for the child to append to: kept from run to run.
async fn open_log(path: PathBuf) -> Result<Stdio, RuntimeError> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|err| unavailable(format_args!("opening {}", path.display()), err))?;
    Ok(Stdio::from(file.into_std().await))
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn workspace_dir(&self, workspace_id: &str) -> PathBuf {
        self.state_dir.join(workspace_id)
    }

    async fn exclusive(&self, workspace_id: &str) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(guard(&self.locks).entry(workspace_id.to_owned()).or_default());
        lock.lock_owned().await
    }

    /// The workspace's run record. A record that is not ours or not readable
    /// as one is an InvalidData error.
    async fn load(&self, workspace_id: &str) -> io::Result<Option<RunRecord>> {
        let path = self.workspace_dir(workspace_id).join(RECORD_FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let record: RunRecord = serde_json::from_slice(&bytes)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {err}", path.display())))?;
        if record.mesh_id != self.identity.mesh_id || record.instance != self.identity.instance {
            let message = format!(
                "{} belongs to runtime instance {:?} of mesh {:?}",
                path.display(),
                record.instance,
                record.mesh_id
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        Ok(Some(record))
    }

    async fn save(&self, workspace_id: &str, record: &RunRecord) -> io::Result<()> {
        let dir = self.workspace_dir(workspace_id);
        let temp = dir.join(format!("{RECORD_FILE}.tmp"));
        // Written aside and renamed, so a crash never leaves half a record.
        tokio::fs::write(&temp, serde_json::to_vec_pretty(record)?).await?;
        tokio::fs::rename(&temp, dir.join(RECORD_FILE)).await
    }

    async fn clear(&self, workspace_id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.workspace_dir(workspace_id).join(RECORD_FILE)).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every workspace with a record of ours; others' and unreadable records are skipped.
    async fn records(&self) -> io::Result<Vec<(String, RunRecord)>> {
        let mut entries = match tokio::fs::read_dir(&self.state_dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut records = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Some(workspace_id) = entry.file_name().to_str().filter(|name| is_workspace_id(name)).map(str::to_owned)
            else {
                continue;
            };
            match self.load(&workspace_id).await {
                Ok(Some(record)) => records.push((workspace_id, record)),
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {}
                Err(err) => return Err(err),
            }
        }
        Ok(records)
    }

    fn new_record(&self, pid: i32, starttime: u64, started_at: SystemTime) -> RunRecord {
        RunRecord {
            mesh_id: self.identity.mesh_id.clone(),
            instance: self.identity.instance.clone(),
            pid,
            starttime,
            started_at,
            exit_code: None,
            finished_at: None,
        }
    }

    fn alive(&self, workspace_id: &str, record: &RunRecord) -> io::Result<bool> {
        run_alive(&self.identity, workspace_id, record.pid, record.starttime)
    }

    async fn scan(&self) -> io::Result<Vec<(String, Member)>> {
        let identity = self.identity.clone();
        tokio::task::spawn_blocking(move || scan(&identity)).await.map_err(io::Error::other)?
    }

    /// The workspace's live processes, found by their marks.
    async fn members(&self, workspace_id: &str) -> io::Result<Vec<Member>> {
        Ok(self.scan().await?.into_iter().filter(|(id, _)| id == workspace_id).map(|(_, member)| member).collect())
    }

    fn reaper(&self, workspace_id: &str, pid: i32) -> Option<watch::Receiver<bool>> {
        guard(&self.reapers)
            .get(workspace_id)
            .filter(|(reaped_pid, _)| *reaped_pid == pid)
            .map(|(_, done)| done.clone())
    }

    fn child_env(&self, spec: &WorkloadSpec) -> BTreeMap<String, String> {
        let mut env = spec.env.clone();
        for key in ["PATH", "HOME"] {
            if !env.contains_key(key)
                && let Ok(value) = std::env::var(key)
            {
                env.insert(key.to_owned(), value);
            }
        }
        env.insert(MESH_ID_ENV.to_owned(), self.identity.mesh_id.clone());
        env.insert(RUNTIME_INSTANCE_ENV.to_owned(), self.identity.instance.clone());
        env.insert(WORKSPACE_ID_ENV.to_owned(), spec.workspace_id.clone());
        env
    }

    /// Spawns a new run; the caller holds the workspace's lock.
    async fn spawn(self: &Arc<Self>, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        let workspace_id = spec.workspace_id.as_str();
        let dir = self.workspace_dir(workspace_id);
        let data = dir.join(DATA_DIR);
        tokio::fs::create_dir_all(&data)
            .await
            .map_err(|err| unavailable(format_args!("creating {}", data.display()), err))?;
        let stdout = open_log(dir.join(STDOUT_LOG)).await?;
        let stderr = open_log(dir.join(STDERR_LOG)).await?;
        let child = Command::new(&spec.command)
            .args(&spec.args)
            .env_clear()
            .envs(self.child_env(spec))
            .current_dir(&data)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|err| {
                RuntimeError::Workload(format!("cannot start {:?} for workspace {workspace_id}: {err}", spec.command))
            })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| RuntimeError::Unavailable("the spawned process has no pid".to_owned()))?;
        await_exec(workspace_id, pid).await;
        let recorded = async {
            let record = self.new_record(pid, procfs::stat(pid)?.starttime, SystemTime::now());
            self.save(workspace_id, &record).await?;
            Ok::<_, io::Error>(record)
        }
        .await;
        match recorded {
            Ok(record) => {
                info!(workspace_id, pid, command = %spec.command, "started process workload");
                self.spawn_reaper(workspace_id, child, &record);
                Ok(record.running_info())
            }
            Err(err) => {
                // A run without a record is one the next start would not
                // see, and start it a second time: take it back.
                if let Err(kill_err) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                    warn!(workspace_id, pid, err = %kill_err, "cannot kill unrecorded process workload");
                }
                Err(unavailable(format_args!("recording the run of workspace {workspace_id}"), err))
            }
        }
    }

    /// Waits for our child, records how it ended and tells watchers.
    fn spawn_reaper(self: &Arc<Self>, workspace_id: &str, mut child: Child, record: &RunRecord) {
        let (done, reaped) = watch::channel(false);
        guard(&self.reapers).insert(workspace_id.to_owned(), (record.pid, reaped));
        let inner = Arc::clone(self);
        let (workspace_id, pid, starttime) = (workspace_id.to_owned(), record.pid, record.starttime);
        tokio::spawn(async move {
            let exit_code = match child.wait().await {
                Ok(status) => status.code().or_else(|| status.signal().map(|signal| 128 + signal)),
                Err(err) => {
                    warn!(%workspace_id, pid, %err, "cannot wait for process workload");
                    None
                }
            };
            inner.finish_run(&workspace_id, pid, starttime, exit_code).await;
            done.send_replace(true);
            {
                let mut reapers = guard(&inner.reapers);
                if reapers.get(&workspace_id).is_some_and(|(reaped_pid, _)| *reaped_pid == pid) {
                    reapers.remove(&workspace_id);
                }
            }
            // Nobody watching is fine: events are only hints.
            let _ = inner.events.send(WorkloadEvent { workspace_id });
        });
    }

    async fn finish_run(&self, workspace_id: &str, pid: i32, starttime: u64, exit_code: Option<i32>) {
        let _lock = self.exclusive(workspace_id).await;
        let result = async {
            let Some(mut record) = self.load(workspace_id).await? else { return Ok(()) };
            if record.pid != pid || record.starttime != starttime || record.finished_at.is_some() {
                // A stop or a newer start has taken over since.
                return Ok(());
            }
            let stragglers = self.members(workspace_id).await?;
            signal_members(&stragglers, Signal::SIGKILL);
            // Settled before anyone hears of the exit.
            if let Some(member) = wait_gone(stragglers, KILL_WAIT).await.first() {
                warn!(workspace_id, pid = member.pid, "process left by an exited workload survives SIGKILL");
            }
            record.exit_code = exit_code;
            record.finished_at = Some(SystemTime::now());
            self.save(workspace_id, &record).await
        }
        .await;
        match result {
            Ok(()) => info!(workspace_id, pid, exit_code, "process workload exited"),
            Err(err) => warn!(workspace_id, pid, %err, "cannot record the exit of process workload"),
        }
    }

    /// SIGTERM to the members, SIGKILL to what is left after `grace`, and
    /// SIGKILL to any that turned up meanwhile.
    async fn terminate(&self, workspace_id: &str, members: Vec<Member>, grace: Duration) -> Result<(), RuntimeError> {
        signal_members(&members, Signal::SIGTERM);
        let mut left = wait_gone(members, grace).await;
        if !left.is_empty() {
            info!(workspace_id, ?grace, "process workload outlived its grace period; killing it");
            signal_members(&left, Signal::SIGKILL);
            left = wait_gone(left, KILL_WAIT).await;
        }
        if left.is_empty() {
            let strays = self.members(workspace_id).await.map_err(|err| unavailable("scanning /proc", err))?;
            signal_members(&strays, Signal::SIGKILL);
            left = wait_gone(strays, KILL_WAIT).await;
        }
        match left.first() {
            Some(member) => Err(RuntimeError::Workload(format!(
                "process {} of workspace {workspace_id} is still running after SIGKILL",
                member.pid
            ))),
            None => Ok(()),
        }
    }

    /// Probe of a workspace without a record: the state may be lost while
    /// its processes run on.
    async fn probe_unrecorded(&self, workspace_id: &str) -> Probe {
        match self.members(workspace_id).await {
            Err(err) => Probe::Unknown(format!("cannot scan /proc: {err}")),
            Ok(members) => match leader(&members) {
                None => Probe::Absent,
                Some(leader) => Probe::Running(WorkloadInfo {
                    workload_id: leader.pid.to_string(),
                    detail: format!("running (pid {}, without a run record)", leader.pid),
                    started_at: procfs::start_time(leader.stat.starttime).ok(),
                    ..WorkloadInfo::default()
                }),
            },
        }
    }

    fn ensure_poller(self: &Arc<Self>) {
        let mut poller = guard(&self.poller);
        if poller.as_ref().is_none_or(JoinHandle::is_finished) {
            *poller = Some(tokio::spawn(poll_runs(Arc::downgrade(self))));
        }
    }
}

/// Emits events for runs that are not our children, whose exit no reaper
/// sees: those started before a provisioner restart. Our own children are
/// covered too; a duplicate hint is harmless.
async fn poll_runs(inner: Weak<Inner>) {
    let mut ticks = interval(ADOPTED_POLL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut alive = HashSet::new();
    let mut dead = HashSet::new();
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let records = match inner.records().await {
            Ok(records) => records,
            Err(err) => {
                warn!(%err, "cannot read process workload records");
                continue;
            }
        };
        let (mut now_alive, mut now_dead) = (HashSet::new(), HashSet::new());
        for (workspace_id, record) in records {
            if record.finished_at.is_some() {
                continue;
            }
            let run = (workspace_id, record.pid, record.starttime);
            match inner.alive(&run.0, &record) {
                Ok(true) => now_alive.insert(run),
                Ok(false) => now_dead.insert(run),
                // Unsure: as it was.
                Err(_) if alive.contains(&run) => now_alive.insert(run),
                Err(_) => false,
            };
        }
        // Runs that stopped being alive (died, were recorded or removed), and
        // runs found dead on first sight.
        let changed: BTreeSet<&String> = alive
            .difference(&now_alive)
            .chain(now_dead.difference(&dead))
            .map(|(workspace_id, _, _)| workspace_id)
            .collect();
        for workspace_id in changed {
            let _ = inner.events.send(WorkloadEvent { workspace_id: workspace_id.clone() });
        }
        (alive, dead) = (now_alive, now_dead);
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let mut values = Vec::new();
        for name in ["hostname", "osrelease"] {
            let path = format!("/proc/sys/kernel/{name}");
            let value = tokio::fs::read_to_string(&path).await.map_err(|err| unavailable(&path, err))?;
            values.push(value.trim().to_owned());
        }
        Ok(EngineInfo { version: format!("process runtime on {} (linux {})", values[0], values[1]) })
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %spec.workspace_id))]
    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        let workspace_id = spec.workspace_id.as_str();
        check_workspace_id(workspace_id)?;
        if spec.command.is_empty() {
            return Err(RuntimeError::Workload("a process workload needs a command".to_owned()));
        }
        let inner = &self.inner;
        let _lock = inner.exclusive(workspace_id).await;
        let state_error = |err| unavailable(format_args!("state of workspace {workspace_id}"), err);
        let record = inner.load(workspace_id).await.map_err(state_error)?;
        if let Some(record) = &record
            && record.finished_at.is_none()
            && inner.alive(workspace_id, record).map_err(state_error)?
        {
            return Ok(record.running_info());
        }
        let members = inner.members(workspace_id).await.map_err(|err| unavailable("scanning /proc", err))?;
        if record.is_none()
            && let Some(leader) = leader(&members)
        {
            // Ours, yet unrecorded: the state was lost while the agent ran
            // on. Adopting it is the only way not to run it twice.
            let started_at = procfs::start_time(leader.stat.starttime).unwrap_or_else(|_| SystemTime::now());
            let adopted = inner.new_record(leader.pid, leader.stat.starttime, started_at);
            inner.save(workspace_id, &adopted).await.map_err(state_error)?;
            return Ok(adopted.running_info());
        }
        if !members.is_empty() {
            // Left behind by the previous run, whose main process is gone.
            signal_members(&members, Signal::SIGKILL);
            if let Some(member) = wait_gone(members, KILL_WAIT).await.first() {
                return Err(RuntimeError::Workload(format!(
                    "process {} left by the previous run of workspace {workspace_id} is still running after SIGKILL",
                    member.pid
                )));
            }
        }
        inner.spawn(spec).await
    }

    #[tracing::instrument(skip(self))]
    async fn stop(&self, workspace_id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        check_workspace_id(workspace_id)?;
        let inner = &self.inner;
        let _lock = inner.exclusive(workspace_id).await;
        let state_error = |err| unavailable(format_args!("state of workspace {workspace_id}"), err);
        let record = inner.load(workspace_id).await.map_err(state_error)?;
        let members = inner.members(workspace_id).await.map_err(|err| unavailable("scanning /proc", err))?;
        if record.is_none() && members.is_empty() {
            return Ok(StopOutcome::AlreadyGone);
        }
        if !members.is_empty() {
            inner.terminate(workspace_id, members, grace).await?;
        }
        // An exited run is removed too, as an exited container would be.
        inner.clear(workspace_id).await.map_err(state_error)?;
        Ok(StopOutcome::Stopped)
    }

    #[tracing::instrument(skip(self))]
    async fn purge(&self, workspace_id: &str) -> Result<(), RuntimeError> {
        check_workspace_id(workspace_id)?;
        let inner = &self.inner;
        let _lock = inner.exclusive(workspace_id).await;
        // Also refuses a directory that is another instance's.
        inner
            .load(workspace_id)
            .await
            .map_err(|err| unavailable(format_args!("state of workspace {workspace_id}"), err))?;
        let members = inner.members(workspace_id).await.map_err(|err| unavailable("scanning /proc", err))?;
        // A child spawned a moment ago shows its marks in /proc only once it
        // has exec'd: this runtime's own unreaped child counts as running too.
        let unreaped =
            guard(&inner.reapers).get(workspace_id).filter(|(_, reaped)| !*reaped.borrow()).map(|(pid, _)| *pid);
        if let Some(pid) = leader(&members).map(|member| member.pid).or(unreaped) {
            return Err(RuntimeError::Workload(format!(
                "workspace {workspace_id} still runs (pid {pid}); stop it before purging"
            )));
        }
        let dir = inner.workspace_dir(workspace_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(unavailable(format_args!("removing {}", dir.display()), err))
            }
            _ => Ok(()),
        }
    }

    async fn probe(&self, workspace_id: &str) -> Probe {
        if !is_workspace_id(workspace_id) {
            return Probe::Absent;
        }
        let inner = &self.inner;
        let mut waited = false;
        loop {
            let record = match inner.load(workspace_id).await {
                Ok(Some(record)) => record,
                Ok(None) => return inner.probe_unrecorded(workspace_id).await,
                Err(err) => return Probe::Unknown(format!("cannot read the state of workspace {workspace_id}: {err}")),
            };
            if record.finished_at.is_some() {
                return Probe::Exited(record.exited_info());
            }
            match inner.alive(workspace_id, &record) {
                Ok(true) => return Probe::Running(record.running_info()),
                Ok(false) => {}
                Err(err) => return Probe::Unknown(format!("cannot read /proc/{}: {err}", record.pid)),
            }
            // Our own child that has just exited: its reaper is about to
            // record the exit code.
            if !waited && let Some(mut reaped) = inner.reaper(workspace_id, record.pid) {
                waited = true;
                let _ = timeout(REAPER_WAIT, reaped.wait_for(|done| *done)).await;
                continue;
            }
            return Probe::Exited(record.unobserved_info());
        }
    }

    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        let inner = &self.inner;
        let mut found = BTreeMap::new();
        let records = inner.records().await.map_err(|err| unavailable("reading process workload records", err))?;
        for (workspace_id, record) in records {
            let running = record.finished_at.is_none()
                && inner.alive(&workspace_id, &record).map_err(|err| unavailable("reading /proc", err))?;
            let workload = ManagedWorkload {
                workload_id: record.pid.to_string(),
                name: inner.identity.workload_name(&workspace_id),
                workspace_id: workspace_id.clone(),
                running,
            };
            found.insert(workspace_id, workload);
        }
        let mut members: BTreeMap<String, Vec<Member>> = BTreeMap::new();
        for (workspace_id, member) in inner.scan().await.map_err(|err| unavailable("scanning /proc", err))? {
            members.entry(workspace_id).or_default().push(member);
        }
        for (workspace_id, members) in members {
            let Some(leader) = leader(&members) else { continue };
            let workload = found.entry(workspace_id.clone()).or_insert_with(|| ManagedWorkload {
                workload_id: leader.pid.to_string(),
                name: inner.identity.workload_name(&workspace_id),
                workspace_id,
                running: true,
            });
            // Its main process may be gone, but what runs on must reach the
            // orphan sweeper.
            workload.running = true;
        }
        Ok(found.into_values().collect())
    }

    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        let events = self.inner.events.subscribe();
        self.inner.ensure_poller();
        // A lagging watcher loses hints, which the periodic resync makes up for.
        Ok(BroadcastStream::new(events).filter_map(|event| future::ready(event.ok())).boxed())
    }

    async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        check_workspace_id(workspace_id)?;
        let inner = &self.inner;
        let dir = inner.workspace_dir(workspace_id);
        match tokio::fs::metadata(&dir).await {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::NoWorkload(workspace_id.to_owned()));
            }
            Err(err) => return Err(unavailable(dir.display(), err)),
        }
        let state_error = |err| unavailable(format_args!("state of workspace {workspace_id}"), err);
        let mut following = None;
        if request.follow
            && let Some(record) = inner.load(workspace_id).await.map_err(state_error)?
            && record.finished_at.is_none()
            && inner.alive(workspace_id, &record).map_err(state_error)?
        {
            let (identity, workspace_id) = (inner.identity.clone(), workspace_id.to_owned());
            following = Some(move || run_alive(&identity, &workspace_id, record.pid, record.starttime));
        }
        let files = [(dir.join(STDOUT_LOG), LogStream::Stdout), (dir.join(STDERR_LOG), LogStream::Stderr)];
        Ok(logs::stream(files, request.tail_lines, following))
    }

    async fn exec(
        &self,
        _workspace_id: &str,
        _command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        Err(RuntimeError::NotSupported {
            message: "exec is not supported for process workloads".to_owned(),
            hint: "run the command on the provisioner's host".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_workspace_ids_are_accepted() {
        assert!(is_workspace_id("6f1c2a4e-93f5-4c1e-9a55-0b8f2d7c4e10"));
        for id in ["6F1C2A4E-93F5-4C1E-9A55-0B8F2D7C4E10", "6f1c2a4e93f54c1e9a550b8f2d7c4e10", "..", "", "x/../y"] {
            assert!(!is_workspace_id(id), "{id}");
        }
    }

    #[test]
    fn marks_must_name_this_instance() {
        let identity = Identity { mesh_id: "m1".into(), instance: "process:local".into() };
        let id = "6f1c2a4e-93f5-4c1e-9a55-0b8f2d7c4e10";
        let marks = |mesh: &str, instance: &str, workspace: &str| procfs::Marks {
            mesh_id: Some(mesh.into()),
            instance: Some(instance.into()),
            workspace_id: Some(workspace.into()),
        };
        assert_eq!(workspace_of(&identity, &marks("m1", "process:local", id)), Some(id));
        assert_eq!(workspace_of(&identity, &marks("m2", "process:local", id)), None);
        assert_eq!(workspace_of(&identity, &marks("m1", "process:other", id)), None);
        assert_eq!(workspace_of(&identity, &marks("m1", "process:local", "not-a-uuid")), None);
        assert_eq!(workspace_of(&identity, &procfs::Marks::default()), None);
    }
}
