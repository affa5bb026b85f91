//! The scheduler: after the facts of a decision, place what is missing and settle each
//! job's state. It reacts to facts only; nothing here waits for a timer.
//!
//! A job's demand is read off its current run's tally, which `evolve` keeps current (see
//! `tally.rs`): the waiting slots are placed on eligible nodes, and the job's state follows
//! from the counts, so a job's reconciliation costs what it places, not the size of its run.

use std::collections::BTreeSet;

use cairn_shared::event::{ExecutionAssigned, ExecutionStopRequested, JobStateChanged};
use cairn_shared::{JobId, JobState, JobType, NodeId};

use super::draft::Draft;
use super::placement::Candidates;
use super::state::{Execution, Job, Slot, State};
use super::tally::SlotKey;
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
    place(draft, ids, job_id);
    settle(draft, job_id);
}

/// Places every waiting slot it can, in placement order. Batch and service slots can go to
/// any node, so once one finds no node none will, and stopping there keeps slots filled
/// lowest first (which is how `evolve` attaches them).
fn place(draft: &mut Draft, ids: &mut impl IdSource, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let tally = &job.run.tally;
    if !tally.exhausted.is_empty() || tally.waiting() == 0 {
        return;
    }
    // The run as it was before placing (an O(1) clone): each placement changes the draft's.
    let run = job.run.clone();
    let mut candidates = Candidates::new(&draft.state, job);
    if candidates.is_empty() {
        return;
    }
    for key in run.waiting() {
        let slot = run.slot(&key);
        let node = match &key {
            SlotKey::Pinned(node) => candidates.fits(node).then(|| node.clone()),
            SlotKey::Counted(_) => match candidates.best(&used_nodes(&draft.state, slot)) {
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
            attempt: next_attempt(slot),
            task: job.spec.task.clone(),
        };
        draft.emit(assigned);
    }
}

/// Emits the job's state, judged from its run's tally, if it changed; a failed job also
/// stops what it still runs.
fn settle(draft: &mut Draft, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let (state, reason) = verdict(&draft.state, job);
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
        .tally
        .unmatched
        .iter()
        .filter_map(|node| job.run.pinned.get(node))
        .filter_map(|slot| current(&draft.state, slot))
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

/// The attempt number of a slot's next execution; a fresh daemon node has no slot yet.
fn next_attempt(slot: Option<&Slot>) -> u32 {
    let used = slot.map_or(0, |s| s.executions.len());
    u32::try_from(used).unwrap_or(u32::MAX).saturating_add(1)
}

/// The nodes a slot already used, which its next execution avoids if it can.
fn used_nodes(state: &State, slot: Option<&Slot>) -> BTreeSet<NodeId> {
    slot.into_iter()
        .flat_map(|s| s.executions.iter())
        .filter_map(|id| state.execution(*id))
        .map(|e| e.node.clone())
        .collect()
}

/// The job's state as its run's tally says, without reading the slots.
fn verdict(state: &State, job: &Job) -> (JobState, Option<String>) {
    let tally = &job.run.tally;
    let counts = &tally.counts;
    if let Some(key) = tally.exhausted.get_min() {
        let last = job
            .run
            .slot(key)
            .and_then(|slot| current(state, slot))
            .map(describe_end)
            .unwrap_or_default();
        let reason = format!("an execution used all {MAX_ATTEMPTS} attempts; the last {last}");
        return (JobState::Failed, Some(reason));
    }
    let slots = counts.slots() + tally.fresh.len();
    match job.spec.job_type {
        JobType::Ops if slots == 0 => {
            let reason = "no node matched the selector when the job started";
            return (JobState::Failed, Some(reason.to_owned()));
        }
        // An ops job is decided once every target has ended.
        JobType::Ops if counts.ended_ok + counts.ended_failed == slots => {
            let missed = counts.ended_failed;
            return if missed == 0 {
                (JobState::Completed, None)
            } else {
                let reason = format!("{missed} of {slots} nodes did not complete it");
                (JobState::Failed, Some(reason))
            };
        }
        JobType::Batch if counts.done == slots => return (JobState::Completed, None),
        _ => {}
    }
    let in_flight = counts.pending + counts.up > 0;
    let any_done = counts.done + counts.ended_ok + counts.ended_failed > 0;
    let deploying = tally.waiting() + counts.pending > 0;
    let state = if !in_flight && !any_done {
        JobState::Queued
    } else if deploying {
        JobState::Deploying
    } else {
        JobState::Running
    };
    (state, None)
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
