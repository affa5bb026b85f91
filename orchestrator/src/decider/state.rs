//! The decider's state and `evolve`, the only way it changes.
//!
//! Everything here is derived from events, so replaying the event stream from the start
//! rebuilds it exactly. `evolve` trusts the decider that produced the events but never
//! panics on a stream it did not expect: an event about something unknown changes nothing.

use cairn_shared::event::{
    ExecutionAssigned, ExecutionStateChanged, JobDeployed, JobStateChanged, NodeRegistered,
};
use cairn_shared::spec::Labels;
use cairn_shared::{
    CommandId, DesiredState, Event, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType,
    NodeId, NodeState,
};
use imbl::{OrdMap, OrdSet, Vector};

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
    jobs: OrdMap<JobId, Job>,
    /// The jobs not in a terminal state: what the scheduler reconciles, without reading
    /// every job ever deployed.
    active_jobs: OrdSet<JobId>,
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
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Oldest first; the last one is the slot's current execution.
    pub executions: Vec<ExecutionId>,
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
}

impl State {
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
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

    pub fn execution(&self, id: ExecutionId) -> Option<&Execution> {
        self.executions.get(&id)
    }

    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values()
    }

    pub fn is_decided(&self, command: CommandId) -> bool {
        self.decided.contains(&command)
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
}

impl Run {
    /// The demand a run of `spec` starts with. Ops targets are fixed here, from the nodes
    /// known at that moment, so replaying the same events fixes the same set.
    fn start<'a>(spec: &JobSpec, nodes: impl Iterator<Item = &'a Node>) -> Self {
        match spec.job_type {
            JobType::Batch | JobType::Service => Run {
                counted: std::iter::repeat_n(Slot::default(), spec.count() as usize).collect(),
                pinned: OrdMap::new(),
                first_empty: 0,
            },
            JobType::Ops => Run {
                counted: Vector::new(),
                pinned: nodes
                    .filter(|n| n.state != NodeState::Lost && n.matches(&spec.selector))
                    .map(|n| (n.id.clone(), Slot::default()))
                    .collect(),
                first_empty: 0,
            },
            JobType::Daemon => Run::default(),
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
        Event::NodeRegistered(e) => node_registered(state, e),
        Event::NodeDisconnected(e) => set_node_state(state, &e.node, NodeState::Disconnected),
        Event::NodeReconnected(e) => set_node_state(state, &e.node, NodeState::Connected),
        Event::NodeLost(e) => set_node_state(state, &e.node, NodeState::Lost),
        Event::JobDeployed(e) => job_deployed(state, e),
        Event::JobStateChanged(e) => job_state_changed(state, e),
        Event::ExecutionAssigned(e) => execution_assigned(state, e),
        Event::ExecutionStopRequested(e) => {
            if let Some(execution) = state.executions.get_mut(&e.execution) {
                execution.desired = DesiredState::Stopped;
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
}

fn set_node_state(state: &mut State, id: &NodeId, to: NodeState) {
    if let Some(node) = state.nodes.get_mut(id) {
        node.state = to;
    }
}

fn job_deployed(state: &mut State, e: &JobDeployed) {
    let run = Run::start(&e.spec, state.nodes.values());
    state.names.insert(e.spec.name.clone(), e.job);
    let job = state.jobs.entry(e.job).or_insert_with(|| Job {
        id: e.job,
        name: e.spec.name.clone(),
        version: e.version,
        spec: e.spec.clone(),
        state: JobState::Queued,
        run: Run::default(),
        live: OrdSet::new(),
    });
    job.name = e.spec.name.clone();
    job.version = e.version;
    job.spec = e.spec.clone();
    job.state = JobState::Queued;
    job.run = run;
    state.active_jobs.insert(e.job);
}

fn job_state_changed(state: &mut State, e: &JobStateChanged) {
    let Some(job) = state.jobs.get(&e.job) else {
        return;
    };
    // Leaving a terminal state is a rerun: the version starts again with fresh demand.
    let rerun = job.state.is_terminal() && !e.state.is_terminal();
    let run = rerun.then(|| Run::start(&job.spec, state.nodes.values()));
    if let Some(job) = state.jobs.get_mut(&e.job) {
        job.state = e.state;
        if let Some(run) = run {
            job.run = run;
        }
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
    }
    if let Some(job) = state.jobs.get_mut(&e.job) {
        job.live.insert(e.execution);
        if job.version == e.version {
            attach(job, e, &state.executions);
        }
    }
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
        },
    );
}

/// Puts a new execution in its slot: by node for ops and daemon; for batch and service the
/// lowest open slot whose chain it continues (`attempt` = chain length + 1).
fn attach(job: &mut Job, e: &ExecutionAssigned, executions: &OrdMap<ExecutionId, Execution>) {
    let job_type = job.spec.job_type;
    let run = &mut job.run;
    let slot = match job_type {
        JobType::Ops | JobType::Daemon => run.pinned.entry(e.node.clone()).or_default(),
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
                let state_of = |id| executions.get(&id).map(|e: &Execution| e.state);
                run.counted
                    .iter()
                    .position(|s| s.executions.len() == prior && s.is_open(job_type, state_of))
            };
            match found {
                Some(index) => &mut run.counted[index],
                // Not what this decider emits; keep the execution visible rather than drop it.
                None => {
                    run.counted.push_back(Slot::default());
                    let last = run.counted.len() - 1;
                    &mut run.counted[last]
                }
            }
        }
    };
    slot.executions.push(e.execution);
}

fn execution_state_changed(state: &mut State, e: &ExecutionStateChanged) {
    let Some(execution) = state.executions.get_mut(&e.execution) else {
        return;
    };
    execution.state = e.state;
    execution.exit_code = e.exit_code;
    execution.reason = e.reason.clone();
    if e.state.is_terminal() {
        if let Some(node) = state.nodes.get_mut(&execution.node) {
            node.active.remove(&e.execution);
        }
        if let Some(job) = state.jobs.get_mut(&execution.job) {
            job.live.remove(&e.execution);
        }
    }
}
