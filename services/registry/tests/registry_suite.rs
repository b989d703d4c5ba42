//! The registry's behaviour (SPEC §2), run against SQLite and PostgreSQL
//! alike through the domain API, with real stores.

mod common;

use std::{collections::BTreeMap, time::Duration};

use agentmesh_registry::{
    error::RegistryError,
    events::EventFilter,
    model::{Capabilities, EventKind, RuntimeKind, Status},
    registry::{AgentCredential, HeartbeatReport, NewWorkspace, Registration, RuntimeMetadata, TransitionCommand},
    settings::RegistrySettings,
    store::{ListFilter, StatusCount},
};
use common::{Backend, Node, TestDb, test_settings};
use uuid::Uuid;

fn new_workspace(name: &str, kind: RuntimeKind) -> NewWorkspace {
    NewWorkspace {
        name: name.to_owned(),
        role: String::new(),
        description: String::new(),
        labels: BTreeMap::new(),
        parent_id: None,
        runtime_kind: kind,
        runtime_instance: "docker:local".to_owned(),
        agent_runtime: String::new(),
        max_concurrent_tasks: 1,
        issue_token: true,
    }
}

fn beat(id: Uuid, error_rate: f64, runtime_state: &str) -> HeartbeatReport {
    HeartbeatReport {
        workspace_id: id,
        error_rate,
        sample_error: String::new(),
        active_tasks: 0,
        current_task: String::new(),
        uptime_seconds: 1,
        runtime_state: runtime_state.to_owned(),
        metadata: RuntimeMetadata::default(),
    }
}

fn transition(id: Uuid, to: Status) -> TransitionCommand {
    TransitionCommand {
        workspace_id: id,
        to,
        reason: format!("test moves it to {to}"),
        acting_runtime_instance: None,
        confirmed_healthy: false,
        expected_current: vec![],
    }
}

/// An online workspace and its token.
async fn online(node: &Node, name: &str, native_status_mgmt: bool) -> (Uuid, String) {
    let (workspace, token) = node.registry.create(new_workspace(name, RuntimeKind::Docker)).await.unwrap();
    let token = token.unwrap();
    let mut report = beat(workspace.id, 0.0, "");
    report.metadata.capabilities = Some(Capabilities { native_status_mgmt, ..Capabilities::default() });
    let after = node.registry.heartbeat(report, AgentCredential::Token(token.clone())).await.unwrap();
    assert_eq!(after.status, Status::Online);
    (workspace.id, token)
}

async fn status_after(node: &Node, id: Uuid, token: &str, error_rate: f64, state: &str) -> Status {
    node.registry.heartbeat(beat(id, error_rate, state), AgentCredential::Token(token.to_owned())).await.unwrap().status
}

async fn workspaces_are_counted_by_status_and_runtime_kind(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    assert_eq!(node.store.count_by_status().await.unwrap(), []);
    online(&node, "one", false).await;
    online(&node, "two", false).await;
    let (waiting, _) = node.registry.create(new_workspace("waiting", RuntimeKind::Process)).await.unwrap();
    assert_ne!(waiting.status, Status::Online);
    let mut counts = node.store.count_by_status().await.unwrap();
    counts.sort_by_key(|c| c.status != waiting.status);
    let waiting = StatusCount { status: waiting.status, runtime_kind: RuntimeKind::Process, workspaces: 1 };
    let online = StatusCount { status: Status::Online, runtime_kind: RuntimeKind::Docker, workspaces: 2 };
    assert_eq!(counts, [waiting, online]);
}

async fn heartbeats_follow_the_transition_table_with_hysteresis(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let (id, token) = online(&node, "hysteresis", false).await;
    assert_eq!(status_after(&node, id, &token, 0.49, "").await, Status::Online);
    assert_eq!(status_after(&node, id, &token, 0.5, "").await, Status::Degraded, "0.5 exactly degrades");
    assert_eq!(status_after(&node, id, &token, 0.3, "").await, Status::Degraded, "inside the band: stays");
    assert_eq!(status_after(&node, id, &token, 0.1, "").await, Status::Degraded, "0.1 is not below 0.1");
    assert_eq!(status_after(&node, id, &token, 0.05, "busy").await, Status::Degraded, "state not clear");
    assert_eq!(status_after(&node, id, &token, 0.05, "").await, Status::Online);
    assert_eq!(status_after(&node, id, &token, 0.3, "").await, Status::Online, "inside the band: stays");
}

async fn wedged_degrades_with_and_without_native_status_management(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    for native in [false, true] {
        let (id, token) = online(&node, &format!("wedged-{native}"), native).await;
        assert_eq!(status_after(&node, id, &token, 0.0, "wedged").await, Status::Degraded, "native={native}");
        assert_eq!(status_after(&node, id, &token, 0.0, "").await, Status::Online, "native={native}");
        let expected = if native { Status::Online } else { Status::Degraded };
        assert_eq!(status_after(&node, id, &token, 0.9, "").await, expected, "native={native}");
    }
}

async fn heartbeat_never_revives_a_lifecycle_status(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    for settled in [Status::Stopped, Status::PolicyStopped, Status::Failed] {
        let (id, token) = online(&node, &format!("settled-{settled}"), false).await;
        node.registry.transition(transition(id, settled)).await.unwrap();
        assert_eq!(status_after(&node, id, &token, 0.0, "").await, settled);
        assert_eq!(node.registry.get(id).await.unwrap().status, settled);
    }
    let (id, token) = online(&node, "removed", false).await;
    node.registry.transition(transition(id, Status::Removed)).await.unwrap();
    let error = node.registry.heartbeat(beat(id, 0.0, ""), AgentCredential::Token(token.clone())).await.unwrap_err();
    assert!(matches!(error, RegistryError::Removed(_)), "{error}");
    let registration = Registration {
        workspace_id: id,
        url: "https://agent.test/".into(),
        agent_card_json: String::new(),
        metadata: RuntimeMetadata::default(),
    };
    let error = node.registry.register(registration, AgentCredential::Token(token)).await.unwrap_err();
    assert!(matches!(error, RegistryError::Removed(_)), "{error}");
    let error = node.registry.transition(transition(id, Status::Provisioning)).await.unwrap_err();
    assert!(matches!(error, RegistryError::IllegalTransition(_)), "{error}");
    assert_eq!(node.registry.get(id).await.unwrap().status, Status::Removed);
}

async fn first_registration_claims_the_token_and_strangers_cannot_hijack(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let mut external = new_workspace("external", RuntimeKind::External);
    external.issue_token = false;
    let (workspace, token) = node.registry.create(external).await.unwrap();
    assert!(token.is_none());
    assert_eq!(workspace.status, Status::AwaitingAgent);
    let registration = |url: &str| Registration {
        workspace_id: workspace.id,
        url: url.to_owned(),
        agent_card_json: r#"{"name":"agent"}"#.to_owned(),
        metadata: RuntimeMetadata::default(),
    };
    let (registered, token) =
        node.registry.register(registration("https://agent.test/a2a"), AgentCredential::None).await.unwrap();
    let token = token.expect("first registration returns the token");
    assert_eq!(registered.status, Status::Online);
    let stored = node.store.get(workspace.id).await.unwrap().unwrap();
    assert_eq!(stored.token_digest, Some(agentmesh_chassis::auth::token_digest(&token)), "only the digest is kept");

    let error = node.registry.register(registration("https://evil.test/"), AgentCredential::None).await.unwrap_err();
    assert!(matches!(error, RegistryError::Unauthenticated(_)), "{error}");
    let error = node
        .registry
        .register(registration("https://evil.test/"), AgentCredential::Token("not-the-token".into()))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::PermissionDenied(_)), "{error}");
    let error = node.registry.heartbeat(beat(workspace.id, 0.0, ""), AgentCredential::None).await.unwrap_err();
    assert!(matches!(error, RegistryError::Unauthenticated(_)), "{error}");
    assert_eq!(node.registry.get(workspace.id).await.unwrap().url, "https://agent.test/a2a");

    let (again, second_token) =
        node.registry.register(registration("https://agent.test/v2"), AgentCredential::Token(token)).await.unwrap();
    assert!(second_token.is_none(), "a token is issued once");
    assert_eq!(again.url, "https://agent.test/v2");
}

async fn liveness_and_provisioning_deadlines_follow_the_runtime(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let settings = RegistrySettings {
        liveness_ttl_secs: 180,
        liveness_ttl_secs_by_runtime_kind: [("process".to_owned(), 30)].into(),
        provisioning_timeout_secs: 600,
        provisioning_timeout_secs_by_agent_runtime: [("slowboot".to_owned(), 1800)].into(),
        ..test_settings()
    };
    let node = Node::start(&db.url, settings).await;
    let (docker, _) = online(&node, "docker", false).await;
    let (process_ws, token) = node.registry.create(new_workspace("process", RuntimeKind::Process)).await.unwrap();
    node.registry.heartbeat(beat(process_ws.id, 0.0, ""), AgentCredential::Token(token.unwrap())).await.unwrap();
    let (stopped, _) = online(&node, "stopped", false).await;
    node.registry.transition(transition(stopped, Status::Stopped)).await.unwrap();
    let (fast, _) = node.registry.create(new_workspace("fast-boot", RuntimeKind::Docker)).await.unwrap();
    let mut slow = new_workspace("slow-boot", RuntimeKind::Docker);
    slow.agent_runtime = "slowboot".into();
    let (slow, _) = node.registry.create(slow).await.unwrap();

    let mut watch = node
        .events
        .watch(
            EventFilter {
                kinds: [EventKind::LivenessExpired, EventKind::ProvisionFailed].into(),
                ..Default::default()
            },
            None,
            node.shutdown.clone(),
        )
        .await
        .unwrap();

    let now = agentmesh_registry::model::now_millis();
    let report = node.sweeper.sweep_once(now + 60_000).await.unwrap();
    assert_eq!((report.marked_offline, report.failed_provisioning), (1, 0));
    assert_eq!(node.registry.get(process_ws.id).await.unwrap().status, Status::Offline);
    assert_eq!(node.registry.get(docker).await.unwrap().status, Status::Online);

    let report = node.sweeper.sweep_once(now + 700_000).await.unwrap();
    assert_eq!((report.marked_offline, report.failed_provisioning), (1, 1));
    assert_eq!(node.registry.get(docker).await.unwrap().status, Status::Offline);
    let failed = node.registry.get(fast.id).await.unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.status_reason.contains("600s"), "{}", failed.status_reason);
    assert_eq!(node.registry.get(slow.id).await.unwrap().status, Status::Provisioning);
    assert_eq!(node.registry.get(stopped).await.unwrap().status, Status::Stopped, "sweeps never touch stopped");

    let report = node.sweeper.sweep_once(now + 1_900_000).await.unwrap();
    assert_eq!((report.marked_offline, report.failed_provisioning), (0, 1));
    assert_eq!(node.registry.get(slow.id).await.unwrap().status, Status::Failed);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = watch.recv().await.unwrap().unwrap();
        seen.push((event.draft.kind, event.draft.workspace_id, event.draft.data.previous_status));
    }
    assert!(seen.contains(&(EventKind::LivenessExpired, process_ws.id, Some(Status::Online))), "{seen:?}");
    assert!(seen.contains(&(EventKind::ProvisionFailed, slow.id, Some(Status::Provisioning))), "{seen:?}");
}

async fn sweeps_on_two_replicas_flip_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let a = Node::start(&db.url, test_settings()).await;
    let b = Node::start(&db.url, test_settings()).await;
    for i in 0..20 {
        online(&a, &format!("ws-{i}"), false).await;
    }
    let later = agentmesh_registry::model::now_millis() + 200_000;
    let (ra, rb) = tokio::join!(a.sweeper.sweep_once(later), b.sweeper.sweep_once(later));
    assert_eq!(ra.unwrap().marked_offline + rb.unwrap().marked_offline, 20);
}

async fn watch_resumes_after_a_reconnect_without_a_gap(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let (id, token) = online(&node, "watched", false).await;
    let filter = EventFilter { workspaces: [id].into(), kinds: [EventKind::Heartbeat].into() };
    let mut first = node.events.watch(filter.clone(), Some(0), node.shutdown.clone()).await.unwrap();
    let initial = first.recv().await.unwrap().unwrap();
    drop(first);
    // Written while nobody watches.
    for _ in 0..25 {
        status_after(&node, id, &token, 0.0, "").await;
    }
    let mut resumed = node.events.watch(filter, Some(initial.cursor), node.shutdown.clone()).await.unwrap();
    let mut last = initial.cursor;
    for _ in 0..25 {
        let event = resumed.recv().await.unwrap().unwrap();
        assert!(event.cursor > last);
        last = event.cursor;
    }
    // And live ones after the replay.
    status_after(&node, id, &token, 0.0, "").await;
    let live = tokio::time::timeout(Duration::from_secs(10), resumed.recv()).await.unwrap().unwrap().unwrap();
    assert!(live.cursor > last);
}

async fn an_event_written_on_one_replica_reaches_a_watcher_on_another(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let writer = Node::start(&db.url, test_settings()).await;
    let watcher = Node::start(&db.url, test_settings()).await;
    let mut watch = watcher.events.watch(EventFilter::default(), None, watcher.shutdown.clone()).await.unwrap();
    let (id, _) = online(&writer, "cross-replica", false).await;
    let event = tokio::time::timeout(Duration::from_secs(10), watch.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.draft.workspace_id, id);
    assert_eq!(event.draft.kind, EventKind::WorkspaceCreated);
}

async fn capabilities_and_overrides_survive_a_restart(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let id = {
        let node = Node::start(&db.url, test_settings()).await;
        let (id, token) = online(&node, "caps", false).await;
        let mut report = beat(id, 0.0, "");
        report.metadata = RuntimeMetadata {
            capabilities: Some(Capabilities {
                native_scheduler: true,
                native_session: true,
                native_status_mgmt: false,
                extra: [("streaming".to_owned(), true)].into(),
            }),
            idle_timeout_seconds: Some(Some(900)),
        };
        node.registry.heartbeat(report, AgentCredential::Token(token.clone())).await.unwrap();
        // A heartbeat that does not mention them keeps them.
        node.registry.heartbeat(beat(id, 0.0, ""), AgentCredential::Token(token)).await.unwrap();
        id
    };
    let node = Node::start(&db.url, test_settings()).await;
    let workspace = node.registry.get(id).await.unwrap();
    assert!(workspace.capabilities.native_scheduler && workspace.capabilities.native_session);
    assert_eq!(workspace.capabilities.extra.get("streaming"), Some(&true));
    assert_eq!(workspace.idle_timeout_seconds, Some(900));
}

async fn runtime_ownership_guards_transitions(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let (id, _) = online(&node, "owned", false).await;
    let mut foreign = transition(id, Status::Offline);
    foreign.acting_runtime_instance = Some("docker:other-engine".into());
    let error = node.registry.transition(foreign).await.unwrap_err();
    assert!(matches!(error, RegistryError::NotOwner { .. }), "{error}");
    assert_eq!(node.registry.get(id).await.unwrap().status, Status::Online);

    let mut owner = transition(id, Status::Offline);
    owner.acting_runtime_instance = Some("docker:local".into());
    assert!(node.registry.transition(owner).await.unwrap().1);

    // A record from before ownership was tracked.
    let mut legacy = new_workspace("legacy", RuntimeKind::Docker);
    legacy.runtime_instance = String::new();
    let (legacy, _) = node.registry.create(legacy).await.unwrap();
    let mut unconfirmed = transition(legacy.id, Status::Failed);
    unconfirmed.acting_runtime_instance = Some("docker:local".into());
    let error = node.registry.transition(unconfirmed).await.unwrap_err();
    assert!(matches!(error, RegistryError::NotOwner { .. }), "{error}");
    let mut adopt = transition(legacy.id, Status::Provisioning);
    adopt.acting_runtime_instance = Some("docker:local".into());
    adopt.confirmed_healthy = true;
    let (adopted, changed) = node.registry.transition(adopt).await.unwrap();
    assert!(!changed, "status was already provisioning");
    assert_eq!(adopted.runtime_instance, "docker:local");
    assert_eq!(node.registry.get(legacy.id).await.unwrap().runtime_instance, "docker:local");
}

async fn every_status_is_one_the_store_accepts(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    for status in Status::ALL {
        let (workspace, _) = node.registry.create(new_workspace(status.as_str(), RuntimeKind::Docker)).await.unwrap();
        let written = status;
        let mutator: agentmesh_registry::store::Mutator = Box::new(move |mut w| {
            w.status = written;
            Ok(agentmesh_registry::store::Mutation::changed(w, vec![]))
        });
        node.registry.mutate(workspace.id, mutator).await.unwrap();
        assert_eq!(node.registry.get(workspace.id).await.unwrap().status, status);
    }
}

async fn queries_filter_page_and_relate(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let mut root = new_workspace("Root Team", RuntimeKind::Docker);
    root.role = "Coordinator".into();
    root.labels = [("team".to_owned(), "core".to_owned())].into();
    let (root, _) = node.registry.create(root).await.unwrap();
    let mut children = Vec::new();
    for i in 0..5 {
        let mut child = new_workspace(&format!("worker-{i}"), RuntimeKind::Process);
        child.parent_id = Some(root.id);
        child.labels = [("team".to_owned(), if i % 2 == 0 { "core" } else { "edge" }.to_owned())].into();
        children.push(node.registry.create(child).await.unwrap().0.id);
    }
    let mut grandchild = new_workspace("grandchild", RuntimeKind::Process);
    grandchild.parent_id = Some(children[0]);
    let grandchild = node.registry.create(grandchild).await.unwrap().0.id;
    let (stranger, _) = node.registry.create(new_workspace("stranger", RuntimeKind::Docker)).await.unwrap();

    let labelled = ListFilter {
        labels: vec![agentmesh_registry::store::LabelTerm::Equals("team".into(), "core".into())],
        ..Default::default()
    };
    let (page, _) = node.registry.list(&labelled, None, 100).await.unwrap();
    assert_eq!(page.len(), 4);
    let by_role = ListFilter { query: Some("coordinator".into()), ..Default::default() };
    assert_eq!(node.registry.list(&by_role, None, 100).await.unwrap().0.len(), 1);
    let kind = ListFilter { runtime_kind: Some(RuntimeKind::Process), ..Default::default() };
    let (first, next) = node.registry.list(&kind, None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    let (second, last) = node.registry.list(&kind, next, 4).await.unwrap();
    assert_eq!(second.len(), 2);
    assert!(last.is_none());

    let peers: Vec<Uuid> = node.registry.peers(children[0]).await.unwrap().iter().map(|w| w.id).collect();
    assert!(peers.contains(&root.id) && peers.contains(&children[1]) && peers.contains(&grandchild));
    assert!(!peers.contains(&stranger.id) && !peers.contains(&children[0]));

    let can = |a, b| {
        let registry = node.registry.clone();
        async move { registry.can_communicate(a, b).await.unwrap().0 }
    };
    assert!(can(children[0], children[0]).await);
    assert!(can(children[0], children[3]).await, "siblings");
    assert!(can(root.id, grandchild).await, "ancestor to descendant");
    assert!(can(grandchild, root.id).await, "descendant to ancestor");
    assert!(!can(grandchild, children[1]).await, "nephew to uncle is not in the rules");
    assert!(!can(stranger.id, root.id).await);
    assert!(!can(Uuid::new_v4(), root.id).await, "unknown is denied");
    node.registry.transition(transition(children[3], Status::Removed)).await.unwrap();
    assert!(!can(children[0], children[3]).await, "removed is denied");
}

async fn a_cursor_older_than_retention_is_refused(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let (id, token) = online(&node, "pruned", false).await;
    let head = node.store.head().await.unwrap();
    let far_future = agentmesh_registry::model::now_millis() + 10_000_000;
    // Heartbeats age out first; other events stay.
    assert!(node.store.prune_events(far_future, 0).await.unwrap() > 0);
    let statuses = EventFilter { kinds: [EventKind::StatusChanged].into(), ..Default::default() };
    assert!(node.events.watch(statuses, Some(0), node.shutdown.clone()).await.is_ok());
    let error = node.events.watch(EventFilter::default(), Some(0), node.shutdown.clone()).await.unwrap_err();
    assert!(matches!(error, RegistryError::CursorExpired { .. }), "{error}");
    // A cursor at the pruned point is still complete.
    status_after(&node, id, &token, 0.0, "").await;
    let mut watch = node.events.watch(EventFilter::default(), Some(head), node.shutdown.clone()).await.unwrap();
    assert_eq!(watch.recv().await.unwrap().unwrap().draft.kind, EventKind::Heartbeat);
}

async fn one_batch_applies_items_in_order_and_isolates_failures(backend: Backend) {
    use agentmesh_registry::store::{Mutation, Mutator};
    let Some(db) = TestDb::new(backend).await else { return };
    let node = Node::start(&db.url, test_settings()).await;
    let (a, _) = node.registry.create(new_workspace("a", RuntimeKind::Docker)).await.unwrap();
    let (b, _) = node.registry.create(new_workspace("b", RuntimeKind::Docker)).await.unwrap();
    let bump = |task: &'static str| -> Mutator {
        Box::new(move |mut w| {
            w.current_task = format!("{}{task}", w.current_task);
            let event = agentmesh_registry::model::EventDraft::of(EventKind::Heartbeat, &w, None, 0);
            Ok(Mutation::changed(w, vec![event]))
        })
    };
    let refuse: Mutator = Box::new(|_| Err(RegistryError::FailedPrecondition("refused".into())));
    let missing = Uuid::new_v4();
    let outcomes = node
        .store
        .mutate_batch(vec![(a.id, bump("1")), (missing, bump("x")), (b.id, refuse), (a.id, bump("2"))])
        .await
        .unwrap();
    assert!(matches!(outcomes[1], Err(RegistryError::NotFound(id)) if id == missing));
    assert!(matches!(outcomes[2], Err(RegistryError::FailedPrecondition(_))));
    let (first, first_events) = outcomes[0].as_ref().unwrap();
    let (second, second_events) = outcomes[3].as_ref().unwrap();
    assert_eq!((first.current_task.as_str(), second.current_task.as_str()), ("1", "12"));
    assert!(second_events[0].cursor > first_events[0].cursor, "events are numbered in item order");
    assert_eq!(node.registry.get(a.id).await.unwrap().current_task, "12");
    assert_eq!(node.registry.get(b.id).await.unwrap(), b, "a refused item writes nothing");
}

on_every_backend!(
    workspaces_are_counted_by_status_and_runtime_kind,
    one_batch_applies_items_in_order_and_isolates_failures,
    a_cursor_older_than_retention_is_refused,
    heartbeats_follow_the_transition_table_with_hysteresis,
    wedged_degrades_with_and_without_native_status_management,
    heartbeat_never_revives_a_lifecycle_status,
    first_registration_claims_the_token_and_strangers_cannot_hijack,
    liveness_and_provisioning_deadlines_follow_the_runtime,
    sweeps_on_two_replicas_flip_once,
    watch_resumes_after_a_reconnect_without_a_gap,
    an_event_written_on_one_replica_reaches_a_watcher_on_another,
    capabilities_and_overrides_survive_a_restart,
    runtime_ownership_guards_transitions,
    every_status_is_one_the_store_accepts,
    queries_filter_page_and_relate,
);
