//! What an operator's Prometheus sees of a working mesh: a real Prometheus
//! scrapes the four services of `agentmesh dev` while messages are
//! delivered, one is queued and drained, a schedule fires and a workspace
//! degrades, and its query API then answers with those series and values;
//! the shipped alerting rules evaluate against them without error.

mod common;

use agentmesh_testkit::{a2a::Caller, prometheus::Prometheus};
use common::{DevMesh, echo_spec_file, until_status};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_deliveries_the_queue_schedules_and_statuses() {
    let mesh = DevMesh::start();
    let addresses = mesh.metrics_addresses();
    let jobs = ["agentmesh-registry", "agentmesh-provisioner", "agentmesh-a2a-gateway", "agentmesh-scheduler"];
    assert_eq!(addresses.len(), jobs.len(), "{}", mesh.banner);
    let targets: Vec<(&str, std::net::SocketAddr)> = jobs.into_iter().zip(addresses).collect();
    let alerts = agentmesh_testkit::images::workspace_root().join("deploy/observability/alerts.yml");
    let Some(prometheus) = Prometheus::scraping(&targets, Some(&alerts)).await else { return };
    for job in jobs {
        prometheus.until(&format!("up{{job=\"{job}\"}}"), |up| up == 1.0).await;
    }

    // Delivered at once.
    let dir = tempfile::tempdir().unwrap();
    let spec = echo_spec_file(dir.path(), "watched", 0);
    let created = mesh.run(&["ws", "create", "-f", spec.to_str().unwrap(), "--wait", "-o", "json"]).json();
    assert_eq!(created["status"], "online", "{created}");
    for text in ["one", "two"] {
        assert_eq!(mesh.run(&["send", "watched", text]).ok(), format!("echo: {text}\n"));
    }
    // And once on the A2A front's JSON-RPC binding, as any A2A client sends.
    let token = std::fs::read_to_string(mesh.data_dir().join("operator.token")).unwrap();
    let workspace_url = format!("{}/a2a/{}", mesh.a2a_url(), created["id"].as_str().unwrap());
    let reply = Caller::new(token.trim()).send(&workspace_url, "three", "m-three").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Queued while hibernated, then drained once it is awake.
    mesh.run(&["ws", "hibernate", "watched"]).ok();
    until_status(&mesh, "watched", "hibernated");
    assert!(mesh.run(&["send", "watched", "later", "--follow"]).ok().contains("echo: later"));
    // A schedule every second fires at least once.
    let schedule = mesh.run(&[
        "sched",
        "create",
        "--workspace",
        "watched",
        "--name",
        "tick",
        "--cron",
        "* * * * * *",
        "--text",
        "tick",
        "-o",
        "json",
    ]);
    let schedule_id = schedule.json()["id"].as_str().unwrap().to_owned();
    // Degraded: the agent reports a high error rate through its heartbeats.
    let agent_port = agent_port(&spec);
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{agent_port}/admin/health"))
        .json(&serde_json::json!({"error_rate": 0.9}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    until_status(&mesh, "watched", "degraded");

    let delivered = prometheus.until(r#"agentmesh_gateway_dispatches_total{outcome="delivered"}"#, |n| n >= 3.0).await;
    assert_eq!(delivered.labels["job"], "agentmesh-a2a-gateway");
    let queued = prometheus
        .until(r#"agentmesh_gateway_dispatches_total{outcome="queued",reason="target_not_ready"}"#, |n| n >= 1.0)
        .await;
    assert_eq!(queued.value, 1.0, "one message was queued");
    prometheus.until("agentmesh_gateway_queue_deliveries_total", |n| n >= 1.0).await;
    prometheus.until(r#"agentmesh_gateway_queue_items{state="queued"}"#, |n| n == 0.0).await;
    prometheus.until(r#"agentmesh_gateway_a2a_requests_total{method="send_message",status="200"}"#, |n| n == 1.0).await;
    prometheus.until(r#"agentmesh_scheduler_runs_total{outcome="delivered"}"#, |n| n >= 1.0).await;
    let lag = prometheus.until("agentmesh_scheduler_fire_lag_seconds_count", |n| n >= 1.0).await;
    assert_eq!(lag.labels["job"], "agentmesh-scheduler");
    prometheus.until(r#"agentmesh_registry_workspaces{status="degraded",runtime="process"}"#, |n| n == 1.0).await;
    prometheus.until(r#"agentmesh_registry_workspaces{status="online",runtime="process"}"#, |n| n == 0.0).await;
    prometheus.until(r#"agentmesh_registry_status_transitions_total{from="online",to="degraded"}"#, |n| n == 1.0).await;
    prometheus.until(r#"agentmesh_registry_heartbeats_total"#, |n| n >= 1.0).await;
    prometheus
        .until(
            r#"agentmesh_provisioner_runtime_operations_total{runtime="process",operation="start",result="ok"}"#,
            |n| n >= 1.0,
        )
        .await;
    prometheus
        .until(
            r#"agentmesh_grpc_server_handled_total{job="agentmesh-provisioner",grpc_method="CreateWorkspace",grpc_code="OK"}"#,
            |n| n == 1.0,
        )
        .await;
    for job in jobs {
        let built = prometheus.query(&format!("agentmesh_build_info{{job=\"{job}\"}}")).await;
        assert_eq!(built.len(), 1, "{job}: {built:?}");
        assert_eq!(built[0].labels["version"], env!("CARGO_PKG_VERSION"));
        let memory = prometheus.query(&format!("process_resident_memory_bytes{{job=\"{job}\"}}")).await;
        assert!(memory.first().is_some_and(|m| m.value > 0.0), "{job}: {memory:?}");
    }
    // No series names a workspace: label sets stay bounded however many
    // workspaces there are.
    let id = created["id"].as_str().unwrap();
    let every_series = prometheus.query(r#"{__name__=~"agentmesh_.+"}"#).await;
    assert!(!every_series.is_empty());
    for series in &every_series {
        assert!(!Value::Object(series.labels.clone()).to_string().contains(id), "{series:?}");
    }

    // The shipped alerts evaluate against the real series, and a healthy
    // mesh fires none of them.
    let rules = prometheus.rules().await;
    assert_eq!(rules.len(), 6, "{rules:?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "{rule}");
    }

    mesh.run(&["sched", "delete", &schedule_id]).ok();
    assert!(mesh.stop(), "Ctrl-C stops agentmesh dev cleanly");
}

/// The port the echo agent of `spec` listens on.
fn agent_port(spec: &std::path::Path) -> String {
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    spec["env"]["AGENTMESH_AGENT_PORT"].as_str().unwrap().to_owned()
}
