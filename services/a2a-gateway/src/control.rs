//! The gateway's control API (`agentmesh.gateway.v1.GatewayService`):
//! inspection and repair of the durable queue. Handlers validate, call the
//! store, and map errors.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use agentmesh_chassis::Caller;
use agentmesh_proto::gateway::v1::{self as pb, gateway_service_server::GatewayService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    directory::Directory,
    error::GatewayError,
    gateway::store_error,
    push::Pushes,
    store::{DropStale, ListFilter, QueueStore, Requeue},
};

pub struct ControlApi {
    store: QueueStore,
    directory: Arc<Directory>,
    /// The webhooks of the items an operator drops.
    pushes: Arc<Pushes>,
}

impl ControlApi {
    pub fn new(store: QueueStore, directory: Arc<Directory>, pushes: Arc<Pushes>) -> Self {
        Self { store, directory, pushes }
    }
}

const MAX_IDS: usize = 1000;

fn uuid(field: &'static str, raw: &str) -> Result<Uuid, GatewayError> {
    raw.parse().map_err(|_| GatewayError::invalid(field, "must be a UUID"))
}

fn optional_uuid(field: &'static str, raw: &str) -> Result<Option<Uuid>, GatewayError> {
    if raw.is_empty() { Ok(None) } else { uuid(field, raw).map(Some) }
}

fn page_size(raw: u32) -> Result<u32, GatewayError> {
    if raw > 1000 { Err(GatewayError::invalid("page_size", "at most 1000")) } else { Ok(raw) }
}

fn token(raw: &str) -> Option<&str> {
    (!raw.is_empty()).then_some(raw)
}

#[tonic::async_trait]
impl GatewayService for ControlApi {
    async fn get_queue_item(
        &self,
        request: Request<pb::GetQueueItemRequest>,
    ) -> Result<Response<pb::GetQueueItemResponse>, Status> {
        let caller = Caller::of(&request);
        let id = uuid("queue_id", &request.get_ref().queue_id)?;
        // A workspace may collect the results of what it sent, and nothing else.
        let sender = match &caller {
            Caller::Operator | Caller::Service => None,
            Caller::Bearer(token) => Some(self.directory.authenticate(token).await?),
            Caller::Anonymous => {
                return Err(Status::unauthenticated("send `authorization: Bearer <token>`"));
            }
        };
        let item = self.store.get(id).await.map_err(store_error)?;
        let item = match (item, sender) {
            (Some(item), Some(sender)) if item.caller != format!("workspace:{sender}") => {
                return Err(Status::permission_denied("a workspace may only read the queue items it sent"));
            }
            (Some(item), _) => item,
            (None, _) => return Err(Status::not_found(format!("no queue item {id}"))),
        };
        Ok(Response::new(pb::GetQueueItemResponse { item: Some((&item).into()) }))
    }

    async fn list_queue_items(
        &self,
        request: Request<pb::ListQueueItemsRequest>,
    ) -> Result<Response<pb::ListQueueItemsResponse>, Status> {
        Caller::of(&request).require_management()?;
        let request = request.into_inner();
        let mut states = Vec::with_capacity(request.states.len());
        for raw in &request.states {
            match pb::QueueItemState::try_from(*raw) {
                Ok(pb::QueueItemState::Unspecified) | Err(_) => {
                    return Err(GatewayError::invalid("states", format!("{raw} is not a queue item state")).into());
                }
                Ok(state) => states.push(state),
            }
        }
        let filter = ListFilter {
            workspace_id: optional_uuid("workspace_id", &request.workspace_id)?,
            states,
            include_payloads: request.include_payloads,
        };
        let (items, next) = self
            .store
            .list(&filter, page_size(request.page_size)?, token(&request.page_token))
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListQueueItemsResponse {
            items: items.iter().map(Into::into).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn drop_stale_items(
        &self,
        request: Request<pb::DropStaleItemsRequest>,
    ) -> Result<Response<pb::DropStaleItemsResponse>, Status> {
        Caller::of(&request).require_management()?;
        let request = request.into_inner();
        let workspace_id = optional_uuid("workspace_id", &request.workspace_id)?;
        match (workspace_id.is_some(), request.all_workspaces) {
            (true, true) => {
                return Err(GatewayError::invalid("all_workspaces", "must be false when workspace_id is set").into());
            }
            (false, false) => {
                return Err(GatewayError::invalid("workspace_id", "give a workspace_id or set all_workspaces").into());
            }
            _ => {}
        }
        if request.older_than_seconds == Some(0) {
            return Err(GatewayError::invalid("older_than_seconds", "at least 1").into());
        }
        if request.older_than_seconds.is_none() && !request.expired {
            return Err(GatewayError::invalid("older_than_seconds", "give older_than_seconds or set expired").into());
        }
        if request.reason.chars().count() > 1024 {
            return Err(GatewayError::invalid("reason", "at most 1024 characters").into());
        }
        let reason = if request.reason.trim().is_empty() {
            "dropped by operator".to_owned()
        } else {
            format!("dropped by operator: {}", request.reason.trim())
        };
        let drop = DropStale {
            workspace_id,
            older_than: request.older_than_seconds.map(|s| Duration::from_secs(s.into())),
            expired: request.expired,
            include_dead_letters: request.include_dead_letters,
            reason,
            dry_run: request.dry_run,
        };
        let (count, ids) = self.store.drop_stale(&drop, SystemTime::now()).await.map_err(store_error)?;
        if !drop.dry_run {
            self.pushes.ended(ids.clone());
        }
        Ok(Response::new(pb::DropStaleItemsResponse {
            dropped_count: count,
            dropped_ids: ids.iter().map(Uuid::to_string).collect(),
        }))
    }

    async fn requeue_dead_letters(
        &self,
        request: Request<pb::RequeueDeadLettersRequest>,
    ) -> Result<Response<pb::RequeueDeadLettersResponse>, Status> {
        Caller::of(&request).require_management()?;
        let request = request.into_inner();
        let workspace_id = optional_uuid("workspace_id", &request.workspace_id)?;
        if workspace_id.is_none() && request.queue_ids.is_empty() {
            return Err(GatewayError::invalid("workspace_id", "give a workspace_id or queue_ids").into());
        }
        if request.queue_ids.len() > MAX_IDS {
            return Err(GatewayError::invalid("queue_ids", "at most 1000").into());
        }
        let queue_ids = request.queue_ids.iter().map(|id| uuid("queue_ids", id)).collect::<Result<Vec<_>, _>>()?;
        if request.max_attempts.is_some_and(|n| !(1..=100).contains(&n)) {
            return Err(GatewayError::invalid("max_attempts", "from 1 to 100").into());
        }
        let requeue = Requeue { workspace_id, queue_ids, max_attempts: request.max_attempts };
        let (requeued, skipped) =
            self.store.requeue_dead_letters(&requeue, SystemTime::now()).await.map_err(store_error)?;
        if let Some(id) = workspace_id
            && !requeued.is_empty()
        {
            tracing::info!(workspace_id = %id, requeued = requeued.len(), "dead letters requeued");
        }
        Ok(Response::new(pb::RequeueDeadLettersResponse {
            requeued_count: requeued.len() as u64,
            requeued_ids: requeued.iter().take(MAX_IDS).map(Uuid::to_string).collect(),
            skipped_ids: skipped,
        }))
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::GetQueueStatsResponse>, Status> {
        Caller::of(&request).require_management()?;
        let request = request.into_inner();
        if request.workspace_ids.len() > MAX_IDS {
            return Err(GatewayError::invalid("workspace_ids", "at most 1000").into());
        }
        let ids = request.workspace_ids.iter().map(|id| uuid("workspace_ids", id)).collect::<Result<Vec<_>, _>>()?;
        let page = self
            .store
            .stats(&ids, page_size(request.page_size)?, token(&request.page_token), SystemTime::now())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::GetQueueStatsResponse {
            totals: Some((&page.totals).into()),
            workspaces: page.workspaces.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
