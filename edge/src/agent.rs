//! The edge agent's process: recovery at start, the hello, the long-lived pull on the
//! node's own consumer, and the handling of each assignment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use cairn_shared::assignment::{RunExecution, StopExecution};
use cairn_shared::codec::Envelope;
use cairn_shared::resources::{Bytes, Millicores};
use cairn_shared::spec::Labels;
use cairn_shared::{
    Assignment, ExecutionId, ExecutionState, NodeId, Resources, RunningAttempt, Timestamp,
};
use cairn_streams::{Binding, Intake, Publisher, Pulled, StreamKind, subjects};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::exec::{self, Attempt, StopCause};
use crate::heartbeat::Beater;
use crate::metrics::TaskMetrics;
use crate::outbox::{self, Flusher};
use crate::store::{AttemptKey, Change, ExecutionRecord, Inserted, Store};

/// How an edge is set up. Build it with [`EdgeConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// The node's id. Persisted in `data_dir` at first start; a later start with another id
    /// on the same directory is refused.
    pub node_id: NodeId,
    /// Holds the edge's redb file (identity, accepted assignments, outbox).
    pub data_dir: PathBuf,
    pub labels: Labels,
    /// The most executions at once, if set: declared in the hello, and the orchestrator
    /// never assigns more.
    pub capacity: Option<u32>,
    /// What to declare instead of what the host has, resource by resource (`--cpu`,
    /// `--memory`, `--disk`); the others are read from the host at start.
    pub cpu: Option<Millicores>,
    pub memory: Option<Bytes>,
    pub disk: Option<Bytes>,
    pub heartbeat_interval: Duration,
    /// Where the secrets tasks name are, one file per secret (`--secrets-dir`).
    pub secrets_dir: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when a task is stopped, times out, or the edge shuts down.
    pub stop_grace: Duration,
    /// How long a graceful shutdown keeps trying to empty the outbox before leaving the
    /// rest for the next start.
    pub shutdown_flush_timeout: Duration,
    /// Outbox publishes with acks in flight at once.
    pub publish_window: usize,
}

impl EdgeConfig {
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

    /// Defaults: no labels, no cap, the host's resources, heartbeats every 5 s, 10 s stop
    /// grace, 5 s to flush at shutdown, 64 publishes in flight.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            labels: Labels::new(),
            capacity: None,
            cpu: None,
            memory: None,
            disk: None,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            secrets_dir: None,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            shutdown_flush_timeout: Duration::from_secs(5),
            publish_window: 64,
        }
    }

    /// What the node offers: the host's resources, each replaced by the one configured.
    pub fn resources(&self) -> Resources {
        let host = crate::host::resources(&self.data_dir);
        Resources {
            cpu: self.cpu.unwrap_or(host.cpu),
            memory: self.memory.unwrap_or(host.memory),
            disk: self.disk.unwrap_or(host.disk),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.capacity == Some(0) {
            return Err(Error::Config("capacity must be at least 1".into()));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(Error::Config(
                "heartbeat interval must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}

/// Counters shared by the agent, its heartbeat and its handle.
#[derive(Debug, Default)]
pub struct Stats {
    /// The attempts with a task of their own, as of the agent's last start or end of one.
    running: std::sync::Mutex<Vec<RunningAttempt>>,
    bound: AtomicBool,
    received: AtomicU64,
    rejected: AtomicU64,
    /// Task starts, failures and start times, for `--metrics`.
    tasks: TaskMetrics,
}

impl Stats {
    pub fn running(&self) -> u32 {
        u32::try_from(self.attempts().len()).unwrap_or(u32::MAX)
    }

    /// Whether the pull on the node's consumer is bound now.
    pub fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// The attempts running now, for the heartbeat.
    pub fn running_attempts(&self) -> Vec<RunningAttempt> {
        self.attempts().clone()
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, Vec<RunningAttempt>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_running<'a>(&self, keys: impl Iterator<Item = &'a AttemptKey>) {
        let attempts = keys
            .map(|k| RunningAttempt {
                execution: k.execution,
                attempt: k.attempt,
            })
            .collect();
        *self.attempts() = attempts;
    }
}

/// An edge agent, opened on its data directory and ready to run.
pub struct Edge {
    config: EdgeConfig,
    store: Store,
    stats: Arc<Stats>,
}

/// A cheap-clone view of a running edge, for callers and tests.
#[derive(Clone)]
pub struct EdgeHandle {
    node: NodeId,
    store: Store,
    stats: Arc<Stats>,
}

impl EdgeHandle {
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Attempts whose process is running (or about to start) now.
    pub fn running(&self) -> u32 {
        self.stats.running()
    }

    /// Reports and log chunks recorded but not yet acknowledged by JetStream.
    pub fn outbox_len(&self) -> u64 {
        self.store.outbox_len()
    }

    /// How long the oldest entry still in the outbox has waited; none while it is empty.
    pub fn outbox_oldest_age(&self) -> Option<Duration> {
        self.store.outbox_oldest_age()
    }

    /// The counters its attempts update (shared: reading them reads the live ones).
    pub fn task_metrics(&self) -> TaskMetrics {
        self.stats.tasks.clone()
    }

    /// Whether the edge holds its pull on its consumer right now.
    pub fn is_bound(&self) -> bool {
        self.stats.bound.load(Ordering::Relaxed)
    }

    /// Assignment messages received since start (including redeliveries and garbage).
    pub fn received(&self) -> u64 {
        self.stats.received.load(Ordering::Relaxed)
    }

    /// Assignment messages terminated as undecodable since start.
    pub fn rejected_count(&self) -> u64 {
        self.stats.rejected.load(Ordering::Relaxed)
    }

    /// Every assignment message ever terminated: (assignment stream sequence, reason).
    pub async fn rejected(&self) -> Result<Vec<(u64, String)>> {
        Ok(self
            .store
            .rejected()
            .await?
            .into_iter()
            .map(|(seq, r)| (seq, r.reason))
            .collect())
    }

    /// The recorded state of one attempt, if this edge was ever given it.
    pub async fn state(
        &self,
        execution: ExecutionId,
        attempt: u32,
    ) -> Result<Option<ExecutionState>> {
        let record = self.store.get(AttemptKey { execution, attempt }).await?;
        Ok(record.map(|r| r.state))
    }
}

/// Pull batch: enough to keep a node busy, few enough that none waits near its ack wait.
const PULL_BATCH: usize = 256;
/// The most arrived messages handled as one batch (one transaction, acks in parallel).
const MAX_BATCH: usize = 256;
/// Batches being recorded at once; beyond this the pull waits for the store.
const MAX_RECORDING: usize = 4;

impl Edge {
    /// Opens the data directory: creates it on first start, refuses one that belongs to
    /// another node.
    pub async fn open(config: EdgeConfig) -> Result<Self> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let node = config.node_id.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir, &node))
            .await
            .map_err(|e| Error::Store(format!("opening the store: {e}")))??;
        Ok(Self {
            config,
            store,
            stats: Arc::default(),
        })
    }

    pub fn handle(&self) -> EdgeHandle {
        EdgeHandle {
            node: self.config.node_id.clone(),
            store: self.store.clone(),
            stats: Arc::clone(&self.stats),
        }
    }

    /// Runs the edge until `shutdown`: reports what a previous crash left unfinished,
    /// says hello, pulls and runs its assignments, and sends every report through the
    /// outbox. At shutdown running tasks are ended (reported `failed`, "edge shut down")
    /// and the outbox is flushed for up to `shutdown_flush_timeout`.
    ///
    /// NATS being unreachable is not an error: the edge keeps recording and retries. Only
    /// local-store failures end it early.
    pub async fn run(self, client: async_nats::Client, shutdown: CancellationToken) -> Result<()> {
        let node = self.config.node_id.clone();
        let js = cairn_streams::jetstream(client.clone());
        let interrupted = self.interrupted().await?;
        self.store
            .append(vec![outbox::hello_entry(
                &node,
                self.config.labels.clone(),
                self.config.capacity,
                self.config.resources(),
            )?])
            .await?;

        let background_stop = CancellationToken::new();
        let mut background = JoinSet::new();
        let flusher = Flusher {
            store: self.store.clone(),
            client: client.clone(),
            publisher: Publisher::new(js.clone()),
            window: self.config.publish_window,
        };
        background.spawn(flusher.run(background_stop.clone()));
        let beater = Beater {
            client: client.clone(),
            node: node.clone(),
            capacity: self.config.capacity,
            interval: self.config.heartbeat_interval,
            stats: Arc::clone(&self.stats),
            store: self.store.clone(),
        };
        background.spawn(beater.run(background_stop.clone()));

        let mut agent = Agent {
            node,
            store: self.store.clone(),
            stats: Arc::clone(&self.stats),
            stop_grace: self.config.stop_grace,
            secrets_dir: self.config.secrets_dir.clone().map(Into::into),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            recording: FuturesOrdered::new(),
            interrupted,
        };
        let outcome = agent.consume(&js, &shutdown).await;
        let outcome = outcome.and(agent.settle().await);
        agent.stop_all().await;

        // Give the outbox a chance to empty; whatever remains is sent at the next start.
        let deadline = Instant::now() + self.config.shutdown_flush_timeout;
        while self.store.outbox_len() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        background_stop.cancel();
        while background.join_next().await.is_some() {}
        outcome
    }

    /// Attempts left accepted or running by a previous process (it crashed, or was killed
    /// before it could finish them). A process of theirs that is still alive is killed
    /// now: nothing supervises it any more. They are never rerun; how they ended is
    /// reported once the node's queue has been read (see [`Agent::report_interrupted`]).
    async fn interrupted(&self) -> Result<Vec<AttemptKey>> {
        let mut keys = Vec::new();
        for record in self.store.unfinished().await? {
            let key = record.key();
            if let Some(process) = record.process
                && exec::kill_orphan(process)
            {
                tracing::warn!(attempt = %key, pid = process.pid, "killed the processes of an attempt left over from before the restart");
            }
            keys.push(key);
        }
        Ok(keys)
    }
}

/// The consuming side of a running edge.
struct Agent {
    node: NodeId,
    store: Store,
    stats: Arc<Stats>,
    stop_grace: Duration,
    secrets_dir: Option<Arc<std::path::Path>>,
    /// Attempts with a task of their own, and how to stop each.
    running: HashMap<AttemptKey, watch::Sender<Option<StopCause>>>,
    tasks: JoinSet<AttemptKey>,
    /// Batches of runs being recorded and acked, oldest first. The pull goes on meanwhile,
    /// so a backlog's next batch arrives while the store commits the last one; runs start
    /// in arrival order as their batches complete.
    recording: FuturesOrdered<BoxFuture<'static, Recorded>>,
    /// Attempts a previous process left unfinished, not reported yet.
    interrupted: Vec<AttemptKey>,
}

/// A batch of runs, recorded and acked: the new ones to start, and a store failure that
/// makes going on pointless.
struct Recorded {
    start: Vec<(AttemptKey, RunExecution)>,
    fatal: Option<Error>,
}

impl Agent {
    /// Binds to the node's consumer and handles its messages until `shutdown`; the intake
    /// binds again whenever the pull breaks.
    async fn consume(
        &mut self,
        js: &jetstream::Context,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        // Never creates the consumer: an edge may only pull from the one the orchestrator
        // made for it when it handled the node's hello.
        let mut intake = Intake::new(
            js.clone(),
            StreamKind::assignments_of(&self.node),
            subjects::node_consumer(&self.node),
            Binding::Existing,
            PULL_BATCH,
        );
        let started = Instant::now();
        let mut binds = 0u64;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                Some(recorded) = self.recording.next(), if !self.recording.is_empty() => self.recorded(recorded)?,
                pulled = intake.next(), if self.recording.len() < MAX_RECORDING => match pulled {
                    Pulled::Message(message) => {
                        // Take whatever else has already arrived, so a backlog is recorded
                        // in a few transactions rather than one per message.
                        let mut batch = vec![message];
                        while batch.len() < MAX_BATCH {
                            match intake.ready() {
                                Some(message) => batch.push(message),
                                None => break,
                            }
                        }
                        self.on_batch(batch).await?;
                    }
                    Pulled::Bound { pending } => {
                        self.stats.bound.store(true, Ordering::Relaxed);
                        binds += 1;
                        if binds == 1 {
                            tracing::info!(node = %self.node, after = ?started.elapsed(), "bound to the node's consumer");
                        } else {
                            tracing::info!(node = %self.node, "bound to the node's consumer again");
                        }
                        if pending == 0 {
                            self.report_interrupted().await?;
                        }
                    }
                    Pulled::Unbound { reason, lost } => {
                        self.stats.bound.store(false, Ordering::Relaxed);
                        if lost {
                            tracing::warn!(%reason, "lost the pull on the node's consumer; binding again");
                        } else {
                            tracing::debug!(%reason, "cannot bind to the node's consumer yet");
                        }
                    }
                },
            }
        }
    }

    fn finished(&mut self, done: std::result::Result<AttemptKey, tokio::task::JoinError>) {
        match done {
            Ok(key) => {
                self.running.remove(&key);
            }
            Err(e) => {
                // A panicked attempt task: its key is lost with it. Drop every sender whose
                // task is gone; the attempt stays non-terminal and is reported at restart.
                tracing::error!(error = %e, "an attempt's task failed");
                self.running.retain(|_, tx| tx.receiver_count() > 0);
            }
        }
        self.stats.set_running(self.running.keys());
    }

    /// Handles messages in arrival order. Consecutive runs are recorded together (one
    /// transaction) and then acked together; anything else is handled on its own, in its
    /// place, so a stop never overtakes the run it stops.
    async fn on_batch(&mut self, batch: Vec<jetstream::Message>) -> Result<()> {
        let caught_up = batch
            .last()
            .and_then(|m| m.info().ok())
            .is_some_and(|info| info.pending == 0);
        self.on_messages(batch).await?;
        if caught_up && !self.interrupted.is_empty() {
            self.settle().await?;
            self.report_interrupted().await?;
        }
        Ok(())
    }

    /// Reports the attempts a previous process left unfinished, once the queue has been
    /// read up to date: a stop decided while the edge was down has then been taken, and
    /// the attempt it names ended `stopped`. Every other one is reported `failed` with
    /// reason "edge restarted", once (the record takes the terminal state with the report).
    async fn report_interrupted(&mut self) -> Result<()> {
        for key in std::mem::take(&mut self.interrupted) {
            let reason = "edge restarted".to_owned();
            if self
                .end_taskless(key, ExecutionState::Failed, reason)
                .await?
            {
                tracing::warn!(attempt = %key, "attempt interrupted by a restart reported failed");
            }
        }
        Ok(())
    }

    /// Ends an attempt that has no task: its log's end marker, its terminal report and
    /// its record, in one transaction. False if it had already ended.
    async fn end_taskless(
        &mut self,
        key: AttemptKey,
        state: ExecutionState,
        reason: String,
    ) -> Result<bool> {
        let entries = vec![
            outbox::end_of_log(&self.node, key, state),
            outbox::update_entry(&self.node, key, state, None, Some(reason.clone()))?,
        ];
        let change = Change {
            state,
            exit_code: None,
            reason: Some(reason),
            process: None,
        };
        self.store.transition(key, change, entries).await
    }

    async fn on_messages(&mut self, batch: Vec<jetstream::Message>) -> Result<()> {
        let mut runs: Vec<(jetstream::Message, u64, RunExecution)> = Vec::new();
        for message in batch {
            let seq = message.info().map_or(0, |i| i.stream_sequence);
            match Envelope::<Assignment>::decode(&message.payload) {
                Ok(Envelope {
                    body: Assignment::RunExecution(run),
                    ..
                }) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    runs.push((message, seq, run));
                }
                _ => {
                    self.record(std::mem::take(&mut runs))?;
                    // Whatever it is, it is handled after every run that came before it.
                    self.settle().await?;
                    self.on_message(message).await?;
                }
            }
        }
        self.record(runs)
    }

    /// Queues runs to be recorded in one group commit and acked; they start when that is
    /// done (see [`Agent::recorded`]).
    fn record(&mut self, runs: Vec<(jetstream::Message, u64, RunExecution)>) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let batch = record_runs(self.store.clone(), &self.node, runs)?;
        self.recording.push_back(batch.boxed());
        Ok(())
    }

    /// Starts the new runs of a recorded batch.
    fn recorded(&mut self, recorded: Recorded) -> Result<()> {
        // Started whatever the ack's fate: the record dedupes a redelivery, which would
        // otherwise find the attempt known and never start it.
        for (key, run) in recorded.start {
            self.start(key, run);
        }
        recorded.fatal.map_or(Ok(()), Err)
    }

    /// Waits until every queued batch is recorded, acked and started.
    async fn settle(&mut self) -> Result<()> {
        while let Some(recorded) = self.recording.next().await {
            self.recorded(recorded)?;
        }
        Ok(())
    }

    /// Handles one assignment message. `Err` only for local-store failures that make
    /// continuing pointless.
    async fn on_message(&mut self, message: jetstream::Message) -> Result<()> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let seq = message.info().map_or(0, |i| i.stream_sequence);
        match Envelope::<Assignment>::decode(&message.payload) {
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(seq, %reason, "terminating an undecodable assignment");
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.store.reject(seq, reason).await {
                    tracing::error!(seq, error = %e, "recording a rejected assignment failed");
                }
                // Redelivering the same bytes can never work.
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(seq, error = %e, "terminating the message failed; it will come back");
                }
                Ok(())
            }
            Ok(envelope) => match envelope.body {
                Assignment::RunExecution(run) => {
                    self.record(vec![(message, seq, run)])?;
                    self.settle().await
                }
                Assignment::StopExecution(stop) => self.on_stop(message, stop).await,
            },
        }
    }

    fn start(&mut self, key: AttemptKey, run: RunExecution) {
        let (tx, rx) = watch::channel(None);
        self.running.insert(key, tx);
        self.stats.set_running(self.running.keys());
        let attempt = Attempt {
            node: self.node.clone(),
            store: self.store.clone(),
            key,
            job_name: run.job_name,
            task: run.task,
            delay: run.delay.map_or(Duration::ZERO, |d| d.0),
            health: run.health,
            tasks: self.stats.tasks.clone(),
            stop_grace: self.stop_grace,
            secrets_dir: self.secrets_dir.clone(),
            stop: rx,
        };
        self.tasks.spawn(async move {
            attempt.run().await;
            key
        });
    }

    async fn on_stop(&mut self, message: jetstream::Message, stop: StopExecution) -> Result<()> {
        let key = AttemptKey {
            execution: stop.execution,
            attempt: stop.attempt,
        };
        if let Some(tx) = self.running.get(&key) {
            // The attempt's task kills the process group and records `stopped`. Acked now:
            // if the edge dies before that, the restart reports the attempt failed and
            // kills what is left, so the stop is never undone.
            tx.send_replace(Some(StopCause::Requested(stop.reason)));
            ack(&message, key).await;
            return Ok(());
        }
        let known = self.store.get(key).await?;
        match known {
            Some(record) if record.state.is_terminal() => {
                tracing::debug!(attempt = %key, state = %record.state, "stop for a finished attempt");
            }
            Some(_) => {
                // Recorded but without a task: left by a previous process (its processes
                // were killed at start) or its task died. The stop is what ends it.
                self.end_taskless(key, ExecutionState::Stopped, stop.reason)
                    .await?;
            }
            None => {
                // Never received: record a tombstone, so the attempt can never start here
                // later (a stop must win over a run that arrives after it), and say so.
                let record = ExecutionRecord {
                    execution: key.execution,
                    attempt: key.attempt,
                    job: None,
                    job_name: String::new(),
                    version: 0,
                    task: None,
                    state: ExecutionState::Stopped,
                    exit_code: None,
                    reason: Some(stop.reason.clone()),
                    assign_seq: message.info().map_or(0, |i| i.stream_sequence),
                    recorded_at: Timestamp::now(),
                    process: None,
                };
                let report = outbox::update_entry(
                    &self.node,
                    key,
                    ExecutionState::Stopped,
                    None,
                    Some(stop.reason),
                )?;
                self.store.insert_if_absent(record, vec![report]).await?;
            }
        }
        ack(&message, key).await;
        Ok(())
    }

    /// Ends every running attempt (shutdown) and waits for each to record its end.
    async fn stop_all(&mut self) {
        for tx in self.running.values() {
            tx.send_replace(Some(StopCause::Shutdown));
        }
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done);
        }
    }
}

/// Records runs in one group commit and acks the recorded ones. The reports are built
/// now; the returned future does the writing and acking, owning all it needs.
fn record_runs(
    store: Store,
    node: &NodeId,
    runs: Vec<(jetstream::Message, u64, RunExecution)>,
) -> Result<impl Future<Output = Recorded> + Send + 'static> {
    let mut requests = Vec::with_capacity(runs.len());
    for (_, seq, run) in &runs {
        let key = AttemptKey {
            execution: run.execution,
            attempt: run.attempt,
        };
        let accepted = outbox::update_entry(node, key, ExecutionState::Accepted, None, None)?;
        requests.push((record_of(run, *seq), vec![accepted]));
    }
    Ok(async move {
        // Every request reaches the store's writer before any is awaited alone, so they
        // share a transaction and an fsync.
        let outcomes = futures::future::join_all(
            requests
                .into_iter()
                .map(|(record, entries)| store.insert_if_absent(record, entries)),
        )
        .await;
        let mut acks = Vec::new();
        let mut start = Vec::new();
        let mut fatal = None;
        for ((message, _, run), outcome) in runs.into_iter().zip(outcomes) {
            let key = AttemptKey {
                execution: run.execution,
                attempt: run.attempt,
            };
            match outcome {
                Ok(Inserted::New) => {
                    acks.push(message);
                    start.push((key, run));
                }
                Ok(Inserted::Known(record)) => {
                    tracing::info!(attempt = %key, state = %record.state, "redelivered assignment already recorded; acking again");
                    acks.push(message);
                }
                Err(e) => {
                    // Not recorded, so not acked: JetStream keeps it. Ask for it again soon.
                    tracing::error!(attempt = %key, error = %e, "recording an assignment failed");
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    if !e.is_retryable() {
                        fatal.get_or_insert(e);
                    }
                }
            }
        }
        futures::future::join_all(acks.iter().map(|message| async move {
            if let Err(e) = message.double_ack().await {
                tracing::warn!(error = %e, "ack not confirmed; a redelivery will be deduped");
            }
        }))
        .await;
        Recorded { start, fatal }
    })
}

/// What the edge records of a run it accepts.
fn record_of(run: &RunExecution, seq: u64) -> ExecutionRecord {
    ExecutionRecord {
        execution: run.execution,
        attempt: run.attempt,
        job: Some(run.job),
        job_name: run.job_name.clone(),
        version: run.version,
        task: Some(run.task.clone()),
        state: ExecutionState::Accepted,
        exit_code: None,
        reason: None,
        assign_seq: seq,
        recorded_at: Timestamp::now(),
        process: None,
    }
}

/// A confirmed ack: returns once the server has the ack, so a recorded-and-acked attempt
/// is really gone from the queue. A failed ack only means a redelivery, which the record
/// dedupes.
async fn ack(message: &jetstream::Message, key: AttemptKey) {
    if let Err(e) = message.double_ack().await {
        tracing::warn!(attempt = %key, error = %e, "ack not confirmed; a redelivery will be deduped");
    }
}
