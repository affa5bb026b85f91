//! `cairn audit`: what the log says happened. `history` lists every command, event, edge
//! report and queued assignment that concerns one job, execution or node, in the order the
//! server stored them across streams, each with its causing command; `export` writes every
//! message of every stream as JSON lines; `verify` (in `verify.rs`) proves the live views
//! equal a replay.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;

use anyhow::{Context, Result, bail};
use async_nats::Subject;
use cairn_shared::report::{ExecutionHealth, ExecutionUpdate, NodeHello};
use cairn_shared::{
    Assignment, Command, CommandId, Event, ExecutionId, JobId, NodeId, Report, Seq, Timestamp,
};
use cairn_streams::{Reader, StreamKind, subjects};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::Global;
use crate::events::parse_since;
use crate::output::{self, Tabular};
use crate::records::{self, Body, Record};
use crate::replay;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Every command, event, edge report and queued assignment that concerns a job,
    /// execution or node, in log order, with the command that caused each.
    #[command(
        after_help = "Examples:\n  cairn audit history execution 01JD3…\n  cairn audit history job heartbeat\n  cairn audit history node dev-edge-1 -o json"
    )]
    History {
        /// What ID names.
        kind: Entity,
        /// The job's id or name, the execution's id, or the node's id.
        id: String,
    },
    /// Replay the whole log into a fresh file and compare it, table by table, with the live
    /// orchestrator's views at the same sequence. Prints `match`, or the first differing
    /// record and exits 1.
    #[command(after_help = "Examples:\n  cairn audit verify\n  cairn audit verify -o json")]
    Verify,
    /// Every message of every cairn stream as JSON lines, decoded, with stream and sequence:
    /// for external tools and archives (export before trimming a stream).
    #[command(
        after_help = "Examples:\n  cairn audit export > cairn-archive.jsonl\n  cairn audit export --stream events --from-seq 1000 --to-seq 2000\n  cairn audit export --since 2026-11-23T00:00:00Z --until 2026-11-24T00:00:00Z"
    )]
    Export(ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Entity {
    Job,
    Execution,
    Node,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Start at this sequence (of each stream exported). Refused if a stream no longer
    /// holds it.
    #[arg(long)]
    from_seq: Option<u64>,
    /// End at this sequence (inclusive).
    #[arg(long)]
    to_seq: Option<u64>,
    /// Only messages stored at or after this time: RFC 3339 or a duration ago (10m).
    #[arg(long)]
    since: Option<String>,
    /// Only messages stored at or before this time: RFC 3339 or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// Only this stream (repeatable); every stream when absent.
    #[arg(long = "stream", value_enum)]
    streams: Vec<StreamName>,
}

/// A stream as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamName {
    Commands,
    Events,
    Reports,
    Assignments,
    Logs,
}

impl StreamName {
    /// The streams it names: assignments are one stream per shard.
    fn kinds(self) -> Vec<StreamKind> {
        match self {
            StreamName::Commands => vec![StreamKind::Commands],
            StreamName::Events => vec![StreamKind::Events],
            StreamName::Reports => vec![StreamKind::Reports],
            StreamName::Assignments => StreamKind::assignments().collect(),
            StreamName::Logs => vec![StreamKind::Logs],
        }
    }
}

pub async fn run(global: &Global, command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::History { kind, id } => history(global, kind, &id).await,
        AuditCommand::Verify => crate::verify::run(global).await,
        AuditCommand::Export(args) => export(global, args).await,
    }
}

async fn export(global: &Global, args: ExportArgs) -> Result<()> {
    let reader = replay::reader(global).await?;
    let now = Timestamp::now();
    let since = args.since.map(|t| parse_since(&t, now)).transpose()?;
    let until = args.until.map(|t| parse_since(&t, now)).transpose()?;
    let kinds: Vec<StreamKind> = if args.streams.is_empty() {
        StreamKind::all().collect()
    } else {
        args.streams.iter().flat_map(|s| s.kinds()).collect()
    };
    // Ranges are fixed first, so the export is of the log as it stood when it began.
    let mut ranges = Vec::new();
    let mut missing = Vec::new();
    for kind in kinds {
        if !records::exists(&reader, kind).await? {
            missing.push(kind.name());
            continue;
        }
        let bounds = reader.bounds(kind).await?;
        let mut from = match args.from_seq {
            Some(seq) => Seq(seq),
            None => {
                if bounds.first > Seq(1) && bounds.last >= bounds.first {
                    eprintln!(
                        "note: {} starts at sequence {}: earlier messages were trimmed",
                        kind.name(),
                        bounds.first
                    );
                }
                bounds.first
            }
        };
        if let Some(since) = since {
            let before = reader
                .last_at(kind, Timestamp(since.0.saturating_sub(1)))
                .await?;
            from = from.max(before.next());
        }
        let mut to = args.to_seq.map_or(bounds.last, |s| Seq(s).min(bounds.last));
        if let Some(until) = until {
            to = to.min(reader.last_at(kind, until).await?);
        }
        ranges.push((kind, from, to));
    }
    if !missing.is_empty() {
        eprintln!(
            "note: skipped streams that do not exist: {}",
            missing.join(", ")
        );
    }
    let total = ranges
        .iter()
        .map(|(_, from, to)| (to.0 + 1).saturating_sub(from.0))
        .sum();
    let bar = replay::progress(total, "exporting messages");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = async {
        for (kind, from, to) in ranges {
            records::read_range(&reader, kind, from, to, |record| {
                serde_json::to_writer(&mut out, &record.export())?;
                out.write_all(b"\n")?;
                bar.inc(1);
                Ok(())
            })
            .await
            .with_context(|| format!("exporting {}", kind.name()))?;
        }
        out.flush().context("writing to stdout")
    }
    .await;
    bar.finish_and_clear();
    match written {
        // The reader stopped reading (`| head`): nothing is wrong.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || c.downcast_ref::<serde_json::Error>()
                        .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// One line of an entity's history.
#[derive(Serialize)]
struct HistoryRow {
    stream: &'static str,
    seq: Seq,
    time: String,
    #[serde(rename = "type")]
    type_name: Option<&'static str>,
    id: Option<String>,
    cause: Option<CommandId>,
    summary: String,
}

impl Tabular for HistoryRow {
    /// An audit shows whole ids, with or without `--wide`: they are what one looks up next.
    fn table(rows: &[Self], _wide: bool) -> String {
        output::table(
            &["time", "stream", "seq", "type", "cause", "summary"],
            rows.iter()
                .map(|r| r.cells().into_iter().map(Into::into).collect())
                .collect(),
        )
    }
}

impl HistoryRow {
    fn cells(&self) -> Vec<String> {
        vec![
            self.time.clone(),
            self.stream.to_owned(),
            self.seq.to_string(),
            self.type_name.unwrap_or("-").to_owned(),
            self.cause.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            self.summary.clone(),
        ]
    }
}

async fn history(global: &Global, entity: Entity, id: &str) -> Result<()> {
    let reader = replay::reader(global).await?;
    replay::events_bounds(&reader).await?;
    let named = Concern::named(entity, id)?;
    let log = read_concerning(&reader, entity, &named).await?;
    let concern = named.found_in(&log.records);
    let rows: Vec<HistoryRow> = log
        .records
        .iter()
        .filter(|r| concern.includes(r))
        .map(|r| HistoryRow {
            stream: r.stream.name(),
            seq: r.seq,
            time: r.stored_at().to_string(),
            type_name: r.type_name(),
            id: id_of(r),
            cause: r.cause(),
            summary: summary(r),
        })
        .collect();
    if rows.is_empty() {
        bail!(
            "nothing in the log concerns {} {id:?}",
            format!("{entity:?}").to_lowercase()
        );
    }
    output::print_list(global.output, &rows, true)
}

/// Every message that may concern the entity `named` names, read by subject rather than
/// stream by stream, in the order the server stored them: a superset of its history, which
/// [`Concern::includes`] then narrows as it would a read of every stream (of every message
/// stored where cairn's publishers put it; ARCHITECTURE.md, "replay and audit", says what
/// else a whole read would show).
///
/// - Commands are filed by type (`cairn.cmd.<Type>`), not by job, and their outcomes by
///   command: both are read whole. They are one message per user action each, the
///   smallest share of the log.
/// - Events: a job's own (all jobs' are read, since a job named by name is found only by its
///   deploys, and they are few: deploys and state changes), then its executions'
///   (`cairn.evt.exec.<job>.*.*`); an execution's own; a node's own and its executions'.
///   Execution events of logs written before their subjects named job and node are all
///   read and narrowed here (`cairn.evt.exec.<execution>`: nothing on a newer log).
/// - Reports and assignments are filed by node: those of the nodes the entity's executions
///   were placed on (for a node, its own), each assignment from its node's shard.
async fn read_concerning(reader: &Reader, entity: Entity, named: &Concern) -> Result<Log> {
    let mut log = Log::default();
    log.read(
        reader,
        StreamKind::Commands,
        vec![subjects::COMMANDS.into()],
    )
    .await?;
    let mut events: Vec<Subject> = vec![
        subjects::COMMAND_OUTCOMES.into(),
        subjects::LEGACY_EXECUTION_EVENTS.into(),
    ];
    match entity {
        Entity::Job => events.push(subjects::JOB_EVENTS.into()),
        Entity::Execution => events.extend(
            named
                .executions
                .iter()
                .map(|e| subjects::execution_events(*e)),
        ),
        Entity::Node => {
            for node in &named.nodes {
                events.push(subjects::node_events(node));
                events.push(subjects::node_executions(node));
            }
        }
    }
    log.read(reader, StreamKind::Events, events).await?;
    if entity == Entity::Job {
        let jobs = named.found_in(&log.records).jobs;
        log.read(
            reader,
            StreamKind::Events,
            jobs.into_iter().map(subjects::job_executions).collect(),
        )
        .await?;
    }
    let found = named.found_in(&log.records);
    let mut nodes: BTreeSet<NodeId> = found.nodes.iter().cloned().collect();
    for record in &log.records {
        if let Body::Event(e) = &record.body {
            let touches = e.body.touches();
            if touches
                .execution
                .is_some_and(|x| found.executions.contains(&x))
            {
                nodes.extend(touches.node.cloned());
            }
        }
    }
    let reports = nodes.iter().map(subjects::report).collect();
    log.read(reader, StreamKind::Reports, reports).await?;
    let mut shards: BTreeMap<subjects::Shard, Vec<Subject>> = BTreeMap::new();
    for node in &nodes {
        shards
            .entry(subjects::Shard::of(node))
            .or_default()
            .push(subjects::assignments(node));
    }
    for (shard, work) in shards {
        log.read(reader, StreamKind::Assignments(shard), work)
            .await?;
    }
    Ok(log)
}

/// Messages of several streams, in the order the server stored them.
#[derive(Default)]
struct Log {
    records: Vec<Record>,
}

impl Log {
    /// Adds the messages `kind` holds on `subjects`.
    async fn read(
        &mut self,
        reader: &Reader,
        kind: StreamKind,
        subjects: Vec<Subject>,
    ) -> Result<()> {
        self.records
            .extend(records::read_held(reader, kind, &subjects).await?);
        // One server stamps every stream, so its clock orders them; a command is stored
        // before the events it causes and a report before the events that follow from it.
        self.records
            .sort_by_key(|r| (r.stored_at_ns, r.stream.name(), r.seq));
        Ok(())
    }
}

/// The jobs, executions, nodes and commands an entity's history covers.
#[derive(Clone, Default)]
struct Concern {
    jobs: HashSet<JobId>,
    names: HashSet<String>,
    executions: HashSet<ExecutionId>,
    nodes: HashSet<NodeId>,
    commands: HashSet<CommandId>,
    /// The id as typed, matched against subject tokens of undecodable messages.
    token: String,
}

impl Concern {
    /// What the id as typed names, before anything is read.
    fn named(entity: Entity, id: &str) -> Result<Self> {
        let mut c = Concern {
            token: id.to_owned(),
            ..Default::default()
        };
        match entity {
            Entity::Job => {
                c.names.insert(id.to_owned());
                if let Ok(job) = id.parse() {
                    c.jobs.insert(job);
                }
            }
            Entity::Execution => {
                c.executions.insert(
                    id.parse()
                        .with_context(|| format!("invalid execution id {id:?}"))?,
                );
            }
            Entity::Node => {
                c.nodes.insert(NodeId::new(id).context("invalid node id")?);
            }
        }
        Ok(c)
    }

    /// Everything the log in stream order says the named entity covers.
    fn found_in(&self, log: &[Record]) -> Self {
        let mut c = self.clone();
        let events = || {
            log.iter().filter_map(|r| match &r.body {
                Body::Event(e) => Some(e),
                _ => None,
            })
        };
        // A job's versions and executions, then the commands behind everything found.
        for e in events() {
            match &e.body {
                Event::JobDeployed(d)
                    if c.jobs.contains(&d.job) || c.names.contains(&d.spec.name) =>
                {
                    c.jobs.insert(d.job);
                    c.names.insert(d.spec.name.clone());
                }
                Event::ExecutionAssigned(a) if c.jobs.contains(&a.job) => {
                    c.executions.insert(a.execution);
                }
                _ => {}
            }
        }
        let caused: Vec<CommandId> = events()
            .filter(|e| c.event(&e.body))
            .filter_map(|e| e.causation)
            .collect();
        c.commands.extend(caused);
        for r in log {
            if let Body::Command(command) = &r.body
                && c.command(&command.body)
            {
                c.commands.insert(command.id);
            }
        }
        c
    }

    fn includes(&self, record: &Record) -> bool {
        match &record.body {
            Body::Command(e) => self.commands.contains(&e.id),
            Body::Event(e) => self.event(&e.body),
            Body::Report(e) => match &e.body {
                Report::NodeHello(NodeHello { node, .. }) => self.nodes.contains(node),
                Report::ExecutionUpdate(ExecutionUpdate {
                    node, execution, ..
                })
                | Report::ExecutionHealth(ExecutionHealth {
                    node, execution, ..
                }) => self.executions.contains(execution) || self.nodes.contains(node),
            },
            Body::Assignment(e) => {
                self.executions.contains(&e.body.execution())
                    || subjects::node_of_assignment(&record.subject)
                        .is_some_and(|n| self.nodes.contains(&n))
            }
            Body::Log(_) => false,
            Body::Undecodable(_) => record.subject.split('.').any(|t| t == self.token),
        }
    }

    fn event(&self, event: &Event) -> bool {
        let touches = event.touches();
        touches.node.is_some_and(|n| self.nodes.contains(n))
            || touches.job.is_some_and(|j| self.jobs.contains(&j))
            || touches
                .execution
                .is_some_and(|e| self.executions.contains(&e))
            || touches.command.is_some_and(|c| self.commands.contains(&c))
    }

    /// Whether a command names this job (by name or id) or this node.
    fn command(&self, command: &Command) -> bool {
        let names_job = command.job().is_some_and(|job| {
            self.names.contains(job) || self.jobs.iter().any(|j| j.to_string() == job)
        });
        names_job || command.node().is_some_and(|n| self.nodes.contains(n))
    }
}

fn id_of(record: &Record) -> Option<String> {
    match &record.body {
        Body::Command(e) => Some(e.id.to_string()),
        Body::Event(e) => Some(e.id.to_string()),
        Body::Report(e) => Some(e.id.to_string()),
        Body::Assignment(e) => Some(e.id.to_string()),
        Body::Log(_) | Body::Undecodable(_) => None,
    }
}

/// One line saying what a message says.
fn summary(record: &Record) -> String {
    match &record.body {
        Body::Command(e) => format!("command {}: {}", e.id, e.body.summary()),
        Body::Event(e) => e.body.summary(),
        Body::Report(e) => e.body.summary(),
        Body::Assignment(e) => match &e.body {
            Assignment::RunExecution(_) => format!(
                "queued for {}: {}",
                subjects::node_of_assignment(&record.subject)
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                e.body.summary()
            ),
            Assignment::StopExecution(_) => format!("queued: {}", e.body.summary()),
        },
        Body::Log(_) => "log output".to_owned(),
        Body::Undecodable(reason) => format!("undecodable on {}: {reason}", record.subject),
    }
}
