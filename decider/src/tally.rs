//! What each slot of a run needs, counted and kept current by the index, so the scheduler
//! reads a job's demand and state without classifying every slot on every report.
//!
//! The index keeps every slot's [`Status`] of each active run, and a [`Tally`] of them. It
//! reads a slot again whenever something its status depends on changes: an execution
//! attached to it, one of its executions changing state or being asked to stop, and, for a
//! slot pinned to a node, a fact about that node. The same reading over every slot builds
//! the tally from scratch; a run starts that way, and the tests check after every decision
//! that the kept tally is the rebuilt one.

use cairn_shared::{DesiredState, ExecutionId, ExecutionState, JobState, JobType, NodeId};
use imbl::{OrdMap, OrdSet};

use super::facts::{Execution, Slot};

/// Where a slot sits in its run. The order is placement order: counted slots lowest first,
/// then pinned ones by node id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKey {
    Counted(usize),
    Pinned(NodeId),
}

/// What a slot needs, or what it came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// Its execution has not ended; `pending` until the edge accepts it.
    Live { pending: bool },
    /// A service slot whose execution still runs, on a node that is draining: it needs a
    /// replacement elsewhere, and keeps running until the replacement does.
    Moving,
    /// It needs an execution. A slot nothing was placed in yet waits.
    #[default]
    Waiting,
    /// A daemon slot whose node is lost or no longer matches: nothing to do there.
    Idle,
    /// Its execution was lost and its job does not replace lost work
    /// (`disconnect.replace: false`): the slot waits for that node to come back.
    Away,
    /// A batch slot that completed.
    Done,
    /// An ops slot that ended, successfully or not (its node may have been lost first).
    Ended { ok: bool },
    /// A slot that used all its attempts; the job fails.
    Exhausted,
}

/// How many slots of a run have each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    pub up: usize,
    pub moving: usize,
    pub waiting: usize,
    pub idle: usize,
    pub away: usize,
    pub done: usize,
    pub ended_ok: usize,
    pub ended_failed: usize,
    pub exhausted: usize,
}

impl Counts {
    fn of(&mut self, status: Status) -> &mut usize {
        match status {
            Status::Live { pending: true } => &mut self.pending,
            Status::Live { pending: false } => &mut self.up,
            Status::Moving => &mut self.moving,
            Status::Waiting => &mut self.waiting,
            Status::Idle => &mut self.idle,
            Status::Away => &mut self.away,
            Status::Done => &mut self.done,
            Status::Ended { ok: true } => &mut self.ended_ok,
            Status::Ended { ok: false } => &mut self.ended_failed,
            Status::Exhausted => &mut self.exhausted,
        }
    }

    pub fn slots(&self) -> usize {
        self.pending
            + self.up
            + self.moving
            + self.waiting
            + self.idle
            + self.away
            + self.done
            + self.ended_ok
            + self.ended_failed
            + self.exhausted
    }
}

/// A run's slots by status, and the ones the scheduler has to visit, in placement order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub counts: Counts,
    /// Waiting and moving slots, except the counted ones never used: those are always the
    /// run's `first_empty..`, so listing them would cost a batch run's `count` up front.
    pub waiting: OrdSet<SlotKey>,
    /// Slots that used all their attempts; the first one names the job's failure.
    pub exhausted: OrdSet<SlotKey>,
    /// Daemon only: usable nodes the run has no slot on yet, each a first attempt to place.
    pub fresh: OrdSet<NodeId>,
    /// Daemon only: nodes no longer matching the selector whose execution still runs and
    /// is meant to.
    pub unmatched: OrdSet<NodeId>,
}

/// What a run's tally says its job's state is, and why when it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A slot used all its attempts: the lowest such one.
    Exhausted(SlotKey),
    /// An ops job that found no node to run on.
    NoTarget,
    /// An ops job whose targets all ended, `missed` of `of` of them unsuccessfully.
    Ended { missed: usize, of: usize },
    /// Any other state.
    Is(JobState),
}

impl Verdict {
    pub fn state(&self) -> JobState {
        match self {
            Verdict::Exhausted(_) | Verdict::NoTarget => JobState::Failed,
            Verdict::Ended { missed: 0, .. } => JobState::Completed,
            Verdict::Ended { .. } => JobState::Failed,
            Verdict::Is(state) => *state,
        }
    }
}

impl Tally {
    /// Slots and fresh daemon nodes that need an execution, moving slots included.
    pub fn waiting(&self) -> usize {
        self.counts.waiting + self.counts.moving + self.fresh.len()
    }

    /// Whether placement has something to do: demand waits and nothing is exhausted (an
    /// exhausted slot fails the job instead).
    pub fn wants_placement(&self) -> bool {
        self.exhausted.is_empty() && self.waiting() > 0
    }

    /// The job's state as the counts say, without reading the slots.
    pub fn verdict(&self, job_type: JobType) -> Verdict {
        let counts = &self.counts;
        if let Some(key) = self.exhausted.get_min() {
            return Verdict::Exhausted(key.clone());
        }
        let slots = counts.slots() + self.fresh.len();
        match job_type {
            JobType::Ops if slots == 0 => return Verdict::NoTarget,
            // An ops job is decided once every target has ended.
            JobType::Ops if counts.ended_ok + counts.ended_failed == slots => {
                return Verdict::Ended {
                    missed: counts.ended_failed,
                    of: slots,
                };
            }
            JobType::Batch if counts.done == slots => return Verdict::Is(JobState::Completed),
            _ => {}
        }
        // Work on a node that is away may well be running; the job is not idle.
        let in_flight = counts.pending + counts.up + counts.moving + counts.away > 0;
        let any_done = counts.done + counts.ended_ok + counts.ended_failed > 0;
        let deploying = self.waiting() + counts.pending > 0;
        Verdict::Is(if !in_flight && !any_done {
            JobState::Queued
        } else if deploying {
            JobState::Deploying
        } else {
            JobState::Running
        })
    }

    /// Adds a slot read as `status`; `used` says whether anything was ever placed in it.
    pub(super) fn add(&mut self, key: &SlotKey, status: Status, used: bool) {
        *self.counts.of(status) += 1;
        let listed = used || matches!(key, SlotKey::Pinned(_));
        match status {
            Status::Waiting if listed => {
                self.waiting.insert(key.clone());
            }
            Status::Moving => {
                self.waiting.insert(key.clone());
            }
            Status::Exhausted => {
                self.exhausted.insert(key.clone());
            }
            _ => {}
        }
    }

    /// Takes back what [`Tally::add`] added for this slot.
    pub(super) fn remove(&mut self, key: &SlotKey, status: Status) {
        let count = self.counts.of(status);
        *count = count.saturating_sub(1);
        self.waiting.remove(key);
        self.exhausted.remove(key);
    }
}

/// Reads one slot. `usable` is whether the slot's node may run the job (counted slots have
/// no node and always are); `replaces` whether the job replaces lost work; `executions_allowed`
/// how many executions a slot may use up (its restart policy's); `draining` whether a node
/// is draining.
pub(super) fn classify(
    job_type: JobType,
    slot: &Slot,
    usable: bool,
    replaces: bool,
    executions_allowed: u32,
    executions: &OrdMap<ExecutionId, Execution>,
    draining: impl Fn(&NodeId) -> bool,
) -> Status {
    let current = slot.current().and_then(|id| executions.get(&id));
    if let Some(e) = current.filter(|e| !e.state.is_terminal()) {
        // Only a service moves ahead of the deadline: a batch or ops task restarted
        // elsewhere would run twice, and a daemon belongs to its node.
        let moves =
            job_type == JobType::Service && e.desired == DesiredState::Running && draining(&e.node);
        return if moves {
            Status::Moving
        } else {
            Status::Live {
                pending: e.state == ExecutionState::Pending,
            }
        };
    }
    if job_type == JobType::Ops {
        return match current {
            Some(e) => Status::Ended {
                ok: e.state == ExecutionState::Completed,
            },
            None if usable => Status::Waiting,
            None => Status::Ended { ok: false },
        };
    }
    if !replaces
        && current
            .is_some_and(|e| e.state == ExecutionState::Lost && e.desired == DesiredState::Running)
    {
        return Status::Away;
    }
    if !slot.is_open(job_type, |id| executions.get(&id).map(|e| e.state)) {
        return Status::Done;
    }
    if faults(job_type, slot, executions) >= executions_allowed {
        return Status::Exhausted;
    }
    if !usable {
        return Status::Idle;
    }
    Status::Waiting
}

/// Ends that count against a slot's attempts: anything nobody asked for, except that a
/// long-running slot does not pay for a lost node.
pub(super) fn faults(
    job_type: JobType,
    slot: &Slot,
    executions: &OrdMap<ExecutionId, Execution>,
) -> u32 {
    let count = slot
        .executions
        .iter()
        .filter_map(|id| executions.get(id))
        .filter(|e| is_fault(job_type, e))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Whether the execution's end counts against its slot's attempts (see [`faults`]).
pub(super) fn is_fault(job_type: JobType, e: &Execution) -> bool {
    let long_running = matches!(job_type, JobType::Service | JobType::Daemon);
    match e.state {
        ExecutionState::Failed => true,
        ExecutionState::Stopped => e.desired == DesiredState::Running,
        ExecutionState::Completed => long_running,
        ExecutionState::Lost => !long_running,
        _ => false,
    }
}
