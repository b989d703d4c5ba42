//! Draining (GW-6 … GW-8): when a workspace has room again, its queue is
//! delivered in order right away, up to its free slots, until it is empty or
//! the agent is busy again. One replica drains a workspace at a time, under
//! a lease in the store; a replica that dies loses its lease and its
//! in-flight items, which the next drainer delivers again with the same
//! message ids.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde_json::value::RawValue;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    agent_client::{AgentCall, AgentClient, Failure, IdleClock},
    directory::{Directory, DrainSignal},
    jsonrpc::Flavor,
    settings::GatewaySettings,
    store::{QueueItem, QueueStore},
};

/// How a delivery attempt ended.
enum Attempt {
    /// The agent answered: its result is to be recorded with the item.
    Replied { queue_id: Uuid, workspace_id: Uuid, result: String },
    /// The agent had no room: the item went back unconsumed.
    Busy,
    /// The attempt failed and counts; the target may be down.
    Failed { target_down: bool },
    /// Another replica took the item over (our lease had expired).
    Lost,
}

/// The parts of an agent's JSON-RPC response the drain needs, borrowed
/// from the reply rather than rebuilt.
#[derive(serde::Deserialize)]
struct AgentReply<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

pub struct Drainer {
    store: QueueStore,
    directory: Arc<Directory>,
    agents: AgentClient,
    settings: GatewaySettings,
    idle_timeout: Duration,
    /// This replica's name on leases.
    owner: String,
    /// Workspaces known to have queued items.
    backlog: Mutex<HashSet<Uuid>>,
    /// Workspaces this replica is draining now.
    draining: Mutex<HashSet<Uuid>>,
}

impl Drainer {
    pub fn new(
        store: QueueStore,
        directory: Arc<Directory>,
        agents: AgentClient,
        settings: GatewaySettings,
        idle_timeout: Duration,
        owner: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            directory,
            agents,
            settings,
            idle_timeout,
            owner,
            backlog: Mutex::default(),
            draining: Mutex::default(),
        })
    }

    /// Notes that a workspace has queued items, so that the next report of
    /// room drains them.
    pub fn note_queued(&self, workspace_id: Uuid) {
        self.backlog.lock().expect("backlog lock").insert(workspace_id);
    }

    pub fn has_backlog(&self, workspace_id: Uuid) -> bool {
        self.backlog.lock().expect("backlog lock").contains(&workspace_id)
    }

    /// Drains on every signal of room, and scans the store for due work no
    /// signal announced (retries after backoff, items of other replicas,
    /// expiries), until `shutdown`.
    pub async fn run(self: Arc<Self>, mut signals: mpsc::UnboundedReceiver<DrainSignal>, shutdown: CancellationToken) {
        let mut scan = tokio::time::interval(self.settings.scan_interval());
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Retention is counted in days: forgetting finished items needs no
        // more than one sweep a minute.
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                signal = signals.recv() => match signal {
                    Some(DrainSignal::Room(id)) if self.has_backlog(id) => self.start(id, &shutdown),
                    Some(DrainSignal::Room(_)) => {}
                    Some(DrainSignal::Removed(id)) => self.forget(id).await,
                    None => return,
                },
                _ = scan.tick() => self.scan(&shutdown).await,
                _ = purge.tick() => self.purge().await,
            }
        }
    }

    async fn forget(&self, workspace_id: Uuid) {
        self.backlog.lock().expect("backlog lock").remove(&workspace_id);
        match self.store.drop_workspace(workspace_id, "workspace removed", SystemTime::now()).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(%workspace_id, dropped, "queue of a removed workspace dropped"),
            Err(e) => tracing::warn!(%workspace_id, error = %e, "cannot drop the queue of a removed workspace"),
        }
    }

    async fn purge(&self) {
        let before = SystemTime::now() - Duration::from_secs(self.settings.retention_secs);
        if let Err(e) = self.store.purge_finished(before).await {
            tracing::warn!(error = %e, "cannot purge finished queue items");
        }
    }

    async fn scan(self: &Arc<Self>, shutdown: &CancellationToken) {
        let now = SystemTime::now();
        match self.store.expire_due(now).await {
            Ok(expired) => {
                for (id, workspace_id) in expired {
                    tracing::info!(queue_id = %id, %workspace_id, "queued message expired undelivered");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot expire queued messages"),
        }
        let workspaces = match self.store.workspaces_with_work(now).await {
            Ok(workspaces) => workspaces,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan the queue");
                return;
            }
        };
        for workspace_id in workspaces {
            self.note_queued(workspace_id);
            match self.directory.target(workspace_id).await {
                Ok(target) if target.has_room() => self.start(workspace_id, shutdown),
                Ok(_) => {}
                Err(crate::error::GatewayError::NotFound(_)) => self.forget(workspace_id).await,
                Err(e) => tracing::debug!(%workspace_id, error = %e, "cannot look up a workspace with queued work"),
            }
        }
    }

    fn start(self: &Arc<Self>, workspace_id: Uuid, shutdown: &CancellationToken) {
        if !self.draining.lock().expect("draining lock").insert(workspace_id) {
            return;
        }
        let drainer = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = drainer.drain(workspace_id, &shutdown).await {
                tracing::warn!(%workspace_id, error = %e, "draining stopped");
            }
            drainer.draining.lock().expect("draining lock").remove(&workspace_id);
        });
    }

    async fn drain(self: &Arc<Self>, workspace_id: Uuid, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let lease = self.settings.lease();
        if !self.store.acquire_drain_lease(workspace_id, &self.owner, lease, SystemTime::now()).await? {
            return Ok(());
        }
        let orphans = self.store.take_over_in_flight(workspace_id, &self.owner, SystemTime::now()).await?;
        if orphans > 0 {
            tracing::info!(%workspace_id, orphans, "redelivering the in-flight messages of a replica that lost its drain lease");
        }
        let mut renewed = tokio::time::Instant::now();
        let mut deliveries = JoinSet::new();
        // Results are written while the next message is already on its way:
        // the agent has the message either way, and an unrecorded result
        // only means a redelivery the agent recognises by its message id.
        let mut records = JoinSet::new();
        let mut stop = false;
        let mut delivered = 0u64;
        let started = std::time::Instant::now();
        loop {
            if renewed.elapsed() >= lease / 3 {
                if !self.store.acquire_drain_lease(workspace_id, &self.owner, lease, SystemTime::now()).await? {
                    tracing::warn!(%workspace_id, "lost the drain lease to another replica");
                    stop = true;
                }
                renewed = tokio::time::Instant::now();
            }
            if !stop && !shutdown.is_cancelled() {
                let target = self.directory.target(workspace_id).await?;
                if !target.is_up() {
                    stop = true;
                } else {
                    let slots = target.free_slots() as usize;
                    if deliveries.len() < slots {
                        let want = (slots - deliveries.len()) as u32;
                        let items = self.store.claim(workspace_id, &self.owner, lease, want, SystemTime::now()).await?;
                        if items.is_empty() && deliveries.is_empty() {
                            self.settle(workspace_id).await;
                            break;
                        }
                        for item in items {
                            let drainer = self.clone();
                            let target = target.clone();
                            deliveries
                                .spawn(async move { drainer.deliver(&target.url, target.idle_timeout, item).await });
                        }
                    }
                }
            }
            let Some(joined) = deliveries.join_next().await else { break };
            match joined {
                Ok(Attempt::Replied { queue_id, workspace_id, result }) => {
                    delivered += 1;
                    let drainer = self.clone();
                    records.spawn(async move { drainer.record(queue_id, workspace_id, result).await });
                }
                Ok(Attempt::Busy) | Ok(Attempt::Failed { target_down: true }) => stop = true,
                Ok(Attempt::Failed { target_down: false } | Attempt::Lost) => {}
                Err(e) => {
                    tracing::error!(%workspace_id, error = %e, "a delivery task failed");
                    stop = true;
                }
            }
        }
        while records.join_next().await.is_some() {}
        self.store.release_drain_lease(workspace_id, &self.owner).await?;
        if delivered > 0 {
            tracing::info!(%workspace_id, delivered, elapsed_ms = started.elapsed().as_millis() as u64, "queue drained");
        }
        Ok(())
    }

    /// Clears the backlog mark once the store confirms the queue is empty
    /// (another replica may have queued meanwhile).
    async fn settle(&self, workspace_id: Uuid) {
        if let Ok(0) = self.store.depth(workspace_id).await {
            self.backlog.lock().expect("backlog lock").remove(&workspace_id);
        }
    }

    async fn deliver(&self, url: &str, idle_override: Option<Duration>, item: QueueItem) -> Attempt {
        let request = item.request_json.clone().unwrap_or_default();
        let call = AgentCall {
            url,
            a2a_version: Flavor::of_request(&request).a2a_version(),
            body: bytes::Bytes::from(request),
            traceparent: (!item.traceparent.is_empty()).then_some(item.traceparent.as_str()),
        };
        let mut idle = IdleClock {
            timeout: idle_override.unwrap_or(self.idle_timeout),
            activity: self.directory.activity(item.workspace_id),
        };
        let outcome = self.agents.call(call, &mut idle).await;
        let now = SystemTime::now();
        let recorded = match outcome {
            Ok(reply) => match serde_json::from_slice::<AgentReply>(&reply) {
                Ok(AgentReply { result: Some(result), .. }) => {
                    let result = result.get().to_owned();
                    return Attempt::Replied { queue_id: item.id, workspace_id: item.workspace_id, result };
                }
                Ok(AgentReply { error, .. }) => {
                    let error = error.map_or("no result", |e| e.get());
                    self.fail(&item, &format!("the agent answered with an error: {error}"), false, now).await
                }
                Err(e) => self.fail(&item, &format!("the agent's reply is not JSON-RPC: {e}"), false, now).await,
            },
            Err(Failure::Busy { .. }) => {
                self.store.release_unconsumed(item.id, &self.owner, now).await.map(|_| Attempt::Busy)
            }
            Err(failure) => {
                let down = matches!(failure, Failure::Unreachable(_) | Failure::Dropped(_) | Failure::IdleTimeout(_));
                self.fail(&item, &failure.to_string(), down, now).await
            }
        };
        recorded.unwrap_or_else(|e| {
            // The outcome could not be recorded: the lease runs out and the
            // item is delivered again, with the same message id.
            tracing::warn!(queue_id = %item.id, error = %e, "cannot record a delivery outcome");
            Attempt::Failed { target_down: true }
        })
    }

    /// Stores the agent's result with the item (GW-7).
    async fn record(&self, queue_id: Uuid, workspace_id: Uuid, result: String) {
        match self.store.complete(queue_id, &self.owner, &result, SystemTime::now()).await {
            Ok(true) => tracing::debug!(%queue_id, %workspace_id, "queued message delivered"),
            Ok(false) => tracing::warn!(%queue_id, "delivered, but another replica had taken the item over"),
            // The lease runs out and the item is delivered again, with the
            // same message id.
            Err(e) => tracing::warn!(%queue_id, error = %e, "cannot record a delivery"),
        }
    }

    async fn fail(
        &self,
        item: &QueueItem,
        error: &str,
        target_down: bool,
        now: SystemTime,
    ) -> Result<Attempt, crate::store::StoreError> {
        let next = now + self.settings.retry_backoff(item.attempts + 1);
        let state = self.store.fail_attempt(item.id, &self.owner, error, next, now).await?;
        tracing::warn!(queue_id = %item.id, workspace_id = %item.workspace_id, error, ?state, "delivery attempt failed");
        Ok(if state.is_some() { Attempt::Failed { target_down } } else { Attempt::Lost })
    }
}
