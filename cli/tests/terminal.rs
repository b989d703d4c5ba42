//! What a person sees: `agentmesh` in a real terminal (tmux, driven with
//! `send-keys` and read with `capture-pane`), against `agentmesh dev`.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{AGENTMESH, DevMesh, echo_spec_file};

/// Where colour starts on a screen or in output.
const ESCAPE: &str = "\u{1b}[";

/// A tmux server of the test's own, with one 160×40 window running bash.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start(mesh: &DevMesh) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI installs tmux");
            eprintln!("skipping: no tmux");
            return None;
        }
        let terminal = Self { socket: format!("agentmesh-test-{}", std::process::id()) };
        let config = format!("AGENTMESH_CONFIG={}", mesh.config().display());
        let path = format!("PATH={}:/usr/bin:/bin", std::path::Path::new(AGENTMESH).parent().unwrap().display());
        // A plain shell: no profile to reset PATH or colour the prompt.
        let shell = ["env", "-u", "NO_COLOR", &config, &path, "bash", "--norc", "--noprofile"];
        terminal.tmux(&[&["new-session", "-d", "-x", "160", "-y", "40"][..], &shell].concat());
        Some(terminal)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux").args(["-L", &self.socket]).args(args).output().unwrap();
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `line` and presses Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", line]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    fn interrupt(&self) {
        self.tmux(&["send-keys", "-t", "0", "C-c"]);
    }

    /// The screen, with its colours as escape sequences.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "0"])
    }

    /// The screen once `seen` holds for it. A screen sends no events, so
    /// this looks at it every 20 ms, which also catches short-lived frames
    /// such as a spinner's.
    #[track_caller]
    fn until(&self, what: &str, seen: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if seen(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn clear(&self) {
        self.type_line("clear");
        self.until("a cleared screen", |screen| screen.trim().lines().count() == 1);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The screen without its colours. tmux moves an attribute's reset to
/// wherever the next cell differs, often the start of the next line.
fn plain(screen: &str) -> String {
    anstream::adapter::strip_str(screen).to_string()
}

/// The screen's (last) line that starts with `start`, colours and all.
fn line_of<'a>(screen: &'a str, start: &str) -> Option<&'a str> {
    screen.lines().rev().find(|line| plain(line).starts_with(start))
}

/// Signals the agent shim of the one process workspace this mesh runs.
fn signal_agent(mesh: &DevMesh, signal: &str) {
    let parent = mesh.pid().to_string();
    let found = Command::new("pgrep").args(["-P", &parent, "-f", "agentmesh-agent-shim"]).output().unwrap();
    let pid = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(!pid.is_empty() && !pid.contains('\n'), "one agent shim under agentmesh dev: {pid:?}");
    assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
}

#[test]
fn a_person_watches_workspaces_come_online_and_go_offline_in_colour() {
    // A short liveness TTL, set as operators set it, so a silent agent is
    // offline within seconds.
    let mesh = DevMesh::start_with(&[
        ("AGENTMESH_REGISTRY__LIVENESS_TTL_SECS", "2"),
        ("AGENTMESH_REGISTRY__SWEEP_INTERVAL_MS", "200"),
    ]);
    let Some(terminal) = Terminal::start(&mesh) else { return };
    let specs = tempfile::tempdir().unwrap();

    // `ws list -w` keeps the screen current as the workspace comes online,
    // then falls silent and goes offline.
    terminal.type_line("agentmesh ws list -w");
    terminal.until("the list's header", |screen| screen.contains("NAME") && screen.contains("HEARTBEAT"));
    let spec = echo_spec_file(specs.path(), "watched", 0);
    let created = mesh.run(&["ws", "create", "-f", spec.to_str().unwrap()]).ok();
    assert!(!created.contains(ESCAPE) && !created.contains('⏳'), "no colour or emoji when piped: {created:?}");
    let online =
        terminal.until("watched online", |screen| line_of(screen, "watched").is_some_and(|l| l.contains("online")));
    let row = line_of(&online, "watched").unwrap();
    assert!(row.contains("🟢") && row.contains(&format!("{ESCAPE}32m")), "online in green on a terminal: {row:?}");
    signal_agent(&mesh, "STOP");
    let offline =
        terminal.until("watched offline", |screen| line_of(screen, "watched").is_some_and(|l| l.contains("offline")));
    assert!(line_of(&offline, "watched").unwrap().contains("⚪"), "{offline}");
    signal_agent(&mesh, "CONT");
    terminal.interrupt();

    // `ws create --wait` shows where the workspace is while its agent
    // starts, then what it came to.
    terminal.clear();
    let slow = echo_spec_file(specs.path(), "waited", 2);
    terminal.type_line(&format!("agentmesh ws create -f {} --wait; echo exit=$?", slow.display()));
    terminal.until("progress while it starts", |screen| screen.contains("waited: provisioning"));
    let settled = terminal.until("the outcome", |screen| line_of(screen, "exit=").is_some());
    assert!(plain(&settled).contains("\nexit=0"), "{settled}");
    let outcome = line_of(&settled, "workspace waited is").unwrap();
    assert!(outcome.contains("🟢") && outcome.contains(ESCAPE), "{outcome:?}");
    assert!(!settled.contains("waited: provisioning"), "the spinner is cleared when it ends:\n{settled}");

    // The same list, piped or under NO_COLOR, is plain.
    let piped = mesh.run(&["ws", "list"]).ok();
    assert!(!piped.contains(ESCAPE) && !piped.contains("🟢") && piped.contains("online"), "{piped}");
    terminal.clear();
    terminal.type_line("NO_COLOR=1 agentmesh ws list; echo done");
    let uncoloured = terminal.until("the list without colour", |screen| screen.contains("\ndone"));
    assert!(uncoloured.contains("waited") && !uncoloured.contains(ESCAPE), "{uncoloured}");
}
