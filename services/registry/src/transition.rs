//! The one guarded transition function (REG-2) and the heartbeat's status
//! inference (REG-5). Every status the registry writes passes through
//! [`Workspace::move_to`].

use crate::model::{Status, Workspace};

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a workspace cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: Status,
    pub to: Status,
}

/// Whether the lifecycle allows `from → to`. Moving to the current status is
/// not a transition and is handled by the caller.
pub fn is_allowed(from: Status, to: Status) -> bool {
    use Status::*;
    if from == Removed {
        // A tombstone: nothing brings it back.
        return false;
    }
    if to == Removed {
        return true;
    }
    match from {
        Provisioning => matches!(to, Online | Degraded | Offline | Failed | Stopping | Stopped | PolicyStopped),
        AwaitingAgent => matches!(to, Online | Degraded | Offline | Failed | Stopping | Stopped | PolicyStopped),
        Online => matches!(to, Degraded | Offline | Failed | Stopping | Stopped | PolicyStopped | Hibernated),
        Degraded => matches!(to, Online | Offline | Failed | Stopping | Stopped | PolicyStopped | Hibernated),
        Offline => {
            matches!(to, Provisioning | Online | Degraded | Failed | Stopping | Stopped | PolicyStopped | Hibernated)
        }
        // Starting again: a container workload re-provisions, an external
        // agent is awaited again.
        Failed => matches!(to, Provisioning | AwaitingAgent | Stopping | Stopped | PolicyStopped),
        // A restart goes on to provisioning once its stop is done.
        Stopping => matches!(to, Provisioning | Stopped | Failed | PolicyStopped | Offline),
        Stopped => matches!(to, Provisioning | AwaitingAgent | PolicyStopped),
        PolicyStopped => matches!(to, Provisioning | AwaitingAgent | Stopped),
        Hibernated => matches!(to, Provisioning | Online | Stopping | Stopped | PolicyStopped | Failed),
        Removed => false,
    }
}

impl Workspace {
    /// Moves the workspace to `to`, or refuses an illegal move. Returns the
    /// previous status when the status changed, `None` when it already was
    /// `to` (the reason is refreshed either way).
    pub fn move_to(
        &mut self,
        to: Status,
        reason: impl Into<String>,
        now: i64,
    ) -> Result<Option<Status>, IllegalTransition> {
        let from = self.status;
        if from == to {
            self.status_reason = reason.into();
            return Ok(None);
        }
        if !is_allowed(from, to) {
            return Err(IllegalTransition { from, to });
        }
        self.status = to;
        self.status_reason = reason.into();
        self.status_changed_at = now;
        Ok(Some(from))
    }
}

/// The health facts of one heartbeat that bear on status.
#[derive(Debug, Clone, Copy)]
pub struct HealthReport<'a> {
    pub error_rate: f64,
    pub runtime_state: &'a str,
    pub sample_error: &'a str,
}

/// The error rate at or above which a workspace degrades.
pub const DEGRADE_AT_ERROR_RATE: f64 = 0.5;
/// The error rate below which a degraded workspace may recover. The band in
/// between keeps the current status, so a rate hovering near one threshold
/// does not flap.
pub const RECOVER_BELOW_ERROR_RATE: f64 = 0.1;
/// The runtime state an agent reports when it is stuck.
pub const WEDGED: &str = "wedged";

/// The status a heartbeat implies, and why; `None` when the heartbeat must
/// not change the status.
pub fn status_after_heartbeat(
    current: Status,
    report: HealthReport<'_>,
    native_status_mgmt: bool,
) -> Option<(Status, String)> {
    let alive_from = matches!(current, Status::Provisioning | Status::AwaitingAgent | Status::Offline);
    if !(alive_from || current.expects_heartbeats()) {
        // Settled by a lifecycle operation, or mid-way through one
        // (stopping, hibernated): only that operation moves it on.
        return None;
    }
    // A wedged runtime is degraded even when the agent manages its own
    // status: it cannot be trusted to report its own wedge.
    if report.runtime_state == WEDGED {
        return Some((Status::Degraded, "agent reports its runtime is wedged".to_owned()));
    }
    if !native_status_mgmt && report.error_rate >= DEGRADE_AT_ERROR_RATE {
        let mut reason = format!("error rate {:.2} is at or above {DEGRADE_AT_ERROR_RATE}", report.error_rate);
        if !report.sample_error.is_empty() {
            reason.push_str(": ");
            reason.push_str(report.sample_error);
        }
        return Some((Status::Degraded, reason));
    }
    let recovered =
        report.runtime_state.is_empty() && (native_status_mgmt || report.error_rate < RECOVER_BELOW_ERROR_RATE);
    match current {
        Status::Degraded if recovered => Some((Status::Online, "recovered".to_owned())),
        Status::Degraded => None,
        Status::Online => None,
        _ => Some((Status::Online, "heartbeat received".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(error_rate: f64, runtime_state: &str) -> HealthReport<'_> {
        HealthReport { error_rate, runtime_state, sample_error: "" }
    }

    fn after(current: Status, error_rate: f64, state: &str, native: bool) -> Status {
        status_after_heartbeat(current, report(error_rate, state), native).map_or(current, |(s, _)| s)
    }

    #[test]
    fn error_rate_degrades_at_exactly_one_half() {
        assert_eq!(after(Status::Online, 0.5, "", false), Status::Degraded);
        assert_eq!(after(Status::Online, 0.499_999, "", false), Status::Online);
    }

    #[test]
    fn hysteresis_band_keeps_the_current_status() {
        for rate in [0.1, 0.3, 0.499] {
            assert_eq!(after(Status::Degraded, rate, "", false), Status::Degraded, "rate {rate}");
            assert_eq!(after(Status::Online, rate, "", false), Status::Online, "rate {rate}");
        }
        assert_eq!(after(Status::Degraded, 0.099, "", false), Status::Online);
    }

    #[test]
    fn recovery_needs_a_clear_runtime_state() {
        assert_eq!(after(Status::Degraded, 0.0, "draining", false), Status::Degraded);
        assert_eq!(after(Status::Degraded, 0.0, "", false), Status::Online);
    }

    #[test]
    fn wedged_degrades_with_and_without_native_status_management() {
        assert_eq!(after(Status::Online, 0.0, WEDGED, false), Status::Degraded);
        assert_eq!(after(Status::Online, 0.0, WEDGED, true), Status::Degraded);
    }

    #[test]
    fn native_status_management_ignores_the_error_rate() {
        assert_eq!(after(Status::Online, 0.9, "", true), Status::Online);
        assert_eq!(after(Status::Degraded, 0.9, "", true), Status::Online);
    }

    #[test]
    fn heartbeat_brings_provisioning_awaiting_and_offline_online() {
        for from in [Status::Provisioning, Status::AwaitingAgent, Status::Offline] {
            assert_eq!(after(from, 0.0, "", false), Status::Online, "from {from}");
            assert_eq!(after(from, 0.7, "", false), Status::Degraded, "from {from}");
        }
    }

    #[test]
    fn heartbeat_never_leaves_a_lifecycle_status() {
        for from in [
            Status::Stopped,
            Status::PolicyStopped,
            Status::Failed,
            Status::Removed,
            Status::Stopping,
            Status::Hibernated,
        ] {
            assert!(status_after_heartbeat(from, report(0.0, ""), false).is_none(), "from {from}");
            assert!(status_after_heartbeat(from, report(0.9, WEDGED), false).is_none(), "from {from}");
        }
    }

    #[test]
    fn removed_is_final_and_every_status_can_be_removed() {
        for to in Status::ALL {
            assert!(!is_allowed(Status::Removed, to), "removed -> {to}");
        }
        for from in Status::ALL.into_iter().filter(|s| *s != Status::Removed) {
            assert!(is_allowed(from, Status::Removed), "{from} -> removed");
        }
    }

    #[test]
    fn stopped_restarts_only_through_provisioning() {
        assert!(!is_allowed(Status::Stopped, Status::Online));
        assert!(is_allowed(Status::Stopped, Status::Provisioning));
        assert!(!is_allowed(Status::PolicyStopped, Status::Online));
        assert!(!is_allowed(Status::Failed, Status::Online));
    }
}
