//! The edge's local redb file: its identity, every assignment it accepted (the dedupe
//! record), the outbox of reports and log chunks not yet acknowledged by JetStream, and the
//! assignments it refused.
//!
//! All writes go through one dedicated thread that drains whatever requests are waiting
//! and commits them in one transaction (group commit): a redb commit costs about a
//! millisecond of fsync, so many executions logging at once share commits instead of
//! queueing behind each other. A caller is answered only after its transaction committed,
//! so "recorded" always means "on disk". Reads use their own read transactions on the
//! blocking pool and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_shared::spec::TaskSpec;
use cairn_shared::{ExecutionId, ExecutionState, JobId, NodeId, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::{Error, Result};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
/// (execution id as u128, attempt) → MessagePack [`ExecutionRecord`].
const EXECUTIONS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("executions");
/// Monotonic key → MessagePack [`OutboxEntry`]; sent in key order.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Assignment stream sequence → MessagePack [`Rejected`].
const REJECTED: TableDefinition<u64, &[u8]> = TableDefinition::new("rejected");

const NEXT_OUTBOX_KEY: &str = "next_outbox_key";
const NODE_ID: &str = "node_id";
/// The file inside the data directory.
pub const FILE_NAME: &str = "edge.redb";
/// Requests committed together at most; bounds one transaction's size and latency.
const MAX_GROUP: usize = 256;

/// One attempt of one execution: the unit of dedupe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptKey {
    pub execution: ExecutionId,
    pub attempt: u32,
}

impl AttemptKey {
    fn db(self) -> (u128, u32) {
        (self.execution.ulid().0, self.attempt)
    }
}

impl std::fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.execution, self.attempt)
    }
}

/// A process this edge started, identified well enough to find it again after a crash:
/// a pid alone may have been reused, a pid with its start time has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Also the process group id: every task runs in a group of its own.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), when known.
    #[serde(default)]
    pub start_ticks: Option<u64>,
}

/// What the edge knows about one attempt it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub execution: ExecutionId,
    pub attempt: u32,
    /// Absent for a tombstone: a stop for an attempt this edge never received.
    #[serde(default)]
    pub job: Option<JobId>,
    #[serde(default)]
    pub job_name: String,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub task: Option<TaskSpec>,
    pub state: ExecutionState,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The assignment stream sequence it arrived at.
    #[serde(default)]
    pub assign_seq: u64,
    pub recorded_at: Timestamp,
    #[serde(default)]
    pub process: Option<ProcessIdentity>,
}

impl ExecutionRecord {
    pub fn key(&self) -> AttemptKey {
        AttemptKey {
            execution: self.execution,
            attempt: self.attempt,
        }
    }
}

/// A message waiting to be published, exactly as it will be sent every time it is tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub subject: String,
    /// `Nats-Msg-Id`: stable across resends, so JetStream stores the message once.
    pub msg_id: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// An assignment message the edge terminated instead of running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub reason: String,
    pub at: Timestamp,
}

/// A state change of a recorded attempt.
#[derive(Clone, Debug)]
pub struct Change {
    pub state: ExecutionState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub process: Option<ProcessIdentity>,
}

/// The answer to "record this unless it is known".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The attempt was already recorded; nothing was written.
    Known(Box<ExecutionRecord>),
}

enum Op {
    InsertIfAbsent {
        record: Box<ExecutionRecord>,
        entries: Vec<OutboxEntry>,
        reply: oneshot::Sender<Result<Inserted>>,
    },
    Transition {
        key: AttemptKey,
        change: Change,
        entries: Vec<OutboxEntry>,
        reply: oneshot::Sender<Result<bool>>,
    },
    Append {
        entries: Vec<OutboxEntry>,
        reply: oneshot::Sender<Result<()>>,
    },
    Delete {
        keys: Vec<u64>,
        reply: oneshot::Sender<Result<()>>,
    },
    Reject {
        seq: u64,
        rejected: Rejected,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A computed answer, sent only once the transaction holding it committed.
enum Done {
    Inserted(oneshot::Sender<Result<Inserted>>, Inserted),
    Bool(oneshot::Sender<Result<bool>>, bool),
    Unit(oneshot::Sender<Result<()>>),
}

impl Done {
    fn send(self, failure: Option<&Error>) {
        // A caller that stopped waiting no longer needs the answer.
        match (self, failure) {
            (Done::Inserted(tx, v), None) => drop(tx.send(Ok(v))),
            (Done::Bool(tx, v), None) => drop(tx.send(Ok(v))),
            (Done::Unit(tx), None) => drop(tx.send(Ok(()))),
            (Done::Inserted(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Done::Bool(tx, _), Some(e)) => drop(tx.send(Err(e.clone()))),
            (Done::Unit(tx), Some(e)) => drop(tx.send(Err(e.clone()))),
        }
    }
}

/// The local store. Cheap to clone; the writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    ops: mpsc::Sender<Op>,
    /// Woken after every commit that added outbox entries.
    outbox_added: Arc<Notify>,
    /// Entries in the outbox now.
    outbox_len: Arc<AtomicU64>,
    /// When the entries still in the outbox were added.
    ages: Arc<std::sync::Mutex<OutboxAges>>,
}

/// When outbox entries were added, by commit: the last key each commit added and when, in
/// key order. Entries leave in key order, so the first commit not wholly deleted holds the
/// oldest entry. Entries found at open count from then.
#[derive(Debug, Default)]
struct OutboxAges {
    commits: std::collections::VecDeque<(u64, std::time::Instant)>,
    deleted_through: Option<u64>,
}

impl OutboxAges {
    fn added(&mut self, last_key: u64) {
        self.commits
            .push_back((last_key, std::time::Instant::now()));
    }

    fn deleted(&mut self, through: u64) {
        let through = self.deleted_through.map_or(through, |t| t.max(through));
        self.deleted_through = Some(through);
        while self
            .commits
            .front()
            .is_some_and(|(last, _)| *last <= through)
        {
            self.commits.pop_front();
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Store(format!("encoding a record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Store(format!("undecodable {what}: {e}")))
}

impl Store {
    /// Opens (or creates) the store in `dir` for `node`. Refuses a directory that belongs
    /// to another node. Blocking: call from a blocking context.
    pub fn open(dir: &Path, node: &NodeId) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path: PathBuf = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| Error::Open {
            path: path.clone(),
            reason: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "already open: is another edge running on this data directory?".to_owned()
                }
                e => e.to_string(),
            },
        })?;
        let txn = db.begin_write()?;
        let outbox_len;
        let next_key;
        {
            txn.open_table(META)?;
            txn.open_table(EXECUTIONS)?;
            txn.open_table(REJECTED)?;
            outbox_len = txn.open_table(OUTBOX)?.len()?;
            next_key = txn
                .open_table(META)?
                .get(NEXT_OUTBOX_KEY)?
                .map_or(0, |v| v.value());
            let mut identity = txn.open_table(IDENTITY)?;
            let recorded = identity.get(NODE_ID)?.map(|v| v.value().to_owned());
            match recorded {
                None => {
                    identity.insert(NODE_ID, node.as_str())?;
                }
                Some(id) if id == node.as_str() => {}
                Some(id) => {
                    return Err(Error::NodeMismatch {
                        dir: dir.to_path_buf(),
                        recorded: NodeId::new(id.clone()).map_err(|e| {
                            Error::Store(format!("recorded node id {id:?} is invalid: {e}"))
                        })?,
                        requested: node.clone(),
                    });
                }
            }
        }
        txn.commit()?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(1024);
        let outbox_added = Arc::new(Notify::new());
        let mut ages = OutboxAges::default();
        if outbox_len > 0 {
            ages.added(next_key.saturating_sub(1));
        }
        let ages = Arc::new(std::sync::Mutex::new(ages));
        let outbox_len = Arc::new(AtomicU64::new(outbox_len));
        let writer = Writer {
            db: Arc::clone(&db),
            outbox_added: Arc::clone(&outbox_added),
            outbox_len: Arc::clone(&outbox_len),
            ages: Arc::clone(&ages),
        };
        std::thread::Builder::new()
            .name("cairn-edge-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Open {
                path,
                reason: format!("starting the store thread: {e}"),
            })?;
        Ok(Self {
            db,
            ops: tx,
            outbox_added,
            outbox_len,
            ages,
        })
    }

    async fn request<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .await
            .map_err(|_| Error::StoreClosed)?;
        // The writer drops a request unanswered only when an earlier request of the same
        // transaction failed: nothing of it was written, and trying again may work.
        rx.await
            .map_err(|_| Error::Store("the write was abandoned with its transaction".into()))?
    }

    /// Records `record` with `entries` queued in the outbox, in one transaction, unless
    /// its attempt is already recorded (then nothing is written).
    pub async fn insert_if_absent(
        &self,
        record: ExecutionRecord,
        entries: Vec<OutboxEntry>,
    ) -> Result<Inserted> {
        self.request(|reply| Op::InsertIfAbsent {
            record: Box::new(record),
            entries,
            reply,
        })
        .await
    }

    /// Applies `change` and queues `entries`, in one transaction, unless the attempt is
    /// unknown or already terminal (then nothing is written and the answer is `false`): a
    /// terminal state is final, so each attempt reports exactly one.
    pub async fn transition(
        &self,
        key: AttemptKey,
        change: Change,
        entries: Vec<OutboxEntry>,
    ) -> Result<bool> {
        self.request(|reply| Op::Transition {
            key,
            change,
            entries,
            reply,
        })
        .await
    }

    /// Queues entries in the outbox.
    pub async fn append(&self, entries: Vec<OutboxEntry>) -> Result<()> {
        self.request(|reply| Op::Append { entries, reply }).await
    }

    /// Removes entries JetStream acknowledged.
    pub async fn delete(&self, keys: Vec<u64>) -> Result<()> {
        self.request(|reply| Op::Delete { keys, reply }).await
    }

    /// Records an assignment message that was terminated, and why.
    pub async fn reject(&self, seq: u64, reason: String) -> Result<()> {
        let rejected = Rejected {
            reason,
            at: Timestamp::now(),
        };
        self.request(|reply| Op::Reject {
            seq,
            rejected,
            reply,
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| Error::Store(format!("store reader stopped: {e}")))?
    }

    /// Up to `limit` outbox entries with keys from `from` on, in key order.
    pub async fn outbox_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, OutboxEntry)>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(Error::from)?;
            let table = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for item in table.range(from..)?.take(limit) {
                let (k, v) = item?;
                out.push((k.value(), decode("outbox entry", v.value())?));
            }
            Ok(out)
        })
        .await
    }

    /// Every attempt that is recorded but not terminal.
    pub async fn unfinished(&self) -> Result<Vec<ExecutionRecord>> {
        self.read(|db| {
            let txn = db.begin_read().map_err(Error::from)?;
            let table = txn.open_table(EXECUTIONS)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (_, v) = item?;
                let record: ExecutionRecord = decode("execution record", v.value())?;
                if !record.state.is_terminal() {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }

    /// One attempt's record.
    pub async fn get(&self, key: AttemptKey) -> Result<Option<ExecutionRecord>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(Error::from)?;
            let table = txn.open_table(EXECUTIONS)?;
            table
                .get(key.db())?
                .map(|v| decode("execution record", v.value()))
                .transpose()
        })
        .await
    }

    /// Every rejected assignment message: (stream sequence, why).
    pub async fn rejected(&self) -> Result<Vec<(u64, Rejected)>> {
        self.read(|db| {
            let txn = db.begin_read().map_err(Error::from)?;
            let table = txn.open_table(REJECTED)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.push((k.value(), decode("rejection", v.value())?));
            }
            Ok(out)
        })
        .await
    }

    pub fn outbox_len(&self) -> u64 {
        self.outbox_len.load(Ordering::Relaxed)
    }

    /// How long the oldest entry still in the outbox has waited (since this process
    /// opened the store, for one it found there); none while the outbox is empty.
    pub fn outbox_oldest_age(&self) -> Option<std::time::Duration> {
        if self.outbox_len() == 0 {
            return None;
        }
        let ages = self
            .ages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ages.commits.front().map(|(_, at)| at.elapsed())
    }

    /// Resolves after outbox entries were added since the last call (or now, if they were).
    pub async fn outbox_added(&self) {
        self.outbox_added.notified().await;
    }
}

struct Writer {
    db: Arc<Database>,
    outbox_added: Arc<Notify>,
    outbox_len: Arc<AtomicU64>,
    ages: Arc<std::sync::Mutex<OutboxAges>>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Op>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            self.commit(group.drain(..));
        }
    }

    fn commit(&self, ops: impl Iterator<Item = Op>) {
        let mut done = Vec::new();
        let mut added: u64 = 0;
        let mut removed: u64 = 0;
        let mut last_added = None;
        let mut deleted_through = None;
        let outcome = (|| -> Result<()> {
            let txn = self.db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let mut executions = txn.open_table(EXECUTIONS)?;
                let mut outbox = txn.open_table(OUTBOX)?;
                let mut rejected = txn.open_table(REJECTED)?;
                let mut next_key = meta.get(NEXT_OUTBOX_KEY)?.map_or(0, |v| v.value());
                let mut push =
                    |outbox: &mut redb::Table<u64, &[u8]>, entries: &[OutboxEntry]| -> Result<()> {
                        for entry in entries {
                            outbox.insert(next_key, encode(entry)?.as_slice())?;
                            last_added = Some(next_key);
                            next_key += 1;
                            added += 1;
                        }
                        Ok(())
                    };
                for op in ops {
                    match op {
                        Op::InsertIfAbsent {
                            record,
                            entries,
                            reply,
                        } => {
                            let key = record.key().db();
                            let known = executions
                                .get(key)?
                                .map(|v| decode::<ExecutionRecord>("execution record", v.value()))
                                .transpose()?;
                            let answer = match known {
                                Some(existing) => Inserted::Known(Box::new(existing)),
                                None => {
                                    executions.insert(key, encode(&*record)?.as_slice())?;
                                    push(&mut outbox, &entries)?;
                                    Inserted::New
                                }
                            };
                            done.push(Done::Inserted(reply, answer));
                        }
                        Op::Transition {
                            key,
                            change,
                            entries,
                            reply,
                        } => {
                            let known = executions
                                .get(key.db())?
                                .map(|v| decode::<ExecutionRecord>("execution record", v.value()))
                                .transpose()?;
                            let applied = match known {
                                Some(mut record) if !record.state.is_terminal() => {
                                    record.state = change.state;
                                    record.exit_code = change.exit_code;
                                    record.reason = change.reason;
                                    if change.process.is_some() {
                                        record.process = change.process;
                                    }
                                    executions.insert(key.db(), encode(&record)?.as_slice())?;
                                    push(&mut outbox, &entries)?;
                                    true
                                }
                                _ => false,
                            };
                            done.push(Done::Bool(reply, applied));
                        }
                        Op::Append { entries, reply } => {
                            push(&mut outbox, &entries)?;
                            done.push(Done::Unit(reply));
                        }
                        Op::Delete { keys, reply } => {
                            for key in keys {
                                if outbox.remove(key)?.is_some() {
                                    removed += 1;
                                }
                                deleted_through = deleted_through.max(Some(key));
                            }
                            done.push(Done::Unit(reply));
                        }
                        Op::Reject {
                            seq,
                            rejected: why,
                            reply,
                        } => {
                            rejected.insert(seq, encode(&why)?.as_slice())?;
                            done.push(Done::Unit(reply));
                        }
                    }
                }
                meta.insert(NEXT_OUTBOX_KEY, next_key)?;
            }
            txn.commit()?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                {
                    let mut ages = self
                        .ages
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(last) = last_added {
                        ages.added(last);
                    }
                    if let Some(through) = deleted_through {
                        ages.deleted(through);
                    }
                }
                self.outbox_len.fetch_add(added, Ordering::Relaxed);
                self.outbox_len.fetch_sub(removed, Ordering::Relaxed);
                if added > 0 {
                    self.outbox_added.notify_one();
                }
                for d in done {
                    d.send(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "local store write failed; nothing of it was kept");
                for d in done {
                    d.send(Some(&e));
                }
            }
        }
    }
}
