//! The official A2A Python SDK (`a2a-sdk`, pinned in
//! `tests/python/requirements.txt`) for tests that must show agentmesh works
//! with real A2A clients and agents: `tests/python/sdk_agent.py` (an echo
//! agent built on the SDK's server) and `tests/python/sdk_client.py` (a
//! client built on the SDK's client factory).
//!
//! The SDK lives in a Python 3.13 venv under `target/a2a-venv`, made by
//! `tests/python/setup-venv.sh`. CI runs that script before the tests; where
//! it has not run (or the requirements changed since), the first call here
//! runs it, once per process and serialized across test processes by a file
//! lock, like the agent images in [`crate::images`].

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// How long the SDK agent may take to print `READY` (importing grpc and the
/// SDK takes a few seconds on a busy machine).
const AGENT_READY_WITHIN: Duration = Duration::from_secs(60);
/// How long one SDK client run may take before the test fails.
const CLIENT_WITHIN: Duration = Duration::from_secs(90);

/// The venv's python, with the SDK installed; the venv is created first if it
/// is missing or older than `tests/python/requirements.txt`.
pub fn a2a_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(ensure_venv).clone()
}

/// The path of `tests/python/<name>`.
pub fn script(name: &str) -> PathBuf {
    python_dir().join(name)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_dir() -> PathBuf {
    workspace_root().join("tests/python")
}

/// Whether the venv holds exactly the current requirements: setup-venv.sh
/// leaves a copy of the requirements it installed in the venv.
fn venv_is_current(venv: &Path) -> bool {
    let installed = std::fs::read(venv.join(".agentmesh-requirements.txt"));
    let wanted = std::fs::read(python_dir().join("requirements.txt")).expect("reading tests/python/requirements.txt");
    venv.join("bin/python").exists() && installed.is_ok_and(|installed| installed == wanted)
}

fn ensure_venv() -> PathBuf {
    let root = workspace_root();
    let venv = root.join("target/a2a-venv");
    if venv_is_current(&venv) {
        return venv.join("bin/python");
    }
    std::fs::create_dir_all(root.join("target")).expect("creating target/");
    let lock = File::create(root.join("target/.agentmesh-a2a-venv.lock")).expect("creating the venv lock file");
    lock.lock().expect("taking the venv lock");
    // Another test process may have built it while this one waited.
    if venv_is_current(&venv) {
        return venv.join("bin/python");
    }
    eprintln!("agentmesh-testkit: running tests/python/setup-venv.sh (installs a2a-sdk from PyPI, about a minute)");
    let output = std::process::Command::new("bash")
        .arg(python_dir().join("setup-venv.sh"))
        .arg(&venv)
        .current_dir(&root)
        .output()
        .expect("running tests/python/setup-venv.sh");
    drop(lock);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tests/python/setup-venv.sh failed ({}):\n{}\n{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(stdout.lines().last().expect("setup-venv.sh prints the venv's python").trim())
}

/// A running `sdk_agent.py`, killed when dropped.
#[derive(Debug)]
pub struct SdkAgent {
    /// Its JSON-RPC base URL, `http://127.0.0.1:<port>`; the card is under
    /// `/.well-known/agent-card.json`, JSON-RPC at `/`.
    pub http: String,
    /// Its gRPC address, `127.0.0.1:<port>`, unless started without gRPC.
    pub grpc: Option<String>,
    child: Child,
}

impl SdkAgent {
    /// Starts the agent on free ports with `args` added (e.g.
    /// `["--require-token", "t"]`) and waits until it serves.
    pub async fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(a2a_python())
            .arg(script("sdk_agent.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning sdk_agent.py");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(AGENT_READY_WITHIN, lines.next_line())
            .await
            .expect("sdk_agent.py prints READY within a minute")
            .expect("reading sdk_agent.py's stdout")
            .expect("sdk_agent.py exited before it was ready");
        let ready: Value = line
            .strip_prefix("READY ")
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_else(|| panic!("sdk_agent.py printed {line:?} instead of READY <json>"));
        let http = ready["http"].as_str().expect("READY names the HTTP URL").to_owned();
        let grpc = ready["grpc"].as_str().map(str::to_owned);
        Self { http, grpc, child }
    }

    /// Where its agent card is served.
    pub fn card_url(&self) -> String {
        format!("{}/.well-known/agent-card.json", self.http)
    }

    /// Stops it with SIGTERM, as an operator would, and returns how it ended.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the agent is still running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await.expect("running kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("sdk_agent.py exits within 15 s of SIGTERM")
            .expect("waiting for sdk_agent.py")
    }
}

/// What one run of `sdk_client.py` printed.
#[derive(Debug)]
pub struct SdkClientRun {
    pub status: ExitStatus,
    /// Every response or stream event, as protocol JSON, in order.
    pub events: Vec<Value>,
    /// `<type>: <message>` from the `ERROR` line, if the SDK raised an error.
    pub error: Option<String>,
    pub stderr: String,
}

impl SdkClientRun {
    /// The events, after checking that the run succeeded.
    pub fn expect_events(self) -> Vec<Value> {
        assert!(self.status.success() && self.error.is_none(), "sdk_client.py failed: {self:#?}");
        self.events
    }
}

/// Runs `sdk_client.py` with `args` (`--card-url`, `--transport`, `--token`,
/// `--text` / `--task-id`, `--stream`, `--message-id`) and collects what it
/// printed. The process is killed if the test gives up on it.
pub async fn sdk_client(args: &[&str]) -> SdkClientRun {
    let child = Command::new(a2a_python())
        .arg(script("sdk_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning sdk_client.py");
    let output = tokio::time::timeout(CLIENT_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sdk_client.py {args:?} did not finish within {CLIENT_WITHIN:?}"))
        .expect("running sdk_client.py");
    let mut events = Vec::new();
    let mut error = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.strip_prefix("ERROR ") {
            Some(message) => error = Some(message.to_owned()),
            None => events.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|parse| panic!("sdk_client.py printed {line:?}, not JSON: {parse}")),
            ),
        }
    }
    SdkClientRun { status: output.status, events, error, stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}
