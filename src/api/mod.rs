//! The gRPC API (`nexus.v1`): wire types, the service that turns RPCs into orchestrator calls,
//! API-key auth, and the server (TLS, health, reflection, graceful shutdown).
//!
//! - [`pb`]: generated code and the descriptor set.
//! - [`service`]: `nexus.v1.Nexus` → [`crate::orchestrator::Orchestrator`].
//! - [`pins`]: the pinset's messages ↔ the orchestrator's pin types.
//! - [`auth`]: bearer API keys, constant-time.
//! - [`server`]: the tonic server stack.
pub mod auth;
pub mod pb;
pub mod pins;
pub mod server;
pub mod service;

pub use auth::ApiKeys;
pub use server::{serve, Health, ServerError};
pub use service::{NexusService, ServiceConfig};
