//! Finding a workspace's live processes by their marks, and signalling them;
//! the kernel, not our memory, says which processes are ours.

use std::{
    collections::{BTreeSet, HashSet},
    io,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::time::{Instant, sleep};
use tracing::warn;

use super::{Identity, Inner, RunRecord, STOP_POLL, procfs, workspace_of};

/// A live process carrying this instance's marks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub(super) pid: i32,
    pub(super) stat: procfs::Stat,
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
pub(super) fn leader(members: &[Member]) -> Option<Member> {
    members.iter().find(|m| m.pid == m.stat.pgrp).or_else(|| members.iter().min_by_key(|m| m.pid)).copied()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Group(i32),
    Process(i32),
}

pub(super) fn signal_members(members: &[Member], signal: Signal) {
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
pub(super) async fn wait_gone(mut members: Vec<Member>, within: Duration) -> Vec<Member> {
    let deadline = Instant::now() + within;
    loop {
        members.retain(Member::running);
        if members.is_empty() || Instant::now() >= deadline {
            return members;
        }
        sleep(STOP_POLL).await;
    }
}

/// Whether the run with this pid and start time is alive and still ours.
pub(super) fn run_alive(identity: &Identity, workspace_id: &str, pid: i32, starttime: u64) -> io::Result<bool> {
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

impl Inner {
    pub(super) fn alive(&self, workspace_id: &str, record: &RunRecord) -> io::Result<bool> {
        run_alive(&self.identity, workspace_id, record.pid, record.starttime)
    }

    pub(super) async fn scan(&self) -> io::Result<Vec<(String, Member)>> {
        let identity = self.identity.clone();
        tokio::task::spawn_blocking(move || scan(&identity)).await.map_err(io::Error::other)?
    }

    /// The workspace's live processes, found by their marks.
    pub(super) async fn members(&self, workspace_id: &str) -> io::Result<Vec<Member>> {
        Ok(self.scan().await?.into_iter().filter(|(id, _)| id == workspace_id).map(|(_, member)| member).collect())
    }
}
