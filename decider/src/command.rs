//! Commands: deploy a job (or a new version of it), stop it, run it again, bring an
//! earlier version back; make a node eligible for new work or not, or drain it
//! (`drain.rs`).

use cairn_shared::command::{
    Command, DeployJob, JobRef, RerunJob, RevertJob, SetNodeEligibility, StopJob,
};
use cairn_shared::event::{JobStateChanged, NodeEligibilityChanged};
use cairn_shared::{JobId, JobState};

use super::draft::Draft;
use super::drain;
use super::facts::Job;
use super::rollout;
use super::state::State;
use super::{IdSource, Rejection, RejectionKind};

/// Applies a command to the draft; on success, the job it concerned (for `CommandAccepted`).
pub(super) fn handle(
    draft: &mut Draft,
    command: &Command,
    ids: &mut impl IdSource,
) -> Result<Option<JobId>, Rejection> {
    match command {
        Command::DeployJob(c) => deploy(draft, c, ids).map(Some),
        Command::StopJob(c) => stop(draft, c).map(Some),
        Command::RerunJob(c) => rerun(draft, c).map(Some),
        Command::RevertJob(c) => revert(draft, c).map(Some),
        Command::PromoteJob(c) => {
            let job = resolve(&draft.state, &c.job)?.id;
            rollout::promote(draft, job).map(|()| Some(job))
        }
        Command::SetNodeEligibility(c) => set_eligibility(draft, c).map(|()| None),
        Command::DrainNode(c) => drain::start(draft, c).map(|()| None),
    }
}

/// An ineligible node keeps what it runs and takes nothing new; made eligible again, it
/// takes what waits. Asking for what the node already is changes nothing.
fn set_eligibility(draft: &mut Draft, c: &SetNodeEligibility) -> Result<(), Rejection> {
    let node = draft.state.node(&c.node).ok_or_else(|| {
        Rejection::new(
            RejectionKind::UnknownNode,
            format!("unknown node {:?}", c.node.as_str()),
        )
    })?;
    if node.eligible != c.eligible {
        draft.emit(NodeEligibilityChanged {
            node: c.node.clone(),
            eligible: c.eligible,
        });
    }
    Ok(())
}

fn deploy(draft: &mut Draft, c: &DeployJob, ids: &mut impl IdSource) -> Result<JobId, Rejection> {
    let spec = &c.spec;
    spec.validate().map_err(|e| {
        Rejection::new(RejectionKind::InvalidSpec, format!("invalid job spec: {e}"))
    })?;
    let job = match draft.state.job_by_name(&spec.name) {
        None => {
            let job = ids.job_id();
            rollout::start_version(draft, job, 1, spec.clone(), None);
            return Ok(job);
        }
        Some(job) if job.spec == *spec && !job.state.is_terminal() => return Ok(job.id),
        Some(job) => job,
    };
    let (id, version) = (job.id, next_version(job)?);
    rollout::start_version(draft, id, version, spec.clone(), None);
    Ok(id)
}

/// An earlier version's spec, deployed as the next version. Reverting to the version that
/// runs now, or to a spec the current version already has while it runs, is refused: it
/// would change nothing, and the user asked for a change.
fn revert(draft: &mut Draft, c: &RevertJob) -> Result<JobId, Rejection> {
    let job = resolve(&draft.state, &c.job)?;
    let target = match c.version {
        Some(v) => v,
        None if job.version > 1 => job.version - 1,
        None => {
            return Err(Rejection::new(
                RejectionKind::UnknownVersion,
                format!(
                    "job {:?} has only version 1: there is nothing to revert to",
                    job.name
                ),
            ));
        }
    };
    let spec = job.versions.get(&target).ok_or_else(|| {
        Rejection::new(
            RejectionKind::UnknownVersion,
            format!(
                "job {:?} has no version {target}: its versions are 1 to {}",
                job.name, job.version
            ),
        )
    })?;
    if target == job.version {
        return Err(Rejection::new(
            RejectionKind::UnknownVersion,
            format!("version {target} is job {:?}'s current version", job.name),
        ));
    }
    if **spec == job.spec && !job.state.is_terminal() {
        return Err(Rejection::new(
            RejectionKind::UnknownVersion,
            format!(
                "version {target} of job {:?} has the spec version {} runs already",
                job.name, job.version
            ),
        ));
    }
    let (id, version, spec) = (job.id, next_version(job)?, (**spec).clone());
    rollout::start_version(draft, id, version, spec, Some(target));
    Ok(id)
}

fn next_version(job: &Job) -> Result<u32, Rejection> {
    job.version.checked_add(1).ok_or_else(|| {
        Rejection::new(
            RejectionKind::TooManyVersions,
            format!("job {:?} has no version numbers left", job.name),
        )
    })
}

fn stop(draft: &mut Draft, c: &StopJob) -> Result<JobId, Rejection> {
    let job = resolve(&draft.state, &c.job)?;
    let (id, was_terminal) = (job.id, job.state.is_terminal());
    rollout::cancel(draft, id, "job stopped");
    draft.stop_executions(id, "job stopped");
    if !was_terminal {
        draft.emit(JobStateChanged {
            job: id,
            state: JobState::Stopped,
            reason: Some("stopped on request".to_owned()),
        });
    }
    Ok(id)
}

fn rerun(draft: &mut Draft, c: &RerunJob) -> Result<JobId, Rejection> {
    let job = resolve(&draft.state, &c.job)?;
    if !job.state.is_terminal() {
        return Err(Rejection::new(
            RejectionKind::JobStillActive,
            format!(
                "job {:?} is still {}: stop it or wait for it to end before running it again",
                job.name, job.state
            ),
        ));
    }
    let (id, version) = (job.id, job.version);
    draft.emit(JobStateChanged {
        job: id,
        state: JobState::Queued,
        reason: Some(format!("rerun of version {version}")),
    });
    rollout::rerun_started(draft, id);
    Ok(id)
}

/// A job by id first, then by name, the way `cairn job stop ID|NAME` means it.
fn resolve<'s>(state: &'s State, job: &JobRef) -> Result<&'s Job, Rejection> {
    let by_id = job.0.parse::<JobId>().ok().and_then(|id| state.job(id));
    by_id.or_else(|| state.job_by_name(&job.0)).ok_or_else(|| {
        Rejection::new(
            RejectionKind::UnknownJob,
            format!("unknown job {:?}", job.0),
        )
    })
}
