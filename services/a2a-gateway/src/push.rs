//! Push notifications for queued messages. The task a caller holds for a
//! queued message is the gateway's (its id is the queue item's), so the
//! gateway keeps that task's push-notification configs, and when the
//! message ends (answered, a dead letter, dropped) the replica that ended
//! it calls each config's webhook with the task, as an agent does for its
//! own tasks: a `StreamResponse` holding the task, with the config's token
//! in `X-A2A-Notification-Token` and its credentials in `Authorization`.
//! Webhook URLs pass the same SSRF guard as agent URLs (SEC-3), when
//! registered and again at every call. Configs for the agent's own tasks
//! are the agent's: those requests pass through.
//!
//! Delivery is best effort, as A2A describes it: a few attempts with
//! backoff; a replica that dies between ending a message and calling its
//! webhook leaves that call unmade (the task itself stays readable).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use agentmesh_netguard::UrlGuard;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    agent_client::{AgentCall, AgentClient, AgentEndpoint, Failure, IdleClock},
    directory::Activity,
    error::GatewayError,
    gateway::{is_final, store_error},
    jsonrpc::{self, Envelope, Flavor},
    store::{PushAuthentication, PushConfig, QueueItem, QueueStore},
};

/// How long a webhook may take to answer one call.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls of one webhook for one notification, the first included.
const WEBHOOK_ATTEMPTS: usize = 3;
/// The longest URL, token or credential a config may hold.
const MAX_FIELD: usize = 2048;

/// A push-notification config request (A2A 1.0 method names).
#[derive(Debug)]
pub struct PushRequest {
    kind: Kind,
    /// The task the request is about.
    pub task_id: String,
    params: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Get,
    List,
    Delete,
}

impl PushRequest {
    /// The push-config request `envelope` holds, if it holds one.
    pub fn of(envelope: &Envelope) -> Option<Self> {
        // Every request that reaches `forward` is asked: the method name is
        // read without building the document, which only a push-config
        // request then is.
        let body = envelope.body();
        let kind = match jsonrpc::method_name(&body)?.as_str() {
            "CreateTaskPushNotificationConfig" => Kind::Create,
            "GetTaskPushNotificationConfig" => Kind::Get,
            "ListTaskPushNotificationConfigs" => Kind::List,
            "DeleteTaskPushNotificationConfig" => Kind::Delete,
            _ => return None,
        };
        let Ok(Value::Object(mut request)) = serde_json::from_slice(&body) else { return None };
        let Some(Value::Object(params)) = request.remove("params") else { return None };
        let task_id = params.get("taskId").and_then(Value::as_str)?.to_owned();
        Some(Self { kind, task_id, params })
    }

    fn text(&self, field: &'static str) -> Result<String, GatewayError> {
        match self.params.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) if text.len() <= MAX_FIELD => Ok(text.clone()),
            Some(Value::String(_)) => Err(GatewayError::invalid(field, format!("longer than {MAX_FIELD} bytes"))),
            Some(_) => Err(GatewayError::invalid(field, "must be a string")),
        }
    }

    /// The config id a request names; the task's own id when it names none,
    /// as the A2A SDKs default it.
    fn config_id(&self) -> Result<String, GatewayError> {
        let id = self.text("id")?;
        Ok(if id.is_empty() { self.task_id.clone() } else { id })
    }
}

/// The gateway's half of push notifications: configs of queued tasks, and
/// the webhook calls when they end.
pub struct Pushes {
    store: QueueStore,
    agents: AgentClient,
    guard: UrlGuard,
}

impl Pushes {
    pub fn new(store: QueueStore, agents: AgentClient, guard: UrlGuard) -> Arc<Self> {
        Arc::new(Self { store, agents, guard })
    }

    /// Answers `request` about `item`'s task: the JSON-RPC reply's result.
    pub async fn answer(&self, request: PushRequest, item: &QueueItem) -> Result<Value, GatewayError> {
        match request.kind {
            Kind::Create => {
                let config = self.checked_config(&request, item.id).await?;
                let stored =
                    self.store.put_push_config(&config, std::time::SystemTime::now()).await.map_err(store_error)?;
                tracing::info!(queue_id = %item.id, config_id = %stored.id, "push-notification config registered");
                Ok(config_json(&request.task_id, &stored))
            }
            Kind::Get => {
                let id = request.config_id()?;
                match self.store.push_config(item.id, &id).await.map_err(store_error)? {
                    Some(config) => Ok(config_json(&request.task_id, &config)),
                    None => Err(GatewayError::PushConfigNotFound(format!(
                        "task {} has no push-notification config {id}",
                        request.task_id
                    ))),
                }
            }
            Kind::List => {
                let configs = self.store.push_configs(&[item.id]).await.map_err(store_error)?;
                let configs: Vec<Value> = configs.iter().map(|config| config_json(&request.task_id, config)).collect();
                Ok(json!({ "configs": configs }))
            }
            Kind::Delete => {
                self.store.delete_push_config(item.id, &request.config_id()?).await.map_err(store_error)?;
                Ok(Value::Null)
            }
        }
    }

    async fn checked_config(&self, request: &PushRequest, queue_id: Uuid) -> Result<PushConfig, GatewayError> {
        let url = request.text("url")?;
        if url.is_empty() {
            return Err(GatewayError::invalid("url", "the webhook to call is required"));
        }
        // SEC-3: a webhook is dialled like an agent, so it may only be an
        // address the network mode allows.
        self.guard.check(&url).await.map_err(|refused| GatewayError::invalid("url", refused.to_string()))?;
        let authentication = match request.params.get("authentication") {
            None | Some(Value::Null) => None,
            Some(Value::Object(auth)) => {
                let text = |field: &str| auth.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
                let (scheme, credentials) = (text("scheme"), text("credentials"));
                if scheme.is_empty() || scheme.contains(char::is_whitespace) || scheme.len() > MAX_FIELD {
                    return Err(GatewayError::invalid("authentication.scheme", "an HTTP authentication scheme"));
                }
                if credentials.len() > MAX_FIELD || credentials.contains(['\r', '\n']) {
                    return Err(GatewayError::invalid("authentication.credentials", "one line, at most 2048 bytes"));
                }
                Some(PushAuthentication { scheme, credentials })
            }
            Some(_) => return Err(GatewayError::invalid("authentication", "must be an object")),
        };
        let token = request.text("token")?;
        if token.contains(['\r', '\n']) {
            return Err(GatewayError::invalid("token", "must be one line"));
        }
        Ok(PushConfig { queue_id, id: request.config_id()?, url, token, authentication })
    }

    /// Calls the webhooks of whichever of `ids` ended and has configs, in
    /// the background.
    pub fn ended(self: &Arc<Self>, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        let pushes = self.clone();
        tokio::spawn(async move {
            if let Err(error) = pushes.notify(&ids).await {
                tracing::warn!(count = ids.len(), %error, "cannot look up push-notification configs");
            }
        });
    }

    async fn notify(&self, ids: &[Uuid]) -> crate::store::Result<()> {
        let mut by_task: BTreeMap<Uuid, Vec<PushConfig>> = BTreeMap::new();
        for config in self.store.push_configs(ids).await? {
            by_task.entry(config.queue_id).or_default().push(config);
        }
        for (queue_id, configs) in by_task {
            let Some(item) = self.store.get(queue_id).await?.filter(|item| is_final(item.state)) else { continue };
            let task = jsonrpc::task_of_queue_item(Flavor::V10, &queue_id.to_string(), item);
            let payload = Bytes::from(json!({ "task": task }).to_string());
            for config in configs {
                self.call(&config, payload.clone()).await;
            }
        }
        Ok(())
    }

    /// Calls one webhook, retrying with backoff while it fails.
    async fn call(&self, config: &PushConfig, payload: Bytes) {
        let endpoint = AgentEndpoint::parse(&config.url);
        let authorization = config.authentication.as_ref().map(|auth| format!("{} {}", auth.scheme, auth.credentials));
        let mut fields = Vec::new();
        if !config.token.is_empty() {
            fields.push(("x-a2a-notification-token", config.token.as_str()));
        }
        if let Some(authorization) = &authorization {
            fields.push(("authorization", authorization.as_str()));
        }
        let attempt = || async {
            let call = AgentCall {
                url: &config.url,
                endpoint: endpoint.as_ref(),
                body: payload.clone(),
                traceparent: None,
                a2a_version: None,
                fields: &fields,
            };
            let idle = IdleClock::start(WEBHOOK_TIMEOUT, Arc::new(Activity::default()));
            match self.agents.post(call, &idle).await? {
                status if status.is_success() => Ok(()),
                status => Err(Failure::Http { status: status.as_u16() }),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_times(WEBHOOK_ATTEMPTS - 1)
            .with_jitter();
        let queue_id = config.queue_id;
        match attempt.retry(backoff).when(|failure| !matches!(failure, Failure::Refused(_))).await {
            Ok(()) => tracing::info!(%queue_id, config_id = %config.id, "push notification sent"),
            Err(failure) => tracing::warn!(
                %queue_id, config_id = %config.id, url = %config.url, error = %failure,
                "push notification not delivered"
            ),
        }
    }
}

/// A config as A2A 1.0 writes one (proto3 JSON: empty fields left out),
/// whole, as the SDKs' agents return theirs to whoever may read the task.
fn config_json(task_id: &str, config: &PushConfig) -> Value {
    let mut json = json!({ "taskId": task_id, "id": config.id, "url": config.url });
    if !config.token.is_empty() {
        json["token"] = json!(config.token);
    }
    if let Some(auth) = &config.authentication {
        json["authentication"] = json!({ "scheme": auth.scheme });
        if !auth.credentials.is_empty() {
            json["authentication"]["credentials"] = json!(auth.credentials);
        }
    }
    json
}
