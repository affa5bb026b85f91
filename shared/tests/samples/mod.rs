//! One fixed sample of every message type, with fixed ids and times, shared by the codec
//! tests and the golden-fixture test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_shared::assignment::{RunExecution, StopExecution};
use cairn_shared::command::{
    DeployJob, DrainNode, JobRef, PromoteJob, RerunJob, RevertJob, SetNodeEligibility, StopJob,
};
use cairn_shared::event::*;
use cairn_shared::heartbeat::{Heartbeat, Liveness};
use cairn_shared::placement::Placement;
use cairn_shared::report::{ExecutionHealth, ExecutionUpdate, NodeHello};
use cairn_shared::resources::Resource;
use cairn_shared::spec::{Engine, HumanDuration, TaskSpec};
use cairn_shared::*;

fn ulid(n: u8) -> ulid::Ulid {
    ulid::Ulid::from_parts(1_790_000_000_000 + u64::from(n), u128::from(n) * 7919)
}

pub fn job_id() -> JobId {
    JobId::from_ulid(ulid(1))
}
pub fn execution_id() -> ExecutionId {
    ExecutionId::from_ulid(ulid(2))
}
pub fn command_id() -> CommandId {
    CommandId::from_ulid(ulid(3))
}
pub fn node() -> NodeId {
    NodeId::new("edge-1").unwrap()
}
fn event_id(n: u8) -> EventId {
    EventId::from_ulid(ulid(100 + n))
}
fn at(n: u8) -> Timestamp {
    Timestamp(1_790_000_000_000 + u64::from(n) * 1000)
}
fn labels() -> spec::Labels {
    BTreeMap::from([("role".into(), "edge".into()), ("zone".into(), "a".into())])
}

pub fn task() -> TaskSpec {
    TaskSpec {
        engine: Engine::Exec,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello from $CAIRN_NODE_ID".into(),
        ],
        args: vec!["x".into()],
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        working_dir: Some("/tmp".into()),
        timeout: Some(HumanDuration(Duration::from_secs(30))),
        secrets: vec![],
    }
}

pub fn spec() -> JobSpec {
    JobSpec {
        name: "heartbeat".into(),
        job_type: JobType::Batch,
        count: Some(3),
        selector: BTreeMap::from([("role".into(), "edge".into())]),
        constraints: vec![],
        resources: None,
        task: task(),
        disconnect: None,
        restart: None,
        update: None,
    }
}

pub fn events() -> Vec<Envelope<Event>> {
    let cause = Some(command_id());
    let bodies: Vec<Event> = vec![
        NodeRegistered {
            node: node(),
            labels: labels(),
            capacity: Some(4),
            resources: None,
        }
        .into(),
        NodeDisconnected { node: node() }.into(),
        NodeReconnected { node: node() }.into(),
        NodeLost { node: node() }.into(),
        JobDeployed {
            job: job_id(),
            version: 2,
            spec: spec(),
            reverted_to: None,
        }
        .into(),
        JobStateChanged {
            job: job_id(),
            state: JobState::Running,
            reason: Some("placed".into()),
        }
        .into(),
        ExecutionAssigned {
            execution: execution_id(),
            job: job_id(),
            job_name: "heartbeat".into(),
            version: 2,
            node: node(),
            attempt: 1,
            task: task(),
            resources: None,
            delay: None,
            health: None,
        }
        .into(),
        ExecutionStopRequested {
            execution: execution_id(),
            node: node(),
            reason: "job stopped".into(),
            attempt: 0,
        }
        .into(),
        ExecutionStateChanged {
            execution: execution_id(),
            node: node(),
            state: ExecutionState::Failed,
            exit_code: Some(3),
            reason: Some("exit status 3".into()),
        }
        .into(),
        CommandAccepted {
            command: command_id(),
            job: Some(job_id()),
            version: None,
        }
        .into(),
        CommandRejected {
            command: command_id(),
            reason: "unknown job \"nope\"".into(),
        }
        .into(),
        InputRejected {
            stream: "CAIRN_REPORT".into(),
            seq: Seq(42),
            reason: "garbage".into(),
        }
        .into(),
        // Later kinds go last: a sample's id and time follow its position.
        JobBlocked {
            job: job_id(),
            placement: Placement {
                unplaced: 2,
                nodes: 4,
                lost: 1,
                constraints: [("zone in [a]".to_owned(), 1)].into(),
                exhausted: [(Resource::Memory, 2)].into(),
                ..Placement::default()
            },
        }
        .into(),
        JobUnblocked { job: job_id() }.into(),
        NodeEligibilityChanged {
            node: node(),
            eligible: false,
        }
        .into(),
        NodeDrainStarted {
            node: node(),
            deadline: at(90),
        }
        .into(),
        NodeDrained { node: node() }.into(),
        ExecutionHealthChanged {
            execution: execution_id(),
            node: node(),
            healthy: false,
            reason: Some("not running for 10s within 5m of being taken".into()),
        }
        .into(),
        RolloutChanged {
            job: job_id(),
            version: 2,
            state: RolloutState::Failed,
            reason: Some("an execution ended before it was healthy".into()),
        }
        .into(),
        RolloutPromoted {
            job: job_id(),
            version: 2,
        }
        .into(),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Envelope::new(event_id(i as u8), cause, at(i as u8), body))
        .collect()
}

pub fn commands() -> Vec<Envelope<Command>> {
    let bodies: Vec<Command> = vec![
        DeployJob { spec: spec() }.into(),
        StopJob {
            job: JobRef("heartbeat".into()),
        }
        .into(),
        RerunJob {
            job: JobRef(job_id().to_string()),
        }
        .into(),
        SetNodeEligibility {
            node: node(),
            eligible: false,
        }
        .into(),
        DrainNode {
            node: node(),
            deadline: at(90),
        }
        .into(),
        RevertJob {
            job: JobRef("heartbeat".into()),
            version: Some(1),
        }
        .into(),
        PromoteJob {
            job: JobRef("heartbeat".into()),
        }
        .into(),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            Envelope::new(CommandId::from_ulid(ulid(50 + i as u8)), None, at(50), body)
        })
        .collect()
}

pub fn reports() -> Vec<Envelope<Report>> {
    let bodies: Vec<Report> = vec![
        NodeHello {
            node: node(),
            labels: labels(),
            capacity: Some(8),
            resources: None,
        }
        .into(),
        ExecutionUpdate {
            node: node(),
            execution: execution_id(),
            attempt: 1,
            state: ExecutionState::Completed,
            exit_code: Some(0),
            reason: None,
        }
        .into(),
        ExecutionHealth {
            node: node(),
            execution: execution_id(),
            attempt: 1,
            healthy: true,
            reason: None,
        }
        .into(),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Envelope::new(ReportId::from_ulid(ulid(60 + i as u8)), None, at(60), body))
        .collect()
}

pub fn assignments() -> Vec<Envelope<Assignment>> {
    let bodies: Vec<Assignment> = vec![
        RunExecution {
            execution: execution_id(),
            attempt: 1,
            job: job_id(),
            job_name: "heartbeat".into(),
            version: 2,
            task: task(),
            delay: None,
            health: None,
        }
        .into(),
        StopExecution {
            execution: execution_id(),
            attempt: 1,
            reason: "job stopped".into(),
        }
        .into(),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Envelope::new(event_id(70 + i as u8), Some(command_id()), at(70), body))
        .collect()
}

pub fn heartbeats() -> Vec<Envelope<Liveness>> {
    vec![Envelope::new(
        ReportId::from_ulid(ulid(80)),
        None,
        at(80),
        Heartbeat {
            node: node(),
            running: 2,
            capacity: Some(8),
            outbox: 17,
            executions: Vec::new(),
            bound: true,
        }
        .into(),
    )]
}
