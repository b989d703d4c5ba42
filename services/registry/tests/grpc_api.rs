//! The registry's gRPC surface: status codes, authentication, SSRF refusals
//! at the edge, and that refused requests change nothing. Runs a real server
//! on each backend.

mod common;

use agentmesh_netguard::NetworkMode;
use agentmesh_proto::registry::v1::{self as pb};
use common::{Backend, OPERATOR_TOKEN, SERVICE_TOKEN, Server, TestDb};
use tonic::Code;

fn create_request(name: &str) -> pb::CreateWorkspaceRequest {
    pb::CreateWorkspaceRequest {
        name: name.to_owned(),
        runtime_kind: pb::RuntimeKind::External.into(),
        runtime_instance: "external".to_owned(),
        ..Default::default()
    }
}

fn register_request(id: &str, url: &str) -> pb::RegisterRequest {
    pb::RegisterRequest { workspace_id: id.to_owned(), url: url.to_owned(), ..Default::default() }
}

async fn hostile_urls_are_refused_with_the_reason_and_change_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;
    let mut anonymous = server.client(None).await;
    let workspace = operator.create_workspace(create_request("target")).await.unwrap().into_inner().workspace.unwrap();

    let hostile = [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[::ffff:127.0.0.1]:8080/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://2852039166/", "link-local"),
        ("http://metadata.test/", "169.254.169.254"),
        ("http://mixed.test/", "10.0.0.7"),
        ("http://127.0.0.1:9000/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://100.64.0.1/", "100.64.0.1"),
        ("http://192.0.2.10/", "192.0.2.10"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://unknown.test/", "resolve"),
        ("ftp://agent.test/", "scheme"),
        ("http://user:secret@agent.test/", "password"),
        ("not a url", "url"),
    ];
    for (url, why) in hostile {
        let status = anonymous.register(register_request(&workspace.id, url)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert!(status.message().starts_with("url:"), "{url}: {}", status.message());
        assert!(status.message().to_lowercase().contains(why), "{url}: {}", status.message());
    }
    let after = operator
        .get_workspace(pb::GetWorkspaceRequest { workspace_id: workspace.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .workspace
        .unwrap();
    assert_eq!(after, workspace, "refused registrations wrote nothing");
    // No refused attempt claimed the token: the real agent still gets it.
    let registered = anonymous.register(register_request(&workspace.id, "https://agent.test/a2a")).await.unwrap();
    assert!(!registered.into_inner().token.is_empty());
    server.stop().await;
}

async fn malformed_and_oversized_fields_are_invalid_arguments(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;

    let mut cases: Vec<(&str, pb::CreateWorkspaceRequest)> = Vec::new();
    cases.push(("name", create_request("")));
    cases.push(("name", create_request(&"n".repeat(129))));
    cases.push(("name", create_request("bad\u{7}bell")));
    let mut r = create_request("ok");
    r.runtime_kind = 0;
    cases.push(("runtime_kind", r));
    let mut r = create_request("ok");
    r.runtime_kind = 99;
    cases.push(("runtime_kind", r));
    let mut r = create_request("ok");
    r.labels.insert("bad key!".into(), "v".into());
    cases.push(("labels", r));
    let mut r = create_request("ok");
    r.parent_id = Some("not-a-uuid".into());
    cases.push(("parent_id", r));
    let mut r = create_request("ok");
    r.description = "d".repeat(4097);
    cases.push(("description", r));
    let mut r = create_request("ok");
    r.max_concurrent_tasks = 10_001;
    cases.push(("max_concurrent_tasks", r));
    let mut r = create_request("ok");
    r.agent_runtime = "Upper Case".into();
    cases.push(("agent_runtime", r));
    for (field, request) in cases {
        let status = operator.create_workspace(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {}", status.message());
    }
    let listed = operator.list_workspaces(pb::ListWorkspacesRequest::default()).await.unwrap().into_inner();
    assert!(listed.workspaces.is_empty(), "refused creates wrote nothing");

    let created = operator.create_workspace(create_request("target")).await.unwrap().into_inner().workspace.unwrap();
    let mut anonymous = server.client(None).await;
    let mut bad_card = register_request(&created.id, "https://agent.test/");
    bad_card.agent_card_json = "[1, 2]".into();
    let status = anonymous.register(bad_card).await.unwrap_err();
    assert_eq!((status.code(), status.message().starts_with("agent_card_json")), (Code::InvalidArgument, true));
    let status = anonymous.register(register_request("1234", "https://agent.test/")).await.unwrap_err();
    assert_eq!((status.code(), status.message().starts_with("workspace_id")), (Code::InvalidArgument, true));
    // A value of any size is quoted by its start and length: a 1 MiB id is
    // INVALID_ARGUMENT, not trailers too large for the client to read.
    let huge = "x".repeat(1 << 20);
    let status = operator.get_workspace(pb::GetWorkspaceRequest { workspace_id: huge }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{:.200}", status.message());
    assert!(status.message().ends_with("… (1048576 bytes) is not a UUID"), "{:.200}", status.message());
    assert!(status.message().len() + status.details().len() < 1024, "{} bytes", status.details().len());

    let token =
        anonymous.register(register_request(&created.id, "https://agent.test/")).await.unwrap().into_inner().token;
    let mut agent = server.client(Some(&token)).await;
    let heartbeat = |error_rate: f64, idle: Option<u32>| pb::HeartbeatRequest {
        workspace_id: created.id.clone(),
        error_rate,
        runtime_metadata: Some(pb::RuntimeMetadata { capabilities: None, idle_timeout_seconds: idle }),
        ..Default::default()
    };
    for (field, request) in [
        ("error_rate", heartbeat(1.5, None)),
        ("error_rate", heartbeat(f64::NAN, None)),
        ("runtime_metadata.idle_timeout_seconds", heartbeat(0.0, Some(86_401))),
    ] {
        let status = agent.heartbeat(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{field}: {}", status.message());
    }
    let status = operator
        .list_workspaces(pb::ListWorkspacesRequest { page_size: 5000, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = operator
        .list_workspaces(pb::ListWorkspacesRequest { page_token: "garbage".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

async fn status_codes_name_the_callers_mistake(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;
    let mut anonymous = server.client(None).await;
    let mut stranger = server.client(Some("some-other-token")).await;

    assert_eq!(anonymous.create_workspace(create_request("x")).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(stranger.create_workspace(create_request("x")).await.unwrap_err().code(), Code::PermissionDenied);
    let missing = pb::GetWorkspaceRequest { workspace_id: uuid::Uuid::new_v4().to_string() };
    assert_eq!(operator.get_workspace(missing).await.unwrap_err().code(), Code::NotFound);

    let created = operator.create_workspace(create_request("x")).await.unwrap().into_inner().workspace.unwrap();
    let heartbeat = pb::HeartbeatRequest { workspace_id: created.id.clone(), ..Default::default() };
    let status = anonymous.heartbeat(heartbeat.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "heartbeat before register: {status:?}");

    let illegal = pb::TransitionWorkspaceRequest {
        workspace_id: created.id.clone(),
        status: pb::WorkspaceStatus::Hibernated.into(),
        ..Default::default()
    };
    let status = operator.transition_workspace(illegal).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("awaiting_agent to hibernated"), "{}", status.message());

    let foreign = pb::TransitionWorkspaceRequest {
        workspace_id: created.id.clone(),
        status: pb::WorkspaceStatus::Offline.into(),
        acting_runtime_instance: "docker:elsewhere".into(),
        ..Default::default()
    };
    assert_eq!(operator.transition_workspace(foreign).await.unwrap_err().code(), Code::FailedPrecondition);

    let removed = pb::TransitionWorkspaceRequest {
        workspace_id: created.id.clone(),
        status: pb::WorkspaceStatus::Removed.into(),
        reason: "deleted".into(),
        ..Default::default()
    };
    assert!(operator.transition_workspace(removed).await.unwrap().into_inner().changed);
    let status = anonymous.register(register_request(&created.id, "https://agent.test/")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("removed"));
    server.stop().await;
}

async fn watch_streams_over_grpc_and_shutdown_ends_them(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;
    let mut stream = operator
        .watch_events(pb::WatchEventsRequest { after_cursor: Some(0), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let created = operator.create_workspace(create_request("watched")).await.unwrap().into_inner().workspace.unwrap();
    let event = stream.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!(event.workspace_id, created.id);
    assert_eq!(event.r#type(), pb::EventType::WorkspaceCreated);
    assert_eq!(event.status(), pb::WorkspaceStatus::AwaitingAgent);

    let bad = pb::WatchEventsRequest { workspace_ids: vec!["nope".into()], ..Default::default() };
    assert_eq!(operator.watch_events(bad).await.unwrap_err().code(), Code::InvalidArgument);

    // Shutdown ends open streams instead of waiting out the grace period.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited on an open watch stream");
    assert!(stream.message().await.map(|m| m.is_none()).unwrap_or(true));
}

async fn a_workspace_token_authenticates_as_its_workspace_until_removed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;
    let mut service = server.client(Some(SERVICE_TOKEN)).await;
    let authenticate = |token: &str| pb::AuthenticateWorkspaceRequest { token: token.to_owned() };

    // One token issued at creation, one claimed by the first registration.
    let mut issued = create_request("issued");
    issued.issue_token = true;
    let created = operator.create_workspace(issued).await.unwrap().into_inner();
    let (issued, issued_token) = (created.workspace.unwrap(), created.token);
    let claimed = operator.create_workspace(create_request("claimed")).await.unwrap().into_inner().workspace.unwrap();
    let registered = server
        .client(None)
        .await
        .register(register_request(&claimed.id, "https://agent.test/a2a"))
        .await
        .unwrap()
        .into_inner();
    let (claimed, claimed_token) = (registered.workspace.unwrap(), registered.token);
    // Service and operator credentials may both ask.
    let found = service.authenticate_workspace(authenticate(&issued_token)).await.unwrap().into_inner();
    assert_eq!(found.workspace, Some(issued.clone()), "the token names its own workspace and no other");
    let found = operator.authenticate_workspace(authenticate(&claimed_token)).await.unwrap().into_inner();
    assert_eq!(found.workspace, Some(claimed.clone()), "the token names its own workspace and no other");

    let status = service.authenticate_workspace(authenticate("not-a-token-anyone-holds")).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "no workspace holds this token"));
    // The longest token accepted is still looked up, not refused.
    let status = service.authenticate_workspace(authenticate(&"t".repeat(512))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    for (token, problem) in [("", "is required"), ("   ", "is required"), (&"t".repeat(513), "at most 512")] {
        let status = service.authenticate_workspace(authenticate(token)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token:?}: {status:?}");
        assert!(status.message().starts_with("token:") && status.message().contains(problem), "{}", status.message());
    }

    // A workspace token is no credential for this call: only services and operators may ask.
    let mut agent = server.client(Some(&claimed_token)).await;
    let status = agent.authenticate_workspace(authenticate(&issued_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = server.client(None).await.authenticate_workspace(authenticate(&issued_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let remove = pb::TransitionWorkspaceRequest {
        workspace_id: issued.id.clone(),
        status: pb::WorkspaceStatus::Removed.into(),
        reason: "deleted".into(),
        ..Default::default()
    };
    assert!(operator.transition_workspace(remove).await.unwrap().into_inner().changed);
    let status = service.authenticate_workspace(authenticate(&issued_token)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "no workspace holds this token"));
    let other = service.authenticate_workspace(authenticate(&claimed_token)).await.unwrap().into_inner();
    assert_eq!(other.workspace.map(|w| w.id), Some(claimed.id), "removing one workspace revokes only its token");
    server.stop().await;
}

on_every_backend!(
    a_workspace_token_authenticates_as_its_workspace_until_removed,
    hostile_urls_are_refused_with_the_reason_and_change_nothing,
    malformed_and_oversized_fields_are_invalid_arguments,
    status_codes_name_the_callers_mistake,
    watch_streams_over_grpc_and_shutdown_ends_them,
);

/// A store outage is UNAVAILABLE with a machine-readable reason and a retry
/// hint, and the message names no host, user or password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_unavailable_without_leaking_the_connection_string() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let server = Server::start(&db.url, NetworkMode::Strict).await;
    let mut operator = server.client(Some(OPERATOR_TOKEN)).await;
    operator.create_workspace(create_request("before")).await.unwrap();

    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin_url = agentmesh_testkit::postgres::admin_url().unwrap();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
    for statement in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::Executor::execute(&mut admin, statement.as_str()).await.unwrap();
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut watch = health.watch(tonic_health::pb::HealthCheckRequest::default()).await.unwrap().into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
    assert_ne!(watch.message().await.unwrap().unwrap().status, serving, "health turns off while the store is down");

    let status = operator.create_workspace(create_request("during")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("STORE_UNAVAILABLE"));
    assert!(details.retry_info().is_some(), "retry information is attached");
    for secret in ["postgres:postgres", "127.0.0.1", &name] {
        assert!(!status.message().contains(secret), "message leaks {secret}: {}", status.message());
    }

    sqlx::Executor::execute(&mut admin, format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true").as_str())
        .await
        .unwrap();
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving, "and on again when it is back");
    operator.create_workspace(create_request("after")).await.expect("the registry recovers with its store");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_when_configured() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let tls = agentmesh_chassis::config::TlsConfig {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
    };
    std::fs::write(&tls.cert_file, &cert_pem).unwrap();
    std::fs::write(&tls.key_file, certified.key_pair.serialize_pem()).unwrap();
    let server = Server::launch(&db.url, NetworkMode::Strict, Some(tls)).await;

    let client_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.address))
        .unwrap()
        .tls_config(client_tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    agentmesh_testkit::grpc::wait_until_serving(channel.clone()).await;
    let mut client = pb::registry_service_client::RegistryServiceClient::new(channel);
    let mut request = tonic::Request::new(create_request("over-tls"));
    request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_TOKEN}").parse().unwrap());
    assert!(client.create_workspace(request).await.is_ok());

    // Plaintext is refused by a TLS listener.
    let plaintext =
        tonic::transport::Channel::from_shared(format!("http://{}", server.address)).unwrap().connect().await;
    if let Ok(channel) = plaintext {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        assert!(health.check(tonic_health::pb::HealthCheckRequest::default()).await.is_err());
    }
    server.stop().await;
}
