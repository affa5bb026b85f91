//! Placement as a function: the plan for one job's problem, and the reasons it gives for
//! what it could not place.

use cairn_shared::event::{JobDeployed, NodeRegistered};
use cairn_shared::{Event, JobSpec};

use super::scenario::*;
use crate::placement::{Placed, Plan, Unplaced, plan, problem};
use crate::tally::SlotKey;

/// A node: its id, labels and capacity.
type Fleet<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)], u32)];

/// A fleet and a job deployed onto it as facts only, so nothing is placed yet.
fn undecided(nodes: Fleet<'_>, spec: JobSpec) -> Scenario {
    let mut s = Scenario::new();
    let mut events: Vec<Event> = nodes
        .iter()
        .map(|(id, pairs, capacity)| {
            NodeRegistered {
                node: node(id),
                labels: labels(pairs),
                capacity: Some(*capacity),
                resources: None,
            }
            .into()
        })
        .collect();
    events.push(
        JobDeployed {
            job: job_id(1),
            version: 1,
            spec,
            reverted_to: None,
        }
        .into(),
    );
    s.given(events);
    s
}

fn plan_of(s: &Scenario, name: &str) -> Plan {
    plan(problem(&s.state, s.job(name)))
}

fn placed(plan: &Plan) -> Vec<(SlotKey, String, u32)> {
    plan.placed
        .iter()
        .map(
            |Placed {
                 slot,
                 node,
                 attempt,
                 ..
             }| (slot.clone(), node.to_string(), *attempt),
        )
        .collect()
}

#[test]
fn slots_that_may_go_anywhere_take_the_room_there_is_and_the_rest_are_counted() {
    let s = undecided(&[("a", &[], 2), ("b", &[], 1)], batch("j", 5));
    let plan = plan_of(&s, "j");
    assert_eq!(
        placed(&plan),
        [
            (SlotKey::Counted(0), "a".into(), 1),
            (SlotKey::Counted(1), "b".into(), 1),
            (SlotKey::Counted(2), "a".into(), 1),
        ]
    );
    assert_eq!(plan.unplaced, [Unplaced::NoNodeWithRoom { slots: 2 }]);
}

#[test]
fn no_matching_node_leaves_every_slot_unplaced_without_reading_them() {
    let s = undecided(
        &[("a", &[("role", "core")], 4)],
        selecting(service("web", 3), &[("role", "edge")]),
    );
    let plan = plan_of(&s, "web");
    assert!(plan.placed.is_empty());
    assert_eq!(plan.unplaced, [Unplaced::NoNodeWithRoom { slots: 3 }]);
}

#[test]
fn a_pinned_slot_on_a_full_node_is_named() {
    let s = undecided(&[("a", &[], 1), ("full", &[], 0)], daemon("agent"));
    let plan = plan_of(&s, "agent");
    assert_eq!(placed(&plan), [(SlotKey::Pinned(node("a")), "a".into(), 1)]);
    assert_eq!(plan.unplaced, [Unplaced::NodeFull(node("full"))]);
}

#[test]
fn a_plan_is_what_the_scheduler_emits() {
    let mut s = undecided(&[("a", &[], 1), ("b", &[], 1)], batch("j", 3));
    let plan = plan_of(&s, "j");
    // A node joining with no room changes no candidate, but makes placement due.
    let emitted = s.join("c", &[], 0).assigned();
    let planned: Vec<_> = placed(&plan).into_iter().map(|(_, n, a)| (n, a)).collect();
    assert_eq!(emitted, planned);
    assert_eq!(plan.unplaced, [Unplaced::NoNodeWithRoom { slots: 1 }]);
}
