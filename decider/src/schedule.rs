//! The scheduler: after the facts of a decision, place what is missing and settle each
//! job's state. It reacts to facts only; nothing here waits for a timer.
//!
//! A job's demand is read off its current run's tally, which the index keeps current (see
//! `index.rs`): the waiting slots are planned onto eligible nodes (`placement.rs`), and the job's state follows
//! from the counts, so a job's reconciliation costs what it places, not the size of its run.

use cairn_shared::event::{ExecutionAssigned, JobBlocked, JobStateChanged, JobUnblocked};
use cairn_shared::spec::HumanDuration;
use cairn_shared::{JobId, JobState, JobType, NodeId};

use super::IdSource;
use super::draft::Draft;
use super::drain;
use super::facts::{Execution, Job, Slot};
use super::placement;
use super::rollout;
use super::state::State;
use super::tally::{SlotKey, Tally, Verdict};

/// Reconciles the jobs this decision may have affected: every active job when placement is
/// due (capacity freed, a node usable, new demand), otherwise only the jobs it touched.
///
/// Then it records why what still waits could not be placed: after every placement of the
/// decision, since one job's placements take room another's reasons count. When room was
/// taken or placement was due that is every job with something waiting or blocked; a
/// decision that took no room and placed nothing changes only its own jobs' reasons.
pub(super) fn schedule(draft: &mut Draft, ids: &mut impl IdSource) {
    // A drain's steps stop work and end the drain, but never place or free room.
    for node in draft.take_drains() {
        drain::progress(draft, &node);
    }
    let due = draft.placement_due();
    let touched: Vec<JobId> = draft.touched().iter().copied().collect();
    if due {
        reconcile_all(draft, ids);
    } else {
        for job in &touched {
            reconcile(draft, ids, *job);
        }
    }
    if due || draft.room_taken() {
        note_all_placements(draft);
    } else {
        for job in touched {
            note_placement(draft, job);
        }
    }
}

/// Records the placement of every job with something waiting or blocked.
pub(super) fn note_all_placements(draft: &mut Draft) {
    each_unsettled(draft, note_placement);
}

/// Reconciles every active job with something to do, oldest first, so older jobs get
/// freed capacity first. The others are settled: reconciling them would emit nothing, so
/// a decision costs what it changes, not the number of active jobs.
pub(super) fn reconcile_all(draft: &mut Draft, ids: &mut impl IdSource) {
    each_unsettled(draft, |draft, job| reconcile(draft, ids, job));
}

/// Visits every unsettled job, oldest first. Each visit can settle or unsettle later
/// jobs, so the next one is looked up after it.
fn each_unsettled(draft: &mut Draft, mut visit: impl FnMut(&mut Draft, JobId)) {
    let mut next = draft.state.unsettled_from(None);
    while let Some(job) = next {
        visit(draft, job);
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
    rollout::step(draft, job_id);
    place(draft, ids, job_id);
    rollout::progress(draft, job_id);
    settle(draft, job_id);
}

/// Records why what still waits after placing could not be placed, when that changed, and
/// that nothing waits any more once it does not.
fn note_placement(draft: &mut Draft, job_id: JobId) {
    let Some(job) = draft.state.job(job_id).filter(|j| !j.state.is_terminal()) else {
        return;
    };
    let Some(tally) = draft.state.tally(job_id) else {
        return;
    };
    // What a rollout holds back is waiting its turn, not for a node.
    let held = rollout::gate(&draft.state, job).map_or(0, |gate| {
        gate.held(tally.waiting(), tally.fresh.iter().chain(pinned(tally)))
    });
    let unplaced = tally.waiting().saturating_sub(held);
    let now = (tally.wants_placement() && unplaced > 0)
        .then(|| placement::diagnose(&draft.state, job, unplaced));
    match (now, &job.blocked) {
        (Some(placement), was) if was.as_ref() != Some(&placement) => {
            draft.emit(JobBlocked {
                job: job_id,
                placement,
            });
        }
        (None, Some(_)) => draft.emit(JobUnblocked { job: job_id }),
        _ => {}
    }
}

/// Places every waiting slot it can: the job's placement problem, planned (see
/// `placement.rs`), then each placement emitted in order.
fn place(draft: &mut Draft, ids: &mut impl IdSource, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    if !draft
        .state
        .tally(job_id)
        .is_some_and(|t| t.wants_placement())
    {
        return;
    }
    let plan = placement::plan(placement::problem(&draft.state, job));
    let mut gate = rollout::gate(&draft.state, job);
    let (name, version, task) = (job.name.clone(), job.version, job.spec.task.clone());
    // Said only when the job says, so a job that leaves it to the defaults records what it
    // always did.
    let resources = job.spec.resources.map(|_| job.spec.request());
    let health = job.spec.update.map(|u| u.health());
    for placed in plan.placed {
        if let Some(gate) = &mut gate
            && !gate.admit(&placed.slot, &placed.node)
        {
            continue;
        }
        draft.emit(ExecutionAssigned {
            execution: ids.execution_id(),
            job: job_id,
            job_name: name.clone(),
            version,
            node: placed.node,
            attempt: placed.attempt,
            task: task.clone(),
            resources,
            delay: (!placed.delay.is_zero()).then_some(HumanDuration(placed.delay)),
            health,
        });
    }
}

/// Emits the job's state, judged from its run's tally, if it changed; a failed job also
/// stops what it still runs.
fn settle(draft: &mut Draft, job_id: JobId) {
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    let (judged, reason) = verdict(&draft.state, job);
    let (state, reason) = rollout::job_state(&draft.state, job, judged, reason);
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
    let Some(tally) = draft.state.tally(job_id) else {
        return;
    };
    let unmatched: Vec<_> = tally
        .unmatched
        .iter()
        .filter_map(|node| job.run.pinned.get(node))
        .filter_map(|slot| current(&draft.state, slot))
        .map(|e| (e.id, e.node.clone(), e.attempt))
        .collect();
    draft.request_stops(unmatched, "node labels no longer match the job's selector");
}

/// The job's state as its run's tally says, with the reason for a failure.
fn verdict(state: &State, job: &Job) -> (JobState, Option<String>) {
    let Some(tally) = state.tally(job.id) else {
        return (job.state, None);
    };
    let verdict = tally.verdict(job.spec.job_type);
    let reason = match &verdict {
        Verdict::Exhausted(key) => {
            let last = job
                .run
                .slot(key)
                .and_then(|slot| current(state, slot))
                .map(describe_end)
                .unwrap_or_default();
            let allowed = job.spec.restart().executions();
            Some(format!(
                "an execution used all {allowed} attempts; the last {last}"
            ))
        }
        Verdict::NoTarget => {
            Some("no eligible node matched the selector when the job started".to_owned())
        }
        Verdict::Ended { missed: 0, .. } | Verdict::Is(_) => None,
        Verdict::Ended { missed, of } => {
            Some(format!("{missed} of {of} nodes did not complete it"))
        }
    };
    (verdict.state(), reason)
}

/// The nodes of a daemon's waiting pinned slots.
fn pinned(tally: &Tally) -> impl Iterator<Item = &NodeId> {
    tally.waiting.iter().filter_map(|key| match key {
        SlotKey::Pinned(node) => Some(node),
        SlotKey::Counted(_) => None,
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
