//! The decider's state: the facts, the index derived from them, and `evolve`, the only way
//! either changes.
//!
//! Everything here is derived from events, so replaying the event stream from the start
//! rebuilds it exactly. `evolve` trusts the decider that produced the events but never
//! panics on a stream it did not expect: an event about something unknown changes nothing.

use cairn_shared::{CommandId, Event, ExecutionId, JobId, JobType, NodeId, Resources};

use super::facts::{Execution, Facts, Job, Node, Slot};
use super::index::Index;
use super::tally::{self, SlotKey, Tally};

/// What the decider knows, folded from every event so far: what happened ([`Facts`]) and
/// what is derived from it to decide without scanning ([`Index`]).
///
/// Both are made of persistent `imbl` collections, so a clone costs O(1) and shares
/// everything: that is what lets each decision take a private draft of a state holding
/// every execution ever made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    facts: Facts,
    index: Index,
}

/// Folds one event into the state: the facts record it, then the index follows what they
/// say changed.
pub fn evolve(state: &mut State, event: &Event) {
    let recorded = state.facts.record(event, &state.index);
    state.index.follow(&state.facts, &recorded);
}

impl State {
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.facts.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.facts.nodes.values()
    }

    /// The nodes draining, by id.
    pub fn draining(&self) -> impl Iterator<Item = &Node> {
        self.index
            .draining
            .iter()
            .filter_map(|id| self.facts.nodes.get(id))
    }

    /// Nodes below their declared capacity, by id; lost ones included.
    pub fn nodes_with_room(&self) -> impl Iterator<Item = &Node> {
        self.index
            .with_room
            .iter()
            .filter_map(|id| self.facts.nodes.get(id))
    }

    /// The non-terminal executions on a node, whatever their job.
    pub fn active_on(&self, node: &NodeId) -> impl Iterator<Item = ExecutionId> + '_ {
        self.index.active.get(node).into_iter().flatten().copied()
    }

    /// How many executions the node runs or is about to: what its capacity limits.
    pub fn load(&self, node: &NodeId) -> usize {
        self.index.load(node)
    }

    /// Whether the node is below its cap (always, without one).
    pub fn has_room(&self, node: &Node) -> bool {
        self.index.cap_room(node) > 0
    }

    /// How many more executions the node's cap lets it take (`usize::MAX` without one).
    pub fn cap_room(&self, node: &Node) -> usize {
        self.index.cap_room(node)
    }

    /// What the node's non-terminal executions ask of it, summed.
    pub fn allocated(&self, node: &NodeId) -> Resources {
        self.index.allocated(node)
    }

    /// How many executions asking `request` still fit on the node: under its cap, and in
    /// what its declared resources leave.
    pub fn fits(&self, node: &Node, request: &Resources) -> usize {
        let by_resources = node.resources.map_or(u64::MAX, |offered| {
            (offered - self.allocated(&node.id)).fits(request)
        });
        self.cap_room(node)
            .min(usize::try_from(by_resources).unwrap_or(usize::MAX))
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.facts.jobs.get(&id)
    }

    pub fn job_by_name(&self, name: &str) -> Option<&Job> {
        self.index.names.get(name).and_then(|id| self.job(*id))
    }

    /// Jobs, oldest id first.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.facts.jobs.values()
    }

    /// Jobs not in a terminal state, oldest id first.
    pub fn active_jobs(&self) -> impl Iterator<Item = &Job> {
        self.index
            .active_jobs
            .iter()
            .filter_map(|id| self.facts.jobs.get(id))
    }

    /// The first job after `after` (from the oldest with `None`) that reconciling could
    /// make emit something.
    pub fn unsettled_from(&self, after: Option<JobId>) -> Option<JobId> {
        self.index.unsettled_from(after)
    }

    /// Whether reconciling the job could emit anything.
    pub fn is_unsettled(&self, job: &Job) -> bool {
        self.index.is_unsettled(job)
    }

    /// The job's non-terminal executions, every version, oldest first.
    pub fn live(&self, job: JobId) -> impl Iterator<Item = ExecutionId> + '_ {
        self.index
            .live
            .get(&job)
            .into_iter()
            .flat_map(|live| live.executions.iter().copied())
    }

    /// How many of the job's non-terminal executions run on `node`.
    pub fn live_on(&self, job: JobId, node: &NodeId) -> usize {
        self.index
            .live
            .get(&job)
            .and_then(|live| live.on.get(node).copied())
            .unwrap_or(0)
    }

    /// The tally of an active job's current run; none for a terminal job.
    pub fn tally(&self, job: JobId) -> Option<&Tally> {
        self.index.runs.get(&job).map(|run| &run.tally)
    }

    /// The slots of an active job's current run, and the fresh daemon nodes, that need an
    /// execution, in placement order.
    pub fn waiting(&self, job: JobId) -> impl Iterator<Item = SlotKey> + '_ {
        let run = self.facts.jobs.get(&job).map(|j| &j.run);
        let index = self.index.runs.get(&job);
        run.zip(index)
            .into_iter()
            .flat_map(|(run, index)| index.waiting(run))
    }

    /// The slot holding `execution` in its job's current run, while the job is active.
    pub fn slot_of(&self, job: JobId, execution: ExecutionId) -> Option<&SlotKey> {
        self.index.slot_of(job, execution)
    }

    pub fn execution(&self, id: ExecutionId) -> Option<&Execution> {
        self.facts.executions.get(&id)
    }

    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.facts.executions.values()
    }

    /// The ends in a slot that count against its attempts.
    pub fn faults(&self, job_type: JobType, slot: &Slot) -> u32 {
        tally::faults(job_type, slot, &self.facts.executions)
    }

    pub fn is_decided(&self, command: CommandId) -> bool {
        self.facts.decided.contains(&command)
    }

    /// The index derived afresh from the facts: what `evolve` must keep it equal to.
    #[cfg(test)]
    pub(super) fn reindexed(&self) -> (&Index, Index) {
        (&self.index, Index::rebuild(&self.facts))
    }
}
