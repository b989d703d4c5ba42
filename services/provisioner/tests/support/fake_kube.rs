//! A stateful fake of the Kubernetes API for runtime tests: pods and
//! PersistentVolumeClaims of one namespace in memory, served to a real
//! `kube::Client` through a `tower_test` mock, so the runtime's requests go
//! through kube's own encoding and decoding.
//!
//! Include it with `#[path = "support/fake_kube.rs"] mod fake_kube;`. It
//! needs a Tokio runtime (multi-threaded or current-thread) and the
//! provisioner's dev-dependencies.
//!
//! # Driving it
//!
//! ```ignore
//! let fake = FakeKube::new("agents", &identity);
//! let runtime = KubernetesRuntime::new(fake.client(), "agents".into(), identity, settings);
//! runtime.start(&spec).await?;
//! fake.wait_until("pod runs", |f| f.phase(&name).as_deref() == Some("Running")).await;
//! fake.terminate(&name, 3);                 // phase Failed, exit code 3, MODIFIED event
//! fake.assert_clean();                      // every request was one the runtime may make
//! ```
//!
//! Behaviour, as a real API server and kubelet would show it:
//! - A created pod is `Pending` (container waiting, `ContainerCreating`) and,
//!   after [`FakeKube::set_start_delay`] (20 ms), `Running`; each step is a
//!   watch event. [`FakeKube::set_auto_run`]`(false)` keeps new pods pending
//!   until [`FakeKube::run_pod`].
//! - If the container's command or args hold `--exit-after-ms <N>` (and
//!   optionally `--exit-code <C>`, default 0), the container terminates with C
//!   N ms after it starts running: `Succeeded` for 0, `Failed` otherwise.
//! - DELETE marks the pod terminating (deletionTimestamp, MODIFIED) and
//!   removes it after [`FakeKube::set_deletion_delay`] (20 ms; DELETED event).
//!   Claims are removed at once.
//! - LIST and WATCH honour equality, inequality and existence label
//!   selectors; a watch at resourceVersion "0" (or none) first sends ADDED for
//!   every matching pod, then live events, and ends after `timeoutSeconds` or
//!   [`FakeKube::break_watches`].
//! - `GET .../log` serves lines written with [`FakeKube::write_log`]
//!   (`tailLines`, `sinceTime`, `timestamps`, `follow` until the container ends).
//! - `GET .../exec` upgrades to a real WebSocket (channel protocol v5/v4) and
//!   answers from [`FakeKube::on_exec`]; by default `echo`, `true`, `false`,
//!   `printenv NAME`, `hostname` and `sleep SECONDS` work and anything else
//!   "is not found in $PATH".
//! - Missing objects get a `Status` 404 `NotFound`, name clashes 409
//!   `AlreadyExists`; `GET /version` answers [`FakeKube::set_version`].
//!
//! Checks (each failure is a violation, answered 400 `BadRequest`):
//! unknown paths or methods, another namespace, a pod or pod LIST/WATCH
//! without this identity's labels or selector, a pod that is not
//! `restartPolicy: Never` with exactly one container, malformed env or limits,
//! a pod created before the claim it mounts, deleting an object without this
//! identity's labels, and deleting a claim a pod still mounts. Tests call
//! [`FakeKube::assert_clean`]; [`FakeKube::requests`] records every request.
//!
//! Trouble on demand: [`FakeKube::fail_next`] makes the next N requests
//! answer 500, refuse with a Status, answer a non-JSON error page, hang
//! forever, or drop the connection.

#![allow(dead_code, reason = "each test binary uses the part of the fake it needs")]

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use agentmesh_provisioner::runtime::{Identity, labels};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};
use tower_test::mock::{Handle, SendResponse};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body the fake answers with: whole, streamed, or hyper's own for exec.
pub type FakeBody = UnsyncBoxBody<Bytes, BoxError>;
type FakeHandle = Handle<Request<kube::client::Body>, Response<FakeBody>>;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The path without the query, e.g. "/api/v1/namespaces/agents/pods/am-m-…".
    pub path: String,
    /// Decoded query parameters; repeated keys (exec's `command`) keep every value.
    pub query: Vec<(String, String)>,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
}

impl Recorded {
    /// The first value of a query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is(&self, method: Method, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// What an injected failure does to one request.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 500 with an `InternalError` Status.
    ServerError,
    /// The API server's refusal: a Status with this code and reason, e.g. (403, "Forbidden").
    Refused(u16, &'static str),
    /// A status code with a non-JSON body, as a proxy in front of the API
    /// server would answer (a 404 of this kind says nothing about objects).
    Plain(u16),
    /// Never answer.
    Hang,
    /// The connection breaks before an answer.
    Disconnect,
}

/// What a command run with exec did.
#[derive(Debug, Clone, Default)]
pub struct ExecReply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `Some(code)`: it ran and exited; `None`: it could not start, with `stderr` as the reason.
    pub exit_code: Option<i32>,
    /// How long it runs before answering.
    pub delay: Duration,
}

impl ExecReply {
    pub fn exit(code: i32, stdout: &str, stderr: &str) -> Self {
        Self { stdout: stdout.into(), stderr: stderr.into(), exit_code: Some(code), delay: Duration::ZERO }
    }
}

/// One exec request as the handler sees it.
#[derive(Debug, Clone)]
pub struct ExecCall {
    pub pod: String,
    pub command: Vec<String>,
    /// The container's environment from the pod spec.
    pub env: BTreeMap<String, String>,
}

type ExecHandler = Arc<dyn Fn(&ExecCall) -> ExecReply + Send + Sync>;

pub struct FakeKube {
    shared: Arc<Shared>,
    client: kube::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    namespace: String,
    identity: Identity,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pod,
    Claim,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::Claim => "persistentvolumeclaims",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Claim => "PersistentVolumeClaim",
        }
    }
}

struct Stream {
    id: u64,
    /// The pod a log follower reads; the selector a watcher matches.
    pod: String,
    selector: Vec<Requirement>,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct State {
    objects: BTreeMap<Kind, BTreeMap<String, Value>>,
    /// Log lines per pod name: (RFC 3339 time, text).
    logs: BTreeMap<String, Vec<(Timestamp, String)>>,
    watchers: Vec<Stream>,
    followers: Vec<Stream>,
    next_id: u64,
    resource_version: u64,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    failures: VecDeque<Failure>,
    auto_run: bool,
    start_delay: Duration,
    deletion_delay: Duration,
    version: String,
    exec: ExecHandler,
}

impl FakeKube {
    /// Starts the fake for one namespace, checking requests against `identity`.
    pub fn new(namespace: &str, identity: &Identity) -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<FakeBody>>();
        let shared = Arc::new(Shared {
            namespace: namespace.to_owned(),
            identity: identity.clone(),
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                logs: BTreeMap::new(),
                watchers: Vec::new(),
                followers: Vec::new(),
                next_id: 0,
                resource_version: 1000,
                requests: Vec::new(),
                violations: Vec::new(),
                failures: VecDeque::new(),
                auto_run: true,
                start_delay: Duration::from_millis(20),
                deletion_delay: Duration::from_millis(20),
                version: "v1.31.2".to_owned(),
                exec: Arc::new(default_exec),
            }),
        });
        let server = tokio::spawn(serve(shared.clone(), handle));
        Self { client: kube::Client::new(service, namespace), shared, server }
    }

    /// A client whose default namespace is the fake's.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// The pod name the identity gives a workspace.
    pub fn pod_name(&self, workspace_id: &str) -> String {
        self.shared.identity.workload_name(workspace_id)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // ----- knobs -----

    /// Whether new pods go from Pending to Running on their own (default true).
    pub fn set_auto_run(&self, auto_run: bool) {
        self.state().auto_run = auto_run;
    }

    pub fn set_start_delay(&self, delay: Duration) {
        self.state().start_delay = delay;
    }

    /// How long a deleted pod stays terminating; make it long to play a stuck kubelet.
    pub fn set_deletion_delay(&self, delay: Duration) {
        self.state().deletion_delay = delay;
    }

    /// The `gitVersion` `/version` reports (default "v1.31.2").
    pub fn set_version(&self, git_version: &str) {
        self.state().version = git_version.to_owned();
    }

    /// Replaces the exec handler.
    pub fn on_exec(&self, handler: impl Fn(&ExecCall) -> ExecReply + Send + Sync + 'static) {
        self.state().exec = Arc::new(handler);
    }

    /// The next `count` requests, whatever they are, meet `failure`.
    pub fn fail_next(&self, count: usize, failure: Failure) {
        self.state().failures.extend(std::iter::repeat_n(failure, count));
    }

    // ----- the cluster's side -----

    /// Stores a pod as if someone else had created it, unchecked. Build one
    /// with [`running_pod`].
    pub fn insert_pod(&self, pod: Value) {
        self.shared.insert(Kind::Pod, pod);
    }

    /// Stores a claim as if someone else had created it, unchecked.
    pub fn insert_claim(&self, claim: Value) {
        self.shared.insert(Kind::Claim, claim);
    }

    /// Makes a pending pod run (and arms `--exit-after-ms`).
    pub fn run_pod(&self, name: &str) {
        let uid = self.uid(name);
        Shared::run(&self.shared, name, &uid);
    }

    /// Ends the pod's container with `exit_code`: phase Succeeded for 0, Failed otherwise.
    pub fn terminate(&self, name: &str, exit_code: i32) {
        self.shared.terminate(name, None, exit_code, true);
    }

    /// Ends the container but leaves the phase Running, as a pod looks
    /// between the kubelet seeing the exit and updating the phase.
    pub fn terminate_container(&self, name: &str, exit_code: i32) {
        self.shared.terminate(name, None, exit_code, false);
    }

    /// Puts the pod back to Pending with its container waiting for `reason`
    /// (e.g. "ImagePullBackOff").
    pub fn set_waiting(&self, name: &str, reason: &str, message: &str) {
        self.shared.update_pod(name, |pod, _| {
            pod["status"]["phase"] = json!("Pending");
            pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": reason, "message": message}});
            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
        });
    }

    /// Sets the pod's phase to anything, e.g. "Unknown" for a lost node.
    pub fn set_phase(&self, name: &str, phase: &str) {
        self.shared.update_pod(name, |pod, _| pod["status"]["phase"] = json!(phase));
    }

    /// Deletes the pod from outside (eviction, `kubectl delete --force`): gone at once.
    pub fn remove_pod(&self, name: &str) {
        self.shared.finish_deletion(name, None);
    }

    /// Appends a line to the pod's log, stamped now.
    pub fn write_log(&self, name: &str, text: &str) {
        let now = now();
        let mut state = self.state();
        state.logs.entry(name.to_owned()).or_default().push((now, text.to_owned()));
        let line = Bytes::from(format!("{} {text}\n", log_time(now)));
        state.followers.retain(|f| f.pod != name || f.tx.send(line.clone()).is_ok());
    }

    /// Ends every open watch, as an API server restart would.
    pub fn break_watches(&self) {
        self.state().watchers.clear();
    }

    // ----- observation -----

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.state().objects.get(&Kind::Pod).and_then(|pods| pods.get(name)).cloned()
    }

    pub fn claim(&self, name: &str) -> Option<Value> {
        self.state().objects.get(&Kind::Claim).and_then(|claims| claims.get(name)).cloned()
    }

    pub fn pod_names(&self) -> Vec<String> {
        self.state().objects.get(&Kind::Pod).map(|pods| pods.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn claim_names(&self) -> Vec<String> {
        self.state().objects.get(&Kind::Claim).map(|claims| claims.keys().cloned().collect()).unwrap_or_default()
    }

    /// The pod's phase, if it exists.
    pub fn phase(&self, name: &str) -> Option<String> {
        self.pod(name).and_then(|pod| pod["status"]["phase"].as_str().map(str::to_owned))
    }

    fn uid(&self, name: &str) -> String {
        self.pod(name).and_then(|pod| pod["metadata"]["uid"].as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// How many watches are open.
    pub fn watchers(&self) -> usize {
        let mut state = self.state();
        state.watchers.retain(|w| !w.tx.is_closed());
        state.watchers.len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Panics with the list of violations, if there are any.
    #[track_caller]
    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(violations.is_empty(), "requests the runtime should not have made:\n{}", violations.join("\n"));
    }

    /// Polls `condition` every 10 ms for up to 5 s; panics naming `what` if it never holds.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        for _ in 0..500 {
            if condition(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }
}

/// A running pod object with the given labels, for seeding the fake with
/// pods the runtime did not create.
pub fn running_pod(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let now = object_time(now());
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "startTime": now,
            "containerStatuses": [{
                "name": "main", "image": "busybox", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}
            }]
        }
    })
}

// ===== the server =====

async fn serve(shared: Arc<Shared>, mut handle: FakeHandle) {
    while let Some((request, respond)) = handle.next_request().await {
        tokio::spawn(answer(shared.clone(), request, respond));
    }
}

async fn answer(shared: Arc<Shared>, request: Request<kube::client::Body>, respond: SendResponse<Response<FakeBody>>) {
    let (parts, body) = request.into_parts();
    let body = body.collect_bytes().await.unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        body: serde_json::from_slice(&body).ok(),
    };
    let failure = {
        let mut state = shared.lock();
        state.requests.push(recorded.clone());
        state.failures.pop_front()
    };
    match failure {
        None => {}
        Some(Failure::ServerError) => {
            return respond.send_response(status(500, "InternalError", "etcdserver: request timed out"));
        }
        Some(Failure::Refused(code, reason)) => {
            return respond.send_response(status(code, reason, &format!("refused by the fake: {reason}")));
        }
        Some(Failure::Plain(code)) => {
            let response = Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "text/html")
                .body(full(format!("<html><body>{code}</body></html>")))
                .unwrap_or_default();
            return respond.send_response(response);
        }
        Some(Failure::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return drop(respond);
        }
        Some(Failure::Disconnect) => {
            return respond.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset"));
        }
    }
    let response = match route(&shared, &recorded, &parts.headers).await {
        Ok(response) => response,
        Err(violation) => {
            let message = format!("{} {}: {violation}", recorded.method, parts.uri);
            shared.lock().violations.push(message.clone());
            status(400, "BadRequest", &message)
        }
    };
    respond.send_response(response);
}

async fn route(
    shared: &Arc<Shared>,
    request: &Recorded,
    headers: &http::HeaderMap,
) -> Result<Response<FakeBody>, String> {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    if segments == ["version"] && request.method == Method::GET {
        let version = shared.lock().version.clone();
        return Ok(json_response(200, &version_info(&version)));
    }
    let ["api", "v1", "namespaces", namespace, rest @ ..] = segments.as_slice() else {
        return Err("not a path the runtime uses".to_owned());
    };
    if *namespace != shared.namespace {
        return Err(format!("namespace {namespace} is not the runtime's namespace {}", shared.namespace));
    }
    let kind = match rest.first() {
        Some(&"pods") => Kind::Pod,
        Some(&"persistentvolumeclaims") => Kind::Claim,
        _ => return Err("not a resource the runtime uses".to_owned()),
    };
    let method = &request.method;
    match &rest[1..] {
        [] if *method == Method::GET && request.param("watch") == Some("true") => shared.watch(kind, request),
        [] if *method == Method::GET => shared.list(kind, request),
        [] if *method == Method::POST => shared.create(kind, request),
        [name] if *method == Method::GET => Ok(shared.get(kind, name)),
        [name] if *method == Method::DELETE => shared.delete(kind, name, request),
        [name, "log"] if kind == Kind::Pod && *method == Method::GET => shared.logs(name, request),
        [name, "exec"] if kind == Kind::Pod && *method == Method::GET => shared.exec(name, request, headers).await,
        _ => Err("not an operation the runtime uses".to_owned()),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, kind: Kind, mut object: Value) {
        let mut state = self.lock();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        stamp_new(&mut object, &self.namespace, state.bump());
        if kind == Kind::Pod {
            state.emit("ADDED", &object);
        }
        state.objects.entry(kind).or_default().insert(name, object);
    }

    fn get(&self, kind: Kind, name: &str) -> Response<FakeBody> {
        match self.lock().objects.get(&kind).and_then(|objects| objects.get(name)) {
            Some(object) => json_response(200, object),
            None => not_found(kind, name),
        }
    }

    /// Checks that a LIST or WATCH of pods selects exactly this identity's.
    fn selector(&self, kind: Kind, request: &Recorded) -> Result<Vec<Requirement>, String> {
        let selector = parse_selector(request.param("labelSelector").unwrap_or_default())?;
        let requires = |key: &str, value: &str| {
            selector.iter().any(|r| matches!(r, Requirement::Equals(k, v) if k == key && v == value))
        };
        let identity = &self.identity;
        if kind == Kind::Pod
            && !(requires(labels::MESH_ID, &identity.mesh_id)
                && requires(labels::RUNTIME_INSTANCE, &identity.instance_label()))
        {
            return Err(format!(
                "label selector {:?} does not select this runtime instance's pods",
                request.param("labelSelector")
            ));
        }
        Ok(selector)
    }

    fn list(&self, kind: Kind, request: &Recorded) -> Result<Response<FakeBody>, String> {
        let selector = self.selector(kind, request)?;
        let state = self.lock();
        let items: Vec<&Value> = state
            .objects
            .get(&kind)
            .into_iter()
            .flat_map(|objects| objects.values())
            .filter(|object| matches(&selector, object))
            .collect();
        Ok(json_response(
            200,
            &json!({
                "apiVersion": "v1",
                "kind": format!("{}List", kind.name()),
                "metadata": {"resourceVersion": state.resource_version.to_string()},
                "items": items,
            }),
        ))
    }

    fn watch(self: &Arc<Self>, kind: Kind, request: &Recorded) -> Result<Response<FakeBody>, String> {
        if kind != Kind::Pod {
            return Err("the runtime watches only pods".to_owned());
        }
        let selector = self.selector(kind, request)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.lock();
            if matches!(request.param("resourceVersion"), None | Some("0") | Some("")) {
                for pod in state.objects.get(&Kind::Pod).into_iter().flat_map(|pods| pods.values()) {
                    if matches(&selector, pod) {
                        let _ = tx.send(event_line("ADDED", pod));
                    }
                }
            }
            let id = state.next_id();
            state.watchers.push(Stream { id, pod: String::new(), selector, tx });
            id
        };
        let seconds = request.param("timeoutSeconds").and_then(|s| s.parse().ok()).unwrap_or(1800);
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            shared.lock().watchers.retain(|w| w.id != id);
        });
        Ok(stream_response(rx))
    }

    fn create(self: &Arc<Self>, kind: Kind, request: &Recorded) -> Result<Response<FakeBody>, String> {
        let Some(mut object) = request.body.clone() else {
            return Err("no JSON body".to_owned());
        };
        if object["kind"] != kind.name() || object["apiVersion"] != "v1" {
            return Err(format!("body is not a v1 {}", kind.name()));
        }
        if let Some(namespace) = object["metadata"]["namespace"].as_str()
            && namespace != self.namespace
        {
            return Err(format!("object for namespace {namespace}"));
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let workspace_id = match kind {
            Kind::Pod => self.identity.workspace_of_name(&name).map(str::to_owned),
            Kind::Claim => {
                name.strip_suffix("-data").and_then(|pod| self.identity.workspace_of_name(pod)).map(str::to_owned)
            }
        }
        .ok_or_else(|| format!("{} name {name:?} does not look like this mesh's", kind.name()))?;
        self.check_labels(&object, &workspace_id)?;
        let mut state = self.lock();
        if kind == Kind::Pod {
            check_pod_spec(&object["spec"])?;
            for claim in object["spec"]["volumes"].as_array().into_iter().flatten() {
                if let Some(claim) = claim["persistentVolumeClaim"]["claimName"].as_str()
                    && !state.objects.get(&Kind::Claim).is_some_and(|claims| claims.contains_key(claim))
                {
                    return Err(format!("pod mounts claim {claim}, which does not exist yet"));
                }
            }
        }
        if state.objects.get(&kind).is_some_and(|objects| objects.contains_key(&name)) {
            return Ok(status_for(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", kind.resource()),
                kind,
                &name,
            ));
        }
        let version = state.bump();
        stamp_new(&mut object, &self.namespace, version);
        match kind {
            Kind::Pod => {
                object["status"] = pending_status(&object["spec"]);
                state.logs.remove(&name);
                state.emit("ADDED", &object);
                if state.auto_run {
                    let (shared, delay) = (self.clone(), state.start_delay);
                    let (name, uid) = (name.clone(), object["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        Shared::run(&shared, &name, &uid);
                    });
                }
            }
            Kind::Claim => object["status"] = json!({"phase": "Bound", "accessModes": object["spec"]["accessModes"]}),
        }
        state.objects.entry(kind).or_default().insert(name, object.clone());
        Ok(json_response(201, &object))
    }

    fn check_labels(&self, object: &Value, workspace_id: &str) -> Result<(), String> {
        let expected = [
            (labels::MESH_ID, self.identity.mesh_id.clone()),
            (labels::RUNTIME_INSTANCE, self.identity.instance_label()),
            (labels::WORKSPACE_ID, workspace_id.to_owned()),
            (labels::MANAGED_BY, labels::MANAGED_BY_VALUE.to_owned()),
        ];
        for (key, value) in expected {
            if object["metadata"]["labels"][key] != value.as_str() {
                return Err(format!("label {key} is {}, not {value:?}", object["metadata"]["labels"][key]));
            }
        }
        Ok(())
    }

    fn delete(self: &Arc<Self>, kind: Kind, name: &str, request: &Recorded) -> Result<Response<FakeBody>, String> {
        let grace = request.body.as_ref().and_then(|body| body["gracePeriodSeconds"].as_u64());
        let mut state = self.lock();
        let Some(object) = state.objects.get(&kind).and_then(|objects| objects.get(name)).cloned() else {
            return Ok(not_found(kind, name));
        };
        let owner = self.identity.workspace_of_name(name.strip_suffix("-data").unwrap_or(name)).unwrap_or_default();
        self.check_labels(&object, owner).map_err(|e| format!("deleting an object that is not ours: {e}"))?;
        match kind {
            Kind::Claim => {
                let pods = state.objects.get(&Kind::Pod).into_iter().flat_map(|pods| pods.values());
                if let Some(user) = pods.into_iter().find(|pod| mounts(pod, name)) {
                    return Err(format!("claim {name} deleted while pod {} still mounts it", user["metadata"]["name"]));
                }
                let mut object = state.objects.get_mut(&kind).and_then(|o| o.remove(name)).unwrap_or(object);
                object["metadata"]["deletionTimestamp"] = json!(object_time(now()));
                state.bump();
                Ok(json_response(200, &object))
            }
            Kind::Pod => {
                if object["metadata"]["deletionTimestamp"].is_string() {
                    return Ok(json_response(200, &object));
                }
                let version = state.bump();
                let pod = state.pod_mut(name).ok_or("pod vanished")?;
                let grace = grace.unwrap_or(30);
                pod["metadata"]["deletionTimestamp"] =
                    json!(object_time(now().checked_add(Duration::from_secs(grace)).unwrap_or_else(|_| now())));
                pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                pod["metadata"]["resourceVersion"] = json!(version.to_string());
                let pod = pod.clone();
                state.emit("MODIFIED", &pod);
                let (shared, delay) = (self.clone(), state.deletion_delay);
                let (name, uid) = (name.to_owned(), pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    shared.finish_deletion(&name, Some(&uid));
                });
                Ok(json_response(200, &pod))
            }
        }
    }

    /// Removes the pod (only the incarnation `uid`, if given) with a DELETED event.
    fn finish_deletion(&self, name: &str, uid: Option<&str>) {
        let mut state = self.lock();
        let current = state.objects.get(&Kind::Pod).and_then(|pods| pods.get(name));
        if current.is_none() || uid.is_some_and(|uid| current.is_some_and(|pod| pod["metadata"]["uid"] != uid)) {
            return;
        }
        let version = state.bump();
        if let Some(mut pod) = state.objects.get_mut(&Kind::Pod).and_then(|pods| pods.remove(name)) {
            pod["metadata"]["resourceVersion"] = json!(version.to_string());
            state.emit("DELETED", &pod);
            state.followers.retain(|f| f.pod != name);
        }
    }

    /// Applies `change` to the pod and announces it; no-op if it is gone.
    fn update_pod(&self, name: &str, change: impl FnOnce(&mut Value, &str)) {
        let mut state = self.lock();
        let version = state.bump();
        let Some(pod) = state.pod_mut(name) else { return };
        change(pod, &object_time(now()));
        pod["metadata"]["resourceVersion"] = json!(version.to_string());
        let pod = pod.clone();
        state.emit("MODIFIED", &pod);
    }

    fn run(shared: &Arc<Self>, name: &str, uid: &str) {
        let mut started = false;
        shared.update_pod(name, |pod, now| {
            if pod["metadata"]["uid"] != uid
                || pod["status"]["phase"] != "Pending"
                || pod["metadata"]["deletionTimestamp"].is_string()
            {
                return;
            }
            started = true;
            let status = &mut pod["status"];
            status["phase"] = json!("Running");
            status["podIP"] = json!("10.244.0.17");
            status["conditions"] = conditions(true, true);
            let container = &mut status["containerStatuses"][0];
            container["state"] = json!({"running": {"startedAt": now}});
            container["ready"] = json!(true);
            container["started"] = json!(true);
            container["containerID"] = json!(format!("containerd://{}", uuid::Uuid::new_v4().simple()));
            container["imageID"] = json!("sha256:4b1b2a8e0c5f");
        });
        let Some(pod) = shared.lock().objects.get(&Kind::Pod).and_then(|pods| pods.get(name)).cloned() else { return };
        if !started {
            return;
        }
        let args: Vec<String> = ["command", "args"]
            .iter()
            .flat_map(|key| pod["spec"]["containers"][0][key].as_array().cloned().unwrap_or_default())
            .filter_map(|arg| arg.as_str().map(str::to_owned))
            .collect();
        let flag =
            |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
        if let Some(after) = flag("--exit-after-ms") {
            let code = flag("--exit-code").unwrap_or(0);
            let (shared, name, uid) = (shared.clone(), name.to_owned(), uid.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                shared.terminate(&name, Some(&uid), i32::try_from(code).unwrap_or(1), true);
            });
        }
    }

    fn terminate(&self, name: &str, uid: Option<&str>, exit_code: i32, set_phase: bool) {
        self.update_pod(name, |pod, now| {
            if uid.is_some_and(|uid| pod["metadata"]["uid"] != uid) {
                return;
            }
            let status = &mut pod["status"];
            let started = status["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
            let container = &mut status["containerStatuses"][0];
            container["state"] = json!({"terminated": {
                "exitCode": exit_code,
                "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": if started.is_null() { json!(now) } else { started },
                "finishedAt": now,
                "containerID": container["containerID"].clone(),
            }});
            container["ready"] = json!(false);
            container["started"] = json!(false);
            status["conditions"] = conditions(true, false);
            if set_phase {
                status["phase"] = json!(if exit_code == 0 { "Succeeded" } else { "Failed" });
            }
        });
        self.lock().followers.retain(|f| f.pod != name);
    }

    fn logs(&self, name: &str, request: &Recorded) -> Result<Response<FakeBody>, String> {
        let mut state = self.lock();
        let Some(pod) = state.objects.get(&Kind::Pod).and_then(|pods| pods.get(name)).cloned() else {
            return Ok(not_found(Kind::Pod, name));
        };
        let container = request.param("container").unwrap_or_default();
        let spec_container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default();
        if !container.is_empty() && container != spec_container {
            return Ok(status(400, "BadRequest", &format!("container {container} is not valid for pod {name}")));
        }
        let state_of = &pod["status"]["containerStatuses"][0]["state"];
        if let Some(reason) = state_of["waiting"]["reason"].as_str() {
            let message = format!("container \"{spec_container}\" in pod \"{name}\" is waiting to start: {reason}");
            return Ok(status(400, "BadRequest", &message));
        }
        let since = request
            .param("sinceTime")
            .map(|t| t.parse::<Timestamp>())
            .transpose()
            .map_err(|e| format!("sinceTime: {e}"))?;
        let tail =
            request.param("tailLines").map(str::parse::<usize>).transpose().map_err(|e| format!("tailLines: {e}"))?;
        let stamps = request.param("timestamps") == Some("true");
        let lines: Vec<&(Timestamp, String)> = state
            .logs
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(time, _)| since.is_none_or(|since| *time >= since))
            .collect();
        let skip = tail.map_or(0, |tail| lines.len().saturating_sub(tail));
        let text: String = lines[skip..]
            .iter()
            .map(|(time, text)| if stamps { format!("{} {text}\n", log_time(*time)) } else { format!("{text}\n") })
            .collect();
        if request.param("follow") != Some("true") || !state_of["running"].is_object() {
            return Ok(Response::builder().status(200).body(full(text)).unwrap_or_default());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Bytes::from(text));
        let id = state.next_id();
        state.followers.push(Stream { id, pod: name.to_owned(), selector: Vec::new(), tx });
        Ok(stream_response(rx))
    }

    async fn exec(
        &self,
        name: &str,
        request: &Recorded,
        headers: &http::HeaderMap,
    ) -> Result<Response<FakeBody>, String> {
        let (pod, handler) = {
            let state = self.lock();
            (state.objects.get(&Kind::Pod).and_then(|pods| pods.get(name)).cloned(), state.exec.clone())
        };
        let Some(pod) = pod else { return Ok(not_found(Kind::Pod, name)) };
        for (key, value) in [("Upgrade", "websocket"), ("Connection", "Upgrade")] {
            if !headers.get(key).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case(value)) {
                return Err(format!("exec without {key}: {value}"));
            }
        }
        let container = &pod["spec"]["containers"][0];
        if request.param("container").is_some_and(|c| container["name"] != c) {
            return Ok(status(400, "BadRequest", "container not found"));
        }
        if !pod["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            return Ok(status(400, "BadRequest", &format!("container {} is not running", container["name"])));
        }
        let call = ExecCall {
            pod: name.to_owned(),
            command: request.query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
            env: container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
                .collect(),
        };
        let reply = handler(&call);
        upgrade(request, headers, reply).await
    }
}

impl State {
    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn pod_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.objects.get_mut(&Kind::Pod).and_then(|pods| pods.get_mut(name))
    }

    /// Sends a watch event to every watcher whose selector matches the pod.
    fn emit(&mut self, kind: &str, pod: &Value) {
        let line = event_line(kind, pod);
        self.watchers.retain(|w| !matches(&w.selector, pod) || w.tx.send(line.clone()).is_ok());
    }
}

// ===== exec over a real WebSocket =====

/// Answers an exec request with a real HTTP/1.1 upgrade: the request goes
/// through a hyper client and server joined by an in-memory pipe, so the
/// response carries the pending upgrade kube's client waits on.
async fn upgrade(
    request: &Recorded,
    headers: &http::HeaderMap,
    reply: ExecReply,
) -> Result<Response<FakeBody>, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let reply = Arc::new(Mutex::new(Some(reply)));
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let reply = reply.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
            async move { Ok::<_, Infallible>(accept(request, reply)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), service)
            .with_upgrades()
            .await;
    });
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await.map_err(|e| format!("exec pipe: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let query: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    let mut forward = Request::get(format!("{}?{}", request.path, query.join("&")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("exec request: {e}"))?;
    *forward.headers_mut() = headers.clone();
    let response = sender.send_request(forward).await.map_err(|e| format!("exec pipe: {e}"))?;
    Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
}

/// The server half: switches protocols, then plays the command's output
/// on the channel protocol (1 stdout, 2 stderr, 3 the final Status).
fn accept(request: Request<Incoming>, reply: ExecReply) -> Response<Empty<Bytes>> {
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes()));
    let offered =
        request.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|p| p.to_str().ok()).unwrap_or_default();
    let protocol =
        ["v5.channel.k8s.io", "v4.channel.k8s.io"].into_iter().find(|p| offered.split(", ").any(|o| o == *p));
    let (Some(key), Some(protocol)) = (key, protocol) else {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else { return };
        let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::time::sleep(reply.delay).await;
        for (channel, data) in [(1u8, &reply.stdout), (2, &reply.stderr)] {
            if !data.is_empty() {
                let _ = socket.send(Message::binary([&[channel][..], data].concat())).await;
            }
        }
        let status = match reply.exit_code {
            Some(0) => json!({"metadata": {}, "status": "Success"}),
            Some(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            None => json!({
                "metadata": {},
                "status": "Failure",
                "message": String::from_utf8_lossy(&reply.stderr),
                "reason": "InternalError",
                "details": {"causes": [{"message": String::from_utf8_lossy(&reply.stderr)}]},
            }),
        };
        let _ = socket.send(Message::binary([&[3u8][..], status.to_string().as_bytes()].concat())).await;
        let _ = socket.close(None).await;
    });
    let mut response = Response::new(Empty::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn default_exec(call: &ExecCall) -> ExecReply {
    let args = &call.command[1.min(call.command.len())..];
    match call.command.first().map(String::as_str) {
        Some("echo") => ExecReply::exit(0, &format!("{}\n", args.join(" ")), ""),
        Some("true") => ExecReply::exit(0, "", ""),
        Some("false") => ExecReply::exit(1, "", ""),
        Some("hostname") => ExecReply::exit(0, &format!("{}\n", call.pod), ""),
        Some("printenv") => match args.first().and_then(|name| call.env.get(name)) {
            Some(value) => ExecReply::exit(0, &format!("{value}\n"), ""),
            None => ExecReply::exit(1, "", ""),
        },
        Some("sleep") => ExecReply {
            delay: Duration::from_secs_f64(args.first().and_then(|s| s.parse().ok()).unwrap_or(0.0)),
            ..ExecReply::exit(0, "", "")
        },
        program => ExecReply {
            stderr: format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: \
                 executable file not found in $PATH: unknown",
                program.unwrap_or_default()
            )
            .into_bytes(),
            ..ExecReply::default()
        },
    }
}

// ===== objects =====

fn now() -> Timestamp {
    Timestamp::now()
}

/// Object times have whole seconds, like the API server's.
fn object_time(time: Timestamp) -> String {
    Timestamp::from_second(time.as_second()).unwrap_or(time).to_string()
}

/// Log times are RFC 3339 with nanoseconds, like the kubelet's.
fn log_time(time: Timestamp) -> String {
    format!("{time:.9}")
}

fn stamp_new(object: &mut Value, namespace: &str, version: u64) {
    let metadata = &mut object["metadata"];
    metadata["namespace"] = json!(namespace);
    metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
    metadata["resourceVersion"] = json!(version.to_string());
    metadata["creationTimestamp"] = json!(object_time(now()));
}

fn pending_status(spec: &Value) -> Value {
    json!({
        "phase": "Pending",
        "qosClass": "Burstable",
        "hostIP": "172.18.0.2",
        "startTime": object_time(now()),
        "conditions": conditions(true, false),
        "containerStatuses": [{
            "name": spec["containers"][0]["name"],
            "image": spec["containers"][0]["image"],
            "imageID": "",
            "ready": false,
            "started": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }],
    })
}

fn conditions(scheduled: bool, ready: bool) -> Value {
    let time = object_time(now());
    let flag = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": flag(scheduled), "lastTransitionTime": time},
        {"type": "Initialized", "status": "True", "lastTransitionTime": time},
        {"type": "ContainersReady", "status": flag(ready), "lastTransitionTime": time},
        {"type": "Ready", "status": flag(ready), "lastTransitionTime": time},
    ])
}

/// What a pod the runtime creates must look like, beyond its name and labels.
fn check_pod_spec(spec: &Value) -> Result<(), String> {
    if spec["restartPolicy"] != "Never" {
        return Err(format!("restartPolicy is {}, not Never", spec["restartPolicy"]));
    }
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let [container] = containers else {
        return Err(format!("{} containers, not one", containers.len()));
    };
    if container["image"].as_str().is_none_or(str::is_empty) {
        return Err("container without an image".to_owned());
    }
    for var in container["env"].as_array().into_iter().flatten() {
        if !var["name"].is_string() || !var["value"].is_string() {
            return Err(format!("malformed env entry {var}"));
        }
    }
    let limits = container["resources"]["limits"].as_object().cloned().unwrap_or_default();
    for (resource, quantity) in &limits {
        let quantity = quantity.as_str().unwrap_or_default();
        let valid = match resource.as_str() {
            "cpu" => quantity.strip_suffix('m').is_some_and(|n| n.parse::<u32>().is_ok()),
            "memory" => quantity.parse::<u64>().is_ok(),
            _ => false,
        };
        if !valid {
            return Err(format!("limit {resource}: {quantity:?}"));
        }
    }
    Ok(())
}

fn mounts(pod: &Value, claim: &str) -> bool {
    pod["spec"]["volumes"].as_array().into_iter().flatten().any(|v| v["persistentVolumeClaim"]["claimName"] == claim)
}

fn version_info(git_version: &str) -> Value {
    let numbers: Vec<&str> = git_version.trim_start_matches('v').split('.').collect();
    json!({
        "major": numbers.first().copied().unwrap_or("1"),
        "minor": numbers.get(1).copied().unwrap_or("0"),
        "gitVersion": git_version,
        "gitCommit": "5864a4677267e6adeae276ad85882a8714d69d9d",
        "gitTreeState": "clean",
        "buildDate": "2024-10-22T20:28:14Z",
        "goVersion": "go1.22.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

// ===== label selectors =====

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .map(|term| {
            let term = term.trim();
            if let Some((key, value)) = term.split_once("!=") {
                Ok(Requirement::NotEquals(key.to_owned(), value.to_owned()))
            } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok(Requirement::Equals(key.to_owned(), value.to_owned()))
            } else if term.contains(' ') || term.contains('(') {
                Err(format!("set-based selector {term:?} is not supported by the fake"))
            } else if let Some(key) = term.strip_prefix('!') {
                Ok(Requirement::NotExists(key.to_owned()))
            } else {
                Ok(Requirement::Exists(term.to_owned()))
            }
        })
        .collect()
}

fn matches(selector: &[Requirement], object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.iter().all(|requirement| match requirement {
        Requirement::Equals(key, value) => labels[key] == value.as_str(),
        Requirement::NotEquals(key, value) => labels[key] != value.as_str(),
        Requirement::Exists(key) => labels[key].is_string(),
        Requirement::NotExists(key) => !labels[key].is_string(),
    })
}

// ===== HTTP helpers =====

fn full(body: impl Into<Bytes>) -> FakeBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}

fn json_response(code: u16, value: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .unwrap_or_default()
}

fn stream_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<FakeBody> {
    let frames = UnboundedReceiverStream::new(rx).map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
    Response::builder()
        .status(200)
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap_or_default()
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

fn status(code: u16, reason: &str, message: &str) -> Response<FakeBody> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

fn status_for(code: u16, reason: &str, message: &str, kind: Kind, name: &str) -> Response<FakeBody> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
            "details": {"name": name, "kind": kind.resource()},
        }),
    )
}

fn not_found(kind: Kind, name: &str) -> Response<FakeBody> {
    status_for(404, "NotFound", &format!("{} \"{name}\" not found", kind.resource()), kind, name)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| text.get(i + 1..i + 3)).flatten();
        match escaped.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
