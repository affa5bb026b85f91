//! The streams cairn declares, with their retention, limits and replication, and the
//! idempotent set-up that creates or updates them at start.

use std::sync::LazyLock;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{self, ConsumerCreateStrictErrorKind, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::StreamExt;

use crate::error::{Error, Result, Transient};
use crate::subjects::{self, Shard};

/// One of cairn's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Commands from users: durable the moment JetStream acks them.
    Commands,
    /// The record: every decided fact, in order. Everything else derives from it.
    Events,
    /// Reports from edges (registration, execution updates).
    Reports,
    /// Work addressed to the nodes of one shard, one subject per node; holds exactly the
    /// unacked work.
    Assignments(Shard),
    /// Task output, one subject per execution.
    Logs,
}

/// The assignment streams' names and subject filters, made once so that every
/// [`StreamKind`] names itself with a `&'static str`.
static ASSIGNMENT_STREAMS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    Shard::all()
        .map(|shard| {
            (
                format!("CAIRN_ASSIGN_{shard}"),
                subjects::assignments_in(shard),
            )
        })
        .collect()
});

impl StreamKind {
    /// Every stream cairn declares: the four singletons and each assignment shard.
    pub fn all() -> impl Iterator<Item = StreamKind> {
        [
            StreamKind::Commands,
            StreamKind::Events,
            StreamKind::Reports,
            StreamKind::Logs,
        ]
        .into_iter()
        .chain(Self::assignments())
    }

    /// Every assignment stream.
    pub fn assignments() -> impl Iterator<Item = StreamKind> {
        Shard::all().map(StreamKind::Assignments)
    }

    /// The assignment stream holding `node`'s work.
    pub fn assignments_of(node: &cairn_shared::NodeId) -> StreamKind {
        StreamKind::Assignments(Shard::of(node))
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Commands => "CAIRN_CMD",
            StreamKind::Events => "CAIRN_EVT",
            StreamKind::Reports => "CAIRN_REPORT",
            StreamKind::Assignments(shard) => &ASSIGNMENT_STREAMS[shard.index()].0,
            StreamKind::Logs => "CAIRN_LOG",
        }
    }

    pub fn subjects(self) -> &'static str {
        match self {
            StreamKind::Commands => subjects::COMMANDS,
            StreamKind::Events => subjects::EVENTS,
            StreamKind::Reports => subjects::REPORTS,
            StreamKind::Assignments(shard) => &ASSIGNMENT_STREAMS[shard.index()].1,
            StreamKind::Logs => subjects::LOGS,
        }
    }
}

/// The single assignment stream of earlier versions, before work was sharded.
pub const UNSHARDED_ASSIGNMENTS: &str = "CAIRN_ASSIGN";

/// The deployment-dependent settings of cairn's streams.
#[derive(Clone, Debug)]
pub struct Topology {
    /// 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
    /// The most per-node consumers one assignment stream accepts (nats-server caps streams
    /// at 1,000 unless this is set). Nodes hash to one of [`Shard::COUNT`] streams and no
    /// spread can be promised for arbitrary ids, so each shard may take the whole fleet.
    pub max_nodes: i32,
    /// How long a repeated `Nats-Msg-Id` is recognised as a duplicate.
    pub duplicate_window: Duration,
    /// How long task output is kept.
    pub log_max_age: Duration,
    /// Memory storage, for benchmarks and tests that measure cairn rather than the disk.
    pub memory: bool,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_nodes: 20_000,
            duplicate_window: Duration::from_secs(120),
            log_max_age: Duration::from_secs(7 * 24 * 3600),
            memory: false,
        }
    }
}

impl Topology {
    /// How an assignment shard keeps its work (see ARCHITECTURE.md, "node consumers on a
    /// cluster"). On one server, a work queue: an ack removes the work. On a cluster, limits
    /// retention, because a replicated work queue accepts only consumers with as many
    /// replicas as itself, each a Raft group of its own, which costs a cluster of 10,000
    /// nodes two minutes to register and 1.2 GB per server; under limits retention the
    /// per-node consumers stay R1 and in memory, and the orchestrator removes acked work
    /// ([`Topology::sweeps_assignments`]).
    pub fn assignment_retention(&self) -> RetentionPolicy {
        if self.sweeps_assignments() {
            RetentionPolicy::Limits
        } else {
            RetentionPolicy::WorkQueue
        }
    }

    /// Whether acked work stays in the assignment shards until the orchestrator purges it
    /// (a cluster), rather than leaving with its ack (one server).
    pub fn sweeps_assignments(&self) -> bool {
        self.replicas > 1
    }

    /// The full configuration of one stream.
    pub fn config(&self, kind: StreamKind) -> stream::Config {
        let mut config = stream::Config {
            name: kind.name().to_owned(),
            subjects: vec![kind.subjects().to_owned()],
            storage: if self.memory {
                StorageType::Memory
            } else {
                StorageType::File
            },
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        };
        match kind {
            StreamKind::Commands => {
                config.description = Some("cairn commands from users".into());
                config.max_consumers = 100;
                // Commands are part of the audit trail: never silently dropped to make room.
                config.discard = DiscardPolicy::New;
            }
            StreamKind::Events => {
                config.description = Some("cairn events: the system of record".into());
                // Replay tools and followers each hold an ordered consumer.
                config.max_consumers = 1_000;
                config.discard = DiscardPolicy::New;
                // The decider appends all events of one decision as one atomic batch.
                config.allow_atomic_publish = true;
            }
            StreamKind::Reports => {
                config.description = Some("cairn reports from edges".into());
                config.max_consumers = 100;
                config.discard = DiscardPolicy::New;
            }
            StreamKind::Assignments(shard) => {
                config.description =
                    Some(format!("cairn work addressed to nodes of shard {shard}"));
                config.retention = self.assignment_retention();
                config.max_consumers = self.max_nodes;
                config.discard = DiscardPolicy::New;
            }
            StreamKind::Logs => {
                config.description = Some("cairn task output".into());
                config.max_consumers = 1_000;
                config.max_age = self.log_max_age;
            }
        }
        config
    }

    /// Creates every stream, or updates it where its settings changed. Safe to call from
    /// several processes at once and at every start.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<()> {
        retire_unsharded(js).await?;
        // One request each; 68 of them one after another would add a visible pause to
        // every start.
        // Every one runs to its end, even after another failed: a stream being replaced
        // must not be left deleted and not yet created again.
        let outcomes: Vec<Result<()>> = futures::stream::iter(StreamKind::all())
            .map(|kind| self.ensure_one(js, kind))
            .buffer_unordered(ENSURING_AT_ONCE)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }

    /// Creates `kind`'s stream only if it does not exist, never touching an existing one:
    /// for clients (the CLI) that must not impose their idea of replicas or limits on a
    /// deployment, yet may store a command before any orchestrator ever ran.
    pub async fn create_if_missing(&self, js: &jetstream::Context, kind: StreamKind) -> Result<()> {
        let setup = |e: &dyn Transient, reason: String| Error::Setup {
            stream: kind.name().to_owned(),
            reason,
            retryable: e.transient(),
        };
        // `get_stream` asks the server; `get_stream_no_info` only makes a handle, so it
        // would say "exists" for a stream that never was. Only a clear "not found" leads
        // to a create: a look that got no answer (a stream whose leader is still being
        // elected) says nothing about whether the stream exists.
        match js.get_stream(kind.name()).await {
            Ok(_) => return Ok(()),
            Err(e) if stream_not_found(&e) => {}
            Err(e) => return Err(setup(&e, e.to_string())),
        }
        // Someone else may create it first, with settings of their own, which are theirs
        // to choose.
        create(js, kind, self.config(kind)).await
    }

    async fn ensure_one(&self, js: &jetstream::Context, kind: StreamKind) -> Result<()> {
        let wanted = self.config(kind);
        let setup = |e: &dyn Transient, reason: String| Error::Setup {
            stream: kind.name().to_owned(),
            reason,
            retryable: e.transient(),
        };
        match js.get_stream(kind.name()).await {
            Ok(mut existing) => {
                let info = existing
                    .info()
                    .await
                    .map_err(|e| setup(&e, e.to_string()))?;
                if info.config.retention != wanted.retention {
                    return convert(js, kind, info, wanted).await;
                }
                if !same_settings(&info.config, &wanted) {
                    tracing::info!(stream = kind.name(), "updating stream settings");
                    js.update_stream(wanted)
                        .await
                        .map_err(|e| setup(&e, format!("update refused: {e}")))?;
                }
                Ok(())
            }
            Err(e) if stream_not_found(&e) => create(js, kind, wanted).await,
            Err(e) => Err(setup(&e, e.to_string())),
        }
    }
}

/// Replaces a stream whose retention must change, which JetStream does not allow in
/// place (a work queue neither becomes nor stops being one): only while it is empty, since
/// its messages are work no replay can restore exactly. An assignment shard made as a
/// replicated work queue by an earlier version is the case this is for.
async fn convert(
    js: &jetstream::Context,
    kind: StreamKind,
    info: &stream::Info,
    wanted: stream::Config,
) -> Result<()> {
    let name = kind.name();
    let setup = |retryable: bool, reason: String| Error::Setup {
        stream: name.to_owned(),
        reason,
        retryable,
    };
    let held = info.state.messages;
    if held > 0 {
        return Err(setup(
            false,
            format!(
                "it keeps its messages under {:?} retention and cairn now needs {:?} for {} \
                 replicas, which JetStream cannot change in place; it still holds {held} \
                 messages, so it is left alone. Let its nodes take that work with the \
                 settings it was made for (the same --replicas as then), or delete it \
                 (`nats stream rm {name}`), which drops that work",
                info.config.retention, wanted.retention, wanted.num_replicas
            ),
        ));
    }
    tracing::info!(
        stream = name,
        from = ?info.config.retention,
        to = ?wanted.retention,
        "replacing an empty stream whose retention changes"
    );
    js.delete_stream(name)
        .await
        .map_err(|e| setup(true, format!("deleting it to change its retention: {e}")))?;
    create(js, kind, wanted).await
}

/// Creates `kind`'s stream as `config` says. One that exists by the time the server answers
/// (another process created it between a look and this create) counts as created: its
/// settings are checked at the next start, never fought over now.
async fn create(js: &jetstream::Context, kind: StreamKind, config: stream::Config) -> Result<()> {
    match js.create_stream(config).await {
        Ok(_) => Ok(()),
        Err(e) if stream_name_taken(&e) => Ok(()),
        Err(_) if js.get_stream(kind.name()).await.is_ok() => Ok(()),
        Err(e) => Err(Error::Setup {
            stream: kind.name().to_owned(),
            reason: e.to_string(),
            retryable: e.transient(),
        }),
    }
}

/// Compares the settings cairn owns; anything an operator tuned elsewhere is left alone.
fn same_settings(have: &stream::Config, want: &stream::Config) -> bool {
    have.subjects == want.subjects
        && have.num_replicas.max(1) == want.num_replicas.max(1)
        && have.max_consumers == want.max_consumers
        && have.duplicate_window == want.duplicate_window
        && have.max_age == want.max_age
        && have.allow_direct == want.allow_direct
        && have.allow_atomic_publish == want.allow_atomic_publish
        && have.discard == want.discard
}

/// The durable pull consumer through which one node receives its work: filtered to the
/// node's assignment subject, explicit acks, redelivered until acked however often, and
/// never deleted for inactivity (a node may be away for days).
///
/// Its state is kept in memory. The shard holds the unacked work (on a cluster, also acked
/// work not yet swept), so the consumer holds nothing that matters: a server forgets it
/// when it restarts, the orchestrator creates it again, and the new one delivers all the
/// work still on the node's subject, which edges deduplicate. A file-backed consumer costs a directory and two files at
/// creation and a state write on acks: creating 10,000 took 3.3–3.9 s in memory against
/// 15–27 s on file on the development machine.
pub fn node_consumer_config(node: &cairn_shared::NodeId) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(subjects::node_consumer(node)),
        description: Some(format!("work for node {node}")),
        filter_subject: subjects::assignments(node).to_string(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: NODE_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: NODE_MAX_ACK_PENDING,
        // One replica, on one server and on a cluster alike: there the shards use limits
        // retention, which (unlike a replicated work queue, error 10134) accepts R1
        // consumers. A server's loss takes the consumers it held with it; the orchestrator
        // creates them again when their edges say they cannot bind (see ARCHITECTURE.md,
        // "node consumers on a cluster").
        num_replicas: 1,
        memory_storage: true,
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    }
}

/// Streams created or checked at once by [`Topology::ensure`].
const ENSURING_AT_ONCE: usize = 16;

/// Whether the server answered that the stream does not exist (rather than not answering).
fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether a create was refused because a stream of that name exists already.
fn stream_name_taken(e: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(ref err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// Deletes the single assignment stream of versions before sharding once it is empty, and
/// refuses to go on while it still holds work: its nodes' edges now pull from their shard
/// and would never see that work, so it must be drained first.
async fn retire_unsharded(js: &jetstream::Context) -> Result<()> {
    let setup = |retryable: bool, reason: String| Error::Setup {
        stream: UNSHARDED_ASSIGNMENTS.to_owned(),
        reason,
        retryable,
    };
    let mut stream = match js.get_stream(UNSHARDED_ASSIGNMENTS).await {
        Ok(stream) => stream,
        Err(e) if stream_not_found(&e) => return Ok(()),
        Err(e) => return Err(setup(e.transient(), e.to_string())),
    };
    let held = stream
        .info()
        .await
        .map_err(|e| setup(e.transient(), e.to_string()))?
        .state
        .messages;
    if held > 0 {
        return Err(setup(
            false,
            format!(
                "holds {held} assignments not yet acked, stored by a cairn version that did not \
             shard assignments; run that version until its edges have taken them, then start \
             this one"
            ),
        ));
    }
    tracing::info!(
        stream = UNSHARDED_ASSIGNMENTS,
        "deleting the empty unsharded assignment stream"
    );
    match js.delete_stream(UNSHARDED_ASSIGNMENTS).await {
        Ok(_) => Ok(()),
        // Another orchestrator deleted it first.
        Err(_) if js.get_stream(UNSHARDED_ASSIGNMENTS).await.is_err() => Ok(()),
        Err(e) => Err(setup(e.transient(), e.to_string())),
    }
}

/// How long a node has to ack an assignment before it is redelivered. An edge acks only
/// after recording the assignment locally, which takes milliseconds.
pub const NODE_ACK_WAIT: Duration = Duration::from_secs(30);
/// Assignments a node may hold unacked at once.
pub const NODE_MAX_ACK_PENDING: i64 = 1_000;

/// Creates `node`'s consumer if it does not exist (idempotent; safe to race). Only the
/// orchestrator calls this: edges never create consumers.
pub async fn ensure_node_consumer(
    js: &jetstream::Context,
    node: &cairn_shared::NodeId,
) -> Result<()> {
    let name = subjects::node_consumer(node);
    let failed = |reason: String| Error::Consumer {
        consumer: name.clone(),
        reason,
    };
    let stream = js
        .get_stream_no_info(StreamKind::assignments_of(node).name())
        .await
        .map_err(|e| failed(e.to_string()))?;
    // One request: a create of a consumer that exists with this configuration answers
    // with it, and one that exists with another (made by an earlier version) is kept.
    match stream
        .create_consumer_strict(node_consumer_config(node))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Deletes `node`'s consumer and creates it again, for a consumer its edge cannot bind:
/// one that lived on a server that is gone. The answer to the delete comes from the
/// consumer's own server, so it is awaited only for [`DELETE_ANSWER_WAIT`]; the meta leader
/// deletes it either way, and the create that follows places it on a server that is up
/// (until the delete has taken effect it fails, and the caller tries again).
pub async fn replace_node_consumer(
    js: &jetstream::Context,
    node: &cairn_shared::NodeId,
) -> Result<()> {
    let stream = StreamKind::assignments_of(node).name();
    let name = subjects::node_consumer(node);
    let deleted = tokio::time::timeout(
        DELETE_ANSWER_WAIT,
        js.delete_consumer_from_stream(&name, stream),
    )
    .await;
    tracing::debug!(%node, answered = deleted.is_ok(), "node consumer deleted to be replaced");
    ensure_node_consumer(js, node).await
}

/// How long [`replace_node_consumer`] waits for a delete's answer.
pub const DELETE_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Node consumers created at once by [`ensure_node_consumers`]. Memory consumers on 64
/// shards are cheap to create and the server works on several at once: registering
/// 10,000 nodes took 9.0 s with 32 in flight and 7.2–7.4 s with 128.
pub const NODE_CONSUMERS_AT_ONCE: usize = 128;

/// [`ensure_node_consumer`] for many nodes, [`NODE_CONSUMERS_AT_ONCE`] requests in flight
/// at a time, every one tried whatever the others do: the nodes whose consumer could not be
/// created, each with why (empty when all were), for the caller to try again.
pub async fn ensure_node_consumers(
    js: &jetstream::Context,
    nodes: impl IntoIterator<Item = cairn_shared::NodeId>,
) -> Vec<(cairn_shared::NodeId, Error)> {
    futures::stream::iter(nodes)
        .map(|node| async move {
            let made = ensure_node_consumer(js, &node).await;
            made.err().map(|e| (node, e))
        })
        .buffer_unordered(NODE_CONSUMERS_AT_ONCE)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// The durable consumer through which orchestrators take commands or reports, in order.
/// Every orchestrator binds the same one, so each input is handed to one of them at a
/// time; whatever is not acked (an orchestrator died mid-decision) is redelivered.
pub fn orchestrator_consumer_config() -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(ORCHESTRATOR_CONSUMER.to_owned()),
        description: Some("cairn orchestrators".into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        // What a killed orchestrator held comes back after this; deciding an input twice is
        // harmless (the second finds it decided), so short beats safe-looking.
        ack_wait: Duration::from_secs(10),
        max_deliver: -1,
        max_ack_pending: 1_024,
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    }
}

pub const ORCHESTRATOR_CONSUMER: &str = "cairn-orchestrator";
