//! Heartbeats: an edge's periodic "I am here", sent on core NATS (never stored in a stream)
//! so the orchestrator's liveness can tell a silent node from a busy one.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::{ExecutionId, NodeId, ReportId};

/// One beat. Cheap to send every few seconds from every node; a lost beat is harmless
/// because the next one carries the same facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    /// Executions whose process this edge is running (or about to start) right now.
    pub running: u32,
    /// The cap the node declared in its hello, if any.
    pub capacity: Option<u32>,
    /// Reports and log chunks recorded locally but not yet acknowledged by JetStream: a
    /// growing number means the edge cannot publish.
    #[serde(default)]
    pub outbox: u64,
    /// The attempts whose process runs here now: after an absence long enough for the
    /// orchestrator to have declared them lost, this is how it learns that they were not.
    /// Empty in beats from edges before the field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<RunningAttempt>,
    /// Whether the edge holds its pull on its consumer now. An edge that cannot bind for
    /// long has lost its consumer with the server that held it, and the orchestrator makes
    /// another. True in beats from edges before the field existed.
    #[serde(default = "bound")]
    pub bound: bool,
}

fn bound() -> bool {
    true
}

/// One attempt an edge is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunningAttempt {
    pub execution: ExecutionId,
    pub attempt: u32,
}

messages! {
    /// What an edge sends on `cairn.hb.<node>`. The envelope id is fresh per beat; the
    /// type name and version let the format grow like every other message.
    pub enum Liveness: id = ReportId {
        // 2: `capacity` may be absent (no cap).
        Heartbeat = ("Heartbeat", 2),
    }
}
