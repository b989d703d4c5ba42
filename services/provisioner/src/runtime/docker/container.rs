//! Translating between workloads and containers: the body a workload's
//! container is created with, and what inspected or listed containers say.

use std::time::SystemTime;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, EventMessage,
    HostConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};

use super::{
    DATA_DIR, DockerRuntime, Identity, ManagedWorkload, Probe, WorkloadEvent, WorkloadInfo, WorkloadSpec, labels,
};

/// The workspace's human name, so that `docker ps` says whose container it is.
const WORKSPACE_NAME_LABEL: &str = "dev.agentmesh/workspace-name";

impl DockerRuntime {
    pub(super) fn container_body(
        &self,
        spec: &WorkloadSpec,
        volume: String,
        network: Option<String>,
    ) -> ContainerCreateBody {
        let limits = spec.limits;
        let memory = (limits.memory_bytes > 0).then(|| i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX));
        let host_config = HostConfig {
            nano_cpus: (limits.cpu_millis > 0).then(|| i64::from(limits.cpu_millis) * 1_000_000),
            memory,
            // Equal to the memory limit: no swap, so the limit is what the workload gets.
            memory_swap: memory,
            pids_limit: (limits.pids_limit > 0).then(|| i64::from(limits.pids_limit)),
            mounts: Some(vec![Mount {
                target: Some(DATA_DIR.to_owned()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            network_mode: network,
            init: Some(self.settings.init),
            // The provisioner restarts workloads itself, through the policy gate (PRV-10).
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            ..Default::default()
        };
        let (entrypoint, cmd) = if spec.command.is_empty() {
            (None, (!spec.args.is_empty()).then(|| spec.args.clone()))
        } else {
            (Some(vec![spec.command.clone()]), Some(spec.args.clone()))
        };
        let mut labels = self.labels(&spec.workspace_id);
        labels.insert(WORKSPACE_NAME_LABEL.to_owned(), spec.workspace_name.clone());
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint,
            cmd,
            env: Some(spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect()),
            labels: Some(labels),
            stop_timeout: Some(i64::try_from(self.settings.stop_timeout.as_secs()).unwrap_or(i64::MAX)),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

pub(super) fn status_of(container: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    container.state.as_ref().and_then(|state| state.status)
}

/// Whether a process of the container is alive (paused and restarting included).
pub(super) fn is_up(status: &Option<ContainerStateStatusEnum>) -> bool {
    use ContainerStateStatusEnum::{PAUSED, RESTARTING, RUNNING, STOPPING};
    matches!(status, Some(RUNNING | PAUSED | RESTARTING | STOPPING))
}

pub(super) fn workload_info(container: &ContainerInspectResponse) -> WorkloadInfo {
    let state = container.state.clone().unwrap_or_default();
    let status = state.status.map_or_else(|| "unknown".to_owned(), |status| status.to_string());
    let started_at = state.started_at.as_deref().and_then(parse_time);
    let mut info = WorkloadInfo {
        workload_id: container.id.clone().unwrap_or_default(),
        detail: status.clone(),
        exit_code: None,
        started_at,
        finished_at: None,
    };
    if is_up(&state.status) {
        return info;
    }
    info.finished_at = state.finished_at.as_deref().and_then(parse_time);
    if matches!(state.status, Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)) {
        info.exit_code = state.exit_code.and_then(|code| i32::try_from(code).ok());
        let oom = if state.oom_killed == Some(true) { ", oom-killed" } else { "" };
        info.detail = format!("{status} ({}{oom})", info.exit_code.unwrap_or(-1));
    }
    if let Some(error) = state.error.filter(|error| !error.is_empty()) {
        info.detail = format!("{}: {error}", info.detail);
    }
    info
}

pub(super) fn probe_of(container: &ContainerInspectResponse) -> Probe {
    use ContainerStateStatusEnum::{CREATED, DEAD, EXITED, REMOVING};
    let status = status_of(container);
    match status {
        _ if is_up(&status) => Probe::Running(workload_info(container)),
        Some(CREATED | EXITED | DEAD) => Probe::Exited(workload_info(container)),
        // Being removed: the destroy event follows, and the probe then says Absent.
        Some(REMOVING) => Probe::Unknown("the container is being removed".to_owned()),
        _ => Probe::Unknown(format!("the container is in an unknown state {:?}", workload_info(container).detail)),
    }
}

/// A listed container, if its name and labels both say it is ours (PRV-9).
pub(super) fn managed(identity: &Identity, container: ContainerSummary) -> Option<ManagedWorkload> {
    let names = container.names.unwrap_or_default();
    // Linked containers also list "/other/alias" names; the own name has no inner slash.
    let name = names.iter().map(|name| name.trim_start_matches('/')).find(|name| !name.contains('/'))?;
    let workspace_id = identity.workspace_of_name(name);
    let labelled = container.labels.as_ref().and_then(|labels| labels.get(labels::WORKSPACE_ID));
    if workspace_id.is_none() || workspace_id.map(str::to_owned).as_ref() != labelled {
        tracing::debug!(name, "skipping a labelled container whose name or workspace label is not ours");
        return None;
    }
    let running = container.state.is_some_and(|state| {
        use bollard::models::ContainerSummaryStateEnum::{PAUSED, RESTARTING, RUNNING, STOPPING};
        matches!(state, RUNNING | PAUSED | RESTARTING | STOPPING)
    });
    Some(ManagedWorkload {
        workload_id: container.id?,
        name: name.to_owned(),
        workspace_id: workspace_id?.to_owned(),
        running,
    })
}

pub(super) fn event_of(identity: &Identity, event: EventMessage) -> Option<WorkloadEvent> {
    let attributes = event.actor?.attributes?;
    let workspace_id = identity.workspace_of_name(attributes.get("name")?)?;
    (attributes.get(labels::WORKSPACE_ID).map(String::as_str) == Some(workspace_id))
        .then(|| WorkloadEvent { workspace_id: workspace_id.to_owned() })
}

/// Docker writes "zero" (year 1) times for "never".
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    let time: jiff::Timestamp = text.parse().ok()?;
    (time > jiff::Timestamp::UNIX_EPOCH).then(|| time.into())
}
