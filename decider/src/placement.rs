//! Placement as a function: a [`Problem`] in (one job's slots that need an execution and
//! the nodes it may use), a [`Plan`] out (where each next execution goes, and why the
//! others could not be placed).
//!
//! The candidates are gathered once per job and reconciliation, from the nodes with room
//! only (the others cannot take anything), and kept up to date as the plan places
//! executions, so placing `count` executions costs `count` scans of those nodes, and asking
//! a full fleet costs nothing. The slots come lazily, in placement order: a plan stops
//! reading them once no node is left for a slot that may go anywhere, so a large run on a
//! full fleet costs what it places.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_shared::placement::Placement;
use cairn_shared::{NodeId, NodeState};

use super::facts::{Job, Slot};
use super::state::State;
use super::tally::{self, SlotKey, Tally};

/// One job's placement problem.
pub(super) struct Problem<W> {
    pub(super) candidates: Candidates,
    /// The slots that need an execution, in placement order.
    pub(super) wants: W,
    /// How many `wants` yields, so the plan can say how many it left without reading them.
    pub(super) waiting: usize,
}

/// A slot that needs an execution.
pub(super) struct Want {
    pub(super) slot: SlotKey,
    /// The attempt its next execution is.
    pub(super) attempt: u32,
    /// The nodes its earlier attempts ran on, which the next one avoids if it can.
    pub(super) used: BTreeSet<NodeId>,
    /// The pause before the next execution starts: its restart policy's, after a fault.
    pub(super) delay: Duration,
}

/// What placement decided for one job.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Where each slot's next execution goes, in placement order.
    pub(super) placed: Vec<Placed>,
    /// What could not be placed, and why.
    pub(super) unplaced: Vec<Unplaced>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) slot: SlotKey,
    pub(super) node: NodeId,
    pub(super) attempt: u32,
    pub(super) delay: Duration,
}

/// Slots left unplaced for one reason.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unplaced {
    /// `slots` slots that may go anywhere found no node that may run the job with room
    /// left (none matching, all lost, or all full).
    NoNodeWithRoom { slots: usize },
    /// A slot pinned to this node (ops, daemon), which is full.
    NodeFull(NodeId),
}

/// The placement problem of an active job: its waiting slots, in placement order, and
/// the nodes it may use.
pub(super) fn problem<'s>(
    state: &'s State,
    job: &'s Job,
) -> Problem<impl Iterator<Item = Want> + 's> {
    let wants = state.waiting(job.id).map(|key| {
        let slot = job.run.slot(&key);
        Want {
            attempt: next_attempt(slot),
            used: used_nodes(state, slot),
            delay: restart_delay(state, job, slot),
            slot: key,
        }
    });
    Problem {
        candidates: Candidates::new(state, job),
        wants,
        waiting: state.tally(job.id).map_or(0, Tally::waiting),
    }
}

/// The attempt number of a slot's next execution; a fresh daemon node has no slot yet.
fn next_attempt(slot: Option<&Slot>) -> u32 {
    let used = slot.map_or(0, |s| s.executions.len());
    u32::try_from(used).unwrap_or(u32::MAX).saturating_add(1)
}

/// The pause before a slot's next execution: none unless its current one ended in a
/// fault, then what the job's restart policy gives the slot's count of faults.
fn restart_delay(state: &State, job: &Job, slot: Option<&Slot>) -> Duration {
    let job_type = job.spec.job_type;
    let faulted = slot
        .and_then(Slot::current)
        .and_then(|id| state.execution(id))
        .is_some_and(|e| tally::is_fault(job_type, e));
    match slot {
        Some(slot) if faulted => job.spec.restart().delay_after(state.faults(job_type, slot)),
        _ => Duration::ZERO,
    }
}

/// The nodes a slot already used, which its next execution avoids if it can.
fn used_nodes(state: &State, slot: Option<&Slot>) -> BTreeSet<NodeId> {
    slot.into_iter()
        .flat_map(|s| s.executions.iter())
        .filter_map(|id| state.execution(*id))
        .map(|e| e.node.clone())
        .collect()
}

/// Plans one job: each slot in order takes the best node left for it. Slots that may go
/// anywhere can go to any node, so once one finds no node none will, and stopping there
/// keeps slots filled lowest first (which is how the facts attach them).
pub(super) fn plan(problem: Problem<impl Iterator<Item = Want>>) -> Plan {
    let Problem {
        mut candidates,
        wants,
        waiting,
    } = problem;
    let mut plan = Plan::default();
    if candidates.is_empty() {
        if waiting > 0 {
            plan.unplaced
                .push(Unplaced::NoNodeWithRoom { slots: waiting });
        }
        return plan;
    }
    let mut read = 0;
    for want in wants {
        read += 1;
        let node = match &want.slot {
            SlotKey::Pinned(node) if candidates.fits(node) => node.clone(),
            SlotKey::Pinned(node) => {
                plan.unplaced.push(Unplaced::NodeFull(node.clone()));
                continue;
            }
            SlotKey::Counted(_) => match candidates.best(&want.used) {
                Some(node) => node,
                None => {
                    plan.unplaced.push(Unplaced::NoNodeWithRoom {
                        slots: waiting.saturating_sub(read) + 1,
                    });
                    break;
                }
            },
        };
        candidates.take(&node);
        plan.placed.push(Placed {
            slot: want.slot,
            node,
            attempt: want.attempt,
            delay: want.delay,
        });
    }
    plan
}

/// What ruled out each node for the job, for `unplaced` slots that found none: every node
/// is read, so this costs a pass over the fleet, paid only while something waits.
pub(super) fn diagnose(state: &State, job: &Job, unplaced: usize) -> Placement {
    let request = job.spec.request();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut p = Placement {
        unplaced: count(unplaced),
        ..Placement::default()
    };
    for node in state.nodes() {
        p.nodes += 1;
        // Each test only for a node the ones before it let through.
        if node.state == NodeState::Lost {
            p.lost += 1;
        } else if !node.eligible {
            p.ineligible += 1;
        } else if !job.spec.selects(&node.labels) {
            p.selector += 1;
        } else if let Some(constraint) = job
            .spec
            .constraints
            .iter()
            .find(|c| !c.admits(&node.labels))
        {
            *p.constraints.entry(constraint.to_string()).or_default() += 1;
        } else if state.cap_room(node) == 0 {
            p.capped += 1;
        } else if let Some(resource) = node
            .resources
            .and_then(|offered| (offered - state.allocated(&node.id)).short_of(&request))
        {
            *p.exhausted.entry(resource).or_default() += 1;
        } else {
            p.available += 1;
        }
    }
    p
}

/// The nodes a job may use, with what the choice depends on.
pub(super) struct Candidates {
    nodes: BTreeMap<NodeId, Candidate>,
}

struct Candidate {
    connected: bool,
    /// Executions of this job the node can still take.
    room: usize,
    /// Non-terminal executions of any job.
    load: usize,
    /// Non-terminal executions of this job, to spread its replicas.
    job_load: usize,
}

impl Candidates {
    /// The nodes that may run the job at all (not lost, labels matching) and have room
    /// for at least one of its executions: under their cap, its request fitting in what is
    /// left of their resources.
    pub(super) fn new(state: &State, job: &Job) -> Self {
        let request = job.spec.request();
        let nodes = state
            .nodes_with_room()
            .filter(|n| n.takes_new(&job.spec))
            .map(|n| (n, state.fits(n, &request)))
            .filter(|(_, room)| *room > 0)
            .map(|(n, room)| {
                let load = state.load(&n.id);
                let candidate = Candidate {
                    connected: n.state == NodeState::Connected,
                    room,
                    load,
                    job_load: state.live_on(job.id, &n.id),
                };
                (n.id.clone(), candidate)
            })
            .collect();
        Self { nodes }
    }

    /// Whether no node can take anything.
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether this very node can take one more execution now.
    fn fits(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|c| c.room > 0)
    }

    /// The best node for an execution that may go anywhere: connected first, then one the
    /// slot has not used, then fewest executions of this job, then fewest overall, then the
    /// node id, so the same state always gives the same choice.
    fn best(&self, avoid: &BTreeSet<NodeId>) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, c)| c.room > 0)
            .min_by_key(|(id, c)| (!c.connected, avoid.contains(*id), c.job_load, c.load, *id))
            .map(|(id, _)| id.clone())
    }

    /// Accounts for an execution just placed on `node`.
    fn take(&mut self, node: &NodeId) {
        if let Some(c) = self.nodes.get_mut(node) {
            c.room = c.room.saturating_sub(1);
            c.load += 1;
            c.job_load += 1;
        }
    }
}
