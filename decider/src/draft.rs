//! A decision in progress: a scratch copy of the state that every emitted event is evolved
//! onto at once, so each step of a decision sees the steps before it.

use std::collections::BTreeSet;

use cairn_shared::event::ExecutionStopRequested;
use cairn_shared::{DesiredState, Event, ExecutionId, JobId, NodeId};

use super::state::{State, evolve};

pub(super) struct Draft {
    pub(super) state: State,
    events: Vec<Event>,
    /// Whether an emitted fact may let waiting demand be placed (capacity freed, a node
    /// became usable, demand created). Placement runs on exactly these facts.
    placement_due: bool,
    /// Jobs whose state may have to be recomputed.
    touched: BTreeSet<JobId>,
    /// Whether an emitted fact took room on a node (an execution placed, or a lost one
    /// running again), which changes why other jobs' slots cannot be placed.
    room_taken: bool,
    /// Draining nodes whose drain may have moved on: one started, or an execution there
    /// ended.
    drains: BTreeSet<NodeId>,
}

impl Draft {
    pub(super) fn new(state: &State) -> Self {
        Self {
            state: state.clone(),
            events: Vec::new(),
            placement_due: false,
            touched: BTreeSet::new(),
            room_taken: false,
            drains: BTreeSet::new(),
        }
    }

    pub(super) fn emit(&mut self, event: impl Into<Event>) {
        let event = event.into();
        self.note(&event);
        evolve(&mut self.state, &event);
        self.events.push(event);
    }

    pub(super) fn into_events(self) -> Vec<Event> {
        self.events
    }

    pub(super) fn placement_due(&self) -> bool {
        self.placement_due
    }

    pub(super) fn touched(&self) -> &BTreeSet<JobId> {
        &self.touched
    }

    pub(super) fn room_taken(&self) -> bool {
        self.room_taken
    }

    /// The draining nodes to look at again, taken once per decision.
    pub(super) fn take_drains(&mut self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.drains)
    }

    /// Asks that the node's drain be looked at again.
    pub(super) fn check_drain(&mut self, node: &NodeId) {
        self.drains.insert(node.clone());
    }

    /// Asks every execution of `job` (any version) that is still meant to run to stop.
    pub(super) fn stop_executions(&mut self, job: JobId, reason: &str) {
        let Some(job) = self.state.job(job) else {
            return;
        };
        let wanted: Vec<_> = self
            .state
            .live(job.id)
            .filter_map(|id| self.state.execution(id))
            .filter(|e| e.desired == DesiredState::Running)
            .map(|e| (e.id, e.node.clone(), e.attempt))
            .collect();
        self.request_stops(wanted, reason);
    }

    /// Asks each `(execution, node, attempt)` to stop, for one reason.
    pub(super) fn request_stops(
        &mut self,
        stops: impl IntoIterator<Item = (ExecutionId, NodeId, u32)>,
        reason: &str,
    ) {
        for (execution, node, attempt) in stops {
            self.emit(ExecutionStopRequested {
                execution,
                node,
                reason: reason.to_owned(),
                attempt,
            });
        }
    }

    /// Records what an event (about to be evolved) may set in motion.
    fn note(&mut self, event: &Event) {
        let execution_job = |id| self.state.execution(id).map(|e| e.job);
        let (job, placement) = match event {
            Event::NodeRegistered(_) | Event::NodeReconnected(_) | Event::NodeLost(_) => {
                (None, true)
            }
            Event::JobDeployed(e) => (Some(e.job), true),
            // A node that takes work again may take what waits; one that stops changes what
            // daemons ask for there, and a drain moves service replicas.
            Event::NodeEligibilityChanged(_) => (None, true),
            Event::NodeDrainStarted(e) => {
                self.drains.insert(e.node.clone());
                (None, true)
            }
            Event::JobStateChanged(e) => {
                let restarts = self
                    .state
                    .job(e.job)
                    .is_some_and(|j| j.state.is_terminal() && !e.state.is_terminal());
                (Some(e.job), restarts)
            }
            Event::ExecutionAssigned(e) => {
                self.room_taken = true;
                (Some(e.job), false)
            }
            Event::ExecutionStopRequested(e) => (execution_job(e.execution), false),
            Event::ExecutionStateChanged(e) => {
                let resumes = self
                    .state
                    .execution(e.execution)
                    .is_some_and(|x| x.state.is_terminal() && !e.state.is_terminal());
                self.room_taken |= resumes;
                if e.state.is_terminal() && self.state.node(&e.node).is_some_and(|n| n.draining()) {
                    self.drains.insert(e.node.clone());
                }
                (execution_job(e.execution), e.state.is_terminal())
            }
            // Health lets a rollout take its next step; its end is news to its job.
            Event::ExecutionHealthChanged(e) => (execution_job(e.execution), false),
            Event::RolloutChanged(e) => (Some(e.job), false),
            Event::RolloutPromoted(e) => (Some(e.job), false),
            Event::NodeDisconnected(_)
            | Event::NodeDrained(_)
            | Event::JobBlocked(_)
            | Event::JobUnblocked(_)
            | Event::CommandAccepted(_)
            | Event::CommandRejected(_)
            | Event::InputRejected(_) => (None, false),
        };
        self.touched.extend(job);
        self.placement_due |= placement;
    }
}
