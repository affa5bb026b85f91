//! The decider's state and `evolve`, the only way it changes.
//!
//! Everything here is derived from events, so replaying the event stream from the start
//! rebuilds it exactly. `evolve` trusts the decider that produced the events but never
//! panics on a stream it did not expect: an event about something unknown changes nothing.

use std::ops::Bound;
use std::sync::Arc;

use cairn_shared::event::{
    ExecutionAssigned, ExecutionStateChanged, JobDeployed, JobStateChanged, NodeRegistered,
};
use cairn_shared::spec::Labels;
use cairn_shared::{
    CommandId, DesiredState, Event, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType,
    NodeId, NodeState,
};
use imbl::{OrdMap, OrdSet, Vector};

use super::tally::{SlotKey, Status, Tally, classify};

/// What the decider knows, folded from every event so far.
///
/// Every collection in it, nested ones included, is a persistent `imbl` collection, so a
/// clone shares everything and costs O(1); a change copies only the path to what it touches.
/// That is what lets each decision take a private draft of a state holding every execution
/// ever made. The maps are ordered, and their order is part of determinism (placement breaks
/// ties by node id, jobs are reconciled oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    nodes: OrdMap<NodeId, Node>,
    /// The nodes below their declared capacity, lost or not: the only ones placement can
    /// use, so a job waiting on a full fleet learns it without reading every node.
    with_room: OrdSet<NodeId>,
    jobs: OrdMap<JobId, Job>,
    /// The jobs not in a terminal state: what the scheduler reconciles, without reading
    /// every job ever deployed.
    active_jobs: OrdSet<JobId>,
    /// The active jobs the scheduler may have work for: demand to place, a daemon
    /// execution on a node that no longer matches, or a state the run's tally no longer
    /// agrees with. Reconciling any other job emits nothing, so placement visits only these.
    unsettled: OrdSet<JobId>,
    names: OrdMap<String, JobId>,
    executions: OrdMap<ExecutionId, Execution>,
    decided: OrdSet<CommandId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub labels: Labels,
    pub capacity: u32,
    pub state: NodeState,
    /// Non-terminal executions on this node, whatever their job: what capacity limits.
    pub active: OrdSet<ExecutionId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub version: u32,
    pub spec: JobSpec,
    pub state: JobState,
    /// The executions of the current version since it last started (deploy or rerun).
    pub run: Run,
    /// Non-terminal executions of every version: what a stop must reach.
    pub live: OrdSet<ExecutionId>,
    /// How many of `live` each node runs, so placement spreads the job without counting.
    pub live_on: OrdMap<NodeId, usize>,
}

/// The slots of one run of a job version. A slot is one unit of demand, filled by a chain of
/// executions: attempt 1, then its retries or replacements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// Batch and service: `count` slots, filled lowest first.
    pub counted: Vector<Slot>,
    /// Ops and daemon: at most one slot per node.
    pub pinned: OrdMap<NodeId, Slot>,
    /// The lowest counted slot that never had an execution. First attempts fill the lowest
    /// empty slot and nothing empties a slot, so the empty ones are always the slots from
    /// here up to the run's `count`: `evolve` finds a first attempt's slot without a scan,
    /// which would make replaying a run quadratic in its `count`.
    first_empty: usize,
    /// The slot of each execution placed in this run, so a fact about an execution reads
    /// its slot again without a search.
    slot_of: OrdMap<ExecutionId, SlotKey>,
    /// Every slot's status, counted, and the slots the scheduler has to visit.
    pub tally: Tally,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Oldest first; the last one is the slot's current execution. Shared, so copying a
    /// chunk of slots on a draft's first write to it copies no lists.
    pub executions: Arc<Vec<ExecutionId>>,
    /// What the slot needs, as of the last fact about it; counted in its run's tally.
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub id: ExecutionId,
    pub job: JobId,
    pub version: u32,
    pub node: NodeId,
    pub attempt: u32,
    pub state: ExecutionState,
    pub desired: DesiredState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Why it was asked to stop, while it has not ended: what a dispatcher that starts
    /// afresh queues again with the stop.
    pub stop_reason: Option<String>,
}

impl State {
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Nodes below their declared capacity, by id; lost ones included.
    pub fn nodes_with_room(&self) -> impl Iterator<Item = &Node> {
        self.with_room.iter().filter_map(|id| self.nodes.get(id))
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn job_by_name(&self, name: &str) -> Option<&Job> {
        self.names.get(name).and_then(|id| self.jobs.get(id))
    }

    /// Jobs, oldest id first.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Jobs not in a terminal state, oldest id first.
    pub fn active_jobs(&self) -> impl Iterator<Item = &Job> {
        self.active_jobs.iter().filter_map(|id| self.jobs.get(id))
    }

    /// The first unsettled job after `after` (from the oldest with `None`).
    pub fn unsettled_from(&self, after: Option<JobId>) -> Option<JobId> {
        match after {
            None => self.unsettled.get_min().copied(),
            Some(after) => self
                .unsettled
                .range((Bound::Excluded(after), Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    pub fn execution(&self, id: ExecutionId) -> Option<&Execution> {
        self.executions.get(&id)
    }

    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values()
    }

    pub fn is_decided(&self, command: CommandId) -> bool {
        self.decided.contains(&command)
    }

    /// The job's run with its tally rebuilt from every slot: what `evolve` must keep it equal to.
    #[cfg(test)]
    pub(super) fn retallied(&self, job: &Job) -> Run {
        let mut run = job.run.clone();
        run.retally(&job.spec, &self.nodes, &self.executions);
        run
    }
}

impl Node {
    /// Label equality on every selector pair; an empty selector matches every node.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }

    pub fn has_room(&self) -> bool {
        self.active.len() < self.capacity as usize
    }

    /// Whether the node may run the job at all: not lost, labels matching. Connectivity
    /// does not matter: an assignment waits on the node's subject until the node takes it.
    pub fn may_run(&self, spec: &JobSpec) -> bool {
        self.state != NodeState::Lost && self.matches(&spec.selector)
    }
}

impl Job {
    /// Whether reconciling the job could emit anything (see `State::unsettled`).
    pub fn is_unsettled(&self) -> bool {
        let tally = &self.run.tally;
        !self.state.is_terminal()
            && (tally.wants_placement()
                || (self.spec.job_type == JobType::Daemon && !tally.unmatched.is_empty())
                || tally.verdict(self.spec.job_type).state() != self.state)
    }

    fn add_live(&mut self, execution: ExecutionId, node: &NodeId) {
        if self.live.insert(execution).is_none() {
            *self.live_on.entry(node.clone()).or_default() += 1;
        }
    }

    fn remove_live(&mut self, execution: ExecutionId, node: &NodeId) {
        if self.live.remove(&execution).is_none() {
            return;
        }
        if let Some(count) = self.live_on.get_mut(node) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.live_on.remove(node);
            }
        }
    }
}

impl Run {
    /// The demand a run of `spec` starts with. Ops targets are fixed here, from the nodes
    /// known at that moment, so replaying the same events fixes the same set.
    fn start(
        spec: &JobSpec,
        nodes: &OrdMap<NodeId, Node>,
        executions: &OrdMap<ExecutionId, Execution>,
    ) -> Self {
        let mut run = Run::default();
        match spec.job_type {
            JobType::Batch | JobType::Service => {
                run.counted = std::iter::repeat_n(Slot::default(), spec.count() as usize).collect();
            }
            JobType::Ops => {
                run.pinned = nodes
                    .values()
                    .filter(|n| n.may_run(spec))
                    .map(|n| (n.id.clone(), Slot::default()))
                    .collect();
            }
            JobType::Daemon => {}
        }
        run.retally(spec, nodes, executions);
        run
    }

    /// The slot holding `execution`, if it was placed in this run.
    pub fn slot_of(&self, execution: ExecutionId) -> Option<&SlotKey> {
        self.slot_of.get(&execution)
    }

    /// Whether `execution`, lost until now and reported `to` by its edge, takes its slot
    /// back from whatever replaced it. It does when it is still meant to run, is no longer
    /// its slot's current execution, and either runs again or (batch) completed, unless
    /// the replacement completed the batch slot already. The decider stops what it takes
    /// the slot from; `evolve` moves it to the end of the slot's chain, where the current
    /// execution is. One rule for both, so the log replays to the same slots.
    fn reinstates(
        &self,
        job_type: JobType,
        execution: &Execution,
        to: ExecutionState,
        executions: &OrdMap<ExecutionId, Execution>,
    ) -> bool {
        let comes_back = execution.state == ExecutionState::Lost
            && execution.desired == DesiredState::Running
            && (!to.is_terminal()
                || (to == ExecutionState::Completed && job_type == JobType::Batch));
        if !comes_back || job_type == JobType::Ops {
            return false;
        }
        let Some(slot) = self.slot_of(execution.id).and_then(|key| self.slot(key)) else {
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

    /// Makes `execution` its slot's current execution again (see [`Run::reinstates`]).
    fn reinstate(&mut self, execution: ExecutionId) {
        let Some(key) = self.slot_of.get(&execution).cloned() else {
            return;
        };
        let slot = match &key {
            SlotKey::Counted(index) => self.counted.get_mut(*index),
            SlotKey::Pinned(node) => self.pinned.get_mut(node),
        };
        if let Some(slot) = slot {
            let chain = Arc::make_mut(&mut slot.executions);
            chain.retain(|id| *id != execution);
            chain.push(execution);
        }
    }

    /// The slot at `key`, if the run has one there.
    pub fn slot(&self, key: &SlotKey) -> Option<&Slot> {
        match key {
            SlotKey::Counted(index) => self.counted.get(*index),
            SlotKey::Pinned(node) => self.pinned.get(node),
        }
    }

    /// The slots and fresh daemon nodes that need an execution, in placement order. The
    /// counted slots never used are not listed in the tally; they come between the listed
    /// slots below `first_empty` and any pushed past the run's count.
    pub fn waiting(&self) -> impl Iterator<Item = SlotKey> + '_ {
        let split = SlotKey::Counted(self.first_empty);
        let never_used = (self.first_empty..self.counted.len())
            .take_while(|index| self.counted[*index].executions.is_empty())
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

    /// Rebuilds the tally and the execution index by reading every slot, and for a daemon
    /// every node. A run starts this way; the tests check that `evolve` keeps both equal to
    /// what this would rebuild.
    pub(super) fn retally(
        &mut self,
        spec: &JobSpec,
        nodes: &OrdMap<NodeId, Node>,
        executions: &OrdMap<ExecutionId, Execution>,
    ) {
        self.tally = Tally::default();
        self.slot_of = OrdMap::new();
        let counted = (0..self.counted.len()).map(SlotKey::Counted);
        let pinned = self.pinned.keys().cloned().map(SlotKey::Pinned);
        let daemon_nodes = nodes
            .keys()
            .filter(|_| spec.job_type == JobType::Daemon)
            .filter(|id| !self.pinned.contains_key(*id))
            .cloned()
            .map(SlotKey::Pinned);
        let keys: Vec<SlotKey> = counted.chain(pinned).chain(daemon_nodes).collect();
        for key in keys {
            let held = self.slot(&key).map(|s| Arc::clone(&s.executions));
            for execution in held.iter().flat_map(|h| h.iter()) {
                self.slot_of.insert(*execution, key.clone());
            }
            self.add(&key, spec, nodes, executions);
        }
    }

    /// Reads the slot at `key` again after something it depends on changed.
    fn refresh(
        &mut self,
        key: &SlotKey,
        spec: &JobSpec,
        nodes: &OrdMap<NodeId, Node>,
        executions: &OrdMap<ExecutionId, Execution>,
    ) {
        self.forget(key);
        self.add(key, spec, nodes, executions);
    }

    /// Takes the slot at `key` (or the fresh daemon node it names) out of the tally.
    fn forget(&mut self, key: &SlotKey) {
        if let SlotKey::Pinned(node) = key {
            self.tally.fresh.remove(node);
            self.tally.unmatched.remove(node);
        }
        if let Some(status) = self.slot(key).map(|s| s.status) {
            self.tally.remove(key, status);
        }
    }

    /// Reads the slot at `key` and counts it in the tally. A daemon's node without a slot is
    /// fresh demand if the daemon may run there.
    fn add(
        &mut self,
        key: &SlotKey,
        spec: &JobSpec,
        nodes: &OrdMap<NodeId, Node>,
        executions: &OrdMap<ExecutionId, Execution>,
    ) {
        let job_type = spec.job_type;
        let (slot, node) = match key {
            SlotKey::Counted(index) => (self.counted.get_mut(*index), None),
            SlotKey::Pinned(id) => (self.pinned.get_mut(id), Some((id, nodes.get(id)))),
        };
        let usable = node.is_none_or(|(_, n)| n.is_some_and(|n| n.may_run(spec)));
        let Some(slot) = slot else {
            if let (Some((id, _)), JobType::Daemon, true) = (node, job_type, usable) {
                self.tally.fresh.insert(id.clone());
            }
            return;
        };
        let status = classify(job_type, slot, usable, spec.replaces_lost(), executions);
        slot.status = status;
        self.tally.add(key, status, !slot.executions.is_empty());
        let running = slot
            .current()
            .and_then(|id| executions.get(&id))
            .is_some_and(|e| !e.state.is_terminal() && e.desired == DesiredState::Running);
        let unmatched = node.filter(|(_, n)| {
            job_type == JobType::Daemon && running && n.is_some_and(|n| !n.matches(&spec.selector))
        });
        if let Some((id, _)) = unmatched {
            self.tally.unmatched.insert(id.clone());
        }
    }
}

impl Slot {
    pub fn current(&self) -> Option<ExecutionId> {
        self.executions.last().copied()
    }

    /// Whether the slot takes a next execution, budget aside: it is empty, or its current
    /// execution ended in a way this job type follows up. The scheduler and `evolve` share
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

/// Folds one event into the state.
pub fn evolve(state: &mut State, event: &Event) {
    match event {
        Event::NodeRegistered(e) => {
            node_registered(state, e);
            node_changed(state, &e.node);
        }
        Event::NodeDisconnected(e) => {
            set_node_state(state, &e.node, NodeState::Disconnected);
            node_changed(state, &e.node);
        }
        Event::NodeReconnected(e) => {
            set_node_state(state, &e.node, NodeState::Connected);
            node_changed(state, &e.node);
        }
        Event::NodeLost(e) => {
            set_node_state(state, &e.node, NodeState::Lost);
            node_changed(state, &e.node);
        }
        Event::JobDeployed(e) => job_deployed(state, e),
        Event::JobStateChanged(e) => job_state_changed(state, e),
        Event::ExecutionAssigned(e) => execution_assigned(state, e),
        Event::ExecutionStopRequested(e) => {
            if let Some(execution) = state.executions.get_mut(&e.execution) {
                execution.desired = DesiredState::Stopped;
                if !execution.state.is_terminal() {
                    execution.stop_reason = Some(e.reason.clone());
                }
                let job = execution.job;
                slot_changed(state, job, e.execution);
            }
        }
        Event::ExecutionStateChanged(e) => execution_state_changed(state, e),
        Event::CommandAccepted(e) => {
            state.decided.insert(e.command);
        }
        Event::CommandRejected(e) => {
            state.decided.insert(e.command);
        }
        Event::InputRejected(_) => {}
    }
}

fn node_registered(state: &mut State, e: &NodeRegistered) {
    let node = state.nodes.entry(e.node.clone()).or_insert_with(|| Node {
        id: e.node.clone(),
        labels: Labels::new(),
        capacity: 0,
        state: NodeState::Connected,
        active: OrdSet::new(),
    });
    node.labels = e.labels.clone();
    node.capacity = e.capacity;
    note_room(&mut state.with_room, node);
}

/// Keeps `with_room` in step after the node's capacity or load changed.
fn note_room(with_room: &mut OrdSet<NodeId>, node: &Node) {
    if node.has_room() {
        with_room.insert(node.id.clone());
    } else {
        with_room.remove(&node.id);
    }
}

fn set_node_state(state: &mut State, id: &NodeId, to: NodeState) {
    if let Some(node) = state.nodes.get_mut(id) {
        node.state = to;
    }
}

/// A node's facts decide whether its pinned slots can be filled and which daemons may use
/// it, so every active run reads what it has on that node again. Node facts are rare; a run
/// that ends is started afresh before it is read again, so terminal jobs are skipped.
fn node_changed(state: &mut State, id: &NodeId) {
    let key = SlotKey::Pinned(id.clone());
    for job in state.active_jobs.iter() {
        if let Some(job) = state.jobs.get_mut(job) {
            job.run
                .refresh(&key, &job.spec, &state.nodes, &state.executions);
            note_unsettled(&mut state.unsettled, job);
        }
    }
}

/// Keeps `unsettled` in step after the job's run or state changed.
fn note_unsettled(unsettled: &mut OrdSet<JobId>, job: &Job) {
    if job.is_unsettled() {
        unsettled.insert(job.id);
    } else {
        unsettled.remove(&job.id);
    }
}

/// Reads the slot holding `execution` again, if it belongs to the job's current run.
fn slot_changed(state: &mut State, job: JobId, execution: ExecutionId) {
    let Some(job) = state.jobs.get_mut(&job) else {
        return;
    };
    if let Some(key) = job.run.slot_of.get(&execution).cloned() {
        job.run
            .refresh(&key, &job.spec, &state.nodes, &state.executions);
        note_unsettled(&mut state.unsettled, job);
    }
}

fn job_deployed(state: &mut State, e: &JobDeployed) {
    let run = Run::start(&e.spec, &state.nodes, &state.executions);
    state.names.insert(e.spec.name.clone(), e.job);
    let job = state.jobs.entry(e.job).or_insert_with(|| Job {
        id: e.job,
        name: e.spec.name.clone(),
        version: e.version,
        spec: e.spec.clone(),
        state: JobState::Queued,
        run: Run::default(),
        live: OrdSet::new(),
        live_on: OrdMap::new(),
    });
    job.name = e.spec.name.clone();
    job.version = e.version;
    job.spec = e.spec.clone();
    job.state = JobState::Queued;
    job.run = run;
    note_unsettled(&mut state.unsettled, job);
    state.active_jobs.insert(e.job);
}

fn job_state_changed(state: &mut State, e: &JobStateChanged) {
    let Some(job) = state.jobs.get(&e.job) else {
        return;
    };
    // Leaving a terminal state is a rerun: the version starts again with fresh demand.
    let rerun = job.state.is_terminal() && !e.state.is_terminal();
    let run = rerun.then(|| Run::start(&job.spec, &state.nodes, &state.executions));
    if let Some(job) = state.jobs.get_mut(&e.job) {
        job.state = e.state;
        if let Some(run) = run {
            job.run = run;
        }
        note_unsettled(&mut state.unsettled, job);
    }
    if e.state.is_terminal() {
        state.active_jobs.remove(&e.job);
    } else {
        state.active_jobs.insert(e.job);
    }
}

fn execution_assigned(state: &mut State, e: &ExecutionAssigned) {
    if state.executions.contains_key(&e.execution) {
        return;
    }
    if let Some(node) = state.nodes.get_mut(&e.node) {
        node.active.insert(e.execution);
        note_room(&mut state.with_room, node);
    }
    // Known before it is attached, so its slot reads it.
    state.executions.insert(
        e.execution,
        Execution {
            id: e.execution,
            job: e.job,
            version: e.version,
            node: e.node.clone(),
            attempt: e.attempt,
            state: ExecutionState::Pending,
            desired: DesiredState::Running,
            exit_code: None,
            reason: None,
            stop_reason: None,
        },
    );
    if let Some(job) = state.jobs.get_mut(&e.job) {
        job.add_live(e.execution, &e.node);
        if job.version == e.version {
            let key = attach(job, e, &state.executions);
            job.run.slot_of.insert(e.execution, key.clone());
            job.run
                .add(&key, &job.spec, &state.nodes, &state.executions);
            note_unsettled(&mut state.unsettled, job);
        }
    }
}

/// Puts a new execution in its slot, taken out of the tally first: by node for ops and
/// daemon; for batch and service the lowest open slot whose chain it continues (`attempt` =
/// chain length + 1). The slot's key, for the caller to count it again.
fn attach(
    job: &mut Job,
    e: &ExecutionAssigned,
    executions: &OrdMap<ExecutionId, Execution>,
) -> SlotKey {
    let job_type = job.spec.job_type;
    let run = &mut job.run;
    let key = match job_type {
        JobType::Ops | JobType::Daemon => SlotKey::Pinned(e.node.clone()),
        JobType::Batch | JobType::Service => {
            let prior = e.attempt.saturating_sub(1) as usize;
            let found = if prior == 0 {
                // An empty slot is always open, and the lowest one is `first_empty`.
                let index = run.first_empty;
                let empty = run
                    .counted
                    .get(index)
                    .is_some_and(|s| s.executions.is_empty());
                run.first_empty += usize::from(empty);
                empty.then_some(index)
            } else {
                // A used counted slot is open exactly when it waits or is exhausted, and the
                // tally lists those: no scan of the run.
                let state_of = |id| executions.get(&id).map(|e: &Execution| e.state);
                let continues = |index: &usize| {
                    run.counted.get(*index).is_some_and(|s| {
                        s.executions.len() == prior && s.is_open(job_type, state_of)
                    })
                };
                let lowest = |keys: &OrdSet<SlotKey>| {
                    keys.iter()
                        .filter_map(|key| match key {
                            SlotKey::Counted(index) => Some(*index),
                            SlotKey::Pinned(_) => None,
                        })
                        .find(continues)
                };
                let waiting = lowest(&run.tally.waiting);
                let exhausted = lowest(&run.tally.exhausted);
                waiting.into_iter().chain(exhausted).min()
            };
            // None is not what this decider emits; keep the execution visible in a slot of
            // its own rather than drop it.
            SlotKey::Counted(found.unwrap_or(run.counted.len()))
        }
    };
    run.forget(&key);
    let slot = match &key {
        SlotKey::Pinned(node) => run.pinned.entry(node.clone()).or_default(),
        SlotKey::Counted(index) => {
            if *index == run.counted.len() {
                run.counted.push_back(Slot::default());
            }
            &mut run.counted[*index]
        }
    };
    Arc::make_mut(&mut slot.executions).push(e.execution);
    key
}

fn execution_state_changed(state: &mut State, e: &ExecutionStateChanged) {
    let Some(execution) = state.executions.get(&e.execution) else {
        return;
    };
    let was = execution.state;
    let reinstated = state.jobs.get(&execution.job).is_some_and(|job| {
        !job.state.is_terminal()
            && job
                .run
                .reinstates(job.spec.job_type, execution, e.state, &state.executions)
    });
    let Some(execution) = state.executions.get_mut(&e.execution) else {
        return;
    };
    execution.state = e.state;
    execution.exit_code = e.exit_code;
    execution.reason = e.reason.clone();
    // Ended, or (a late report from a node that was lost) under way again.
    let (ends, resumes) = (
        !was.is_terminal() && e.state.is_terminal(),
        was.is_terminal() && !e.state.is_terminal(),
    );
    if ends {
        execution.stop_reason = None;
    }
    let (job_id, node_id) = (execution.job, &execution.node);
    if ends || resumes {
        if let Some(node) = state.nodes.get_mut(node_id) {
            if ends {
                node.active.remove(&e.execution);
            } else {
                node.active.insert(e.execution);
            }
            note_room(&mut state.with_room, node);
        }
        if let Some(job) = state.jobs.get_mut(&job_id) {
            if ends {
                job.remove_live(e.execution, node_id);
            } else {
                job.add_live(e.execution, node_id);
            }
        }
    }
    if reinstated && let Some(job) = state.jobs.get_mut(&job_id) {
        job.run.reinstate(e.execution);
    }
    slot_changed(state, job_id, e.execution);
}
