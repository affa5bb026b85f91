//! Events: the facts cairn has decided, in the order it decided them. The event stream is
//! the system of record; every view is a fold over these.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::{CommandId, EventId, ExecutionId, JobId, NodeId, Seq};
use crate::placement::Placement;
use crate::resources::Resources;
use crate::spec::{Health, HumanDuration, JobSpec, Labels, TaskSpec};
use crate::state::{ExecutionState, JobState, RolloutState};
use crate::time::Timestamp;

/// A node registered for the first time, or re-registered with new labels, cap or
/// resources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistered {
    pub node: NodeId,
    #[serde(default)]
    pub labels: Labels,
    /// The most executions the node runs at once, if it sets a cap.
    pub capacity: Option<u32>,
    /// The cpu, memory and disk the node offers, which placement fits requests into;
    /// absent from nodes that declare none, which only their cap limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// A node missed its heartbeats. Its work still waits for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDisconnected {
    pub node: NodeId,
}

/// A disconnected or lost node is heard from again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReconnected {
    pub node: NodeId,
}

/// A node stayed silent past the lost threshold; its executions are lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLost {
    pub node: NodeId,
}

/// A node became eligible for new work, or ineligible (it keeps what it runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEligibilityChanged {
    pub node: NodeId,
    pub eligible: bool,
}

/// A node started draining (`cairn node drain`): it is ineligible for new work from now
/// on, and what still runs there at `deadline` is asked to stop. Draining a node that
/// drains already sets a new deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDrainStarted {
    pub node: NodeId,
    pub deadline: Timestamp,
}

/// A draining node runs nothing any more: its drain is over, and it stays ineligible
/// until an operator makes it eligible again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDrained {
    pub node: NodeId,
}

/// A job, or a new version of it, was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDeployed {
    pub job: JobId,
    pub version: u32,
    pub spec: JobSpec,
    /// The earlier version whose spec this one brings back, when it is a revert (`cairn
    /// job revert`); absent for a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u32>,
}

/// A job's overall state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStateChanged {
    pub job: JobId,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An execution was placed on a node. It waits on the node's subject until the node acks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionAssigned {
    pub execution: ExecutionId,
    pub job: JobId,
    pub job_name: String,
    pub version: u32,
    pub node: NodeId,
    pub attempt: u32,
    pub task: TaskSpec,
    /// What the execution asks of its node, when its job says; absent means the defaults
    /// (`Resources::REQUEST_DEFAULT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How long the edge waits before starting it: the pause a restart policy puts after
    /// a fault (`restart.delay`); absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// How its edge judges its health, for a job with `update`; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// The orchestrator wants an execution stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStopRequested {
    pub execution: ExecutionId,
    pub node: NodeId,
    pub reason: String,
    /// The attempt to stop, so the edge can tell it from others of the same execution.
    /// 0 in events written before the field existed: "whichever attempt runs".
    #[serde(default)]
    pub attempt: u32,
}

/// An execution's observed state changed (reported by its edge, or decided: lost, cancelled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStateChanged {
    pub execution: ExecutionId,
    pub node: NodeId,
    pub state: ExecutionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An execution of a job with `update` became healthy (it ran for `min_healthy_time`), or
/// its edge found it not healthy (not so by `healthy_deadline`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionHealthChanged {
    pub execution: ExecutionId,
    pub node: NodeId,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A version's rollout moved on (see `spec::Update`): it started, succeeded, or failed,
/// with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutChanged {
    pub job: JobId,
    pub version: u32,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rolling version's canaries were promoted (`cairn job promote`): the rest of it rolls
/// out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPromoted {
    pub job: JobId,
    pub version: u32,
}

/// Some of a job's slots wait and placement found no node for them, for the reasons in
/// `placement`. Recorded when the reasons change; a terminal state or a new run of the job
/// ends it as [`JobUnblocked`] does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBlocked {
    pub job: JobId,
    pub placement: Placement,
}

/// Nothing of a blocked job waits for a node any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUnblocked {
    pub job: JobId,
}

/// A command was accepted; its effects follow (or precede) as their own events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAccepted {
    pub command: CommandId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// The job's version once the command was decided (the one a deploy or revert
    /// started), so whoever waits on the command follows that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// A command was refused; the reason is for the user who sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRejected {
    pub command: CommandId,
    pub reason: String,
}

/// A message on an input stream (commands, reports) was undecodable or invalid and was
/// terminated instead of being redelivered forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRejected {
    pub stream: String,
    pub seq: Seq,
    pub reason: String,
}

messages! {
    /// Every fact cairn records.
    pub enum Event: id = EventId {
        // 2: `capacity` may be absent (no cap), and `resources` came.
        NodeRegistered = ("NodeRegistered", 2),
        NodeDisconnected = ("NodeDisconnected", 1),
        NodeReconnected = ("NodeReconnected", 1),
        NodeLost = ("NodeLost", 1),
        JobDeployed = ("JobDeployed", 1),
        JobStateChanged = ("JobStateChanged", 1),
        JobBlocked = ("JobBlocked", 1),
        JobUnblocked = ("JobUnblocked", 1),
        NodeEligibilityChanged = ("NodeEligibilityChanged", 1),
        NodeDrainStarted = ("NodeDrainStarted", 1),
        NodeDrained = ("NodeDrained", 1),
        ExecutionAssigned = ("ExecutionAssigned", 1),
        ExecutionStopRequested = ("ExecutionStopRequested", 1),
        ExecutionStateChanged = ("ExecutionStateChanged", 1),
        ExecutionHealthChanged = ("ExecutionHealthChanged", 1),
        RolloutChanged = ("RolloutChanged", 1),
        RolloutPromoted = ("RolloutPromoted", 1),
        CommandAccepted = ("CommandAccepted", 1),
        CommandRejected = ("CommandRejected", 1),
        InputRejected = ("InputRejected", 1),
    }
}

/// The entity an event is about. It names the event's subject, so per-entity history and
/// per-entity optimistic concurrency come from JetStream subject filters. An execution's
/// subject also names its job and node, so a job's or a node's executions are one filter
/// too; only `ExecutionAssigned` carries the job, so whoever publishes the others says it
/// (see the streams crate's `subjects::event`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Node(NodeId),
    Job(JobId),
    Execution(ExecutionId),
    Command(CommandId),
    /// Rejected input has no entity of its own.
    Input,
}

impl Event {
    pub fn aggregate(&self) -> Aggregate {
        match self {
            Event::NodeRegistered(e) => Aggregate::Node(e.node.clone()),
            Event::NodeDisconnected(e) => Aggregate::Node(e.node.clone()),
            Event::NodeReconnected(e) => Aggregate::Node(e.node.clone()),
            Event::NodeLost(e) => Aggregate::Node(e.node.clone()),
            Event::JobDeployed(e) => Aggregate::Job(e.job),
            Event::JobStateChanged(e) => Aggregate::Job(e.job),
            Event::JobBlocked(e) => Aggregate::Job(e.job),
            Event::NodeEligibilityChanged(e) => Aggregate::Node(e.node.clone()),
            Event::NodeDrainStarted(e) => Aggregate::Node(e.node.clone()),
            Event::NodeDrained(e) => Aggregate::Node(e.node.clone()),
            Event::JobUnblocked(e) => Aggregate::Job(e.job),
            Event::ExecutionAssigned(e) => Aggregate::Execution(e.execution),
            Event::ExecutionStopRequested(e) => Aggregate::Execution(e.execution),
            Event::ExecutionStateChanged(e) => Aggregate::Execution(e.execution),
            Event::ExecutionHealthChanged(e) => Aggregate::Execution(e.execution),
            Event::RolloutChanged(e) => Aggregate::Job(e.job),
            Event::RolloutPromoted(e) => Aggregate::Job(e.job),
            Event::CommandAccepted(e) => Aggregate::Command(e.command),
            Event::CommandRejected(e) => Aggregate::Command(e.command),
            Event::InputRejected(_) => Aggregate::Input,
        }
    }
}

/// The entities an event is about: its aggregate, and the others it names (an execution's
/// node, the job a command was about), so a history of any of them can find it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touches<'e> {
    pub node: Option<&'e NodeId>,
    pub job: Option<JobId>,
    pub execution: Option<ExecutionId>,
    pub command: Option<CommandId>,
}

impl Event {
    /// Every entity the event names.
    pub fn touches(&self) -> Touches<'_> {
        let none = Touches::default();
        match self {
            Event::NodeRegistered(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::NodeDisconnected(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::NodeReconnected(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::NodeLost(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::JobDeployed(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::JobStateChanged(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::JobBlocked(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::NodeEligibilityChanged(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::NodeDrainStarted(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::NodeDrained(e) => Touches {
                node: Some(&e.node),
                ..none
            },
            Event::JobUnblocked(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::ExecutionAssigned(e) => Touches {
                node: Some(&e.node),
                job: Some(e.job),
                execution: Some(e.execution),
                ..none
            },
            Event::ExecutionStopRequested(e) => Touches {
                node: Some(&e.node),
                execution: Some(e.execution),
                ..none
            },
            Event::ExecutionStateChanged(e) => Touches {
                node: Some(&e.node),
                execution: Some(e.execution),
                ..none
            },
            Event::ExecutionHealthChanged(e) => Touches {
                node: Some(&e.node),
                execution: Some(e.execution),
                ..none
            },
            Event::RolloutChanged(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::RolloutPromoted(e) => Touches {
                job: Some(e.job),
                ..none
            },
            Event::CommandAccepted(e) => Touches {
                job: e.job,
                command: Some(e.command),
                ..none
            },
            Event::CommandRejected(e) => Touches {
                command: Some(e.command),
                ..none
            },
            Event::InputRejected(_) => none,
        }
    }

    /// One line saying what happened, for people (`cairn audit history`).
    pub fn summary(&self) -> String {
        match self {
            Event::NodeRegistered(n) => format!(
                "{} registered, {}, labels {:?}",
                n.node,
                offer(n.capacity, n.resources.as_ref()),
                n.labels
            ),
            Event::NodeDisconnected(n) => format!("{} disconnected", n.node),
            Event::NodeReconnected(n) => format!("{} reconnected", n.node),
            Event::NodeLost(n) => format!("{} lost", n.node),
            Event::JobDeployed(j) => format!(
                "{} version {} is job {}{}",
                j.spec.name,
                j.version,
                j.job,
                j.reverted_to
                    .map(|to| format!(", the spec of version {to} again (a revert)"))
                    .unwrap_or_default()
            ),
            Event::JobStateChanged(j) => {
                format!("job {} {}{}", j.job, j.state, because(j.reason.as_deref()))
            }
            Event::JobBlocked(b) => format!("job {} blocked: {}", b.job, b.placement),
            Event::JobUnblocked(u) => format!("job {} unblocked", u.job),
            Event::NodeEligibilityChanged(n) => format!(
                "{} {}",
                n.node,
                if n.eligible {
                    "eligible for new work"
                } else {
                    "ineligible for new work"
                }
            ),
            Event::NodeDrainStarted(n) => {
                format!(
                    "{} draining: ineligible, what runs there stops by {}",
                    n.node, n.deadline
                )
            }
            Event::NodeDrained(n) => format!("{} drained: nothing runs there", n.node),
            Event::ExecutionAssigned(a) => format!(
                "{} of {} version {} attempt {} assigned to {}",
                a.execution, a.job_name, a.version, a.attempt, a.node
            ),
            Event::ExecutionStopRequested(s) => format!(
                "{} attempt {} on {}: stop requested: {}",
                s.execution, s.attempt, s.node, s.reason
            ),
            Event::ExecutionStateChanged(s) => format!(
                "{} on {} {}{}{}",
                s.execution,
                s.node,
                s.state,
                exit(s.exit_code),
                because(s.reason.as_deref())
            ),
            Event::ExecutionHealthChanged(h) => format!(
                "{} on {} {}{}",
                h.execution,
                h.node,
                if h.healthy { "healthy" } else { "not healthy" },
                because(h.reason.as_deref())
            ),
            Event::RolloutChanged(r) => format!(
                "job {} version {} rollout {}{}",
                r.job,
                r.version,
                r.state,
                because(r.reason.as_deref())
            ),
            Event::RolloutPromoted(r) => format!(
                "job {} version {} promoted: the rest rolls out",
                r.job, r.version
            ),
            Event::CommandAccepted(c) => format!("command {} accepted", c.command),
            Event::CommandRejected(c) => format!("command {} rejected: {}", c.command, c.reason),
            Event::InputRejected(i) => {
                format!("{} sequence {} refused: {}", i.stream, i.seq, i.reason)
            }
        }
    }
}

/// ` (exit N)` when there is an exit code, for summaries.
pub(crate) fn exit(code: Option<i32>) -> String {
    code.map(|c| format!(" (exit {c})")).unwrap_or_default()
}

/// `: reason` when there is one, for summaries.
pub(crate) fn because(reason: Option<&str>) -> String {
    reason.map(|r| format!(": {r}")).unwrap_or_default()
}

/// What a node offers, in a line: `capacity 4, cpu 2, memory 1Gi, disk 10Gi`.
pub fn offer(capacity: Option<u32>, resources: Option<&Resources>) -> String {
    let cap = capacity.map_or_else(
        || "no execution cap".to_owned(),
        |c| format!("capacity {c}"),
    );
    match resources {
        Some(r) => format!("{cap}, {r}"),
        None => cap,
    }
}
