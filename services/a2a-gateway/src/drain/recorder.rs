//! The recorder task that writes a drain's replies to the store in batches,
//! apart from the drain loop so that the store's pace never sets the agent's.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, task::JoinHandle};
use uuid::Uuid;

use super::{Drainer, PREFETCH};
use crate::store::Completion;

/// Replies waiting to be recorded before the drain waits for the recorder:
/// memory stays bounded if the store falls behind the agent.
const RECORD_BACKLOG: usize = 2 * PREFETCH;
/// The most replies the recorder writes in one statement.
const RECORD_BATCH: usize = PREFETCH;
/// The least time between the starts of two writes of the recorder. A reply
/// that finds no write in that time is written at once; replies that come
/// faster are written together, at a fraction of the store's cost per
/// write (a commit, thread hand-offs) each. Replies lost in a crash are
/// delivered again, which the agent recognises by the message id, so this
/// is kept short.
const RECORD_INTERVAL: Duration = Duration::from_millis(1);

impl Drainer {
    /// Starts the task that records replies as they come, each time with
    /// everything that arrived since it wrote the last ones: the store's
    /// pace then never sets the agent's.
    pub(super) fn start_recorder(self: &Arc<Self>, workspace_id: Uuid) -> (mpsc::Sender<Completion>, JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::channel(RECORD_BACKLOG);
        let drainer = self.clone();
        let recorder = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RECORD_BATCH);
            let mut next_write = tokio::time::Instant::now();
            while receiver.recv_many(&mut batch, RECORD_BATCH).await > 0 {
                if batch.len() < RECORD_BATCH && tokio::time::Instant::now() < next_write {
                    tokio::time::sleep_until(next_write).await;
                    while batch.len() < RECORD_BATCH
                        && let Ok(reply) = receiver.try_recv()
                    {
                        batch.push(reply);
                    }
                }
                next_write = tokio::time::Instant::now() + RECORD_INTERVAL;
                drainer.record(workspace_id, &batch).await;
                batch.clear();
            }
        });
        (sender, recorder)
    }

    /// Stores the agent's results with their items (GW-7).
    async fn record(&self, workspace_id: Uuid, replies: &[Completion]) {
        match self.store.complete(&self.owner, replies, SystemTime::now()).await {
            Ok(recorded) if recorded.len() == replies.len() => {
                self.metrics.delivered(recorded.len());
                self.announce_ended(recorded);
                tracing::debug!(%workspace_id, count = replies.len(), "queued messages delivered");
            }
            Ok(recorded) => {
                self.metrics.delivered(recorded.len());
                self.announce_ended(recorded.clone());
                let recorded: HashSet<Uuid> = recorded.into_iter().collect();
                for reply in replies.iter().filter(|reply| !recorded.contains(&reply.id)) {
                    tracing::warn!(queue_id = %reply.id, "delivered, but another replica had taken the item over");
                }
            }
            // The leases run out and the items are delivered again, with the
            // same message ids.
            Err(e) => tracing::warn!(%workspace_id, count = replies.len(), error = %e, "cannot record deliveries"),
        }
    }
}
