//! Liveness: silent, lost and returning nodes, and what happens to their work.

use cairn_shared::event::{ExecutionStateChanged, NodeDisconnected, NodeLost};
use cairn_shared::{DesiredState, Event, ExecutionState, JobState, NodeState};

use super::scenario::*;

#[test]
fn a_silent_node_is_disconnected_once() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    assert_eq!(
        s.silent("a").events,
        vec![Event::from(NodeDisconnected { node: node("a") })]
    );
    assert!(s.silent("a").events.is_empty());
    assert_eq!(s.node_state("a"), NodeState::Disconnected);
}

#[test]
fn liveness_facts_about_unknown_nodes_change_nothing() {
    let mut s = Scenario::new();
    assert!(s.silent("ghost").events.is_empty());
    assert!(s.lose("ghost").events.is_empty());
    assert!(s.heartbeat("ghost").events.is_empty());
}

#[test]
fn a_heartbeat_reconnects_a_silent_node_and_is_quiet_otherwise() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    assert!(s.heartbeat("a").events.is_empty());
    s.silent("a");
    assert_eq!(s.heartbeat("a").names(), ["NodeReconnected"]);
    s.lose("a");
    assert_eq!(s.heartbeat("a").names(), ["NodeReconnected"]);
    assert_eq!(s.node_state("a"), NodeState::Connected);
}

#[test]
fn a_disconnected_node_keeps_its_work() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let d = s.silent("a");
    assert_eq!(d.names(), ["NodeDisconnected"]);
    assert_eq!(s.live("web"), [("a".into(), 1)]);
}

#[test]
fn a_lost_node_loses_its_executions_without_stopping_them() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(service("web", 1));
    let e = s.live_ids("web")[0];
    s.start(e);
    let d = s.lose("a");
    let reason = "node lost (silent since 1970-01-01T00:00:01.000Z)".to_owned();
    // Not asked to stop: if the node was only cut off, its edge says so when it returns.
    assert_eq!(
        d.events[..2],
        [
            Event::from(NodeLost { node: node("a") }),
            ExecutionStateChanged {
                execution: e,
                node: node("a"),
                state: ExecutionState::Lost,
                exit_code: None,
                reason: Some(reason),
            }
            .into(),
        ]
    );
    assert!(!d.names().contains(&"ExecutionStopRequested"));
    assert_eq!(s.load("a"), 0);
    assert!(s.lose("a").events.is_empty(), "lost once");
}

#[test]
fn work_a_lost_node_never_took_is_withdrawn_when_it_is_replaced() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    let d = s.lose("a");
    assert_eq!(
        d.names()[..3],
        [
            "NodeLost",
            "ExecutionStopRequested",
            "ExecutionStateChanged"
        ]
    );
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    assert_eq!(
        s.state.execution(e).map(|e| e.desired),
        Some(DesiredState::Stopped)
    );
}

#[test]
fn a_lost_batch_execution_is_retried_elsewhere() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    assert_eq!(s.live("j"), [("a".into(), 1)]);
    let d = s.lose("a");
    assert_eq!(d.assigned(), [("b".into(), 2)]);
}

#[test]
fn a_lost_node_is_never_chosen() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 5);
    s.lose("a");
    let d = s.deploy(batch("j", 1));
    assert!(d.assigned().is_empty());
    assert_eq!(s.job_state("j"), JobState::Queued);
}

#[test]
fn a_lost_node_that_returns_is_used_again() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.lose("a");
    s.deploy(batch("j", 1));
    let d = s.heartbeat("a");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

#[test]
fn connected_nodes_are_preferred_but_disconnected_ones_still_take_work() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.silent("a");
    let d = s.deploy(batch("j", 2));
    // b first because it is connected; a too, because nothing else fits and its assignment
    // waits for it on its subject.
    assert_eq!(d.assigned(), [("b".into(), 1), ("a".into(), 1)]);
}
