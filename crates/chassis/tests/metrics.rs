//! What every service's `/metrics` serves before any service logic: build
//! and process metrics, and every gRPC call by service, method and status
//! code, including calls the client abandoned; paths nobody serves count
//! under `unknown`.

use std::{net::SocketAddr, time::Duration};

use agentmesh_chassis::{AuthConfig, ServeOptions, metrics::Metrics, serve};
use agentmesh_proto::registry::v1::{GetWorkspaceRequest, registry_service_client::RegistryServiceClient};
use agentmesh_testkit::{
    eventually,
    metrics::{sample, scrape},
};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use tonic::{Code, service::Routes, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const REGISTRY: &str = "agentmesh.registry.v1.RegistryService";

#[tokio::test]
async fn every_call_is_counted_by_method_and_code_and_scrape_hooks_run_first() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics_address: SocketAddr = ([127, 0, 0, 1], agentmesh_testkit::free_port()).into();
    let config = AuthConfig { operator_tokens: vec!["operator-token-0123456789".into()], service_tokens: vec![] };
    let (authenticator, _) = config.authenticator(&std::env::temp_dir()).unwrap();
    let mut metrics = Metrics::new("test");
    let scrapes = Gauge::<i64>::default();
    metrics.section("test").register("scrapes", "Scrapes answered", scrapes.clone());
    metrics.on_scrape(move || {
        let scrapes = scrapes.clone();
        async move {
            scrapes.inc();
        }
    });
    let options = ServeOptions {
        health_services: vec![REGISTRY],
        authenticator,
        grace: Duration::from_secs(5),
        tls: None,
        readiness_interval: Duration::from_secs(3600),
        recheck: None,
        metrics,
        metrics_listen: Some(metrics_address),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Routes::default(), options, || async { Ok(()) }, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();

    let mut health = HealthClient::new(channel.clone());
    for _ in 0..3 {
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    }
    // A method of a contract this server names but routes nowhere.
    let refused = RegistryServiceClient::new(channel.clone())
        .get_workspace(GetWorkspaceRequest { workspace_id: "x".into() })
        .await
        .unwrap_err();
    // A path nobody serves, by a caller that invents them.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
    let path = http::uri::PathAndQuery::from_static("/invented.Service/Call");
    let invented = raw.unary(tonic::Request::new(HealthCheckRequest::default()), path, codec).await.unwrap_err();
    assert_eq!(invented.code(), Code::Unimplemented);
    // A stream the client abandons.
    let watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap();
    drop(watch);

    let text = scrape(metrics_address).await;
    let handled = |service: &str, method: &str, code: &str| {
        sample(
            &text,
            "agentmesh_grpc_server_handled_total",
            &[("grpc_service", service), ("grpc_method", method), ("grpc_code", code)],
        )
    };
    assert_eq!(handled("grpc.health.v1.Health", "Check", "OK"), Some(3.0), "{text}");
    assert_eq!(refused.code(), Code::Unimplemented);
    assert_eq!(handled(REGISTRY, "GetWorkspace", "UNIMPLEMENTED"), Some(1.0), "{text}");
    assert_eq!(handled("unknown", "unknown", "UNIMPLEMENTED"), Some(1.0), "{text}");
    assert!(!text.contains("invented"), "an invented path makes no series of its own");
    let latency = sample(
        &text,
        "agentmesh_grpc_server_handling_seconds_count",
        &[("grpc_service", "grpc.health.v1.Health"), ("grpc_method", "Check")],
    );
    assert_eq!(latency, Some(3.0));
    assert_eq!(sample(&text, "agentmesh_build_info", &[("service", "test")]), Some(1.0));
    assert_eq!(sample(&text, "agentmesh_serving", &[]), Some(1.0), "ready, so SERVING");
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0), "{text}");
    assert!(sample(&text, "process_open_fds", &[]).is_some_and(|fds| fds > 0.0));
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some());
    assert_eq!(sample(&text, "agentmesh_test_scrapes", &[]), Some(1.0), "the hook ran before the answer");

    // The abandoned watch is counted once the server notices the reset.
    eventually(Duration::from_secs(5), || async {
        let text = scrape(metrics_address).await;
        sample(&text, "agentmesh_grpc_server_handled_total", &[("grpc_method", "Watch"), ("grpc_code", "CANCELLED")])
            .filter(|count| *count == 1.0)
    })
    .await;

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_taken_metrics_port_is_named_as_the_setting() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (authenticator, _) = AuthConfig::default().authenticator(&std::env::temp_dir()).unwrap();
    let options = ServeOptions {
        health_services: vec![],
        authenticator,
        grace: Duration::from_secs(1),
        tls: None,
        readiness_interval: Duration::from_secs(1),
        recheck: None,
        metrics: Metrics::new("test"),
        metrics_listen: Some(taken.local_addr().unwrap()),
    };
    let error =
        serve(listener, Routes::default(), options, || async { Ok(()) }, CancellationToken::new()).await.unwrap_err();
    let line = format!("{error:#}");
    assert!(line.contains("set `metrics_listen`") && line.contains("AGENTMESH_METRICS_LISTEN"), "{line}");
}
