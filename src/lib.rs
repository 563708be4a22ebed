//! nexus: an orchestrator for private IPFS (kubo) networks.
pub mod api;
pub mod delegator;
pub mod node;
pub mod orchestrator;
pub mod store;
