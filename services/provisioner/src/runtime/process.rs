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
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::{StreamExt, future, stream::BoxStream};
use nix::sys::signal::Signal;
use tokio::{
    sync::{OwnedMutexGuard, broadcast, watch},
    task::JoinHandle,
    time::{MissedTickBehavior, interval, timeout},
};
use tokio_stream::wrappers::BroadcastStream;
use tracing::{info, warn};

use super::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, LogStream, ManagedWorkload, Probe, Runtime, RuntimeError,
    RuntimeKind, StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec,
};

mod logs;
mod members;
mod procfs;
mod record;
mod spawn;

use self::{
    members::{Member, leader, run_alive, signal_members, wait_gone},
    record::RunRecord,
};

/// Environment variable marking a process with the mesh id (see [`super::labels::MESH_ID`]).
pub const MESH_ID_ENV: &str = "AGENTMESH_MESH_ID";
/// Environment variable marking a process with the runtime instance's name.
pub const RUNTIME_INSTANCE_ENV: &str = "AGENTMESH_RUNTIME_INSTANCE";
/// Environment variable naming the workspace a process runs.
pub const WORKSPACE_ID_ENV: &str = "AGENTMESH_WORKSPACE_ID";

const DATA_DIR: &str = "data";
const STDOUT_LOG: &str = "stdout.log";
const STDERR_LOG: &str = "stderr.log";

/// How often a stop looks whether the processes have exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long SIGKILL may take before a stop reports failure (a process in
/// uninterruptible sleep, e.g. on a dead NFS mount, survives it for a while).
const KILL_WAIT: Duration = Duration::from_secs(5);
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

/// The workspace a process belongs to, if its marks are this instance's.
fn workspace_of<'a>(identity: &Identity, marks: &'a procfs::Marks) -> Option<&'a str> {
    let ours = marks.mesh_id.as_deref() == Some(identity.mesh_id.as_str())
        && marks.instance.as_deref() == Some(identity.instance.as_str());
    marks.workspace_id.as_deref().filter(|id| ours && is_workspace_id(id))
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

    fn reaper(&self, workspace_id: &str, pid: i32) -> Option<watch::Receiver<bool>> {
        guard(&self.reapers)
            .get(workspace_id)
            .filter(|(reaped_pid, _)| *reaped_pid == pid)
            .map(|(_, done)| done.clone())
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
