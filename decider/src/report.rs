//! Edge reports: a node announcing itself, and its executions changing state.
//!
//! Reports come from the network, so every one is checked against the state before it
//! becomes a fact; anything that does not fit is refused with a reason, never a panic.

use cairn_shared::event::{
    ExecutionHealthChanged, ExecutionStateChanged, ExecutionStopRequested, NodeReconnected,
    NodeRegistered,
};
use cairn_shared::report::{ExecutionHealth, ExecutionUpdate, NodeHello};
use cairn_shared::{DesiredState, ExecutionId, ExecutionState, NodeId, NodeState, Report};

use super::draft::Draft;
use super::drain;
use super::facts::Execution;
use super::rollout;
use super::{Rejection, RejectionKind};

/// Applies a report that arrived on `subject_node`'s subject.
pub(super) fn handle(
    draft: &mut Draft,
    subject_node: &NodeId,
    report: &Report,
) -> Result<(), Rejection> {
    if report.node() != subject_node {
        return Err(Rejection::new(
            RejectionKind::NodeMismatch,
            format!(
                "report names node {:?} but arrived on the subject of node {:?}",
                report.node().as_str(),
                subject_node.as_str()
            ),
        ));
    }
    match report {
        Report::NodeHello(hello) => {
            node_hello(draft, hello);
            Ok(())
        }
        Report::ExecutionUpdate(update) => execution_update(draft, update),
        Report::ExecutionHealth(health) => execution_health(draft, health),
    }
}

fn node_hello(draft: &mut Draft, hello: &NodeHello) {
    let registration = NodeRegistered {
        node: hello.node.clone(),
        labels: hello.labels.clone(),
        capacity: hello.capacity,
        resources: hello.resources,
    };
    let Some(node) = draft.state.node(&hello.node) else {
        draft.emit(registration);
        return;
    };
    let changed = node.labels != hello.labels
        || node.capacity != hello.capacity
        || node.resources != hello.resources;
    if node.state != NodeState::Connected {
        draft.emit(NodeReconnected {
            node: hello.node.clone(),
        });
    }
    if changed {
        draft.emit(registration);
    }
}

/// Applies an execution's state as its edge reports it (in a report, or for one declared
/// lost, in a heartbeat that names it running).
pub(super) fn execution_update(
    draft: &mut Draft,
    update: &ExecutionUpdate,
) -> Result<(), Rejection> {
    let id = update.execution;
    let to = update.state;
    if !is_reportable(to) {
        return Err(Rejection::new(
            RejectionKind::NotReportable,
            format!("edges report accepted, running, completed, failed or stopped, not {to}"),
        ));
    }
    let execution = known(draft, id, &update.node, update.attempt)?;
    let from = execution.state;
    if from == to {
        // A resent report: the fact is already recorded.
        return Ok(());
    }
    // What an edge says about an execution declared lost is news from a node that was
    // only away: the truth, recorded as it arrives and then reconciled.
    let late = from == ExecutionState::Lost;
    // Edges report in order, so one behind what the edge itself reported before is an
    // older report delivered again. (An end the orchestrator decided is no report of the
    // edge's: what the edge says after it is news.)
    let decided_end = late || from == ExecutionState::Cancelled;
    if !decided_end && progress(to) < progress(from) {
        return Ok(());
    }
    if from.is_terminal() && !late {
        return Err(Rejection::new(
            RejectionKind::TerminalExecution,
            format!("execution {id} already ended ({from}); it cannot become {to}"),
        ));
    }
    let reason = if late {
        let said = update
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        Some(format!("reported after its node was declared lost{said}"))
    } else {
        update.reason.clone()
    };
    draft.emit(ExecutionStateChanged {
        execution: id,
        node: update.node.clone(),
        state: to,
        exit_code: update.exit_code,
        reason,
    });
    if late {
        reconcile(draft, id);
    }
    if to == ExecutionState::Running {
        drain::superseded(draft, id);
    }
    if to.is_terminal() {
        rollout::ended(draft, id);
    }
    Ok(())
}

/// Records what an edge found of an execution's health, once: the first word on it is
/// the one that counts, and one that has ended has nothing more to say.
fn execution_health(draft: &mut Draft, report: &ExecutionHealth) -> Result<(), Rejection> {
    let id = report.execution;
    let execution = known(draft, id, &report.node, report.attempt)?;
    if execution.state.is_terminal() || execution.healthy.is_some() {
        return Ok(());
    }
    draft.emit(ExecutionHealthChanged {
        execution: id,
        node: report.node.clone(),
        healthy: report.healthy,
        reason: report.reason.clone(),
    });
    if !report.healthy {
        rollout::unhealthy(draft, id, report.reason.as_deref());
    }
    Ok(())
}

/// The execution a report names, if it is the node's and the attempt it runs.
fn known<'d>(
    draft: &'d Draft,
    id: ExecutionId,
    node: &NodeId,
    attempt: u32,
) -> Result<&'d Execution, Rejection> {
    let Some(execution) = draft.state.execution(id) else {
        return Err(Rejection::new(
            RejectionKind::UnknownExecution,
            format!("unknown execution {id}"),
        ));
    };
    if execution.node != *node {
        return Err(Rejection::new(
            RejectionKind::WrongNode,
            format!(
                "execution {id} belongs to node {:?}, not {:?}",
                execution.node.as_str(),
                node.as_str()
            ),
        ));
    }
    if execution.attempt != attempt {
        return Err(Rejection::new(
            RejectionKind::WrongAttempt,
            format!(
                "execution {id} is attempt {}, the report is for attempt {attempt}",
                execution.attempt
            ),
        ));
    }
    Ok(execution)
}

/// After a late report on `execution`: one execution per slot. If it took its slot back
/// (`evolve` decides that by `Run::reinstates`), whatever replaced it is asked to stop;
/// if it did not (the slot was completed, the job stopped or moved to a new version) and
/// it still runs, it is the one asked to stop. A late end needs nothing more: it is
/// recorded, and the slot's current execution carries on.
fn reconcile(draft: &mut Draft, execution: ExecutionId) {
    let Some(e) = draft.state.execution(execution) else {
        return;
    };
    let (job_id, node, attempt) = (e.job, e.node.clone(), e.attempt);
    let meant_to_run = !e.state.is_terminal() && e.desired == DesiredState::Running;
    // A job that ended (stopped, completed, failed) has no slot left to hold.
    let slot = draft
        .state
        .job(job_id)
        .filter(|job| !job.state.is_terminal())
        .and_then(|job| job.run.slot(draft.state.slot_of(job_id, execution)?));
    let stops: Vec<(ExecutionId, NodeId, u32, String)> = match slot {
        Some(slot) if slot.current() == Some(execution) => {
            let why = format!(
                "attempt {attempt} of this slot was heard from again after its node was lost, \
                 and keeps the slot"
            );
            slot.executions
                .iter()
                .filter(|id| **id != execution)
                .filter_map(|id| draft.state.execution(*id))
                .filter(|other| {
                    !other.state.is_terminal() && other.desired == DesiredState::Running
                })
                .map(|other| (other.id, other.node.clone(), other.attempt, why.clone()))
                .collect()
        }
        _ if meant_to_run => {
            let why = "its node was lost and its work moved on meanwhile".to_owned();
            vec![(execution, node, attempt, why)]
        }
        _ => Vec::new(),
    };
    for (execution, node, attempt, reason) in stops {
        draft.emit(ExecutionStopRequested {
            execution,
            node,
            reason,
            attempt,
        });
    }
}

/// The states an edge may claim; the others are the orchestrator's to decide.
fn is_reportable(state: ExecutionState) -> bool {
    matches!(
        state,
        ExecutionState::Accepted
            | ExecutionState::Running
            | ExecutionState::Completed
            | ExecutionState::Failed
            | ExecutionState::Stopped
    )
}

/// How far along its life an execution is; reports may only move it forward.
fn progress(state: ExecutionState) -> u8 {
    match state {
        ExecutionState::Pending => 0,
        ExecutionState::Accepted => 1,
        ExecutionState::Running => 2,
        _ => 3,
    }
}
