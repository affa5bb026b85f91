//! Assignments: work addressed to one node, on that node's subject of the assignment
//! work-queue stream. The node pulls them through its own durable consumer.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::{EventId, ExecutionId, JobId};
use crate::spec::{Health, HumanDuration, TaskSpec};

/// Run an execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExecution {
    pub execution: ExecutionId,
    pub attempt: u32,
    pub job: JobId,
    pub job_name: String,
    pub version: u32,
    pub task: TaskSpec,
    /// How long to wait before starting the task (a restart's pause); absent means none.
    /// A stop during the wait ends it without starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// How to judge its health (a job with `update`): the edge reports it healthy once it
    /// has run `min_healthy_time`, or not healthy if not so by `healthy_deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Stop an execution if it is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopExecution {
    pub execution: ExecutionId,
    pub attempt: u32,
    pub reason: String,
}

messages! {
    /// Work for one node. The envelope id is the id of the event it was derived from.
    pub enum Assignment: id = EventId {
        RunExecution = ("RunExecution", 1),
        StopExecution = ("StopExecution", 1),
    }
}

impl Assignment {
    /// The execution the work is for.
    pub fn execution(&self) -> ExecutionId {
        match self {
            Assignment::RunExecution(RunExecution { execution, .. })
            | Assignment::StopExecution(StopExecution { execution, .. }) => *execution,
        }
    }

    /// One line saying what the node is asked to do, for people (`cairn audit history`).
    pub fn summary(&self) -> String {
        match self {
            Assignment::RunExecution(r) => format!("run {} attempt {}", r.execution, r.attempt),
            Assignment::StopExecution(s) => {
                format!("stop {} attempt {}: {}", s.execution, s.attempt, s.reason)
            }
        }
    }
}
