//! The orchestrator: the async shell around the pure decider (`cairn-decider`) with its
//! inputs and liveness, the dispatcher and sweeper of work, the projector that folds the
//! event stream into redb views, and the query service answered from them.

/// The decision core, a crate of its own so that it stays pure (see `cairn-decider`).
pub use cairn_decider as decider;
pub mod dashboard;
pub mod digest;
pub mod dispatcher;
pub mod engine;
mod error;
pub mod history;
pub mod http;
pub mod metrics;
pub mod projection;
pub mod projector;
pub mod query;
pub mod records;
mod retry;
pub mod rows;
pub mod service;
pub mod store;
pub mod sweeper;
pub mod views;

pub use error::{Error, Result};
pub use projector::{
    Projector, ProjectorConfig, ProjectorHandle, replay_until, replay_with_progress,
};
pub use service::{Orchestrator, OrchestratorConfig};
pub use store::ViewStore;
