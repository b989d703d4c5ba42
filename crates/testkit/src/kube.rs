//! A real Kubernetes API server for tests: etcd and kube-apiserver, started
//! once per test process on free ports, with RBAC on and a static admin
//! token; each test takes a namespace of its own. There is no kubelet,
//! scheduler or controller manager: pods stay Pending unless a test plays
//! the kubelet ([`Kubelet`]), and logs and exec answer 400.
//!
//! The binaries are named by `AGENTMESH_TEST_KUBE_APISERVER` (the
//! kube-apiserver; etcd beside it, or named by `AGENTMESH_TEST_ETCD`). Where
//! it is unset the tests that need a server are skipped with a message,
//! except in CI, which installs them and fails instead.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::tls::TestCa;

/// The variable naming the kube-apiserver binary.
pub const APISERVER_ENV: &str = "AGENTMESH_TEST_KUBE_APISERVER";
/// The variable naming the etcd binary, when it is not beside the API server.
pub const ETCD_ENV: &str = "AGENTMESH_TEST_ETCD";

/// A running API server. Its processes end within a second of the test
/// process that started them.
pub struct ApiServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// A kubeconfig for the admin (group `system:masters`), for kubectl.
    pub kubeconfig: PathBuf,
    /// The CA that signed the server's certificate, PEM.
    pub ca_pem: String,
    /// The server's audit log: one JSON object per request (who, verb,
    /// resource, namespace, response code), written before the answer.
    pub audit_log: PathBuf,
    /// etcd, kube-apiserver and their watchdog.
    _processes: Vec<std::process::Child>,
    _state: tempfile::TempDir,
}

impl ApiServer {
    /// This test process's API server, started on first use; `None` (with a
    /// note) where no binary is named, outside CI.
    pub fn shared() -> Option<&'static ApiServer> {
        // A failed start fails every test that needs the server, once:
        // the tests waiting for it must not each start one of their own.
        static SERVER: OnceLock<Result<Option<ApiServer>, String>> = OnceLock::new();
        let started = SERVER.get_or_init(|| {
            std::panic::catch_unwind(start).map_err(|panic| {
                let message = panic.downcast_ref::<String>().cloned();
                message.or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned())).unwrap_or_default()
            })
        });
        match started {
            Ok(server) => server.as_ref(),
            Err(message) => panic!("the Kubernetes API server did not start: {message}"),
        }
    }

    /// A client acting as the admin.
    pub async fn admin(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the test kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }

    /// A client presenting `token` (a service account's, from the
    /// TokenRequest API) instead of the admin's.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the test kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        config.auth_info.token = Some(token.to_owned().into());
        Client::try_from(config).unwrap()
    }

    /// A fresh namespace for one test. The server has no namespace
    /// controller, so it is never deleted: every test takes a new one.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.admin().await).create(&PostParams::default(), &namespace).await.unwrap();
        name
    }
}

fn binaries() -> Option<(PathBuf, PathBuf)> {
    let Some(apiserver) = std::env::var_os(APISERVER_ENV).map(PathBuf::from) else {
        assert!(std::env::var_os("CI").is_none(), "{APISERVER_ENV} must name a kube-apiserver in CI");
        eprintln!("skipping the real Kubernetes API server: {APISERVER_ENV} is not set");
        return None;
    };
    let etcd = std::env::var_os(ETCD_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| apiserver.parent().expect("a path to the binary").join("etcd"));
    Some((apiserver, etcd))
}

fn start() -> Option<ApiServer> {
    let (apiserver, etcd) = binaries()?;
    let state = tempfile::Builder::new().prefix("agentmesh-kube-").tempdir_in(fast_dir()).unwrap();
    let dir = state.path();
    let (etcd_port, peer_port, port) = (crate::free_port(), crate::free_port(), crate::free_port());

    let ca = TestCa::new();
    let serving = ca.issue(&["127.0.0.1", "localhost"]);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    for (name, contents) in [
        ("ca.crt", ca.ca_pem()),
        ("serving.crt", serving.cert_pem),
        ("serving.key", serving.key_pem),
        ("service-accounts.key", signing_key.serialize_pem()),
        ("service-accounts.pub", signing_key.public_key_pem()),
        ("tokens.csv", format!("{admin_token},admin,admin-uid,\"system:masters\"\n")),
        (
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
                .to_owned(),
        ),
    ] {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let etcd = Command::new(etcd)
        .args(["--name", "test", "--unsafe-no-fsync", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("test=http://127.0.0.1:{peer_port}")])
        .stdout(Stdio::null())
        .stderr(log("etcd.log"))
        .spawn()
        .expect("starting etcd");
    let path = |name: &str| dir.join(name).display().to_string();
    // Without a controller manager nobody creates the "default" service
    // account, so its admission plugin would refuse every pod.
    let mut apiserver = Command::new(apiserver)
        .arg(format!("--etcd-servers={etcd_url}"))
        .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", &format!("--secure-port={port}")])
        .arg(format!("--tls-cert-file={}", path("serving.crt")))
        .arg(format!("--tls-private-key-file={}", path("serving.key")))
        .arg(format!("--client-ca-file={}", path("ca.crt")))
        .arg(format!("--token-auth-file={}", path("tokens.csv")))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", path("service-accounts.pub")))
        .arg(format!("--service-account-signing-key-file={}", path("service-accounts.key")))
        .args(["--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none"])
        .args(["--disable-admission-plugins=ServiceAccount", "--profiling=false", "--v=1"])
        .arg(format!("--audit-policy-file={}", path("audit-policy.yaml")))
        .arg(format!("--audit-log-path={}", path("audit.log")))
        .stdout(Stdio::null())
        .stderr(log("kube-apiserver.log"))
        .spawn()
        .expect("starting kube-apiserver");
    // The processes must not outlive the test process, which has no
    // destructor for statics: a watchdog ends them when it is gone.
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} {}",
            std::process::id(),
            apiserver.id(),
            etcd.id()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the watchdog");

    let url = format!("https://127.0.0.1:{port}");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
             certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {admin_token}\ncontexts:\n- \
             name: test\n  context: {{cluster: test, user: admin, namespace: default}}\ncurrent-context: test\n",
            path("ca.crt")
        ),
    )
    .unwrap();
    let audit_log = dir.join("audit.log");
    let mut server = ApiServer { url, kubeconfig, ca_pem: ca.ca_pem(), audit_log, _processes: vec![], _state: state };
    wait_ready(&server, &mut apiserver);
    server._processes = vec![etcd, apiserver, watchdog];
    Some(server)
}

/// Where etcd's data goes: memory when the machine has it, as etcd syncs
/// on every write.
fn fast_dir() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm } else { Path::new("/tmp") }
}

/// Waits for `/readyz`: the server is up and its bootstrap (RBAC roles,
/// default namespaces) is done. Runs on a runtime of its own, since the
/// caller may be any test's runtime, or none.
fn wait_ready(server: &ApiServer, process: &mut std::process::Child) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let client = server.admin().await;
                    for _ in 0..600 {
                        if let Ok(Some(exit)) = process.try_wait() {
                            let log = server._state.path().join("kube-apiserver.log");
                            let log = std::fs::read_to_string(&log).unwrap_or_default();
                            let tail: Vec<&str> = log.lines().rev().take(5).collect();
                            panic!("kube-apiserver exited ({exit}): {}", tail.join("\n"));
                        }
                        let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                        if client.request_text(request).await.is_ok_and(|body| body == "ok") {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    panic!("kube-apiserver not ready within 60 s; see {}", server._state.path().display());
                })
            })
            .join()
            .unwrap()
    })
}

/// Plays the kubelet of a namespace: moves pods through the states a
/// kubelet reports, through the API's status subresource.
#[derive(Clone)]
pub struct Kubelet {
    pods: Api<Pod>,
}

impl Kubelet {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { pods: Api::namespaced(client, namespace) }
    }

    /// Runs every pod created in the namespace from now on as the echo
    /// agent would: it starts at once, and one whose arguments hold
    /// `--exit-after-ms N` (and `--exit-code C`, 0 by default) ends N ms
    /// later with C. Plays until the returned guard is dropped.
    pub fn run_echo_agents(&self) -> PlayingKubelet {
        let kubelet = self.clone();
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            // From the namespace's current version: a watch from "0" asks
            // for the initial state, which this server's etcd cannot give.
            let listed = kubelet.pods.list(&Default::default()).await.unwrap();
            let mut version = listed.metadata.resource_version.unwrap_or_default();
            loop {
                let params = kube::api::WatchParams::default();
                let mut events = kubelet.pods.watch(&params, &version).await.unwrap().boxed();
                while let Some(Ok(event)) = events.next().await {
                    let pod = match event {
                        kube::api::WatchEvent::Added(pod) => pod,
                        kube::api::WatchEvent::Bookmark(bookmark) => {
                            version = bookmark.metadata.resource_version;
                            continue;
                        }
                        kube::api::WatchEvent::Modified(pod) | kube::api::WatchEvent::Deleted(pod) => {
                            version = pod.metadata.resource_version.unwrap_or(version);
                            continue;
                        }
                        kube::api::WatchEvent::Error(error) => panic!("the kubelet's watch failed: {error:?}"),
                    };
                    version = pod.metadata.resource_version.clone().unwrap_or(version);
                    let Some(name) = pod.metadata.name.clone() else { continue };
                    let args =
                        pod.spec.map(|spec| spec.containers[0].args.clone().unwrap_or_default()).unwrap_or_default();
                    let flag = |flag: &str| -> Option<u64> {
                        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)?.parse().ok())
                    };
                    let exit = flag("--exit-after-ms").map(|after| (after, flag("--exit-code").unwrap_or(0) as i32));
                    let kubelet = kubelet.clone();
                    tokio::spawn(async move {
                        kubelet.run(&name).await;
                        if let Some((after_ms, code)) = exit {
                            tokio::time::sleep(Duration::from_millis(after_ms)).await;
                            kubelet.exit(&name, code).await;
                        }
                    });
                }
            }
        });
        PlayingKubelet(task)
    }

    /// Merges `status` into the pod's status, as a kubelet reports it. A pod
    /// deleted meanwhile has no status to patch, as for a kubelet.
    pub async fn set_status(&self, pod: &str, status: serde_json::Value) {
        let patch = Patch::Merge(json!({ "status": status }));
        match self.pods.patch_status(pod, &PatchParams::default(), &patch).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => panic!("patching the status of pod {pod}: {error}"),
        }
    }

    /// The pod's container started: phase Running, container running.
    pub async fn run(&self, pod: &str) {
        let started = k8s_openapi::jiff::Timestamp::now().to_string();
        self.set_status(
            pod,
            json!({
                "phase": "Running",
                "startTime": started,
                "containerStatuses": [{
                    "name": "workload", "image": "agentmesh/echo-agent:dev", "imageID": "", "ready": true,
                    "restartCount": 0, "started": true, "state": {"running": {"startedAt": started}}
                }]
            }),
        )
        .await;
    }

    /// The container waits to start for `reason` (an image that cannot be
    /// pulled, say).
    pub async fn waiting(&self, pod: &str, reason: &str, message: &str) {
        self.set_status(
            pod,
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "workload", "image": "agentmesh/echo-agent:dev", "imageID": "", "ready": false,
                "restartCount": 0, "started": false, "state": {"waiting": {"reason": reason, "message": message}}
            }]}),
        )
        .await;
    }

    /// The container ended with `exit_code` while the pod's phase still
    /// says `phase`, as a kubelet reports it in the moment between the two.
    pub async fn container_exit(&self, pod: &str, exit_code: i32, phase: &str) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.set_status(
            pod,
            json!({"phase": phase, "containerStatuses": [{
                "name": "workload", "image": "agentmesh/echo-agent:dev", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": exit_code, "startedAt": now, "finishedAt": now}}
            }]}),
        )
        .await;
    }

    /// The pod's container ended with `exit_code`: phase Succeeded for 0,
    /// Failed otherwise.
    pub async fn exit(&self, pod: &str, exit_code: i32) {
        self.container_exit(pod, exit_code, if exit_code == 0 { "Succeeded" } else { "Failed" }).await;
    }
}

/// A kubelet playing in the background; it stops when this is dropped.
pub struct PlayingKubelet(tokio::task::JoinHandle<()>);

impl Drop for PlayingKubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}
