//! The gRPC API (`nexus.v1`): wire types and the service that turns RPCs into orchestrator calls.
pub mod pb;
