//! The generated `nexus.v1` protobuf types, client and server, and the encoded descriptor set.
//!
//! Owns nothing but generated code and the hand-written `Debug` of the messages that carry the
//! swarm key (redacted). It must not hold logic.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("nexus.v1");

/// The encoded `FileDescriptorSet` of `nexus.v1`, for server reflection and `nexus ctl`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nexus_descriptor.bin"));

/// The fully qualified service name.
pub const SERVICE: &str = "nexus.v1.Nexus";

impl std::fmt::Debug for JoinKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinKit")
            .field("name", &self.name)
            .field("swarm_key", &"<redacted>")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl std::fmt::Debug for CreateNetworkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateNetworkRequest")
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("resources", &self.resources)
            .field("users", &self.users)
            .field("gateway_public", &self.gateway_public)
            .field("allowed_origins", &self.allowed_origins)
            .field(
                "swarm_key",
                &if self.swarm_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("bootstrap_peers", &self.bootstrap_peers)
            .field("api_allow", &self.api_allow)
            .field("api_deny", &self.api_deny)
            .field("image", &self.image)
            .field("start", &self.start)
            .finish()
    }
}
