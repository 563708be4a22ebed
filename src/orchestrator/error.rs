//! What can go wrong in an orchestrator operation, and what kind of failure each is.
//!
//! Owns [`OrchestratorError`] and [`ErrorKind`]: the one place that looks into the lower
//! layers' errors (runtime, store, ports, subnets, admission) to say whether a failure is the caller's input, a
//! missing or conflicting network, a resource that ran out, or a dependency that is down, so
//! the API maps kinds to status codes without knowing those layers. It must not render
//! messages for a protocol (the API does).

use std::time::Duration;

use super::capacity::AdmissionError;
use super::ports::PortError;
use super::subnets::SubnetError;
use crate::access::AccessError;
use crate::node::RuntimeError;
use crate::store::StoreError;

/// Errors of orchestrator operations.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no network named `{0}`")]
    NotFound(String),
    #[error("network `{network}` has no pin with request id `{request_id}` (list them with `nexus pin ls {network}`)")]
    PinNotFound { network: String, request_id: String },
    #[error("a network named `{0}` already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Subnets(#[from] SubnetError),
    /// The host cannot take what a start or update asks (admission control).
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("network `{name}` failed: {reason}")]
    Failed { name: String, reason: String },
    #[error("network `{name}` did not reach `{wanted}` within {after:?} (now `{status}`); it keeps converging in the background")]
    Timeout {
        name: String,
        wanted: &'static str,
        status: &'static str,
        after: Duration,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccessError> for OrchestratorError {
    fn from(e: AccessError) -> Self {
        invalid(e)
    }
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// The class of an [`OrchestratorError`]: what the caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; sending it again will fail again.
    Invalid,
    NotFound,
    AlreadyExists,
    /// The network (or host) is not in a state that allows this; the message says what to do.
    FailedPrecondition,
    /// A pool (ports, subnets) or the host (admission control) is used up.
    Exhausted,
    /// The network failed; its status reason says why.
    Failed,
    /// Still converging when the operation's time ran out.
    Timeout,
    /// Docker could not be reached; retry later.
    RuntimeUnavailable,
    /// The store's database could not be reached; retry later.
    StoreUnavailable,
    /// A bug or damaged data.
    Internal,
}

impl OrchestratorError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::NotFound(_) | Self::PinNotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::Ports(PortError::Exhausted { .. }) => ErrorKind::Exhausted,
            Self::Ports(_) => ErrorKind::Invalid,
            Self::Subnets(SubnetError::Exhausted { .. }) => ErrorKind::Exhausted,
            Self::Subnets(_) => ErrorKind::Invalid,
            Self::Admission(_) => ErrorKind::Exhausted,
            Self::Failed { .. } => ErrorKind::Failed,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Runtime(RuntimeError::DockerUnavailable { .. }) => ErrorKind::RuntimeUnavailable,
            Self::Runtime(
                RuntimeError::ImageMissing { .. }
                | RuntimeError::ImageProbe { .. }
                | RuntimeError::NameTaken { .. },
            ) => ErrorKind::FailedPrecondition,
            Self::Runtime(RuntimeError::Spec(_)) => ErrorKind::Invalid,
            Self::Runtime(_) => ErrorKind::Internal,
            Self::Store(StoreError::Open { .. } | StoreError::Query(_)) => {
                ErrorKind::StoreUnavailable
            }
            Self::Store(_) => ErrorKind::Internal,
        }
    }
}

/// An [`OrchestratorError::Invalid`] from anything that explains itself.
pub(crate) fn invalid(e: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Invalid(e.to_string())
}
