//! Messages through the gateway's JSON-RPC front to a real echo agent:
//! delivery, the agent card, authentication and refusals.

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::registry::v1::WorkspaceStatus;
use serde_json::json;

#[tokio::test]
async fn a_message_reaches_the_agent_and_its_reply_comes_back() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "hello", "m-1").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["id"], 1);
    assert!(reply_text(&reply.body["result"]).contains("hello"), "{}", reply.body);
    assert_eq!(agent.received().await, ["hello"]);

    // A message without its id is refused as the agent would refuse it
    // (GW-2): a JSON-RPC error in an HTTP 200, under the request's own id,
    // and nothing reaches the agent.
    for (id, message_id) in [(json!(9), json!(null)), (json!("r"), json!("")), (json!(null), json!(7))] {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "SendMessage",
            "params": {"message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": "no id"}]}}});
        let reply = Caller::operator().post(&gateway.a2a_url(&workspace.id), &request, &[("A2A-Version", "1.0")]).await;
        assert_eq!((reply.status, &reply.body["id"]), (200, &id), "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], -32602, "{}", reply.body);
    }
    // A request without a JSON-RPC id goes to the agent as it came.
    let mut without_id = send_request("no request id", "m-2");
    without_id.as_object_mut().unwrap().remove("id");
    let reply = Caller::operator().post(&gateway.a2a_url(&workspace.id), &without_id, &[]).await;
    assert_eq!((reply.status, &reply.body["id"]), (200, &json!(null)), "{}", reply.body);
    assert_eq!(agent.received().await, ["hello", "no request id"]);
}

#[tokio::test]
async fn the_agent_card_points_every_client_at_the_gateway() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let card: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/.well-known/agent-card.json", gateway.a2a_url(&workspace.id)))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(card["name"], "echo");
    assert_eq!(card["url"], gateway.a2a_url(&workspace.id));
    let interfaces = card["supportedInterfaces"].as_array().unwrap();
    assert_eq!(interfaces[0]["url"], gateway.a2a_url(&workspace.id));
    assert_eq!(
        (&interfaces[1]["protocolBinding"], &interfaces[1]["url"]),
        (&json!("HTTP+JSON"), &interfaces[0]["url"])
    );
    assert_eq!(interfaces[2]["protocolBinding"], "GRPC");
    assert_eq!(interfaces[2]["tenant"], workspace.id.as_str());
    assert!(!card.to_string().contains(&agent.url), "the agent's own URL leaked: {card}");
}

#[tokio::test]
async fn callers_are_authenticated_and_targets_must_accept_messages() {
    let registry = RegistryNode::start().await;
    let (_agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let url = gateway.a2a_url(&workspace.id);

    for token in ["", "not-a-token-anyone-holds"] {
        let reply = Caller::new(token).send(&url, "x", "m").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(reply.www_authenticate.as_deref(), Some(r#"Bearer realm="agentmesh""#));
        assert_eq!(reply.body["error"]["data"]["reason"], "UNAUTHENTICATED");
    }

    let reply = Caller::operator().send(&gateway.a2a_url(&uuid::Uuid::new_v4().to_string()), "x", "m").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = Caller::operator().send(&gateway.a2a_url("not-a-uuid"), "x", "m").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = Caller::operator().post(&url, &json!({"jsonrpc": "2.0", "method": "message/send"}), &[]).await;
    assert_eq!((reply.status, reply.body["error"]["code"].as_i64()), (200, Some(-32602)), "{}", reply.body);

    // A request over 1 MiB is refused before it reaches anyone.
    let big = send_request(&"x".repeat(1 << 20), "big");
    let reply = Caller::operator().post(&url, &big, &[]).await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    workspace.transition(WorkspaceStatus::Stopped).await;
    let reply = Caller::operator().send(&url, "x", "m-stopped").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.body["error"]["data"]["reason"], "TARGET_NOT_ACCEPTING");
    assert_eq!(reply.body["error"]["data"]["workspaceId"], workspace.id.as_str());
}

#[tokio::test]
async fn other_paths_and_methods_get_plain_http_answers() {
    let registry = RegistryNode::start().await;
    let (_agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let rpc_url = gateway.a2a_url(&workspace.id);
    let base = rpc_url.split("/a2a/").next().unwrap().to_owned();
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!((health.status().as_u16(), health.text().await.unwrap()), (200, "ok".to_owned()));

    let get_rpc = client.get(&rpc_url).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(get_rpc.status(), 405);
    assert_eq!(get_rpc.headers()["allow"], "POST");
    let post_card = client.post(format!("{rpc_url}/.well-known/agent-card.json")).send().await.unwrap();
    assert_eq!(post_card.status(), 405);
    assert_eq!(post_card.headers()["allow"], "GET, HEAD");

    for path in ["/", "/a2a", "/v1/message:send", &format!("/a2a/{}/tasks/t/artifacts", workspace.id)] {
        let missing = client.post(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
    }
}
