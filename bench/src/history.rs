//! A synthetic but realistic event history: nodes register, then jobs are deployed and each
//! execution goes through assigned → accepted → running → completed, as the orchestrator
//! would record them.

use std::collections::BTreeMap;

use cairn_shared::codec::Envelope;
use cairn_shared::event::*;
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::*;
use cairn_streams::Outgoing;

pub const NODES: usize = 1_000;
pub const EXECUTIONS_PER_JOB: usize = 100;

/// Produces `total` encoded events in stream order.
pub fn events(total: u64) -> impl Iterator<Item = Outgoing> {
    let nodes: Vec<NodeId> = (0..NODES)
        .map(|i| NodeId::new(format!("bench-{i:05}")).unwrap())
        .collect();
    let task = TaskSpec {
        engine: Engine::Exec,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello from $CAIRN_NODE_ID".into(),
        ],
        args: vec![],
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    };
    let mut n = 0u64;
    let node_events = nodes.clone().into_iter().map(|node| {
        let registered: Event = NodeRegistered {
            node,
            labels: BTreeMap::from([("role".into(), "edge".into())]),
            capacity: Some(64),
            resources: None,
        }
        .into();
        (registered, None)
    });
    let job_events = (0u64..).flat_map(move |j| job_history(j, &nodes, &task));
    node_events
        .chain(job_events)
        .take(usize::try_from(total).unwrap_or(usize::MAX))
        .map(move |(body, job)| {
            n += 1;
            let envelope = Envelope::new(
                EventId::generate(),
                None,
                Timestamp(1_800_000_000_000 + n),
                body,
            );
            Outgoing::event_with(&envelope, |_| job).expect("bench events encode")
        })
}

/// One job's events, each with the job (which an execution's subject names).
fn job_history(j: u64, nodes: &[NodeId], task: &TaskSpec) -> Vec<(Event, Option<JobId>)> {
    let job = JobId::generate();
    let command = CommandId::generate();
    let name = format!("bench-job-{j}");
    let mut out: Vec<Event> = vec![
        JobDeployed {
            job,
            version: 1,
            spec: JobSpec {
                name: name.clone(),
                job_type: JobType::Batch,
                count: Some(EXECUTIONS_PER_JOB as u32),
                selector: BTreeMap::new(),
                constraints: vec![],
                resources: None,
                task: task.clone(),
                disconnect: None,
                restart: None,
                update: None,
            },
            reverted_to: None,
        }
        .into(),
        CommandAccepted {
            command,
            job: Some(job),
            version: None,
        }
        .into(),
    ];
    let executions: Vec<(ExecutionId, NodeId)> = (0..EXECUTIONS_PER_JOB)
        .map(|i| {
            (
                ExecutionId::generate(),
                nodes[(j as usize * 7 + i) % nodes.len()].clone(),
            )
        })
        .collect();
    for (execution, node) in &executions {
        out.push(
            ExecutionAssigned {
                execution: *execution,
                job,
                job_name: name.clone(),
                version: 1,
                node: node.clone(),
                attempt: 1,
                task: task.clone(),
                resources: None,
                delay: None,
                health: None,
            }
            .into(),
        );
    }
    out.push(
        JobStateChanged {
            job,
            state: JobState::Deploying,
            reason: None,
        }
        .into(),
    );
    for state in [
        ExecutionState::Accepted,
        ExecutionState::Running,
        ExecutionState::Completed,
    ] {
        for (execution, node) in &executions {
            out.push(
                ExecutionStateChanged {
                    execution: *execution,
                    node: node.clone(),
                    state,
                    exit_code: (state == ExecutionState::Completed).then_some(0),
                    reason: None,
                }
                .into(),
            );
        }
    }
    out.push(
        JobStateChanged {
            job,
            state: JobState::Completed,
            reason: None,
        }
        .into(),
    );
    out.into_iter().map(|e| (e, Some(job))).collect()
}
