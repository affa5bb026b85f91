//! What each role's credentials allow, as NATS permissions. Everything is denied unless
//! allowed here, so each list is the whole of what that role can do.

use std::fmt;

use cairn_shared::NodeId;
use cairn_streams::{StreamKind, subjects};
use nats_jwt_rs::types::{Permission, Permissions, ResponsePermission};

/// Who credentials are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the orchestrator: every stream and consumer, the query service, the heartbeats.
    Orchestrator,
    /// An operator with the CLI, in full.
    Admin,
    /// An operator who may query and follow, never command.
    Reader,
    /// One edge: its own consumer, reports, logs and heartbeats.
    Node(NodeId),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Orchestrator => f.write_str("orchestrator"),
            Role::Admin => f.write_str("admin"),
            Role::Reader => f.write_str("reader"),
            Role::Node(node) => write!(f, "node {node}"),
        }
    }
}

/// The streams a reader may read through consumers of its own. The assignment shards are
/// left out: a consumer on a work queue would take the work it reads.
const READABLE: [StreamKind; 4] = [
    StreamKind::Commands,
    StreamKind::Events,
    StreamKind::Reports,
    StreamKind::Logs,
];

impl Role {
    /// The user's name in its JWT (what the server logs).
    pub fn user_name(&self) -> String {
        match self {
            Role::Node(node) => format!("cairn-node-{node}"),
            other => format!("cairn-{other}"),
        }
    }

    pub fn permissions(&self) -> Permissions {
        match self {
            Role::Orchestrator => Permissions {
                publish: allow([
                    // Streams, consumers, publishes, reads: the orchestrator declares and
                    // owns them all.
                    "$JS.API.>",
                    "$JS.ACK.>",
                    "cairn.>",
                ]),
                subscribe: allow([
                    "cairn.>",
                    "_INBOX.>",
                    "$SRV.>",
                    subjects::CONSUMER_DELETIONS,
                ]),
                // Answers to queries go to the asker's inbox.
                resp: Some(ResponsePermission {
                    max_messages: 1,
                    ttl: std::time::Duration::ZERO,
                }),
            },
            Role::Admin => Permissions {
                publish: allow([">"]),
                subscribe: allow([">"]),
                resp: None,
            },
            Role::Reader => {
                let mut publish = vec![
                    format!("{}.>", subjects::QUERY_PREFIX),
                    "$JS.API.INFO".to_owned(),
                    "$JS.API.STREAM.NAMES".to_owned(),
                    "$JS.API.STREAM.LIST".to_owned(),
                    "$JS.API.STREAM.INFO.*".to_owned(),
                    "$JS.API.STREAM.MSG.GET.*".to_owned(),
                    "$JS.API.DIRECT.GET.>".to_owned(),
                ];
                for stream in READABLE {
                    let name = stream.name();
                    publish.extend([
                        format!("$JS.API.CONSUMER.CREATE.{name}"),
                        format!("$JS.API.CONSUMER.CREATE.{name}.>"),
                        format!("$JS.API.CONSUMER.INFO.{name}.*"),
                        format!("$JS.API.CONSUMER.MSG.NEXT.{name}.*"),
                    ]);
                }
                Permissions {
                    publish: allow(publish),
                    subscribe: allow(["_INBOX.>"]),
                    resp: None,
                }
            }
            Role::Node(node) => {
                let stream = StreamKind::assignments_of(node).name();
                let consumer = subjects::node_consumer(node);
                Permissions {
                    publish: allow([
                        subjects::report(node).to_string(),
                        format!("cairn.log.{node}.*"),
                        subjects::heartbeat(node).to_string(),
                        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
                        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
                        format!("$JS.ACK.{stream}.{consumer}.>"),
                    ]),
                    subscribe: allow([format!("{}.>", subjects::inbox_prefix(node))]),
                    resp: None,
                }
            }
        }
    }
}

/// The system account's user: it only pushes account updates.
pub fn system() -> Permissions {
    Permissions {
        publish: allow(["$SYS.REQ.CLAIMS.UPDATE"]),
        subscribe: allow(["_INBOX.>"]),
        resp: None,
    }
}

fn allow<S: Into<String>>(subjects: impl IntoIterator<Item = S>) -> Permission {
    Permission {
        allow: subjects.into_iter().map(Into::into).collect(),
        deny: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_may_touch_only_subjects_that_name_it() {
        let node = NodeId::new("edge-7").unwrap();
        let permissions = Role::Node(node).permissions();
        for subject in permissions
            .publish
            .allow
            .iter()
            .chain(&permissions.subscribe.allow)
        {
            assert!(subject.contains("edge-7"), "{subject}");
            assert!(!subject.contains("*") || subject.starts_with("cairn.log.edge-7."));
        }
        assert!(permissions.publish.deny.is_empty() && permissions.resp.is_none());
    }

    #[test]
    fn a_reader_may_not_command_or_consume_work() {
        let permissions = Role::Reader.permissions();
        for subject in &permissions.publish.allow {
            assert!(!subject.starts_with("cairn.cmd"), "{subject}");
            assert!(!subject.contains("CAIRN_ASSIGN"), "{subject}");
            assert!(!subject.starts_with("$JS.ACK"), "{subject}");
            assert!(
                !subject.contains("DELETE") && !subject.contains("PURGE"),
                "{subject}"
            );
        }
    }
}
