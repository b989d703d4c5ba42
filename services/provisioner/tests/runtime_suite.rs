//! One suite, every runtime (ARCH-4): the same behaviours checked against
//! Docker (the real engine, the echo agent image), processes (the echo agent
//! binary under the shim), Kubernetes (a real API server, with the test
//! playing the kubelet) and the external stand-in, which must refuse what it
//! cannot do.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use agentmesh_provisioner::runtime::{
    Identity, Probe, Runtime, RuntimeError, StopOutcome, WorkloadSpec,
    external::ExternalRuntime,
    kubernetes::{KubernetesRuntime, KubernetesSettings},
    process::ProcessRuntime,
};
use futures::StreamExt;

const GRACE: Duration = Duration::from_secs(5);
const REACT: Duration = Duration::from_secs(20);

/// What runs the echo agent on one runtime: an image, or a program, and
/// their arguments.
struct Program {
    image: String,
    command: String,
    args: Vec<String>,
}

/// The program that runs the echo agent, given the arguments that shape
/// its behaviour.
type Describe = fn(&[String]) -> Program;

/// A runtime under test and how to describe a workload for it.
struct Subject {
    runtime: Arc<dyn Runtime>,
    workload: Describe,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Subject {
    fn spec(&self, behaviour: &[&str]) -> WorkloadSpec {
        let workspace_id = uuid::Uuid::new_v4().to_string();
        let behaviour: Vec<String> = behaviour.iter().map(|s| (*s).to_owned()).collect();
        let Program { image, command, args } = (self.workload)(&behaviour);
        let env = BTreeMap::from([
            ("AGENTMESH_WORKSPACE_ID".to_owned(), workspace_id.clone()),
            // Nobody listens there: the agent runs regardless of the registry.
            ("AGENTMESH_REGISTRY_ADDR".to_owned(), "http://127.0.0.1:9".to_owned()),
            ("AGENTMESH_TOKEN".to_owned(), "suite-token".to_owned()),
            ("AGENTMESH_AGENT_PORT".to_owned(), free_port().to_string()),
        ]);
        WorkloadSpec {
            workspace_id,
            workspace_name: "suite".into(),
            image,
            command,
            args,
            env,
            limits: Default::default(),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn identity(instance: &str) -> Identity {
    Identity { mesh_id: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]), instance: instance.into() }
}

async fn docker() -> Option<Subject> {
    common::docker::echo_image().await;
    let network = common::docker::TestNetwork::create();
    let runtime = Arc::new(network.docker_runtime("docker:suite"));
    let workload: Describe = |behaviour| Program {
        image: "agentmesh/echo-agent:dev".into(),
        command: String::new(),
        args: behaviour.to_vec(),
    };
    Some(Subject { runtime, workload, _keep: Box::new(network) })
}

async fn process() -> Option<Subject> {
    tokio::task::spawn_blocking(agentmesh_testkit::images::static_binaries).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let runtime = Arc::new(ProcessRuntime::new(identity("process:suite"), state.path().to_owned()));
    let workload: Describe = |behaviour| {
        let binaries = agentmesh_testkit::images::static_binaries();
        let mut args = vec!["--".to_owned(), binaries.echo_agent.display().to_string()];
        args.extend_from_slice(behaviour);
        Program { image: String::new(), command: binaries.shim.display().to_string(), args }
    };
    Some(Subject { runtime, workload, _keep: Box::new(state) })
}

/// The Kubernetes runtime on a real API server, in a namespace of its own,
/// with a kubelet played by the test; `None` where there is no server.
async fn kubernetes() -> Option<Subject> {
    let server = agentmesh_testkit::kube::ApiServer::shared()?;
    let namespace = server.namespace("suite").await;
    let admin = server.admin().await;
    let kubelet = agentmesh_testkit::kube::Kubelet::new(admin.clone(), &namespace).run_echo_agents();
    let settings = KubernetesSettings { deletion_timeout: Duration::from_secs(5), ..KubernetesSettings::default() };
    let runtime = Arc::new(KubernetesRuntime::new(admin, namespace, identity("kubernetes:suite"), settings));
    let workload: Describe = |behaviour| Program {
        image: "agentmesh/echo-agent:dev".into(),
        command: String::new(),
        args: behaviour.to_vec(),
    };
    Some(Subject { runtime, workload, _keep: Box::new(kubelet) })
}

async fn runs_then_stops_and_a_second_stop_finds_nothing(subject: Subject) {
    let runtime = &subject.runtime;
    let spec = subject.spec(&[]);
    let id = spec.workspace_id.clone();
    let started = runtime.start(&spec).await.unwrap();
    assert!(matches!(runtime.probe(&id).await, Probe::Running(_)));
    let again = runtime.start(&spec).await.unwrap();
    assert_eq!(again.workload_id, started.workload_id, "a running workload is not started twice");
    let listed = runtime.list().await.unwrap();
    assert_eq!(listed.iter().filter(|w| w.workspace_id == id).count(), 1, "{listed:?}");

    let refused = runtime.purge(&id).await.unwrap_err();
    assert!(matches!(refused, RuntimeError::Workload(_)), "volumes stay while the workload exists: {refused:?}");
    assert_eq!(runtime.stop(&id, GRACE).await.unwrap(), StopOutcome::Stopped);
    assert_eq!(runtime.probe(&id).await, Probe::Absent);
    assert_eq!(runtime.stop(&id, GRACE).await.unwrap(), StopOutcome::AlreadyGone);
    runtime.purge(&id).await.unwrap();
    assert!(runtime.list().await.unwrap().iter().all(|w| w.workspace_id != id));
}

async fn an_exit_is_reported_as_an_event_and_probed_with_its_code(subject: Subject) {
    let runtime = &subject.runtime;
    let mut events = runtime.watch().await.unwrap();
    let spec = subject.spec(&["--exit-after-ms", "700", "--exit-code", "3"]);
    let id = spec.workspace_id.clone();
    runtime.start(&spec).await.unwrap();
    let exited = tokio::time::timeout(REACT, async {
        while let Some(event) = events.next().await {
            if event.workspace_id == id
                && let Probe::Exited(info) = runtime.probe(&id).await
            {
                return info;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("an event announced the exit");
    assert_eq!(exited.exit_code, Some(3), "{exited:?}");
    runtime.stop(&id, GRACE).await.unwrap();
    runtime.purge(&id).await.unwrap();
}

async fn an_unknown_workspace_is_absent(subject: Subject) {
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(subject.runtime.probe(&id).await, Probe::Absent);
    assert_eq!(subject.runtime.stop(&id, GRACE).await.unwrap(), StopOutcome::AlreadyGone);
}

macro_rules! suite {
    ($($runtime:ident),*) => {
        $(mod $runtime {
            #[tokio::test(flavor = "multi_thread")]
            async fn runs_then_stops_and_a_second_stop_finds_nothing() {
                let Some(subject) = super::$runtime().await else { return };
                super::runs_then_stops_and_a_second_stop_finds_nothing(subject).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn an_exit_is_reported_as_an_event_and_probed_with_its_code() {
                let Some(subject) = super::$runtime().await else { return };
                super::an_exit_is_reported_as_an_event_and_probed_with_its_code(subject).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn an_unknown_workspace_is_absent() {
                let Some(subject) = super::$runtime().await else { return };
                super::an_unknown_workspace_is_absent(subject).await;
            }
        })*
    };
}

suite!(docker, process, kubernetes);

/// The external stand-in runs nothing: it refuses with a hint what would
/// need a workload, and claims nothing about workloads.
#[tokio::test]
async fn external_refuses_container_operations_with_a_hint() {
    let runtime = ExternalRuntime::new(identity("external"));
    assert!(!runtime.runs_workloads());
    let spec = WorkloadSpec {
        workspace_id: uuid::Uuid::new_v4().to_string(),
        workspace_name: "remote".into(),
        image: String::new(),
        command: String::new(),
        args: vec![],
        env: BTreeMap::new(),
        limits: Default::default(),
    };
    let hint = |e: RuntimeError| match e {
        RuntimeError::NotSupported { hint, .. } => hint,
        other => panic!("expected a refusal with a hint, got {other:?}"),
    };
    assert!(hint(runtime.start(&spec).await.unwrap_err()).contains("where it runs"));
    assert!(
        hint(runtime.exec(&spec.workspace_id, &["ls".into()], GRACE).await.unwrap_err())
            .contains("where the agent runs")
    );
    let logs = runtime.logs(
        &spec.workspace_id,
        agentmesh_provisioner::runtime::LogRequest { tail_lines: 1, since: None, follow: false },
    );
    assert!(hint(logs.await.err().unwrap()).contains("where the agent runs"));
    assert!(matches!(runtime.probe(&spec.workspace_id).await, Probe::Unknown(_)), "never a claim about a workload");
    assert!(runtime.list().await.unwrap().is_empty());
    assert_eq!(runtime.stop(&spec.workspace_id, GRACE).await.unwrap(), StopOutcome::AlreadyGone);
}
