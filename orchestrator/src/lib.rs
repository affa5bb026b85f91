//! The orchestrator: the pure decider (and scheduler), the projector that folds the event
//! stream into redb views, and the query service answered from them. (The shell that
//! feeds the decider, the dispatcher and liveness join it as they are built.)

pub mod decider;
pub mod digest;
pub mod dispatcher;
pub mod engine;
mod error;
pub mod projection;
pub mod projector;
pub mod query;
mod retry;
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
