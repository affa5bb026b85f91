//! Placement by resources: requests fit into what nodes offer, what runs keeps its share
//! until it ends, and a cap still caps.

use cairn_shared::resources::Bytes;
use cairn_shared::{ExecutionState, JobState};

use super::scenario::*;

#[test]
fn a_request_larger_than_any_node_waits_and_one_that_fits_runs() {
    let mut s = Scenario::new();
    s.offering("small", "2", "256Mi");
    let d = s.deploy(asking(batch("big", 1), "100m", "1Gi"));
    assert!(d.assigned().is_empty());
    assert_eq!(s.job_state("big"), JobState::Queued);
    let d = s.deploy(asking(batch("fits", 3), "100m", "128Mi"));
    assert_eq!(
        d.assigned(),
        vec![("small".to_owned(), 1); 2],
        "256Mi holds two"
    );
    assert_eq!(
        s.job_state("fits"),
        JobState::Deploying,
        "one slot still waits"
    );
}

#[test]
fn without_a_cap_a_node_takes_what_its_resources_hold_and_frees_it_when_work_ends() {
    let mut s = Scenario::new();
    s.offering("a", "1", "4Gi");
    let d = s.deploy(batch("many", 12));
    assert_eq!(
        d.assigned().len(),
        10,
        "ten default requests of 100m fill a core"
    );
    assert_eq!(s.state.allocated(&node("a")).cpu.0, 1000);
    let first = s.live_ids("many")[0];
    s.start(first);
    let d = s.report(first, ExecutionState::Completed);
    assert_eq!(
        d.assigned(),
        [("a".into(), 1)],
        "the freed share is used at once"
    );
}

#[test]
fn an_old_version_keeps_its_share_until_it_has_stopped() {
    let mut s = Scenario::new();
    s.offering("a", "2", "1Gi");
    s.deploy(asking(service("web", 1), "500m", "768Mi"));
    let old = s.live_ids("web")[0];
    s.start(old);
    let mut v2 = asking(service("web", 1), "500m", "768Mi");
    v2.task.command = vec!["v2".into()];
    let d = s.deploy(v2);
    assert_eq!(d.stopped(), [old].into());
    assert!(d.assigned().is_empty(), "the old replica still holds 768Mi");
    let d = s.report(old, ExecutionState::Stopped);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

#[test]
fn placement_spreads_and_skips_nodes_the_request_does_not_fit() {
    let mut s = Scenario::new();
    s.offering("a", "4", "512Mi");
    s.offering("b", "4", "8Gi");
    let d = s.deploy(asking(service("mem", 3), "100m", "400Mi"));
    assert_eq!(
        d.assigned(),
        [("a".into(), 1), ("b".into(), 1), ("b".into(), 1)],
        "spread first, then only b has room"
    );
}

#[test]
fn a_node_that_declares_no_resources_is_limited_by_its_cap_alone() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    let d = s.deploy(asking(batch("huge", 3), "64", "1Ti"));
    assert_eq!(d.assigned().len(), 2);
    assert_eq!(s.state.allocated(&node("a")).memory, Bytes(2 << 40));
}

#[test]
fn a_node_that_offers_more_again_takes_what_waited() {
    let mut s = Scenario::new();
    s.offering("a", "1", "256Mi");
    s.deploy(asking(batch("j", 2), "100m", "200Mi"));
    assert_eq!(s.live_ids("j").len(), 1);
    let d = s.offering("a", "1", "512Mi");
    assert_eq!(d.names()[0], "NodeRegistered");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}
