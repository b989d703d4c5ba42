//! `deploy/kubernetes` on a real API server: both overlays render with
//! kubectl's kustomize and are applied server-side (validated by the server,
//! dry-run first), `secrets.sh` creates the installation's secrets once, and
//! the provisioner's Kubernetes runtime, running as the provisioner's
//! ServiceAccount (a token from the TokenRequest API), takes a workspace
//! through create, running, stop and delete with exactly the rights its Role
//! grants: every request it made was allowed, every right was used, and what
//! lies outside the Role is refused.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use agentmesh_provisioner::runtime::{
    Identity, LogRequest, Probe, Runtime, StopOutcome, WorkloadSpec,
    kubernetes::{KubernetesRuntime, KubernetesSettings},
};
use agentmesh_testkit::kube::{ApiServer, Kubelet};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::Value;

const WORKLOADS: &str = "agentmesh-workloads";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Runs kubectl against the test server, with `stdin` on its standard input.
fn kubectl(server: &ApiServer, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &server.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl (with kustomize built in) must be installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "kubectl {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// Renders an overlay and applies it server-side: first as a dry run, which
/// the server validates in full (once the namespaces it fills exist), then
/// for real.
fn apply(server: &ApiServer, overlay: &str) -> String {
    let rendered =
        kubectl(server, &["kustomize", &manifests().join("overlays").join(overlay).display().to_string()], None);
    for namespace in ["agentmesh", "agentmesh-workloads"] {
        let manifest = kubectl(server, &["create", "namespace", namespace, "--dry-run=client", "-o", "yaml"], None);
        kubectl(server, &["apply", "-f", "-"], Some(&manifest));
    }
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--server-side", "--field-manager=agentmesh-test", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        kubectl(server, &args, Some(&rendered));
    }
    rendered
}

/// Each service's configuration file in the base is one its binary accepts:
/// every key known, every value valid.
#[test]
fn every_service_accepts_its_configuration_from_the_base() {
    let binaries = agentmesh_testkit::images::static_binaries();
    for (service, binary) in [
        ("registry", &binaries.registry),
        ("provisioner", &binaries.provisioner),
        ("a2a-gateway", &binaries.gateway),
        ("scheduler", &binaries.scheduler),
    ] {
        let config = manifests().join(format!("base/config/{service}.toml"));
        let output = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("--print-config")
            .env("AGENTMESH_DATABASE_URL", format!("postgres://agentmesh@postgres:5432/agentmesh_{service}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{service} refuses {}: {stderr}", config.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overlays_apply_and_the_provisioner_runs_workspaces_with_exactly_its_roles_rights() {
    let Some(server) = ApiServer::shared() else { return };
    let admin = server.admin().await;

    let dev = apply(server, "dev");
    assert!(dev.contains("kind: StatefulSet"), "the dev overlay brings its PostgreSQL");
    apply(server, "production");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "agentmesh");
    for (name, replicas) in [("registry", 2), ("provisioner", 1), ("a2a-gateway", 2), ("scheduler", 3)] {
        let deployment = deployments.get(name).await.unwrap();
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(replicas), "{name}");
        let pod = spec.template.spec.unwrap();
        let container = &pod.containers[0];
        assert!(container.readiness_probe.as_ref().unwrap().grpc.is_some(), "{name}: gRPC readiness");
        assert!(container.liveness_probe.as_ref().unwrap().grpc.is_some(), "{name}: gRPC liveness");
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true), "{name}");
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), "agentmesh");
    assert_eq!(budgets.list(&ListParams::default()).await.unwrap().items.len(), 4);

    // The installation's secrets, created once and kept after.
    let secrets_script = manifests().join("secrets.sh").display().to_string();
    for expected in ["created", "kept"] {
        let output = Command::new("bash").arg(&secrets_script).env("KUBECONFIG", &server.kubeconfig).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.lines().all(|line| line.contains(expected)), "{said}");
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "agentmesh");
    let installation = secrets.get("agentmesh-installation").await.unwrap().data.unwrap();
    let keys: BTreeSet<&str> = installation.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["mesh-id", "operator.token", "service.token"]));

    // The provisioner's runtime, as the provisioner's ServiceAccount.
    let token = kubectl(server, &["create", "token", "provisioner", "-n", "agentmesh", "--duration=1h"], None);
    let as_provisioner = server.client_with_token(token.trim()).await;
    let identity = Identity { mesh_id: "manifests".into(), instance: format!("kubernetes:{WORKLOADS}") };
    let runtime = KubernetesRuntime::new(
        as_provisioner.clone(),
        WORKLOADS.into(),
        identity.clone(),
        KubernetesSettings { deletion_timeout: Duration::from_secs(5), ..KubernetesSettings::default() },
    );
    let workspace_id = uuid::Uuid::new_v4().to_string();
    let spec = WorkloadSpec {
        workspace_id: workspace_id.clone(),
        workspace_name: "rbac".into(),
        image: "agentmesh/echo-agent:dev".into(),
        command: String::new(),
        args: vec![],
        env: Default::default(),
        limits: Default::default(),
    };
    let mut watch = runtime.watch().await.unwrap();
    runtime.start(&spec).await.unwrap();
    let pod = identity.workload_name(&workspace_id);
    Kubelet::new(admin.clone(), WORKLOADS).run(&pod).await;
    assert!(matches!(runtime.probe(&workspace_id).await, Probe::Running(_)));
    assert_eq!(runtime.list().await.unwrap().len(), 1);
    tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().expect("a watch event");
    // Without a kubelet the server cannot serve logs or exec (400), but it
    // authorises them first, and that is what is being shown here.
    runtime.logs(&workspace_id, LogRequest { tail_lines: 10, since: None, follow: false }).await.err();
    runtime.exec(&workspace_id, &["true".to_owned()], Duration::from_secs(5)).await.err();
    assert_eq!(runtime.stop(&workspace_id, Duration::ZERO).await.unwrap(), StopOutcome::Stopped);
    runtime.purge(&workspace_id).await.unwrap();

    // Outside its Role: Secrets, and any other namespace.
    let forbidden = |result: kube::Result<_>| matches!(result, Err(kube::Error::Api(status)) if status.code == 403);
    let secrets_there: Api<Secret> = Api::namespaced(as_provisioner.clone(), WORKLOADS);
    assert!(forbidden(secrets_there.list(&ListParams::default()).await.map(drop)), "Secrets are not the provisioner's");
    let mesh_pods: Api<Pod> = Api::namespaced(as_provisioner.clone(), "agentmesh");
    assert!(forbidden(mesh_pods.list(&ListParams::default()).await.map(drop)), "nor the mesh's own namespace");
    let elsewhere: Api<Pod> = Api::namespaced(as_provisioner, "default");
    let stray: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stray"}, "spec": {"containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    assert!(forbidden(elsewhere.create(&PostParams::default(), &stray).await.map(drop)), "nor the default namespace");

    // Sufficient and minimal: in the workload namespace every request the
    // runtime made was allowed, and every right of its Role was used.
    let used = requests_by("system:serviceaccount:agentmesh:provisioner", &server.audit_log);
    let in_workloads: BTreeSet<(String, String, u16)> =
        used.iter().filter(|r| r.0 == WORKLOADS).map(|r| (r.1.clone(), r.2.clone(), r.3)).collect();
    let refused: Vec<_> =
        in_workloads.iter().filter(|(resource, _, code)| *code == 403 && resource != "secrets").collect();
    assert!(refused.is_empty(), "the Role refused the runtime: {refused:?}");
    let mut exercised: BTreeSet<(String, String)> =
        in_workloads.iter().filter(|(_, _, code)| *code != 403).map(|(r, v, _)| (r.clone(), v.clone())).collect();
    // An exec is a WebSocket upgrade of a GET, which clusters also authorise
    // as `create` once a kubelet takes it; a server without a kubelet
    // refuses it (400) before that second check, so it cannot show it used.
    exercised.insert(("pods/exec".to_owned(), "create".to_owned()));
    assert_eq!(exercised, granted(&admin).await, "rights granted and rights used differ");
}

/// The (resource[/subresource], verb) pairs the provisioner's Role grants.
async fn granted(admin: &kube::Client) -> BTreeSet<(String, String)> {
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), WORKLOADS);
    let role = roles.get("agentmesh-provisioner").await.unwrap();
    let mut pairs = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        for resource in rule.resources.unwrap_or_default() {
            for verb in &rule.verbs {
                pairs.insert((resource.clone(), verb.clone()));
            }
        }
    }
    pairs
}

/// (namespace, resource[/subresource], verb, response code) of every
/// request `user` made, from the server's audit log. A watch still open has
/// only started; its code is the one it started with.
fn requests_by(user: &str, audit_log: &Path) -> Vec<(String, String, String, u16)> {
    let log = std::fs::read_to_string(audit_log).unwrap();
    let mut by_request = std::collections::BTreeMap::new();
    for event in log.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
        let answered = matches!(event["stage"].as_str(), Some("ResponseStarted" | "ResponseComplete"));
        if event["user"]["username"] != user || !answered {
            continue;
        }
        let object = &event["objectRef"];
        let Some(mut resource) = object["resource"].as_str().map(str::to_owned) else { continue };
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let request = (
            object["namespace"].as_str().unwrap_or_default().to_owned(),
            resource,
            event["verb"].as_str().unwrap_or_default().to_owned(),
            event["responseStatus"]["code"].as_u64().unwrap_or_default() as u16,
        );
        by_request.insert(event["auditID"].as_str().unwrap_or_default().to_owned(), request);
    }
    by_request.into_values().collect()
}
