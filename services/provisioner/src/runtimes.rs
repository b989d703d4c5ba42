//! The runtime instances one provisioner manages, and what it last learnt
//! about each engine's health.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::SystemTime,
};

use agentmesh_chassis::status::echo;

use crate::{
    error::{ProvisionerError, Result},
    policy::kind_name,
    runtime::{Runtime, RuntimeKind},
};

/// The last health check and resync of one instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceHealth {
    /// None until first checked.
    pub healthy: Option<bool>,
    pub detail: String,
    pub engine_version: String,
    pub checked_at: Option<SystemTime>,
    pub workload_count: u64,
    pub last_resync_at: Option<SystemTime>,
}

pub struct Instance {
    pub runtime: Arc<dyn Runtime>,
    pub is_default: bool,
    pub health: RwLock<InstanceHealth>,
}

impl Instance {
    pub fn name(&self) -> &str {
        &self.runtime.identity().instance
    }

    pub fn health(&self) -> InstanceHealth {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn update_health(&self, update: impl FnOnce(&mut InstanceHealth)) {
        if let Ok(mut health) = self.health.write() {
            update(&mut health);
        }
    }
}

/// The instances, in configuration order.
pub struct Runtimes {
    instances: Vec<Arc<Instance>>,
    by_name: HashMap<String, usize>,
}

impl Runtimes {
    /// `defaults` names the default instance of a kind explicitly; otherwise
    /// the first instance of each kind is its default.
    pub fn new(runtimes: Vec<(Arc<dyn Runtime>, bool)>) -> Self {
        let mut instances: Vec<Arc<Instance>> = Vec::new();
        for (runtime, explicit_default) in &runtimes {
            let kind = runtime.kind();
            let is_default = *explicit_default
                || (!runtimes.iter().any(|(r, d)| *d && r.kind() == kind)
                    && !instances.iter().any(|i| i.runtime.kind() == kind));
            instances.push(Arc::new(Instance {
                runtime: runtime.clone(),
                is_default,
                health: RwLock::new(InstanceHealth::default()),
            }));
        }
        let by_name = instances.iter().enumerate().map(|(i, inst)| (inst.name().to_owned(), i)).collect();
        Self { instances, by_name }
    }

    pub fn all(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Instance>> {
        self.by_name.get(name).map(|&i| &self.instances[i])
    }

    /// The instance a new spec lands on: the one it names, or its kind's default.
    pub fn resolve(&self, kind: RuntimeKind, name: &str) -> Result<&Arc<Instance>> {
        let kind_shown = kind_name(kind);
        if name.is_empty() {
            return self.instances.iter().find(|i| i.is_default && i.runtime.kind() == kind).ok_or_else(|| {
                ProvisionerError::invalid(
                    "spec.runtime_kind",
                    format!("this provisioner manages no {kind_shown} runtime"),
                )
            });
        }
        match self.get(name) {
            Some(instance) if instance.runtime.kind() == kind => Ok(instance),
            Some(_) => Err(ProvisionerError::invalid(
                "spec.runtime_instance",
                format!("{} is not a {kind_shown} runtime instance", echo(name)),
            )),
            None => Err(ProvisionerError::invalid(
                "spec.runtime_instance",
                format!("this provisioner manages no runtime instance {} (see ListRuntimes)", echo(name)),
            )),
        }
    }
}
