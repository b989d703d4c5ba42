//! The durable queue (GW-6…GW-8), on SQLite and, when configured,
//! PostgreSQL: order, dedupe, attempts and dead letters, expiry, leases and
//! their takeover, and the inspection and repair operations behind the
//! control API. Every call takes its clock from the test, so time is exact.

use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agentmesh_a2a_gateway::store::{
    Completion, DropStale, ListFilter, MAX_PUSH_CONFIGS_PER_TASK, NewQueueItem, PushAuthentication, PushConfig,
    QueueItem, QueueStats, QueueStore, Requeue, StateDepth, StoreError,
};
use agentmesh_db::Database;
use agentmesh_proto::gateway::v1::{self as pb, QueueItemState, QueueReason};
use agentmesh_testkit::engines::{Engine, TestDatabase};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

/// A fresh queue on one engine.
struct Backend {
    store: QueueStore,
    database: TestDatabase,
}

impl Backend {
    async fn open(database: TestDatabase) -> Self {
        let store = QueueStore::open(Database::connect(database.url()).await.unwrap()).await.unwrap();
        Self { store, database }
    }

    /// Another gateway replica on the same queue: its own connection pool on
    /// PostgreSQL; on SQLite (one replica only) the same store.
    async fn replica(&self) -> QueueStore {
        match self.database.engine() {
            Engine::Postgres => QueueStore::open(Database::connect(self.database.url()).await.unwrap()).await.unwrap(),
            Engine::Sqlite => self.store.clone(),
        }
    }
}

agentmesh_testkit::on_every_engine!(
    database = "gateway_test", backend = Backend;
    a_message_id_is_queued_once_per_workspace,
    the_depth_by_state_counts_waiting_items_and_their_oldest,
    items_leave_by_priority_then_arrival,
    a_claim_takes_only_due_unexpired_items,
    a_busy_bounce_goes_back_first_without_spending_an_attempt,
    a_batch_is_claimed_in_delivery_order_and_its_replies_recorded_at_once,
    unsent_items_go_back_together_keeping_their_places,
    items_that_expire_while_held_are_dropped_unsent,
    renewing_keeps_held_items_from_a_takeover,
    failed_attempts_back_off_then_become_a_dead_letter,
    expired_items_are_dropped,
    completing_is_idempotent,
    a_dead_replicas_items_are_taken_over_and_its_late_answers_refused,
    the_drain_lease_is_exclusive_until_it_expires,
    concurrent_claimers_share_the_items_without_overlap,
    listing_pages_through_items_in_delivery_order,
    dropping_stale_items_follows_the_criteria,
    dead_letters_are_requeued_by_workspace_or_by_id,
    stats_total_and_rank_workspaces_deepest_first,
    finished_items_are_purged,
    a_removed_workspaces_queue_is_dropped,
    a_caller_cancels_only_what_still_waits,
    items_convert_to_the_control_api,
    a_store_that_cannot_be_reached_says_so,
    a_large_backlog_drains_quickly,
    the_depth_follows_every_way_in_and_out_of_the_queue,
    push_configs_are_kept_per_task_and_purged_with_their_items,
);

/// Seconds after a fixed start.
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn message(workspace_id: Uuid, message_id: &str, priority: i32) -> NewQueueItem {
    NewQueueItem {
        workspace_id,
        message_id: message_id.to_owned(),
        caller: "service:test".to_owned(),
        priority,
        reason: QueueReason::TargetBusy,
        max_attempts: 3,
        expires_at: None,
        request_json: format!(r#"{{"jsonrpc":"2.0","id":"{message_id}"}}"#),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    }
}

async fn enqueue(store: &QueueStore, item: NewQueueItem, at: SystemTime) -> QueueItem {
    let queued = store.enqueue(item, at).await.unwrap();
    assert!(!queued.duplicate);
    queued.item
}

async fn get(store: &QueueStore, id: Uuid) -> QueueItem {
    store.get(id).await.unwrap().expect("item exists")
}

/// Records one reply, as the drain's recorder does; true if it was taken.
async fn complete(store: &QueueStore, id: Uuid, owner: &str, result: &str, at: SystemTime) -> Result<bool, StoreError> {
    let recorded = store.complete(owner, &[Completion { id, result_json: result.to_owned() }], at).await?;
    Ok(recorded == [id])
}

/// Puts one item back unconsumed; true if `owner` held it.
async fn release(store: &QueueStore, id: Uuid, owner: &str, at: SystemTime) -> Result<bool, StoreError> {
    Ok(store.release_unconsumed(&[id], owner, "target busy", at).await? == 1)
}

fn message_ids(items: &[QueueItem]) -> Vec<&str> {
    items.iter().map(|item| item.message_id.as_str()).collect()
}

/// Queues a message and makes it a dead letter: one attempt allowed, failed.
async fn dead_letter(store: &QueueStore, workspace_id: Uuid, message_id: &str, at: SystemTime) -> QueueItem {
    let item = enqueue(store, NewQueueItem { max_attempts: 1, ..message(workspace_id, message_id, 100) }, at).await;
    let claimed = store.claim(workspace_id, "setup", LEASE, 1, at).await.unwrap();
    assert_eq!(message_ids(&claimed), [message_id]);
    let state = store.fail_attempt(item.id, "setup", "agent answered 500", at, at).await.unwrap();
    assert_eq!(state, Some(QueueItemState::DeadLetter));
    get(store, item.id).await
}

/// Queues a message and claims it, leaving it IN_FLIGHT under "setup".
async fn in_flight(store: &QueueStore, workspace_id: Uuid, message_id: &str, at: SystemTime) -> QueueItem {
    let item = enqueue(store, message(workspace_id, message_id, 50), at).await;
    let claimed = store.claim(workspace_id, "setup", LEASE, 1, at).await.unwrap();
    assert_eq!(message_ids(&claimed), [message_id]);
    get(store, item.id).await
}

async fn the_depth_by_state_counts_waiting_items_and_their_oldest(backend: &Backend) {
    let store = &backend.store;
    assert_eq!(store.depth_by_state().await.unwrap(), []);
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    enqueue(store, message(one, "queued-first", 0), start).await;
    enqueue(store, message(two, "queued-later", 0), start + Duration::from_secs(5)).await;
    in_flight(store, one, "held", start + Duration::from_secs(1)).await;
    dead_letter(store, two, "dead", start + Duration::from_secs(2)).await;
    let mut depths = store.depth_by_state().await.unwrap();
    depths.sort_by_key(|d| d.state as i32);
    let mut expected = vec![
        StateDepth { state: QueueItemState::Queued, items: 2, oldest_enqueued_at: start },
        StateDepth { state: QueueItemState::InFlight, items: 1, oldest_enqueued_at: start + Duration::from_secs(1) },
        StateDepth { state: QueueItemState::DeadLetter, items: 1, oldest_enqueued_at: start + Duration::from_secs(2) },
    ];
    expected.sort_by_key(|d| d.state as i32);
    assert_eq!(depths, expected);
}

async fn a_message_id_is_queued_once_per_workspace(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let first = store.enqueue(message(ws, "m1", 0), t(0)).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!((first.depth, first.item.state, first.item.attempts), (1, QueueItemState::Queued, 0));
    assert_eq!(first.item.next_attempt_at, Some(t(0)), "due at once");

    let again = NewQueueItem { priority: 9, request_json: "{}".into(), ..message(ws, "m1", 0) };
    let again = store.enqueue(again, t(1)).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.depth, 1, "nothing new was queued");
    assert_eq!(again.item, first.item, "the existing item, untouched");
    let (listed, _) =
        store.list(&ListFilter { workspace_id: Some(ws), ..ListFilter::default() }, 0, None).await.unwrap();
    assert_eq!(listed.len(), 1);

    // The same id for another workspace is another message.
    let elsewhere = store.enqueue(message(Uuid::new_v4(), "m1", 0), t(2)).await.unwrap();
    assert!(!elsewhere.duplicate);
    assert_eq!(elsewhere.depth, 1);
    assert_eq!(store.enqueue(message(ws, "m2", 0), t(3)).await.unwrap().depth, 2);

    // Once delivered, the id still names the item, which now has its result.
    let claimed = store.claim(ws, "r1", LEASE, 1, t(4)).await.unwrap();
    assert!(complete(store, claimed[0].id, "r1", r#"{"ok":true}"#, t(5)).await.unwrap());
    let late = store.enqueue(message(ws, "m1", 0), t(6)).await.unwrap();
    assert!(late.duplicate);
    assert_eq!(late.item.state, QueueItemState::Delivered);
    assert_eq!(late.item.result_json.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(late.depth, 1, "m2 is still queued");
}

async fn items_leave_by_priority_then_arrival(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    for (i, (id, priority)) in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)].into_iter().enumerate() {
        enqueue(store, message(ws, id, priority), t(i as u64)).await;
    }
    let claimed = store.claim(ws, "r1", LEASE, 10, t(10)).await.unwrap();
    assert_eq!(message_ids(&claimed), ["b", "d", "a", "c", "e"]);

    // A requeued dead letter keeps its place in arrival order.
    let ws = Uuid::new_v4();
    let x = enqueue(store, NewQueueItem { max_attempts: 1, ..message(ws, "x", 0) }, t(0)).await;
    enqueue(store, message(ws, "y", 0), t(1)).await;
    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 1, t(2)).await.unwrap()), ["x"]);
    assert_eq!(store.fail_attempt(x.id, "r1", "boom", t(3), t(3)).await.unwrap(), Some(QueueItemState::DeadLetter));
    enqueue(store, message(ws, "z", 0), t(4)).await;
    let (requeued, _) =
        store.requeue_dead_letters(&Requeue { workspace_id: Some(ws), ..Requeue::default() }, t(5)).await.unwrap();
    assert_eq!(requeued, [x.id]);
    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 10, t(6)).await.unwrap()), ["x", "y", "z"]);
}

async fn a_claim_takes_only_due_unexpired_items(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, NewQueueItem { expires_at: Some(t(100)), ..message(ws, "a", 1) }, t(0)).await;
    let b = enqueue(store, message(ws, "b", 0), t(0)).await;
    assert_eq!(store.workspaces_with_work(t(0)).await.unwrap(), [ws]);

    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 1, t(1)).await.unwrap()), ["a"]);
    assert_eq!(store.fail_attempt(a.id, "r1", "timeout", t(20), t(1)).await.unwrap(), Some(QueueItemState::Queued));
    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 10, t(2)).await.unwrap()), ["b"], "a backs off");
    assert!(complete(store, b.id, "r1", "{}", t(2)).await.unwrap());
    assert!(store.workspaces_with_work(t(2)).await.unwrap().is_empty());
    assert_eq!(store.next_due_at(t(2)).await.unwrap(), Some(t(20)));
    assert!(store.claim(ws, "r1", LEASE, 10, t(19)).await.unwrap().is_empty());
    assert_eq!(store.workspaces_with_work(t(20)).await.unwrap(), [ws]);
    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 10, t(20)).await.unwrap()), ["a"]);
    assert_eq!(store.next_due_at(t(20)).await.unwrap(), Some(t(20) + LEASE), "its lease ends then");
    assert!(complete(store, a.id, "r1", "{}", t(21)).await.unwrap());
    assert_eq!(store.next_due_at(t(21)).await.unwrap(), None);

    // An expired item is never claimed, even before expire_due drops it.
    let c = enqueue(store, NewQueueItem { expires_at: Some(t(50)), ..message(ws, "c", 0) }, t(30)).await;
    assert!(store.workspaces_with_work(t(50)).await.unwrap().is_empty());
    assert!(store.claim(ws, "r1", LEASE, 10, t(50)).await.unwrap().is_empty());
    assert_eq!(get(store, c.id).await.state, QueueItemState::Queued);
    assert_eq!(message_ids(&store.claim(ws, "r1", LEASE, 10, t(49)).await.unwrap()), ["c"]);
    assert!(store.claim(ws, "r1", LEASE, 0, t(49)).await.unwrap().is_empty());
}

async fn a_busy_bounce_goes_back_first_without_spending_an_attempt(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, message(ws, "a", 0), t(0)).await;
    let b = enqueue(store, message(ws, "b", 0), t(1)).await;
    // One real failure first, so there is an attempt count to keep.
    store.claim(ws, "r1", LEASE, 1, t(2)).await.unwrap();
    store.fail_attempt(a.id, "r1", "connection reset", t(2), t(2)).await.unwrap();

    let claimed = store.claim(ws, "r1", LEASE, 2, t(3)).await.unwrap();
    assert_eq!(message_ids(&claimed), ["a", "b"]);
    assert!(!release(store, a.id, "r2", t(4)).await.unwrap(), "r2 does not hold it");
    assert!(release(store, a.id, "r1", t(4)).await.unwrap());
    assert!(!release(store, a.id, "r1", t(4)).await.unwrap(), "already back");
    assert!(release(store, b.id, "r1", t(4)).await.unwrap());
    let back = get(store, a.id).await;
    assert_eq!(
        (back.state, back.attempts, back.lease_owner, back.lease_expires_at),
        (QueueItemState::Queued, 1, None, None)
    );
    assert_eq!(back.next_attempt_at, Some(t(4)));
    assert_eq!(back.last_error, "connection reset");
    assert_eq!(store.depth(ws).await.unwrap(), 2);

    enqueue(store, message(ws, "c", 0), t(5)).await;
    let next = store.claim(ws, "r1", LEASE, 1, t(6)).await.unwrap();
    assert_eq!(message_ids(&next), ["a"]);
    assert_eq!(next[0].attempts, 1);
}

async fn failed_attempts_back_off_then_become_a_dead_letter(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, message(ws, "a", 0), t(0)).await;
    let mut now = 0;
    for attempt in 1..=2u32 {
        assert_eq!(store.claim(ws, "r1", LEASE, 1, t(now)).await.unwrap().len(), 1);
        let retry_at = t(now + 10 * u64::from(attempt));
        let state = store.fail_attempt(a.id, "r1", &format!("boom {attempt}"), retry_at, t(now)).await.unwrap();
        assert_eq!(state, Some(QueueItemState::Queued));
        let item = get(store, a.id).await;
        assert_eq!((item.attempts, item.last_error.as_str()), (attempt, format!("boom {attempt}").as_str()));
        assert_eq!((item.next_attempt_at, item.lease_owner), (Some(retry_at), None));
        assert!(store.claim(ws, "r1", LEASE, 1, t(now + 1)).await.unwrap().is_empty(), "backing off");
        now += 10 * u64::from(attempt);
    }
    assert_eq!(store.fail_attempt(a.id, "r1", "not held", t(now), t(now)).await.unwrap(), None);
    assert_eq!(store.claim(ws, "r1", LEASE, 1, t(now)).await.unwrap().len(), 1);
    assert_eq!(store.fail_attempt(a.id, "r2", "not mine", t(now), t(now)).await.unwrap(), None);
    let state = store.fail_attempt(a.id, "r1", "boom 3", t(now + 100), t(now)).await.unwrap();
    assert_eq!(state, Some(QueueItemState::DeadLetter));
    let dead = get(store, a.id).await;
    assert_eq!((dead.state, dead.attempts, dead.max_attempts), (QueueItemState::DeadLetter, 3, 3));
    assert_eq!((dead.last_error.as_str(), dead.next_attempt_at), ("boom 3", None));
    assert!(store.claim(ws, "r1", LEASE, 1, t(10_000)).await.unwrap().is_empty());
    assert_eq!(store.depth(ws).await.unwrap(), 0);
}

async fn expired_items_are_dropped(backend: &Backend) {
    let store = &backend.store;
    let (ws, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let a = enqueue(store, NewQueueItem { expires_at: Some(t(10)), ..message(ws, "a", 0) }, t(0)).await;
    let b = enqueue(store, NewQueueItem { expires_at: Some(t(20)), ..message(ws, "b", 0) }, t(0)).await;
    let c = enqueue(store, message(ws, "c", 0), t(0)).await;
    let d = enqueue(store, NewQueueItem { expires_at: Some(t(5)), ..message(ws2, "d", 0) }, t(0)).await;
    store.claim(ws2, "r1", LEASE, 1, t(1)).await.unwrap();

    assert!(store.expire_due(t(9)).await.unwrap().is_empty());
    assert_eq!(store.expire_due(t(10)).await.unwrap(), [(a.id, ws)]);
    let dropped = get(store, a.id).await;
    assert_eq!((dropped.state, dropped.state_reason.as_str()), (QueueItemState::Dropped, "expired"));
    assert!(store.expire_due(t(10)).await.unwrap().is_empty());
    assert_eq!(store.expire_due(t(30)).await.unwrap(), [(b.id, ws)]);
    assert_eq!(get(store, c.id).await.state, QueueItemState::Queued);
    assert_eq!(get(store, d.id).await.state, QueueItemState::InFlight, "in flight: its delivery decides");
    assert_eq!(store.depth(ws).await.unwrap(), 1);
}

async fn completing_is_idempotent(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, message(ws, "a", 0), t(0)).await;
    store.claim(ws, "r1", LEASE, 1, t(1)).await.unwrap();
    assert!(!complete(store, a.id, "r2", r#"{"from":"r2"}"#, t(2)).await.unwrap());
    assert!(complete(store, a.id, "r1", r#"{"ok":1}"#, t(2)).await.unwrap());
    assert!(!complete(store, a.id, "r1", r#"{"ok":2}"#, t(3)).await.unwrap());
    let done = get(store, a.id).await;
    assert_eq!(done.state, QueueItemState::Delivered);
    assert_eq!((done.result_json.as_deref(), done.delivered_at), (Some(r#"{"ok":1}"#), Some(t(2))));
    assert_eq!((done.lease_owner.as_deref(), done.lease_expires_at, done.updated_at), (None, None, t(2)));
    assert!(!release(store, a.id, "r1", t(3)).await.unwrap());
    assert_eq!(store.fail_attempt(a.id, "r1", "late", t(3), t(3)).await.unwrap(), None);
    assert_eq!(get(store, a.id).await, done);

    // A reply that arrives after the lease ran out still counts while no one
    // else took the item over.
    let b = enqueue(store, message(ws, "b", 0), t(10)).await;
    store.claim(ws, "r1", Duration::from_secs(5), 1, t(10)).await.unwrap();
    assert!(complete(store, b.id, "r1", "{}", t(100)).await.unwrap());
}

async fn a_dead_replicas_items_are_taken_over_and_its_late_answers_refused(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, message(ws, "a", 0), t(0)).await;
    let b = enqueue(store, message(ws, "b", 0), t(0)).await;
    let c = enqueue(store, message(ws, "c", 0), t(0)).await;
    store.claim(ws, "a", LEASE, 1, t(0)).await.unwrap();
    store.fail_attempt(a.id, "a", "reset", t(0), t(0)).await.unwrap();

    let short = Duration::from_secs(10);
    assert_eq!(message_ids(&store.claim(ws, "a", short, 2, t(0)).await.unwrap()), ["a", "b"]);
    assert_eq!(message_ids(&store.claim(ws, "b", LEASE, 10, t(5)).await.unwrap()), ["c"], "a and b are held");
    assert!(store.workspaces_with_work(t(9)).await.unwrap().is_empty());
    assert_eq!(store.workspaces_with_work(t(10)).await.unwrap(), [ws]);

    let taken = store.claim(ws, "b", LEASE, 10, t(10)).await.unwrap();
    assert_eq!(message_ids(&taken), ["a", "b"]);
    assert!(taken.iter().all(|item| item.lease_owner.as_deref() == Some("b")));
    assert_eq!((taken[0].id, taken[0].attempts, taken[1].attempts), (a.id, 1, 0), "attempts are kept");
    assert_eq!(taken[0].lease_expires_at, Some(t(10) + LEASE));

    assert!(!complete(store, a.id, "a", "{}", t(11)).await.unwrap());
    assert!(!release(store, b.id, "a", t(11)).await.unwrap());
    assert_eq!(store.fail_attempt(a.id, "a", "late", t(11), t(11)).await.unwrap(), None);
    assert_eq!(get(store, a.id).await.lease_owner.as_deref(), Some("b"));
    assert!(complete(store, a.id, "b", "{}", t(12)).await.unwrap());
    assert!(complete(store, b.id, "b", "{}", t(12)).await.unwrap());
    assert!(complete(store, c.id, "b", "{}", t(12)).await.unwrap());
}

async fn the_drain_lease_is_exclusive_until_it_expires(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let ttl = Duration::from_secs(10);
    assert!(store.acquire_drain_lease(ws, "a", ttl, t(0)).await.unwrap());
    assert!(!store.acquire_drain_lease(ws, "b", ttl, t(5)).await.unwrap());
    assert!(store.acquire_drain_lease(other, "b", ttl, t(5)).await.unwrap(), "per workspace");
    assert!(store.acquire_drain_lease(ws, "a", ttl, t(8)).await.unwrap(), "renewed until t(18)");
    assert!(!store.acquire_drain_lease(ws, "b", ttl, t(15)).await.unwrap());
    assert!(store.acquire_drain_lease(ws, "b", ttl, t(18)).await.unwrap(), "taken over once expired");
    assert!(!store.acquire_drain_lease(ws, "a", ttl, t(19)).await.unwrap());

    store.release_drain_lease(ws, "a").await.unwrap();
    assert!(!store.acquire_drain_lease(ws, "a", ttl, t(20)).await.unwrap(), "a cannot release b's lease");
    store.release_drain_lease(ws, "b").await.unwrap();
    assert!(store.acquire_drain_lease(ws, "a", ttl, t(20)).await.unwrap());
}

async fn concurrent_claimers_share_the_items_without_overlap(backend: &Backend) {
    let ws = Uuid::new_v4();
    let mut all = HashSet::new();
    for i in 0..200 {
        let item = enqueue(&backend.store, message(ws, &format!("m{i}"), i % 4), t(0)).await;
        all.insert(item.id);
    }
    let mut tasks = Vec::new();
    for replica in 0..4 {
        let store = backend.replica().await;
        tasks.push(tokio::spawn(async move {
            let owner = format!("replica-{replica}");
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim(ws, &owner, LEASE, 7, t(1)).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for item in claimed {
                    assert!(complete(&store, item.id, &owner, "{}", t(2)).await.unwrap());
                    mine.push(item.id);
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "{id} was claimed twice");
        }
    }
    assert_eq!(seen, all);
    assert_eq!(backend.store.depth(ws).await.unwrap(), 0);
}

async fn listing_pages_through_items_in_delivery_order(backend: &Backend) {
    let store = &backend.store;
    let (ws1, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let dead = dead_letter(store, ws1, "dead", t(0)).await;
    let flying = in_flight(store, ws1, "flying", t(0)).await;
    let delivered = in_flight(store, ws1, "delivered", t(0)).await;
    assert!(complete(store, delivered.id, "setup", r#"{"r":1}"#, t(1)).await.unwrap());
    for (i, priority) in [0, 3, 0, 3, 1, -2].into_iter().enumerate() {
        enqueue(store, message(ws1, &format!("q{i}"), priority), t(2)).await;
    }
    for i in 0..3 {
        enqueue(store, message(ws2, &format!("other{i}"), 0), t(2)).await;
    }

    // Everything not finished, by workspace, then priority, then arrival.
    let mut expected = Vec::new();
    for ws in [ws1, ws2] {
        let (mut items, _) =
            store.list(&ListFilter { workspace_id: Some(ws), ..ListFilter::default() }, 100, None).await.unwrap();
        expected.append(&mut items);
    }
    expected.sort_by_key(|item| (item.workspace_id, std::cmp::Reverse(item.priority), item.seq));
    assert_eq!(expected.len(), 11);
    let ws1_order: Vec<&str> =
        expected.iter().filter(|item| item.workspace_id == ws1).map(|item| item.message_id.as_str()).collect();
    assert_eq!(ws1_order, ["dead", "flying", "q1", "q3", "q4", "q0", "q2", "q5"]);

    let mut paged = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let (mut items, next) = store.list(&ListFilter::default(), 3, token.as_deref()).await.unwrap();
        assert!(items.len() <= 3);
        assert!(items.iter().all(|item| item.request_json.is_none() && item.result_json.is_none()));
        paged.append(&mut items);
        pages += 1;
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(
        paged.iter().map(|item| item.id).collect::<Vec<_>>(),
        expected.iter().map(|item| item.id).collect::<Vec<_>>()
    );

    let only = |states: Vec<QueueItemState>, include_payloads| ListFilter {
        workspace_id: Some(ws1),
        states,
        include_payloads,
    };
    let (done, next) = store.list(&only(vec![QueueItemState::Delivered], true), 10, None).await.unwrap();
    assert_eq!((done.len(), next), (1, None));
    assert_eq!(done[0].result_json.as_deref(), Some(r#"{"r":1}"#));
    assert!(done[0].request_json.as_deref().is_some_and(|json| json.contains("delivered")));
    let (odd, _) =
        store.list(&only(vec![QueueItemState::DeadLetter, QueueItemState::InFlight], false), 10, None).await.unwrap();
    assert_eq!(odd.iter().map(|item| item.id).collect::<Vec<_>>(), [dead.id, flying.id]);
    assert!(store.list(&only(vec![QueueItemState::Dropped], false), 10, None).await.unwrap().0.is_empty());

    for bad in ["not-hex", "6c3a78", "00"] {
        let error = store.list(&ListFilter::default(), 3, Some(bad)).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidPageToken), "{bad}: {error:?}");
    }
    let stats_token = store.stats(&[], 1, None, t(3)).await.unwrap().next_page_token.unwrap();
    assert!(matches!(
        store.list(&ListFilter::default(), 3, Some(&stats_token)).await,
        Err(StoreError::InvalidPageToken)
    ));
    assert_eq!(store.list(&ListFilter::default(), 3, Some("")).await.unwrap().0.len(), 3, "empty means first page");
}

async fn dropping_stale_items_follows_the_criteria(backend: &Backend) {
    let store = &backend.store;
    let (ws, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let a = enqueue(store, message(ws, "a", 0), t(0)).await;
    let b = enqueue(store, NewQueueItem { expires_at: Some(t(50)), ..message(ws, "b", 0) }, t(0)).await;
    let c = enqueue(store, message(ws, "c", 0), t(100)).await;
    let d = in_flight(store, ws, "d", t(0)).await;
    let e = dead_letter(store, ws, "e", t(0)).await;
    let f = enqueue(store, message(ws2, "f", 0), t(0)).await;
    let old = |workspace_id| DropStale {
        workspace_id,
        older_than: Some(Duration::from_secs(150)),
        reason: "dropped by operator: stale after outage".into(),
        ..DropStale::default()
    };

    let preview = store.drop_stale(&DropStale { dry_run: true, ..old(Some(ws)) }, t(200)).await.unwrap();
    assert_eq!(preview, (2, vec![a.id, b.id]));
    assert_eq!(get(store, a.id).await.state, QueueItemState::Queued, "a dry run changes nothing");

    let expired = DropStale {
        workspace_id: Some(ws),
        expired: true,
        reason: "expired by operator".into(),
        ..DropStale::default()
    };
    assert_eq!(store.drop_stale(&expired, t(200)).await.unwrap(), (1, vec![b.id]));
    let b_now = get(store, b.id).await;
    assert_eq!((b_now.state, b_now.state_reason.as_str()), (QueueItemState::Dropped, "expired by operator"));

    let with_dead = DropStale { include_dead_letters: true, ..old(Some(ws)) };
    assert_eq!(store.drop_stale(&with_dead, t(200)).await.unwrap(), (2, vec![e.id, a.id]));
    assert_eq!(get(store, a.id).await.state_reason, "dropped by operator: stale after outage");
    assert_eq!(get(store, d.id).await.state, QueueItemState::InFlight, "never in flight");
    assert_eq!(get(store, c.id).await.state, QueueItemState::Queued, "too young");
    assert_eq!(get(store, f.id).await.state, QueueItemState::Queued, "another workspace");

    assert_eq!(store.drop_stale(&old(None), t(200)).await.unwrap(), (1, vec![f.id]));
    let no_criterion = DropStale { workspace_id: Some(ws), ..DropStale::default() };
    assert!(matches!(store.drop_stale(&no_criterion, t(200)).await, Err(StoreError::InvalidRequest(_))));
}

async fn dead_letters_are_requeued_by_workspace_or_by_id(backend: &Backend) {
    let store = &backend.store;
    let (ws, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let x = dead_letter(store, ws, "x", t(0)).await;
    let y = dead_letter(store, ws, "y", t(1)).await;
    let z = dead_letter(store, ws, "z", t(2)).await;
    let w = enqueue(store, message(ws, "w", 0), t(3)).await;
    let v = dead_letter(store, ws2, "v", t(4)).await;
    let unknown = Uuid::new_v4();

    let by_id = Requeue { workspace_id: Some(ws), queue_ids: vec![x.id, w.id, unknown, v.id], max_attempts: None };
    let (requeued, skipped) = store.requeue_dead_letters(&by_id, t(10)).await.unwrap();
    assert_eq!(requeued, [x.id]);
    assert_eq!(skipped, [w.id.to_string(), unknown.to_string(), v.id.to_string()]);
    let back = get(store, x.id).await;
    assert_eq!((back.state, back.attempts, back.max_attempts), (QueueItemState::Queued, 0, 1));
    assert_eq!((back.next_attempt_at, back.seq, back.message_id.as_str()), (Some(t(10)), x.seq, "x"));
    assert_eq!(back.last_error, "agent answered 500", "the last error stays for humans");

    let all = Requeue { workspace_id: Some(ws), queue_ids: vec![], max_attempts: Some(5) };
    let (requeued, skipped) = store.requeue_dead_letters(&all, t(11)).await.unwrap();
    assert_eq!((requeued, skipped), (vec![y.id, z.id], vec![]));
    assert_eq!(get(store, y.id).await.max_attempts, 5);
    assert_eq!(get(store, v.id).await.state, QueueItemState::DeadLetter, "another workspace");

    let anywhere = Requeue { workspace_id: None, queue_ids: vec![v.id, v.id], max_attempts: None };
    assert_eq!(store.requeue_dead_letters(&anywhere, t(12)).await.unwrap(), (vec![v.id], vec![]));
    assert!(matches!(store.requeue_dead_letters(&Requeue::default(), t(12)).await, Err(StoreError::InvalidRequest(_))));
}

async fn stats_total_and_rank_workspaces_deepest_first(backend: &Backend) {
    let store = &backend.store;
    let [a, b, c, d, e] = [(); 5].map(|_| Uuid::new_v4());
    dead_letter(store, a, "dead", t(0)).await;
    in_flight(store, a, "flying", t(0)).await;
    for i in 0..3 {
        enqueue(store, message(a, &format!("q{i}"), 0), t(10 * i)).await;
        enqueue(store, message(d, &format!("q{i}"), 0), t(30)).await;
    }
    for i in 0..5 {
        enqueue(store, message(b, &format!("q{i}"), 0), t(5 + i)).await;
    }
    dead_letter(store, c, "dead", t(0)).await;
    let done = in_flight(store, e, "done", t(0)).await;
    complete(store, done.id, "setup", "{}", t(1)).await.unwrap();

    let first = store.stats(&[], 2, None, t(100)).await.unwrap();
    let totals = &first.totals;
    assert_eq!((totals.workspace_id, totals.queued, totals.in_flight, totals.dead_letters), (None, 11, 1, 2));
    assert_eq!((totals.oldest_queued_at, totals.oldest_queued_age_seconds), (Some(t(0)), 100));
    let (tied_first, tied_second) = if a < d { (a, d) } else { (d, a) };
    let ids = |page: &[QueueStats]| page.iter().map(|s| s.workspace_id.unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&first.workspaces), [b, tied_first]);
    assert_eq!((first.workspaces[0].queued, first.workspaces[0].oldest_queued_at), (5, Some(t(5))));
    let second = store.stats(&[], 2, first.next_page_token.as_deref(), t(100)).await.unwrap();
    assert_eq!(ids(&second.workspaces), [tied_second, c]);
    assert_eq!(second.next_page_token, None);
    assert_eq!(second.totals, first.totals);
    let c_stats = &second.workspaces[1];
    assert_eq!(
        (c_stats.queued, c_stats.dead_letters, c_stats.oldest_queued_at, c_stats.oldest_queued_age_seconds),
        (0, 1, None, 0)
    );
    let a_stats = if tied_second == a { &second.workspaces[0] } else { &first.workspaces[1] };
    assert_eq!((a_stats.queued, a_stats.in_flight, a_stats.dead_letters), (3, 1, 1));

    // Named workspaces are listed even with nothing queued.
    let named = store.stats(&[e, c, a, c], 2, None, t(100)).await.unwrap();
    assert_eq!((named.totals.queued, named.totals.in_flight, named.totals.dead_letters), (3, 1, 2));
    let (zero_first, zero_second) = if c < e { (c, e) } else { (e, c) };
    assert_eq!(ids(&named.workspaces), [a, zero_first]);
    let rest = store.stats(&[e, c, a], 2, named.next_page_token.as_deref(), t(100)).await.unwrap();
    assert_eq!((ids(&rest.workspaces), rest.next_page_token), (vec![zero_second], None));

    assert!(matches!(store.stats(&[], 2, Some("zz"), t(100)).await, Err(StoreError::InvalidPageToken)));
}

async fn finished_items_are_purged(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = in_flight(store, ws, "a", t(0)).await;
    complete(store, a.id, "setup", "{}", t(10)).await.unwrap();
    let b = enqueue(store, NewQueueItem { expires_at: Some(t(20)), ..message(ws, "b", 0) }, t(0)).await;
    store.expire_due(t(20)).await.unwrap();
    let c = enqueue(store, message(ws, "c", 0), t(0)).await;
    let d = dead_letter(store, ws, "d", t(5)).await;
    let e = in_flight(store, ws, "e", t(6)).await;

    assert_eq!(store.purge_finished(t(10)).await.unwrap(), 0, "strictly before");
    assert_eq!(store.purge_finished(t(15)).await.unwrap(), 1);
    assert!(store.get(a.id).await.unwrap().is_none());
    assert_eq!(store.purge_finished(t(1000)).await.unwrap(), 1);
    assert!(store.get(b.id).await.unwrap().is_none());
    for kept in [c.id, d.id, e.id] {
        assert!(store.get(kept).await.unwrap().is_some());
    }
    // A forgotten message id may be queued afresh.
    let again = store.enqueue(message(ws, "a", 0), t(1001)).await.unwrap();
    assert!(!again.duplicate);
    assert!(again.item.seq > e.seq);
}

async fn push_configs_are_kept_per_task_and_purged_with_their_items(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let delivered = in_flight(store, ws, "delivered", t(0)).await;
    let waiting = enqueue(store, message(ws, "waiting", 0), t(0)).await;
    let config = |queue_id: Uuid, id: &str| PushConfig {
        queue_id,
        id: id.to_owned(),
        url: format!("https://hooks.example/{id}"),
        token: String::new(),
        authentication: None,
    };
    let with_auth = PushConfig {
        token: "tok".into(),
        authentication: Some(PushAuthentication { scheme: "Bearer".into(), credentials: "secret".into() }),
        ..config(delivered.id, "a")
    };
    store.put_push_config(&with_auth, t(1)).await.unwrap();
    store.put_push_config(&config(delivered.id, "b"), t(2)).await.unwrap();
    store.put_push_config(&config(waiting.id, "a"), t(3)).await.unwrap();
    assert_eq!(store.push_config(delivered.id, "a").await.unwrap(), Some(with_auth.clone()));
    assert_eq!(store.push_config(delivered.id, "c").await.unwrap(), None);

    // The same id again replaces the config.
    let replaced = PushConfig { url: "https://hooks.example/new".into(), ..config(delivered.id, "b") };
    store.put_push_config(&replaced, t(4)).await.unwrap();
    let both = store.push_configs(&[delivered.id, waiting.id]).await.unwrap();
    let ids: Vec<_> = both.iter().map(|c| (c.queue_id, c.id.as_str(), c.url.as_str())).collect();
    let mut expected = vec![
        (delivered.id, "a", "https://hooks.example/a"),
        (delivered.id, "b", "https://hooks.example/new"),
        (waiting.id, "a", "https://hooks.example/a"),
    ];
    expected.sort_by_key(|(queue_id, _, _)| queue_id.to_string());
    assert_eq!(ids, expected);

    // A task's configs are bounded.
    for n in 2..MAX_PUSH_CONFIGS_PER_TASK {
        store.put_push_config(&config(delivered.id, &format!("more-{n}")), t(5)).await.unwrap();
    }
    let refused = store.put_push_config(&config(delivered.id, "one-too-many"), t(6)).await;
    assert!(matches!(refused, Err(StoreError::InvalidRequest(_))), "{refused:?}");
    store.put_push_config(&config(delivered.id, "a"), t(6)).await.expect("replacing one is not adding one");

    assert!(store.delete_push_config(waiting.id, "a").await.unwrap());
    assert!(!store.delete_push_config(waiting.id, "a").await.unwrap());
    store.put_push_config(&config(waiting.id, "kept"), t(7)).await.unwrap();

    complete(store, delivered.id, "setup", "{}", t(10)).await.unwrap();
    assert_eq!(store.purge_finished(t(1000)).await.unwrap(), 1);
    assert!(store.push_configs(&[delivered.id]).await.unwrap().is_empty(), "purged with the item");
    assert_eq!(store.push_configs(&[waiting.id]).await.unwrap().len(), 1, "a waiting item keeps its configs");
}

async fn a_removed_workspaces_queue_is_dropped(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let dead = dead_letter(store, ws, "dead", t(0)).await;
    let flying = in_flight(store, ws, "flying", t(0)).await;
    let queued = enqueue(store, message(ws, "queued", 0), t(0)).await;
    let elsewhere = enqueue(store, message(other, "queued", 0), t(0)).await;
    assert_eq!(store.drop_workspace(ws, "workspace removed", t(1)).await.unwrap(), 2);
    for id in [dead.id, queued.id] {
        let item = get(store, id).await;
        assert_eq!((item.state, item.state_reason.as_str()), (QueueItemState::Dropped, "workspace removed"));
    }
    assert_eq!(get(store, flying.id).await.state, QueueItemState::InFlight);
    assert_eq!(get(store, elsewhere.id).await.state, QueueItemState::Queued);
}

async fn a_caller_cancels_only_what_still_waits(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let dead = dead_letter(store, ws, "dead", t(0)).await;
    let flying = in_flight(store, ws, "flying", t(0)).await;
    let queued = enqueue(store, message(ws, "queued", 0), t(0)).await;
    for id in [queued.id, dead.id] {
        let dropped = store.cancel(id, "canceled by operator:operator", t(1)).await.unwrap().expect("dropped");
        let item = get(store, id).await;
        assert_eq!(dropped, item, "the dropped item, as stored");
        assert_eq!(
            (item.state, item.state_reason.as_str()),
            (QueueItemState::Dropped, "canceled by operator:operator")
        );
        assert!(store.cancel(id, "again", t(2)).await.unwrap().is_none(), "a dropped item stays as it was");
        assert_eq!(get(store, id).await.state_reason, "canceled by operator:operator");
        assert_eq!(store.state(id).await.unwrap(), Some(QueueItemState::Dropped));
    }
    assert!(store.cancel(flying.id, "too late", t(1)).await.unwrap().is_none());
    assert_eq!(store.state(flying.id).await.unwrap(), Some(QueueItemState::InFlight));
    assert!(complete(store, flying.id, "setup", r#"{"kind":"message"}"#, t(2)).await.unwrap());
    assert!(store.cancel(flying.id, "too late", t(3)).await.unwrap().is_none());
    assert_eq!(get(store, flying.id).await.state, QueueItemState::Delivered);
    assert!(store.cancel(Uuid::new_v4(), "unknown", t(1)).await.unwrap().is_none());
    assert_eq!(store.state(Uuid::new_v4()).await.unwrap(), None);
}

async fn items_convert_to_the_control_api(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let item = NewQueueItem { expires_at: Some(t(500)), priority: -3, ..message(ws, "m", 0) };
    let queued = enqueue(store, item, t(1)).await;
    let claimed = store.claim(ws, "r1", LEASE, 1, t(2)).await.unwrap();
    let flying = pb::QueueItem::from(&claimed[0]);
    assert_eq!((flying.lease_owner.as_str(), flying.state), ("r1", QueueItemState::InFlight as i32));
    assert_eq!(flying.lease_expires_at.map(|ts| ts.seconds), Some(1_700_000_032));
    assert_eq!(flying.next_attempt_at, None);
    complete(store, queued.id, "r1", r#"{"kind":"message"}"#, t(3)).await.unwrap();

    let proto = pb::QueueItem::from(&get(store, queued.id).await);
    assert_eq!((proto.id, proto.workspace_id), (queued.id.to_string(), ws.to_string()));
    assert_eq!((proto.message_id.as_str(), proto.priority, proto.state), ("m", -3, QueueItemState::Delivered as i32));
    assert_eq!(proto.queue_reason, QueueReason::TargetBusy as i32);
    assert_eq!(proto.enqueued_at.map(|ts| ts.seconds), Some(1_700_000_001));
    assert_eq!(proto.expires_at.map(|ts| ts.seconds), Some(1_700_000_500));
    assert_eq!(proto.delivered_at.map(|ts| ts.seconds), Some(1_700_000_003));
    assert_eq!((proto.lease_owner.as_str(), proto.lease_expires_at), ("", None));
    assert_eq!(proto.result_json, r#"{"kind":"message"}"#);
    assert!(proto.request_json.contains("jsonrpc"));
    assert!(proto.traceparent.starts_with("00-"));

    enqueue(store, message(ws, "n", 0), t(4)).await;
    let stats = store.stats(&[ws], 10, None, t(10)).await.unwrap();
    let proto = pb::QueueStats::from(&stats.workspaces[0]);
    assert_eq!((proto.workspace_id, proto.queued, proto.oldest_queued_age_seconds), (ws.to_string(), 1, 6));
    assert_eq!(proto.oldest_queued_at.map(|ts| ts.seconds), Some(1_700_000_004));
    assert_eq!(pb::QueueStats::from(&stats.totals).workspace_id, "");
}

async fn a_store_that_cannot_be_reached_says_so(backend: &Backend) {
    let store = backend.replica().await;
    let ws = Uuid::new_v4();
    enqueue(&store, message(ws, "m", 0), t(0)).await;
    store.database().pool().close().await;
    let error = store.enqueue(message(ws, "n", 0), t(1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Backend(failure) if failure.is_unavailable()), "{error:?}");
    let error = store.claim(ws, "r1", LEASE, 1, t(1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Backend(failure) if failure.is_unavailable()), "{error:?}");
}

async fn a_batch_is_claimed_in_delivery_order_and_its_replies_recorded_at_once(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    // More than one batch statement names at most.
    let count = 300;
    for i in 0..count {
        enqueue(store, message(ws, &format!("m{i:03}"), i % 3), t(0)).await;
    }
    let first = store.claim(ws, "r1", LEASE, 64, t(1)).await.unwrap();
    let second = store.claim(ws, "r1", LEASE, 1000, t(1)).await.unwrap();
    assert_eq!((first.len(), second.len()), (64, 236), "what is held is not claimed again");
    let mut expected: Vec<(i32, String)> = (0..count).map(|i| (-(i % 3), format!("m{i:03}"))).collect();
    expected.sort();
    let held: Vec<&QueueItem> = first.iter().chain(&second).collect();
    assert_eq!(
        held.iter().map(|item| item.message_id.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        "both batches together in delivery order"
    );

    // One call records every reply with its own item; what r1 does not
    // hold is left alone.
    let elsewhere = in_flight(store, Uuid::new_v4(), "elsewhere", t(0)).await;
    let echo = |item: &QueueItem| format!(r#"{{"echo":"{}"}}"#, item.message_id);
    let mut replies: Vec<Completion> =
        held.iter().map(|item| Completion { id: item.id, result_json: echo(item) }).collect();
    replies.push(Completion { id: elsewhere.id, result_json: "{}".into() });
    replies.push(Completion { id: Uuid::new_v4(), result_json: "{}".into() });
    let recorded: HashSet<Uuid> = store.complete("r1", &replies, t(2)).await.unwrap().into_iter().collect();
    assert_eq!(recorded, held.iter().map(|item| item.id).collect::<HashSet<_>>());
    for item in held.iter().step_by(23) {
        let done = get(store, item.id).await;
        assert_eq!(
            (done.state, done.result_json, done.delivered_at),
            (QueueItemState::Delivered, Some(echo(item)), Some(t(2)))
        );
        assert_eq!((done.lease_owner, done.lease_expires_at, done.next_attempt_at), (None, None, None));
    }
    assert_eq!(get(store, elsewhere.id).await.state, QueueItemState::InFlight);
    assert!(store.complete("r1", &replies[..5], t(3)).await.unwrap().is_empty(), "recorded once");
    assert_eq!(get(store, held[0].id).await.delivered_at, Some(t(2)));
    assert!(store.complete("r1", &[], t(3)).await.unwrap().is_empty());
    assert_eq!(store.depth(ws).await.unwrap(), 0);
}

async fn unsent_items_go_back_together_keeping_their_places(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let mut items = Vec::new();
    for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        items.push(enqueue(store, message(ws, id, 0), t(i as u64)).await);
    }
    let [a, b, c, d, e] = <[QueueItem; 5]>::try_from(items).unwrap();
    // One real failure first, so there is an attempt count to keep.
    store.claim(ws, "r1", LEASE, 1, t(5)).await.unwrap();
    store.fail_attempt(a.id, "r1", "connection reset", t(5), t(5)).await.unwrap();

    let held = store.claim(ws, "r1", LEASE, 10, t(6)).await.unwrap();
    assert_eq!(message_ids(&held), ["a", "b", "c", "d", "e"]);
    // c was sent and answered before the agent turned busy.
    assert!(complete(store, c.id, "r1", "{}", t(7)).await.unwrap());
    let ids: Vec<Uuid> = held.iter().map(|item| item.id).collect();
    let reason = "not sent: the gateway is shutting down";
    assert_eq!(store.release_unconsumed(&ids, "r2", reason, t(8)).await.unwrap(), 0, "r2 holds none");
    assert_eq!(store.release_unconsumed(&ids, "r1", reason, t(8)).await.unwrap(), 4, "all but the delivered c");
    for (item, attempts) in [(&a, 1), (&b, 0), (&d, 0), (&e, 0)] {
        let back = get(store, item.id).await;
        assert_eq!((back.state, back.attempts, back.state_reason.as_str()), (QueueItemState::Queued, attempts, reason));
        assert_eq!((back.lease_owner, back.lease_expires_at, back.next_attempt_at), (None, None, Some(t(8))));
        assert_eq!(back.message_id, item.message_id);
    }
    assert_eq!(get(store, a.id).await.last_error, "connection reset");
    assert_eq!(get(store, c.id).await.state, QueueItemState::Delivered);
    assert_eq!(store.depth(ws).await.unwrap(), 4);
    assert_eq!(store.release_unconsumed(&ids, "r1", reason, t(8)).await.unwrap(), 0, "already back");
    assert_eq!(store.release_unconsumed(&[], "r1", reason, t(8)).await.unwrap(), 0);

    enqueue(store, message(ws, "f", 0), t(9)).await;
    assert_eq!(message_ids(&store.claim(ws, "r2", LEASE, 10, t(10)).await.unwrap()), ["a", "b", "d", "e", "f"]);
}

async fn items_that_expire_while_held_are_dropped_unsent(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let a = enqueue(store, NewQueueItem { expires_at: Some(t(10)), ..message(ws, "a", 0) }, t(0)).await;
    let b = enqueue(store, NewQueueItem { expires_at: Some(t(20)), ..message(ws, "b", 0) }, t(0)).await;
    let c = enqueue(store, message(ws, "c", 0), t(0)).await;
    let held = store.claim(ws, "r1", LEASE, 10, t(5)).await.unwrap();
    assert_eq!(message_ids(&held), ["a", "b", "c"]);
    let ids: Vec<Uuid> = held.iter().map(|item| item.id).collect();

    assert!(store.expire_held(&ids, "r1", t(9)).await.unwrap().is_empty(), "none has expired yet");
    assert!(store.expire_held(&ids, "r2", t(10)).await.unwrap().is_empty(), "r2 holds none");
    assert_eq!(store.expire_held(&ids, "r1", t(10)).await.unwrap(), [a.id]);
    let dropped = get(store, a.id).await;
    assert_eq!((dropped.state, dropped.state_reason.as_str()), (QueueItemState::Dropped, "expired"));
    assert_eq!((dropped.lease_owner, dropped.lease_expires_at, dropped.next_attempt_at), (None, None, None));
    assert_eq!((dropped.updated_at, dropped.delivered_at, dropped.attempts), (t(10), None, 0));
    assert_eq!(get(store, b.id).await.state, QueueItemState::InFlight);

    assert_eq!(store.expire_held(&ids, "r1", t(30)).await.unwrap(), [b.id], "c never expires");
    assert_eq!(get(store, b.id).await.state, QueueItemState::Dropped);
    assert_eq!(get(store, c.id).await.state, QueueItemState::InFlight);
    let stats = store.stats(&[ws], 10, None, t(30)).await.unwrap();
    assert_eq!((stats.totals.queued, stats.totals.in_flight), (0, 1));
    assert!(!complete(store, a.id, "r1", "{}", t(31)).await.unwrap(), "a late reply does not revive it");
}

async fn renewing_keeps_held_items_from_a_takeover(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let short = Duration::from_secs(10);
    for id in ["a", "b", "c"] {
        enqueue(store, message(ws, id, 0), t(0)).await;
    }
    let x = enqueue(store, message(other, "x", 0), t(0)).await;
    let mine = store.claim(ws, "r1", short, 2, t(0)).await.unwrap();
    assert_eq!(message_ids(&mine), ["a", "b"]);
    let theirs = store.claim(ws, "r2", short, 1, t(0)).await.unwrap();
    assert_eq!(message_ids(&theirs), ["c"]);
    store.claim(other, "r1", short, 1, t(0)).await.unwrap();

    assert_eq!(store.renew_item_leases(ws, "r1", short, t(8)).await.unwrap(), 2);
    for item in &mine {
        let renewed = get(store, item.id).await;
        assert_eq!((renewed.lease_owner.as_deref(), renewed.lease_expires_at), (Some("r1"), Some(t(18))));
    }
    assert_eq!(get(store, theirs[0].id).await.lease_expires_at, Some(t(10)), "another holder's");
    assert_eq!(get(store, x.id).await.lease_expires_at, Some(t(10)), "another workspace's");

    assert_eq!(message_ids(&store.claim(ws, "r3", LEASE, 10, t(10)).await.unwrap()), ["c"]);
    assert!(store.claim(ws, "r3", LEASE, 10, t(17)).await.unwrap().is_empty());
    assert_eq!(message_ids(&store.claim(ws, "r3", LEASE, 10, t(18)).await.unwrap()), ["a", "b"]);
    assert_eq!(store.renew_item_leases(ws, "r1", short, t(19)).await.unwrap(), 0, "r1 holds nothing here now");
    assert_eq!(get(store, mine[0].id).await.lease_expires_at, Some(t(18) + LEASE));
}

/// Claims and completions in batches, as a drain makes them (it claims 64
/// ahead; its recorder writes what replies came meanwhile, here 8); prints
/// the cost per message so a regression is visible.
async fn a_large_backlog_drains_quickly(backend: &Backend) {
    let store = &backend.store;
    let count: u32 = match backend.database.engine() {
        Engine::Sqlite => 10_000,
        // Every call is a network round trip there; fewer keep the suite quick.
        Engine::Postgres => 2_000,
    };
    let ws = Uuid::new_v4();
    let started = Instant::now();
    for i in 0..count {
        let item = NewQueueItem { priority: (i % 3) as i32, ..message(ws, &format!("m{i}"), 0) };
        store.enqueue(item, t(0)).await.unwrap();
    }
    let enqueued = started.elapsed();

    let (mut claiming, mut completing) = (Duration::ZERO, Duration::ZERO);
    let mut last: Option<(std::cmp::Reverse<i32>, i64)> = None;
    let mut delivered = 0;
    loop {
        let started = Instant::now();
        let claimed = store.claim(ws, "r1", LEASE, 64, t(1)).await.unwrap();
        claiming += started.elapsed();
        if claimed.is_empty() {
            break;
        }
        for batch in claimed.chunks(8) {
            for item in batch {
                let key = (std::cmp::Reverse(item.priority), item.seq);
                assert!(last.is_none_or(|last| last < key), "delivery order");
                last = Some(key);
            }
            let replies: Vec<Completion> =
                batch.iter().map(|item| Completion { id: item.id, result_json: "{}".into() }).collect();
            let started = Instant::now();
            assert_eq!(store.complete("r1", &replies, t(2)).await.unwrap().len(), batch.len());
            completing += started.elapsed();
            delivered += batch.len() as u32;
        }
    }
    assert_eq!(delivered, count);
    let per_message = |total: Duration| total.as_micros() as f64 / f64::from(count);
    eprintln!(
        "{}: {count} messages, per message: enqueue {:.0} µs, claim {:.1} µs, complete {:.1} µs",
        backend.database.engine(),
        per_message(enqueued),
        per_message(claiming),
        per_message(completing),
    );
}

/// The depth a queued reply reports is a count the store keeps as items
/// change state; it must agree with the items themselves after every kind
/// of change, for each workspace on its own.
async fn the_depth_follows_every_way_in_and_out_of_the_queue(backend: &Backend) {
    let store = &backend.store;
    let (ws, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let queued_items = |workspace_id| async move {
        let filter =
            ListFilter { workspace_id: Some(workspace_id), states: vec![QueueItemState::Queued], ..Default::default() };
        store.list(&filter, 1000, None).await.unwrap().0.len() as u64
    };
    let expect = |depths: [u64; 2], step: &'static str| async move {
        for (workspace_id, depth) in [ws, ws2].into_iter().zip(depths) {
            assert_eq!(store.depth(workspace_id).await.unwrap(), depth, "{step}: the kept count");
            assert_eq!(queued_items(workspace_id).await, depth, "{step}: the items");
        }
    };
    assert_eq!(store.depth(ws).await.unwrap(), 0, "a workspace never queued for");

    for i in 0..5 {
        enqueue(store, NewQueueItem { expires_at: Some(t(50)), ..message(ws, &format!("a{i}"), 0) }, t(0)).await;
    }
    let expiring = enqueue(store, NewQueueItem { expires_at: Some(t(5)), ..message(ws2, "b0", 0) }, t(0)).await;
    enqueue(store, NewQueueItem { max_attempts: 1, ..message(ws2, "b1", 1) }, t(0)).await;
    enqueue(store, message(ws2, "b2", 0), t(0)).await;
    expect([5, 3], "enqueued").await;
    assert!(store.enqueue(message(ws, "a0", 0), t(1)).await.unwrap().duplicate);
    expect([5, 3], "a duplicate").await;

    let claimed = store.claim(ws, "r1", LEASE, 3, t(1)).await.unwrap();
    expect([2, 3], "three claimed").await;
    assert_eq!(store.release_unconsumed(&[claimed[0].id], "r1", "target busy", t(2)).await.unwrap(), 1);
    expect([3, 3], "one put back unconsumed").await;
    assert_eq!(
        store.fail_attempt(claimed[1].id, "r1", "reset", t(3), t(2)).await.unwrap(),
        Some(QueueItemState::Queued)
    );
    expect([4, 3], "a failed attempt to retry").await;
    assert!(complete(store, claimed[2].id, "r1", "{}", t(2)).await.unwrap());
    expect([4, 3], "one delivered").await;

    let dead = store.claim(ws2, "r1", LEASE, 1, t(2)).await.unwrap();
    assert_eq!(
        store.fail_attempt(dead[0].id, "r1", "500", t(3), t(2)).await.unwrap(),
        Some(QueueItemState::DeadLetter)
    );
    expect([4, 2], "a dead letter").await;
    store.requeue_dead_letters(&Requeue { workspace_id: Some(ws2), ..Requeue::default() }, t(3)).await.unwrap();
    expect([4, 3], "the dead letter requeued").await;

    assert!(store.cancel(expiring.id, "canceled by its caller", t(4)).await.unwrap().is_some());
    expect([4, 2], "one canceled").await;
    enqueue(store, NewQueueItem { expires_at: Some(t(5)), ..message(ws2, "b3", 0) }, t(4)).await;
    assert_eq!(store.expire_due(t(6)).await.unwrap().len(), 1);
    expect([4, 2], "one expired").await;

    let stale = DropStale { workspace_id: None, expired: true, reason: "stale".into(), ..DropStale::default() };
    assert_eq!(store.drop_stale(&stale, t(60)).await.unwrap().0, 4, "a0..a4 but the delivered one, across workspaces");
    expect([0, 2], "stale items dropped").await;
    assert_eq!(store.drop_workspace(ws2, "removed", t(61)).await.unwrap(), 2);
    expect([0, 0], "a removed workspace").await;
    assert!(store.purge_finished(t(100_000)).await.unwrap() > 0);
    expect([0, 0], "finished items purged").await;
    enqueue(store, message(ws, "again", 0), t(100_001)).await;
    expect([1, 0], "queued again").await;
}
