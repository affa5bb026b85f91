//! cairn's shared vocabulary: typed ids, the job spec, commands, events, edge reports,
//! assignments, and the versioned MessagePack envelope every one of them travels in.
//!
//! Nothing in this crate performs I/O or reads the clock except [`Timestamp::now`], which
//! only the async shells call; the decider and the projector receive time as an input.

pub mod assignment;
pub mod codec;
pub mod command;
pub mod event;
pub mod heartbeat;
pub mod ids;
pub mod placement;
pub mod report;
pub mod resources;
pub mod spec;
pub mod state;
pub mod time;

pub use assignment::Assignment;
pub use codec::{Envelope, Error, Message, Result};
pub use command::Command;
pub use event::Event;
pub use heartbeat::{Heartbeat, Liveness, RunningAttempt};
pub use ids::{CommandId, EventId, ExecutionId, JobId, NodeId, ReportId, Seq};
pub use report::Report;
pub use resources::Resources;
pub use spec::{JobSpec, JobType, TaskSpec};
pub use state::{DesiredState, ExecutionState, JobState, NodeState, RolloutState};
pub use time::Timestamp;
