//! Where the registry keeps its records and events (ARCH-2): one trait, one
//! SQL implementation that runs on the embedded SQLite store and on
//! PostgreSQL, and one test suite run against both.

mod sql;

use async_trait::async_trait;
use uuid::Uuid;

pub use sql::SqlStore;

use crate::{
    error::Result,
    model::{Event, EventDraft, RuntimeKind, Status, Workspace},
};

/// The outcome of a read-modify-write on one workspace.
#[derive(Debug)]
pub struct Mutation {
    pub workspace: Workspace,
    pub events: Vec<EventDraft>,
    /// False when nothing changed and nothing need be written.
    pub write: bool,
}

impl Mutation {
    pub fn unchanged(workspace: Workspace) -> Self {
        Self { workspace, events: Vec::new(), write: false }
    }

    pub fn changed(workspace: Workspace, events: Vec<EventDraft>) -> Self {
        Self { workspace, events, write: true }
    }
}

/// Domain logic applied to the current record inside the store's
/// transaction, so no concurrent writer can slip in between read and write.
pub type Mutator = Box<dyn FnOnce(Workspace) -> Result<Mutation> + Send>;

/// Filters of a workspace listing; every given filter must hold.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Empty means every status but removed.
    pub statuses: Vec<Status>,
    pub runtime_kind: Option<RuntimeKind>,
    pub runtime_instance: Option<String>,
    pub parent_id: Option<Uuid>,
    pub labels: Vec<LabelTerm>,
    /// Lower-case substring over name and role.
    pub query: Option<String>,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl LabelTerm {
    /// Whether a workspace with `labels` satisfies the term, as the stores'
    /// queries decide it: for clients that filter a stream of changes the
    /// way a listing filters.
    pub fn admits<'a>(&self, mut label: impl FnMut(&str) -> Option<&'a str>) -> bool {
        match self {
            LabelTerm::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelTerm::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelTerm::Exists(key) => label(key).is_some(),
            LabelTerm::Absent(key) => label(key).is_none(),
        }
    }
}

/// Where a page of a listing starts: after this (created_at, id).
pub type PageCursor = (i64, Uuid);

/// Which workspaces the sweeps should look at.
#[derive(Debug, Clone, Copy)]
pub enum SweepQuery {
    /// Heartbeating workspaces of one runtime kind whose last heartbeat is
    /// older than this.
    SilentSince(RuntimeKind, i64),
    /// Provisioning workspaces that entered provisioning before this.
    ProvisioningSince(i64),
}

/// Event ids at or below which events were pruned: heartbeats are kept for
/// less time than the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedThrough {
    pub heartbeats: u64,
    pub others: u64,
}

#[async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// Stores a new workspace and its creation event.
    async fn create(&self, workspace: &Workspace, event: EventDraft) -> Result<Event>;

    async fn get(&self, id: Uuid) -> Result<Option<Workspace>>;

    /// The workspace whose token has this SHA-256 digest, whatever its status.
    async fn get_by_token_digest(&self, digest: &[u8; 32]) -> Result<Option<Workspace>>;

    /// Applies each mutator to its workspace, all in one transaction; one
    /// item's domain error does not stop the others. The outer error means
    /// the store failed and nothing was written.
    async fn mutate_batch(&self, items: Vec<(Uuid, Mutator)>) -> Result<Vec<Result<(Workspace, Vec<Event>)>>>;

    /// Workspaces matching `filter`, by (created_at, id), after `after`.
    async fn list(&self, filter: &ListFilter, after: Option<PageCursor>, limit: u32) -> Result<Vec<Workspace>>;

    /// Candidates for a sweep, oldest first.
    async fn sweep_candidates(&self, query: SweepQuery, limit: u32) -> Result<Vec<Workspace>>;

    /// Events with a cursor above `cursor`, in order.
    async fn events_after(&self, cursor: u64, limit: u32) -> Result<Vec<Event>>;

    /// The newest event's cursor (0 when there is none).
    async fn head(&self) -> Result<u64>;

    /// Deletes heartbeat events older than `heartbeats_before` and other
    /// events older than `others_before` (Unix ms); returns how many went.
    async fn prune_events(&self, heartbeats_before: i64, others_before: i64) -> Result<u64>;

    async fn pruned_through(&self) -> Result<PrunedThrough>;

    /// How many workspaces there are of each status and runtime kind, for
    /// the metrics every replica reports alike; combinations with none are
    /// left out.
    async fn count_by_status(&self) -> Result<Vec<StatusCount>>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<()>;
}

/// The number of workspaces in one status on one runtime kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    pub status: Status,
    pub runtime_kind: RuntimeKind,
    pub workspaces: u64,
}

#[cfg(test)]
mod tests {
    use super::LabelTerm;
    use crate::validate::label_selector;

    #[test]
    fn selector_terms_admit_labels_as_a_listing_selects_them() {
        let labels = [("team", "lab"), ("tier", "gpu")];
        let admitted = |selector: &str| {
            let label = |key: &str| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            label_selector(selector).unwrap().iter().all(|term: &LabelTerm| term.admits(label))
        };
        assert!(admitted("team=lab,tier"));
        assert!(admitted("team!=ops,!owner"));
        assert!(!admitted("team=ops"));
        assert!(!admitted("team!=lab"));
        assert!(!admitted("owner"));
        assert!(!admitted("!tier"));
    }
}
