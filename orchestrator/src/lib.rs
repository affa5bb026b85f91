//! The orchestrator: the projector that folds the event stream into redb views, and the
//! queries answered from them. (The decider, dispatcher, liveness and query service join it
//! as they are built.)

mod error;
pub mod projection;
pub mod projector;
pub mod query;
pub mod service;
pub mod store;
pub mod views;

pub use error::{Error, Result};
pub use projector::{Projector, ProjectorConfig, ProjectorHandle, replay_until};
pub use service::{Orchestrator, OrchestratorConfig};
pub use store::ViewStore;
