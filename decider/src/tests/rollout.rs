//! Rolling updates: a new version of a job with `update` replaces the old one a step at a
//! time as its executions become healthy; one that is not healthy fails the rollout and,
//! with `auto_revert`, brings back the last version that rolled out.

use cairn_shared::RolloutState::{Cancelled, Failed, Rolling, Succeeded};
use cairn_shared::{DesiredState, ExecutionId, ExecutionState, JobSpec, JobState};

use super::scenario::*;

/// Versions as (version, node) of the executions meant to run, sorted.
fn versions(s: &Scenario, name: &str) -> Vec<(u32, String)> {
    let job = s.job(name);
    let mut out: Vec<_> = s
        .state
        .live(job.id)
        .filter_map(|id| s.state.execution(id))
        .filter(|e| e.desired == DesiredState::Running)
        .map(|e| (e.version, e.node.to_string()))
        .collect();
    out.sort();
    out
}

/// Live executions of `version` meant to run.
fn of_version(s: &Scenario, name: &str, version: u32) -> Vec<ExecutionId> {
    let job = s.job(name);
    s.state
        .live(job.id)
        .filter_map(|id| s.state.execution(id))
        .filter(|e| e.version == version && e.desired == DesiredState::Running)
        .map(|e| e.id)
        .collect()
}

/// Every execution the job placed that was asked to stop but has not ended: what the
/// edges are stopping now.
fn stopping(s: &Scenario, name: &str) -> Vec<ExecutionId> {
    let job = s.job(name);
    s.state
        .live(job.id)
        .filter(|id| {
            s.state
                .execution(*id)
                .is_some_and(|e| e.desired == DesiredState::Stopped)
        })
        .collect()
}

/// A daemon at version 1 on `nodes`, rolled out and healthy everywhere.
fn daemon_running(s: &mut Scenario, nodes: &[&str], spec: JobSpec) {
    s.nodes(nodes, 2);
    let d = s.deploy(spec);
    assert_eq!(d.rollouts(), [(1, Rolling)]);
    for e in s.live_ids("d") {
        s.start_healthy(e);
    }
    assert_eq!(
        s.job("d").rollout.as_ref().map(|r| r.state),
        Some(Succeeded)
    );
    assert_eq!(s.job("d").stable, Some(1));
}

/// Ends every execution the edges were asked to stop, as their edges report.
fn edges_stop(s: &mut Scenario, name: &str) {
    for e in stopping(s, name) {
        s.report(e, ExecutionState::Stopped);
    }
}

#[test]
fn a_daemon_rolls_out_one_node_at_a_time_as_each_becomes_healthy() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    let d = s.deploy(running(v1, "v2"));
    assert_eq!(d.rollouts(), [(2, Rolling)]);
    // One old execution is asked to stop; nothing else changes yet.
    assert_eq!(d.stopped().len(), 1);
    assert_eq!(s.job_state("d"), JobState::Deploying);
    for step in 0..3 {
        // The node freed (the edge ended its old one) takes the new version...
        edges_stop(&mut s, "d");
        let new = of_version(&s, "d", 2);
        assert_eq!(new.len(), step + 1, "one more node at version 2");
        let fresh = *new.last().unwrap();
        s.start(fresh);
        assert_eq!(
            of_version(&s, "d", 1).len(),
            2 - step,
            "no more old ones stop until healthy"
        );
        // ...and only once it is healthy does the next step start.
        let d = s.health(fresh, true);
        if step < 2 {
            assert_eq!(d.stopped().len(), 1, "step {step}");
        } else {
            assert_eq!(d.rollouts(), [(2, Succeeded)]);
            assert_eq!(d.job_states(), [JobState::Running]);
        }
    }
    assert_eq!(
        versions(&s, "d"),
        [(2, "a".into()), (2, "b".into()), (2, "c".into())]
    );
    assert_eq!(s.job("d").stable, Some(2));
}

#[test]
fn max_parallel_replaces_that_many_at_once() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 2, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    let d = s.deploy(running(v1, "v2"));
    assert_eq!(d.stopped().len(), 2);
}

#[test]
fn a_service_rolls_out_without_ever_leaving_more_than_max_parallel_slots_uncovered() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 2);
    let v1 = updating(service("web", 3), 1, false);
    s.deploy(v1.clone());
    for e in s.live_ids("web") {
        s.start_healthy(e);
    }
    let d = s.deploy(running(v1, "v2"));
    assert_eq!(d.stopped().len(), 1);
    // The node with room takes the new replica at once, beside the old one stopping.
    let new = of_version(&s, "web", 2);
    assert_eq!(new.len(), 1);
    for _ in 0..3 {
        let healthy_old = of_version(&s, "web", 1).len();
        let healthy_new = of_version(&s, "web", 2)
            .iter()
            .filter(|id| s.state.execution(**id).and_then(|e| e.healthy) == Some(true))
            .count();
        assert!(healthy_old + healthy_new >= 2, "never two slots uncovered");
        edges_stop(&mut s, "web");
        let fresh: Vec<_> = of_version(&s, "web", 2)
            .into_iter()
            .filter(|id| s.state.execution(*id).is_some_and(|e| e.healthy.is_none()))
            .collect();
        assert_eq!(fresh.len(), 1, "one new replica in flight at a time");
        s.start_healthy(fresh[0]);
    }
    assert_eq!(of_version(&s, "web", 1), []);
    assert_eq!(of_version(&s, "web", 2).len(), 3);
    assert_eq!(
        s.job("web").rollout.as_ref().map(|r| r.state),
        Some(Succeeded)
    );
}

#[test]
fn a_new_version_that_crashes_before_healthy_fails_the_rollout_and_stops_there() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    s.deploy(running(v1, "broken"));
    edges_stop(&mut s, "d");
    let bad = of_version(&s, "d", 2)[0];
    s.start(bad);
    let d = s.report(bad, ExecutionState::Failed);
    assert_eq!(d.rollouts(), [(2, Failed)]);
    assert_eq!(d.assigned(), [], "no retry, no further node");
    assert_eq!(d.stopped().len(), 0);
    assert_eq!(
        of_version(&s, "d", 1).len(),
        2,
        "the old version keeps running"
    );
    assert_eq!(s.job_state("d"), JobState::Running);
    let reason = s.job("d").rollout.as_ref().and_then(|r| r.reason.clone());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("ended failed before it was healthy")),
        "{reason:?}"
    );
}

#[test]
fn auto_revert_deploys_the_last_good_spec_as_a_new_version_and_replaces_the_bad_first() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, true);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    s.deploy(running(v1.clone(), "broken"));
    edges_stop(&mut s, "d");
    let bad = of_version(&s, "d", 2)[0];
    let bad_node = s.state.execution(bad).unwrap().node.to_string();
    s.start(bad);
    let d = s.report(bad, ExecutionState::Failed);
    assert_eq!(d.rollouts(), [(2, Failed), (3, Rolling)]);
    let job = s.job("d");
    assert_eq!(
        (job.version, job.spec.task.command.clone()),
        (3, v1.task.command.clone())
    );
    // The node the bad version ran on is free: version 3 goes there first, and nothing else
    // of version 1 stops until it is healthy.
    let v3 = of_version(&s, "d", 3);
    assert_eq!(v3.len(), 1);
    assert_eq!(s.state.execution(v3[0]).unwrap().node.to_string(), bad_node);
    assert_eq!(of_version(&s, "d", 1).len(), 2);
    // Only one node ever ran version 2.
    let ran_v2: Vec<_> = s.state.executions().filter(|e| e.version == 2).collect();
    assert_eq!(ran_v2.len(), 1);
    // The revert rolls out like any version.
    s.start_healthy(v3[0]);
    for _ in 0..2 {
        edges_stop(&mut s, "d");
        let fresh = *of_version(&s, "d", 3).last().unwrap();
        s.start_healthy(fresh);
    }
    assert_eq!(of_version(&s, "d", 3).len(), 3);
    assert_eq!(
        s.job("d").rollout.as_ref().map(|r| r.state),
        Some(Succeeded)
    );
}

#[test]
fn without_a_version_that_rolled_out_there_is_nothing_to_revert_to() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(running(updating(daemon("d"), 1, true), "broken"));
    let e = s.live_ids("d")[0];
    s.start(e);
    let d = s.report(e, ExecutionState::Failed);
    assert_eq!(d.rollouts(), [(1, Failed)]);
    assert_eq!(s.job("d").version, 1);
}

#[test]
fn an_edge_that_finds_an_execution_not_healthy_fails_the_rollout() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b"], v1.clone());
    s.deploy(running(v1, "slow"));
    edges_stop(&mut s, "d");
    let slow = of_version(&s, "d", 2)[0];
    s.start(slow);
    let d = s.health(slow, false);
    assert_eq!(d.rollouts(), [(2, Failed)]);
    // A word on health after the first, or on an ended execution, changes nothing.
    assert_eq!(s.health(slow, true).events, []);
}

#[test]
fn a_node_lost_mid_rollout_is_no_fault_of_the_version() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 2);
    let v1 = updating(service("web", 2), 1, false);
    s.deploy(v1.clone());
    for e in s.live_ids("web") {
        s.start_healthy(e);
    }
    s.deploy(running(v1, "v2"));
    let new = of_version(&s, "web", 2)[0];
    let node = s.state.execution(new).unwrap().node.to_string();
    s.start(new);
    let d = s.lose(&node);
    assert!(!d.rollouts().contains(&(2, Failed)), "{:?}", d.rollouts());
    assert_eq!(
        s.job("web").rollout.as_ref().map(|r| r.state),
        Some(Rolling)
    );
    // Its slot is placed again at version 2, on a node still there.
    let replacement = of_version(&s, "web", 2);
    assert_eq!(replacement.len(), 1);
    assert_ne!(
        s.state.execution(replacement[0]).unwrap().node.to_string(),
        node
    );
}

#[test]
fn a_stop_during_a_rollout_cancels_it_and_stops_every_version() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b"], v1.clone());
    s.deploy(running(v1, "v2"));
    let d = s.stop("d");
    assert_eq!(d.rollouts(), [(2, Cancelled)]);
    assert_eq!(versions(&s, "d"), []);
    assert_eq!(s.job_state("d"), JobState::Stopped);
}

#[test]
fn a_newer_version_mid_rollout_cancels_it_and_rolls_over_every_older_one() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    s.deploy(running(v1.clone(), "v2"));
    edges_stop(&mut s, "d");
    let v2 = of_version(&s, "d", 2)[0];
    s.start_healthy(v2);
    let d = s.deploy(running(v1, "v3"));
    assert_eq!(d.rollouts(), [(2, Cancelled), (3, Rolling)]);
    // Version 2's execution, the newest old one, is replaced first.
    assert_eq!(d.stopped(), [v2].into());
}

#[test]
fn a_replayed_log_resumes_the_rollout_where_it_was() {
    // An orchestrator that restarts rebuilds its state from the log: the rollout's next
    // step is decided from it as if nothing happened.
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    s.deploy(running(v1, "v2"));
    edges_stop(&mut s, "d");
    let first = of_version(&s, "d", 2)[0];
    s.start(first);
    let mut replayed = Scenario::new();
    replayed.ids = std::mem::take(&mut s.ids);
    replayed.given(s.log.clone());
    assert_eq!(replayed.state, s.state);
    let d = replayed.health(first, true);
    assert_eq!(d.stopped().len(), 1, "the next step, and only one");
    assert_eq!(of_version(&replayed, "d", 1).len(), 1);
}

#[test]
fn a_job_without_update_still_replaces_everything_at_once() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(daemon("d"));
    for e in s.live_ids("d") {
        s.start(e);
    }
    let d = s.deploy(running(daemon("d"), "v2"));
    assert_eq!(d.rollouts(), []);
    assert_eq!(d.stopped().len(), 2);
}

#[test]
fn the_first_version_places_everywhere_at_once_and_rolls_out_when_healthy() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b", "c"], 2);
    let d = s.deploy(updating(daemon("d"), 1, false));
    assert_eq!(d.assigned().len(), 3, "nothing to replace, nothing held");
    let ids = s.live_ids("d");
    for e in &ids[..2] {
        s.start_healthy(*e);
    }
    assert_eq!(s.job_state("d"), JobState::Deploying);
    let d = s.start_healthy(ids[2]);
    assert_eq!(d.rollouts(), [(1, Succeeded)]);
    assert_eq!(s.job_state("d"), JobState::Running);
}

#[test]
fn update_is_refused_on_batch_jobs() {
    let mut s = Scenario::new();
    let d = s.deploy(updating(batch("j", 1), 1, false));
    assert!(
        d.reason()
            .contains("update: applies to service and daemon jobs only"),
        "{}",
        d.reason()
    );
}

// --- canaries ---------------------------------------------------------------------------

/// A service of `count` replicas at version 1 with `canary` canaries, healthy everywhere.
fn service_running(s: &mut Scenario, count: u32, canary: u32, auto_revert: bool) -> JobSpec {
    s.nodes(&["a", "b", "c"], 2);
    let v1 = canaries(service("web", count), canary, auto_revert);
    s.deploy(v1.clone());
    for e in s.live_ids("web") {
        s.start_healthy(e);
    }
    assert_eq!(
        s.job("web").stable,
        Some(1),
        "a first version has nothing to try beside"
    );
    v1
}

#[test]
fn a_service_canary_runs_beside_the_old_version_until_promoted_then_the_rest_rolls() {
    let mut s = Scenario::new();
    let v1 = service_running(&mut s, 2, 1, false);
    let d = s.deploy(running(v1, "v2"));
    assert_eq!(d.stopped(), [].into(), "the old version keeps all it runs");
    assert_eq!(d.assigned().len(), 1, "one canary");
    let canary = of_version(&s, "web", 2)[0];
    let d = s.start_healthy(canary);
    assert_eq!(
        (d.stopped().len(), d.assigned().len()),
        (0, 0),
        "nothing more until promoted"
    );
    assert_eq!(of_version(&s, "web", 1).len(), 2);
    assert_eq!(s.job_state("web"), JobState::Deploying);

    let d = s.promote("web");
    assert_eq!(d.rejected(), None, "{}", d.reason());
    // Promoted: three run where two are wanted, so the next step stops two old ones and
    // places the second new replica; one slot stays covered by the healthy canary.
    assert_eq!(d.stopped().len(), 2);
    assert_eq!(d.assigned().len(), 1);
    let second = *of_version(&s, "web", 2).last().unwrap();
    edges_stop(&mut s, "web");
    let d = s.start_healthy(second);
    assert_eq!(d.rollouts(), [(2, Succeeded)]);
    assert_eq!(of_version(&s, "web", 2).len(), 2);
}

#[test]
fn a_daemon_canary_moves_that_many_nodes_first() {
    let mut s = Scenario::new();
    let v1 = canaries(daemon("d"), 1, false);
    daemon_running(&mut s, &["a", "b", "c"], v1.clone());
    let d = s.deploy(running(v1, "v2"));
    assert_eq!(d.stopped().len(), 1);
    edges_stop(&mut s, "d");
    let canary = of_version(&s, "d", 2)[0];
    let d = s.start_healthy(canary);
    assert_eq!(
        d.stopped().len(),
        0,
        "the other nodes wait for the promotion"
    );
    assert_eq!(s.promote("d").stopped().len(), 1, "then one at a time");
}

#[test]
fn a_promotion_needs_healthy_canaries_waiting_for_it() {
    let mut s = Scenario::new();
    let v1 = service_running(&mut s, 2, 1, false);
    let nothing = s.promote("web");
    assert_eq!(
        nothing.rejected(),
        Some(crate::RejectionKind::NothingToPromote)
    );
    assert!(
        nothing.reason().contains("is succeeded"),
        "{}",
        nothing.reason()
    );
    s.deploy(running(v1, "v2"));
    let canary = of_version(&s, "web", 2)[0];
    s.start(canary);
    let early = s.promote("web");
    assert!(
        early
            .reason()
            .contains("1 of its 1 canaries are not healthy yet"),
        "{}",
        early.reason()
    );
    s.health(canary, true);
    assert_eq!(s.promote("web").rejected(), None);
    let again = s.promote("web");
    assert!(again.reason().contains("promoted"), "{}", again.reason());
    assert_eq!(
        s.promote("nope").rejected(),
        Some(crate::RejectionKind::UnknownJob)
    );
}

#[test]
fn a_failing_canary_fails_the_rollout_and_reverts_before_anything_old_stopped() {
    let mut s = Scenario::new();
    let v1 = service_running(&mut s, 2, 1, true);
    s.deploy(running(v1.clone(), "broken"));
    let canary = of_version(&s, "web", 2)[0];
    s.start(canary);
    let d = s.report(canary, ExecutionState::Failed);
    assert_eq!(d.rollouts(), [(2, Failed), (3, Rolling)]);
    assert_eq!(s.job("web").spec.task.command, v1.task.command);
    // Going back to version 1's spec tries no canary first: it rolls at once, one at a time.
    assert!(s.job("web").rollout.as_ref().is_some_and(|r| r.promoted));
    assert_eq!(d.stopped().len(), 1);
    assert_eq!(of_version(&s, "web", 1).len(), 1);
    assert_eq!(of_version(&s, "web", 3).len(), 1);
}

// --- found by the property tests ---------------------------------------------------------

#[test]
fn a_version_of_another_type_replaces_everything_at_once() {
    // A service's replicas have no daemon slot to be replaced in: the daemon starts afresh,
    // one execution per node, never two beside the service's on a node.
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    s.deploy(service("j", 2));
    assert_eq!(s.live("j").len(), 2);
    let mut as_daemon = updating(daemon("j"), 1, true);
    as_daemon.name = "j".into();
    let d = s.deploy(as_daemon);
    assert_eq!(d.stopped().len(), 2, "both replicas stop at once");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(d.rollouts(), [(2, Rolling)], "its health is still followed");
}

#[test]
fn a_replica_leaving_a_draining_node_is_replaced_when_nothing_older_runs() {
    let mut s = Scenario::new();
    s.deploy(selecting(
        updating(service("web", 2), 1, true),
        &[("role", "b")],
    ));
    s.join("n0", &[("role", "b")], 1);
    s.drain("n0", 60_000);
    let d = s.join("n1", &[("role", "b")], 2);
    assert_eq!(
        d.assigned().len(),
        2,
        "the moving replica's replacement and the waiting one"
    );
}

#[test]
fn a_failed_rollout_with_nothing_left_running_fails_the_job() {
    let mut s = Scenario::new();
    let v1 = updating(daemon("d"), 1, false);
    daemon_running(&mut s, &["a"], v1.clone());
    s.deploy(running(v1, "broken"));
    edges_stop(&mut s, "d");
    let bad = of_version(&s, "d", 2)[0];
    s.start(bad);
    let d = s.report(bad, ExecutionState::Failed);
    assert_eq!(d.job_states(), [JobState::Failed]);
    assert!(
        state_reason(&d).contains("rollout of version 2 failed"),
        "{}",
        state_reason(&d)
    );
}

fn state_reason(d: &crate::Decision) -> String {
    d.events
        .iter()
        .find_map(|e| match e {
            cairn_shared::Event::JobStateChanged(c) => c.reason.clone(),
            _ => None,
        })
        .unwrap_or_default()
}
