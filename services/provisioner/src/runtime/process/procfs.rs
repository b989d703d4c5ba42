//! The kernel's own account of processes, read from /proc: it outlives the
//! provisioner's memory, which is what lets a restarted provisioner recognise
//! the agents it started before.
//!
//! These are small reads served from kernel memory, so callers make them
//! inline; whole-host scans go through `spawn_blocking`.

use std::{
    fs, io,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::errno::Errno;

use super::{MESH_ID_ENV, RUNTIME_INSTANCE_ENV, WORKSPACE_ID_ENV};

/// What /proc/<pid>/stat says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    state: char,
    pub pgrp: i32,
    /// Clock ticks after boot at which the process started. Pids get
    /// recycled; pid and start time together name one process for the life
    /// of the host.
    pub starttime: u64,
}

impl Stat {
    /// A zombie has exited and only waits for its parent to collect it.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The agentmesh marks in a process's environment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Marks {
    pub mesh_id: Option<String>,
    pub instance: Option<String>,
    pub workspace_id: Option<String>,
}

/// Whether an error reading /proc/<pid>/... means the process is gone:
/// ESRCH comes when it exits between the open and the read.
pub(super) fn gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(Errno::ESRCH as i32)
}

pub(super) fn stat(pid: i32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected contents of /proc/{pid}/stat")))
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses, so fields
    // are counted after its closing parenthesis, the last one in the line.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 of proc_pid_stat(5): state; pgrp is 5, starttime 22.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

/// The marks in the environment the process was started with (or last
/// exec'd with). Another user's processes are unreadable (PermissionDenied),
/// a zombie's environment is empty.
pub(super) fn marks(pid: i32) -> io::Result<Marks> {
    let environ = fs::read(format!("/proc/{pid}/environ"))?;
    let mut marks = Marks::default();
    for entry in environ.split(|byte| *byte == 0) {
        let Some(eq) = entry.iter().position(|byte| *byte == b'=') else { continue };
        let (key, value) = (&entry[..eq], &entry[eq + 1..]);
        let slot = match key {
            k if k == MESH_ID_ENV.as_bytes() => &mut marks.mesh_id,
            k if k == RUNTIME_INSTANCE_ENV.as_bytes() => &mut marks.instance,
            k if k == WORKSPACE_ID_ENV.as_bytes() => &mut marks.workspace_id,
            _ => continue,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
    Ok(marks)
}

/// Every pid on the host (this pid namespace).
pub(super) fn pids() -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        if let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The wall-clock time a process with this `starttime` started at.
pub(super) fn start_time(starttime: u64) -> io::Result<SystemTime> {
    let stat = fs::read_to_string("/proc/stat")?;
    let boot = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|secs| secs.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))?;
    // starttime counts USER_HZ ticks, which is 100 on every Linux ABI we run
    // on; asking sysconf would take unsafe code or another nix feature.
    Ok(UNIX_EPOCH + Duration::from_secs(boot) + Duration::from_millis(starttime.saturating_mul(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (odd) name (x) S 1 4242 4242 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 987654 2580480 222 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', pgrp: 4242, starttime: 987_654 }));
        assert_eq!(parse_stat("12 (sh) Z 1"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let own = stat(pid).expect("own stat");
        assert!(!own.exited());
        assert!(start_time(own.starttime).expect("start time") <= SystemTime::now());
        assert!(pids().expect("pids").contains(&pid));
        assert!(gone(&stat(i32::MAX).expect_err("no such pid")));
    }
}
