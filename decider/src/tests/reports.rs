//! Edge reports: hellos, execution updates, and every way a report can be refused.

use cairn_shared::event::{InputRejected, NodeReconnected, NodeRegistered};
use cairn_shared::{Event, ExecutionState, JobState, NodeState, Seq};

use super::scenario::*;
use crate::Decision;
use crate::RejectionKind;

#[test]
fn a_hello_from_an_unknown_node_registers_it() {
    let mut s = Scenario::new();
    let d = s.join("a", &[("role", "edge")], 4);
    assert_eq!(
        d.events,
        vec![Event::from(NodeRegistered {
            node: node("a"),
            labels: labels(&[("role", "edge")]),
            capacity: Some(4),
            resources: None,
        })]
    );
    assert_eq!(s.node_state("a"), NodeState::Connected);
}

#[test]
fn the_same_hello_again_changes_nothing() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 4);
    assert!(s.join("a", &[("role", "edge")], 4).events.is_empty());
}

#[test]
fn a_hello_with_new_labels_or_capacity_registers_again() {
    let mut s = Scenario::new();
    s.join("a", &[("role", "edge")], 4);
    assert_eq!(
        s.join("a", &[("role", "gpu")], 4).names(),
        ["NodeRegistered"]
    );
    assert_eq!(
        s.join("a", &[("role", "gpu")], 8).names(),
        ["NodeRegistered"]
    );
    assert_eq!(s.state.node(&node("a")).map(|n| n.capacity), Some(Some(8)));
}

#[test]
fn a_hello_from_a_disconnected_node_reconnects_it() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    s.silent("a");
    let d = s.join("a", &[], 1);
    assert_eq!(
        d.events,
        vec![Event::from(NodeReconnected { node: node("a") })]
    );
    assert_eq!(s.node_state("a"), NodeState::Connected);
}

#[test]
fn a_hello_from_a_lost_node_with_new_labels_reconnects_and_reregisters() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    s.lose("a");
    let d = s.join("a", &[("zone", "x")], 1);
    assert_eq!(d.names(), ["NodeReconnected", "NodeRegistered"]);
}

#[test]
fn a_report_naming_another_node_than_its_subject_is_refused() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    let before = s.state.clone();
    let d = s.report_on("a", hello("b", &[], 1));
    assert_eq!(d.rejected(), Some(RejectionKind::NodeMismatch));
    assert_eq!(
        d.events,
        vec![Event::from(InputRejected {
            stream: "REPORT".into(),
            seq: Seq(2),
            reason: "report names node \"b\" but arrived on the subject of node \"a\"".into(),
        })]
    );
    assert_eq!(s.state, before, "a refused report changes no state");
}

#[test]
fn an_update_naming_another_node_than_its_subject_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    let d = s.report_on("b", update("a", e, 1, ExecutionState::Running));
    assert_eq!(d.rejected(), Some(RejectionKind::NodeMismatch));
}

#[test]
fn an_update_for_an_unknown_execution_is_refused() {
    let mut s = Scenario::new();
    s.join("a", &[], 1);
    let d = s.report_on("a", update("a", exec_id(42), 1, ExecutionState::Running));
    assert_eq!(d.rejected(), Some(RejectionKind::UnknownExecution));
    assert_eq!(d.reason(), format!("unknown execution {}", exec_id(42)));
}

#[test]
fn an_update_for_another_nodes_execution_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    assert_eq!(
        s.state.execution(e).map(|e| e.node.to_string()),
        Some("a".into())
    );
    let d = s.report_on("b", update("b", e, 1, ExecutionState::Running));
    assert_eq!(d.rejected(), Some(RejectionKind::WrongNode));
    assert!(
        d.reason().contains("belongs to node \"a\""),
        "{}",
        d.reason()
    );
}

#[test]
fn an_update_for_the_wrong_attempt_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    let d = s.report_on("a", update("a", e, 2, ExecutionState::Running));
    assert_eq!(d.rejected(), Some(RejectionKind::WrongAttempt));
}

#[test]
fn a_report_older_than_what_is_recorded_changes_nothing() {
    // An edge sends its reports in order, so one that goes backwards is an older report
    // delivered again (a consumer recreated, an ack lost in a restart): already a fact.
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("j", 1));
    let e = s.live_ids("j")[0];
    s.start(e);
    let d = s.report(e, ExecutionState::Accepted);
    assert_eq!(d, Decision::default(), "{:?}", d.events);
    s.report(e, ExecutionState::Completed);
    let d = s.report(e, ExecutionState::Completed);
    assert_eq!(
        d,
        Decision::default(),
        "a resent end is no news: {:?}",
        d.events
    );
}

#[test]
fn another_end_after_the_end_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    s.report(e, ExecutionState::Completed);
    // An earlier report delivered again, and the end itself resent: both already facts.
    assert_eq!(s.report(e, ExecutionState::Running), Decision::default());
    assert_eq!(s.report(e, ExecutionState::Completed), Decision::default());
    let d = s.report(e, ExecutionState::Failed);
    assert_eq!(d.rejected(), Some(RejectionKind::TerminalExecution));
}

#[test]
fn edges_cannot_claim_the_orchestrators_states() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    for state in [
        ExecutionState::Pending,
        ExecutionState::Lost,
        ExecutionState::Cancelled,
    ] {
        assert_eq!(
            s.report(e, state).rejected(),
            Some(RejectionKind::NotReportable)
        );
    }
}

#[test]
fn a_repeated_report_is_harmless() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    s.start(e);
    let d = s.report(e, ExecutionState::Running);
    assert!(d.events.is_empty());
    assert_eq!(d.rejection, None);
}

#[test]
fn reports_move_the_job_from_deploying_to_running() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(service("web", 2));
    let [e1, e2] = s.live_ids("web")[..] else {
        panic!("two replicas")
    };
    assert_eq!(s.job_state("web"), JobState::Deploying);
    assert_eq!(s.report(e1, ExecutionState::Accepted).job_states(), []);
    assert_eq!(
        s.report(e2, ExecutionState::Accepted).job_states(),
        [JobState::Running],
        "accepted counts as up"
    );
    assert_eq!(s.report(e2, ExecutionState::Running).job_states(), []);
}

#[test]
fn an_edge_may_skip_straight_to_an_end() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    let d = s.report(e, ExecutionState::Completed);
    assert_eq!(d.ended(), [(e, ExecutionState::Completed)]);
    assert_eq!(d.job_states(), [JobState::Completed]);
}

#[test]
fn exit_codes_and_reasons_are_kept() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(selecting(batch("j", 1), &[]));
    let e = s.live_ids("j")[0];
    let mut report = update("a", e, 1, ExecutionState::Failed);
    if let cairn_shared::Report::ExecutionUpdate(u) = &mut report {
        u.exit_code = Some(3);
        u.reason = Some("boom".into());
    }
    s.report_on("a", report);
    let e = s.state.execution(e).expect("kept");
    assert_eq!((e.exit_code, e.reason.as_deref()), (Some(3), Some("boom")));
}

#[test]
fn evolving_events_about_unknown_things_changes_nothing() {
    use cairn_shared::event::{ExecutionStateChanged, JobStateChanged, NodeLost};
    let mut s = Scenario::new();
    s.given([
        Event::from(NodeLost {
            node: node("ghost"),
        }),
        JobStateChanged {
            job: job_id(7),
            state: JobState::Running,
            reason: None,
        }
        .into(),
        ExecutionStateChanged {
            execution: exec_id(7),
            node: node("ghost"),
            state: ExecutionState::Lost,
            exit_code: None,
            reason: None,
        }
        .into(),
    ]);
    assert_eq!(s.state, crate::State::default());
}

#[test]
fn a_rejection_reads_as_its_reason() {
    let mut s = Scenario::new();
    let d = s.stop("nope");
    let rejection = d.rejection.expect("refused");
    assert_eq!(rejection.to_string(), "unknown job \"nope\"");
}
