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
use super::tally::{SlotKey, Verdict};
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

/// Reconciles every active job with something to do, oldest first, so older jobs get
/// freed capacity first. The others are settled: reconciling them would emit nothing, so
/// a decision costs what it changes, not the number of active jobs. Each visit can settle
/// or unsettle later jobs, so the next one is looked up after it.
pub(super) fn reconcile_all(draft: &mut Draft, ids: &mut impl IdSource) {
    let mut next = draft.state.unsettled_from(None);
    while let Some(job) = next {
        reconcile(draft, ids, job);
        next = draft.state.unsettled_from(Some(job));
    }
}

pub(super) fn reconcile(draft: &mut Draft, ids: &mut impl IdSource, job_id: JobId) {
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
    if !job.run.tally.wants_placement() {
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

/// The job's state as its run's tally says, with the reason for a failure.
fn verdict(state: &State, job: &Job) -> (JobState, Option<String>) {
    let verdict = job.run.tally.verdict(job.spec.job_type);
    let reason = match &verdict {
        Verdict::Exhausted(key) => {
            let last = job
                .run
                .slot(key)
                .and_then(|slot| current(state, slot))
                .map(describe_end)
                .unwrap_or_default();
            Some(format!(
                "an execution used all {MAX_ATTEMPTS} attempts; the last {last}"
            ))
        }
        Verdict::NoTarget => Some("no node matched the selector when the job started".to_owned()),
        Verdict::Ended { missed: 0, .. } | Verdict::Is(_) => None,
        Verdict::Ended { missed, of } => {
            Some(format!("{missed} of {of} nodes did not complete it"))
        }
    };
    (verdict.state(), reason)
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
