//! The rows every reader of the views shows: the JSON of `cairn … -o json`, which the
//! orchestrator's HTTP API serves unchanged, so a script reads the same document either way.

use std::collections::BTreeMap;

use cairn_shared::placement::Placement;
use cairn_shared::{ExecutionState, JobSpec, NodeId};
use serde::Serialize;

use crate::store::NodeSummary;
use crate::views::{ExecutionView, JobView, RolloutView};

/// `node list` rows: `{id, state, labels, executions}` plus the cap (`null` without one),
/// the resources the node declared (absent when it declared none) and what its
/// executions ask of them (`allocated`).
#[derive(Serialize)]
pub struct NodeRow {
    pub id: NodeId,
    pub state: cairn_shared::NodeState,
    pub labels: BTreeMap<String, String>,
    pub executions: u32,
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<cairn_shared::Resources>,
    /// What its non-terminal executions ask of it.
    pub allocated: cairn_shared::Resources,
    /// `eligible`, or `ineligible` for new work.
    pub eligibility: &'static str,
    /// Whether its work is being moved off it (`cairn node drain`).
    pub draining: bool,
    /// While it drains: when what still runs there is asked to stop (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<String>,
}

impl From<NodeSummary> for NodeRow {
    fn from(n: NodeSummary) -> Self {
        Self {
            id: n.node.id,
            state: n.node.state,
            labels: n.node.labels,
            executions: n.executions,
            capacity: n.node.capacity,
            resources: n.node.resources,
            allocated: n.allocated,
            eligibility: if n.node.eligible {
                "eligible"
            } else {
                "ineligible"
            },
            draining: n.node.drain_deadline.is_some(),
            drain_deadline: n.node.drain_deadline.map(|t| t.to_string()),
        }
    }
}

/// `job list` rows: `{id, name, type, version, state}`, and the reason for the state when
/// there is one.
#[derive(Serialize)]
pub struct JobRow {
    pub id: cairn_shared::JobId,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: cairn_shared::JobType,
    pub version: u32,
    pub state: cairn_shared::JobState,
    /// Why the job is in its state, or why some of it waits for a node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While some of it waits for a node: what ruled out each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// The reason a job gives: why some of it waits for a node while it does, else its
/// state's.
pub fn job_reason(j: &JobView) -> Option<String> {
    j.placement
        .as_ref()
        .map(|p| format!("waiting for a node: {p}"))
        .or_else(|| j.reason.clone())
}

impl From<&JobView> for JobRow {
    fn from(j: &JobView) -> Self {
        Self {
            id: j.id,
            name: j.name.clone(),
            job_type: j.job_type,
            version: j.version,
            state: j.state,
            reason: job_reason(j),
            placement: j.placement.clone(),
        }
    }
}

/// `execution list` rows: `{id, job_id, node_id, version, attempt, desired_state, state,
/// exit_code}`, with the job's name and the reason for the state when there is one.
#[derive(Serialize)]
pub struct ExecutionRow {
    pub id: cairn_shared::ExecutionId,
    pub job_id: cairn_shared::JobId,
    pub job_name: String,
    pub node_id: NodeId,
    pub version: u32,
    pub attempt: u32,
    pub desired_state: cairn_shared::DesiredState,
    pub state: ExecutionState,
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether its edge found it healthy; only for a job with `update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

impl From<ExecutionView> for ExecutionRow {
    fn from(e: ExecutionView) -> Self {
        Self {
            id: e.id,
            job_id: e.job_id,
            job_name: e.job_name,
            node_id: e.node_id,
            version: e.version,
            attempt: e.attempt,
            desired_state: e.desired_state,
            state: e.state,
            exit_code: e.exit_code,
            reason: e.reason,
            healthy: e.healthy,
        }
    }
}

/// `job describe`: `{id, name, type, version, state, spec, executions: [...]}`.
#[derive(Serialize)]
pub struct JobDescription {
    #[serde(flatten)]
    pub row: JobRow,
    pub spec: JobSpec,
    /// The current version's rollout and how far it got, for a job with `update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutProgress>,
    pub executions: Vec<ExecutionRow>,
}

/// A rollout as `job describe` shows it: its state, and how far it got, counted from the
/// executions still meant to run.
#[derive(Serialize)]
pub struct RolloutProgress {
    pub version: u32,
    pub state: cairn_shared::RolloutState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub since: String,
    /// Whether its canaries were promoted (`cairn job promote`).
    pub promoted: bool,
    /// Executions of the version that run and are healthy.
    pub healthy: usize,
    /// Executions of the version placed and not healthy yet.
    pub pending: usize,
    /// Executions of earlier versions still meant to run: what is left to replace.
    pub older: usize,
}

impl RolloutProgress {
    pub fn of(rollout: &RolloutView, executions: &[ExecutionView]) -> Self {
        let meant = executions.iter().filter(|e| {
            !e.state.is_terminal() && e.desired_state == cairn_shared::DesiredState::Running
        });
        let (mut healthy, mut pending, mut older) = (0, 0, 0);
        for e in meant {
            if e.version != rollout.version {
                older += 1;
            } else if e.healthy == Some(true) && e.state == ExecutionState::Running {
                healthy += 1;
            } else {
                pending += 1;
            }
        }
        Self {
            version: rollout.version,
            state: rollout.state,
            reason: rollout.reason.clone(),
            since: rollout.since.to_string(),
            promoted: rollout.promoted,
            healthy,
            pending,
            older,
        }
    }
}

impl JobDescription {
    /// A job with its executions of every version, and its rollout's progress.
    pub fn of(job: &JobView, executions: Vec<ExecutionView>) -> Self {
        let rollout = job
            .rollout
            .as_ref()
            .map(|r| RolloutProgress::of(r, &executions));
        Self {
            row: JobRow::from(job),
            spec: job.spec.clone(),
            rollout,
            executions: executions.into_iter().map(ExecutionRow::from).collect(),
        }
    }
}
