//! A mesh started by `agentmesh dev` for one test, on ports of its own, and
//! the `agentmesh` binary run against it as a user runs it.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

pub const AGENTMESH: &str = env!("CARGO_BIN_EXE_agentmesh");

/// `agentmesh dev` in a data directory of its own, stopped with SIGTERM
/// (as Ctrl-C stops it) when dropped.
pub struct DevMesh {
    child: Child,
    dir: tempfile::TempDir,
    /// What it printed before the mesh served: where everything listens.
    pub banner: String,
    /// Lines it prints after the banner (it prints none unless it fails).
    rest: mpsc::Receiver<String>,
}

impl DevMesh {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with `env`: settings as the production binaries read them.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = [
            "--registry-port",
            "--provisioner-port",
            "--gateway-port",
            "--scheduler-port",
            "--a2a-port",
            "--metrics-port",
        ];
        let mut command = Command::new(AGENTMESH);
        command
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--context-name", "test"])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        for port in ports {
            command.args([port, "0"]);
        }
        let mut child = command.spawn().expect("starting agentmesh dev");
        let (lines, received) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
        let mut banner = String::new();
        loop {
            let line = received.recv_timeout(Duration::from_secs(60)).expect("agentmesh dev serves within 60 s");
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("context ") {
                break;
            }
        }
        Self { child, dir, banner, rest: received }
    }

    /// Where the registry, provisioner, gateway and scheduler serve
    /// metrics, in that order, from the banner.
    pub fn metrics_addresses(&self) -> Vec<std::net::SocketAddr> {
        let line = self.banner.lines().find(|line| line.trim_start().starts_with("metrics")).unwrap();
        line.split_whitespace()
            .filter_map(|word| word.strip_prefix("http://")?.strip_suffix("/metrics")?.parse().ok())
            .collect()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The gateway's A2A base URL, from the banner.
    pub fn a2a_url(&self) -> String {
        let line = self.banner.lines().find(|line| line.trim_start().starts_with("gateway")).unwrap();
        let url = line.split_whitespace().find(|word| word.contains("/a2a/")).unwrap();
        url.trim_end_matches("/a2a/<workspace>").to_owned()
    }

    /// `agentmesh <args>` against this mesh, its output piped (as a script
    /// reads it), with backtraces asked for (users' machines may do so).
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().map(Run::from).expect("running agentmesh")
    }

    /// The command [`DevMesh::run`] runs, to adjust before running it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(AGENTMESH);
        command
            .args(args)
            .env("AGENTMESH_CONFIG", self.config())
            .env("RUST_BACKTRACE", "1")
            .env_remove("AGENTMESH_CONTEXT")
            .env_remove("AGENTMESH_TOKEN")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        command
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the mesh as Ctrl-C does, and says whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.end_workloads();
        self.interrupt();
        let status = self.child.wait().unwrap();
        status.success()
    }

    /// Ends the agents the mesh runs as local processes. Each runs in a
    /// process group of its own that outlives the mesh by design (a
    /// provisioner started again finds its workloads); a test leaves none.
    fn end_workloads(&self) {
        let Ok(children) = Command::new("pgrep").args(["-P", &self.child.id().to_string()]).output() else { return };
        for pid in String::from_utf8_lossy(&children.stdout).split_whitespace().filter_map(|p| p.parse().ok()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    }
}

impl Drop for DevMesh {
    fn drop(&mut self) {
        self.end_workloads();
        self.interrupt();
        let _ = self.child.wait();
        let printed: Vec<String> = self.rest.try_iter().collect();
        if !printed.is_empty() {
            eprintln!("agentmesh dev printed after its banner:\n{}", printed.join("\n"));
        }
    }
}

/// How one run of the binary ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The run succeeded; its stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "agentmesh failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }

    /// The run succeeded and printed JSON.
    #[track_caller]
    pub fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
    }

    /// The run failed with `code`, saying so in one line that contains
    /// `expected`, with no debug output.
    #[track_caller]
    pub fn fails(self, code: i32, expected: &str) -> String {
        assert_eq!(self.code, code, "exit code of a run that printed:\n{}\n{}", self.stdout, self.stderr);
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line on stderr:\n{}", self.stderr);
        assert!(line.starts_with("error: ") && line.contains(expected), "{line:?} should say {expected:?}");
        for debug in ["panicked", "backtrace", "Status {", "{ code:", "\u{1b}["] {
            assert!(!line.contains(debug), "no {debug:?} in {line:?}");
        }
        line.to_owned()
    }
}

/// A process workspace's spec: the echo agent behind the agent shim, as the
/// static build makes them, started after `delay_seconds`.
pub fn echo_spec_file(dir: &Path, name: &str, delay_seconds: u32) -> PathBuf {
    let binaries = agentmesh_testkit::images::static_binaries();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let program =
        format!("sleep {delay_seconds}; exec {} -- {}", binaries.shim.display(), binaries.echo_agent.display());
    let spec = serde_json::json!({
        "name": name,
        "runtime": "process",
        "command": "/bin/sh",
        "args": ["-c", program],
        "labels": {"team": "cli"},
        "env": {"AGENTMESH_HEARTBEAT_INTERVAL_MS": "300", "AGENTMESH_AGENT_PORT": port.to_string()},
    });
    // JSON is YAML too: the spec file takes either.
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// Lines a long-running command prints, read on a thread so that the test
/// can wait for one with a deadline; the command is killed when dropped.
pub struct Following {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Following {
    pub fn start(mesh: &DevMesh, args: &[&str]) -> Self {
        let mut child = mesh.command(args).stdout(Stdio::piped()).spawn().unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| sender.send(line)));
        Self { child, lines }
    }

    /// The first JSON line for which `wanted` holds.
    #[track_caller]
    pub fn until(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {what} within 60 s; printed:\n{}", seen.join("\n")));
            let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if wanted(&record) {
                return record;
            }
            seen.push(line);
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits, by watching (`ws list -w`), until workspace `name` is `status`.
pub fn until_status(mesh: &DevMesh, name: &str, status: &str) {
    let watch = Following::start(mesh, &["ws", "list", "-w", "-o", "json"]);
    watch.until(&format!("{name} {status}"), |w| w["name"] == name && w["status"] == status);
}
