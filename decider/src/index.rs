//! What the decider derives from the facts so that a decision reads what it needs without
//! scanning them: which nodes have room, what runs where, which jobs have work, and each
//! active run's slots by status.
//!
//! [`Index::follow`] is the one place it changes: after each fact, with what the fact
//! changed ([`Recorded`]), it reads again exactly what depends on that. [`Index::rebuild`]
//! derives the same index from the facts alone, reading everything; the tests check after
//! every decision that the two agree, so a fact that forgets to update something is caught
//! where it happens.

use std::ops::Bound;

use cairn_shared::{DesiredState, ExecutionId, JobId, JobType, NodeId, Resources, RolloutState};
use imbl::{OrdMap, OrdSet, Vector};

use super::facts::{Execution, Facts, Job, Node, Recorded, Run};
use super::tally::{SlotKey, Status, Tally, classify};

/// The index of a [`Facts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// Each job by name: a name is deployed as one job, whose versions follow.
    pub(super) names: OrdMap<String, JobId>,
    /// The non-terminal executions on each known node, whatever their job: what capacity
    /// limits.
    pub(super) active: OrdMap<NodeId, OrdSet<ExecutionId>>,
    /// What the non-terminal executions on each node ask of it, summed.
    pub(super) allocated: OrdMap<NodeId, Resources>,
    /// The nodes below their cap, lost or not: the only ones placement can use, so a job
    /// waiting on a fleet at its caps learns it without reading every node. Whether a
    /// job's request fits in what is left of a node's resources is placement's question.
    pub(super) with_room: OrdSet<NodeId>,
    /// The nodes draining: the few whose drain the shell times and the decider follows.
    pub(super) draining: OrdSet<NodeId>,
    /// The non-terminal executions of each job, every version: what a stop must reach.
    pub(super) live: OrdMap<JobId, Live>,
    /// The jobs not in a terminal state: what the scheduler reconciles, without reading
    /// every job ever deployed.
    pub(super) active_jobs: OrdSet<JobId>,
    /// The active jobs the scheduler may have work for: demand to place, a daemon
    /// execution on a node that no longer matches, or a state the run's tally no longer
    /// agrees with. Reconciling any other job emits nothing, so placement visits only these.
    pub(super) unsettled: OrdSet<JobId>,
    /// Each active job's current run, read slot by slot. A run that ends is started
    /// afresh before it is read again, so terminal jobs have none.
    pub(super) runs: OrdMap<JobId, RunIndex>,
}

/// A job's non-terminal executions, and how many of them each node runs, so placement
/// spreads the job without counting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub executions: OrdSet<ExecutionId>,
    pub on: OrdMap<NodeId, usize>,
}

/// One active run, read slot by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunIndex {
    /// The lowest counted slot that never had an execution (or the count of slots when
    /// every one had). First attempts fill the lowest empty slot and nothing empties a
    /// slot, so the empty ones are always the slots from here up: a first attempt's slot
    /// is found without a scan, which would make replaying a run quadratic in its `count`.
    first_empty: usize,
    /// The slot of each execution placed in this run, so a fact about an execution reads
    /// its slot again without a search.
    slot_of: OrdMap<ExecutionId, SlotKey>,
    /// What each slot needs, as of the last fact about it, as counted in `tally`.
    counted: Vector<Status>,
    pinned: OrdMap<NodeId, Status>,
    /// Every slot's status, counted, and the slots the scheduler has to visit.
    pub tally: Tally,
}

impl Index {
    /// The index of `facts`, derived by reading every node, job and execution.
    #[cfg(test)]
    pub(super) fn rebuild(facts: &Facts) -> Self {
        let mut index = Index::default();
        for job in facts.jobs.values() {
            index.names.insert(job.name.clone(), job.id);
            index.live.insert(job.id, Live::default());
            if !job.state.is_terminal() {
                index.active_jobs.insert(job.id);
                index
                    .runs
                    .insert(job.id, RunIndex::build(job, &job.run, facts));
            }
        }
        for node in facts.nodes.values() {
            index.active.insert(node.id.clone(), OrdSet::new());
            index
                .allocated
                .insert(node.id.clone(), Resources::default());
        }
        for e in facts.executions.values().filter(|e| !e.state.is_terminal()) {
            if let Some(active) = index.active.get_mut(&e.node) {
                active.insert(e.id);
            }
            if let Some(allocated) = index.allocated.get_mut(&e.node) {
                *allocated = *allocated + e.request;
            }
            if let Some(live) = index.live.get_mut(&e.job) {
                live.add(e);
            }
        }
        for node in facts.nodes.values() {
            index.note_room(node);
            if node.draining() {
                index.draining.insert(node.id.clone());
            }
        }
        for job in facts.jobs.values() {
            index.note_unsettled(job);
        }
        index
    }

    /// Follows one fact: reads again what depends on what `recorded` says changed.
    pub(super) fn follow(&mut self, facts: &Facts, recorded: &Recorded) {
        match recorded {
            Recorded::Nothing => {}
            Recorded::Node(id) => self.node_changed(facts, id),
            Recorded::Job { job, run_started } => self.job_changed(facts, *job, *run_started),
            Recorded::Placed { execution, slot } => self.placed(facts, *execution, slot.as_ref()),
            Recorded::Execution(id) => self.execution_changed(facts, *id),
        }
    }

    /// A node's facts decide its room, whether its pinned slots can be filled, which
    /// daemons may use it and whether the service replicas it runs move, so every active
    /// run reads what it has on that node again. Node facts are rare.
    fn node_changed(&mut self, facts: &Facts, id: &NodeId) {
        let Some(node) = facts.nodes.get(id) else {
            return;
        };
        self.active.entry(id.clone()).or_default();
        self.allocated.entry(id.clone()).or_default();
        self.note_room(node);
        if node.draining() {
            self.draining.insert(id.clone());
        } else {
            self.draining.remove(id);
        }
        let running_here: Vec<&Execution> = self
            .active
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|e| facts.executions.get(e))
            .collect();
        for e in running_here {
            let (Some(run), Some(job)) = (self.runs.get_mut(&e.job), facts.jobs.get(&e.job)) else {
                continue;
            };
            if let Some(key @ SlotKey::Counted(_)) = run.slot_of.get(&e.id).cloned() {
                run.refresh(&key, job, facts);
            }
        }
        let key = SlotKey::Pinned(id.clone());
        let active: Vec<JobId> = self.active_jobs.iter().copied().collect();
        for job in active.iter().filter_map(|id| facts.jobs.get(id)) {
            if let Some(run) = self.runs.get_mut(&job.id) {
                run.refresh(&key, job, facts);
            }
            self.note_unsettled(job);
        }
    }

    fn job_changed(&mut self, facts: &Facts, id: JobId, run_started: bool) {
        let Some(job) = facts.jobs.get(&id) else {
            return;
        };
        self.names.insert(job.name.clone(), id);
        self.live.entry(id).or_default();
        if job.state.is_terminal() {
            self.active_jobs.remove(&id);
            self.runs.remove(&id);
        } else {
            self.active_jobs.insert(id);
            if run_started {
                self.runs.insert(id, RunIndex::build(job, &job.run, facts));
            }
        }
        self.note_unsettled(job);
    }

    fn placed(&mut self, facts: &Facts, id: ExecutionId, slot: Option<&SlotKey>) {
        let Some(execution) = facts.executions.get(&id) else {
            return;
        };
        self.execution_live(facts, execution);
        let Some(job) = facts.jobs.get(&execution.job) else {
            return;
        };
        if let (Some(key), Some(run)) = (slot, self.runs.get_mut(&job.id)) {
            run.slot_of.insert(id, key.clone());
            if *key == SlotKey::Counted(run.first_empty) {
                run.first_empty = first_empty_from(&job.run, run.first_empty);
            }
            run.refresh(key, job, facts);
            self.note_unsettled(job);
        }
    }

    fn execution_changed(&mut self, facts: &Facts, id: ExecutionId) {
        let Some(execution) = facts.executions.get(&id) else {
            return;
        };
        self.execution_live(facts, execution);
        let Some(job) = facts.jobs.get(&execution.job) else {
            return;
        };
        if let Some(run) = self.runs.get_mut(&job.id)
            && let Some(key) = run.slot_of.get(&id).cloned()
        {
            run.refresh(&key, job, facts);
            self.note_unsettled(job);
        }
    }

    /// Counts the execution on its node and in its job while it has not ended (a late
    /// report can make a lost one run again), and not after.
    fn execution_live(&mut self, facts: &Facts, e: &Execution) {
        let live = !e.state.is_terminal();
        if let Some(active) = self.active.get_mut(&e.node) {
            let changed = if live {
                active.insert(e.id).is_none()
            } else {
                active.remove(&e.id).is_some()
            };
            if changed {
                if let Some(allocated) = self.allocated.get_mut(&e.node) {
                    *allocated = if live {
                        *allocated + e.request
                    } else {
                        *allocated - e.request
                    };
                }
                if let Some(node) = facts.nodes.get(&e.node) {
                    self.note_room(node);
                }
            }
        }
        if let Some(job) = self.live.get_mut(&e.job) {
            if live {
                job.add(e);
            } else {
                job.remove(e);
            }
        }
    }

    /// Keeps `with_room` in step after the node's cap or load changed.
    fn note_room(&mut self, node: &Node) {
        if self.below_cap(node) {
            self.with_room.insert(node.id.clone());
        } else {
            self.with_room.remove(&node.id);
        }
    }

    /// Keeps `unsettled` in step after the job's run or state changed.
    fn note_unsettled(&mut self, job: &Job) {
        if self.is_unsettled(job) {
            self.unsettled.insert(job.id);
        } else {
            self.unsettled.remove(&job.id);
        }
    }

    /// Whether reconciling the job could emit anything (see `unsettled`).
    pub(super) fn is_unsettled(&self, job: &Job) -> bool {
        let Some(tally) = self.runs.get(&job.id).map(|r| &r.tally) else {
            return false;
        };
        !job.state.is_terminal()
            && (tally.wants_placement()
                || (job.spec.job_type == JobType::Daemon && !tally.unmatched.is_empty())
                || tally.verdict(job.spec.job_type).state() != job.state
                || job.blocked.is_some()
                // A rollout in progress or failed sets the state from more than the tally
                // (what an earlier version still runs), and a rolling one takes steps.
                || job.rollout.as_ref().is_some_and(|r| {
                    r.version == job.version
                        && matches!(r.state, RolloutState::Rolling | RolloutState::Failed)
                }))
    }

    /// The non-terminal executions on a node.
    pub(super) fn load(&self, node: &NodeId) -> usize {
        self.active.get(node).map_or(0, OrdSet::len)
    }

    /// How many more executions the node's cap lets it take (unbounded without a cap).
    pub(super) fn cap_room(&self, node: &Node) -> usize {
        node.capacity.map_or(usize::MAX, |cap| {
            (cap as usize).saturating_sub(self.load(&node.id))
        })
    }

    fn below_cap(&self, node: &Node) -> bool {
        self.cap_room(node) > 0
    }

    /// What the node's non-terminal executions ask of it.
    pub(super) fn allocated(&self, node: &NodeId) -> Resources {
        self.allocated.get(node).copied().unwrap_or_default()
    }

    /// The first unsettled job after `after` (from the oldest with `None`).
    pub(super) fn unsettled_from(&self, after: Option<JobId>) -> Option<JobId> {
        match after {
            None => self.unsettled.get_min().copied(),
            Some(after) => self
                .unsettled
                .range((Bound::Excluded(after), Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    /// The slot holding `execution` in its job's active run.
    pub(super) fn slot_of(&self, job: JobId, execution: ExecutionId) -> Option<&SlotKey> {
        self.runs.get(&job)?.slot_of.get(&execution)
    }

    /// The slot a new execution of the job's current version joins: by node for ops and
    /// daemon; for batch and service the lowest open slot whose chain it continues
    /// (`attempt` = chain length + 1). `None` when the job has no active run or the
    /// execution is of another version.
    pub(super) fn slot_for(
        &self,
        job: &Job,
        e: &cairn_shared::event::ExecutionAssigned,
        executions: &OrdMap<ExecutionId, Execution>,
    ) -> Option<SlotKey> {
        if job.version != e.version {
            return None;
        }
        let index = self.runs.get(&job.id)?;
        let job_type = job.spec.job_type;
        let run = &job.run;
        Some(match job_type {
            JobType::Ops | JobType::Daemon => SlotKey::Pinned(e.node.clone()),
            JobType::Batch | JobType::Service => {
                let prior = e.attempt.saturating_sub(1) as usize;
                let found = if prior == 0 {
                    // An empty slot is always open, and the lowest one is `first_empty`.
                    let lowest = index.first_empty;
                    run.counted
                        .get(lowest)
                        .is_some_and(|s| s.executions.is_empty())
                        .then_some(lowest)
                } else {
                    // A used counted slot is open exactly when it waits or is exhausted,
                    // and the tally lists those: no scan of the run.
                    // A moving slot takes its replacement beside the execution that runs.
                    let state_of = |id| executions.get(&id).map(|e: &Execution| e.state);
                    let continues = |slot: &usize| {
                        run.counted.get(*slot).is_some_and(|s| {
                            s.executions.len() == prior
                                && (s.is_open(job_type, state_of)
                                    || index.counted.get(*slot) == Some(&Status::Moving))
                        })
                    };
                    let lowest = |keys: &OrdSet<SlotKey>| {
                        keys.iter()
                            .filter_map(|key| match key {
                                SlotKey::Counted(slot) => Some(*slot),
                                SlotKey::Pinned(_) => None,
                            })
                            .find(continues)
                    };
                    let waiting = lowest(&index.tally.waiting);
                    let exhausted = lowest(&index.tally.exhausted);
                    waiting.into_iter().chain(exhausted).min()
                };
                // None is not what this decider emits; keep the execution visible in a
                // slot of its own rather than drop it.
                SlotKey::Counted(found.unwrap_or(run.counted.len()))
            }
        })
    }
}

impl Live {
    fn add(&mut self, e: &Execution) {
        if self.executions.insert(e.id).is_none() {
            *self.on.entry(e.node.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, e: &Execution) {
        if self.executions.remove(&e.id).is_none() {
            return;
        }
        if let Some(count) = self.on.get_mut(&e.node) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.on.remove(&e.node);
            }
        }
    }
}

/// The first counted slot from `from` on that never had an execution.
fn first_empty_from(run: &Run, from: usize) -> usize {
    (from..run.counted.len())
        .find(|slot| run.counted[*slot].executions.is_empty())
        .unwrap_or(run.counted.len())
}

impl RunIndex {
    /// Reads every slot of `run`, and for a daemon every node. A run starts this way, and
    /// [`Index::rebuild`] reads runs this way.
    fn build(job: &Job, run: &Run, facts: &Facts) -> Self {
        let mut index = RunIndex {
            first_empty: first_empty_from(run, 0),
            counted: std::iter::repeat_n(Status::default(), run.counted.len()).collect(),
            ..RunIndex::default()
        };
        let daemon_nodes = facts
            .nodes
            .keys()
            .filter(|_| job.spec.job_type == JobType::Daemon)
            .filter(|id| !run.pinned.contains_key(*id))
            .cloned()
            .map(SlotKey::Pinned);
        let keys: Vec<SlotKey> = run.keys().chain(daemon_nodes).collect();
        for key in keys {
            for execution in run.slot(&key).iter().flat_map(|s| s.executions.iter()) {
                index.slot_of.insert(*execution, key.clone());
            }
            index.add(&key, job, facts);
        }
        index
    }

    /// The slots and fresh daemon nodes that need an execution, in placement order. The
    /// counted slots never used are not listed in the tally; they come between the listed
    /// slots below `first_empty` and any pushed past the run's count.
    pub(super) fn waiting<'r>(&'r self, run: &'r Run) -> impl Iterator<Item = SlotKey> + 'r {
        let split = SlotKey::Counted(self.first_empty);
        let never_used = (self.first_empty..run.counted.len())
            .take_while(|slot| run.counted[*slot].executions.is_empty())
            .map(SlotKey::Counted);
        let fresh = self.tally.fresh.iter().cloned().map(SlotKey::Pinned);
        self.tally
            .waiting
            .range(..split.clone())
            .cloned()
            .chain(never_used)
            .chain(self.tally.waiting.range(split..).cloned())
            .chain(fresh)
    }

    /// Reads the slot at `key` again after something it depends on changed.
    fn refresh(&mut self, key: &SlotKey, job: &Job, facts: &Facts) {
        self.forget(key);
        self.add(key, job, facts);
    }

    /// Takes the slot at `key` (or the fresh daemon node it names) out of the tally.
    fn forget(&mut self, key: &SlotKey) {
        if let SlotKey::Pinned(node) = key {
            self.tally.fresh.remove(node);
            self.tally.unmatched.remove(node);
        }
        let status = match key {
            SlotKey::Counted(slot) => self.counted.get(*slot).copied(),
            SlotKey::Pinned(node) => self.pinned.get(node).copied(),
        };
        if let Some(status) = status {
            self.tally.remove(key, status);
        }
    }

    /// Reads the slot at `key` and counts it in the tally. A daemon's node without a slot is
    /// fresh demand if the daemon may run there.
    fn add(&mut self, key: &SlotKey, job: &Job, facts: &Facts) {
        let spec = &job.spec;
        let job_type = spec.job_type;
        let node = match key {
            SlotKey::Counted(_) => None,
            SlotKey::Pinned(id) => Some((id, facts.nodes.get(id))),
        };
        // A daemon asks nothing of a node that takes no new work; an ops target that stops
        // taking it waits for it, as for a node at its cap, rather than failing.
        let usable = node.is_none_or(|(_, n)| {
            n.is_some_and(|n| match job_type {
                JobType::Daemon => n.takes_new(spec),
                _ => n.may_run(spec),
            })
        });
        let Some(slot) = job.run.slot(key) else {
            if let (Some((id, _)), JobType::Daemon, true) = (node, job_type, usable) {
                self.tally.fresh.insert(id.clone());
            }
            return;
        };
        let executions = &facts.executions;
        let draining = |id: &NodeId| facts.nodes.get(id).is_some_and(Node::draining);
        let status = classify(
            job_type,
            slot,
            usable,
            spec.replaces_lost(),
            spec.restart().executions(),
            executions,
            draining,
        );
        match key {
            SlotKey::Counted(index) => {
                while self.counted.len() <= *index {
                    self.counted.push_back(Status::default());
                }
                self.counted.set(*index, status);
            }
            SlotKey::Pinned(node) => {
                self.pinned.insert(node.clone(), status);
            }
        }
        self.tally.add(key, status, !slot.executions.is_empty());
        let running = slot
            .current()
            .and_then(|id| executions.get(&id))
            .is_some_and(|e| !e.state.is_terminal() && e.desired == DesiredState::Running);
        let unmatched = node.filter(|(_, n)| {
            job_type == JobType::Daemon && running && n.is_some_and(|n| !n.matches(spec))
        });
        if let Some((id, _)) = unmatched {
            self.tally.unmatched.insert(id.clone());
        }
    }
}
