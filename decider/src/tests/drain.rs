//! Draining a node: service replicas move before they stop, batch work runs out, daemons
//! stop last, the deadline stops the rest, and the drain ends once nothing runs there.

use cairn_shared::event::NodeDrainStarted;
use cairn_shared::{Event, ExecutionState, JobState, Timestamp};

use super::scenario::*;

/// The deadline every drain here is given, and an instant before and after it.
const DEADLINE: u64 = 60_000;
const BEFORE: u64 = DEADLINE - 1;

/// Whether the node is still draining.
fn draining(s: &Scenario, id: &str) -> bool {
    s.state.node(&node(id)).expect("a known node").draining()
}

fn eligible(s: &Scenario, id: &str) -> bool {
    s.state.node(&node(id)).expect("a known node").eligible
}

#[test]
fn a_service_replica_moves_before_it_stops_and_the_drain_ends_when_it_has() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 4);
    let d = s.deploy(service("web", 2));
    assert_eq!(d.assigned(), [("a".into(), 1), ("b".into(), 1)]);
    let (on_a, on_b) = (exec_id(1), exec_id(2));
    s.start(on_a);
    s.start(on_b);
    assert_eq!(s.job_state("web"), JobState::Running);

    let d = s.drain("a", DEADLINE);
    assert_eq!(
        d.names(),
        [
            "NodeDrainStarted",
            "ExecutionAssigned",
            "JobStateChanged",
            "CommandAccepted"
        ]
    );
    // The replacement goes to the node the job does not use yet, and a keeps running.
    assert_eq!(d.assigned(), [("c".into(), 2)]);
    assert!(
        d.stopped().is_empty(),
        "nothing stops before it is replaced"
    );
    assert_eq!(d.job_states(), [JobState::Deploying]);
    assert!(!eligible(&s, "a") && draining(&s, "a"));
    let replacement = exec_id(3);

    // Accepted is not up yet: a still serves.
    let d = s.report(replacement, ExecutionState::Accepted);
    assert!(d.stopped().is_empty());
    let d = s.report(replacement, ExecutionState::Running);
    assert_eq!(d.stopped(), [on_a].into());
    let Some(Event::ExecutionStopRequested(stop)) = d
        .events
        .iter()
        .find(|e| matches!(e, Event::ExecutionStopRequested(_)))
    else {
        panic!("a stop: {:?}", d.names());
    };
    assert_eq!(
        stop.reason,
        format!("its replacement {replacement} runs on node c")
    );
    assert_eq!(s.job_state("web"), JobState::Running);
    assert!(
        draining(&s, "a"),
        "a still runs the replica it was asked to stop"
    );

    let d = s.report(on_a, ExecutionState::Stopped);
    assert_eq!(d.names(), ["ExecutionStateChanged", "NodeDrained"]);
    assert!(!draining(&s, "a") && !eligible(&s, "a"));
    assert!(d.assigned().is_empty(), "a stop asked for is not a crash");
    assert_eq!(s.live("web"), [("b".into(), 1), ("c".into(), 2)]);
    // A drained node stays out of service.
    assert!(
        s.deploy(batch("later", 3))
            .assigned()
            .iter()
            .all(|(n, _)| n != "a")
    );
}

#[test]
fn a_replica_with_nowhere_to_go_runs_until_the_deadline_and_the_job_says_why() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("web", 1));
    let on_a = exec_id(1);
    s.start(on_a);
    let d = s.drain("a", DEADLINE);
    assert!(d.assigned().is_empty() && d.stopped().is_empty());
    let blocked = s
        .job("web")
        .blocked
        .clone()
        .expect("it says why it cannot move");
    assert_eq!((blocked.unplaced, blocked.ineligible), (1, 1));

    // The timer before the deadline changes nothing; at it, the replica is asked to stop.
    assert!(s.drain_timer("a", BEFORE).events.is_empty());
    let d = s.drain_timer("a", DEADLINE);
    assert_eq!(d.stopped(), [on_a].into());
    // Asked again, nothing more is asked.
    assert!(s.drain_timer("a", DEADLINE + 5_000).events.is_empty());

    let d = s.report(on_a, ExecutionState::Stopped);
    assert!(d.names().contains(&"NodeDrained"), "{:?}", d.names());
    assert!(d.assigned().is_empty());
    // Back in service, the waiting replica goes back, its stop not counted as a fault.
    let d = s.eligible("a", true);
    assert_eq!(d.assigned(), [("a".into(), 2)]);
}

#[test]
fn batch_work_runs_out_on_a_draining_node_and_is_not_started_twice() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 4);
    let d = s.deploy(batch("report", 1));
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    let on_a = exec_id(1);
    s.start(on_a);
    let d = s.drain("a", DEADLINE);
    assert!(
        d.assigned().is_empty(),
        "moved, a batch task would run twice"
    );
    assert!(d.stopped().is_empty());
    assert_eq!(s.job_state("report"), JobState::Running);
    let d = s.report(on_a, ExecutionState::Completed);
    assert!(d.names().contains(&"NodeDrained"), "{:?}", d.names());
    assert_eq!(s.job_state("report"), JobState::Completed);
}

#[test]
fn at_the_deadline_batch_work_stops_and_runs_elsewhere_without_paying_an_attempt() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    let d = s.deploy(batch("report", 2));
    assert_eq!(d.assigned(), [("a".into(), 1), ("b".into(), 1)]);
    let (on_a, on_b) = (exec_id(1), exec_id(2));
    s.start(on_a);
    s.start(on_b);
    s.drain("a", DEADLINE);
    let d = s.drain_timer("a", DEADLINE);
    assert_eq!(d.stopped(), [on_a].into());
    let d = s.report(on_a, ExecutionState::Stopped);
    // b is full: the slot waits, and says why, instead of failing.
    assert!(d.assigned().is_empty());
    assert_eq!(s.job_state("report"), JobState::Deploying);
    let d = s.report(on_b, ExecutionState::Completed);
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    let retry = exec_id(3);
    s.start(retry);
    s.report(retry, ExecutionState::Completed);
    assert_eq!(s.job_state("report"), JobState::Completed);
}

#[test]
fn daemons_keep_serving_a_draining_node_until_its_other_work_has_left() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 4);
    s.deploy(daemon("agent"));
    let (agent_a, agent_b) = (exec_id(1), exec_id(2));
    s.start(agent_a);
    s.start(agent_b);
    s.deploy(batch("local", 1));
    let local = s.job("local").run.counted[0].current().expect("placed");
    s.start(local);
    assert_eq!(s.state.execution(local).unwrap().node, node("a"));

    let d = s.drain("a", DEADLINE);
    assert!(d.stopped().is_empty(), "the daemon serves what still runs");
    let d = s.report(local, ExecutionState::Completed);
    assert_eq!(d.stopped(), [agent_a].into());
    assert!(draining(&s, "a"));
    let d = s.report(agent_a, ExecutionState::Stopped);
    assert!(d.names().contains(&"NodeDrained"), "{:?}", d.names());
    // The daemon asks nothing of the drained node, and keeps running on b.
    assert!(d.assigned().is_empty());
    assert_eq!(s.live("agent"), [("b".into(), 1)]);
    assert_eq!(s.job_state("agent"), JobState::Running);
}

#[test]
fn a_node_with_only_daemons_stops_them_at_once_and_an_idle_node_drains_at_once() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 4);
    s.join("idle", &[], 4);
    s.deploy(selecting(daemon("agent"), &[("role", "edge")]));
    s.start(exec_id(1));
    let d = s.drain("a", DEADLINE);
    assert_eq!(d.stopped(), [exec_id(1)].into());
    let d = s.drain("idle", DEADLINE);
    assert_eq!(
        d.names(),
        ["NodeDrainStarted", "NodeDrained", "CommandAccepted"]
    );
}

#[test]
fn a_replacement_that_fails_leaves_the_replica_running_and_another_is_tried() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 4);
    s.deploy(service("web", 1));
    let on_a = exec_id(1);
    s.start(on_a);
    let d = s.drain("a", DEADLINE);
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    let first = exec_id(2);
    s.report(first, ExecutionState::Accepted);
    let d = s.report(first, ExecutionState::Failed);
    assert!(d.stopped().is_empty(), "a still serves");
    assert_eq!(d.assigned(), [("b".into(), 3)]);
    let second = exec_id(3);
    let d = s.report(second, ExecutionState::Accepted);
    assert!(d.stopped().is_empty());
    let d = s.report(second, ExecutionState::Running);
    assert_eq!(d.stopped(), [on_a].into());
}

#[test]
fn draining_again_sets_a_new_deadline_and_an_unknown_node_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("web", 1));
    s.start(exec_id(1));
    s.drain("a", DEADLINE);
    assert_eq!(s.drain("a", DEADLINE).names(), ["CommandAccepted"]);
    let d = s.drain("a", 2 * DEADLINE);
    assert_eq!(
        d.events.first(),
        Some(&Event::NodeDrainStarted(NodeDrainStarted {
            node: node("a"),
            deadline: Timestamp(2 * DEADLINE),
        }))
    );
    // The old deadline no longer stops anything.
    assert!(s.drain_timer("a", DEADLINE).events.is_empty());
    assert_eq!(
        s.drain_timer("a", 2 * DEADLINE).stopped(),
        [exec_id(1)].into()
    );

    let d = s.drain("ghost", DEADLINE);
    assert_eq!(d.rejected(), Some(crate::RejectionKind::UnknownNode));
}

#[test]
fn made_eligible_again_a_draining_node_is_back_in_service_with_what_it_runs() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("web", 1));
    let on_a = exec_id(1);
    s.start(on_a);
    s.drain("a", DEADLINE);
    assert_eq!(s.job_state("web"), JobState::Deploying);
    let d = s.eligible("a", true);
    assert!(!draining(&s, "a") && eligible(&s, "a"));
    assert!(d.assigned().is_empty() && d.stopped().is_empty());
    assert_eq!(s.job_state("web"), JobState::Running);
    assert!(s.job("web").blocked.is_none());
    // No deadline is left to stop it.
    assert!(s.drain_timer("a", DEADLINE).events.is_empty());
}

#[test]
fn a_draining_node_that_is_lost_is_drained_and_its_replicas_replaced() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(service("web", 1));
    s.start(exec_id(1));
    s.deploy(service("other", 1));
    s.start(exec_id(2));
    // b is full: web cannot move, and waits on a.
    s.drain("a", DEADLINE);
    s.silent("a");
    let d = s.lose("a");
    assert!(d.names().contains(&"NodeDrained"), "{:?}", d.names());
    s.report(exec_id(2), ExecutionState::Failed);
    assert_eq!(s.live("web"), [("b".into(), 2)]);
}

#[test]
fn registering_again_keeps_a_drain_going() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 4);
    s.deploy(batch("report", 1));
    s.start(exec_id(1));
    s.drain("a", DEADLINE);
    let d = s.join("a", &[("zone", "x")], 8);
    assert_eq!(d.names(), ["NodeRegistered"]);
    assert!(draining(&s, "a") && !eligible(&s, "a"));
}

#[test]
fn a_replacement_whose_own_node_drains_before_it_started_is_withdrawn_not_moved_again() {
    // Found by the property tests: each drain moved the slot's newest execution again, so
    // a slot gathered a chain of executions meant to run, and losing the newest left two.
    let mut s = Scenario::new();
    s.join("n0", &[], 1);
    s.deploy(service("web", 1));
    let first = s.live_ids("web")[0];
    s.drain("n0", 0);
    s.offering("n4", "1", "512Mi");
    let replacement = *s.live_ids("web").last().unwrap();
    assert_ne!(replacement, first);
    let d = s.drain("n4", 0);
    assert_eq!(
        d.stopped(),
        [replacement].into(),
        "withdrawn: the first one still runs"
    );
    s.join("n2", &[], 1);
    s.report(replacement, ExecutionState::Stopped);
    let third = *s.live_ids("web").last().unwrap();
    assert_eq!(s.state.execution(third).unwrap().node.as_str(), "n2");
    s.lose("n2");
    // One replica moving, and whatever replaces it next: never more.
    assert_eq!(s.live_ids("web"), [first]);
}
