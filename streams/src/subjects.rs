//! Every NATS subject and consumer name cairn uses, built from typed ids. Token rules live
//! here: ids are validated to be single tokens (see `NodeId`; ULIDs are always safe), so
//! no subject built here can contain a wildcard or an empty token.
//!
//! Layout (the first token after `cairn` names the stream):
//!
//! | subject                                   | stream        | written by   |
//! |-------------------------------------------|---------------|--------------|
//! | `cairn.cmd.<CommandType>`                 | CAIRN_CMD     | CLI          |
//! | `cairn.evt.node.<node>`                   | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.job.<job>`                     | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.exec.<job>.<node>.<execution>` | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.cmd.<command>`                 | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.input`                         | CAIRN_EVT     | orchestrator |
//! | `cairn.report.<node>`                     | CAIRN_REPORT  | that edge    |
//! | `cairn.assign.<shard>.<node>`             | `CAIRN_ASSIGN_<shard>` | orchestrator |
//! | `cairn.log.<node>.<execution>`            | CAIRN_LOG     | that edge    |
//! | `cairn.hb.<node>` (core NATS)             | none          | that edge    |
//!
//! Everything an edge may publish or pull carries its node id in a fixed position, so
//! per-node credentials can confine an edge to its own subjects.
//!
//! An execution's events name its job and node besides the execution, so the executions of
//! one job or one node are one subject filter away ([`job_executions`],
//! [`node_executions`]). Logs written before that layout hold them on
//! `cairn.evt.exec.<execution>`, which only [`LEGACY_EXECUTION_EVENTS`] matches.
//!
//! Work addressed to nodes is spread over [`Shard::COUNT`] streams by a hash of the node id.
//! nats-server checks every consumer of a work-queue stream on each ack and each consumer
//! creation, so one stream of 10,000 per-node consumers spends its time
//! there; a shard holds a 64th of them. The count is part of the subject layout: an edge
//! finds its stream by the same hash, so changing it moves every node's work.

use async_nats::Subject;
use cairn_shared::event::Aggregate;
use cairn_shared::{Command, CommandId, Event, ExecutionId, JobId, Message, NodeId};

use crate::error::{Error, Result};

pub const COMMANDS: &str = "cairn.cmd.>";
pub const EVENTS: &str = "cairn.evt.>";
pub const REPORTS: &str = "cairn.report.*";
pub const LOGS: &str = "cairn.log.*.*";
pub const HEARTBEATS: &str = "cairn.hb.*";
/// Every event about any job itself (deploys, state changes; a filter on the event stream).
pub const JOB_EVENTS: &str = "cairn.evt.job.*";
/// Every command's outcome, `CommandAccepted` or `CommandRejected` (a filter).
pub const COMMAND_OUTCOMES: &str = "cairn.evt.cmd.*";
/// Execution events as logs written before execution subjects named their job and node
/// hold them, `cairn.evt.exec.<execution>` (a filter; the current subjects have more
/// tokens, so it matches none of them).
pub const LEGACY_EXECUTION_EVENTS: &str = "cairn.evt.exec.*";

/// The subject a command is published on.
pub fn command(command: &Command) -> Subject {
    format!("cairn.cmd.{}", command.type_name()).into()
}

/// The subject an event is published on: that of the entity it is about, which for an
/// execution also names the execution's job and node. Only `ExecutionAssigned` names the
/// job itself; for other execution events `job_of` is asked for it (and only then), and
/// without an answer the event is refused with [`Error::Unaddressed`].
pub fn event(event: &Event, job_of: impl FnOnce(ExecutionId) -> Option<JobId>) -> Result<Subject> {
    Ok(match event.aggregate() {
        Aggregate::Node(id) => node_events(&id),
        Aggregate::Job(id) => format!("cairn.evt.job.{id}").into(),
        Aggregate::Execution(execution) => {
            let touches = event.touches();
            let unaddressed = |missing| Error::Unaddressed {
                event: event.type_name(),
                execution,
                missing,
            };
            let job = touches
                .job
                .or_else(|| job_of(execution))
                .ok_or_else(|| unaddressed("job"))?;
            let node = touches.node.ok_or_else(|| unaddressed("node"))?;
            format!("cairn.evt.exec.{job}.{node}.{execution}").into()
        }
        Aggregate::Command(id) => command_outcome(id),
        Aggregate::Input => "cairn.evt.input".into(),
    })
}

/// The subject on which a command's outcome event appears.
pub fn command_outcome(command: CommandId) -> Subject {
    format!("cairn.evt.cmd.{command}").into()
}

/// Every event about one node itself (registered, disconnected, …), not its executions.
pub fn node_events(node: &NodeId) -> Subject {
    format!("cairn.evt.node.{node}").into()
}

/// A filter matching every event of every execution of `job`.
pub fn job_executions(job: JobId) -> Subject {
    format!("cairn.evt.exec.{job}.*.*").into()
}

/// A filter matching every event of every execution placed on `node`.
pub fn node_executions(node: &NodeId) -> Subject {
    format!("cairn.evt.exec.*.{node}.*").into()
}

/// A filter matching every event of one execution.
pub fn execution_events(execution: ExecutionId) -> Subject {
    format!("cairn.evt.exec.*.*.{execution}").into()
}

pub fn report(node: &NodeId) -> Subject {
    format!("cairn.report.{node}").into()
}

/// The node a report subject belongs to, if it is one.
pub fn node_of_report(subject: &str) -> Option<NodeId> {
    subject
        .strip_prefix("cairn.report.")
        .and_then(|id| NodeId::new(id).ok())
}

pub fn heartbeat(node: &NodeId) -> Subject {
    format!("cairn.hb.{node}").into()
}

pub fn node_of_heartbeat(subject: &str) -> Option<NodeId> {
    subject
        .strip_prefix("cairn.hb.")
        .and_then(|id| NodeId::new(id).ok())
}

/// One of the assignment streams: the work of every node whose id hashes to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u8);

impl Shard {
    /// How many assignment streams there are. 64 keeps a shard of a 10,000-node fleet at
    /// about 160 consumers; measured against one stream (file-backed consumers), creating
    /// 10,000 consumers went from 46 s to 6.5 s and one acked message to each from over
    /// 130 s to 6 s.
    pub const COUNT: u8 = 64;

    /// The shard holding `node`'s work: FNV-1a (32-bit) of the id's bytes, modulo
    /// [`Shard::COUNT`]. Fixed forever, as edges and orchestrators must agree on it.
    pub fn of(node: &NodeId) -> Self {
        let hash = node.as_str().bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        Self((hash % u32::from(Self::COUNT)) as u8)
    }

    pub fn all() -> impl Iterator<Item = Shard> {
        (0..Self::COUNT).map(Shard)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// Every subject of one assignment stream.
pub fn assignments_in(shard: Shard) -> String {
    format!("cairn.assign.{shard}.*")
}

/// The only subject that holds work for `node`.
pub fn assignments(node: &NodeId) -> Subject {
    format!("cairn.assign.{}.{node}", Shard::of(node)).into()
}

/// The node an assignment subject belongs to, if it is one (and in its node's shard).
pub fn node_of_assignment(subject: &str) -> Option<NodeId> {
    let (shard, id) = subject.strip_prefix("cairn.assign.")?.split_once('.')?;
    let node = NodeId::new(id).ok()?;
    (Shard::of(&node).to_string() == shard).then_some(node)
}

/// The durable pull consumer through which `node` receives its work.
pub fn node_consumer(node: &NodeId) -> String {
    format!("node-{node}")
}

/// JetStream's advisories of deleted consumers, on every stream.
pub const CONSUMER_DELETIONS: &str = "$JS.EVENT.ADVISORY.CONSUMER.DELETED.*.*";

/// The node whose consumer a deletion advisory names, if it names one of an assignment
/// stream (the node's own shard).
pub fn node_of_deleted_consumer(subject: &str) -> Option<NodeId> {
    let rest = subject.strip_prefix("$JS.EVENT.ADVISORY.CONSUMER.DELETED.CAIRN_ASSIGN_")?;
    let (shard, consumer) = rest.split_once('.')?;
    let node = NodeId::new(consumer.strip_prefix("node-")?).ok()?;
    (Shard::of(&node).to_string() == shard).then_some(node)
}

pub fn log(node: &NodeId, execution: ExecutionId) -> Subject {
    format!("cairn.log.{node}.{execution}").into()
}

/// A filter matching one execution's log lines, whichever node wrote them.
pub fn log_of(execution: ExecutionId) -> Subject {
    format!("cairn.log.*.{execution}").into()
}

/// Where replies to `node`'s requests (JetStream acks, pulls) come: the only inbox its
/// credentials let it subscribe to.
pub fn inbox_prefix(node: &NodeId) -> String {
    format!("_INBOX_{node}")
}

/// The versioned prefix of the orchestrator's query service endpoints.
pub const QUERY_PREFIX: &str = "cairn.v1.q";

/// The subject of one query endpoint, e.g. `cairn.v1.q.nodes`.
pub fn query(endpoint: &str) -> Subject {
    format!("{QUERY_PREFIX}.{endpoint}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_fnv1a_of_the_node_id() {
        // Reference values of 32-bit FNV-1a: edges and orchestrators of every version must
        // agree on them.
        let shard = |id: &str| Shard::of(&NodeId::new(id).unwrap()).index();
        assert_eq!(shard("a"), (0xe40c_292c_u32 % 64) as usize);
        assert_eq!(shard("foobar"), (0xbf9c_f968_u32 % 64) as usize);
        let mut counts = [0_u32; Shard::COUNT as usize];
        for i in 0..6_400 {
            counts[shard(&format!("edge-{i}"))] += 1;
        }
        // Sequential names spread evenly (each shard within half and twice its share).
        assert!(
            counts.iter().all(|&c| (50..=200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(Shard::all().count(), 64);
        assert_eq!(Shard::all().last().unwrap().to_string(), "63");
    }

    #[test]
    fn subjects_carry_their_ids_in_fixed_positions() {
        let node = NodeId::new("edge-7").unwrap();
        assert_eq!(report(&node).as_str(), "cairn.report.edge-7");
        assert_eq!(node_of_report("cairn.report.edge-7"), Some(node.clone()));
        assert_eq!(node_of_report("cairn.report.a.b"), None);
        assert_eq!(
            node_of_heartbeat(heartbeat(&node).as_str()),
            Some(node.clone())
        );
        assert_eq!(assignments(&node).as_str(), "cairn.assign.28.edge-7");
        assert_eq!(
            node_of_assignment(assignments(&node).as_str()),
            Some(node.clone())
        );
        assert_eq!(node_of_assignment("cairn.assign.29.edge-7"), None);
        let deleted = |stream: &str, consumer: &str| {
            node_of_deleted_consumer(&format!(
                "$JS.EVENT.ADVISORY.CONSUMER.DELETED.{stream}.{consumer}"
            ))
        };
        assert_eq!(
            deleted("CAIRN_ASSIGN_28", "node-edge-7"),
            Some(node.clone())
        );
        assert_eq!(deleted("CAIRN_ASSIGN_29", "node-edge-7"), None);
        assert_eq!(deleted("CAIRN_CMD", "cairn-orchestrator"), None);
        assert_eq!(node_of_assignment("cairn.assign.edge-7"), None);
        assert_eq!(node_consumer(&node), "node-edge-7");
        let exec = ExecutionId::generate();
        assert_eq!(
            log(&node, exec).as_str(),
            format!("cairn.log.edge-7.{exec}")
        );
    }

    #[test]
    fn an_execution_events_subject_names_its_job_and_node() {
        use cairn_shared::event::{
            CommandAccepted, ExecutionAssigned, ExecutionStateChanged, ExecutionStopRequested,
            JobStateChanged, NodeLost,
        };
        use cairn_shared::{ExecutionState, JobState};
        let (node, job, other) = (
            NodeId::new("edge-7").unwrap(),
            JobId::generate(),
            JobId::generate(),
        );
        let execution = ExecutionId::generate();
        let unasked = |_| -> Option<JobId> { panic!("asked for a job the event names") };
        let assigned: Event = ExecutionAssigned {
            execution,
            job,
            job_name: "web".into(),
            version: 1,
            node: node.clone(),
            attempt: 1,
            task: serde_json::from_str(r#"{"engine": "exec", "command": ["true"]}"#).unwrap(),
            resources: None,
            delay: None,
            health: None,
        }
        .into();
        let at = format!("cairn.evt.exec.{job}.edge-7.{execution}");
        assert_eq!(event(&assigned, unasked).unwrap().as_str(), at);
        let stop: Event = ExecutionStopRequested {
            execution,
            node: node.clone(),
            reason: "test".into(),
            attempt: 1,
        }
        .into();
        let changed: Event = ExecutionStateChanged {
            execution,
            node: node.clone(),
            state: ExecutionState::Running,
            exit_code: None,
            reason: None,
        }
        .into();
        for e in [&stop, &changed] {
            let mut asked = None;
            let subject = event(e, |id| {
                asked = Some(id);
                Some(job)
            });
            assert_eq!(subject.unwrap().as_str(), at);
            assert_eq!(asked, Some(execution));
            let refused = event(e, |_| None).unwrap_err();
            assert!(
                matches!(refused, Error::Unaddressed { missing: "job", execution: x, .. } if x == execution),
                "{refused}"
            );
            assert!(!refused.is_retryable());
        }
        // The event's own job wins; nothing else is asked for one.
        assert_eq!(event(&assigned, |_| Some(other)).unwrap().as_str(), at);
        let lost: Event = NodeLost { node: node.clone() }.into();
        assert_eq!(event(&lost, unasked).unwrap(), node_events(&node));
        let state: Event = JobStateChanged {
            job,
            state: JobState::Running,
            reason: None,
        }
        .into();
        assert_eq!(
            event(&state, unasked).unwrap().as_str(),
            format!("cairn.evt.job.{job}")
        );
        let command = CommandId::generate();
        let accepted: Event = CommandAccepted {
            command,
            job: Some(job),
            version: None,
        }
        .into();
        assert_eq!(event(&accepted, unasked).unwrap(), command_outcome(command));
        assert_eq!(
            job_executions(job).as_str(),
            format!("cairn.evt.exec.{job}.*.*")
        );
        assert_eq!(node_executions(&node).as_str(), "cairn.evt.exec.*.edge-7.*");
        assert_eq!(
            execution_events(execution).as_str(),
            format!("cairn.evt.exec.*.*.{execution}")
        );
    }
}
