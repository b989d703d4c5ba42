//! The workspaces that heartbeat: created through the registry, loaded
//! from an earlier run's file, or made up for the echo server.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant},
};

use agentmesh_proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use tonic::{Request, metadata::AsciiMetadataValue, transport::Channel};

use crate::{AuthMode, HeartbeatArgs, auth::bearer};

/// One heartbeating workspace.
pub struct Agent {
    pub workspace_id: String,
    /// The `authorization` header its heartbeats carry, if any.
    pub authorization: Option<AsciiMetadataValue>,
}

/// A workspace and its own bearer token.
struct Created {
    id: String,
    token: String,
}

/// The agents of a run, ready to heartbeat.
pub async fn prepare(args: &HeartbeatArgs, channel: Channel) -> anyhow::Result<Vec<Agent>> {
    if args.no_setup {
        let fake = |_| Agent { workspace_id: uuid::Uuid::new_v4().to_string(), authorization: None };
        return Ok((0..args.workspaces).map(fake).collect());
    }
    let token_file = args.token_file.as_deref().context("--token-file is needed unless --no-setup")?;
    let operator_token = fs::read_to_string(token_file)
        .with_context(|| format!("cannot read {}", token_file.display()))?
        .trim()
        .to_owned();
    let operator = bearer(&operator_token)?;

    let workspaces = match &args.workspaces_file {
        Some(path) if path.exists() => load(path, args.workspaces)?,
        _ => {
            let created = create(channel, &operator, args.workspaces, args.setup_concurrency).await?;
            if let Some(path) = &args.workspaces_file {
                save(path, &created)?;
            }
            created
        }
    };
    workspaces
        .into_iter()
        .map(|w| {
            let authorization = match args.auth {
                AuthMode::Workspace => bearer(&w.token)?,
                AuthMode::Operator => operator.clone(),
            };
            Ok(Agent { workspace_id: w.id, authorization: Some(authorization) })
        })
        .collect()
}

async fn create(
    channel: Channel,
    operator: &AsciiMetadataValue,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Created>> {
    let started = Instant::now();
    let client = RegistryServiceClient::new(channel);
    let created: Vec<Created> = stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            let mut request = Request::new(pb::CreateWorkspaceRequest {
                name: format!("loadtest-{i}"),
                role: "heartbeat load".to_owned(),
                runtime_kind: pb::RuntimeKind::Docker.into(),
                runtime_instance: "loadtest".to_owned(),
                issue_token: true,
                ..Default::default()
            });
            request.metadata_mut().insert("authorization", operator.clone());
            async move {
                let response = client.create_workspace(request).await.context("CreateWorkspace failed")?.into_inner();
                let id = response.workspace.context("CreateWorkspace returned no workspace")?.id;
                if (i + 1) % 1000 == 0 {
                    eprintln!("created {} workspaces", i + 1);
                }
                Ok::<_, anyhow::Error>(Created { id, token: response.token })
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    let elapsed = started.elapsed().max(Duration::from_millis(1));
    eprintln!(
        "created {count} workspaces in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(created)
}

fn load(path: &Path, wanted: usize) -> anyhow::Result<Vec<Created>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut workspaces = Vec::with_capacity(wanted);
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(wanted) {
        let (id, token) = line.split_once(' ').with_context(|| format!("{}: expected `id token`", path.display()))?;
        workspaces.push(Created { id: id.to_owned(), token: token.trim().to_owned() });
    }
    if workspaces.len() < wanted {
        bail!("{} lists {} workspaces, {wanted} wanted", path.display(), workspaces.len());
    }
    eprintln!("loaded {wanted} workspaces from {}", path.display());
    Ok(workspaces)
}

/// Writes `id token` lines, readable by the owner only: they are credentials.
fn save(path: &Path, workspaces: &[Created]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for w in workspaces {
        writeln!(file, "{} {}", w.id, w.token)?;
    }
    Ok(())
}
