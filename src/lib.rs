//! nexus: an orchestrator for private IPFS (kubo) networks.
pub mod access;
pub mod api;
pub mod cid;
pub mod client;
pub mod config;
pub mod daemon;
pub mod delegator;
pub mod instance;
pub mod names;
pub mod node;
pub mod orchestrator;
pub mod replication;
pub mod revocations;
pub mod secret;
pub mod store;
pub mod sync;
pub mod telemetry;
