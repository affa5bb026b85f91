//! The invariants every decision must keep, checked after each step of every scenario and
//! of the property test.

use std::collections::{BTreeMap, BTreeSet};

use cairn_shared::{DesiredState, Event, ExecutionState, JobType};

use super::scenario::Counter;
use crate::draft::Draft;
use crate::schedule::{note_all_placements, reconcile, reconcile_all};
use crate::{Decision, Input, State, evolve};

/// Checks one decision against the state it was decided on.
pub fn check_decision(before: &State, input: &Input, decision: &Decision) {
    check_assignments(before, &decision.events);
    check_outcome(before, input, decision);
}

/// Walks the events in order: every assignment lands on a usable node with room, under a
/// fresh id, and every job state change is a change.
fn check_assignments(before: &State, events: &[Event]) {
    let mut state = before.clone();
    for event in events {
        match event {
            Event::ExecutionAssigned(a) => {
                assert!(state.execution(a.execution).is_none(), "reused id {a:?}");
                let node = state.node(&a.node).expect("assigned to a known node");
                let job = state.job(a.job).expect("assigned for a known job");
                assert_ne!(
                    node.state,
                    cairn_shared::NodeState::Lost,
                    "assigned to lost {a:?}"
                );
                assert!(node.matches(&job.spec), "selector ignored: {a:?}");
                assert!(
                    state.has_room(node),
                    "capacity exceeded on {}: {a:?}",
                    a.node
                );
                let request = a
                    .resources
                    .unwrap_or(cairn_shared::Resources::REQUEST_DEFAULT);
                assert!(
                    state.fits(node, &request) > 0,
                    "resources exceeded on {}: {a:?}",
                    a.node
                );
                assert_eq!(a.version, job.version, "assigned an old version");
            }
            Event::JobStateChanged(c) => {
                let job = state.job(c.job).expect("state of a known job");
                assert_ne!(job.state, c.state, "JobStateChanged without a change");
            }
            _ => {}
        }
        evolve(&mut state, event);
    }
}

/// Commands are decided exactly once; refusals are one event and nothing else.
fn check_outcome(before: &State, input: &Input, decision: &Decision) {
    let verdicts: Vec<_> = decision
        .events
        .iter()
        .filter(|e| matches!(e, Event::CommandAccepted(_) | Event::CommandRejected(_)))
        .collect();
    let refusals = decision
        .events
        .iter()
        .filter(|e| matches!(e, Event::InputRejected(_)))
        .count();
    match input {
        Input::Command { id, .. } if before.is_decided(*id) => {
            assert!(
                decision.events.is_empty(),
                "redelivered command decided again"
            );
        }
        Input::Command { id, .. } => {
            assert_eq!(verdicts.len(), 1, "a command needs exactly one verdict");
            let last = decision.events.last().expect("a verdict");
            match last {
                Event::CommandAccepted(a) => assert_eq!(a.command, *id),
                Event::CommandRejected(r) => {
                    assert_eq!(r.command, *id);
                    assert_eq!(decision.events.len(), 1, "a rejection has no effects");
                    assert!(decision.rejection.is_some());
                }
                other => panic!("the verdict must come last, got {other:?}"),
            }
        }
        _ => {
            assert!(verdicts.is_empty(), "only commands get verdicts");
            if decision.rejection.is_some() {
                assert_eq!(refusals, 1);
                assert_eq!(decision.events.len(), 1, "a refused report changes nothing");
            } else {
                assert_eq!(refusals, 0);
            }
        }
    }
}

/// Checks the state after a decision was folded in.
pub fn check_state(state: &State, log: &[Event]) {
    let mut rebuilt = State::default();
    for event in log {
        evolve(&mut rebuilt, event);
    }
    assert_eq!(&rebuilt, state, "replaying the log must rebuild the state");
    check_log(log);
    check_index(state);
    check_slots_filled_in_order(state);
    check_one_per_node(state);
    check_one_per_slot(state);
    check_settled(state);
    check_drains(state);
}

/// A drain is over once nothing runs on its node, and a draining node's daemons are asked
/// to stop once nothing else runs there.
fn check_drains(state: &State) {
    for node in state.nodes().filter(|n| n.draining()) {
        assert!(!node.eligible, "{} drains but is eligible", node.id);
        let live: Vec<_> = state
            .active_on(&node.id)
            .filter_map(|id| state.execution(id))
            .collect();
        assert!(
            !live.is_empty(),
            "{} runs nothing but still drains",
            node.id
        );
        let only_daemons = live.iter().all(|e| {
            state
                .job(e.job)
                .is_some_and(|j| j.spec.job_type == JobType::Daemon && j.version == e.version)
        });
        if only_daemons {
            assert!(
                live.iter().all(|e| e.desired == DesiredState::Stopped),
                "{} drains and runs only daemons, not all asked to stop",
                node.id
            );
        }
    }
}

/// The index `evolve` keeps is the one derived afresh from the facts: the scheduler
/// trusts it instead of reading them. Beside that recount, the parts placement leans on
/// hardest are checked against their definitions.
fn check_index(state: &State) {
    let (kept, rebuilt) = state.reindexed();
    assert_eq!(kept, &rebuilt, "the index drifted from the facts");
    let active: Vec<_> = state.active_jobs().map(|j| j.id).collect();
    let expected: Vec<_> = state
        .jobs()
        .filter(|j| !j.state.is_terminal())
        .map(|j| j.id)
        .collect();
    assert_eq!(active, expected, "active jobs index");
    for node in state.nodes() {
        let load = state
            .executions()
            .filter(|e| e.node == node.id && !e.state.is_terminal())
            .count();
        assert_eq!(state.load(&node.id), load, "load of {}", node.id);
        let allocated = state
            .executions()
            .filter(|e| e.node == node.id && !e.state.is_terminal())
            .fold(cairn_shared::Resources::default(), |sum, e| sum + e.request);
        assert_eq!(
            state.allocated(&node.id),
            allocated,
            "allocated on {}",
            node.id
        );
    }
    let with_room: Vec<_> = state.nodes_with_room().map(|n| &n.id).collect();
    let expected: Vec<_> = state
        .nodes()
        .filter(|n| {
            n.capacity
                .is_none_or(|cap| state.load(&n.id) < cap as usize)
        })
        .map(|n| &n.id)
        .collect();
    assert_eq!(with_room, expected, "nodes with room");
    let mut unsettled = Vec::new();
    let mut next = state.unsettled_from(None);
    while let Some(job) = next {
        unsettled.push(job);
        next = state.unsettled_from(Some(job));
    }
    let expected: Vec<_> = state
        .jobs()
        .filter(|j| state.is_unsettled(j))
        .map(|j| j.id)
        .collect();
    assert_eq!(unsettled, expected, "unsettled jobs index");
    for job in state.jobs() {
        for node in state.nodes() {
            let live = state
                .executions()
                .filter(|e| e.job == job.id && e.node == node.id && !e.state.is_terminal())
                .count();
            assert_eq!(
                state.live_on(job.id, &node.id),
                live,
                "live executions of {} on {}",
                job.name,
                node.id
            );
        }
    }
}

fn check_log(log: &[Event]) {
    let mut executions = BTreeSet::new();
    let mut commands = BTreeSet::new();
    for event in log {
        match event {
            Event::ExecutionAssigned(a) => {
                assert!(executions.insert(a.execution), "execution id reused");
            }
            Event::CommandAccepted(c) => assert!(commands.insert(c.command), "decided twice"),
            Event::CommandRejected(c) => assert!(commands.insert(c.command), "decided twice"),
            _ => {}
        }
    }
}

/// Batch and service slots are filled lowest first, so the empty ones are the last ones:
/// `evolve` relies on it to find a first attempt's slot without a scan.
fn check_slots_filled_in_order(state: &State) {
    for job in state.jobs() {
        let filled = job.run.counted.iter().filter(|s| !s.executions.is_empty());
        let prefix = job
            .run
            .counted
            .iter()
            .take_while(|s| !s.executions.is_empty());
        assert_eq!(
            filled.count(),
            prefix.count(),
            "a gap in the slots of {}",
            job.name
        );
    }
}

/// Daemon and ops jobs run at most one execution per (version, node).
fn check_one_per_node(state: &State) {
    let mut seen = BTreeMap::new();
    for e in state.executions() {
        let Some(job) = state.job(e.job) else {
            continue;
        };
        let per_node = matches!(job.spec.job_type, JobType::Daemon | JobType::Ops);
        if per_node && !e.state.is_terminal() && e.desired == DesiredState::Running {
            let key = (e.job, e.version, e.node.clone());
            if let Some(other) = seen.insert(key, e.id) {
                panic!("two executions {other} and {} of one job on one node", e.id);
            }
        }
    }
}

/// A slot has at most one execution meant to run at any time: a retry follows an end, and
/// an execution heard from after its node was lost either takes its slot back (its
/// replacement asked to stop) or is asked to stop itself. The one overlap is a move off a
/// draining node: the replica keeps running beside its one replacement until that runs.
fn check_one_per_slot(state: &State) {
    for job in state.active_jobs() {
        let run = &job.run;
        let slots = run.counted.iter().chain(run.pinned.values());
        for slot in slots {
            let running: Vec<_> = slot
                .executions
                .iter()
                .filter_map(|id| state.execution(*id))
                .filter(|e| !e.state.is_terminal() && e.desired == DesiredState::Running)
                .map(|e| e.id)
                .collect();
            let replacing = slot
                .current()
                .and_then(|id| state.execution(id))
                .is_some_and(|e| {
                    running.contains(&e.id)
                        && matches!(e.state, ExecutionState::Pending | ExecutionState::Accepted)
                });
            assert!(
                running.len() <= 1 || (replacing && running.len() == 2),
                "one slot of {} runs {running:?} at once",
                job.name
            );
        }
    }
}

/// Nothing is left for the scheduler to do: no demand a node could take waits, no job
/// state is stale. This is what catches a fact that forgot to trigger placement.
fn check_settled(state: &State) {
    let mut draft = Draft::new(state);
    reconcile_all(&mut draft, &mut Counter::default());
    note_all_placements(&mut draft);
    let events = draft.into_events();
    assert!(
        events.is_empty(),
        "the scheduler still had work: {events:#?}"
    );
    // What `reconcile_all` skips as settled really is: reconciling it emits nothing.
    for job in state.active_jobs().filter(|j| !state.is_unsettled(j)) {
        let mut draft = Draft::new(state);
        reconcile(&mut draft, &mut Counter::default(), job.id);
        let events = draft.into_events();
        assert!(
            events.is_empty(),
            "{} was taken as settled but had work: {events:#?}",
            job.name
        );
    }
}
