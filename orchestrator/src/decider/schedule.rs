//! The scheduler: after the facts of a decision, place what is missing and settle each
//! job's state. It reacts to facts only; nothing here waits for a timer.
//!
//! A job's demand is read off its current run: every slot is classified ([`Status`]), the
//! waiting ones are placed on eligible nodes, and the job's state follows from the result.

use std::collections::BTreeSet;

use cairn_shared::event::{ExecutionAssigned, ExecutionStopRequested, JobStateChanged};
use cairn_shared::{DesiredState, ExecutionState, JobId, JobState, JobType, NodeId};

use super::draft::Draft;
use super::placement::{Candidates, is_usable};
use super::state::{Execution, Job, Slot, State};
use super::{IdSource, MAX_ATTEMPTS};

/// Reconciles the jobs this decision may have affected: every active job when placement is
/// due (capacity freed, a node usable, new demand), otherwise only the jobs it touched.
pub(super) fn schedule(draft: &mut Draft, ids: &mut impl IdSource) {
    if draft.placement_due() {
        reconcile_all(draft, ids);
    } else {
        let touched: Vec<JobId> = draft.touched().iter().copied().collect();
        for job in touched {
            reconcile(draft, ids, job);
        }
    }
}

/// Reconciles every active job, oldest first, so older jobs get freed capacity first.
pub(super) fn reconcile_all(draft: &mut Draft, ids: &mut impl IdSource) {
    let active: Vec<JobId> = draft.state.active_jobs().map(|j| j.id).collect();
    for job in active {
        reconcile(draft, ids, job);
    }
}

/// Where a slot's next execution must go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// Any eligible node (batch, service), avoiding the ones the slot already used.
    Anywhere { avoid: BTreeSet<NodeId> },
    /// This node and no other (ops, daemon).
    On(NodeId),
}

/// What a slot needs, or what it came to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    /// Its execution has not ended; `pending` until the edge accepts it.
    Live { pending: bool },
    /// It needs an execution, with this attempt number.
    Waiting { place: Place, attempt: u32 },
    /// A daemon slot whose node is lost or no longer matches: nothing to do there.
    Idle,
    /// A batch slot that completed.
    Done,
    /// An ops slot that ended, successfully or not (its node may have been lost first).
    Ended { ok: bool },
    /// A slot that used all its attempts; the job fails.
    Exhausted { last: String },
}

fn reconcile(draft: &mut Draft, ids: &mut impl IdSource, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    if job.state.is_terminal() {
        return;
    }
    if job.spec.job_type == JobType::Daemon {
        stop_unmatched(draft, job_id);
    }
    // Reading every slot is the costly part of a job's reconciliation, so the statuses are
    // read once and again only when placing changed them.
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let mut slots = statuses(&draft.state, job);
    if place(draft, ids, job_id, &slots) {
        let Some(job) = draft.state.job(job_id) else {
            return;
        };
        slots = statuses(&draft.state, job);
    }
    settle(draft, job_id, &slots);
}

/// Places every waiting slot it can. Batch and service slots can go to any node, so once one
/// finds no node none will, and stopping there keeps slots filled lowest first (which is
/// how `evolve` attaches them). Whether it placed anything.
fn place(draft: &mut Draft, ids: &mut impl IdSource, job_id: JobId, statuses: &[Status]) -> bool {
    let Some(job) = draft.state.job(job_id) else {
        return false;
    };
    let exhausted = statuses
        .iter()
        .any(|s| matches!(s, Status::Exhausted { .. }));
    let waiting = statuses.iter().any(|s| matches!(s, Status::Waiting { .. }));
    if exhausted || !waiting {
        return false;
    }
    let mut candidates = Candidates::new(&draft.state, job);
    let mut placed = false;
    for status in statuses {
        let Status::Waiting { place, attempt } = status else {
            continue;
        };
        let node = match place {
            Place::On(node) => candidates.fits(node).then(|| node.clone()),
            Place::Anywhere { avoid } => match candidates.best(avoid) {
                Some(node) => Some(node),
                None => break,
            },
        };
        let Some(node) = node else { continue };
        let Some(job) = draft.state.job(job_id) else {
            break;
        };
        candidates.take(&node);
        let assigned = ExecutionAssigned {
            execution: ids.execution_id(),
            job: job_id,
            job_name: job.name.clone(),
            version: job.version,
            node,
            attempt: *attempt,
            task: job.spec.task.clone(),
        };
        draft.emit(assigned);
        placed = true;
    }
    placed
}

/// Emits the job's state, judged from its current `statuses`, if it changed; a failed job
/// also stops what it still runs.
fn settle(draft: &mut Draft, job_id: JobId, statuses: &[Status]) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let (state, reason) = verdict(job, statuses);
    if state == job.state {
        return;
    }
    if state == JobState::Failed {
        draft.stop_executions(job_id, "job failed");
    }
    draft.emit(JobStateChanged {
        job: job_id,
        state,
        reason,
    });
}

/// A daemon belongs only on matching nodes: a node relabelled out of the selector has its
/// execution stopped (and gets a new one if it matches again).
fn stop_unmatched(draft: &mut Draft, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let unmatched: Vec<_> = job
        .run
        .pinned
        .iter()
        .filter(|(node, _)| {
            draft
                .state
                .node(node)
                .is_some_and(|n| !n.matches(&job.spec.selector))
        })
        .filter_map(|(_, slot)| current(&draft.state, slot))
        .filter(|e| !e.state.is_terminal() && e.desired == DesiredState::Running)
        .map(|e| (e.id, e.node.clone(), e.attempt))
        .collect();
    for (execution, node, attempt) in unmatched {
        draft.emit(ExecutionStopRequested {
            execution,
            node,
            reason: "node labels no longer match the job's selector".to_owned(),
            attempt,
        });
    }
}

/// Every slot of the job's run, in placement order. Daemons also get a waiting slot for
/// every usable node they have not been on yet.
fn statuses(state: &State, job: &Job) -> Vec<Status> {
    let counted = job.run.counted.iter().map(|s| status(state, job, s, None));
    let pinned = job
        .run
        .pinned
        .iter()
        .map(|(node, s)| status(state, job, s, Some(node)));
    let mut all: Vec<Status> = counted.chain(pinned).collect();
    if job.spec.job_type == JobType::Daemon {
        let fresh = state
            .nodes()
            .filter(|n| is_usable(n, job) && !job.run.pinned.contains_key(&n.id))
            .map(|n| Status::Waiting {
                place: Place::On(n.id.clone()),
                attempt: 1,
            });
        all.extend(fresh);
    }
    all
}

fn status(state: &State, job: &Job, slot: &Slot, node: Option<&NodeId>) -> Status {
    let job_type = job.spec.job_type;
    let current = current(state, slot);
    if let Some(e) = current.filter(|e| !e.state.is_terminal()) {
        return Status::Live {
            pending: e.state == ExecutionState::Pending,
        };
    }
    let usable = node.is_none_or(|id| state.node(id).is_some_and(|n| is_usable(n, job)));
    if job_type == JobType::Ops {
        return match current {
            Some(e) => Status::Ended {
                ok: e.state == ExecutionState::Completed,
            },
            None if usable => waiting(state, slot, node),
            None => Status::Ended { ok: false },
        };
    }
    if !slot.is_open(job_type, |id| state.execution(id).map(|e| e.state)) {
        return Status::Done;
    }
    if faults(state, job_type, slot) >= MAX_ATTEMPTS {
        return Status::Exhausted {
            last: current.map(describe_end).unwrap_or_default(),
        };
    }
    if !usable {
        return Status::Idle;
    }
    waiting(state, slot, node)
}

fn waiting(state: &State, slot: &Slot, node: Option<&NodeId>) -> Status {
    let attempt = u32::try_from(slot.executions.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let place = match node {
        Some(node) => Place::On(node.clone()),
        None => Place::Anywhere {
            avoid: slot
                .executions
                .iter()
                .filter_map(|id| state.execution(*id))
                .map(|e| e.node.clone())
                .collect(),
        },
    };
    Status::Waiting { place, attempt }
}

/// Ends that count against a slot's attempts: anything nobody asked for, except that a
/// long-running slot does not pay for a lost node.
fn faults(state: &State, job_type: JobType, slot: &Slot) -> u32 {
    let long_running = matches!(job_type, JobType::Service | JobType::Daemon);
    let is_fault = |e: &&Execution| match e.state {
        ExecutionState::Failed => true,
        ExecutionState::Stopped => e.desired == DesiredState::Running,
        ExecutionState::Completed => long_running,
        ExecutionState::Lost => !long_running,
        _ => false,
    };
    let count = slot
        .executions
        .iter()
        .filter_map(|id| state.execution(*id))
        .filter(is_fault)
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn verdict(job: &Job, statuses: &[Status]) -> (JobState, Option<String>) {
    if let Some(last) = statuses.iter().find_map(|s| match s {
        Status::Exhausted { last } => Some(last),
        _ => None,
    }) {
        let reason = format!("an execution used all {MAX_ATTEMPTS} attempts; the last {last}");
        return (JobState::Failed, Some(reason));
    }
    match job.spec.job_type {
        JobType::Ops if statuses.is_empty() => {
            let reason = "no node matched the selector when the job started";
            return (JobState::Failed, Some(reason.to_owned()));
        }
        JobType::Ops => {
            if let Some(verdict) = ops_outcome(statuses) {
                return verdict;
            }
        }
        JobType::Batch if statuses.iter().all(|s| *s == Status::Done) => {
            return (JobState::Completed, None);
        }
        _ => {}
    }
    let in_flight = statuses.iter().any(|s| matches!(s, Status::Live { .. }));
    let any_done = statuses
        .iter()
        .any(|s| matches!(s, Status::Done | Status::Ended { .. }));
    let deploying = statuses
        .iter()
        .any(|s| matches!(s, Status::Waiting { .. } | Status::Live { pending: true }));
    let state = if !in_flight && !any_done {
        JobState::Queued
    } else if deploying {
        JobState::Deploying
    } else {
        JobState::Running
    };
    (state, None)
}

/// An ops job is decided once every target has ended.
fn ops_outcome(statuses: &[Status]) -> Option<(JobState, Option<String>)> {
    let mut missed = 0;
    for status in statuses {
        match status {
            Status::Ended { ok: true } => {}
            Status::Ended { ok: false } => missed += 1,
            _ => return None,
        }
    }
    Some(if missed == 0 {
        (JobState::Completed, None)
    } else {
        let reason = format!("{missed} of {} nodes did not complete it", statuses.len());
        (JobState::Failed, Some(reason))
    })
}

fn current<'s>(state: &'s State, slot: &Slot) -> Option<&'s Execution> {
    slot.current().and_then(|id| state.execution(id))
}

fn describe_end(e: &Execution) -> String {
    let mut text = format!("(execution {} on node {}) ended {}", e.id, e.node, e.state);
    if let Some(code) = e.exit_code {
        text.push_str(&format!(" with exit code {code}"));
    }
    if let Some(reason) = &e.reason {
        text.push_str(&format!(": {reason}"));
    }
    text
}
