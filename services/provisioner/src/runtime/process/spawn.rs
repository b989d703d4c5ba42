//! Starting a run as a child process, and reaping it: recording how it
//! ended and killing what it left behind.

use std::{
    collections::BTreeMap,
    io,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, SystemTime},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::watch,
    time::{Instant, sleep},
};
use tracing::{info, warn};

use super::{
    DATA_DIR, Inner, KILL_WAIT, MESH_ID_ENV, RUNTIME_INSTANCE_ENV, RunRecord, RuntimeError, STDERR_LOG, STDOUT_LOG,
    WORKSPACE_ID_ENV, WorkloadEvent, WorkloadInfo, WorkloadSpec, guard, procfs, signal_members, unavailable, wait_gone,
};

/// How long a start waits for the kernel to show a new process's marks.
const EXEC_WAIT: Duration = Duration::from_secs(1);

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

impl Inner {
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
    pub(super) async fn spawn(self: &Arc<Self>, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
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
}
