//! Liveness facts from the shell's timers: a node went silent, stayed silent too long, or
//! was heard from again. They change placement and the fate of a lost node's executions,
//! never whether an assignment is delivered.

use cairn_shared::event::{
    ExecutionStateChanged, ExecutionStopRequested, NodeDisconnected, NodeLost, NodeReconnected,
};
use cairn_shared::{DesiredState, ExecutionState, NodeId, NodeState, Timestamp};

use super::draft::Draft;

pub(super) fn heard(draft: &mut Draft, node: &NodeId) {
    // An unknown node must introduce itself with a hello before it counts.
    if draft
        .state
        .node(node)
        .is_some_and(|n| n.state != NodeState::Connected)
    {
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

/// Marks the node lost and ends its executions as lost. Each is also asked to stop, so
/// that if the node was only cut off it does not keep running work replaced elsewhere.
pub(super) fn lost(draft: &mut Draft, node: &NodeId, since: Timestamp) {
    let Some(n) = draft.state.node(node) else {
        return;
    };
    if n.state == NodeState::Lost {
        return;
    }
    let executions: Vec<_> = n
        .active
        .iter()
        .filter_map(|id| draft.state.execution(*id))
        .map(|e| (e.id, e.desired, e.attempt))
        .collect();
    draft.emit(NodeLost { node: node.clone() });
    let reason = format!("node lost (silent since {since})");
    for (execution, desired, attempt) in executions {
        if desired == DesiredState::Running {
            draft.emit(ExecutionStopRequested {
                execution,
                node: node.clone(),
                reason: reason.clone(),
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
