//! Reports: what edges tell the orchestrator, through the report stream. Each is written to
//! the edge's outbox first and deleted there only after JetStream acknowledged it.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::{ExecutionId, NodeId, ReportId};
use crate::resources::Resources;
use crate::spec::Labels;
use crate::state::ExecutionState;

/// An edge announces itself (first start, restart, or changed labels, cap or resources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHello {
    pub node: NodeId,
    #[serde(default)]
    pub labels: Labels,
    /// The most executions the node runs at once, if it sets a cap.
    pub capacity: Option<u32>,
    /// The cpu, memory and disk the node offers, which placement fits requests into;
    /// absent from nodes that declare none, which only their cap limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// An execution on this edge changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionUpdate {
    pub node: NodeId,
    pub execution: ExecutionId,
    pub attempt: u32,
    pub state: ExecutionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An execution's health, for a job with `update`: healthy once it has run the update's
/// `min_healthy_time`, or not healthy when that has not happened by `healthy_deadline`
/// after the edge took it. Sent once, after the `running` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionHealth {
    pub node: NodeId,
    pub execution: ExecutionId,
    pub attempt: u32,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

messages! {
    /// Everything an edge reports.
    pub enum Report: id = ReportId {
        // 2: `capacity` may be absent (no cap), and `resources` came.
        NodeHello = ("NodeHello", 2),
        ExecutionUpdate = ("ExecutionUpdate", 1),
        ExecutionHealth = ("ExecutionHealth", 1),
    }
}

impl Report {
    /// The node that sent the report; the orchestrator checks it against the subject.
    pub fn node(&self) -> &NodeId {
        match self {
            Report::NodeHello(r) => &r.node,
            Report::ExecutionUpdate(r) => &r.node,
            Report::ExecutionHealth(r) => &r.node,
        }
    }
}

impl Report {
    /// One line saying what the edge reported, for people (`cairn audit history`).
    pub fn summary(&self) -> String {
        match self {
            Report::NodeHello(h) => format!(
                "{} says hello, {}",
                h.node,
                crate::event::offer(h.capacity, h.resources.as_ref())
            ),
            Report::ExecutionUpdate(u) => format!(
                "{} reports {} attempt {} {}{}{}",
                u.node,
                u.execution,
                u.attempt,
                u.state,
                crate::event::exit(u.exit_code),
                crate::event::because(u.reason.as_deref())
            ),
            Report::ExecutionHealth(h) => format!(
                "{} reports {} attempt {} {}{}",
                h.node,
                h.execution,
                h.attempt,
                if h.healthy { "healthy" } else { "not healthy" },
                crate::event::because(h.reason.as_deref())
            ),
        }
    }
}
