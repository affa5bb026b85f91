//! Liveness facts from the shell's timers: a node went silent, stayed silent too long, or
//! was heard from again. They change placement and the fate of a lost node's executions,
//! never whether an assignment is delivered.
//!
//! Silence has two thresholds. The node is `lost` once it has been silent for the
//! orchestrator's lost-after; each of its executions is `lost` once the node has been
//! silent for its job's `disconnect.lost_after` (the orchestrator's by default), so a job
//! can give its work longer, or shorter, than the node. Both are judged from the silence
//! the shell measured, carried in the input: the decider reads no clock.

use std::time::Duration;

use cairn_shared::event::{
    ExecutionStateChanged, ExecutionStopRequested, NodeDisconnected, NodeLost, NodeReconnected,
};
use cairn_shared::report::ExecutionUpdate;
use cairn_shared::{DesiredState, ExecutionState, NodeId, NodeState, RunningAttempt, Timestamp};

use super::draft::Draft;
use super::report;
use super::state::State;

/// A heartbeat from `node`, naming the attempts it runs. An attempt it runs that was
/// declared lost is news: it is recorded as running again, before the node counts as
/// back, so nothing is placed in the slot it still fills.
pub(super) fn heard(draft: &mut Draft, node: &NodeId, running: &[RunningAttempt]) {
    // An unknown node must introduce itself with a hello before it counts.
    let Some(state) = draft.state.node(node).map(|n| n.state) else {
        return;
    };
    for attempt in running {
        let lost = draft
            .state
            .execution(attempt.execution)
            .is_some_and(|e| e.state == ExecutionState::Lost && &e.node == node);
        if !lost {
            continue;
        }
        let update = ExecutionUpdate {
            node: node.clone(),
            execution: attempt.execution,
            attempt: attempt.attempt,
            state: ExecutionState::Running,
            exit_code: None,
            reason: Some("still running when its node was heard again".to_owned()),
        };
        // A beat naming another attempt of the execution is an old one; nothing to record.
        let _ = report::execution_update(draft, &update);
    }
    if state != NodeState::Connected {
        draft.emit(NodeReconnected { node: node.clone() });
    }
}

pub(super) fn silent(draft: &mut Draft, node: &NodeId) {
    if draft
        .state
        .node(node)
        .is_some_and(|n| n.state == NodeState::Connected)
    {
        draft.emit(NodeDisconnected { node: node.clone() });
    }
}

/// How long `node` may stay silent before the next decision about its silence is due:
/// its own loss at `lost_after` (the orchestrator's), or the loss of one of its
/// executions at its job's threshold. `None` when nothing is left to decide.
pub fn lost_due(state: &State, node: &NodeId, lost_after: Duration) -> Option<Duration> {
    let n = state.node(node)?;
    let own = (n.state != NodeState::Lost).then_some(lost_after);
    let executions = state
        .active_on(node)
        .filter_map(|id| state.execution(id))
        .filter_map(|e| state.job(e.job))
        .map(|job| job.spec.lost_after(lost_after));
    own.into_iter().chain(executions).min()
}

/// The node has been silent for `silent` (since `since`): it is lost past `lost_after`,
/// and each of its executions past its job's threshold.
///
/// A lost execution is not asked to stop: if its node was only cut off, what it did
/// meanwhile is reported when it returns and reconciled then (see `report.rs`). Only work
/// the edge had not yet taken (`pending`) and that its job replaces is asked to stop, so a
/// returning edge does not start what runs elsewhere by then.
pub(super) fn lost(
    draft: &mut Draft,
    node: &NodeId,
    since: Timestamp,
    silent: Duration,
    lost_after: Duration,
) {
    let Some(n) = draft.state.node(node) else {
        return;
    };
    let node_lost = n.state != NodeState::Lost && silent >= lost_after;
    let due: Vec<_> = draft
        .state
        .active_on(node)
        .filter_map(|id| draft.state.execution(id))
        .filter_map(|e| draft.state.job(e.job).map(|job| (e, job)))
        .filter(|(_, job)| silent >= job.spec.lost_after(lost_after))
        .map(|(e, job)| {
            let untaken = e.state == ExecutionState::Pending && e.desired == DesiredState::Running;
            (e.id, e.attempt, untaken && job.spec.replaces_lost())
        })
        .collect();
    if node_lost {
        draft.emit(NodeLost { node: node.clone() });
    }
    let reason = format!("node lost (silent since {since})");
    for (execution, attempt, withdrawn) in due {
        if withdrawn {
            draft.emit(ExecutionStopRequested {
                execution,
                node: node.clone(),
                reason: format!("{reason}; replaced before its node took it"),
                attempt,
            });
        }
        draft.emit(ExecutionStateChanged {
            execution,
            node: node.clone(),
            state: ExecutionState::Lost,
            exit_code: None,
            reason: Some(reason.clone()),
        });
    }
}
