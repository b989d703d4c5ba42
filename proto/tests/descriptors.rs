//! The descriptor set served through reflection describes every contract,
//! the vendored A2A protocol included.

use agentmesh_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::FileDescriptorSet;

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a prost_types::FileDescriptorProto {
    set.file.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("{name} is not in the descriptor set"))
}

#[test]
fn reflection_describes_the_a2a_service_and_workspace_authentication() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();

    let a2a = file(&set, "lf/a2a/v1/a2a.proto");
    assert_eq!(a2a.package(), "lf.a2a.v1");
    let service = a2a.service.iter().find(|s| s.name() == "A2AService").unwrap();
    let streaming: Vec<&str> = service.method.iter().filter(|m| m.server_streaming()).map(|m| m.name()).collect();
    assert_eq!(service.method.len(), 11);
    assert_eq!(streaming, ["SendStreamingMessage", "SubscribeToTask"]);
    // Its imports are described too, or reflection clients could not resolve Struct and Timestamp.
    for import in &a2a.dependency {
        file(&set, import);
    }

    let registry = file(&set, "agentmesh/registry/v1/registry.proto");
    let method = registry.service[0].method.iter().find(|m| m.name() == "AuthenticateWorkspace").unwrap();
    assert_eq!(
        (method.input_type(), method.output_type()),
        (".agentmesh.registry.v1.AuthenticateWorkspaceRequest", ".agentmesh.registry.v1.AuthenticateWorkspaceResponse")
    );
}
