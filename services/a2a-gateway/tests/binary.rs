//! The gateway binary as operators run it: reflection lists what it serves,
//! a bad idle timeout is reported and replaced by the default, and a
//! registry that serves TLS is reached at its https address.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use agentmesh_chassis::config::TlsConfig;
use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_testkit::{binary::spawn_until_ready, tls::TestCa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_idle_timeout_is_reported_and_the_default_used() {
    let registry = RegistryNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentmesh-a2a-gateway"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("AGENTMESH_GATEWAY__REGISTRY_ADDRESS", registry.url())
        .env("AGENTMESH_GATEWAY__A2A_LISTEN", "127.0.0.1:0")
        // The key's old name, still read.
        .env("AGENTMESH_GATEWAY__IDLE_TIMEOUT_SECONDS", "-30")
        .env("AGENTMESH_LOG_JSON", "true")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in stdout.lines().map_while(Result::ok) {
            let done = line.contains("gateway starting");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines).await.expect("the gateway starts").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let warning = lines.iter().find(|l| l.contains("not a positive integer")).expect("a warning line");
    assert!(warning.contains("WARN") && warning.contains("-30") && warning.contains("300"), "{warning}");
    assert!(lines.iter().any(|l| l.contains("now gateway.idle_timeout_secs")), "the old name is pointed out");
    let starting = lines.last().unwrap();
    assert!(starting.contains(r#""idle_timeout_secs":300"#), "{starting}");
}

#[tokio::test]
async fn grpcurl_lists_the_control_api_and_the_a2a_binding() {
    let registry = RegistryNode::start().await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let address = gateway.grpc.to_string();
    let output = tokio::process::Command::new("grpcurl").args(["-plaintext", &address, "list"]).output().await;
    let Ok(output) = output else {
        assert!(std::env::var_os("CI").is_none(), "grpcurl must be installed in CI");
        eprintln!("skipped: grpcurl is not installed");
        return;
    };
    let listed = String::from_utf8_lossy(&output.stdout);
    for service in ["agentmesh.gateway.v1.GatewayService", "lf.a2a.v1.A2AService", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service), "{service} missing from:\n{listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_serving_tls_is_reached_at_its_https_address_trusting_ssl_cert_file() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = TestCa::new().write(dir.path(), &["localhost"]);
    let tls_registry =
        registry.start_tls_replica(TlsConfig { cert_file: files.cert_file, key_file: files.key_file }).await;

    let a2a = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{dir}"
readiness_interval_ms = 100
[auth]
operator_tokens = ["{OPERATOR_TOKEN}"]
service_tokens = ["{SERVICE_TOKEN}"]
[gateway]
a2a_listen = "{a2a}"
registry_address = "{registry}"
service_token = "{SERVICE_TOKEN}"
network_mode = "dev"
"#,
        dir = dir.path().display(),
        registry = tls_registry.url(),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentmesh-a2a-gateway"));
    command.arg("--config").arg(&path).env("SSL_CERT_FILE", &files.ca_file);
    // Ready means the registry answered, over TLS.
    let (mut gateway, _) = tokio::task::spawn_blocking(move || spawn_until_ready(command)).await.unwrap();

    let url = format!("http://{a2a}/a2a/{}", workspace.id);
    let reply = Caller::operator().send(&url, "via a TLS registry", "m-tls-registry").await;
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(agent.received().await, ["via a TLS registry"]);
}
