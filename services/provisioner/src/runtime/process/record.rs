//! workload.json, the run record: which process is the workspace's current
//! run and, once seen, how it ended.

use std::{io, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::{Inner, WorkloadInfo, is_workspace_id};

const RECORD_FILE: &str = "workload.json";

/// workload.json: the workspace's current (or last) run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RunRecord {
    /// Whose run it is, so a listing never reports another instance's.
    mesh_id: String,
    instance: String,
    pub(super) pid: i32,
    /// The kernel's start time of `pid`; see [`procfs::Stat::starttime`].
    pub(super) starttime: u64,
    pub(super) started_at: SystemTime,
    pub(super) exit_code: Option<i32>,
    /// Set, with `exit_code`, when the provisioner saw the process exit.
    pub(super) finished_at: Option<SystemTime>,
}

impl RunRecord {
    pub(super) fn running_info(&self) -> WorkloadInfo {
        WorkloadInfo {
            workload_id: self.pid.to_string(),
            detail: format!("running (pid {})", self.pid),
            exit_code: None,
            started_at: Some(self.started_at),
            finished_at: None,
        }
    }

    pub(super) fn exited_info(&self) -> WorkloadInfo {
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
    pub(super) fn unobserved_info(&self) -> WorkloadInfo {
        WorkloadInfo {
            workload_id: self.pid.to_string(),
            detail: "exited while the provisioner was not watching".to_owned(),
            exit_code: None,
            started_at: Some(self.started_at),
            finished_at: None,
        }
    }
}

impl Inner {
    /// The workspace's run record. A record that is not ours or not readable
    /// as one is an InvalidData error.
    pub(super) async fn load(&self, workspace_id: &str) -> io::Result<Option<RunRecord>> {
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

    pub(super) async fn save(&self, workspace_id: &str, record: &RunRecord) -> io::Result<()> {
        let dir = self.workspace_dir(workspace_id);
        let temp = dir.join(format!("{RECORD_FILE}.tmp"));
        // Written aside and renamed, so a crash never leaves half a record.
        tokio::fs::write(&temp, serde_json::to_vec_pretty(record)?).await?;
        tokio::fs::rename(&temp, dir.join(RECORD_FILE)).await
    }

    pub(super) async fn clear(&self, workspace_id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.workspace_dir(workspace_id).join(RECORD_FILE)).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every workspace with a record of ours; others' and unreadable records are skipped.
    pub(super) async fn records(&self) -> io::Result<Vec<(String, RunRecord)>> {
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

    pub(super) fn new_record(&self, pid: i32, starttime: u64, started_at: SystemTime) -> RunRecord {
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
}
