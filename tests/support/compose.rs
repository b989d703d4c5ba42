//! The Compose stack of `deploy/compose`, run as a user runs it: one
//! project per test, the images `deploy/images/build.sh` built, the
//! balancer's ports published on free host ports.

use std::{path::PathBuf, process::Output};

use crate::docker::{self, docker, lines, stdout_or_panic};

/// The services the stack runs, by their Compose names.
pub const REGISTRY: &str = "registry";
pub const PROVISIONER: &str = "provisioner";
pub const GATEWAY: &str = "a2a-gateway";
pub const SCHEDULER: &str = "scheduler";

/// The ports of the balancer, which publishes every service to the host.
pub const REGISTRY_PORT: u16 = 50051;
pub const PROVISIONER_PORT: u16 = 50052;
pub const GATEWAY_PORT: u16 = 50053;
pub const SCHEDULER_PORT: u16 = 50054;
pub const A2A_PORT: u16 = 8053;

/// The gRPC port each service's replicas listen on inside the stack.
pub fn grpc_port(service: &str) -> u16 {
    match service {
        REGISTRY => REGISTRY_PORT,
        PROVISIONER => PROVISIONER_PORT,
        GATEWAY => GATEWAY_PORT,
        SCHEDULER => SCHEDULER_PORT,
        other => panic!("{other} is not an agentmesh service"),
    }
}

/// One running container of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub name: String,
    /// Its address on the stack's network, which the host can reach.
    pub ip: String,
}

/// Where the balancer publishes the services on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPorts {
    /// Free ports Docker picks, so that stacks never collide.
    Free,
    /// The documented ones (50051-50054, 8053), as a user's stack has them.
    Documented,
}

/// A Compose project brought up from `deploy/compose/docker-compose.yml`
/// and a test's override file; brought down (volumes too) when dropped.
pub struct Stack {
    /// When `up` was asked to start the containers (the images were built).
    pub started_at: std::time::Instant,
    /// How long `up` took: PostgreSQL initialised and healthy (the services
    /// wait for it), then every container created and started.
    pub up_took: std::time::Duration,
    project: String,
    program: Vec<String>,
    files: Vec<PathBuf>,
    _overrides: tempfile::NamedTempFile,
    ports: HostPorts,
    is_down: bool,
}

impl Stack {
    /// Builds the images (once per test run), then starts the stack with the
    /// services scaled as given and `overrides` (a Compose file; empty for
    /// none) on top.
    /// `None` where no Docker engine answers, outside CI.
    pub async fn up(overrides: &str, scale: &[(&str, usize)], ports: HostPorts) -> Option<Self> {
        if !docker::engine_available().await {
            return None;
        }
        tokio::task::spawn_blocking(agentmesh_testkit::images::mesh_images).await.unwrap();
        let program = match docker::run("docker-compose", &["version"]).await.status.success() {
            true => vec!["docker-compose".to_owned()],
            false => vec!["docker".to_owned(), "compose".to_owned()],
        };
        let mut override_file = tempfile::Builder::new().suffix(".yml").tempfile().unwrap();
        std::io::Write::write_all(&mut override_file, overrides.as_bytes()).unwrap();
        let mut files = vec![agentmesh_testkit::images::workspace_root().join("deploy/compose/docker-compose.yml")];
        if !overrides.is_empty() {
            files.push(override_file.path().to_owned());
        }
        let mut stack = Self {
            started_at: std::time::Instant::now(),
            up_took: std::time::Duration::ZERO,
            project: format!("amtest{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            program,
            files,
            _overrides: override_file,
            ports,
            is_down: false,
        };
        let mut args = vec!["up".to_owned(), "-d".to_owned()];
        for (service, replicas) in scale {
            args.extend(["--scale".to_owned(), format!("{service}={replicas}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stack.compose(&args).await;
        stack.up_took = stack.started_at.elapsed();
        Some(stack)
    }

    /// The project name, the prefix of everything Compose creates.
    pub fn project(&self) -> &str {
        &self.project
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program[0]);
        command.args(&self.program[1..]).args(["--project-name", &self.project]);
        for file in &self.files {
            command.arg("--file").arg(file);
        }
        if self.ports == HostPorts::Free {
            for port in ["REGISTRY", "PROVISIONER", "GATEWAY", "SCHEDULER", "A2A"] {
                command.env(format!("AGENTMESH_{port}_PORT"), "");
            }
        }
        command.args(args);
        command
    }

    /// Runs `docker-compose <args>` on this project; its stdout.
    pub async fn compose(&self, args: &[&str]) -> String {
        let output: Output = tokio::process::Command::from(self.command(args)).output().await.unwrap();
        stdout_or_panic(&format!("compose {}", args.join(" ")), output)
    }

    /// The running containers of `service`.
    pub async fn replicas(&self, service: &str) -> Vec<Replica> {
        let ids = lines(
            &docker(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .await,
        );
        let mut replicas = Vec::new();
        for id in ids {
            let name = docker(&["inspect", "--format", "{{.Name}}", &id]).await.trim_start_matches('/').to_owned();
            replicas.push(Replica { ip: docker::container_ip(&id).await, id, name });
        }
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        replicas
    }

    /// The host address the balancer publishes its `port` on.
    pub async fn published(&self, port: u16) -> String {
        let address = self.compose(&["port", "balancer", &port.to_string()]).await;
        address.replace("0.0.0.0", "127.0.0.1")
    }

    /// A file from the installation's data volume, read the way the README
    /// tells users to read the operator token.
    pub async fn read_data_file(&self, name: &str) -> String {
        let path = format!("/var/lib/agentmesh/{name}");
        self.compose(&["run", "--rm", "--no-deps", "--entrypoint", "cat", "secrets", &path]).await
    }

    /// Kills a replica the way a crash would: SIGKILL, no shutdown.
    pub async fn kill(&self, replica: &Replica) {
        docker(&["kill", &replica.id]).await;
    }

    /// `down --volumes`, then what is left of the project: containers,
    /// volumes and networks carrying its Compose label (none, when it came
    /// down cleanly).
    pub async fn down(mut self) -> Vec<String> {
        self.is_down = true;
        self.compose(&["down", "--volumes", "--remove-orphans"]).await;
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = lines(&docker(&["ps", "-aq", "--filter", &label]).await);
        left.extend(lines(&docker(&["volume", "ls", "-q", "--filter", &label]).await));
        left.extend(lines(&docker(&["network", "ls", "-q", "--filter", &label]).await));
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.is_down {
            return;
        }
        // A failed test: print what the services said, then remove the
        // agents the stack started (they hold its network) and the stack.
        for service in ["provisioner", "registry", "a2a-gateway", "scheduler"] {
            if let Ok(output) = self.command(&["logs", "--no-color", "--tail", "40", service]).output() {
                eprintln!("--- {service} ---\n{}", String::from_utf8_lossy(&output.stdout));
            }
        }
        let blocking_docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|output| lines(&String::from_utf8_lossy(&output.stdout)))
                .unwrap_or_default()
        };
        let network = format!("network={}_default", self.project);
        let mesh_ids = blocking_docker(&[
            "ps",
            "-a",
            "--filter",
            &network,
            "--filter",
            "label=dev.agentmesh/mesh-id",
            "--format",
            "{{.Label \"dev.agentmesh/mesh-id\"}}",
        ]);
        for id in blocking_docker(&["ps", "-aq", "--filter", &network]) {
            blocking_docker(&["rm", "-f", &id]);
        }
        for mesh_id in mesh_ids {
            for volume in
                blocking_docker(&["volume", "ls", "-q", "--filter", &format!("label=dev.agentmesh/mesh-id={mesh_id}")])
            {
                blocking_docker(&["volume", "rm", "-f", &volume]);
            }
        }
        let _ = self.command(&["down", "--volumes", "--remove-orphans", "--timeout", "2"]).output();
    }
}
