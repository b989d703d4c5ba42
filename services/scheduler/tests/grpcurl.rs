//! The scheduler as operators inspect it: grpcurl lists and describes its
//! API through reflection, and a bad cron expression comes back as
//! `InvalidArgument` naming the field.

use agentmesh_meshkit::*;

async fn grpcurl(args: &[&str]) -> Option<std::process::Output> {
    match tokio::process::Command::new("grpcurl").args(args).output().await {
        Ok(output) => Some(output),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "grpcurl must be installed in CI");
            eprintln!("skipped: grpcurl is not installed");
            None
        }
    }
}

#[tokio::test]
async fn grpcurl_lists_the_scheduler_and_sees_field_errors() {
    let registry = RegistryNode::start().await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("scheduler.db").display());
    let scheduler = SchedulerNode::start(&registry, &gateway, &url, dir.path(), |_| {}).await;
    let address = scheduler.address.to_string();

    let Some(listed) = grpcurl(&["-plaintext", &address, "list"]).await else { return };
    let listed = String::from_utf8_lossy(&listed.stdout);
    for service in ["agentmesh.scheduler.v1.SchedulerService", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service), "{service} missing from:\n{listed}");
    }

    let workspace = registry.create("ws", None, 1).await;
    let body = format!(
        r#"{{"workspace_id":"{}","name":"bad","cron_expression":"0 25 * * *","message_text":"hi"}}"#,
        workspace.id
    );
    let auth = format!("authorization: Bearer {OPERATOR_TOKEN}");
    let args =
        ["-plaintext", "-H", &auth, "-d", &body, &address, "agentmesh.scheduler.v1.SchedulerService/CreateSchedule"];
    let Some(refused) = grpcurl(&args).await else { return };
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("InvalidArgument") && stderr.contains("cron_expression"), "{stderr}");
}
