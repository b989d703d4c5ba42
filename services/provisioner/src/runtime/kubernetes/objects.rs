//! The API objects a workspace gets: its pod and its data claim.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
        PodSpec, ResourceRequirements, Volume, VolumeMount, VolumeResourceRequirements,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use super::{CONTAINER, DATA_MOUNT, KubernetesSettings, WorkspaceVolume};
use crate::runtime::{Identity, WorkloadSpec, labels};

/// Annotation carrying the workspace's human name, for people reading `kubectl get`.
const WORKSPACE_NAME_ANNOTATION: &str = "dev.agentmesh/workspace-name";
const DATA_VOLUME: &str = "data";

/// The labels every object of one workspace carries.
pub(super) fn labels(identity: &Identity, workspace_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MESH_ID.to_owned(), identity.mesh_id.clone()),
        (labels::RUNTIME_INSTANCE.to_owned(), identity.instance_label()),
        (labels::WORKSPACE_ID.to_owned(), workspace_id.to_owned()),
        (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
    ])
}

/// The claim backing a workspace's /data: named after the pod so one name
/// finds both, and kept across pod restarts.
pub(super) fn claim_name(pod_name: &str) -> String {
    format!("{pod_name}-data")
}

pub(super) fn claim(
    identity: &Identity,
    workspace_id: &str,
    name: &str,
    storage_class: Option<&str>,
    size: &str,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(identity, workspace_id)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(size.to_owned()))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

pub(super) fn pod(identity: &Identity, name: &str, spec: &WorkloadSpec, settings: &KubernetesSettings) -> Pod {
    let volume = match &settings.volume {
        WorkspaceVolume::Claim { .. } => Volume {
            name: DATA_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(name),
                read_only: None,
            }),
            ..Volume::default()
        },
        WorkspaceVolume::Ephemeral => {
            Volume { name: DATA_VOLUME.to_owned(), empty_dir: Some(Default::default()), ..Volume::default() }
        }
    };
    let env = spec
        .env
        .iter()
        .map(|(name, value)| EnvVar { name: name.clone(), value: Some(value.clone()), value_from: None })
        .collect();
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.as_str().to_owned()),
        // Without a command the image's entrypoint runs, and args replace only its CMD.
        command: (!spec.command.is_empty()).then(|| vec![spec.command.clone()]),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(env),
        resources: limits(spec),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_MOUNT.to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(identity, &spec.workspace_id)),
            annotations: (!spec.workspace_name.is_empty())
                .then(|| BTreeMap::from([(WORKSPACE_NAME_ANNOTATION.to_owned(), spec.workspace_name.clone())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            // The provisioner's own restart policy decides restarts (PRV-10);
            // a kubelet restarting in place would hide exits from it.
            restart_policy: Some("Never".to_owned()),
            service_account_name: settings.service_account.clone(),
            // Agents do not talk to the Kubernetes API unless an account was
            // configured for them, so they get no token by default.
            automount_service_account_token: Some(settings.service_account.is_some()),
            // Service links would add an environment variable per service in
            // the namespace, which can shadow the AGENTMESH_* values.
            enable_service_links: Some(false),
            volumes: Some(vec![volume]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Limits only: Kubernetes then requests the same amounts, so a pod is
/// scheduled only where its tier fits. Pids have no per-pod limit in the core API.
fn limits(spec: &WorkloadSpec) -> Option<ResourceRequirements> {
    let mut limits = BTreeMap::new();
    if spec.limits.cpu_millis > 0 {
        limits.insert("cpu".to_owned(), Quantity(format!("{}m", spec.limits.cpu_millis)));
    }
    if spec.limits.memory_bytes > 0 {
        limits.insert("memory".to_owned(), Quantity(spec.limits.memory_bytes.to_string()));
    }
    (!limits.is_empty()).then(|| ResourceRequirements { limits: Some(limits), ..ResourceRequirements::default() })
}
