//! The policy side of the provisioner (PRV-6): the admission gate, policy
//! reloads, and stopping the workloads a new policy no longer admits.

use std::sync::Arc;

use super::Provisioner;
use crate::{
    error::{ProvisionerError, Result},
    policy::{ActivePolicy, Policy},
    registry_client::WorkspaceStatus,
    runtimes::Instance,
    spec::WorkspaceSpec,
    store::Desired,
};

/// A running workload that breaks a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub workspace_id: String,
    pub workspace_name: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct PolicyChange {
    pub policy: ActivePolicy,
    /// Whether the policy was replaced (never on a dry run).
    pub changed: bool,
    /// Whether the candidate differs from the active policy.
    pub would_change: bool,
    pub violations: Vec<Violation>,
}

impl Provisioner {
    pub async fn policy(&self) -> Result<ActivePolicy> {
        self.store.policy().await
    }

    /// Replaces the policy with `candidate` (or the policy file) and stops,
    /// in the background, the workloads that no longer comply (PRV-6).
    pub async fn reload_policy(
        self: &Arc<Self>,
        candidate: Option<Policy>,
        expected_revision: Option<u64>,
        dry_run: bool,
    ) -> Result<PolicyChange> {
        let (candidate, source) = match candidate {
            Some(policy) => (policy, "api".to_owned()),
            None => self.policy_from_file()?,
        };
        let active = self.store.policy().await?;
        if let Some(expected) = expected_revision
            && expected != active.revision
        {
            return Err(ProvisionerError::RevisionMismatch { active: active.revision, expected });
        }
        let violations = self.violations(&candidate).await?;
        let would_change = candidate != active.policy;
        if dry_run || !would_change {
            let policy = if would_change { ActivePolicy { policy: candidate, source, ..active } } else { active };
            return Ok(PolicyChange { policy, changed: false, would_change, violations });
        }
        let policy = self.store.replace_policy(&candidate, &source, active.revision).await?;
        tracing::info!(revision = policy.revision, source = %policy.source, violations = violations.len(), "policy changed");
        let this = self.clone();
        let to_stop = violations.clone();
        tokio::spawn(async move { this.enforce(to_stop).await });
        Ok(PolicyChange { policy, changed: true, would_change, violations })
    }

    /// Applies the configured policy file if it differs from the stored
    /// policy (at start-up and on SIGHUP).
    pub async fn apply_policy_file(self: &Arc<Self>) -> Result<Option<PolicyChange>> {
        if self.settings.policy_file.is_none() {
            return Ok(None);
        }
        self.reload_policy(None, None, false).await.map(Some)
    }

    fn policy_from_file(&self) -> Result<(Policy, String)> {
        let path = self.settings.policy_file.as_ref().ok_or_else(|| {
            ProvisionerError::PolicyInvalid("no policy file is configured (provisioner.policy_file)".into())
        })?;
        let policy = Policy::from_file(path).map_err(|e| ProvisionerError::PolicyInvalid(e.to_string()))?;
        Ok((policy, format!("file:{}", path.display())))
    }

    /// The workloads that should run (or sleep) but break `policy`.
    pub(crate) async fn violations(&self, policy: &Policy) -> Result<Vec<Violation>> {
        let mut found = Vec::new();
        for instance in self.runtimes.all() {
            for desired in [Desired::Running, Desired::Hibernated] {
                for record in self.store.list(instance.name(), Some(desired)).await? {
                    if let Err(reason) = policy.admit(&record.spec, &record.spec.tier) {
                        found.push(Violation {
                            workspace_id: record.workspace_id,
                            workspace_name: record.spec.name,
                            reason,
                        });
                    }
                }
            }
        }
        Ok(found)
    }

    pub(crate) async fn enforce(&self, violations: Vec<Violation>) {
        for violation in violations {
            let Ok(Some(record)) = self.store.get(&violation.workspace_id).await else { continue };
            let Ok(instance) = self.instance_of(&record) else { continue };
            let _guard = self.locks.lock(&violation.workspace_id).await;
            self.stop_for_policy(&instance, &violation.workspace_id, &violation.reason).await;
        }
    }

    /// Stops a workload that breaks the policy into POLICY_STOPPED. Best
    /// effort: a failure is logged and the next resync tries again, since
    /// the record already says the workload should not run.
    pub(crate) async fn stop_for_policy(&self, instance: &Instance, workspace_id: &str, why: &str) {
        if let Err(e) = self.store.set_desired(workspace_id, Desired::Stopped).await {
            tracing::warn!(workspace_id, error = %e, "cannot record a policy stop");
            return;
        }
        self.metrics.stopped_for_policy();
        if let Err(e) = instance.runtime.stop(workspace_id, self.settings.stop_grace()).await {
            tracing::warn!(workspace_id, error = %e, "cannot stop a workload that breaks the policy; will retry");
        }
        let reason = format!("policy: {why}");
        if let Err(e) =
            self.registry.transition(workspace_id, WorkspaceStatus::PolicyStopped, &reason, instance.name(), &[]).await
        {
            tracing::warn!(workspace_id, error = %e, "cannot mark a workspace policy_stopped; will retry");
        }
    }

    /// The policy gate (PRV-6).
    pub(crate) async fn admit(&self, spec: &WorkspaceSpec) -> Result<()> {
        let active = self.store.policy().await?;
        active.policy.admit(spec, &spec.tier).map_err(|why| {
            self.metrics.denied();
            ProvisionerError::PolicyDenied(why)
        })
    }
}
