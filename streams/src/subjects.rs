//! Every NATS subject and consumer name cairn uses, built from typed ids. Token rules live
//! here: ids are validated to be single tokens (see `NodeId`; ULIDs are always safe), so
//! no subject built here can contain a wildcard or an empty token.
//!
//! Layout (the first token after `cairn` names the stream):
//!
//! | subject                              | stream        | written by   |
//! |--------------------------------------|---------------|--------------|
//! | `cairn.cmd.<CommandType>`            | CAIRN_CMD     | CLI          |
//! | `cairn.evt.node.<node>`              | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.job.<job>`                | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.exec.<execution>`         | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.cmd.<command>`            | CAIRN_EVT     | orchestrator |
//! | `cairn.evt.input`                    | CAIRN_EVT     | orchestrator |
//! | `cairn.report.<node>`                | CAIRN_REPORT  | that edge    |
//! | `cairn.assign.<node>`                | CAIRN_ASSIGN  | orchestrator |
//! | `cairn.log.<node>.<execution>`       | CAIRN_LOG     | that edge    |
//! | `cairn.hb.<node>` (core NATS)        | none          | that edge    |
//!
//! Everything an edge may publish or pull carries its node id in a fixed position, so
//! per-node credentials can confine an edge to its own subjects.

use async_nats::Subject;
use cairn_shared::event::Aggregate;
use cairn_shared::{Command, CommandId, ExecutionId, Message, NodeId};

pub const COMMANDS: &str = "cairn.cmd.>";
pub const EVENTS: &str = "cairn.evt.>";
pub const REPORTS: &str = "cairn.report.*";
pub const ASSIGNMENTS: &str = "cairn.assign.*";
pub const LOGS: &str = "cairn.log.*.*";
pub const HEARTBEATS: &str = "cairn.hb.*";
/// Every event about any job (a filter on the event stream).
pub const JOB_EVENTS: &str = "cairn.evt.job.*";

/// The subject a command is published on.
pub fn command(command: &Command) -> Subject {
    format!("cairn.cmd.{}", command.type_name()).into()
}

/// The subject of every event about one entity.
pub fn event(aggregate: &Aggregate) -> Subject {
    match aggregate {
        Aggregate::Node(id) => format!("cairn.evt.node.{id}"),
        Aggregate::Job(id) => format!("cairn.evt.job.{id}"),
        Aggregate::Execution(id) => format!("cairn.evt.exec.{id}"),
        Aggregate::Command(id) => format!("cairn.evt.cmd.{id}"),
        Aggregate::Input => "cairn.evt.input".to_owned(),
    }
    .into()
}

/// The subject on which a command's outcome event appears.
pub fn command_outcome(command: CommandId) -> Subject {
    event(&Aggregate::Command(command))
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

/// The only subject that holds work for `node`.
pub fn assignments(node: &NodeId) -> Subject {
    format!("cairn.assign.{node}").into()
}

/// The node an assignment subject belongs to, if it is one.
pub fn node_of_assignment(subject: &str) -> Option<NodeId> {
    subject
        .strip_prefix("cairn.assign.")
        .and_then(|id| NodeId::new(id).ok())
}

/// The durable pull consumer through which `node` receives its work.
pub fn node_consumer(node: &NodeId) -> String {
    format!("node-{node}")
}

pub fn log(node: &NodeId, execution: ExecutionId) -> Subject {
    format!("cairn.log.{node}.{execution}").into()
}

/// A filter matching one execution's log lines, whichever node wrote them.
pub fn log_of(execution: ExecutionId) -> Subject {
    format!("cairn.log.*.{execution}").into()
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
    fn subjects_carry_their_ids_in_fixed_positions() {
        let node = NodeId::new("edge-7").unwrap();
        assert_eq!(report(&node).as_str(), "cairn.report.edge-7");
        assert_eq!(node_of_report("cairn.report.edge-7"), Some(node.clone()));
        assert_eq!(node_of_report("cairn.report.a.b"), None);
        assert_eq!(
            node_of_heartbeat(heartbeat(&node).as_str()),
            Some(node.clone())
        );
        assert_eq!(assignments(&node).as_str(), "cairn.assign.edge-7");
        assert_eq!(
            node_of_assignment(assignments(&node).as_str()),
            Some(node.clone())
        );
        assert_eq!(node_consumer(&node), "node-edge-7");
        let exec = ExecutionId::generate();
        assert_eq!(
            log(&node, exec).as_str(),
            format!("cairn.log.edge-7.{exec}")
        );
    }
}
