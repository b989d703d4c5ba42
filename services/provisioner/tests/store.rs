//! The decisions several provisioner replicas may race for are
//! compare-and-set updates in the store; checked on SQLite and, when
//! configured, PostgreSQL (ARCH-2).

use agentmesh_provisioner::{
    error::ProvisionerError,
    policy::Policy,
    runtime::RuntimeKind,
    spec::WorkspaceSpec,
    store::{Desired, Store, WorkloadRecord, now_ms},
};

/// Fresh stores: SQLite always, PostgreSQL when configured (always in CI).
async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!("sqlite://{}", dir.path().join("p.db").display())).await.unwrap();
    let mut stores = vec![(sqlite, Some(dir))];
    if let Some(url) = agentmesh_testkit::postgres::fresh_database("provisioner_test").await {
        stores.push((Store::connect(&url).await.unwrap(), None));
    }
    stores
}

fn record() -> WorkloadRecord {
    let now = now_ms();
    WorkloadRecord {
        workspace_id: uuid::Uuid::new_v4().to_string(),
        spec: WorkspaceSpec {
            name: "w".into(),
            runtime_kind: RuntimeKind::Docker,
            runtime_instance: "docker:a".into(),
            ..WorkspaceSpec::default()
        },
        token: "t".into(),
        desired: Desired::Running,
        restart_count: 0,
        next_restart_at: None,
        last_started_at: now,
        last_active_at: now,
        created_at: now,
    }
}

#[tokio::test]
async fn a_restart_is_scheduled_and_claimed_exactly_once() {
    for (store, _dir) in stores().await {
        let w = record();
        store.insert(&w).await.unwrap();
        let due = now_ms() + 1000;
        assert!(store.schedule_restart(&w.workspace_id, 0, due).await.unwrap());
        assert!(!store.schedule_restart(&w.workspace_id, 0, due + 1).await.unwrap(), "a second replica loses");
        assert!(store.claim_restart(&w.workspace_id, due).await.unwrap());
        assert!(!store.claim_restart(&w.workspace_id, due).await.unwrap(), "claimed once");
        let after = store.get(&w.workspace_id).await.unwrap().unwrap();
        assert_eq!((after.restart_count, after.next_restart_at), (1, None));

        // A stop on request cancels a pending restart.
        assert!(store.schedule_restart(&w.workspace_id, 1, due).await.unwrap());
        store.set_desired(&w.workspace_id, Desired::Stopped).await.unwrap();
        assert!(!store.claim_restart(&w.workspace_id, due).await.unwrap());
    }
}

#[tokio::test]
async fn a_tombstone_stays_a_tombstone() {
    for (store, _dir) in stores().await {
        let w = record();
        store.insert(&w).await.unwrap();
        assert!(store.set_desired(&w.workspace_id, Desired::Removed).await.unwrap());
        assert!(!store.set_desired(&w.workspace_id, Desired::Running).await.unwrap());
        assert_eq!(store.get(&w.workspace_id).await.unwrap().unwrap().desired, Desired::Removed);
        assert_eq!(store.list("docker:a", Some(Desired::Removed)).await.unwrap().len(), 1);
        store.forget(&w.workspace_id).await.unwrap();
        assert!(store.get(&w.workspace_id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn the_policy_changes_only_from_the_revision_the_caller_saw() {
    for (store, _dir) in stores().await {
        assert_eq!(store.policy().await.unwrap().revision, 0);
        let strict = Policy { allowed_runtime_kinds: vec!["docker".into()], ..Policy::default() };
        let first = store.replace_policy(&strict, "api", 0).await.unwrap();
        assert_eq!(first.revision, 1);
        let lost = store.replace_policy(&Policy::default(), "api", 0).await.unwrap_err();
        assert!(matches!(lost, ProvisionerError::RevisionMismatch { active: 1, expected: 0 }), "{lost:?}");
        let second = store.replace_policy(&Policy::default(), "file:/p.toml", 1).await.unwrap();
        assert_eq!(second.revision, 2);
        let active = store.policy().await.unwrap();
        assert_eq!((active.revision, active.source.as_str(), active.policy), (2, "file:/p.toml", Policy::default()));
    }
}
