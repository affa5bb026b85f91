//! The views the projector maintains and queries read: nodes, jobs, executions, their
//! indexes, command outcomes and the record of undecodable events.
//!
//! Every table maps a string key to a MessagePack value, behind the small [`Tables`]
//! interface that both the redb store and the in-memory model implement, so one
//! projection function serves both and the model test can compare them byte for byte.

use std::collections::BTreeMap;

use cairn_shared::placement::Placement;
use cairn_shared::spec::Labels;
use cairn_shared::{
    CommandId, DesiredState, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType,
    NodeId, NodeState, Resources, RolloutState, Seq, Timestamp,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Every view table. The name is the redb table name: part of the file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nodes,
    /// Non-terminal executions per node, kept apart from `Nodes` so the count is exact even
    /// for executions placed before their node's registration was projected.
    NodeLoad,
    /// What the non-terminal executions on each node ask of it, summed; apart from `Nodes`
    /// for the same reason.
    NodeAllocated,
    Jobs,
    JobNames,
    Executions,
    ExecutionsByJob,
    ExecutionsByNode,
    CommandOutcomes,
    RejectedInputs,
    Undecodable,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Nodes,
        Table::NodeLoad,
        Table::NodeAllocated,
        Table::Jobs,
        Table::JobNames,
        Table::Executions,
        Table::ExecutionsByJob,
        Table::ExecutionsByNode,
        Table::CommandOutcomes,
        Table::RejectedInputs,
        Table::Undecodable,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::Nodes => "nodes",
            Table::NodeLoad => "node_load",
            Table::NodeAllocated => "node_allocated",
            Table::Jobs => "jobs",
            Table::JobNames => "job_names",
            Table::Executions => "executions",
            Table::ExecutionsByJob => "executions_by_job",
            Table::ExecutionsByNode => "executions_by_node",
            Table::CommandOutcomes => "command_outcomes",
            Table::RejectedInputs => "rejected_inputs",
            Table::Undecodable => "undecodable",
        }
    }

    /// The table with this name, as [`Table::name`] spells it.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Raw access to the view tables. Implemented by a redb write transaction and by
/// [`MemTables`].
pub trait Tables {
    type Error: Into<crate::Error>;

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), Self::Error>;
}

/// The plain in-memory model of the view tables: what a fold over the events yields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemTables {
    pub tables: BTreeMap<Table, BTreeMap<String, Vec<u8>>>,
}

impl Tables for MemTables {
    type Error = std::convert::Infallible;

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

/// Index keys: `<owner>/<execution>`. Neither ids may contain `/`, so a prefix scan on
/// `<owner>/` finds exactly one owner's executions.
pub fn index_key(owner: &str, execution: ExecutionId) -> String {
    format!("{owner}/{execution}")
}

/// Sequence keys sort numerically as text.
pub fn seq_key(seq: Seq) -> String {
    format!("{:020}", seq.0)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Views are plain structs of strings, numbers and maps: encoding cannot fail.
    rmp_serde::to_vec_named(value).expect("views always encode")
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: Table,
    key: &str,
    bytes: &[u8],
) -> crate::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| crate::Error::CorruptView {
        table: table.name(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn eligible() -> bool {
    true
}

/// A node as the orchestrator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub state: NodeState,
    pub labels: Labels,
    /// The most executions it runs at once, if it set a cap.
    pub capacity: Option<u32>,
    /// What it offers placement, if it declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Whether it takes new work.
    #[serde(default = "eligible")]
    pub eligible: bool,
    /// The deadline of its drain, while it drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<Timestamp>,
    pub registered_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A job at its current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub version: u32,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why some of its slots wait for a node, while they do (`JobBlocked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Its current version's rollout, for a job with `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// The rollout of the version before, as it ended: why an auto-revert happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_rollout: Option<RolloutView>,
    pub spec: JobSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a job version's rollout stands (`RolloutChanged`), and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub version: u32,
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether its canaries were promoted (`cairn job promote`).
    #[serde(default)]
    pub promoted: bool,
    pub since: Timestamp,
}

/// One execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionView {
    pub id: ExecutionId,
    pub job_id: JobId,
    pub job_name: String,
    pub node_id: NodeId,
    pub version: u32,
    pub attempt: u32,
    pub desired_state: DesiredState,
    pub state: ExecutionState,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it asks of its node, when its job said (the defaults otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Whether its edge found it healthy; only for a job with `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ExecutionView {
    /// What it asks of its node, defaults filled in.
    pub fn request(&self) -> Resources {
        self.resources.unwrap_or(Resources::REQUEST_DEFAULT)
    }
}

/// What became of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub command_id: CommandId,
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The event sequence that recorded the outcome.
    pub seq: Seq,
    pub at: Timestamp,
}

/// An input message (command or report) the orchestrator refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedInput {
    pub stream: String,
    pub seq: Seq,
    pub reason: String,
    /// The event sequence that recorded the refusal.
    pub event_seq: Seq,
    pub at: Timestamp,
}

/// An event-stream message the projector could not use, skipped and kept on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecodable {
    pub seq: Seq,
    pub subject: String,
    pub reason: String,
}
