//! Who may reach what (GW-2, GW-3): the SSRF rules at dispatch time, even
//! for a registry record poisoned after registration; peer access rules;
//! caller names reserved for agentmesh's own services.

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{gateway::v1 as gpb, registry::v1::Capabilities};

/// Rewrites a workspace's URL behind the registry's back, as an attacker
/// with write access to its database could.
async fn poison(registry: &RegistryNode, workspace: &Workspace, url: &str) {
    let db =
        agentmesh_db::Database::connect(&format!("sqlite://{}", registry.database_file().display())).await.unwrap();
    let updated = sqlx::query("UPDATE workspaces SET url = $1 WHERE id = $2")
        .bind(url)
        .bind(&workspace.id)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
}

#[tokio::test]
async fn forbidden_agent_urls_are_refused_at_dispatch_even_from_a_poisoned_record() {
    let registry = RegistryNode::start().await;
    let agent = EchoAgent::start(EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let matrix = [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://192.0.2.10/",
        "http://198.51.100.7/",
        "http://203.0.113.9/",
        "http://224.0.0.1/",
        "http://0.0.0.0:8080/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:100.64.0.1]/",
        "http://2852039166/",
        "ftp://127.0.0.1/",
        "http://user:pass@127.0.0.1/",
    ];
    for url in matrix {
        let workspace = registry.create("poisoned", None, 1).await;
        workspace.register(&agent.url, Capabilities::default(), None).await;
        workspace.heartbeat(0).await;
        poison(&registry, &workspace, url).await;
        let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "steal", "m-steal").await;
        assert_eq!(reply.status, 409, "{url}: {}", reply.body);
        assert_eq!(reply.body["error"]["data"]["reason"], "AGENT_URL_REFUSED", "{url}: {}", reply.body);
    }
    assert!(agent.received().await.is_empty());
    let stats = gateway.control().get_queue_stats(gpb::GetQueueStatsRequest::default()).await.unwrap().into_inner();
    assert_eq!(stats.totals.unwrap().queued, 0, "refused messages are not queued");
}

#[tokio::test]
async fn a_strict_gateway_refuses_loopback_agents_a_dev_registry_accepted() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |s| s.network_mode = "strict".into()).await;
    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "hi", "m-1").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("loopback"), "{}", reply.body);
    assert!(agent.received().await.is_empty());
}

#[tokio::test]
async fn agents_registered_by_host_name_are_resolved_and_checked_at_dispatch() {
    let registry = RegistryNode::start().await;
    let agent = EchoAgent::start(EchoConfig::default()).await;
    let workspace = registry.create("named", None, 1).await;
    workspace.register(&agent.url.replace("127.0.0.1", "localhost"), Capabilities::default(), None).await;
    workspace.heartbeat(0).await;

    let dev = GatewayNode::start(&registry, |_| {}).await;
    // Later dispatches reuse the first answer (agent_dns_cache_secs).
    for message in ["one", "two", "three"] {
        let reply = Caller::operator().send(&dev.a2a_url(&workspace.id), message, message).await;
        assert_eq!(reply.status, 200, "{message}: {}", reply.body);
    }
    assert_eq!(agent.received().await, ["one", "two", "three"]);

    let strict = GatewayNode::start(&registry, |s| s.network_mode = "strict".into()).await;
    let reply = Caller::operator().send(&strict.a2a_url(&workspace.id), "four", "four").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    let reason = reply.body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("localhost") && reason.contains("loopback"), "{reason}");
    assert_eq!(agent.received().await.len(), 3);
}

#[tokio::test]
async fn workspaces_reach_only_the_peers_the_registry_allows() {
    let registry = RegistryNode::start().await;
    let (agent, parent) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let child = registry.create("child", Some(&parent), 1).await;
    child.register(&agent.url, Capabilities::default(), None).await;
    child.heartbeat(0).await;
    let sibling = registry.create("sibling", Some(&parent), 1).await;
    let stranger = registry.create("stranger", None, 1).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    // Sibling → child and child → parent are allowed; a stranger is not.
    let reply = Caller::new(&sibling.token).send(&gateway.a2a_url(&child.id), "from sibling", "m-s").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = Caller::new(&child.token).send(&gateway.a2a_url(&parent.id), "from child", "m-c").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = Caller::new(&stranger.token).send(&gateway.a2a_url(&child.id), "from stranger", "m-x").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.body["error"]["data"]["reason"], "PERMISSION_DENIED");
    assert_eq!(agent.received().await, ["from sibling", "from child"]);

    // An agent cannot pass itself off as one of the mesh's services…
    let claim = [("x-agentmesh-caller", "scheduler")];
    let reply = Caller::new(&sibling.token).post(&gateway.a2a_url(&child.id), &send_request("x", "m-r"), &claim).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("reserved"), "{}", reply.body);
    // …but a service may say which one it is, and the queue records it.
    agent.set_busy(true).await;
    let reply =
        Caller::new(SERVICE_TOKEN).post(&gateway.a2a_url(&child.id), &send_request("tick", "m-t"), &claim).await;
    let queue_id = reply.body["result"]["metadata"]["agentmesh"]["queued"]["queueId"].as_str().unwrap().to_owned();
    let item = gateway.control().get_queue_item(gpb::GetQueueItemRequest { queue_id }).await.unwrap().into_inner();
    assert_eq!(item.item.unwrap().caller, "service:scheduler");
}
