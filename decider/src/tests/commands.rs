//! Commands: deploy, redeploy, stop, rerun, and redelivery.

use cairn_shared::command::{Command, DeployJob};
use cairn_shared::event::{
    CommandAccepted, CommandRejected, ExecutionAssigned, JobDeployed, JobStateChanged,
};
use cairn_shared::{Event, ExecutionState, JobState};

use super::scenario::*;
use crate::{Input, RejectionKind};

#[test]
fn deploying_a_new_job_creates_version_1_places_it_and_accepts_last() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    let spec = batch("report", 1);
    let d = s.deploy(spec.clone());
    assert_eq!(
        d.events,
        vec![
            Event::from(JobDeployed {
                job: job_id(1),
                version: 1,
                spec: spec.clone(),
                reverted_to: None,
            }),
            ExecutionAssigned {
                execution: exec_id(1),
                job: job_id(1),
                job_name: "report".into(),
                version: 1,
                node: node("a"),
                attempt: 1,
                task: spec.task.clone(),
                resources: None,
                delay: None,
                health: None,
            }
            .into(),
            JobStateChanged {
                job: job_id(1),
                state: JobState::Deploying,
                reason: None,
            }
            .into(),
            CommandAccepted {
                command: s.last_command(),
                job: Some(job_id(1)),
                version: Some(1),
            }
            .into(),
        ]
    );
    assert_eq!(d.rejection, None);
}

#[test]
fn an_invalid_spec_is_rejected_with_its_field_and_nothing_else() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    let d = s.deploy(batch("report", 0));
    assert_eq!(d.rejected(), Some(RejectionKind::InvalidSpec));
    assert_eq!(
        d.events,
        vec![Event::from(CommandRejected {
            command: s.last_command(),
            reason: "invalid job spec: count: must be at least 1".into(),
        })]
    );
    assert!(s.state.job_by_name("report").is_none());
}

#[test]
fn deploying_a_name_again_makes_version_2_and_stops_version_1() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(service("web", 2));
    let old = s.live_ids("web");
    assert_eq!(old.len(), 2);

    let mut v2 = service("web", 2);
    v2.task.command = vec!["false".into()];
    let d = s.deploy(v2);
    assert!(matches!(
        &d.events[0],
        Event::JobDeployed(JobDeployed { job, version: 2, .. }) if *job == job_id(1)
    ));
    assert_eq!(d.stopped(), old.iter().copied().collect());
    assert!(d.events.iter().any(|e| matches!(e,
        Event::ExecutionStopRequested(s) if s.reason == "replaced by version 2")));
    let job = s.job("web");
    assert_eq!((job.id, job.version), (job_id(1), 2));
    // The old executions hold their capacity until the edges report them stopped.
    assert_eq!(s.load("a") + s.load("b"), 4);
    assert!(
        s.state
            .executions()
            .filter(|e| e.version == 2)
            .all(|e| e.attempt == 1)
    );
}

#[test]
fn the_old_version_frees_capacity_only_when_its_edge_reports_stopped() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("job", 1));
    let old = s.live_ids("job")[0];
    let d = s.deploy(batch("job", 2));
    assert!(d.assigned().is_empty(), "a is full with the old version");
    assert_eq!(s.job_state("job"), JobState::Queued);

    let d = s.report(old, ExecutionState::Stopped);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(s.job_state("job"), JobState::Deploying);
}

#[test]
fn redeploying_the_same_spec_is_accepted_without_effects() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(service("web", 1));
    let d = s.deploy(service("web", 1));
    assert_eq!(d.names(), ["CommandAccepted"]);
    assert_eq!(s.job("web").version, 1);
}

#[test]
fn redeploying_the_same_spec_of_a_finished_job_runs_a_new_version() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(batch("once", 1));
    let e = s.live_ids("once")[0];
    s.report(e, ExecutionState::Completed);
    assert_eq!(s.job_state("once"), JobState::Completed);
    let d = s.deploy(batch("once", 1));
    assert_eq!(s.job("once").version, 2);
    assert_eq!(d.assigned(), [("a".into(), 1)]);
}

#[test]
fn a_redelivered_command_yields_nothing() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    let command = Command::DeployJob(DeployJob {
        spec: batch("x", 1),
    });
    let id = cmd_id(99);
    let first = s.when(Input::Command {
        id,
        command: command.clone(),
    });
    assert!(!first.events.is_empty());
    let again = s.when(Input::Command { id, command });
    assert!(again.events.is_empty());
    assert_eq!(again.rejection, None);
}

#[test]
fn a_redelivered_rejected_command_yields_nothing() {
    let mut s = Scenario::new();
    s.stop("ghost");
    let id = s.last_command();
    let again = s.when(Input::Command {
        id,
        command: Command::StopJob(cairn_shared::command::StopJob {
            job: cairn_shared::command::JobRef("ghost".into()),
        }),
    });
    assert!(again.events.is_empty());
}

#[test]
fn stopping_an_unknown_job_is_rejected_with_its_name() {
    let mut s = Scenario::new();
    let d = s.stop("nope");
    assert_eq!(d.rejected(), Some(RejectionKind::UnknownJob));
    assert_eq!(d.reason(), "unknown job \"nope\"");
    assert_eq!(d.names(), ["CommandRejected"]);
}

#[test]
fn stop_asks_every_execution_to_stop_and_marks_the_job_stopped() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(service("web", 3));
    let live = s.live_ids("web");
    let d = s.stop("web");
    assert_eq!(d.stopped(), live.iter().copied().collect());
    assert_eq!(d.job_states(), [JobState::Stopped]);
    assert_eq!(
        d.names().last(),
        Some(&"CommandAccepted"),
        "the verdict comes after the effects"
    );
    // Nothing is cancelled behind the edges' backs: the node may already run them.
    assert!(d.ended().is_empty());
    assert_eq!(s.load("a") + s.load("b"), 3);

    let d = s.report(live[0], ExecutionState::Stopped);
    assert_eq!(d.ended(), [(live[0], ExecutionState::Stopped)]);
    assert!(d.assigned().is_empty(), "a stopped job is not replaced");
    assert_eq!(s.job_state("web"), JobState::Stopped);
}

#[test]
fn stop_takes_a_job_id_as_well_as_a_name() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let d = s.stop(&job_id(1).to_string());
    assert_eq!(d.rejection, None);
    assert_eq!(s.job_state("web"), JobState::Stopped);
}

#[test]
fn stopping_a_finished_job_changes_nothing() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(batch("b", 1));
    let e = s.live_ids("b")[0];
    s.report(e, ExecutionState::Completed);
    let d = s.stop("b");
    assert_eq!(d.names(), ["CommandAccepted"]);
    assert_eq!(s.job_state("b"), JobState::Completed);
}

#[test]
fn rerunning_a_job_that_still_runs_is_rejected() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 1);
    s.deploy(service("web", 1));
    let d = s.rerun("web");
    assert_eq!(d.rejected(), Some(RejectionKind::JobStillActive));
    assert!(d.reason().contains("still deploying"), "{}", d.reason());
}

#[test]
fn rerunning_an_unknown_job_is_rejected() {
    let mut s = Scenario::new();
    assert_eq!(s.rerun("nope").rejected(), Some(RejectionKind::UnknownJob));
}

#[test]
fn rerunning_a_finished_job_places_fresh_first_attempts() {
    let mut s = Scenario::new();
    s.nodes(&["a", "b"], 2);
    s.deploy(batch("b", 2));
    for e in s.live_ids("b") {
        s.report(e, ExecutionState::Completed);
    }
    assert_eq!(s.job_state("b"), JobState::Completed);
    let d = s.rerun("b");
    assert_eq!(d.job_states(), [JobState::Queued, JobState::Deploying]);
    assert_eq!(d.assigned(), [("a".into(), 1), ("b".into(), 1)]);
    assert_eq!(s.job("b").version, 1, "a rerun is the same version");
}

#[test]
fn rerunning_a_stopped_job_does_not_wait_for_the_old_executions() {
    let mut s = Scenario::new();
    s.nodes(&["a"], 2);
    s.deploy(service("web", 1));
    s.stop("web");
    let d = s.rerun("web");
    assert_eq!(d.assigned(), [("a".into(), 1)]);
    assert_eq!(
        s.load("a"),
        2,
        "the old one still waits for its stop report"
    );
}
