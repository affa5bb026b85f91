//! A job's versions and how its slots follow up faults: restart policies (how many, how
//! long a pause), reruns, and reverts to an earlier version's spec.

use cairn_shared::{Event, ExecutionState, JobState};

use super::scenario::*;
use crate::RejectionKind;

// --- restart policy ---------------------------------------------------------------------

#[test]
fn a_restart_policy_sets_the_attempts_and_each_restart_waits_longer() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    let d = s.deploy(restarting(batch("j", 1), 3, 1000, Some(2000), Some(3000)));
    assert_eq!(d.delays(), [(1, 0)], "a first attempt starts at once");
    let mut pauses = Vec::new();
    for _ in 0..3 {
        let e = s.live_ids("j")[0];
        let d = s.report(e, ExecutionState::Failed);
        pauses.extend(d.delays());
    }
    assert_eq!(pauses, [(2, 1000), (3, 2000), (4, 3000)]);
    let e = s.live_ids("j")[0];
    let d = s.report(e, ExecutionState::Failed);
    assert_eq!(d.assigned(), []);
    assert_eq!(d.job_states(), [JobState::Failed]);
    let reason = state_reason(&d.events);
    assert!(reason.contains("all 4 attempts"), "{reason}");
}

#[test]
fn no_restarts_fail_the_job_at_the_first_fault() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(restarting(batch("j", 1), 0, 0, None, None));
    let e = s.live_ids("j")[0];
    let d = s.report(e, ExecutionState::Failed);
    assert_eq!(d.assigned(), []);
    assert_eq!(d.job_states(), [JobState::Failed]);
}

#[test]
fn a_replacement_that_is_no_fault_starts_without_a_pause() {
    // A replica lost with its node is replaced at once: the task did nothing wrong.
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 1);
    s.deploy(restarting(service("web", 1), 2, 5000, None, None));
    let e = s.live_ids("web")[0];
    s.start(e);
    let d = s.lose("a");
    assert_eq!(d.delays(), [(2, 0)]);
    // Its replacement crashing is a fault: the next one waits.
    let replacement = s.live_ids("web")[0];
    s.start(replacement);
    let d = s.report(replacement, ExecutionState::Failed);
    assert_eq!(d.delays(), [(3, 5000)]);
}

#[test]
fn a_daemon_restarts_on_its_own_node_after_the_pause() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(restarting(daemon("d"), 5, 200, None, None));
    let e = s.live_ids("d")[0];
    s.start(e);
    let d = s.report(e, ExecutionState::Completed);
    assert_eq!(d.assigned(), [("a".into(), 2)]);
    assert_eq!(d.delays(), [(2, 200)]);
}

#[test]
fn the_pause_is_kept_with_the_execution() {
    // A dispatcher that starts afresh queues the run again from the state: it needs it.
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(restarting(batch("j", 1), 1, 750, None, None));
    let e = s.live_ids("j")[0];
    s.report(e, ExecutionState::Failed);
    let retry = s.live_ids("j")[0];
    let delay = s.state.execution(retry).and_then(|x| x.delay);
    assert_eq!(delay.map(|d| d.0.as_millis()), Some(750));
    let first = s.state.execution(e).and_then(|x| x.delay);
    assert_eq!(first, None);
}

// --- rerun ------------------------------------------------------------------------------

#[test]
fn a_completed_batch_runs_again_with_fresh_attempts_on_rerun() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("j", 1));
    let e = s.live_ids("j")[0];
    s.report(e, ExecutionState::Completed);
    assert_eq!(s.job_state("j"), JobState::Completed);
    let d = s.rerun("j");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(s.job("j").version, 1, "a rerun keeps the version");
    assert!(s.rerun("j").rejected() == Some(RejectionKind::JobStillActive));
}

// --- revert -----------------------------------------------------------------------------

fn versions(s: &mut Scenario, name: &str, commands: &[&str]) {
    for command in commands {
        let mut spec = service(name, 1);
        spec.task.command = vec!["sh".into(), "-c".into(), (*command).into()];
        s.deploy(spec);
    }
}

#[test]
fn a_revert_deploys_the_previous_spec_as_a_new_version() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    versions(&mut s, "web", &["v1", "v2"]);
    let v2 = s.live_ids("web")[0];
    let d = s.revert("web", None);
    let deployed: Vec<_> = d
        .events
        .iter()
        .filter_map(|e| match e {
            Event::JobDeployed(j) => {
                Some((j.version, j.reverted_to, j.spec.task.command[2].clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(deployed, [(3, Some(1), "v1".to_owned())]);
    assert_eq!(d.stopped(), [v2].into(), "the reverted version is replaced");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(s.job("web").version, 3);
}

#[test]
fn a_revert_names_any_earlier_version() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    versions(&mut s, "web", &["v1", "v2", "v3"]);
    s.revert("web", Some(1));
    assert_eq!(s.job("web").spec.task.command[2], "v1");
    // And back again: version 4 is v1's spec, so the one before it is v3's.
    s.revert("web", None);
    assert_eq!(s.job("web").spec.task.command[2], "v3");
    assert_eq!(s.job("web").version, 5);
}

#[test]
fn a_revert_that_would_change_nothing_or_names_no_version_is_refused() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    versions(&mut s, "web", &["v1"]);
    let d = s.revert("web", None);
    assert_eq!(d.rejected(), Some(RejectionKind::UnknownVersion));
    assert!(d.reason().contains("only version 1"), "{}", d.reason());
    versions(&mut s, "web", &["v2", "v1"]);
    for (version, says) in [
        (Some(7), "no version 7: its versions are 1 to 3"),
        (Some(0), "no version 0"),
        (Some(3), "current version"),
        (Some(1), "the spec version 3 runs already"),
    ] {
        let d = s.revert("web", version);
        assert_eq!(
            d.rejected(),
            Some(RejectionKind::UnknownVersion),
            "{version:?}"
        );
        assert!(d.reason().contains(says), "{}", d.reason());
    }
    assert_eq!(
        s.revert("nope", None).rejected(),
        Some(RejectionKind::UnknownJob)
    );
    assert_eq!(s.job("web").version, 3, "a refusal changes nothing");
}

#[test]
fn a_stopped_job_reverted_to_its_own_spec_runs_again() {
    // Terminal, so the same spec is a change: like a deploy of it, it runs again.
    let mut s = Scenario::new();
    s.nodes(&["a"], 4);
    versions(&mut s, "web", &["v1", "v2", "v1"]);
    s.stop("web");
    let d = s.revert("web", Some(1));
    assert_eq!(d.rejected(), None, "{}", d.reason());
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(s.job("web").version, 4);
}

fn state_reason(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            Event::JobStateChanged(c) => c.reason.clone(),
            _ => None,
        })
        .unwrap_or_default()
}
