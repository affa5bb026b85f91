//! Edge reports: a node announcing itself, and its executions changing state.
//!
//! Reports come from the network, so every one is checked against the state before it
//! becomes a fact; anything that does not fit is refused with a reason, never a panic.

use cairn_shared::event::{ExecutionStateChanged, NodeReconnected, NodeRegistered};
use cairn_shared::report::{ExecutionUpdate, NodeHello};
use cairn_shared::{ExecutionState, NodeId, NodeState, Report};

use super::draft::Draft;
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
    }
}

fn node_hello(draft: &mut Draft, hello: &NodeHello) {
    let registration = NodeRegistered {
        node: hello.node.clone(),
        labels: hello.labels.clone(),
        capacity: hello.capacity,
    };
    let Some(node) = draft.state.node(&hello.node) else {
        draft.emit(registration);
        return;
    };
    let changed = node.labels != hello.labels || node.capacity != hello.capacity;
    if node.state != NodeState::Connected {
        draft.emit(NodeReconnected {
            node: hello.node.clone(),
        });
    }
    if changed {
        draft.emit(registration);
    }
}

fn execution_update(draft: &mut Draft, update: &ExecutionUpdate) -> Result<(), Rejection> {
    let id = update.execution;
    let to = update.state;
    if !is_reportable(to) {
        return Err(Rejection::new(
            RejectionKind::NotReportable,
            format!("edges report accepted, running, completed, failed or stopped, not {to}"),
        ));
    }
    let Some(execution) = draft.state.execution(id) else {
        return Err(Rejection::new(
            RejectionKind::UnknownExecution,
            format!("unknown execution {id}"),
        ));
    };
    if execution.node != update.node {
        return Err(Rejection::new(
            RejectionKind::WrongNode,
            format!(
                "execution {id} belongs to node {:?}, not {:?}",
                execution.node.as_str(),
                update.node.as_str()
            ),
        ));
    }
    if execution.attempt != update.attempt {
        return Err(Rejection::new(
            RejectionKind::WrongAttempt,
            format!(
                "execution {id} is attempt {}, the report is for attempt {}",
                execution.attempt, update.attempt
            ),
        ));
    }
    let from = execution.state;
    if from == to {
        // A resent report: the fact is already recorded.
        return Ok(());
    }
    // Edges report in order, so one behind what the edge itself reported before is an
    // older report delivered again. (An end the orchestrator decided, `lost` or
    // `cancelled`, is no report of the edge's: what the edge says after it is news.)
    let decided_end = matches!(from, ExecutionState::Lost | ExecutionState::Cancelled);
    if !decided_end && progress(to) < progress(from) {
        return Ok(());
    }
    if from.is_terminal() {
        return Err(Rejection::new(
            RejectionKind::TerminalExecution,
            format!("execution {id} already ended ({from}); it cannot become {to}"),
        ));
    }
    draft.emit(ExecutionStateChanged {
        execution: id,
        node: update.node.clone(),
        state: to,
        exit_code: update.exit_code,
        reason: update.reason.clone(),
    });
    Ok(())
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
