//! The cairn edge agent: pulls its own assignments, runs them, and reports through a
//! durable outbox.
//!
//! # Using it
//!
//! ```no_run
//! # async fn example() -> cairn_edge::Result<()> {
//! use cairn_edge::{Edge, EdgeConfig};
//! use cairn_shared::NodeId;
//! use tokio_util::sync::CancellationToken;
//!
//! let node = NodeId::new("edge-1").expect("a valid node id");
//! let mut config = EdgeConfig::new(node, "/var/lib/cairn/edge");
//! config.labels.insert("role".into(), "edge".into());
//! config.capacity = Some(4);
//! // Refuses a data directory that belongs to another node id.
//! let edge = Edge::open(config).await?;
//! let handle = edge.handle(); // running count, outbox length, bound or not
//! let client = cairn_streams::connect_persistent("nats://127.0.0.1:4222", None, "cairn-edge")
//!     .await
//!     .expect("connect");
//! let shutdown = CancellationToken::new();
//! edge.run(client, shutdown.clone()).await?;
//! # drop(handle);
//! # Ok(())
//! # }
//! ```
//!
//! # What it guarantees (DESIGN.md invariants 2 and 3)
//!
//! - **Record before ack.** A `RunExecution` is written to the local redb file before it is
//!   acked with a confirmed ack (`double_ack`). Its `accepted` report goes into the outbox
//!   in the same transaction: one fsync instead of two, and record and report cannot
//!   diverge. The task starts after the ack attempt, whatever its fate, and after the
//!   pause the assignment carries (`delay`, a restart policy's): the attempt stays
//!   `accepted` meanwhile, and a stop during the pause ends it `stopped` without starting.
//!   An edge restarted during the pause reports the attempt failed, as any it interrupted.
//! - **Dedupe by (execution, attempt).** A redelivered or republished assignment for a
//!   recorded attempt is acked again and nothing else happens, whatever state the attempt
//!   is in (running, finished, failed by a restart).
//! - **Outbox.** Every report (`NodeHello`, `ExecutionUpdate`) and every log chunk is
//!   written to the outbox before it is sent, sent in order with its stored `Nats-Msg-Id`
//!   (the report id, or `<execution>.<attempt>.<n>` for log chunks), and deleted only after
//!   JetStream's publish ack. While NATS is away entries accumulate; the flusher waits for
//!   the connection and resends from the first unacknowledged entry. See `outbox` for the
//!   one ordering caveat of the pipelined window.
//! - **One outcome per attempt.** Each state change is stored with its report in one
//!   transaction, and a terminal state is final: an attempt reports at most one of
//!   `completed`, `failed`, `stopped`, whatever races between exit, stop, timeout,
//!   shutdown and crash occur.
//! - **Crash honesty.** At start, every attempt recorded `accepted` or `running` is never
//!   rerun; if its process (identified by pid *and* start time from `/proc`, so a reused
//!   pid is never hit) is still alive, its process group is killed at once. How it ended
//!   is reported once the node's queue has been read up to date (the consumer had nothing
//!   pending when bound, or a delivered message says nothing is left): a stop decided
//!   while the edge was down has then ended it `stopped`; every other one is reported
//!   `failed` with reason "edge restarted", exactly once. (A message delivered to the dead
//!   process and never acked comes back only after the ack wait, so a stop in that state
//!   arrives after the attempt was reported failed, and finds it finished.)
//! - **Bad input.** An undecodable assignment (garbage, unknown type, newer version) is
//!   terminated (`AckKind::Term`), logged, and recorded with its stream sequence and
//!   reason in the `rejected` table; later assignments are unaffected.
//!
//! # Choices
//!
//! - **Capacity is not enforced here.** The orchestrator never assigns more than the
//!   declared capacity; the edge runs what it is given. Refusing would need a new report
//!   type and would only turn a scheduler bug into a stuck execution.
//! - **Stop of an unknown attempt** records a `stopped` tombstone and reports `stopped`:
//!   the attempt is not running here and never will (a run arriving later is deduped
//!   against the tombstone). A stop of a finished attempt is acked with no report. A stop
//!   of a running attempt is acked at once; its task sends SIGTERM to the process group,
//!   SIGKILL after `stop_grace`, and reports `stopped` with the stop's reason.
//! - **Processes.** `command[0]` with `command[1..] + args`, the edge's environment plus
//!   the spec's `env` plus `CAIRN_NODE_ID`, `CAIRN_EXECUTION_ID`, `CAIRN_JOB_NAME`,
//!   `CAIRN_ATTEMPT`; stdin is /dev/null; each task gets its own process group, which is
//!   signalled on stop and timeout and SIGKILLed once the main process has exited, so no
//!   leftover holds the output pipes. Exit 0 is `completed`; any other exit `failed` with
//!   the code; a signal, spawn error or timeout (reason "timed out after 30s") `failed`
//!   with the reason.
//! - **Logs** go to `cairn.log.<node>.<execution>` through the outbox, in chunks of at most
//!   16 KiB that end on line boundaries (a partial line is sent after 200 ms of quiet),
//!   with headers naming the stream and attempt (`cairn_streams::logs`). The end marker
//!   and the terminal report are recorded in one transaction, end marker first: once an
//!   attempt is reported terminal its log is complete.
//! - **Graceful shutdown** ends running tasks like a stop and reports them `failed`
//!   ("edge shut down"): they did not finish, and the orchestrator did not ask. The outbox
//!   is flushed for up to `shutdown_flush_timeout`; the rest waits for the next start.
//! - **Heartbeats** are core NATS messages (an `Envelope<Liveness>`) on `cairn.hb.<node>`
//!   every `heartbeat_interval`, skipped while disconnected; they carry the node id, the
//!   attempts running (and their count), the capacity and the outbox length. The attempts
//!   are how an orchestrator that declared this node lost learns, on its return, which of
//!   its executions still run.
//! - **The pull.** One long-lived `messages()` stream with a server idle heartbeat; on any
//!   error (missed heartbeats after a server restart, consumer deleted) it is dropped and
//!   bound again with capped backoff. The edge never creates its consumer: until the
//!   orchestrator has made it (on the hello), binding is retried.
//! - **Security groundwork.** The edge touches only `cairn.assign.<shard>.<node>` (through
//!   its own consumer `node-<node>` on `CAIRN_ASSIGN_<shard>`: info, pull, ack; the shard
//!   is a hash of the node id), `cairn.report.<node>`,
//!   `cairn.log.<node>.*` and `cairn.hb.<node>`.
//! - **Storage.** One redb file `edge.redb` in the data directory. All writes go through
//!   one thread that commits whatever requests are waiting in one transaction (group
//!   commit); reads run on the blocking pool.

mod agent;
mod error;
mod exec;
mod heartbeat;
mod host;
pub mod metrics;
mod outbox;
mod store;

pub(crate) use agent::Stats;
pub use agent::{Edge, EdgeConfig, EdgeHandle};
pub use error::{Error, Result};
pub use store::FILE_NAME as STORE_FILE_NAME;
