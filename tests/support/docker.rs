//! The Docker CLI, as an operator would use it.

use std::process::Output;

/// Runs `docker <args>` and returns its stdout, failing the test with its
/// stderr when it fails.
pub async fn docker(args: &[&str]) -> String {
    let output = run("docker", args).await;
    stdout_or_panic(&format!("docker {}", args.join(" ")), output)
}

/// Runs `program <args>`, capturing both streams.
pub async fn run(program: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

pub fn stdout_or_panic(what: &str, output: Output) -> String {
    assert!(output.status.success(), "{what} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Whether a Docker engine answers. Outside CI a machine without one skips
/// the tests that need it; in CI that is a failure.
pub async fn engine_available() -> bool {
    let answers = run("docker", &["info", "--format", "{{.ServerVersion}}"]).await.status.success();
    if !answers {
        assert!(std::env::var_os("CI").is_none(), "CI needs a Docker engine for the end-to-end tests");
        eprintln!("skipping: no Docker engine answers");
    }
    answers
}

/// The address of a container on its (single) network.
pub async fn container_ip(id: &str) -> String {
    let ip = docker(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id]).await;
    ip.split_whitespace().next().unwrap_or_else(|| panic!("container {id} has no address")).to_owned()
}

/// The ids of the containers (running or not) that carry `label`.
pub async fn containers_labelled(label: &str) -> Vec<String> {
    lines(&docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label={label}")]).await)
}

/// The names of the volumes that carry `label`.
pub async fn volumes_labelled(label: &str) -> Vec<String> {
    lines(&docker(&["volume", "ls", "-q", "--filter", &format!("label={label}")]).await)
}

pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
}
