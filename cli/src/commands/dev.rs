//! `agentmesh dev`: the whole mesh in this process, for development. The
//! same four services as the production binaries (their crates' `server`
//! modules), each on its own port and embedded SQLite store under one data
//! directory, sharing its generated tokens and mesh id; the Docker runtime
//! when an engine answers, local processes always. It writes a context
//! pointing at itself and makes it current; Ctrl-C stops it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use agentmesh_a2a_gateway::settings::GatewaySettings;
use agentmesh_chassis::{
    ServerConfig, ServiceSettings,
    auth::{Authenticator, OPERATOR_TOKEN_FILE},
    config::{CommonArgs, Config},
    server::shutdown_on_signal,
};
use agentmesh_netguard::{NetworkMode, UrlGuard};
use agentmesh_provisioner::settings::{ProvisionerSettings, RuntimeConfig, RuntimeKindName};
use agentmesh_registry::settings::RegistrySettings;
use agentmesh_scheduler::settings::SchedulerSettings;
use tokio::{net::TcpListener, task::JoinSet};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    args::{DevArgs, Global},
    config::{self, ConfigFile, Context},
    failure::Failure,
};

/// The services' configuration as one mesh on one machine.
struct Plan {
    data_dir: PathBuf,
    /// Where containers reach the registry, when Docker runs workloads.
    docker_gateway: Option<IpAddr>,
}

pub async fn run(global: &Global, args: DevArgs) -> Result<ExitCode, Failure> {
    let began = Instant::now();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("agentmesh").join("dev"));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| Failure::Config(format!("--data-dir {}: {e}", data_dir.display())))?;
    let plan = Plan { docker_gateway: docker_bridge_gateway().await, data_dir };

    // Containers reach the registry through the Docker bridge, so with
    // Docker it listens on every interface; everything else stays where asked.
    let registry_host = match (plan.docker_gateway, args.host) {
        (Some(_), IpAddr::V4(host)) if host.is_loopback() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (Some(_), IpAddr::V6(host)) if host.is_loopback() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (_, host) => host,
    };
    let registry = bind(registry_host, args.registry_port, "--registry-port").await?;
    let registry_port = registry.local_addr()?.port();
    let provisioner = bind(args.host, args.provisioner_port, "--provisioner-port").await?;
    let gateway = bind(args.host, args.gateway_port, "--gateway-port").await?;
    let a2a = bind(args.host, args.a2a_port, "--a2a-port").await?;
    let scheduler = bind(args.host, args.scheduler_port, "--scheduler-port").await?;
    let local = |listener: &TcpListener| {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        format!("http://{}", SocketAddr::new(connectable(args.host), port))
    };
    let addresses = Context {
        registry: local(&registry),
        provisioner: local(&provisioner),
        gateway: local(&gateway),
        scheduler: local(&scheduler),
        token_file: Some(plan.data_dir.join(OPERATOR_TOKEN_FILE)),
        ..Context::default()
    };
    let a2a_url = local(&a2a);
    let metrics = metrics_addresses(&args).await?;

    let server = plan.server(&registry)?;
    let _telemetry = agentmesh_chassis::telemetry::init("agentmesh-dev", &server)
        .map_err(|e| Failure::Config(format!("logging: {e:#}")))?;
    let shutdown = shutdown_on_signal();
    let mut services = Services::new();

    let (mut config, authenticator) = plan.config(&registry, |settings: &mut RegistrySettings| {
        settings.network_mode = NetworkMode::Dev.to_string();
    })?;
    serve_metrics(&mut config.server, metrics.as_ref().map(|m| m[0]));
    let guard = UrlGuard::new(NetworkMode::Dev);
    let stop = shutdown.clone();
    on_own_runtime(&mut services, "registry", async move {
        agentmesh_registry::server::run(config, registry, authenticator, guard, stop).await
    })?;

    let runtimes = match plan.docker_gateway {
        Some(_) => {
            vec![
                RuntimeConfig::named(RuntimeKindName::Docker, "docker:local"),
                RuntimeConfig::named(RuntimeKindName::Process, "process:local"),
            ]
        }
        None => vec![RuntimeConfig::named(RuntimeKindName::Process, "process:local")],
    };
    let workload_registry = match plan.docker_gateway {
        Some(gateway) => format!("http://{}", SocketAddr::new(gateway, registry_port)),
        None => String::new(),
    };
    let (mut config, authenticator) = plan.config(&provisioner, |settings: &mut ProvisionerSettings| {
        settings.registry_address.clone_from(&addresses.registry);
        settings.workload_registry_address = workload_registry;
        settings.runtimes = [runtimes, vec![RuntimeConfig::named(RuntimeKindName::External, "external")]].concat();
    })?;
    serve_metrics(&mut config.server, metrics.as_ref().map(|m| m[1]));
    let stop = shutdown.clone();
    on_own_runtime(&mut services, "provisioner", async move {
        agentmesh_provisioner::server::run(config, provisioner, authenticator, stop).await
    })?;

    let (mut config, authenticator) = plan.config(&gateway, |settings: &mut GatewaySettings| {
        settings.registry_address.clone_from(&addresses.registry);
        settings.provisioner_address.clone_from(&addresses.provisioner);
        settings.network_mode = NetworkMode::Dev.to_string();
    })?;
    serve_metrics(&mut config.server, metrics.as_ref().map(|m| m[2]));
    let stop = shutdown.clone();
    on_own_runtime(&mut services, "a2a-gateway", async move {
        agentmesh_a2a_gateway::server::run_with_listeners(config, gateway, a2a, authenticator, stop).await
    })?;

    let (mut config, authenticator) = plan.config(&scheduler, |settings: &mut SchedulerSettings| {
        settings.registry_address.clone_from(&addresses.registry);
        settings.gateway_address.clone_from(&addresses.gateway);
    })?;
    serve_metrics(&mut config.server, metrics.as_ref().map(|m| m[3]));
    let stop = shutdown.clone();
    on_own_runtime(&mut services, "scheduler", async move {
        agentmesh_scheduler::server::run(config, scheduler, authenticator, stop).await
    })?;

    tokio::select! {
        () = all_serving(&addresses) => {
            let path = config::path(global);
            let mut file = ConfigFile::load(&path)?;
            file.contexts.insert(args.context_name.clone(), addresses.clone());
            file.current_context = Some(args.context_name.clone());
            file.save(&path)?;
            say!("agentmesh dev: serving after {:.1} s, data in {}", began.elapsed().as_secs_f64(), plan.data_dir.display());
            say!("  registry     {}", addresses.registry);
            say!("  provisioner  {} (runtimes: {})", addresses.provisioner, if plan.docker_gateway.is_some() { "docker, process, external" } else { "process, external" });
            say!("  gateway      {} (gRPC), {a2a_url}/a2a/<workspace> (A2A)", addresses.gateway);
            say!("  scheduler    {}", addresses.scheduler);
            if let Some(metrics) = &metrics {
                let urls: Vec<String> =
                    metrics.iter().map(|address| format!("http://{}/metrics", SocketAddr::new(connectable(address.ip()), address.port()))).collect();
                say!("  metrics      {}", urls.join(" "));
            }
            say!("  operator token in {}", plan.data_dir.join(OPERATOR_TOKEN_FILE).display());
            say!("context {:?} written to {} and made current; Ctrl-C stops the mesh", args.context_name, path.display());
        }
        Some(ended) = services.join_next() => {
            shutdown.cancel();
            return Err(ended_early(ended));
        }
    }
    // Until Ctrl-C; a service that fails takes the others down with it.
    let mut failure = None;
    while let Some(ended) = services.join_next().await {
        if !matches!(ended, Ok((_, Ok(())))) {
            shutdown.cancel();
            failure.get_or_insert(ended_early(ended));
        }
    }
    failure.map_or(Ok(ExitCode::SUCCESS), Err)
}

type Services = JoinSet<(&'static str, anyhow::Result<()>)>;

/// Runs `service` on a Tokio runtime of its own, whose threads log as
/// `name`: every line of the shared output then says which service wrote
/// it, as the production binaries' lines do.
fn on_own_runtime(
    services: &mut Services,
    name: &'static str,
    service: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> Result<(), Failure> {
    let runtime = agentmesh_chassis::telemetry::runtime_for(name, 2)
        .map_err(|e| Failure::Failed(format!("{name}: cannot start its runtime: {e}")))?;
    let running = runtime.spawn(service);
    services.spawn(async move {
        let ended = match running.await {
            Ok(result) => result,
            Err(panic) => Err(anyhow::anyhow!("it panicked: {panic}")),
        };
        // Whatever the service left running ends with its runtime, without
        // blocking this one.
        runtime.shutdown_background();
        (name, ended)
    });
    Ok(())
}

fn ended_early(ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>) -> Failure {
    match ended {
        Ok((service, Err(error))) => Failure::Failed(format!("{service}: {error:#}")),
        Ok((service, Ok(()))) => Failure::Failed(format!("{service} stopped before the others")),
        Err(panic) => Failure::Failed(format!("a service panicked: {panic}")),
    }
}

impl Plan {
    fn server(&self, listener: &TcpListener) -> Result<ServerConfig, Failure> {
        Ok(ServerConfig { listen: listener.local_addr()?, data_dir: self.data_dir.clone(), ..ServerConfig::default() })
    }

    /// A service's configuration on this mesh, with the installation's
    /// tokens. Its settings are read as the production binary reads them
    /// (`AGENTMESH_<SERVICE>__<KEY>`, e.g. `AGENTMESH_REGISTRY__LIVENESS_TTL_SECS`),
    /// so what is tried here is what gets deployed; `tune` then sets what
    /// makes the four one mesh on this machine (addresses, network mode,
    /// runtimes), and every service keeps its own SQLite file.
    fn config<S: ServiceSettings>(
        &self,
        listener: &TcpListener,
        tune: impl FnOnce(&mut S),
    ) -> Result<(Config<S>, Authenticator), Failure> {
        let args = CommonArgs {
            listen: Some(listener.local_addr()?),
            data_dir: Some(self.data_dir.clone()),
            ..CommonArgs::default()
        };
        let loaded = Config::<S>::load(self.server(listener)?, &args)
            .map_err(|e| Failure::Config(e.to_string().replace("\n  ", "; ").replace(":;", ":")))?;
        let Config { mut server, mut service, .. } = loaded;
        server.database_url = None;
        tune(&mut service);
        let (authenticator, _) = server
            .auth
            .authenticator(&self.data_dir)
            .map_err(|e| Failure::Config(format!("credentials in {}: {e}", self.data_dir.display())))?;
        let token = server.auth.service_token(&self.data_dir)?;
        service.default_service_token(&token);
        let mut problems = Vec::new();
        service.validate(&mut problems);
        if !problems.is_empty() {
            return Err(Failure::Config(problems.join("; ")));
        }
        Ok((Config { server, service, ignored_env: vec![] }, authenticator))
    }
}

async fn bind(host: IpAddr, port: u16, flag: &str) -> Result<TcpListener, Failure> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .map_err(|e| Failure::Config(format!("cannot listen on {address} ({e}): choose another {flag}")))
}

/// Where the registry, provisioner, gateway and scheduler serve metrics, in
/// that order; `None` with `--no-metrics`. Each address is tried first, so
/// that a taken port names the flag that chose it; with port 0 the free
/// ports found are used (another process could take one in between: rare).
async fn metrics_addresses(args: &DevArgs) -> Result<Option<[SocketAddr; 4]>, Failure> {
    if args.no_metrics {
        return Ok(None);
    }
    let mut addresses = [SocketAddr::new(args.host, 0); 4];
    // All four are held until every one is bound, so that free ports are
    // four different ones.
    let mut held = Vec::with_capacity(addresses.len());
    for (offset, address) in (0u16..).zip(addresses.iter_mut()) {
        let port = match args.metrics_port {
            0 => 0,
            first => {
                first.checked_add(offset).ok_or_else(|| Failure::Config("--metrics-port: at most 65532".into()))?
            }
        };
        let listener = bind(args.host, port, "--metrics-port").await?;
        *address = listener.local_addr()?;
        held.push(listener);
    }
    Ok(Some(addresses))
}

fn serve_metrics(server: &mut ServerConfig, address: Option<SocketAddr>) {
    server.metrics_listen = address.map(|address| address.to_string()).unwrap_or_default();
}

/// Where a client on this machine reaches a listener on `host`.
fn connectable(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V4(host) if host.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(host) if host.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        host => host,
    }
}

/// The gateway of Docker's default bridge, when an engine answers: where
/// containers reach this machine.
async fn docker_bridge_gateway() -> Option<IpAddr> {
    let docker = bollard::Docker::connect_with_local_defaults().ok()?;
    // bollard speaks a newer API than many engines; settle on the engine's.
    let docker = tokio::time::timeout(Duration::from_secs(2), docker.negotiate_version()).await.ok()?.ok()?;
    let inspect = docker.inspect_network("bridge", None::<bollard::query_parameters::InspectNetworkOptions>);
    let network = tokio::time::timeout(Duration::from_secs(2), inspect).await.ok()?.ok()?;
    let config = network.ipam?.config?.into_iter().next()?;
    match config.gateway {
        Some(gateway) => gateway.parse().ok(),
        // Some engines leave the gateway out of the bridge's IPAM config;
        // Docker gives the bridge the subnet's first address.
        None => first_address(&config.subnet?),
    }
}

/// The first host address of an IPv4 subnet written `a.b.c.d/n`.
fn first_address(subnet: &str) -> Option<IpAddr> {
    let (network, _) = subnet.split_once('/')?;
    let network: Ipv4Addr = network.parse().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(u32::from(network).checked_add(1)?)))
}

/// Waits until all four services report SERVING, on their health streams.
/// Every listener is bound before any service starts, so a connection is
/// accepted at once and answered when its service serves.
async fn all_serving(context: &Context) {
    for address in [&context.registry, &context.provisioner, &context.gateway, &context.scheduler] {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(address.clone()) else { return };
        loop {
            let serving = async {
                let mut health = HealthClient::new(endpoint.connect().await.ok()?);
                let request = HealthCheckRequest { service: String::new() };
                let mut statuses = health.watch(request).await.ok()?.into_inner();
                while let Some(reply) = statuses.message().await.ok()? {
                    if reply.status() == ServingStatus::Serving {
                        return Some(());
                    }
                }
                None
            };
            if serving.await.is_some() {
                break;
            }
            // The stream broke, which only a service that is ending does
            // (the caller sees it end); try again rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_gateway_is_the_subnets_first_address() {
        assert_eq!(first_address("172.17.0.0/16"), Some(IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1))));
        assert_eq!(first_address("fd00::/64"), None);
        assert_eq!(first_address("172.17.0.0"), None);
    }
}
