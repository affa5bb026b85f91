//! Draining a node: taking it out of service without leaving work undone.
//!
//! A drain makes the node ineligible at once and records its deadline. Then, from facts:
//! each service replica there is a moving slot (see `tally.rs`) that placement gives a
//! replacement elsewhere, and the replica is asked to stop once its replacement runs
//! ([`superseded`]), so the slot never goes without a running execution it could have had.
//! Batch and ops work runs out on the node (restarted elsewhere it would run twice), and
//! daemons keep serving it, until the rest has left: then they are asked to stop. At the
//! deadline, whatever still runs there is asked to stop ([`deadline`]), and a batch or
//! service slot whose execution that ends is placed elsewhere without counting it as a
//! fault. The drain is over, with `NodeDrained`, once nothing runs there; the node stays
//! ineligible until it is made eligible again, which also ends a drain in progress.

use cairn_shared::command::DrainNode;
use cairn_shared::event::{NodeDrainStarted, NodeDrained};
use cairn_shared::{DesiredState, ExecutionId, ExecutionState, JobType, NodeId, Timestamp};

use super::draft::Draft;
use super::facts::Execution;
use super::{Rejection, RejectionKind};

/// `cairn node drain`: starts the drain, or sets a new deadline for one in progress.
pub(super) fn start(draft: &mut Draft, c: &DrainNode) -> Result<(), Rejection> {
    let node = draft.state.node(&c.node).ok_or_else(|| {
        Rejection::new(
            RejectionKind::UnknownNode,
            format!("unknown node {:?}", c.node.as_str()),
        )
    })?;
    if node.drain != Some(c.deadline) {
        draft.emit(NodeDrainStarted {
            node: c.node.clone(),
            deadline: c.deadline,
        });
    }
    Ok(())
}

/// The shell's timer: it is `now` and the node may be draining past its deadline. Every
/// execution still meant to run there is asked to stop.
pub(super) fn deadline(draft: &mut Draft, node: &NodeId, now: Timestamp) {
    let Some(deadline) = draft.state.node(node).and_then(|n| n.drain) else {
        return;
    };
    if now < deadline {
        return;
    }
    let reason = format!("node {node} is draining and its deadline {deadline} passed");
    let running = meant_to_run(draft, node);
    draft.request_stops(running, &reason);
    draft.check_drain(node);
}

/// Moves a drain on after what ran on the node changed: its daemons stop once nothing
/// else runs there, and the drain is over once nothing at all does.
pub(super) fn progress(draft: &mut Draft, node: &NodeId) {
    if !draft.state.node(node).is_some_and(|n| n.draining()) {
        return;
    }
    withdraw_unstarted(draft, node);
    let others_left = draft
        .state
        .active_on(node)
        .filter_map(|id| draft.state.execution(id))
        .all(|e| is_daemon(draft, e));
    if others_left {
        let daemons = meant_to_run(draft, node);
        let reason = format!("node {node} is draining and its other work has left");
        draft.request_stops(daemons, &reason);
    }
    if draft.state.load(node) == 0 {
        draft.emit(NodeDrained { node: node.clone() });
    }
}

/// A replacement on the node that has not started yet, while the replica it was to
/// replace still runs elsewhere, is asked to stop rather than moved on in turn: the slot
/// then keeps one execution moving and one replacing it, never a chain of them.
fn withdraw_unstarted(draft: &mut Draft, node: &NodeId) {
    let state = &draft.state;
    let unstarted: Vec<_> = state
        .active_on(node)
        .filter_map(|id| state.execution(id))
        .filter(|e| {
            e.desired == DesiredState::Running
                && matches!(e.state, ExecutionState::Pending | ExecutionState::Accepted)
        })
        .filter(|e| {
            let slot = state
                .job(e.job)
                .filter(|j| j.version == e.version)
                .and_then(|j| j.run.slot(state.slot_of(e.job, e.id)?));
            slot.is_some_and(|slot| {
                slot.current() == Some(e.id)
                    && slot
                        .executions
                        .iter()
                        .filter(|id| **id != e.id)
                        .filter_map(|id| state.execution(*id))
                        .any(|x| !x.state.is_terminal() && x.desired == DesiredState::Running)
            })
        })
        .map(|e| (e.id, e.node.clone(), e.attempt))
        .collect();
    let reason =
        format!("node {node} is draining and the replica this was to replace still runs elsewhere");
    draft.request_stops(unstarted, &reason);
}

/// After `execution` started running as its slot's current one: every execution before
/// it in the slot that is still meant to run (a replica on a draining node it replaces)
/// is asked to stop.
pub(super) fn superseded(draft: &mut Draft, execution: ExecutionId) {
    let Some(e) = draft.state.execution(execution) else {
        return;
    };
    let (job, node) = (e.job, e.node.clone());
    let Some(slot) = draft
        .state
        .job(job)
        .filter(|j| !j.state.is_terminal())
        .and_then(|j| j.run.slot(draft.state.slot_of(job, execution)?))
        .filter(|slot| slot.current() == Some(execution))
    else {
        return;
    };
    let reason = format!("its replacement {execution} runs on node {node}");
    let before: Vec<_> = slot
        .executions
        .iter()
        .filter(|id| **id != execution)
        .filter_map(|id| draft.state.execution(*id))
        .filter(|e| !e.state.is_terminal() && e.desired == DesiredState::Running)
        .map(|e| (e.id, e.node.clone(), e.attempt))
        .collect();
    draft.request_stops(before, &reason);
}

/// Whether the execution serves a daemon: its job's current version is one, and it is of
/// that version (an earlier version's execution, maybe of another type, is on its way out).
fn is_daemon(draft: &Draft, e: &Execution) -> bool {
    draft
        .state
        .job(e.job)
        .is_some_and(|j| j.spec.job_type == JobType::Daemon && j.version == e.version)
}

/// The executions on `node` not yet ended and still meant to run.
fn meant_to_run(draft: &Draft, node: &NodeId) -> Vec<(ExecutionId, NodeId, u32)> {
    draft
        .state
        .active_on(node)
        .filter_map(|id| draft.state.execution(id))
        .filter(|e| e.desired == DesiredState::Running)
        .map(|e| (e.id, e.node.clone(), e.attempt))
        .collect()
}
