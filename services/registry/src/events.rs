//! Delivery of registry events to watchers (REG-8).
//!
//! Events live in the store, numbered in commit order. One pump per replica
//! tails the store — woken by local commits, by other replicas' commits
//! (PostgreSQL notifications) and by a slow poll as a safety net — and fans
//! each event out to this replica's watchers. A watcher first replays the
//! store from its cursor, then follows the pump; if it falls behind the
//! pump it replays from the store again, so it never sees a gap.

use std::{collections::HashSet, sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    error::{RegistryError, Result},
    model::{Event, EventKind},
    store::RegistryStore,
};

/// Which events a watcher wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Empty means every workspace.
    pub workspaces: HashSet<Uuid>,
    /// Empty means every kind.
    pub kinds: HashSet<EventKind>,
}

impl EventFilter {
    fn matches(&self, event: &Event) -> bool {
        (self.workspaces.is_empty() || self.workspaces.contains(&event.draft.workspace_id))
            && (self.kinds.is_empty() || self.kinds.contains(&event.draft.kind))
    }

    fn wants_heartbeats(&self) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&EventKind::Heartbeat)
    }
}

const PAGE: u32 = 1000;
const FANOUT_CAPACITY: usize = 16 * 1024;
const WATCHER_BUFFER: usize = 1024;

/// Fans stored events out to this replica's watchers.
pub struct EventHub {
    store: Arc<dyn RegistryStore>,
    fanout: broadcast::Sender<Arc<Event>>,
    watchers: Gauge,
}

impl EventHub {
    /// Starts the pump, which runs until `shutdown`.
    pub async fn start(
        store: Arc<dyn RegistryStore>,
        committed: Arc<Notify>,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let hub = Arc::new(Self { store, fanout, watchers: Gauge::default() });
        let head = hub.store.head().await?;
        tokio::spawn(hub.clone().pump(head, committed, poll, shutdown));
        Ok(hub)
    }

    /// How many watchers this replica feeds now.
    pub fn watchers(&self) -> Gauge {
        self.watchers.clone()
    }

    async fn pump(self: Arc<Self>, mut head: u64, committed: Arc<Notify>, poll: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = committed.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            loop {
                match self.store.events_after(head, PAGE).await {
                    Ok(events) => {
                        let full = events.len() == PAGE as usize;
                        for event in events {
                            head = event.cursor;
                            // No receivers is fine: nobody is watching.
                            let _ = self.fanout.send(Arc::new(event));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read new events; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Streams events matching `filter` after `after` (or from now on),
    /// until the receiver is dropped or `shutdown` fires.
    pub async fn watch(
        self: &Arc<Self>,
        filter: EventFilter,
        after: Option<u64>,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<Arc<Event>>>> {
        // Subscribe before reading the store: whatever commits from here on
        // reaches us through the pump, and what came before, the replay finds.
        let live = self.fanout.subscribe();
        let cursor = match after {
            Some(cursor) => {
                let pruned = self.store.pruned_through().await?;
                let floor =
                    if filter.wants_heartbeats() { pruned.heartbeats.max(pruned.others) } else { pruned.others };
                if cursor < floor {
                    return Err(RegistryError::CursorExpired { cursor, pruned_through: floor });
                }
                cursor
            }
            None => self.store.head().await?,
        };
        let (sender, receiver) = mpsc::channel(WATCHER_BUFFER);
        tokio::spawn(self.clone().feed(filter, cursor, live, sender, shutdown));
        Ok(receiver)
    }

    async fn feed(
        self: Arc<Self>,
        filter: EventFilter,
        mut cursor: u64,
        mut live: broadcast::Receiver<Arc<Event>>,
        sender: mpsc::Sender<Result<Arc<Event>>>,
        shutdown: CancellationToken,
    ) {
        let _watching = Watching::start(&self.watchers);
        let mut replay = true;
        loop {
            if replay {
                match self.replay(&filter, &mut cursor, &sender).await {
                    Ok(true) => replay = false,
                    Ok(false) => return,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
                received = live.recv() => received,
            };
            match received {
                Ok(event) if event.cursor > cursor => {
                    cursor = event.cursor;
                    if filter.matches(&event) && sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "watcher fell behind; replaying from the store");
                    replay = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends stored events after `cursor`; false when the watcher is gone.
    async fn replay(
        &self,
        filter: &EventFilter,
        cursor: &mut u64,
        sender: &mpsc::Sender<Result<Arc<Event>>>,
    ) -> Result<bool> {
        loop {
            let events = self.store.events_after(*cursor, PAGE).await?;
            let full = events.len() == PAGE as usize;
            for event in events {
                *cursor = event.cursor;
                if filter.matches(&event) && sender.send(Ok(Arc::new(event))).await.is_err() {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }
}

/// One watcher on the gauge, for as long as its feed runs, however it ends.
struct Watching(Gauge);

impl Watching {
    fn start(watchers: &Gauge) -> Self {
        watchers.inc();
        Self(watchers.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}
