//! Choosing a node: which nodes may take an execution of a job, and which of them should.
//!
//! The candidates are gathered once per job and reconciliation, from the nodes with room
//! only (the others cannot take anything), and kept up to date as executions are placed,
//! so placing `count` executions costs `count` scans of those nodes, and asking a full
//! fleet costs nothing.

use std::collections::{BTreeMap, BTreeSet};

use cairn_shared::{NodeId, NodeState};

use super::state::{Job, Node, State};

/// A node the job may run on at all: not lost, labels matching.
pub(super) fn is_usable(node: &Node, job: &Job) -> bool {
    node.may_run(&job.spec)
}

/// The nodes a job may use, with what the choice depends on.
pub(super) struct Candidates {
    nodes: BTreeMap<NodeId, Candidate>,
}

struct Candidate {
    connected: bool,
    /// Places left before the node reaches its declared capacity.
    room: usize,
    /// Non-terminal executions of any job.
    load: usize,
    /// Non-terminal executions of this job, to spread its replicas.
    job_load: usize,
}

impl Candidates {
    pub(super) fn new(state: &State, job: &Job) -> Self {
        let nodes = state
            .nodes_with_room()
            .filter(|n| is_usable(n, job))
            .map(|n| {
                let candidate = Candidate {
                    connected: n.state == NodeState::Connected,
                    room: (n.capacity as usize).saturating_sub(n.active.len()),
                    load: n.active.len(),
                    job_load: job.live_on.get(&n.id).copied().unwrap_or(0),
                };
                (n.id.clone(), candidate)
            })
            .collect();
        Self { nodes }
    }

    /// Whether no node can take anything.
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether this very node can take one more execution now.
    pub(super) fn fits(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|c| c.room > 0)
    }

    /// The best node for an execution that may go anywhere: connected first, then one the
    /// slot has not used, then fewest executions of this job, then fewest overall, then the
    /// node id, so the same state always gives the same choice.
    pub(super) fn best(&self, avoid: &BTreeSet<NodeId>) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, c)| c.room > 0)
            .min_by_key(|(id, c)| (!c.connected, avoid.contains(*id), c.job_load, c.load, *id))
            .map(|(id, _)| id.clone())
    }

    /// Accounts for an execution just placed on `node`.
    pub(super) fn take(&mut self, node: &NodeId) {
        if let Some(c) = self.nodes.get_mut(node) {
            c.room = c.room.saturating_sub(1);
            c.load += 1;
            c.job_load += 1;
        }
    }
}
