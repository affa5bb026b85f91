//! The scheduler: every job type, selectors, capacity, spread, retries and replacement.

use cairn_shared::resources::Resource;
use cairn_shared::spec::{Constraint, ConstraintOp};
use cairn_shared::{ExecutionState, JobSpec, JobState};

use super::scenario::*;
use crate::MAX_ATTEMPTS;

// --- selectors and capacity -------------------------------------------------------------

#[test]
fn non_matching_nodes_get_nothing() {
    let mut s = Scenario::new();
    s.join("edge", &[("role", "edge")], 5);
    s.join("core", &[("role", "core")], 5);
    s.join("bare", &[], 5);
    let d = s.deploy(selecting(batch("j", 3), &[("role", "edge")]));
    assert_eq!(
        d.assigned(),
        [("edge".into(), 1), ("edge".into(), 1), ("edge".into(), 1)]
    );
}

#[test]
fn a_selector_needs_every_pair() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge"), ("zone", "x")], 1);
    s.join("b", &[("role", "edge"), ("zone", "y")], 1);
    let d = s.deploy(selecting(daemon("d"), &[("role", "edge"), ("zone", "y")]));
    assert_eq!(d.assigned(), [("b".into(), 1)]);
}

#[test]
fn capacity_is_respected_and_the_rest_waits() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    let d = s.deploy(batch("j", 3));
    assert_eq!(d.assigned().len(), 2);
    assert_eq!(s.job_state("j"), JobState::Deploying);
    let first = s.live_ids("j")[0];
    let d = s.report(first, ExecutionState::Completed);
    assert_eq!(
        d.assigned(),
        [("a".into(), 1)],
        "the freed place is filled at once"
    );
}

#[test]
fn capacity_zero_takes_nothing() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 0);
    assert!(s.deploy(daemon("d")).assigned().is_empty());
    assert_eq!(s.job_state("d"), JobState::Queued);
}

#[test]
fn a_job_with_no_node_stays_queued_until_one_joins() {
    let mut s = Scenario::new();
    let d = s.deploy(service("web", 2));
    assert_eq!(d.names(), ["JobDeployed", "JobBlocked", "CommandAccepted"]);
    assert_eq!(s.job_state("web"), JobState::Queued);
    let d = s.join("a", &[], 1);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(d.job_states(), [JobState::Deploying]);
    assert_eq!(
        d.names().last(),
        Some(&"JobBlocked"),
        "one still waits, now for another reason"
    );
    let d = s.join("b", &[], 1);
    assert_eq!(d.assigned(), [("b".into(), 1)]);
    assert_eq!(d.job_states(), [], "already deploying");
    assert_eq!(d.names().last(), Some(&"JobUnblocked"));
    assert_eq!(s.job("web").blocked, None);
}

#[test]
fn a_blocked_job_records_what_ruled_out_each_node_and_when_that_changes() {
    let mut s = Scenario::new();
    s.offering("small", "2", "256Mi");
    s.join("core", &[("role", "core")], 4);
    s.join("zoned", &[("role", "edge"), ("zone", "b")], 1);
    let mut spec = asking(service("web", 2), "100m", "1Gi");
    spec.constraints.push(Constraint {
        key: "role".into(),
        op: ConstraintOp::NotIn,
        values: vec!["core".into()],
    });
    s.deploy(spec);
    let blocked = s.job("web").blocked.clone().expect("blocked");
    assert_eq!(blocked.unplaced, 1, "zoned takes one");
    assert_eq!(blocked.nodes, 3);
    assert_eq!(
        blocked.constraints,
        [("role notin [core]".to_owned(), 1)].into()
    );
    assert_eq!(blocked.exhausted, [(Resource::Memory, 1)].into());
    assert_eq!(blocked.capped, 1, "zoned took one and is at its cap");
    assert_eq!(blocked.available, 0);
    assert_eq!(blocked.shortest(), Some(Resource::Memory));

    // The same facts again change no reason and record nothing.
    let d = s.heartbeat("small");
    assert!(d.events.is_empty(), "{:?}", d.names());
    // Losing the small node changes the reason: it is now lost, not short of memory.
    let d = s.lose("small");
    assert!(d.names().contains(&"JobBlocked"), "{:?}", d.names());
    let blocked = s.job("web").blocked.clone().expect("blocked");
    assert_eq!((blocked.lost, blocked.exhausted.len()), (1, 0));
    // Stopping the job ends the blockage without another event.
    let d = s.stop("web");
    assert!(!d.names().contains(&"JobUnblocked"), "{:?}", d.names());
    assert_eq!(s.job("web").blocked, None);
}

#[test]
fn a_node_raising_its_capacity_takes_waiting_work() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 2));
    let d = s.join("a", &[], 2);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

#[test]
fn a_node_full_of_stuck_pending_executions_still_takes_work_up_to_capacity() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("stuck", 2));
    // Never accepted: pending forever.
    let d = s.deploy(batch("next", 3));
    assert_eq!(d.assigned(), [("a".into(), 1), ("a".into(), 1)]);
    assert_eq!(s.load("a"), 4);
}

#[test]
fn a_stuck_execution_of_one_job_does_not_keep_another_job_off_its_node() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(batch("stuck", 1));
    s.silent("a");
    let d = s.deploy(batch("other", 1));
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

// --- spread -----------------------------------------------------------------------------

#[test]
fn executions_spread_to_the_least_loaded_node_then_by_id() {
    let mut s = Scenario::new();
    s.nodes(&["b", "a", "c"], 3);
    s.deploy(batch("busy", 1)); // on a
    let d = s.deploy(batch("j", 4));
    assert_eq!(
        d.assigned(),
        [
            ("b".into(), 1),
            ("c".into(), 1),
            ("a".into(), 1),
            ("b".into(), 1)
        ]
    );
}

#[test]
fn the_same_inputs_always_give_the_same_events() {
    let run = || {
        let mut s = Scenario::new();
        s.nodes(&["c", "a", "b"], 2);
        s.deploy(service("web", 4));
        s.deploy(daemon("d"));
        s.lose("b");
        s.log
    };
    assert_eq!(run(), run());
}

#[test]
fn older_jobs_get_freed_capacity_first() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("hog", 1));
    s.deploy(batch("first", 1));
    s.deploy(batch("second", 1));
    let hog = s.live_ids("hog")[0];
    s.report(hog, ExecutionState::Completed);
    assert_eq!(s.live("first"), [("a".into(), 1)]);
    assert!(s.live("second").is_empty());
}

// --- batch ------------------------------------------------------------------------------

#[test]
fn a_batch_completes_when_every_execution_completed() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 2));
    let [e1, e2] = s.live_ids("j")[..] else {
        panic!("two executions")
    };
    s.start(e1);
    s.start(e2);
    assert_eq!(s.job_state("j"), JobState::Running);
    assert_eq!(s.report(e1, ExecutionState::Completed).job_states(), []);
    assert_eq!(
        s.report(e2, ExecutionState::Completed).job_states(),
        [JobState::Completed]
    );
}

#[test]
fn a_failed_batch_execution_is_retried_on_another_node() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    let d = s.report(e, ExecutionState::Failed);
    assert_eq!(d.assigned(), [("b".into(), 2)]);
    assert_ne!(d.assigned_ids()[0], e, "a retry is a new execution");
}

#[test]
fn a_retry_uses_the_same_node_when_no_other_fits() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    assert_eq!(
        s.report(e, ExecutionState::Failed).assigned(),
        [("a".into(), 2)]
    );
}

#[test]
fn a_batch_fails_when_a_slot_runs_out_of_attempts_and_stops_the_rest() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 2);
    s.deploy(batch("j", 2));
    let [mut flaky, other] = s.live_ids("j")[..] else {
        panic!("two executions")
    };
    for attempt in 1..MAX_ATTEMPTS {
        let d = s.report(flaky, ExecutionState::Failed);
        assert_eq!(d.assigned().len(), 1);
        assert_eq!(d.assigned()[0].1, attempt + 1);
        flaky = d.assigned_ids()[0];
    }
    let d = s.report(flaky, ExecutionState::Failed);
    assert!(d.assigned().is_empty());
    assert_eq!(d.job_states(), [JobState::Failed]);
    assert_eq!(d.stopped(), [other].into());
    let reason = d
        .events
        .iter()
        .find_map(|e| match e {
            cairn_shared::Event::JobStateChanged(c) => c.reason.clone(),
            _ => None,
        })
        .unwrap_or_default();
    assert!(reason.contains("all 3 attempts"), "{reason}");
}

#[test]
fn slots_are_retried_independently() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(batch("j", 2));
    let [e1, e2] = s.live_ids("j")[..] else {
        panic!("two executions")
    };
    s.report(e2, ExecutionState::Failed);
    s.report(e1, ExecutionState::Completed);
    let retry = s.live_ids("j")[0];
    let d = s.report(retry, ExecutionState::Completed);
    assert_eq!(d.job_states(), [JobState::Completed]);
}

#[test]
fn an_unasked_stop_counts_as_a_failed_attempt() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    assert_eq!(
        s.report(e, ExecutionState::Stopped).assigned(),
        [("a".into(), 2)]
    );
}

// --- ops --------------------------------------------------------------------------------

#[test]
fn ops_runs_once_on_every_matching_node() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 1);
    s.join("b", &[("role", "edge")], 1);
    s.join("c", &[("role", "core")], 1);
    let d = s.deploy(selecting(ops("patch"), &[("role", "edge")]));
    assert_eq!(d.assigned(), [("a".into(), 1), ("b".into(), 1)]);
    let d = s.join("late", &[("role", "edge")], 1);
    assert!(
        d.assigned().is_empty(),
        "ops targets are fixed when the job starts"
    );
    for e in s.live_ids("patch") {
        s.report(e, ExecutionState::Completed);
    }
    assert_eq!(s.job_state("patch"), JobState::Completed);
}

#[test]
fn ops_fails_if_any_node_failed_and_does_not_retry() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(ops("patch"));
    let [e1, e2] = s.live_ids("patch")[..] else {
        panic!("two executions")
    };
    let d = s.report(e1, ExecutionState::Failed);
    assert!(d.assigned().is_empty());
    assert_eq!(d.job_states(), [], "it waits for every node");
    let d = s.report(e2, ExecutionState::Completed);
    assert_eq!(d.job_states(), [JobState::Failed]);
}

#[test]
fn ops_that_matches_no_node_fails_at_once() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "core")], 1);
    let d = s.deploy(selecting(ops("patch"), &[("role", "edge")]));
    assert_eq!(d.job_states(), [JobState::Failed]);
}

#[test]
fn an_ops_target_waits_for_room_on_its_node() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let d = s.deploy(ops("patch"));
    assert!(d.assigned().is_empty());
    assert_eq!(s.job_state("patch"), JobState::Queued);
    s.stop("web");
    let web = s.state.live(s.job("web").id).next().expect("still there");
    let d = s.report(web, ExecutionState::Stopped);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

#[test]
fn an_ops_target_lost_before_placement_fails_the_job() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 0);
    s.nodes(&["b"], 1);
    s.deploy(ops("patch"));
    let e = s.live_ids("patch")[0];
    s.lose("a");
    let d = s.report(e, ExecutionState::Completed);
    assert_eq!(d.job_states(), [JobState::Failed]);
}

#[test]
fn a_lost_ops_execution_is_not_retried() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(ops("patch"));
    let d = s.lose("a");
    assert!(d.assigned().is_empty());
}

// --- constraints ------------------------------------------------------------------------

fn constrained(mut spec: JobSpec, key: &str, op: ConstraintOp, values: &[&str]) -> JobSpec {
    spec.constraints.push(Constraint {
        key: key.to_owned(),
        op,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    });
    spec
}

#[test]
fn an_in_constraint_places_only_on_nodes_with_a_listed_value() {
    let mut s = Scenario::new();
    s.join("a1", &[("zone", "a")], 5);
    s.join("b1", &[("zone", "b")], 5);
    s.join("bare", &[], 5);
    let d = s.deploy(constrained(batch("j", 3), "zone", ConstraintOp::In, &["a"]));
    assert_eq!(d.assigned(), vec![("a1".to_owned(), 1); 3]);
    let d = s.deploy(constrained(
        daemon("d"),
        "zone",
        ConstraintOp::NotIn,
        &["a"],
    ));
    assert_eq!(d.assigned(), [("b1".into(), 1), ("bare".into(), 1)]);
}

#[test]
fn exists_and_notexists_read_only_whether_the_label_is_there() {
    let mut s = Scenario::new();
    s.join("gpu", &[("gpu", "")], 5);
    s.join("cpu", &[("role", "edge")], 5);
    let d = s.deploy(constrained(
        daemon("train"),
        "gpu",
        ConstraintOp::Exists,
        &[],
    ));
    assert_eq!(d.assigned(), [("gpu".into(), 1)]);
    let d = s.deploy(constrained(
        daemon("serve"),
        "gpu",
        ConstraintOp::NotExists,
        &[],
    ));
    assert_eq!(d.assigned(), [("cpu".into(), 1)]);
}

#[test]
fn a_daemon_is_stopped_where_a_constraint_stops_holding_and_placed_where_it_starts() {
    let mut s = Scenario::new();
    s.join("a", &[("gpu", "1")], 1);
    s.join("b", &[], 1);
    s.deploy(constrained(
        daemon("train"),
        "gpu",
        ConstraintOp::Exists,
        &[],
    ));
    let e = s.live_ids("train")[0];
    let d = s.join("a", &[], 1);
    assert_eq!(d.stopped(), [e].into());
    s.report(e, ExecutionState::Stopped);
    let d = s.join("b", &[("gpu", "1")], 1);
    assert_eq!(d.assigned(), [("b".into(), 1)]);
}

// --- daemon -----------------------------------------------------------------------------

#[test]
fn a_daemon_runs_on_every_matching_node_including_later_ones() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 1);
    let d = s.deploy(selecting(daemon("agent"), &[("role", "edge")]));
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    let d = s.join("b", &[("role", "edge")], 1);
    assert_eq!(d.assigned(), [("b".into(), 1)]);
    let d = s.join("c", &[("role", "core")], 1);
    assert!(d.assigned().is_empty());
    let d = s.join("c", &[("role", "edge")], 1);
    assert_eq!(d.assigned(), [("c".into(), 1)], "relabelled to match");
}

#[test]
fn a_daemon_is_stopped_on_a_node_that_stops_matching() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 1);
    s.deploy(selecting(daemon("agent"), &[("role", "edge")]));
    let e = s.live_ids("agent")[0];
    let d = s.join("a", &[("role", "core")], 1);
    assert_eq!(d.stopped(), [e].into());
    let d = s.report(e, ExecutionState::Stopped);
    assert!(d.assigned().is_empty());
    let d = s.join("a", &[("role", "edge")], 1);
    assert_eq!(d.assigned(), [("a".into(), 2)], "matching again");
}

#[test]
fn a_daemon_on_a_lost_node_is_not_moved_and_comes_back_with_the_node() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(daemon("agent"));
    let d = s.lose("a");
    assert!(d.assigned().is_empty(), "one per node, never elsewhere");
    assert_eq!(s.live("agent"), [("b".into(), 1)]);
    let d = s.heartbeat("a");
    assert_eq!(d.assigned(), [("a".into(), 2)]);
}

#[test]
fn a_daemon_keeps_running_and_never_completes() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(daemon("agent"));
    let e = s.live_ids("agent")[0];
    s.start(e);
    assert_eq!(s.job_state("agent"), JobState::Running);
    let d = s.report(e, ExecutionState::Completed);
    assert_eq!(d.assigned(), [("a".into(), 2)], "an exit is restarted");
    assert_ne!(s.job_state("agent"), JobState::Completed);
}

#[test]
fn a_crash_looping_daemon_fails() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(daemon("agent"));
    for _ in 0..MAX_ATTEMPTS {
        let e = s.live_ids("agent")[0];
        s.report(e, ExecutionState::Failed);
    }
    assert_eq!(s.job_state("agent"), JobState::Failed);
    assert!(s.live("agent").is_empty());
}

// --- service ----------------------------------------------------------------------------

#[test]
fn a_service_keeps_count_replicas_on_different_nodes() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 4);
    let d = s.deploy(service("web", 3));
    assert_eq!(
        d.assigned(),
        [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
    );
}

#[test]
fn a_lost_replica_is_replaced_on_another_node() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(service("web", 1));
    let d = s.lose("a");
    assert_eq!(d.assigned(), [("b".into(), 2)]);
}

#[test]
fn replicas_lost_many_times_are_still_replaced() {
    let mut s = Scenario::new();
    s.deploy(service("web", 1));
    for round in 0..MAX_ATTEMPTS + 2 {
        let id = format!("n{round}");
        s.join(&id, &[], 1);
        s.lose(&id);
    }
    s.join("last", &[], 1);
    assert_eq!(s.live("web"), [("last".into(), MAX_ATTEMPTS + 3)]);
    assert_ne!(s.job_state("web"), JobState::Failed);
}

#[test]
fn a_failed_replica_is_replaced_and_a_crash_loop_fails_the_service() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(service("web", 2));
    let mut flaky = s.live_ids("web")[0];
    for attempt in 1..MAX_ATTEMPTS {
        let d = s.report(flaky, ExecutionState::Failed);
        assert_eq!(d.assigned().len(), 1);
        assert_eq!(d.assigned()[0].1, attempt + 1);
        flaky = d.assigned_ids()[0];
    }
    let d = s.report(flaky, ExecutionState::Failed);
    assert_eq!(d.job_states(), [JobState::Failed]);
    assert_eq!(d.stopped().len(), 1, "the healthy replica is stopped too");
}

#[test]
fn a_service_that_lost_every_node_waits_queued() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let d = s.lose("a");
    assert_eq!(d.job_states(), [JobState::Queued]);
    let d = s.join("b", &[], 1);
    assert_eq!(d.assigned(), [("b".into(), 2)]);
}

// --- more ---------------------------------------------------------------------------------

#[test]
fn a_disconnected_node_still_gets_its_daemon() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.silent("a");
    let d = s.deploy(daemon("agent"));
    assert_eq!(d.assigned(), [("a".into(), 1)], "no skipped dispatch");
}

#[test]
fn slots_failing_together_are_retried_together() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 2));
    let [e1, e2] = s.live_ids("j")[..] else {
        panic!("two executions")
    };
    assert!(s.lose("a").assigned().is_empty(), "b is full");
    s.lose("b");
    s.report_on("a", hello("a", &[], 2));
    assert_eq!(s.live("j"), [("a".into(), 2), ("a".into(), 2)]);
    let slots = &s.job("j").run.counted;
    assert_eq!(slots[0].executions[0], e1);
    assert_eq!(slots[1].executions[0], e2);
    assert!(slots.iter().all(|slot| slot.executions.len() == 2));
    for e in s.live_ids("j") {
        s.report(e, ExecutionState::Completed);
    }
    assert_eq!(s.job_state("j"), JobState::Completed);
}

#[test]
fn a_rerun_of_ops_targets_the_nodes_matching_now() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(ops("patch"));
    let e = s.live_ids("patch")[0];
    s.report(e, ExecutionState::Completed);
    s.join("b", &[], 1);
    let d = s.rerun("patch");
    assert_eq!(d.assigned(), [("a".into(), 1), ("b".into(), 1)]);
}

#[test]
fn a_new_daemon_version_waits_for_the_old_one_to_free_the_node() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(daemon("agent"));
    let old = s.live_ids("agent")[0];
    let mut v2 = daemon("agent");
    v2.task.command = vec!["v2".into()];
    let d = s.deploy(v2);
    assert_eq!(d.stopped(), [old].into());
    assert!(d.assigned().is_empty());
    let d = s.report(old, ExecutionState::Stopped);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(
        s.state.execution(d.assigned_ids()[0]).map(|e| e.version),
        Some(2)
    );
}

#[test]
fn stopping_reaches_executions_of_every_version() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("web", 1));
    let mut v2 = service("web", 1);
    v2.task.command = vec!["v2".into()];
    s.deploy(v2);
    let d = s.stop("web");
    assert_eq!(d.stopped().len(), 1, "v1 was already asked to stop");
    assert!(s.live("web").is_empty());
}

#[test]
fn a_late_report_of_an_old_version_is_still_recorded() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(service("web", 1));
    let old = s.live_ids("web")[0];
    let mut v2 = service("web", 1);
    v2.task.command = vec!["v2".into()];
    s.deploy(v2);
    let d = s.report(old, ExecutionState::Running);
    assert_eq!(d.ended(), [(old, ExecutionState::Running)]);
    assert!(
        d.job_states().is_empty(),
        "the old version does not drive the job"
    );
}

#[test]
fn room_taken_without_placing_anything_renews_the_reasons_of_other_blocked_jobs() {
    use cairn_shared::event::{
        ExecutionAssigned, ExecutionStateChanged, JobBlocked, JobDeployed, JobStateChanged,
        NodeDisconnected, NodeRegistered,
    };
    use cairn_shared::placement::Placement;
    let registered = |id: &str, capacity| NodeRegistered {
        node: node(id),
        labels: labels(&[]),
        capacity: Some(capacity),
        resources: None,
    };
    let x = spec("x", cairn_shared::JobType::Service, Some(1));
    let b = daemon("b");
    let assigned = |execution, job, spec: &JobSpec| ExecutionAssigned {
        execution,
        job,
        job_name: spec.name.clone(),
        version: 1,
        node: node("n"),
        attempt: 1,
        task: spec.task.clone(),
        resources: None,
        delay: None,
        health: None,
    };
    let mut s = Scenario::new();
    // n is only disconnected, and x's execution there was lost by its job's threshold; b
    // runs on n and waits for m, which is at its cap.
    s.given([
        registered("n", 2).into(),
        registered("m", 0).into(),
        NodeDisconnected { node: node("n") }.into(),
        JobDeployed {
            job: job_id(1),
            version: 1,
            spec: x.clone(),
            reverted_to: None,
        }
        .into(),
        assigned(exec_id(1), job_id(1), &x).into(),
        ExecutionStateChanged {
            execution: exec_id(1),
            node: node("n"),
            state: ExecutionState::Lost,
            exit_code: None,
            reason: None,
        }
        .into(),
        JobDeployed {
            job: job_id(2),
            version: 1,
            spec: b.clone(),
            reverted_to: None,
        }
        .into(),
        assigned(exec_id(2), job_id(2), &b).into(),
        JobStateChanged {
            job: job_id(2),
            state: JobState::Deploying,
            reason: None,
        }
        .into(),
        JobBlocked {
            job: job_id(2),
            placement: Placement {
                unplaced: 1,
                nodes: 2,
                capped: 1,
                available: 1,
                ..Placement::default()
            },
        }
        .into(),
    ]);
    // x's edge was only away: its late report has x running again on n, which fills n. No
    // placement is due, and b is not this report's job, yet b's reasons changed.
    let d = s.report_on("n", update("n", exec_id(1), 1, ExecutionState::Running));
    assert!(d.names().contains(&"JobBlocked"), "{:?}", d.names());
    let blocked = s.job("b").blocked.clone().expect("still blocked");
    assert_eq!((blocked.capped, blocked.available), (2, 0));
}

// --- eligibility ------------------------------------------------------------------------

#[test]
fn an_ineligible_node_keeps_what_it_runs_and_gets_nothing_new() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 4);
    s.deploy(daemon("agent"));
    let d = s.eligible("a", false);
    assert_eq!(d.names(), ["NodeEligibilityChanged", "CommandAccepted"]);
    assert!(d.stopped().is_empty(), "what runs there keeps running");
    assert_eq!(s.live("agent").len(), 2);
    let d = s.deploy(service("web", 2));
    assert_eq!(d.assigned(), [("b".into(), 1), ("b".into(), 1)]);
    let d = s.deploy(batch("elsewhere", 1));
    assert_eq!(d.assigned(), [("b".into(), 1)]);
    // Asking again for what it is changes nothing.
    let d = s.eligible("a", false);
    assert_eq!(d.names(), ["CommandAccepted"]);
}

#[test]
fn a_node_made_eligible_again_takes_what_waited_and_a_blockage_names_ineligible_nodes() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.eligible("a", false);
    let d = s.deploy(service("web", 1));
    assert!(d.assigned().is_empty());
    let blocked = s.job("web").blocked.clone().expect("blocked");
    assert_eq!((blocked.nodes, blocked.ineligible), (1, 1));
    let d = s.eligible("a", true);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert!(d.names().contains(&"JobUnblocked"), "{:?}", d.names());
}

#[test]
fn eligibility_of_an_unknown_node_is_refused() {
    let mut s = Scenario::new();
    let d = s.eligible("ghost", false);
    assert_eq!(d.rejected(), Some(crate::RejectionKind::UnknownNode));
    assert_eq!(d.reason(), "unknown node \"ghost\"");
}

#[test]
fn registering_again_keeps_a_node_ineligible() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.eligible("a", false);
    let d = s.join("a", &[("role", "edge")], 8);
    assert_eq!(d.names(), ["NodeRegistered"]);
    assert!(!s.state.node(&node("a")).unwrap().eligible);
    assert!(s.deploy(batch("j", 1)).assigned().is_empty());
}

#[test]
fn an_ops_target_made_ineligible_before_its_placement_waits_for_it_and_does_not_fail() {
    let mut s = Scenario::new();
    s.nodes(&["full"], 0);
    s.deploy(ops("patch"));
    s.eligible("full", false);
    assert_eq!(s.job_state("patch"), JobState::Queued);
    let blocked = s
        .job("patch")
        .blocked
        .clone()
        .expect("it waits, and says why");
    assert_eq!(blocked.ineligible, 1);
    s.eligible("full", true);
    let d = s.join("full", &[], 1);
    assert_eq!(d.assigned(), [("full".into(), 1)]);
}
