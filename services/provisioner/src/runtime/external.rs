//! The stand-in runtime for agents that run elsewhere (PRV-7): the mesh keeps
//! their records but runs, stops and reads nothing of theirs. Every container
//! operation is refused with a hint of what to do instead, never with "not
//! running", which would send an operator hunting for a container that never
//! existed.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream};

use super::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, ManagedWorkload, Probe, Runtime, RuntimeError, RuntimeKind,
    StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec,
};

pub struct ExternalRuntime {
    identity: Identity,
}

impl ExternalRuntime {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

fn refused(operation: &str, hint: &str) -> RuntimeError {
    RuntimeError::NotSupported {
        message: format!("{operation} is not available for external workspaces: the mesh does not run their agent"),
        hint: hint.to_owned(),
    }
}

#[async_trait]
impl Runtime for ExternalRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::External
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn runs_workloads(&self) -> bool {
        false
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        Ok(EngineInfo { version: "external agents (no engine)".to_owned() })
    }

    async fn start(&self, _spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        Err(refused("starting a workload", "start the agent where it runs; it joins with the workspace's token"))
    }

    async fn stop(&self, _workspace_id: &str, _grace: Duration) -> Result<StopOutcome, RuntimeError> {
        // Nothing runs here, so there is nothing to stop: a stop only changes
        // the record, which the provisioner does.
        Ok(StopOutcome::AlreadyGone)
    }

    async fn purge(&self, _workspace_id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn probe(&self, _workspace_id: &str) -> Probe {
        Probe::Unknown("the mesh runs no workload for external workspaces; their heartbeats keep the status".to_owned())
    }

    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        Ok(Vec::new())
    }

    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        Ok(Box::pin(stream::pending()))
    }

    async fn logs(
        &self,
        _workspace_id: &str,
        _request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        Err(refused("reading logs", "read the logs where the agent runs"))
    }

    async fn exec(
        &self,
        _workspace_id: &str,
        _command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        Err(refused("exec", "run the command where the agent runs"))
    }
}
