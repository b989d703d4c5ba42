//! Several gateway replicas on one PostgreSQL (GW-8): one queue drained by
//! both delivers every message once, in order; a replica killed mid-drain
//! loses nothing, and what it had sent but not yet recorded is delivered
//! again with the same message ids, which the agent recognises; a replica
//! shut down mid-drain hands its share back at once.

use std::{
    process::{Child, Command},
    time::Duration,
};

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::gateway::v1::{GetQueueStatsRequest, gateway_service_client::GatewayServiceClient};
use agentmesh_testkit::{binary::spawn_until_ready, postgres::fresh_database};

/// A gateway replica as its own process, so that it can be killed.
struct Replica {
    child: Child,
    grpc: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica and waits until it is ready; the wait blocks, so it
    /// runs off the runtime that serves the in-process registry.
    async fn start(registry: &RegistryNode, database_url: &str) -> Self {
        Self::start_with_lease(registry, database_url, 2).await
    }

    async fn start_with_lease(registry: &RegistryNode, database_url: &str, lease_secs: u64) -> Self {
        let (registry, database_url) = (registry.url(), database_url.to_owned());
        tokio::task::spawn_blocking(move || Self::start_blocking(&registry, &database_url, lease_secs)).await.unwrap()
    }

    fn start_blocking(registry: &str, database_url: &str, lease_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let config = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{dir}"
database_url = "{database_url}"
readiness_interval_ms = 100
[auth]
operator_tokens = ["{OPERATOR_TOKEN}"]
service_tokens = ["{SERVICE_TOKEN}"]
[gateway]
a2a_listen = "{http}"
registry_address = "{registry}"
service_token = "{SERVICE_TOKEN}"
network_mode = "dev"
lease_secs = {lease_secs}
scan_interval_ms = 200
"#,
            dir = dir.path().display(),
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentmesh-a2a-gateway"));
        command.arg("--config").arg(&path);
        let (child, grpc) = spawn_until_ready(command);
        Self { child, grpc, http, _dir: dir }
    }

    fn a2a_url(&self, workspace_id: &str) -> String {
        format!("http://{}/a2a/{workspace_id}", self.http)
    }

    async fn queued(&self) -> u64 {
        let channel =
            agentmesh_chassis::client::service_channel(&format!("http://{}", self.grpc), OPERATOR_TOKEN, None);
        let stats = GatewayServiceClient::new(channel.unwrap()).get_queue_stats(GetQueueStatsRequest::default()).await;
        stats.unwrap().into_inner().totals.unwrap().queued
    }

    /// SIGTERM, and waits for the process to end.
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        tokio::task::spawn_blocking(move || {
            let status = self.child.wait().unwrap();
            assert!(status.success(), "a graceful shutdown exits 0: {status}");
        })
        .await
        .unwrap();
    }

    fn kill(&mut self) {
        // SIGKILL: no graceful shutdown, leases are left to expire.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn queue_while_busy(agent: &EchoAgent, urls: &[String], count: usize) -> Vec<String> {
    agent.set_busy(true).await;
    let caller = Caller::operator();
    let mut texts = Vec::new();
    for n in 0..count {
        let text = format!("message {n:04}");
        let reply = caller.send(&urls[n % urls.len()], &text, &format!("m-{n}")).await;
        assert_eq!(reply.body["result"]["status"]["state"], "submitted", "{}", reply.body);
        texts.push(text);
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_draining_one_queue_deliver_each_message_once_in_order() {
    let Some(database_url) = fresh_database("gateway_test").await else { return };
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let first = Replica::start(&registry, &database_url).await;
    let second = Replica::start(&registry, &database_url).await;

    let urls = [first.a2a_url(&workspace.id), second.a2a_url(&workspace.id)];
    let expected = queue_while_busy(&agent, &urls, 200).await;
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;

    assert_eq!(agent.received_at_least(expected.len(), Duration::from_secs(60)).await, expected);
    assert_eq!(agent.stats().await["duplicates"], 0, "no message reached the agent twice");
    assert_eq!(first.queued().await + second.queued().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_drain_loses_nothing() {
    let Some(database_url) = fresh_database("gateway_test").await else { return };
    let registry = RegistryNode::start().await;
    // Each reply takes the agent longer than recording one takes the store,
    // so few replies wait unrecorded at any moment.
    let config = EchoConfig { delay: Duration::from_millis(20), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, config).await;
    let mut doomed = Replica::start(&registry, &database_url).await;
    let expected = queue_while_busy(&agent, &[doomed.a2a_url(&workspace.id)], 300).await;

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    agent.received_at_least(100, Duration::from_secs(30)).await;
    let survivor = Replica::start(&registry, &database_url).await;
    doomed.kill();
    let cut = agent.received().await.len();
    assert!(cut < expected.len(), "the kill came mid-drain ({cut} delivered)");

    assert_eq!(
        agent.received_at_least(expected.len(), Duration::from_secs(60)).await,
        expected,
        "every message, once, in order, as the agent sees them"
    );
    // Redelivered: the message in flight at the kill and those answered whose
    // replies the killed replica had not yet written (its recorder writes
    // them in batches, a millisecond apart, while the next one is sent).
    let duplicates = agent.stats().await["duplicates"].as_u64().unwrap();
    assert!(duplicates <= 4, "only the messages in flight or unrecorded at the kill are redelivered; saw {duplicates}");
    assert_eq!(survivor.queued().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shut_down_mid_drain_hands_back_what_it_holds_at_once() {
    let Some(database_url) = fresh_database("gateway_test").await else { return };
    let registry = RegistryNode::start().await;
    let config = EchoConfig { delay: Duration::from_millis(100), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, config).await;
    // Leases far longer than the test: only a hand-back lets another
    // replica send what this one claimed.
    let leaving = Replica::start_with_lease(&registry, &database_url, 600).await;
    let expected = queue_while_busy(&agent, &[leaving.a2a_url(&workspace.id)], 20).await;
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    agent.received_at_least(1, Duration::from_secs(10)).await;

    leaving.terminate().await;
    let cut = agent.received().await.len();
    assert!(cut < expected.len(), "the shutdown came mid-drain ({cut} delivered)");
    let survivor = Replica::start_with_lease(&registry, &database_url, 600).await;
    workspace.heartbeat(0).await;
    assert_eq!(agent.received_at_least(expected.len(), Duration::from_secs(30)).await, expected);
    // The message in flight at the shutdown was answered and recorded
    // before the replica left: nothing reached the agent twice.
    assert_eq!(agent.stats().await["duplicates"], 0);
    assert_eq!(survivor.queued().await, 0);
}
