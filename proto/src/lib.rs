//! The gRPC contracts every agentmesh service speaks, generated from `proto/`.
//!
//! One crate owns all of them so that services built separately still agree
//! on every message, and so that each service can serve the full descriptor
//! set through reflection.

// Generated code: its doc comments are the .proto comments as written for
// grpcurl readers, not rustdoc.
#![allow(clippy::all)]

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("agentmesh.registry.v1");
    }
}

pub mod provisioner {
    pub mod v1 {
        tonic::include_proto!("agentmesh.provisioner.v1");
    }
}

pub mod scheduler {
    pub mod v1 {
        tonic::include_proto!("agentmesh.scheduler.v1");
    }
}

pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("agentmesh.gateway.v1");
    }
}

/// The A2A protocol, version 1.0 (`lf.a2a.v1`), generated from the published
/// protocol definition vendored in `proto/lf/a2a/v1/a2a.proto`: the gateway
/// serves `A2AService` and calls agents with the same types the official A2A
/// SDKs use. Struct, Value and Timestamp are the `prost_types` ones.
pub mod a2a {
    pub mod v1 {
        tonic::include_proto!("lf.a2a.v1");
    }
}

/// The encoded descriptors of every agentmesh contract (and their imports),
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agentmesh_descriptor");
