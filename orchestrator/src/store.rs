//! The redb file that holds the views and the projector's checkpoint, and the read-only
//! queries over it. Every write is one transaction that changes views *and* the checkpoint,
//! so after any crash the file holds exactly the effect of events `1..=applied_seq`.

use std::path::{Path, PathBuf};

use cairn_shared::codec::Envelope;
use cairn_shared::{CommandId, Event, ExecutionState, JobId, NodeId, Resources, Seq};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::digest::{RowHash, RowValue, TableDigest, TableHasher, row_hash};
use crate::error::Result;
use crate::projection::{self, Applied};
use crate::views::{
    CommandOutcome, ExecutionView, JobView, MemTables, NodeView, RejectedInput, Table, Tables,
    Undecodable, decode,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const APPLIED_SEQ: &str = "applied_seq";
/// The shape of the views a file holds. A file of another shape is emptied at open and
/// its views are rebuilt from the event stream, the record they are a fold of. Files
/// without the key are of shape 1.
const SCHEMA: &str = "views_schema";
/// 2: executions carry their request, nodes their allocation (`node_allocated`).
const VIEWS_SCHEMA: u64 = 2;

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// One message of the event stream, ready to project.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub seq: Seq,
    pub subject: String,
    pub message: Result<Envelope<Event>, cairn_shared::codec::Error>,
}

impl Incoming {
    pub fn decode(seq: Seq, subject: &str, payload: &[u8]) -> Self {
        Self {
            seq,
            subject: subject.to_owned(),
            message: Envelope::decode(payload),
        }
    }
}

/// The view tables of one open write transaction.
pub struct RedbTables<'txn> {
    tables: Vec<redb::Table<'txn, &'static str, &'static [u8]>>,
}

impl Tables for RedbTables<'_> {
    type Error = redb::StorageError;

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.tables[table as usize]
            .get(key)?
            .map(|v| v.value().to_vec()))
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        self.tables[table as usize].insert(key, value)?;
        Ok(())
    }
}

/// The orchestrator's view file.
pub struct ViewStore {
    db: Database,
    path: PathBuf,
}

impl ViewStore {
    /// Opens the file, creating it and its tables if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let db = Database::create(&path).map_err(|e| crate::Error::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let applied = meta.get(APPLIED_SEQ)?.map_or(0, |v| v.value());
            let schema = meta.get(SCHEMA)?.map_or(1, |v| v.value());
            if applied > 0 && schema != VIEWS_SCHEMA {
                tracing::warn!(
                    path = %path.display(),
                    schema,
                    "the views were written in an earlier shape; rebuilding them from the event stream"
                );
                for table in Table::ALL {
                    txn.delete_table(definition(table))?;
                }
                meta.remove(APPLIED_SEQ)?;
            }
            meta.insert(SCHEMA, VIEWS_SCHEMA)?;
            for table in Table::ALL {
                txn.open_table(definition(table))?;
            }
        }
        txn.commit()?;
        Ok(Self { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last event sequence whose effects the views contain.
    pub fn applied_seq(&self) -> Result<Seq> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(Seq(meta.get(APPLIED_SEQ)?.map_or(0, |v| v.value())))
    }

    /// Applies `batch` in one transaction together with the new checkpoint. Messages at or
    /// below the checkpoint are skipped, so a batch overlapping what was applied before a
    /// crash is harmless. Returns what each message did.
    pub fn apply_batch(&self, batch: &[Incoming]) -> Result<Vec<(Seq, Applied)>> {
        self.write(batch, batch.len())
    }

    /// Like [`ViewStore::apply_batch`], but applies only the first `crash_after` messages
    /// and then drops the transaction without committing, as a crash mid-batch would.
    #[doc(hidden)]
    pub fn apply_batch_and_crash(&self, batch: &[Incoming], crash_after: usize) -> Result<()> {
        self.write(batch, crash_after).map(drop)
    }

    fn write(&self, batch: &[Incoming], apply_count: usize) -> Result<Vec<(Seq, Applied)>> {
        let txn = self.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut meta = txn.open_table(META)?;
            let applied = Seq(meta.get(APPLIED_SEQ)?.map_or(0, |v| v.value()));
            let mut tables = RedbTables {
                tables: Table::ALL
                    .iter()
                    .map(|t| txn.open_table(definition(*t)))
                    .collect::<Result<_, _>>()?,
            };
            let mut last = applied;
            for incoming in batch.iter().take(apply_count) {
                if incoming.seq <= last {
                    continue;
                }
                let outcome = projection::apply(
                    &mut tables,
                    incoming.seq,
                    &incoming.subject,
                    &incoming.message,
                )?;
                outcomes.push((incoming.seq, outcome));
                last = incoming.seq;
            }
            if apply_count < batch.len() {
                // Simulated crash: the transaction is dropped, never committed.
                return Ok(outcomes);
            }
            if last > applied {
                meta.insert(APPLIED_SEQ, last.0)?;
            }
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// A consistent snapshot for queries.
    pub fn read(&self) -> Result<ViewReader> {
        Ok(ViewReader {
            txn: self.db.begin_read()?,
        })
    }
}

/// Filters for [`ViewReader::executions`]; all given filters must match.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    pub job: Option<JobId>,
    pub node: Option<NodeId>,
    pub state: Option<ExecutionState>,
}

/// The fewest characters of an id that are looked up as a prefix of one. Shorter keys are
/// only ever ids or names: a two-letter typo must not pick the one job that happens to exist.
pub const MIN_ID_PREFIX: usize = 4;

/// How many of the ids an ambiguous prefix matches are named back to the asker.
const AMBIGUOUS_SHOWN: usize = 3;

/// What a key (an id, a name, or a unique prefix of an id) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// The key is a prefix of several ids: the first few of them, and how many match in all.
    Ambiguous {
        first: Vec<String>,
        matches: usize,
    },
}

/// A node with the number of its non-terminal executions and what they ask of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeSummary {
    #[serde(flatten)]
    pub node: NodeView,
    pub executions: u32,
    #[serde(default)]
    pub allocated: Resources,
}

/// Read-only queries over one snapshot of the views.
pub struct ViewReader {
    txn: ReadTransaction,
}

impl ViewReader {
    fn all<V: serde::de::DeserializeOwned>(&self, table: Table) -> Result<Vec<V>> {
        let t = self.txn.open_table(definition(table))?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }

    fn one<V: serde::de::DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<V>> {
        let t = self.txn.open_table(definition(table))?;
        match t.get(key)? {
            Some(v) => decode(table, key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Execution ids under one owner in an index table, in id (creation) order.
    fn indexed(&self, table: Table, owner: &str) -> Result<Vec<String>> {
        let t = self.txn.open_table(definition(table))?;
        let start = format!("{owner}/");
        // '0' is the character after '/': the range covers exactly the `owner/` prefix.
        let end = format!("{owner}0");
        let mut out = Vec::new();
        for entry in t.range(start.as_str()..end.as_str())? {
            let (k, _) = entry?;
            out.push(k.value()[start.len()..].to_owned());
        }
        Ok(out)
    }

    pub fn applied_seq(&self) -> Result<Seq> {
        let meta = self.txn.open_table(META)?;
        Ok(Seq(meta.get(APPLIED_SEQ)?.map_or(0, |v| v.value())))
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Result<Vec<NodeSummary>> {
        let load = self.txn.open_table(definition(Table::NodeLoad))?;
        let allocation = self.txn.open_table(definition(Table::NodeAllocated))?;
        self.all::<NodeView>(Table::Nodes)?
            .into_iter()
            .map(|node| {
                let id = node.id.as_str();
                let executions = match load.get(id)? {
                    Some(v) => decode(Table::NodeLoad, id, v.value())?,
                    None => 0,
                };
                let allocated = match allocation.get(id)? {
                    Some(v) => decode(Table::NodeAllocated, id, v.value())?,
                    None => Resources::default(),
                };
                Ok(NodeSummary {
                    node,
                    executions,
                    allocated,
                })
            })
            .collect()
    }

    /// Every job at its current version, by id (creation order).
    pub fn jobs(&self) -> Result<Vec<JobView>> {
        self.all(Table::Jobs)
    }

    /// A job by id, or else by name.
    pub fn job(&self, id_or_name: &str) -> Result<Option<JobView>> {
        if let Ok(id) = id_or_name.parse::<JobId>()
            && let Some(job) = self.one(Table::Jobs, &id.to_string())?
        {
            return Ok(Some(job));
        }
        match self.one::<JobId>(Table::JobNames, id_or_name)? {
            Some(id) => self.one(Table::Jobs, &id.to_string()),
            None => Ok(None),
        }
    }

    pub fn execution(&self, id: &str) -> Result<Option<ExecutionView>> {
        self.one(Table::Executions, id)
    }

    /// A job by id, by name, or by a unique prefix of its id (the way people type the short
    /// ids tables show). Exact matches win, so a name that looks like a prefix still works.
    pub fn find_job(&self, key: &str) -> Result<Lookup<JobView>> {
        if let Some(job) = self.job(key)? {
            return Ok(Lookup::Found(job));
        }
        self.by_prefix(Table::Jobs, key)
    }

    /// An execution by id or by a unique prefix of its id.
    pub fn find_execution(&self, key: &str) -> Result<Lookup<ExecutionView>> {
        if let Some(execution) = self.execution(key)? {
            return Ok(Lookup::Found(execution));
        }
        self.by_prefix(Table::Executions, key)
    }

    /// The one row of `table` whose key starts with `prefix`. Ids are ULIDs, written in
    /// upper case and read in any case.
    fn by_prefix<V: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Lookup<V>> {
        if prefix.len() < MIN_ID_PREFIX || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(Lookup::Missing);
        }
        let prefix = prefix.to_ascii_uppercase();
        let t = self.txn.open_table(definition(table))?;
        let mut first = Vec::new();
        let mut matches = 0;
        let mut found = None;
        for entry in t.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            matches += 1;
            if first.len() < AMBIGUOUS_SHOWN {
                first.push(k.value().to_owned());
            }
            if matches == 1 {
                found = Some(decode(table, k.value(), v.value())?);
            }
        }
        Ok(match (matches, found) {
            (1, Some(row)) => Lookup::Found(row),
            (0, _) | (_, None) => Lookup::Missing,
            _ => Lookup::Ambiguous { first, matches },
        })
    }

    /// Executions matching `filter`, in id (creation) order.
    pub fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionView>> {
        let candidates: Vec<ExecutionView> = match (&filter.job, &filter.node) {
            (Some(job), _) => self.by_index(Table::ExecutionsByJob, &job.to_string())?,
            (None, Some(node)) => self.by_index(Table::ExecutionsByNode, node.as_str())?,
            (None, None) => self.all(Table::Executions)?,
        };
        Ok(candidates
            .into_iter()
            .filter(|e| filter.node.as_ref().is_none_or(|n| &e.node_id == n))
            .filter(|e| filter.state.is_none_or(|s| e.state == s))
            .collect())
    }

    fn by_index(&self, table: Table, owner: &str) -> Result<Vec<ExecutionView>> {
        let mut out = Vec::new();
        for id in self.indexed(table, owner)? {
            if let Some(view) = self.one(Table::Executions, &id)? {
                out.push(view);
            }
        }
        Ok(out)
    }

    pub fn command_outcome(&self, id: CommandId) -> Result<Option<CommandOutcome>> {
        self.one(Table::CommandOutcomes, &id.to_string())
    }

    pub fn rejected_inputs(&self) -> Result<Vec<RejectedInput>> {
        self.all(Table::RejectedInputs)
    }

    pub fn undecodable(&self) -> Result<Vec<Undecodable>> {
        self.all(Table::Undecodable)
    }

    /// One digest per view table, in [`Table::ALL`] order.
    pub fn digests(&self) -> Result<Vec<TableDigest>> {
        Table::ALL
            .into_iter()
            .map(|table| {
                let t = self.txn.open_table(definition(table))?;
                let mut hasher = TableHasher::default();
                for entry in t.iter()? {
                    let (k, v) = entry?;
                    hasher.row(k.value(), v.value());
                }
                Ok(hasher.finish(table.name()))
            })
            .collect()
    }

    /// Up to `limit` rows of `table` with keys after `after` (from the first when `None`),
    /// in key order, each with the hash of its value.
    pub fn row_hashes(
        &self,
        table: Table,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowHash>> {
        let t = self.txn.open_table(definition(table))?;
        let rows = match after {
            Some(after) => {
                t.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?
            }
            None => t.iter()?,
        };
        let mut out = Vec::new();
        for entry in rows.take(limit) {
            let (k, v) = entry?;
            out.push(row_hash(k.value(), v.value()));
        }
        Ok(out)
    }

    /// One row of `table` as stored, decoded for display where it decodes.
    pub fn row(&self, table: Table, key: &str) -> Result<Option<RowValue>> {
        let t = self.txn.open_table(definition(table))?;
        Ok(t.get(key)?.map(|v| RowValue::of(v.value())))
    }

    /// Every table's raw contents, for comparison with a fold and for digests.
    pub fn dump(&self) -> Result<MemTables> {
        let mut mem = MemTables::default();
        for table in Table::ALL {
            let t = self.txn.open_table(definition(table))?;
            for entry in t.iter()? {
                let (k, v) = entry?;
                mem.put(table, k.value(), v.value())?;
            }
        }
        Ok(mem)
    }
}
