//! What happened: the facts the events recorded, and nothing derived from them.
//!
//! [`Facts::record`] is the only way they change. It reads the [`Index`] to find a slot
//! without a scan, never writes it, and says what it changed ([`Recorded`]) so the index
//! can follow in one step (see `index.rs`). Every collection is a persistent `imbl` one,
//! nested ones included, so a clone shares everything and costs O(1); a change copies only
//! the path to what it touches. The maps are ordered, and their order is part of
//! determinism (placement breaks ties by node id, jobs are reconciled oldest first).

use std::sync::Arc;

use cairn_shared::Resources;
use cairn_shared::event::{
    ExecutionAssigned, ExecutionStateChanged, JobDeployed, JobStateChanged, NodeRegistered,
};
use cairn_shared::placement::Placement;
use cairn_shared::spec::{HumanDuration, Labels};
use cairn_shared::{
    CommandId, DesiredState, Event, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType,
    NodeId, NodeState, RolloutState, Timestamp,
};
use imbl::{OrdMap, OrdSet, Vector};

use super::index::Index;
use super::tally::SlotKey;

/// Every node, job and execution the events named, and every command decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub(super) nodes: OrdMap<NodeId, Node>,
    pub(super) jobs: OrdMap<JobId, Job>,
    pub(super) executions: OrdMap<ExecutionId, Execution>,
    pub(super) decided: OrdSet<CommandId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub labels: Labels,
    /// The most executions it runs at once, if it set a cap.
    pub capacity: Option<u32>,
    /// What it offers placement, if it declared it; a node that declares nothing is
    /// limited by its cap alone.
    pub resources: Option<Resources>,
    pub state: NodeState,
    /// Whether it takes new work (`cairn node eligibility`); it keeps what it runs either
    /// way. A node is eligible when it first registers, and registering again keeps it.
    pub eligible: bool,
    /// The deadline of its drain, while it drains (`cairn node drain`): ineligible, its
    /// work moving off it.
    pub drain: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub version: u32,
    pub spec: JobSpec,
    /// Every version's spec, the current one's included, by version: what a revert
    /// brings back.
    pub versions: OrdMap<u32, Arc<JobSpec>>,
    pub state: JobState,
    /// The executions of the current version since it last started (deploy or rerun).
    pub run: Run,
    /// Why some of the run's slots wait for a node, as last recorded; only while the job
    /// is active (a terminal state or a new run ends it).
    pub blocked: Option<Placement>,
    /// The current version's rollout, for a job with `update` (see `rollout.rs`).
    pub rollout: Option<Rollout>,
    /// The last version whose rollout succeeded: what `auto_revert` goes back to.
    pub stable: Option<u32>,
}

/// Where a version's rollout stands, as last recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub version: u32,
    pub state: RolloutState,
    pub reason: Option<String>,
    /// Whether its canaries were promoted (`cairn job promote`).
    pub promoted: bool,
}

/// The slots of one run of a job version. A slot is one unit of demand, filled by a chain of
/// executions: attempt 1, then its retries or replacements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// Batch and service: `count` slots, filled lowest first.
    pub counted: Vector<Slot>,
    /// Ops and daemon: at most one slot per node.
    pub pinned: OrdMap<NodeId, Slot>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Oldest first; the last one is the slot's current execution. Shared, so copying a
    /// chunk of slots on a draft's first write to it copies no lists.
    pub executions: Arc<Vec<ExecutionId>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub id: ExecutionId,
    pub job: JobId,
    pub version: u32,
    pub node: NodeId,
    pub attempt: u32,
    /// What it asks of its node, for as long as it has not ended.
    pub request: Resources,
    /// How long its edge waits before starting it (a restart's pause).
    pub delay: Option<HumanDuration>,
    pub state: ExecutionState,
    pub desired: DesiredState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Why it was asked to stop, while it has not ended: what a dispatcher that starts
    /// afresh queues again with the stop.
    pub stop_reason: Option<String>,
    /// Whether its edge found it healthy (a job with `update`), once it said.
    pub healthy: Option<bool>,
}

/// What [`Facts::record`] changed, for the index to read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Recorded {
    /// Nothing any index depends on.
    Nothing,
    /// A node's registration or state.
    Node(NodeId),
    /// A job's state; `run_started` when it left a terminal state (a rerun) or was
    /// deployed, which starts its run afresh.
    Job { job: JobId, run_started: bool },
    /// A new execution, and the slot of its job's current run it joined, if any.
    Placed {
        execution: ExecutionId,
        slot: Option<SlotKey>,
    },
    /// An execution's state or desired state.
    Execution(ExecutionId),
}

impl Facts {
    /// Folds one event in. `index` must be the index of these facts before the event: it
    /// tells a new execution's slot, and whether a late report takes a slot back.
    pub(super) fn record(&mut self, event: &Event, index: &Index) -> Recorded {
        match event {
            Event::NodeRegistered(e) => self.node_registered(e),
            Event::NodeDisconnected(e) => self.set_node_state(&e.node, NodeState::Disconnected),
            Event::NodeReconnected(e) => self.set_node_state(&e.node, NodeState::Connected),
            Event::NodeLost(e) => self.set_node_state(&e.node, NodeState::Lost),
            Event::NodeEligibilityChanged(e) => {
                if let Some(node) = self.nodes.get_mut(&e.node) {
                    node.eligible = e.eligible;
                    // Eligible again is back in service: a drain in progress ends.
                    if e.eligible {
                        node.drain = None;
                    }
                }
                Recorded::Node(e.node.clone())
            }
            Event::NodeDrainStarted(e) => {
                if let Some(node) = self.nodes.get_mut(&e.node) {
                    node.eligible = false;
                    node.drain = Some(e.deadline);
                }
                Recorded::Node(e.node.clone())
            }
            Event::NodeDrained(e) => {
                if let Some(node) = self.nodes.get_mut(&e.node) {
                    node.drain = None;
                }
                Recorded::Node(e.node.clone())
            }
            Event::JobDeployed(e) => self.job_deployed(e),
            Event::JobStateChanged(e) => self.job_state_changed(e),
            Event::JobBlocked(e) => self.job_blocked(e.job, Some(&e.placement)),
            Event::JobUnblocked(e) => self.job_blocked(e.job, None),
            Event::ExecutionAssigned(e) => self.execution_assigned(e, index),
            Event::ExecutionStopRequested(e) => {
                let Some(execution) = self.executions.get_mut(&e.execution) else {
                    return Recorded::Nothing;
                };
                execution.desired = DesiredState::Stopped;
                if !execution.state.is_terminal() {
                    execution.stop_reason = Some(e.reason.clone());
                }
                Recorded::Execution(e.execution)
            }
            Event::ExecutionStateChanged(e) => self.execution_state_changed(e, index),
            Event::ExecutionHealthChanged(e) => {
                let Some(execution) = self.executions.get_mut(&e.execution) else {
                    return Recorded::Nothing;
                };
                execution.healthy = Some(e.healthy);
                Recorded::Execution(e.execution)
            }
            Event::RolloutChanged(e) => {
                let Some(job) = self.jobs.get_mut(&e.job).filter(|j| j.version == e.version) else {
                    return Recorded::Nothing;
                };
                if e.state == RolloutState::Succeeded {
                    job.stable = Some(e.version);
                }
                let promoted = job
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.version == e.version && r.promoted);
                job.rollout = Some(Rollout {
                    version: e.version,
                    state: e.state,
                    reason: e.reason.clone(),
                    promoted,
                });
                Recorded::Job {
                    job: e.job,
                    run_started: false,
                }
            }
            Event::RolloutPromoted(e) => {
                let rollout = self
                    .jobs
                    .get_mut(&e.job)
                    .and_then(|j| j.rollout.as_mut())
                    .filter(|r| r.version == e.version);
                let Some(rollout) = rollout else {
                    return Recorded::Nothing;
                };
                rollout.promoted = true;
                Recorded::Job {
                    job: e.job,
                    run_started: false,
                }
            }
            Event::CommandAccepted(e) => {
                self.decided.insert(e.command);
                Recorded::Nothing
            }
            Event::CommandRejected(e) => {
                self.decided.insert(e.command);
                Recorded::Nothing
            }
            Event::InputRejected(_) => Recorded::Nothing,
        }
    }

    fn node_registered(&mut self, e: &NodeRegistered) -> Recorded {
        let node = self.nodes.entry(e.node.clone()).or_insert_with(|| Node {
            id: e.node.clone(),
            labels: Labels::new(),
            capacity: None,
            resources: None,
            state: NodeState::Connected,
            eligible: true,
            drain: None,
        });
        node.labels = e.labels.clone();
        node.capacity = e.capacity;
        node.resources = e.resources;
        Recorded::Node(e.node.clone())
    }

    fn set_node_state(&mut self, id: &NodeId, to: NodeState) -> Recorded {
        if let Some(node) = self.nodes.get_mut(id) {
            node.state = to;
        }
        Recorded::Node(id.clone())
    }

    fn job_deployed(&mut self, e: &JobDeployed) -> Recorded {
        let run = Run::start(&e.spec, &self.nodes);
        let earlier = self.jobs.get(&e.job);
        let stable = earlier.and_then(|job| job.stable);
        let mut versions = earlier.map(|job| job.versions.clone()).unwrap_or_default();
        versions.insert(e.version, Arc::new(e.spec.clone()));
        let job = Job {
            id: e.job,
            name: e.spec.name.clone(),
            version: e.version,
            spec: e.spec.clone(),
            versions,
            state: JobState::Queued,
            run,
            blocked: None,
            rollout: None,
            stable,
        };
        self.jobs.insert(e.job, job);
        Recorded::Job {
            job: e.job,
            run_started: true,
        }
    }

    fn job_state_changed(&mut self, e: &JobStateChanged) -> Recorded {
        let Some(job) = self.jobs.get_mut(&e.job) else {
            return Recorded::Nothing;
        };
        // Leaving a terminal state is a rerun: the version starts again with fresh demand.
        let rerun = job.state.is_terminal() && !e.state.is_terminal();
        job.state = e.state;
        if rerun {
            job.run = Run::start(&job.spec, &self.nodes);
        }
        if rerun || e.state.is_terminal() {
            job.blocked = None;
        }
        Recorded::Job {
            job: e.job,
            run_started: rerun,
        }
    }

    fn job_blocked(&mut self, id: JobId, placement: Option<&Placement>) -> Recorded {
        let Some(job) = self.jobs.get_mut(&id).filter(|j| !j.state.is_terminal()) else {
            return Recorded::Nothing;
        };
        job.blocked = placement.cloned();
        Recorded::Job {
            job: id,
            run_started: false,
        }
    }

    fn execution_assigned(&mut self, e: &ExecutionAssigned, index: &Index) -> Recorded {
        if self.executions.contains_key(&e.execution) {
            return Recorded::Nothing;
        }
        self.executions.insert(
            e.execution,
            Execution {
                id: e.execution,
                job: e.job,
                version: e.version,
                node: e.node.clone(),
                attempt: e.attempt,
                request: e.resources.unwrap_or(Resources::REQUEST_DEFAULT),
                delay: e.delay,
                state: ExecutionState::Pending,
                desired: DesiredState::Running,
                exit_code: None,
                reason: None,
                stop_reason: None,
                healthy: None,
            },
        );
        let slot = self.jobs.get_mut(&e.job).and_then(|job| {
            let key = index.slot_for(job, e, &self.executions)?;
            job.run.attach(&key, e.execution);
            Some(key)
        });
        Recorded::Placed {
            execution: e.execution,
            slot,
        }
    }

    fn execution_state_changed(&mut self, e: &ExecutionStateChanged, index: &Index) -> Recorded {
        let Some(execution) = self.executions.get(&e.execution) else {
            return Recorded::Nothing;
        };
        let takes_back = self.jobs.get(&execution.job).and_then(|job| {
            let key = index.slot_of(job.id, e.execution)?;
            job.run
                .reinstates(job, key, execution, e.state, &self.executions)
                .then(|| key.clone())
        });
        let Some(execution) = self.executions.get_mut(&e.execution) else {
            return Recorded::Nothing;
        };
        if !execution.state.is_terminal() && e.state.is_terminal() {
            execution.stop_reason = None;
        }
        execution.state = e.state;
        execution.exit_code = e.exit_code;
        execution.reason = e.reason.clone();
        let job = execution.job;
        if let (Some(key), Some(job)) = (takes_back, self.jobs.get_mut(&job)) {
            job.run.reinstate(&key, e.execution);
        }
        Recorded::Execution(e.execution)
    }
}

impl Node {
    /// Whether the node's labels meet the job's selector and constraints.
    pub fn matches(&self, spec: &JobSpec) -> bool {
        spec.admits(&self.labels)
    }

    /// Whether the node may run the job at all: not lost, labels matching. Connectivity
    /// does not matter: an assignment waits on the node's subject until the node takes it.
    pub fn may_run(&self, spec: &JobSpec) -> bool {
        self.state != NodeState::Lost && self.matches(spec)
    }

    /// Whether the node takes new work of the job now: it may run it and is eligible.
    pub fn takes_new(&self, spec: &JobSpec) -> bool {
        self.eligible && self.may_run(spec)
    }

    /// Whether its work is being moved off it (`cairn node drain`).
    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }
}

impl Run {
    /// The slots a run of `spec` starts with. Ops targets are fixed here, from the nodes
    /// known at that moment, so replaying the same events fixes the same set.
    fn start(spec: &JobSpec, nodes: &OrdMap<NodeId, Node>) -> Self {
        let mut run = Run::default();
        match spec.job_type {
            JobType::Batch | JobType::Service => {
                run.counted = std::iter::repeat_n(Slot::default(), spec.count() as usize).collect();
            }
            JobType::Ops => {
                run.pinned = nodes
                    .values()
                    .filter(|n| n.takes_new(spec))
                    .map(|n| (n.id.clone(), Slot::default()))
                    .collect();
            }
            JobType::Daemon => {}
        }
        run
    }

    /// The slot at `key`, if the run has one there.
    pub fn slot(&self, key: &SlotKey) -> Option<&Slot> {
        match key {
            SlotKey::Counted(index) => self.counted.get(*index),
            SlotKey::Pinned(node) => self.pinned.get(node),
        }
    }

    /// Every slot's key: counted ones lowest first, then pinned ones by node.
    pub fn keys(&self) -> impl Iterator<Item = SlotKey> + '_ {
        (0..self.counted.len())
            .map(SlotKey::Counted)
            .chain(self.pinned.keys().cloned().map(SlotKey::Pinned))
    }

    /// Puts a new execution at the end of the slot at `key`, creating a pinned slot, or the
    /// counted slot just past the last.
    fn attach(&mut self, key: &SlotKey, execution: ExecutionId) {
        let slot = match key {
            SlotKey::Pinned(node) => self.pinned.entry(node.clone()).or_default(),
            SlotKey::Counted(index) => {
                if *index >= self.counted.len() {
                    self.counted.push_back(Slot::default());
                }
                let last = self.counted.len() - 1;
                &mut self.counted[(*index).min(last)]
            }
        };
        Arc::make_mut(&mut slot.executions).push(execution);
    }

    /// Whether `execution`, lost until now, in the slot at `key` and reported `to` by its
    /// edge, takes its slot back from whatever replaced it. It does when its job is active,
    /// it is still meant to run, is no longer its slot's current execution, and either runs
    /// again or (batch) completed, unless the replacement completed the batch slot already.
    /// The decider stops what it takes the slot from; `record` moves it to the end of the
    /// slot's chain, where the current execution is. One rule for both, so the log replays
    /// to the same slots.
    pub(super) fn reinstates(
        &self,
        job: &Job,
        key: &SlotKey,
        execution: &Execution,
        to: ExecutionState,
        executions: &OrdMap<ExecutionId, Execution>,
    ) -> bool {
        let job_type = job.spec.job_type;
        let comes_back = execution.state == ExecutionState::Lost
            && execution.desired == DesiredState::Running
            && (!to.is_terminal()
                || (to == ExecutionState::Completed && job_type == JobType::Batch));
        if !comes_back || job_type == JobType::Ops || job.state.is_terminal() {
            return false;
        }
        let Some(slot) = self.slot(key) else {
            return false;
        };
        match slot.current().and_then(|id| executions.get(&id)) {
            Some(current) if current.id == execution.id => false,
            Some(current) => {
                !(job_type == JobType::Batch && current.state == ExecutionState::Completed)
            }
            None => false,
        }
    }

    /// Makes `execution` the current execution of the slot at `key` again (see
    /// [`Run::reinstates`]).
    fn reinstate(&mut self, key: &SlotKey, execution: ExecutionId) {
        let slot = match key {
            SlotKey::Counted(index) => self.counted.get_mut(*index),
            SlotKey::Pinned(node) => self.pinned.get_mut(node),
        };
        if let Some(slot) = slot {
            let chain = Arc::make_mut(&mut slot.executions);
            chain.retain(|id| *id != execution);
            chain.push(execution);
        }
    }
}

impl Slot {
    pub fn current(&self) -> Option<ExecutionId> {
        self.executions.last().copied()
    }

    /// Whether the slot takes a next execution, budget aside: it is empty, or its current
    /// execution ended in a way this job type follows up. The scheduler and `record` share
    /// this rule, so a retry event lands on the slot it was decided for.
    pub fn is_open(
        &self,
        job_type: JobType,
        state_of: impl Fn(ExecutionId) -> Option<ExecutionState>,
    ) -> bool {
        let Some(current) = self.current() else {
            return true;
        };
        match state_of(current) {
            None => false,
            Some(state) if !state.is_terminal() => false,
            Some(ExecutionState::Completed) => {
                matches!(job_type, JobType::Service | JobType::Daemon)
            }
            Some(_) => job_type != JobType::Ops,
        }
    }
}
