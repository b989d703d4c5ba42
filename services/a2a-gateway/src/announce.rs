//! Announcing queue items' changes to callers who follow them (GW-7: a
//! queued message's result is announced, so its caller can collect it).
//!
//! Only items someone follows are tracked, so a drain with nobody listening
//! pays a lock per batch and nothing else. The announcement reaches
//! followers on this replica; a change made by another replica is found by
//! the followers' own periodic look at the store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use uuid::Uuid;

#[derive(Default)]
pub struct ItemChanges {
    followed: Mutex<HashMap<Uuid, watch::Sender<()>>>,
}

impl ItemChanges {
    /// Starts following `id`: the returned watch wakes on each announced change.
    pub fn follow(self: &Arc<Self>, id: Uuid) -> ItemWatch {
        let mut followed = self.followed.lock().expect("followed items lock");
        let receiver = followed.entry(id).or_insert_with(|| watch::channel(()).0).subscribe();
        ItemWatch { changes: self.clone(), id, receiver: Some(receiver) }
    }

    /// Wakes the followers of each of `ids` (their items changed state).
    pub fn announce(&self, ids: impl IntoIterator<Item = Uuid>) {
        let followed = self.followed.lock().expect("followed items lock");
        if followed.is_empty() {
            return;
        }
        for id in ids {
            if let Some(sender) = followed.get(&id) {
                sender.send_replace(());
            }
        }
    }

    #[cfg(test)]
    fn followed(&self) -> usize {
        self.followed.lock().expect("followed items lock").len()
    }
}

/// One follower of one item; the item is no longer tracked once its last
/// follower is dropped.
pub struct ItemWatch {
    changes: Arc<ItemChanges>,
    id: Uuid,
    receiver: Option<watch::Receiver<()>>,
}

impl ItemWatch {
    /// Resolves at the next announced change (at once if one came since the
    /// last call).
    pub async fn changed(&mut self) {
        let receiver = self.receiver.as_mut().expect("the receiver lives as long as the watch");
        if receiver.changed().await.is_err() {
            // The sender lives while a receiver does: unreachable, but a
            // watch that can no longer fire must not spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for ItemWatch {
    fn drop(&mut self) {
        let mut followed = self.changes.followed.lock().expect("followed items lock");
        self.receiver = None;
        if followed.get(&self.id).is_some_and(|sender| sender.receiver_count() == 0) {
            followed.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn followers_are_woken_by_changes_of_their_item_only_and_forgotten_when_gone() {
        let changes = Arc::new(ItemChanges::default());
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let mut a = changes.follow(first);
        let mut b = changes.follow(first);
        let mut c = changes.follow(second);
        assert_eq!(changes.followed(), 2);

        changes.announce([first, Uuid::new_v4()]);
        a.changed().await;
        b.changed().await;
        let quiet = tokio::time::timeout(Duration::from_millis(50), c.changed()).await;
        assert!(quiet.is_err(), "a change of another item woke the follower");

        drop(a);
        assert_eq!(changes.followed(), 2, "the item still has a follower");
        drop(b);
        drop(c);
        assert_eq!(changes.followed(), 0);
        changes.announce([first]);
    }
}
