//! Draining (GW-6 … GW-8): when a workspace has room again, its queue is
//! delivered in order right away, up to its free slots, until it is empty or
//! the agent is busy again. One replica drains a workspace at a time, under
//! a lease in the store; a replica that dies loses its lease and its
//! in-flight items, which the next drainer delivers again with the same
//! message ids.
//!
//! The agent sets the pace, not the store: a drain claims items ahead in
//! batches, holds them in order under its leases and sends each as soon as
//! a slot is free (with one slot, one after another), while a recorder task
//! writes the replies in batches alongside. A message costs the store a
//! share of two statements per batch instead of two of its own.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    agent_client::AgentClient,
    announce::{ItemChanges, ItemWatch},
    directory::{Directory, DrainSignal},
    metrics::GatewayMetrics,
    push::Pushes,
    settings::GatewaySettings,
    store::{Completion, QueueItem, QueueStore},
};

mod delivery;
mod recorder;

use delivery::Attempt;

/// How many items a drain claims at once (one statement) and holds, in
/// order, to send as the agent takes them. Claiming per message cost the
/// gateway more than the agent spends answering one; at 64 the claim is a
/// few µs per message. More would gain little and keep more items
/// untouchable longer: the control API never drops IN_FLIGHT items, and a
/// message of higher priority queued through another replica waits behind
/// what is held (one queued here makes the drain put back and claim again).
const PREFETCH: usize = 64;
/// The next claim starts when fewer items than this are held, so that it is
/// back before the last of them is sent.
const REFILL_BELOW: usize = PREFETCH / 2;
/// The longest an agent's Retry-After holds its queue back: a mistaken
/// value must not stall a queue for days.
const MAX_REST: Duration = Duration::from_secs(600);

/// Why a drain stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Busy,
    TargetDown,
    LeaseLost,
    ShuttingDown,
    Failed,
}

impl Stop {
    /// The reason recorded with the items it puts back in the queue.
    fn reason(self) -> &'static str {
        match self {
            Stop::Busy => "target busy",
            Stop::TargetDown => "not sent: the target is down",
            Stop::LeaseLost => "not sent: another replica took the drain over",
            Stop::ShuttingDown => "not sent: the gateway is shutting down",
            Stop::Failed => "not sent: the drain failed",
        }
    }
}

pub struct Drainer {
    store: QueueStore,
    directory: Arc<Directory>,
    agents: AgentClient,
    settings: GatewaySettings,
    idle_timeout: Duration,
    /// This replica's name on leases.
    owner: String,
    metrics: GatewayMetrics,
    /// Workspaces known to have queued items.
    backlog: Mutex<HashSet<Uuid>>,
    /// Workspaces this replica is draining now, each with whether the
    /// registry reported room again meanwhile: a drain that is stopping
    /// because the agent was busy a moment ago must not swallow that news.
    draining: Mutex<HashMap<Uuid, bool>>,
    /// Until when each workspace's agent asked not to be sent to (the
    /// Retry-After of its last busy answer).
    resting: Mutex<HashMap<Uuid, tokio::time::Instant>>,
    /// The highest priority queued on this replica for each workspace since
    /// its drain last looked: a message that outranks what the drain holds
    /// must not wait behind it.
    arrivals: Mutex<HashMap<Uuid, i32>>,
    /// The drains running, awaited on shutdown: each puts back what it
    /// holds unsent and records what was answered before it ends.
    drains: TaskTracker,
    /// Items whose state this replica changed, for those following them.
    changes: Arc<ItemChanges>,
    /// The webhooks of items that ended here.
    pushes: Arc<Pushes>,
}

impl Drainer {
    pub fn new(
        store: QueueStore,
        directory: Arc<Directory>,
        agents: AgentClient,
        settings: GatewaySettings,
        idle_timeout: Duration,
        owner: String,
        metrics: GatewayMetrics,
    ) -> Arc<Self> {
        let pushes = Pushes::new(store.clone(), agents.clone(), settings.dispatch_guard());
        Arc::new(Self {
            store,
            directory,
            agents,
            settings,
            idle_timeout,
            owner,
            metrics,
            backlog: Mutex::default(),
            draining: Mutex::default(),
            arrivals: Mutex::default(),
            resting: Mutex::default(),
            drains: TaskTracker::new(),
            changes: Arc::default(),
            pushes,
        })
    }

    /// Follows a queue item: the watch wakes whenever this replica changes
    /// its state (delivered, failed, expired, back in the queue).
    pub fn follow(&self, id: Uuid) -> ItemWatch {
        self.changes.follow(id)
    }

    /// Tells the followers of `id` that someone else changed it.
    pub fn announce(&self, id: Uuid) {
        self.changes.announce([id]);
    }

    /// Tells the followers of `ids`, and the webhooks of those that ended,
    /// that they changed.
    pub fn announce_ended(&self, ids: Vec<Uuid>) {
        self.changes.announce(ids.iter().copied());
        self.pushes.ended(ids);
    }

    pub fn pushes(&self) -> &Arc<Pushes> {
        &self.pushes
    }

    /// Notes that a workspace has queued items, so that the next report of
    /// room drains them.
    pub fn note_queued(&self, workspace_id: Uuid) {
        self.backlog.lock().expect("backlog lock").insert(workspace_id);
    }

    /// Holds the workspace's queue back for `after`, as its agent asked in
    /// a busy answer: scans do not try it meanwhile. A report of room from
    /// the registry is newer news and drains at once (GW-7).
    pub fn rest(&self, workspace_id: Uuid, after: Duration) {
        let until = tokio::time::Instant::now() + after.min(MAX_REST);
        let mut resting = self.resting.lock().expect("resting lock");
        let latest = resting.entry(workspace_id).or_insert(until);
        *latest = (*latest).max(until);
    }

    /// Whether the workspace's agent asked not to be tried again yet.
    fn resting(&self, workspace_id: Uuid) -> bool {
        let mut resting = self.resting.lock().expect("resting lock");
        match resting.get(&workspace_id) {
            Some(until) if *until > tokio::time::Instant::now() => true,
            Some(_) => {
                resting.remove(&workspace_id);
                false
            }
            None => false,
        }
    }

    /// Notes a message just queued with `priority`, for a drain of its
    /// workspace under way here.
    pub fn note_arrival(&self, workspace_id: Uuid, priority: i32) {
        self.note_queued(workspace_id);
        if self.draining.lock().expect("draining lock").contains_key(&workspace_id) {
            let mut arrivals = self.arrivals.lock().expect("arrivals lock");
            let highest = arrivals.entry(workspace_id).or_insert(priority);
            *highest = (*highest).max(priority);
        }
    }

    /// Whether a message queued since the last look outranks one of the
    /// held items (held in delivery order, so the last is the lowest).
    fn outranked(&self, workspace_id: Uuid, held: &VecDeque<QueueItem>) -> bool {
        let arrived = self.arrivals.lock().expect("arrivals lock").remove(&workspace_id);
        arrived.zip(held.back()).is_some_and(|(priority, lowest)| priority > lowest.priority)
    }

    pub fn has_backlog(&self, workspace_id: Uuid) -> bool {
        self.backlog.lock().expect("backlog lock").contains(&workspace_id)
    }

    /// Drains on every signal of room, and scans the store for due work no
    /// signal announced (retries after backoff, items of other replicas,
    /// expiries), until `shutdown`; then waits for the drains under way to
    /// wind up.
    pub async fn run(self: Arc<Self>, mut signals: mpsc::UnboundedReceiver<DrainSignal>, shutdown: CancellationToken) {
        let mut scan = tokio::time::interval(self.settings.scan_interval());
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Retention is counted in days: forgetting finished items needs no
        // more than one sweep a minute.
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                signal = signals.recv() => match signal {
                    Some(DrainSignal::Room(id)) if self.has_backlog(id) => {
                        self.resting.lock().expect("resting lock").remove(&id);
                        self.start(id, &shutdown, true);
                    }
                    Some(DrainSignal::Room(_)) => {}
                    Some(DrainSignal::Removed(id)) => self.forget(id).await,
                    None => break,
                },
                _ = scan.tick() => self.scan(&shutdown).await,
                _ = purge.tick() => self.purge().await,
            }
        }
        self.drains.close();
        self.drains.wait().await;
    }

    async fn forget(&self, workspace_id: Uuid) {
        self.backlog.lock().expect("backlog lock").remove(&workspace_id);
        self.resting.lock().expect("resting lock").remove(&workspace_id);
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
                for &(id, workspace_id) in &expired {
                    tracing::info!(queue_id = %id, %workspace_id, "queued message expired undelivered");
                }
                self.announce_ended(expired.into_iter().map(|(id, _)| id).collect());
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
                Ok(target) if target.has_room() && !self.resting(workspace_id) => {
                    self.start(workspace_id, shutdown, false);
                }
                Ok(_) => {}
                Err(crate::error::GatewayError::NotFound(_)) => self.forget(workspace_id).await,
                Err(e) => tracing::debug!(%workspace_id, error = %e, "cannot look up a workspace with queued work"),
            }
        }
    }

    /// Starts draining the workspace unless a drain is under way here; a
    /// report of room (`room_reported`) during one makes it drain once more
    /// when it ends.
    fn start(self: &Arc<Self>, workspace_id: Uuid, shutdown: &CancellationToken, room_reported: bool) {
        {
            let mut draining = self.draining.lock().expect("draining lock");
            if let Some(reported_again) = draining.get_mut(&workspace_id) {
                *reported_again |= room_reported;
                return;
            }
            draining.insert(workspace_id, false);
        }
        let drainer = self.clone();
        let shutdown = shutdown.clone();
        self.drains.spawn(async move {
            loop {
                if let Err(e) = drainer.drain(workspace_id, &shutdown).await {
                    tracing::warn!(%workspace_id, error = %e, "draining stopped");
                }
                let mut draining = drainer.draining.lock().expect("draining lock");
                if draining.get(&workspace_id) == Some(&true) && !shutdown.is_cancelled() {
                    draining.insert(workspace_id, false);
                } else {
                    draining.remove(&workspace_id);
                    break;
                }
            }
            drainer.arrivals.lock().expect("arrivals lock").remove(&workspace_id);
        });
    }

    async fn drain(self: &Arc<Self>, workspace_id: Uuid, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let lease = self.settings.lease();
        if !self.store.acquire_drain_lease(workspace_id, &self.owner, lease, SystemTime::now()).await? {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (replies, recorder) = self.start_recorder(workspace_id);
        let delivered = self.deliver_backlog(workspace_id, shutdown, &replies).await;
        // Every reply is recorded before the lease goes: the next drainer
        // would deliver an unrecorded one again.
        drop(replies);
        if let Err(e) = recorder.await {
            tracing::error!(%workspace_id, error = %e, "the recorder of delivered messages failed");
        }
        let released = self.store.release_drain_lease(workspace_id, &self.owner).await;
        let delivered = delivered?;
        released?;
        if delivered > 0 {
            tracing::info!(%workspace_id, delivered, elapsed_ms = started.elapsed().as_millis() as u64, "queue drained");
        }
        Ok(())
    }

    /// Sends the workspace's queue in order, as fast as the agent takes it,
    /// until the queue is empty or the drain must stop. Items are claimed
    /// ahead in batches and held; whatever is held unsent when the drain
    /// stops goes back to the queue unconsumed. Replies go to `replies`.
    /// Returns how many messages the agent answered.
    async fn deliver_backlog(
        &self,
        workspace_id: Uuid,
        shutdown: &CancellationToken,
        replies: &mpsc::Sender<Completion>,
    ) -> anyhow::Result<u64> {
        let lease = self.settings.lease();
        let orphans = self.store.take_over_in_flight(workspace_id, &self.owner, SystemTime::now()).await?;
        self.metrics.redelivering(orphans);
        if orphans > 0 {
            tracing::info!(%workspace_id, orphans, "redelivering the in-flight messages of a replica that lost its drain lease");
        }
        // Renewing the leases also keeps the held items ours, however long
        // the agent takes over the ones before them.
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutting_down = shutdown.cancelled();
        tokio::pin!(shutting_down);
        let mut held: VecDeque<QueueItem> = VecDeque::with_capacity(PREFETCH);
        // Polled by this task itself, which thus moves straight from one
        // reply to the next send. They never touch the store: a future that
        // held its connection (SQLite has one) while this task awaited the
        // store itself would never finish. The claim runs as a task of its
        // own for the same reason.
        let mut deliveries = FuturesUnordered::new();
        let mut claim: Option<JoinHandle<crate::store::Result<Vec<QueueItem>>>> = None;
        // The last claim found nothing: the next waits until everything
        // sent is answered, and finds the queue empty or newly filled.
        let mut exhausted = false;
        let mut stop: Option<Stop> = None;
        let mut failure: Option<anyhow::Error> = None;
        let mut bounced = Vec::new();
        let mut delivered = 0u64;
        loop {
            // Not while a claim is out: it returns items from behind those
            // held, which would then go before them. The arrival keeps
            // until the claim is back.
            if stop.is_none() && claim.is_none() && self.outranked(workspace_id, &held) {
                // Back in the queue with it, and claimed again in order.
                let ids: Vec<Uuid> = held.drain(..).map(|item| item.id).collect();
                self.release(workspace_id, &ids, "not sent yet: a message of higher priority arrived").await;
                exhausted = false;
            }
            if stop.is_none() {
                match self.directory.target(workspace_id).await {
                    Ok(target) if target.is_up() => {
                        let now = SystemTime::now();
                        let mut expired = Vec::new();
                        while deliveries.len() < target.free_slots() as usize
                            && let Some(item) = held.pop_front()
                        {
                            if item.expires_at.is_some_and(|at| at <= now) {
                                expired.push(item.id);
                            } else {
                                deliveries.push(self.deliver(target.clone(), item));
                            }
                        }
                        self.expire_held(workspace_id, &expired, now).await;
                    }
                    Ok(_) => stop = Some(Stop::TargetDown),
                    Err(e) => {
                        failure = Some(e.into());
                        stop = Some(Stop::Failed);
                    }
                }
            }
            if stop.is_none()
                && claim.is_none()
                && held.len() < REFILL_BELOW
                && (!exhausted || (held.is_empty() && deliveries.is_empty()))
            {
                let want = (PREFETCH - held.len()) as u32;
                let (store, owner) = (self.store.clone(), self.owner.clone());
                claim = Some(tokio::spawn(async move {
                    store.claim(workspace_id, &owner, lease, want, SystemTime::now()).await
                }));
            }
            if let Some(stop) = stop {
                if !held.is_empty() || !bounced.is_empty() {
                    // In one statement, the bounced item and all that was
                    // held behind it: they keep their places in the queue.
                    bounced.extend(held.drain(..).map(|item| item.id));
                    self.release(workspace_id, &bounced, stop.reason()).await;
                    bounced.clear();
                }
                if deliveries.is_empty() && claim.is_none() {
                    break;
                }
            }
            tokio::select! {
                // Biased, so that renewing the lease never waits behind a
                // run of replies; the others cannot starve each other, as
                // a reply is followed by a send that takes the agent a while.
                biased;
                _ = renew.tick() => match self.renew(workspace_id, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(%workspace_id, "lost the drain lease to another replica");
                        stop.get_or_insert(Stop::LeaseLost);
                    }
                    Err(e) => {
                        failure.get_or_insert(e.into());
                        stop.get_or_insert(Stop::Failed);
                    }
                },
                () = &mut shutting_down, if stop.is_none() => stop = Some(Stop::ShuttingDown),
                Some(attempt) = deliveries.next(), if !deliveries.is_empty() => match attempt {
                    Attempt::Replied(reply) => {
                        delivered += 1;
                        // The recorder only ends after this drain; an
                        // unrecorded reply means a redelivery, which the
                        // agent recognises by its message id.
                        if replies.send(reply).await.is_err() {
                            tracing::error!(%workspace_id, "the recorder of delivered messages is gone");
                        }
                    }
                    Attempt::Busy { id, retry_after } => {
                        if let Some(after) = retry_after {
                            self.rest(workspace_id, after);
                        }
                        bounced.push(id);
                        stop.get_or_insert(Stop::Busy);
                    }
                    Attempt::Failed { id, attempts, error, target_down } => {
                        if !self.fail(workspace_id, id, attempts, &error).await {
                            stop.get_or_insert(Stop::Failed);
                        } else if target_down {
                            stop.get_or_insert(Stop::TargetDown);
                        }
                    }
                },
                claimed = async { claim.as_mut().expect("a claim is pending").await }, if claim.is_some() => {
                    claim = None;
                    match claimed.map_err(anyhow::Error::from).and_then(|claimed| Ok(claimed?)) {
                        Ok(items) if items.is_empty() && held.is_empty() && deliveries.is_empty() => {
                            self.settle(workspace_id).await;
                            break;
                        }
                        Ok(items) => {
                            exhausted = items.is_empty();
                            held.extend(items);
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                            stop.get_or_insert(Stop::Failed);
                        }
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Renews the drain lease and, with it, the leases of the items held.
    /// False if another replica has taken the drain over.
    async fn renew(&self, workspace_id: Uuid, lease: Duration) -> crate::store::Result<bool> {
        let now = SystemTime::now();
        if !self.store.acquire_drain_lease(workspace_id, &self.owner, lease, now).await? {
            return Ok(false);
        }
        self.store.renew_item_leases(workspace_id, &self.owner, lease, now).await?;
        Ok(true)
    }

    /// Puts items claimed but not consumed back in the queue.
    async fn release(&self, workspace_id: Uuid, ids: &[Uuid], reason: &str) {
        match self.store.release_unconsumed(ids, &self.owner, reason, SystemTime::now()).await {
            Ok(released) => {
                self.changes.announce(ids.iter().copied());
                tracing::debug!(%workspace_id, released, reason, "unsent messages back in the queue");
            }
            // Their leases run out, and the next drainer sends them, with
            // the same message ids.
            Err(e) => tracing::warn!(%workspace_id, error = %e, "cannot put unsent messages back in the queue"),
        }
    }

    /// Drops held items whose expiry came before their turn.
    async fn expire_held(&self, workspace_id: Uuid, ids: &[Uuid], now: SystemTime) {
        if ids.is_empty() {
            return;
        }
        match self.store.expire_held(ids, &self.owner, now).await {
            Ok(expired) => {
                for &id in &expired {
                    tracing::info!(queue_id = %id, %workspace_id, "queued message expired undelivered");
                }
                self.announce_ended(expired);
            }
            // Still held: their leases run out, and a claim never takes an
            // expired item, nor does a drain send one.
            Err(e) => tracing::warn!(%workspace_id, error = %e, "cannot expire held messages"),
        }
    }

    /// Clears the backlog mark once the store confirms the queue is empty
    /// (another replica may have queued meanwhile).
    async fn settle(&self, workspace_id: Uuid) {
        if let Ok(0) = self.store.depth(workspace_id).await {
            self.backlog.lock().expect("backlog lock").remove(&workspace_id);
        }
    }
}
