//! Generates the Rust code for every agentmesh contract in one place, and a
//! descriptor set that each service serves through gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "agentmesh/registry/v1/registry.proto",
    "agentmesh/provisioner/v1/provisioner.proto",
    "agentmesh/scheduler/v1/scheduler.proto",
    "agentmesh/gateway/v1/gateway.proto",
    // The A2A protocol itself, vendored; the gateway serves its gRPC binding.
    "lf/a2a/v1/a2a.proto",
    // Described for reflection only: the Rust types come from tonic-types.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    // A vendored protoc keeps builds hermetic: no system protoc is assumed.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("agentmesh_descriptor.bin"))
        .extern_path(".google.rpc", "::tonic_types")
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
