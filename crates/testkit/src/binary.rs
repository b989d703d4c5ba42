//! Starting an agentmesh binary the way operators do, and knowing when it
//! serves: its JSON log says where it listens, then that it is ready.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Spawns `command` (an agentmesh binary with `--listen 127.0.0.1:0`) with
/// JSON logs on stdout, and returns it with the address it bound once it
/// logs that it is ready. A binary that never gets ready fails the test
/// instead of hanging it.
pub fn spawn_until_ready(mut command: Command) -> (Child, String) {
    let mut child = command
        .env("AGENTMESH_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the binary");
    // Lines are read on a thread of their own, which also keeps draining the
    // pipe so the child never blocks on it.
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
    let mut address = None;
    loop {
        let line = received.recv_timeout(Duration::from_secs(30)).expect("the binary gets ready within 30 s");
        let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if line["fields"]["message"] == "listening" {
            address = line["fields"]["address"].as_str().map(str::to_owned);
        }
        if line["fields"]["message"] == "ready" {
            break;
        }
    }
    std::thread::spawn(move || received.into_iter().for_each(drop));
    (child, address.expect("the binary logs its address"))
}
