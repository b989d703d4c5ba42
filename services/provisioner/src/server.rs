//! Assembles a running provisioner from its configuration; shared by the
//! binary and by tests that need a real server.

use std::sync::Arc;

use agentmesh_chassis::{ServeOptions, auth::Authenticator, config::Config, metrics::Metrics};
use agentmesh_proto::provisioner::v1::provisioner_service_server::{ProvisionerServiceServer, SERVICE_NAME};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    grpc::ProvisionerGrpc,
    metrics::ProvisionerMetrics,
    provisioner::Provisioner,
    registry_client::RegistryClient,
    runtime::{
        Identity, Runtime,
        docker::{DockerRuntime, DockerSettings},
        external::ExternalRuntime,
        kubernetes::{KubernetesRuntime, KubernetesSettings},
        process::ProcessRuntime,
    },
    runtimes::Runtimes,
    settings::{ProvisionerSettings, RuntimeConfig, RuntimeKindName},
    store::Store,
};

/// The runtime instances the configuration names, each with whether it was
/// marked default.
pub async fn configured_runtimes(
    config: &Config<ProvisionerSettings>,
) -> anyhow::Result<Vec<(Arc<dyn Runtime>, bool)>> {
    let mut runtimes = Vec::new();
    for runtime in &config.service.runtimes {
        let built =
            build_runtime(config, runtime).await.with_context(|| format!("runtime instance {:?}", runtime.name))?;
        runtimes.push((built, runtime.default));
    }
    Ok(runtimes)
}

async fn build_runtime(
    config: &Config<ProvisionerSettings>,
    runtime: &RuntimeConfig,
) -> anyhow::Result<Arc<dyn Runtime>> {
    let identity = Identity { mesh_id: config.service.mesh_id.clone(), instance: runtime.name.clone() };
    Ok(match runtime.kind {
        RuntimeKindName::Docker => {
            let settings = DockerSettings {
                network: (!runtime.network.is_empty()).then(|| runtime.network.clone()),
                ..DockerSettings::default()
            };
            Arc::new(DockerRuntime::connect(&runtime.endpoint, identity, settings)?)
        }
        RuntimeKindName::Kubernetes => {
            let client = kube::Client::try_default().await.context("no Kubernetes client configuration found")?;
            Arc::new(KubernetesRuntime::new(client, runtime.namespace.clone(), identity, KubernetesSettings::default()))
        }
        RuntimeKindName::Process => {
            let dir = runtime.state_dir.clone().unwrap_or_else(|| config.server.data_dir.join("process"));
            Arc::new(ProcessRuntime::new(identity, dir))
        }
        RuntimeKindName::External => Arc::new(ExternalRuntime::new(identity)),
    })
}

/// Runs a provisioner with the configured runtimes until `shutdown`.
pub async fn run(
    mut config: Config<ProvisionerSettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let data_dir = &config.server.data_dir;
    config.service.settle_mesh_id(data_dir).with_context(|| format!("provisioner.mesh_id: {}", data_dir.display()))?;
    tracing::info!(mesh_id = %config.service.mesh_id, "workloads are stamped with this installation's mesh id");
    let runtimes = configured_runtimes(&config).await?;
    run_with_runtimes(config, listener, authenticator, runtimes, shutdown).await
}

/// Runs a provisioner on the given runtime instances until `shutdown`.
pub async fn run_with_runtimes(
    config: Config<ProvisionerSettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    runtimes: Vec<(Arc<dyn Runtime>, bool)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Arc::new(Store::connect(&config.server.database_url_or_default("provisioner")).await?);
    let settings = config.service.clone();
    let registry = RegistryClient::new(&settings.registry_address, &settings.registry_token)?;
    let mut metrics = Metrics::new("provisioner");
    let measures = ProvisionerMetrics::register(&mut metrics);
    let runtimes = runtimes.into_iter().map(|(runtime, default)| (measures.measure(runtime), default)).collect();
    let provisioner =
        Arc::new(Provisioner::new(store, registry, Arc::new(Runtimes::new(runtimes)), settings, measures));
    if let Err(e) = provisioner.apply_policy_file().await {
        // A broken file must not take the mesh down: the stored policy stays.
        tracing::error!(error = %e, "the policy file was not applied");
    }
    provisioner.spawn_background(&shutdown);
    tokio::spawn(reload_policy_on_hangup(provisioner.clone(), shutdown.clone()));

    let routes = Routes::new(ProvisionerServiceServer::new(ProvisionerGrpc::new(provisioner.clone())));
    let options = ServeOptions::from_config(&config.server, vec![SERVICE_NAME], authenticator, metrics);
    let ready = move || {
        let provisioner = provisioner.clone();
        async move { Ok(provisioner.ready().await?) }
    };
    agentmesh_chassis::serve(listener, routes, options, ready, shutdown).await
}

async fn reload_policy_on_hangup(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => {}
        }
        match provisioner.apply_policy_file().await {
            Ok(Some(change)) => tracing::info!(
                revision = change.policy.revision,
                changed = change.changed,
                violations = change.violations.len(),
                "policy file re-read"
            ),
            Ok(None) => tracing::warn!("SIGHUP: no policy file is configured"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the policy file was not applied"),
        }
    }
}
