//! Late truth: what a node that was declared lost says when it returns, and the job's
//! `disconnect` policy (`lost_after`, `replace`) deciding what its work does meanwhile.

use std::time::Duration;

use cairn_shared::spec::{Disconnect, HumanDuration};
use cairn_shared::{ExecutionState, JobSpec, JobState};

use super::scenario::*;
use crate::lost_due;

fn disconnect(mut spec: JobSpec, lost_after: Option<u64>, replace: bool) -> JobSpec {
    spec.disconnect = Some(Disconnect {
        lost_after: lost_after.map(|s| HumanDuration(Duration::from_secs(s))),
        replace,
    });
    spec
}

fn state_of(s: &Scenario, e: cairn_shared::ExecutionId) -> ExecutionState {
    s.state.execution(e).expect("the execution exists").state
}

/// The executions of the job's run that completed.
fn completed(s: &Scenario, name: &str) -> usize {
    s.state
        .executions()
        .filter(|e| e.job == s.job(name).id && e.state == ExecutionState::Completed)
        .count()
}

#[test]
fn a_late_completion_completes_the_batch_slot_and_stops_the_replacement() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let original = s.live_ids("j")[0];
    s.start(original);
    let d = s.lose("a");
    let replacement = d.assigned_ids()[0];
    s.start(replacement);

    let d = s.report(original, ExecutionState::Completed);
    assert!(
        d.rejection.is_none(),
        "a late report is a fact: {}",
        d.reason()
    );
    assert_eq!(
        d.names(),
        [
            "ExecutionStateChanged",
            "ExecutionStopRequested",
            "JobStateChanged"
        ]
    );
    assert_eq!(d.stopped(), [replacement].into());
    assert_eq!(s.job_state("j"), JobState::Completed);
    assert_eq!(state_of(&s, original), ExecutionState::Completed);
    let reason = s.state.execution(original).and_then(|e| e.reason.clone());
    assert_eq!(
        reason.as_deref(),
        Some("reported after its node was declared lost")
    );

    // The replacement ends as asked; the slot stays completed, by attempt 1 alone.
    let d = s.report(replacement, ExecutionState::Stopped);
    assert!(d.assigned().is_empty());
    assert_eq!(completed(&s, "j"), 1);
}

#[test]
fn a_replacement_that_never_started_is_stopped_too() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let original = s.live_ids("j")[0];
    s.start(original);
    let replacement = s.lose("a").assigned_ids()[0];
    let d = s.report(original, ExecutionState::Completed);
    assert_eq!(d.stopped(), [replacement].into());
    assert_eq!(s.job_state("j"), JobState::Completed);
}

#[test]
fn a_late_completion_after_the_replacement_completed_is_only_recorded() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let original = s.live_ids("j")[0];
    s.start(original);
    let replacement = s.lose("a").assigned_ids()[0];
    s.start(replacement);
    s.report(replacement, ExecutionState::Completed);
    assert_eq!(s.job_state("j"), JobState::Completed);

    // Both ran while the node was cut off (the reason `replace: false` exists); the log
    // says so, and nothing else changes.
    let d = s.report(original, ExecutionState::Completed);
    assert_eq!(d.names(), ["ExecutionStateChanged"]);
    assert_eq!(completed(&s, "j"), 2);
}

#[test]
fn a_late_failure_is_recorded_and_the_replacement_carries_on() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let original = s.live_ids("j")[0];
    s.start(original);
    let replacement = s.lose("a").assigned_ids()[0];
    s.start(replacement);
    let d = s.report(original, ExecutionState::Failed);
    assert_eq!(d.names(), ["ExecutionStateChanged"]);
    assert_eq!(s.live_ids("j"), [replacement]);
    assert_eq!(s.job_state("j"), JobState::Running);
}

#[test]
fn a_service_replica_heard_running_again_keeps_its_slot() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(service("web", 1));
    let original = s.live_ids("web")[0];
    s.start(original);
    let replacement = s.lose("a").assigned_ids()[0];
    s.start(replacement);

    let d = s.heartbeat_running("a", &[original]);
    assert_eq!(
        d.names(),
        [
            "ExecutionStateChanged",
            "ExecutionStopRequested",
            "NodeReconnected"
        ]
    );
    assert_eq!(d.stopped(), [replacement].into());
    assert_eq!(state_of(&s, original), ExecutionState::Running);
    assert_eq!(s.live_ids("web"), [original]);

    // The replacement's end is the end of an execution asked to stop: nothing to replace.
    let d = s.report(replacement, ExecutionState::Stopped);
    assert!(d.assigned().is_empty());
    assert_eq!(s.live("web"), [("a".into(), 1)]);
    assert_eq!(s.job_state("web"), JobState::Running);
}

#[test]
fn a_daemon_back_with_its_node_is_the_same_execution() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(daemon("agent"));
    let on_a = s.live_ids("agent")[0];
    s.start(on_a);
    s.lose("a");
    assert_eq!(state_of(&s, on_a), ExecutionState::Lost);

    let d = s.heartbeat_running("a", &[on_a]);
    assert_eq!(d.names(), ["ExecutionStateChanged", "NodeReconnected"]);
    assert!(
        d.assigned().is_empty(),
        "nothing placed where it still runs"
    );
    assert_eq!(state_of(&s, on_a), ExecutionState::Running);
    assert_eq!(s.load("a"), 1);
}

#[test]
fn a_daemon_node_back_without_its_execution_gets_a_new_one() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(daemon("agent"));
    let old = s.live_ids("agent")[0];
    s.start(old);
    s.lose("a");
    let d = s.heartbeat("a");
    assert_eq!(d.assigned(), [("a".into(), 2)]);
    // The edge restarted meanwhile and reports the attempt it lost: recorded, no more.
    let d = s.report(old, ExecutionState::Failed);
    assert_eq!(d.names(), ["ExecutionStateChanged"]);
    assert_eq!(s.live("agent"), [("a".into(), 2)]);
}

#[test]
fn a_late_running_report_for_work_that_moved_on_is_stopped() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(service("web", 1));
    let original = s.live_ids("web")[0];
    s.start(original);
    s.lose("a");
    // A new version meanwhile, then the old one is heard running.
    let mut v2 = service("web", 1);
    v2.task.args = vec!["v2".into()];
    s.deploy(v2);
    let d = s.heartbeat_running("a", &[original]);
    assert_eq!(d.stopped(), [original].into());
    assert_eq!(s.job("web").version, 2);

    // Stopped job, same story.
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let original = s.live_ids("web")[0];
    s.start(original);
    s.lose("a");
    s.stop("web");
    let d = s.report(original, ExecutionState::Running);
    assert_eq!(d.stopped(), [original].into());
}

#[test]
fn without_replace_the_slot_waits_for_its_node() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(disconnect(batch("j", 1), None, false));
    let original = s.live_ids("j")[0];
    s.start(original);
    let d = s.lose("a");
    assert!(d.assigned().is_empty(), "not replaced: {:?}", d.names());
    assert!(d.stopped().is_empty(), "not withdrawn either");
    assert_eq!(state_of(&s, original), ExecutionState::Lost);
    assert_eq!(s.job_state("j"), JobState::Running);

    let d = s.report(original, ExecutionState::Completed);
    assert_eq!(d.names(), ["ExecutionStateChanged", "JobStateChanged"]);
    assert_eq!(s.job_state("j"), JobState::Completed);
    assert_eq!(completed(&s, "j"), 1);
}

#[test]
fn without_replace_a_node_that_returns_without_the_work_fails_it_over() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(disconnect(batch("j", 1), None, false));
    let original = s.live_ids("j")[0];
    s.start(original);
    s.lose("a");
    s.heartbeat("a");
    // The edge restarted and reports the attempt it could not finish: the slot retries.
    let d = s.report(original, ExecutionState::Failed);
    assert_eq!(d.assigned().len(), 1);
}

#[test]
fn a_job_can_lose_its_work_before_the_node_is_lost() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(disconnect(batch("j", 1), Some(60), true));
    let original = s.live_ids("j")[0];
    s.start(original);
    s.silent("a");
    assert_eq!(
        lost_due(&s.state, &node("a"), LOST_AFTER),
        Some(Duration::from_secs(60))
    );
    let d = s.silent_for("a", Duration::from_secs(60));
    assert_eq!(d.names()[0], "ExecutionStateChanged", "{:?}", d.names());
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    assert_eq!(s.node_state("a"), cairn_shared::NodeState::Disconnected);
    assert_eq!(lost_due(&s.state, &node("a"), LOST_AFTER), Some(LOST_AFTER));
}

#[test]
fn a_job_can_keep_its_work_on_a_lost_node_longer() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(disconnect(service("web", 1), Some(900), true));
    let original = s.live_ids("web")[0];
    s.start(original);
    s.silent("a");
    let d = s.lose("a");
    assert_eq!(d.names(), ["NodeLost"]);
    assert_eq!(state_of(&s, original), ExecutionState::Running);
    assert_eq!(
        lost_due(&s.state, &node("a"), LOST_AFTER),
        Some(Duration::from_secs(900))
    );
    let d = s.silent_for("a", Duration::from_secs(900));
    assert_eq!(state_of(&s, original), ExecutionState::Lost);
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    assert_eq!(lost_due(&s.state, &node("a"), LOST_AFTER), None);
}
