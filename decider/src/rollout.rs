//! Rolling a new version out, for a job with `update` (service and daemon).
//!
//! Without `update` a new version replaces the old one at once. With it, the old version's
//! executions keep running and are replaced a step at a time: an old execution is asked to
//! stop only while, without it, at least the slots less `max_parallel` would still be
//! *covered* (by an old execution meant to run, or a new one its edge found healthy), and a
//! new execution is placed only where an old one has made room (a daemon: on a node with
//! no old execution left meant to run; a service: while old and new ones meant to run are
//! fewer than `count`). So no more than `max_parallel` slots are ever without a running,
//! healthy execution on the update's account, and the rollout moves on only as new
//! executions become healthy. Everything is read from the facts, so an orchestrator that
//! restarts mid-rollout carries on where the log says it was.
//!
//! With `canary: N`, a version with something to replace first runs N new executions
//! (a service beside every old one; a daemon on N nodes moved over) and goes no further
//! until `cairn job promote` ([`promote`], refused unless they are all healthy); then it
//! rolls as above. An auto-revert is promoted at once: it goes back to a version that
//! rolled out.
//!
//! A new execution that ends, or whose edge finds it not healthy, before it was healthy
//! fails the rollout: nothing more is replaced or placed for the version, and with
//! `auto_revert` the job is deployed again, as a new version, with the spec of the last
//! version whose rollout succeeded, which then rolls out the same way (replacing the bad
//! version's executions first). Ending for a reason that is no fault of the version (asked
//! to stop, its node lost) fails nothing. The rollout succeeds once nothing of an earlier
//! version is meant to run and every slot has a healthy execution of the version.

use std::collections::{BTreeMap, BTreeSet};

use cairn_shared::event::{JobDeployed, RolloutChanged, RolloutPromoted};
use cairn_shared::{
    DesiredState, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType, NodeId,
    RolloutState,
};

use super::draft::Draft;
use super::facts::{Execution, Job};
use super::state::State;
use super::tally::SlotKey;
use super::{Rejection, RejectionKind};

/// Starts `version` of the job with `spec`. With `update`, a rollout replaces what runs;
/// without, or when the version changes the job's type, whatever an earlier version still
/// runs is asked to stop at once (and the version's rollout starts when it has `update`,
/// from nothing). A rollout of
/// the version before that was not done ends, cancelled.
pub(super) fn start_version(
    draft: &mut Draft,
    job: JobId,
    version: u32,
    spec: JobSpec,
    reverted_to: Option<u32>,
) {
    cancel(draft, job, &format!("replaced by version {version}"));
    // A version of another type has nothing to replace slot by slot: it starts afresh.
    let same_type = draft
        .state
        .job(job)
        .is_none_or(|j| j.spec.job_type == spec.job_type);
    let has_update = spec.update.is_some();
    let rolls = has_update && same_type;
    draft.emit(JobDeployed {
        job,
        version,
        spec,
        reverted_to,
    });
    if !rolls {
        draft.stop_executions(job, &format!("replaced by version {version}"));
    }
    if has_update {
        draft.emit(RolloutChanged {
            job,
            version,
            state: RolloutState::Rolling,
            reason: None,
        });
    }
}

/// A rerun of a job with `update` is a rollout of its version from nothing: its health is
/// followed again.
pub(super) fn rerun_started(draft: &mut Draft, job: JobId) {
    let Some(j) = draft.state.job(job).filter(|j| j.spec.update.is_some()) else {
        return;
    };
    let version = j.version;
    draft.emit(RolloutChanged {
        job,
        version,
        state: RolloutState::Rolling,
        reason: None,
    });
}

/// Ends the job's rollout, if one is rolling, for `reason` (a stop, a newer version).
pub(super) fn cancel(draft: &mut Draft, job: JobId, reason: &str) {
    let Some(version) = rolling(&draft.state, job) else {
        return;
    };
    draft.emit(RolloutChanged {
        job,
        version,
        state: RolloutState::Cancelled,
        reason: Some(reason.to_owned()),
    });
}

/// The version whose rollout is rolling, if the job has one.
fn rolling(state: &State, job: JobId) -> Option<u32> {
    let job = state.job(job)?;
    let rollout = job.rollout.as_ref()?;
    (rollout.state == RolloutState::Rolling && rollout.version == job.version)
        .then_some(rollout.version)
}

/// What a rollout allows now: the old executions to ask to stop, and which of the
/// version's waiting slots may be placed.
pub(super) struct Gate {
    stops: Vec<(ExecutionId, NodeId, u32)>,
    /// Why the stops are asked, for the log.
    reason: String,
    hold: Hold,
}

enum Hold {
    /// A service: how many more of its slots may take an execution now.
    Counted(usize),
    /// A daemon: the nodes it may not be placed on yet (an old execution still runs there).
    Nodes(BTreeSet<NodeId>),
    /// A failed rollout: nothing more is placed.
    All,
}

impl Gate {
    /// Whether a slot may be placed, counting it against what is allowed if it may.
    pub(super) fn admit(&mut self, slot: &SlotKey, node: &NodeId) -> bool {
        match (&mut self.hold, slot) {
            (Hold::All, _) => false,
            (Hold::Nodes(held), _) => !held.contains(node),
            (Hold::Counted(left), _) if *left > 0 => {
                *left -= 1;
                true
            }
            (Hold::Counted(_), _) => false,
        }
    }

    /// How many of `waiting` slots (`nodes` for a daemon's) the gate holds back.
    pub(super) fn held<'n>(
        &self,
        waiting: usize,
        nodes: impl Iterator<Item = &'n NodeId>,
    ) -> usize {
        match &self.hold {
            Hold::All => waiting,
            Hold::Counted(left) => waiting.saturating_sub(*left),
            Hold::Nodes(held) => nodes.filter(|n| held.contains(*n)).count(),
        }
    }
}

/// The job's gate, when it has a rollout that still holds anything back (rolling, or
/// failed); none otherwise.
pub(super) fn gate(state: &State, job: &Job) -> Option<Gate> {
    let rollout = job.rollout.as_ref().filter(|r| r.version == job.version)?;
    let update = job.spec.update?;
    let rolls = match rollout.state {
        RolloutState::Rolling => true,
        RolloutState::Failed => false,
        RolloutState::Succeeded | RolloutState::Cancelled => return None,
    };
    let max_parallel = update.max_parallel as usize;
    // Canaries run first, and the rest waits for a promotion; with nothing to replace
    // there is nothing to try them beside.
    let canaries =
        (rolls && !rollout.promoted && update.canary > 0).then_some(update.canary as usize);
    let mut old: Vec<&Execution> = state
        .live(job.id)
        .filter_map(|id| state.execution(id))
        .filter(|e| e.version != job.version && e.desired == DesiredState::Running)
        .collect();
    // The newest version's first: after a revert, the bad version goes before the good.
    old.sort_by(|a, b| (b.version, &a.node, a.id).cmp(&(a.version, &b.node, b.id)));
    let reason = format!(
        "version {} rolling out, {max_parallel} at a time",
        job.version
    );
    let gate = match job.spec.job_type {
        JobType::Daemon => daemon_gate(
            state,
            job,
            &old,
            Pace {
                max_parallel,
                rolls,
                canaries,
            },
            reason,
        ),
        _ => service_gate(
            state,
            job,
            &old,
            Pace {
                max_parallel,
                rolls,
                canaries,
            },
            reason,
        ),
    };
    Some(gate)
}

/// How fast a rollout may go: `max_parallel` at a time while it `rolls` (not after a
/// failure), and only `canaries` until they are promoted.
#[derive(Clone, Copy)]
struct Pace {
    max_parallel: usize,
    rolls: bool,
    canaries: Option<usize>,
}

fn service_gate(state: &State, job: &Job, old: &[&Execution], pace: Pace, reason: String) -> Gate {
    let Pace {
        max_parallel,
        rolls,
        canaries,
    } = pace;
    let count = job.spec.count() as usize;
    let (mut live, mut healthy) = (0, 0);
    // A replica leaving a draining node is on its way out: its slot is being refilled.
    let leaving = |e: &Execution| state.node(&e.node).is_some_and(|n| n.draining());
    for e in job
        .run
        .counted
        .iter()
        .filter_map(|slot| current(state, slot.current()))
    {
        if meant_to_run(e) && !leaving(e) {
            live += 1;
            healthy += usize::from(is_healthy(e));
        }
    }
    let covered = old.len() + healthy;
    let stopping = match canaries {
        _ if !rolls => 0,
        // Canaries run beside the old version: nothing of it stops yet.
        Some(_) if !old.is_empty() => 0,
        _ => covered
            .saturating_sub(count.saturating_sub(max_parallel))
            .min(old.len()),
    };
    let hold = match canaries {
        _ if !rolls => Hold::All,
        // Nothing of an earlier version runs: nothing to replace, nothing held.
        _ if old.is_empty() => Hold::Counted(usize::MAX),
        Some(n) => Hold::Counted(n.min(count).saturating_sub(live)),
        None => Hold::Counted(count.saturating_sub(old.len() - stopping + live)),
    };
    Gate {
        stops: old[..stopping].iter().map(|e| stop_of(e)).collect(),
        reason,
        hold,
    }
}

fn daemon_gate(state: &State, job: &Job, old: &[&Execution], pace: Pace, reason: String) -> Gate {
    let Pace {
        max_parallel,
        rolls,
        canaries,
    } = pace;
    let spec = &job.spec;
    // The nodes the version runs on: the ones with a slot of its run, and the usable
    // ones it has none on yet, that take work of it.
    let tally = state.tally(job.id);
    let wanted: BTreeSet<&NodeId> = job
        .run
        .pinned
        .keys()
        .chain(tally.into_iter().flat_map(|t| t.fresh.iter()))
        .filter(|id| state.node(id).is_some_and(|n| n.takes_new(spec)))
        .collect();
    let mut old_on: BTreeMap<&NodeId, Vec<&Execution>> = BTreeMap::new();
    for e in old {
        old_on.entry(&e.node).or_default().push(e);
    }
    let healthy_on = |node: &NodeId| {
        job.run
            .pinned
            .get(node)
            .and_then(|slot| current(state, slot.current()))
            .is_some_and(|e| meant_to_run(e) && is_healthy(e))
    };
    let covered = wanted
        .iter()
        .filter(|n| old_on.contains_key(*n) || healthy_on(n))
        .count();
    let mut stops: Vec<&Execution> = Vec::new();
    if rolls {
        // Where the version does not run, what an earlier one runs has no slot to hold.
        for (node, executions) in &old_on {
            if !wanted.contains(node) {
                stops.extend(executions);
            }
        }
        let with_old = wanted.iter().filter(|n| old_on.contains_key(*n)).count();
        let steps = match canaries {
            // Canaries: the first nodes move to the new version, the rest wait.
            Some(n) if with_old > 0 => n.saturating_sub(wanted.len() - with_old),
            _ => covered.saturating_sub(wanted.len().saturating_sub(max_parallel)),
        };
        for (_, executions) in old_on
            .iter()
            .filter(|(n, _)| wanted.contains(*n))
            .take(steps)
        {
            stops.extend(executions);
        }
    }
    let stopped: BTreeSet<ExecutionId> = stops.iter().map(|e| e.id).collect();
    let hold = if rolls {
        Hold::Nodes(
            old.iter()
                .filter(|e| !stopped.contains(&e.id))
                .map(|e| e.node.clone())
                .collect(),
        )
    } else {
        Hold::All
    };
    Gate {
        stops: stops.into_iter().map(stop_of).collect(),
        reason,
        hold,
    }
}

/// Asks the old executions the job's rollout may replace now to stop.
pub(super) fn step(draft: &mut Draft, job: JobId) {
    let Some(gate) = draft.state.job(job).and_then(|j| gate(&draft.state, j)) else {
        return;
    };
    draft.request_stops(gate.stops, &gate.reason);
}

/// `cairn job promote`: a rolling version whose canaries run and are healthy rolls out
/// the rest. Refused when there is nothing waiting for it, or a canary is not healthy.
pub(super) fn promote(draft: &mut Draft, job_id: JobId) -> Result<(), Rejection> {
    let Some(job) = draft.state.job(job_id) else {
        return Err(Rejection::new(
            RejectionKind::UnknownJob,
            format!("unknown job {job_id}"),
        ));
    };
    let waiting = job.rollout.as_ref().filter(|r| {
        r.version == job.version
            && r.state == RolloutState::Rolling
            && !r.promoted
            && job.spec.update.is_some_and(|u| u.canary > 0)
    });
    let Some(rollout) = waiting else {
        return Err(Rejection::new(
            RejectionKind::NothingToPromote,
            format!(
                "job {:?} has no rollout waiting to be promoted (version {} {})",
                job.name,
                job.version,
                job.rollout
                    .as_ref()
                    .filter(|r| r.version == job.version)
                    .map_or("has no update canaries".to_owned(), |r| format!(
                        "is {}{}",
                        r.state,
                        if r.promoted { ", promoted" } else { "" }
                    ))
            ),
        ));
    };
    let version = rollout.version;
    let state = &draft.state;
    let canaries: Vec<&Execution> = state
        .live(job_id)
        .filter_map(|id| state.execution(id))
        .filter(|e| e.version == version && e.desired == DesiredState::Running)
        .collect();
    let unhealthy = canaries.iter().filter(|e| !is_healthy(e)).count();
    if canaries.is_empty() || unhealthy > 0 {
        return Err(Rejection::new(
            RejectionKind::NothingToPromote,
            format!(
                "job {:?} version {version}: {unhealthy} of its {} canaries are not healthy yet",
                job.name,
                canaries.len()
            ),
        ));
    }
    draft.emit(RolloutPromoted {
        job: job_id,
        version,
    });
    Ok(())
}

/// After the job was reconciled: a rolling rollout with nothing of an earlier version
/// meant to run, nothing waiting and every execution of the version healthy succeeded.
pub(super) fn progress(draft: &mut Draft, job_id: JobId) {
    let Some(version) = rolling(&draft.state, job_id) else {
        return;
    };
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    if job.state.is_terminal() || draft.state.tally(job_id).is_none_or(|t| t.waiting() > 0) {
        return;
    }
    let state = &draft.state;
    let done = state
        .live(job_id)
        .filter_map(|id| state.execution(id))
        .all(|e| e.desired != DesiredState::Running || (e.version == version && is_healthy(e)));
    if done {
        draft.emit(RolloutChanged {
            job: job_id,
            version,
            state: RolloutState::Succeeded,
            reason: None,
        });
    }
}

/// After an execution ended as its edge reports: one of the rolling version that ended
/// before it was healthy, unasked, fails the rollout. A node lost or a stop asked is no
/// fault of the version.
pub(super) fn ended(draft: &mut Draft, execution: ExecutionId) {
    let Some(e) = draft.state.execution(execution) else {
        return;
    };
    let unasked = e.desired == DesiredState::Running
        && matches!(
            e.state,
            ExecutionState::Failed | ExecutionState::Completed | ExecutionState::Stopped
        );
    if !unasked || e.healthy == Some(true) {
        return;
    }
    let mut why = format!("execution {} on node {} ended {}", e.id, e.node, e.state);
    if let Some(code) = e.exit_code {
        why.push_str(&format!(" with exit code {code}"));
    }
    why.push_str(" before it was healthy");
    let (job, version) = (e.job, e.version);
    fail_if_rolling(draft, job, version, why);
}

/// After an edge found an execution not healthy: one of the rolling version fails the
/// rollout.
pub(super) fn unhealthy(draft: &mut Draft, execution: ExecutionId, said: Option<&str>) {
    let Some(e) = draft.state.execution(execution) else {
        return;
    };
    let mut why = format!("execution {} on node {} is not healthy", e.id, e.node);
    if let Some(said) = said {
        why.push_str(&format!(": {said}"));
    }
    let (job, version) = (e.job, e.version);
    fail_if_rolling(draft, job, version, why);
}

fn fail_if_rolling(draft: &mut Draft, job_id: JobId, version: u32, why: String) {
    if rolling(&draft.state, job_id) != Some(version) {
        return;
    }
    draft.emit(RolloutChanged {
        job: job_id,
        version,
        state: RolloutState::Failed,
        reason: Some(why.clone()),
    });
    let Some(job) = draft.state.job(job_id) else {
        return;
    };
    if !job.spec.update.is_some_and(|u| u.auto_revert) {
        return;
    }
    let back = job
        .stable
        .filter(|stable| *stable != version)
        .and_then(|stable| Some((stable, job.versions.get(&stable)?)));
    let (Some((stable, spec)), Some(next)) = (back, version.checked_add(1)) else {
        return;
    };
    let spec = (**spec).clone();
    let canaries = spec.update.is_some_and(|u| u.canary > 0);
    start_version(draft, job_id, next, spec, Some(stable));
    // Going back to a version that rolled out needs no canaries tried first.
    if canaries {
        draft.emit(RolloutPromoted {
            job: job_id,
            version: next,
        });
    }
}

/// The job's state during a rollout: rolling is deploying, whatever runs; after a failure,
/// what still runs is the job running (nothing more is placed for the version), and with
/// nothing left running the job has failed. The reason, when the rollout gives one.
pub(super) fn job_state(
    state: &State,
    job: &Job,
    judged: JobState,
    reason: Option<String>,
) -> (JobState, Option<String>) {
    let Some(rollout) = job.rollout.as_ref().filter(|r| r.version == job.version) else {
        return (judged, reason);
    };
    let anything_runs = || {
        state
            .live(job.id)
            .filter_map(|id| state.execution(id))
            .any(meant_to_run)
    };
    match (rollout.state, judged) {
        (RolloutState::Rolling, JobState::Running) => (JobState::Deploying, reason),
        (RolloutState::Rolling, JobState::Queued) if anything_runs() => {
            (JobState::Deploying, reason)
        }
        (RolloutState::Failed, JobState::Queued | JobState::Deploying) => {
            if anything_runs() {
                (JobState::Running, reason)
            } else {
                let why = rollout.reason.as_deref().unwrap_or("no reason recorded");
                let reason = format!(
                    "the rollout of version {} failed ({why}) and nothing runs",
                    rollout.version
                );
                (JobState::Failed, Some(reason))
            }
        }
        _ => (judged, reason),
    }
}

fn current(state: &State, id: Option<ExecutionId>) -> Option<&Execution> {
    id.and_then(|id| state.execution(id))
}

fn meant_to_run(e: &Execution) -> bool {
    !e.state.is_terminal() && e.desired == DesiredState::Running
}

fn is_healthy(e: &Execution) -> bool {
    e.state == ExecutionState::Running && e.healthy == Some(true)
}

fn stop_of(e: &Execution) -> (ExecutionId, NodeId, u32) {
    (e.id, e.node.clone(), e.attempt)
}
