//! The echo agent of a workspace, reached from the host on its container's
//! address: what it received (counted at the agent, after its own
//! de-duplication by message id) and its busy switch.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::docker::{self, containers_labelled};

/// The port the echo agent image serves A2A on.
const AGENT_PORT: u16 = 8080;

/// One message as the agent recorded its first delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub text: String,
    pub received_at_ms: u64,
}

pub struct Agent {
    base: String,
    http: reqwest::Client,
}

impl Agent {
    /// The agent in the container the provisioner started for `workspace_id`.
    pub async fn of_workspace(workspace_id: &str) -> Self {
        let ids = containers_labelled(&format!("dev.agentmesh/workspace-id={workspace_id}")).await;
        let [id] = ids.as_slice() else { panic!("expected one container for {workspace_id}, found {ids:?}") };
        let ip = docker::container_ip(id).await;
        Self { base: format!("http://{ip}:{AGENT_PORT}"), http: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// Answers every message busy (HTTP 503) until switched back.
    pub async fn set_busy(&self, busy: bool) {
        let response =
            self.http.post(format!("{}/admin/busy", self.base)).json(&json!({"busy": busy})).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Every message the agent took in, first deliveries only, by message id.
    pub async fn deliveries(&self) -> BTreeMap<String, Delivery> {
        let mut by_id = BTreeMap::new();
        for delivery in self.get("/admin/deliveries").await.as_array().unwrap() {
            let message_id = delivery["message_id"].as_str().expect("every message here has an id").to_owned();
            let recorded = Delivery {
                message_id: message_id.clone(),
                text: delivery["text"].as_str().unwrap().to_owned(),
                received_at_ms: delivery["received_at_ms"].as_u64().unwrap(),
            };
            let earlier = by_id.insert(message_id.clone(), recorded);
            assert!(earlier.is_none(), "the agent recorded message {message_id} twice");
        }
        by_id
    }

    /// How many deliveries repeated a message id the agent had already
    /// taken in (redeliveries it recognised).
    pub async fn duplicates(&self) -> u64 {
        self.get("/admin/stats").await["duplicates"].as_u64().unwrap()
    }
}
