//! What every agentmesh server does before any service logic: health that
//! waits for readiness, reflection in both versions, and a bounded shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agentmesh_chassis::{AuthConfig, ServeOptions, serve};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn health_waits_for_readiness_and_both_reflection_versions_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = AuthConfig { operator_tokens: vec!["operator-token-0123456789".into()], service_tokens: vec![] };
    let (authenticator, _) = config.authenticator(&std::env::temp_dir()).unwrap();
    let recheck = Arc::new(tokio::sync::Notify::new());
    let options = ServeOptions {
        health_services: vec!["agentmesh.registry.v1.RegistryService"],
        authenticator,
        grace: Duration::from_secs(5),
        tls: None,
        // Once serving, readiness is checked again only when told: the
        // changes below are seen at once, or the test hangs.
        readiness_interval: Duration::from_secs(3600),
        recheck: Some(recheck.clone()),
        metrics: agentmesh_chassis::metrics::Metrics::new("test"),
        metrics_listen: None,
    };
    let dependency_up = Arc::new(AtomicBool::new(false));
    let up = dependency_up.clone();
    let ready = move || {
        let up = up.load(Ordering::SeqCst);
        async move { if up { Ok(()) } else { Err(anyhow::anyhow!("dependency down")) } }
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Routes::default(), options, ready, shutdown.clone()));

    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let request = HealthCheckRequest { service: "agentmesh.registry.v1.RegistryService".into() };
    let mut watch = health.watch(request.clone()).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing, "not ready yet");
    let liveness = HealthCheckRequest { service: agentmesh_chassis::server::LIVENESS.into() };
    let alive = health.check(liveness).await.unwrap();
    let version = alive.metadata().get(agentmesh_chassis::server::VERSION_HEADER.as_str()).unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "every answer names the version that gave it");
    let alive = alive.into_inner();
    assert_eq!(alive.status(), ServingStatus::Serving, "alive while not ready: nothing to restart");
    dependency_up.store(true, Ordering::SeqCst);
    recheck.notify_one();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    dependency_up.store(false, Ordering::SeqCst);
    recheck.notify_one();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing, "a dependency going away turns health off");
    dependency_up.store(true, Ordering::SeqCst);
    recheck.notify_one();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving, "and its return turns it on again");

    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let reply = v1_client.server_reflection_info(futures::stream::iter([list])).await.unwrap().into_inner();
    let first = Box::pin(reply).next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(services)) = first.message_response
    else {
        panic!("unexpected reflection answer {first:?}")
    };
    let names: Vec<_> = services.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"agentmesh.registry.v1.RegistryService".to_owned()), "{names:?}");

    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "agentmesh.registry.v1.RegistryService".into(),
        )),
    };
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let reply = alpha.server_reflection_info(futures::stream::iter([list])).await.unwrap().into_inner();
    let first = Box::pin(reply).next().await.unwrap().unwrap();
    assert!(
        matches!(
            first.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{first:?}"
    );

    shutdown.cancel();
    let reported = watch.message().await;
    assert!(
        matches!(&reported, Ok(Some(r)) if r.status() == ServingStatus::NotServing)
            || reported.is_err()
            || matches!(reported, Ok(None)),
        "shutdown turns health NOT_SERVING or ends the stream"
    );
    // Well inside the 5 s grace: an open health watch does not hold the drain.
    tokio::time::timeout(Duration::from_secs(2), server).await.expect("prompt shutdown").unwrap().unwrap();
}
