//! Reading a pod's status as the three-answer probe (PRV-3, PRV-4).

use std::time::SystemTime;

use k8s_openapi::{
    api::core::v1::{ContainerState, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::CONTAINER;
use crate::runtime::{Probe, WorkloadInfo};

/// Waiting reasons after which the container will not start without someone
/// changing the pod or the image: the image cannot be pulled or named, or the
/// container cannot be configured. The kubelet keeps retrying, but reporting
/// such a pod as running would leave the workspace "online" forever; as an
/// exit it goes to the provisioner's restart policy, and a start replaces it.
const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What the pod says about its workload.
///
/// - A terminated workload container wins over the phase: with restartPolicy
///   Never it will not run again, even while the phase still says Running.
/// - `Succeeded` is an exit with 0, `Failed` one with the container's code, or
///   1 when the pod failed without one (evicted, deadline exceeded).
/// - `Pending` is running: the pod is accepted and will run once scheduled
///   and pulled, unless the container is stuck (see [`STUCK_REASONS`]), which
///   is an exit without a code.
/// - `Unknown` (the node stopped reporting) is [`Probe::Unknown`].
pub(super) fn probe(pod: &Pod) -> Probe {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let state = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref());
    let mut info = WorkloadInfo {
        workload_id: pod.metadata.name.clone().unwrap_or_default(),
        started_at: status.and_then(|s| s.start_time.as_ref()).map(time),
        ..WorkloadInfo::default()
    };

    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        info.exit_code = Some(terminated.exit_code);
        info.started_at = terminated.started_at.as_ref().map(time).or(info.started_at);
        info.finished_at = terminated.finished_at.as_ref().map(time);
        info.detail = described(&format!("exited ({})", terminated.exit_code), terminated.reason.as_deref(), None);
        return Probe::Exited(info);
    }
    match phase {
        "Succeeded" => {
            info.exit_code = Some(0);
            info.detail = "succeeded".to_owned();
            Probe::Exited(info)
        }
        "Failed" => {
            info.exit_code = Some(1);
            let (reason, message) = status.map(|s| (s.reason.as_deref(), s.message.as_deref())).unwrap_or_default();
            info.detail = described("failed", reason, message);
            Probe::Exited(info)
        }
        "Running" => {
            if let Some(started) = state.and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()) {
                info.started_at = Some(time(started));
            }
            info.detail = if pod.metadata.deletion_timestamp.is_some() { "terminating" } else { "running" }.to_owned();
            Probe::Running(info)
        }
        "Pending" => {
            let (reason, message) = waiting(state);
            info.detail = described("pending", reason.or(Some("scheduling")), message);
            if reason.is_some_and(|r| STUCK_REASONS.contains(&r)) {
                return Probe::Exited(info);
            }
            Probe::Running(info)
        }
        other => Probe::Unknown(format!("pod {} is in phase {other}", info.workload_id)),
    }
}

/// Whether the pod counts as running for a listing: what the probe says,
/// minus pods already on their way out.
pub(super) fn is_running(pod: &Pod) -> bool {
    matches!(probe(pod), Probe::Running(_)) && pod.metadata.deletion_timestamp.is_none()
}

fn waiting(state: Option<&ContainerState>) -> (Option<&str>, Option<&str>) {
    state.and_then(|s| s.waiting.as_ref()).map(|w| (w.reason.as_deref(), w.message.as_deref())).unwrap_or_default()
}

fn described(what: &str, reason: Option<&str>, message: Option<&str>) -> String {
    match (reason, message) {
        (Some(reason), Some(message)) => format!("{what}: {reason}: {message}"),
        (Some(reason), None) => format!("{what}: {reason}"),
        (None, Some(message)) => format!("{what}: {message}"),
        (None, None) => what.to_owned(),
    }
}

fn time(time: &Time) -> SystemTime {
    time.0.into()
}

pub(super) fn timestamp(time: SystemTime) -> Option<Timestamp> {
    Timestamp::try_from(time).ok()
}
