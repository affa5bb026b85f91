//! The decider's shell: feeds commands, edge reports and liveness facts to the pure
//! decider, one at a time and in order, and appends the decisions to the event stream as
//! one atomic batch, expecting the stream to end where this orchestrator last saw it. The
//! inputs that have already arrived when one is taken are decided together, each seeing
//! the ones before it, and appended in one batch: one round trip for all.
//!
//! If another orchestrator appended first, the append fails with a conflict: the shell
//! reads what was appended, evolves its state, and decides the same input again — which,
//! for an input the other already decided, yields nothing. So two orchestrators running at
//! once never record conflicting facts. An input is acked only after its decision is
//! stored; one that was not is redelivered and decided again, harmlessly.
//!
//! Liveness timers live here too: they turn silence into `NodeSilent` and
//! `NodeSilentTooLong` inputs, and a drain's passed deadline into `DrainDeadline`. They
//! never delay or gate dispatch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use cairn_shared::codec::Envelope;
use cairn_shared::event::InputRejected;
use cairn_shared::{
    Command, CommandId, Event, EventId, ExecutionId, ExecutionState, JobId, Liveness, NodeId,
    NodeState, Report, RunningAttempt, Seq, Timestamp,
};
use cairn_streams::backoff::Backoff;
use cairn_streams::{
    Binding, Error as StreamsError, Expect, Intake, Outgoing, Publisher, Pulled, ReadFrom, Reader,
    StreamKind, subjects,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::decider::{self, IdSource, Input, Origin, State, lost_due};
use crate::dispatcher::{Decided, Handoff};
use crate::error::{Error, Result};
use crate::metrics::DeciderMetrics;
use crate::retry::pause;

/// Liveness thresholds (`cairn orchestrator --heartbeat-interval --disconnect-after --lost-after`).
#[derive(Clone, Debug)]
pub struct LivenessConfig {
    /// How often edges are expected to beat; the timer checks at this pace.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is disconnected (its work still waits for it).
    pub disconnect_after: Duration,
    /// Silence after which a node is lost (its executions end `lost`).
    pub lost_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            disconnect_after: Duration::from_secs(15),
            lost_after: Duration::from_secs(300),
        }
    }
}

struct FreshIds;

impl IdSource for FreshIds {
    fn job_id(&mut self) -> JobId {
        JobId::generate()
    }

    fn execution_id(&mut self) -> ExecutionId {
        ExecutionId::generate()
    }
}

/// The decider with its state, as of event `last`.
pub struct Engine {
    js: jetstream::Context,
    publisher: Publisher,
    reader: Reader,
    state: State,
    last: Seq,
    liveness: LivenessConfig,
    heard: HashMap<NodeId, Instant>,
    /// Set by `run`; lets retry loops give up when the orchestrator stops.
    shutdown: CancellationToken,
    /// Where appended events go at once, for the dispatcher (see [`Decided`]).
    handoff: Option<Handoff>,
    /// The client's connection count as of the last tick: a change is a reconnect.
    connects: u64,
    /// Recreating node consumers after a reconnect, in the background.
    restoring: Option<tokio::task::JoinHandle<()>>,
    /// Recreating single node consumers that were deleted, or that their edge cannot
    /// bind; aborted when the engine stops.
    recreating: tokio::task::JoinSet<NodeId>,
    /// The nodes in `recreating`, so one is not recreated twice at once, and a
    /// replacement takes over from a plain creation.
    being_recreated: HashMap<NodeId, Recreation>,
    /// Since when each node's heartbeats have said its edge cannot bind its consumer.
    unbound: HashMap<NodeId, Instant>,
    /// Per input stream, the sequence after the last input this engine recorded: where a
    /// consumer it must create again (someone deleted it) starts, so that inputs already
    /// decided are not all delivered again.
    recorded: HashMap<StreamKind, Seq>,
    /// Whether the connection was seen down since liveness last judged.
    deaf: bool,
    /// What it counts for `/metrics`.
    metrics: DeciderMetrics,
}

impl Engine {
    /// Builds the state from the whole event stream.
    pub async fn start(js: jetstream::Context, liveness: LivenessConfig) -> Result<Self> {
        // The orchestrator ensures every known node's consumer after this start; a
        // reconnect from now on makes the engine ensure them again.
        let connects = js_connects(&js);
        let mut engine = Self {
            publisher: Publisher::new(js.clone()),
            reader: Reader::new(js.clone()),
            js,
            state: State::default(),
            last: Seq::ZERO,
            liveness,
            heard: HashMap::new(),
            shutdown: CancellationToken::new(),
            handoff: None,
            connects,
            restoring: None,
            recreating: tokio::task::JoinSet::new(),
            being_recreated: HashMap::new(),
            unbound: HashMap::new(),
            recorded: HashMap::new(),
            deaf: false,
            metrics: DeciderMetrics::default(),
        };
        engine.catch_up().await?;
        // Every node gets a full grace period from this start before it counts as silent.
        let now = Instant::now();
        engine.heard = engine.state.nodes().map(|n| (n.id.clone(), now)).collect();
        Ok(engine)
    }

    /// Hands every batch this engine appends to `handoff` as soon as it is stored.
    /// Counts its decisions, appends and conflicts into `metrics` (shared with `/metrics`).
    pub fn measure(&mut self, metrics: DeciderMetrics) {
        self.metrics = metrics;
    }

    pub fn hand_off_to(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The last event sequence the state includes.
    pub fn last(&self) -> Seq {
        self.last
    }

    /// Reads and evolves every event appended after `last`.
    async fn catch_up(&mut self) -> Result<()> {
        let end = self.reader.bounds(StreamKind::Events).await?.last;
        if end <= self.last {
            return Ok(());
        }
        let events = self
            .reader
            .read(StreamKind::Events, ReadFrom::Seq(self.last.next()), None)
            .await?;
        let mut events = std::pin::pin!(events);
        while self.last < end {
            let raw = match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(Some(raw)) => raw?,
                Ok(None) | Err(_) => {
                    return Err(Error::stopped(
                        "decider",
                        format!("catching up stalled at {} of {end}", self.last),
                    ));
                }
            };
            // Undecodable events carry no fact the decider could use; the projector records them.
            if let Ok(envelope) = Envelope::<Event>::decode(&raw.payload) {
                decider::evolve(&mut self.state, &envelope.body);
            }
            self.last = raw.seq;
        }
        Ok(())
    }

    /// Decides `input` and appends the decision, deciding again after any conflict. False
    /// if shutdown interrupted it before anything was recorded.
    async fn decide(&mut self, input: &Input, cause: Option<CommandId>) -> Result<bool> {
        self.record(&[Step::Decide(input, cause)]).await
    }

    /// Decides every step in order, each seeing the ones before it, and appends all their
    /// events, atomically after `last` (see [`Engine::append`] for batches over the
    /// server's limit). After a conflict it catches up and decides the steps again; while
    /// NATS is unreachable it keeps trying. Returns false if shutdown came first: nothing
    /// more was recorded, and the inputs must not be acked.
    async fn record(&mut self, steps: &[Step<'_>]) -> Result<bool> {
        let mut backoff = Backoff::default();
        let mut behind = false;
        loop {
            let attempt = async {
                if behind {
                    self.catch_up().await?;
                }
                let deciding = Instant::now();
                let mut draft = self.state.clone();
                let mut decisions = Vec::with_capacity(steps.len());
                for step in steps {
                    let (events, cause) = match step {
                        Step::Decide(input, cause) => {
                            (decider::decide(&draft, input, &mut FreshIds).events, *cause)
                        }
                        Step::Record(event) => (vec![(*event).clone()], None),
                    };
                    for event in &events {
                        decider::evolve(&mut draft, event);
                    }
                    decisions.push((events, cause));
                }
                if decisions.iter().all(|(events, _)| events.is_empty()) {
                    return Ok(());
                }
                let decided = deciding.elapsed();
                let creating = Instant::now();
                // A node's consumer exists before any work for it does. Many nodes
                // registering at once get theirs concurrently.
                let registered: Vec<NodeId> = decisions
                    .iter()
                    .flat_map(|(events, _)| events)
                    .filter_map(|event| match event {
                        Event::NodeRegistered(e) => Some(e.node.clone()),
                        _ => None,
                    })
                    .collect();
                self.create_consumers(registered).await;
                let created = creating.elapsed();
                let appending = Instant::now();
                self.last = self.append(&decisions, &draft).await?;
                self.state = draft;
                let decided_inputs = steps
                    .iter()
                    .filter(|s| matches!(s, Step::Decide(..)))
                    .count();
                let appended: usize = decisions.iter().map(|(e, _)| e.len()).sum();
                self.metrics.decisions.inc_by(decided_inputs as u64);
                self.metrics.events_appended.inc_by(appended as u64);
                self.metrics
                    .round_seconds
                    .observe(deciding.elapsed().as_secs_f64());
                tracing::debug!(
                    inputs = steps.len(),
                    events = decisions.iter().map(|(e, _)| e.len()).sum::<usize>(),
                    decided_us = decided.as_micros(),
                    consumers_us = created.as_micros(),
                    appended_us = appending.elapsed().as_micros(),
                    "recorded"
                );
                Ok::<(), Error>(())
            };
            match attempt.await {
                Ok(()) => return Ok(true),
                Err(Error::Streams(StreamsError::Conflict { .. })) => {
                    self.metrics.append_conflicts.inc();
                    behind = true;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "recording a decision failed; retrying");
                    behind = true;
                    if !pause(&self.shutdown, &mut backoff).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
            if self.shutdown.is_cancelled() {
                return Ok(false);
            }
        }
    }

    /// Appends decisions (each input's events, with the command that caused them) in
    /// atomic batches of at most the server's limit, each expecting the last; a batch
    /// holds whole decisions whenever one fits. (A decision larger than one batch —
    /// placing a daemon on over a thousand nodes — is appended in several; a crash between
    /// them leaves a prefix without the `CommandAccepted` that comes last, so the
    /// redelivered input is decided again and its placement completes the rest.)
    /// `decided` is the state with every one of these events evolved in: it knows the job
    /// of every execution they are about, which their subjects name.
    async fn append(
        &self,
        decisions: &[(Vec<Event>, Option<CommandId>)],
        decided: &State,
    ) -> Result<Seq> {
        let at = Timestamp::now();
        let limit = cairn_streams::publish::MAX_ATOMIC_BATCH;
        let mut last = self.last;
        let mut batch: Vec<Envelope<Event>> = Vec::new();
        for (events, cause) in decisions {
            if !batch.is_empty() && batch.len() + events.len() > limit {
                last = self
                    .append_batch(std::mem::take(&mut batch), last, decided)
                    .await?;
            }
            for event in events {
                if batch.len() == limit {
                    last = self
                        .append_batch(std::mem::take(&mut batch), last, decided)
                        .await?;
                }
                batch.push(Envelope::new(
                    EventId::generate(),
                    *cause,
                    at,
                    event.clone(),
                ));
            }
        }
        if !batch.is_empty() {
            last = self.append_batch(batch, last, decided).await?;
        }
        Ok(last)
    }

    /// Appends one atomic batch after `last` and hands it to the dispatcher; returns the
    /// stream's new last sequence.
    async fn append_batch(
        &self,
        batch: Vec<Envelope<Event>>,
        last: Seq,
        decided: &State,
    ) -> Result<Seq> {
        let outgoing = batch
            .iter()
            .map(|event| Outgoing::event_with(event, |id| decided.execution(id).map(|e| e.job)))
            .collect::<cairn_streams::Result<Vec<_>>>()?;
        let stored = self
            .publisher
            .append_atomic(outgoing, Expect::LastSeq(last))
            .await?
            .seq;
        if let Some(handoff) = &self.handoff {
            // A batch is stored contiguously, ending at `stored`. If the dispatcher is
            // behind (the channel is full) it reads these from the stream instead.
            let first = Seq(stored.0 + 1 - batch.len() as u64);
            let _ = handoff.try_send(Decided {
                first,
                events: batch,
            });
        }
        Ok(stored)
    }

    /// Takes input messages, decides each in order, appends all their events, then acks
    /// them (terminating the undecodable ones, after recording why). Taking together the
    /// inputs that have already arrived costs one append for all, not one each.
    async fn take(&mut self, messages: Vec<(StreamKind, jetstream::Message)>) -> Result<()> {
        let mut taken = Vec::with_capacity(messages.len());
        let mut inputs = Vec::with_capacity(messages.len());
        let mut recorded: Vec<(StreamKind, Seq)> = Vec::with_capacity(messages.len());
        for (kind, message) in messages {
            let seq = match message.info() {
                Ok(info) => Seq(info.stream_sequence),
                Err(e) => {
                    tracing::warn!(error = %e, "input without stream metadata; skipped");
                    continue;
                }
            };
            recorded.push((kind, seq));
            let origin = Origin {
                stream: kind.name().to_owned(),
                seq,
            };
            let parsed = parse(kind, &message, origin.clone());
            match &parsed {
                Ok((Input::Report { node, .. }, _)) => {
                    self.heard.insert(node.clone(), Instant::now());
                }
                Ok(_) => {}
                Err(reason) => {
                    tracing::warn!(stream = kind.name(), %seq, %reason, "refusing an undecodable input");
                }
            }
            inputs.push(parsed.map_err(|reason| -> Event {
                // A crash between recording and terminating records it twice on
                // redelivery: a duplicate note, never a wrong fact.
                InputRejected {
                    stream: origin.stream,
                    seq,
                    reason,
                }
                .into()
            }));
            taken.push(message);
        }
        let steps: Vec<Step<'_>> = inputs
            .iter()
            .map(|parsed| match parsed {
                Ok((input, cause)) => Step::Decide(input, *cause),
                Err(refusal) => Step::Record(refusal),
            })
            .collect();
        if !self.record(&steps).await? {
            return Ok(()); // shutting down: the inputs stay unacked and come back
        }
        for (kind, seq) in &recorded {
            let next = self.recorded.entry(*kind).or_insert(Seq::ZERO);
            *next = (*next).max(seq.next());
        }
        for (message, parsed) in taken.iter().zip(&inputs) {
            let acked = match parsed {
                Ok(_) => message.ack().await,
                Err(_) => message.ack_with(AckKind::Term).await,
            };
            if let Err(e) = acked {
                tracing::debug!(error = %e, "ack lost; the input will be decided again, harmlessly");
            }
        }
        Ok(())
    }

    /// Whether the client has connected again since the last tick.
    fn reconnected(&mut self) -> bool {
        let connects = js_connects(&self.js);
        let again = connects != self.connects;
        self.connects = connects;
        again
    }

    /// Creates every known node's consumer (again), in the background while decisions go
    /// on (a node registering meanwhile gets its own in its round), retrying only the ones
    /// that failed until none does: on a cluster missing a server, the consumers it held
    /// fail until their edges' heartbeats have them replaced, and the rest must not wait
    /// for them. Edges keep trying to bind until then; the work waits in its shard.
    fn restore_consumers(&mut self, why: &'static str) {
        if let Some(previous) = self.restoring.take() {
            previous.abort();
        }
        let mut left: Vec<NodeId> = self.state.nodes().map(|n| n.id.clone()).collect();
        let (js, shutdown) = (self.js.clone(), self.shutdown.clone());
        tracing::info!(nodes = left.len(), why, "creating node consumers");
        self.restoring = Some(tokio::spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let failed = cairn_streams::ensure_node_consumers(&js, left).await;
                let Some((_, e)) = failed.first() else {
                    tracing::info!("node consumers created");
                    return;
                };
                tracing::warn!(left = failed.len(), error = %e, retry_in = ?backoff.upcoming(), "creating node consumers");
                left = failed.into_iter().map(|(node, _)| node).collect();
                if !pause(&shutdown, &mut backoff).await {
                    return;
                }
            }
        }));
    }

    /// Creates the consumers of nodes that just registered, all at once. One that cannot
    /// be created now (a cluster missing a server) is left to the background, never
    /// failing the round: its work waits in its shard meanwhile, and a consumer created
    /// later delivers all of it.
    async fn create_consumers(&mut self, nodes: Vec<NodeId>) {
        for (node, e) in cairn_streams::ensure_node_consumers(&self.js, nodes).await {
            tracing::warn!(%node, error = %e, "creating a node consumer; trying again");
            self.spawn_recreation(node, false);
        }
    }

    /// Creates a known node's consumer again after its deletion, in the background and
    /// until it succeeds; the node's work waits in its stream meanwhile.
    fn recreate_consumer(&mut self, node: NodeId) {
        if self.state.node(&node).is_none() {
            return;
        }
        tracing::warn!(%node, "node consumer deleted; creating it again");
        self.spawn_recreation(node, false);
    }

    /// Replaces the consumer of a node whose edge has not been able to bind it for
    /// [`UNBOUND_GRACE`]: on a cluster, it lived on a server that is gone (an R1 consumer
    /// is not failed over). Tried again after every further grace while the edge says so.
    fn note_binding(&mut self, node: &NodeId, bound: bool) {
        if bound || self.state.node(node).is_none() {
            self.unbound.remove(node);
            return;
        }
        let now = Instant::now();
        let since = *self.unbound.entry(node.clone()).or_insert(now);
        if now.duration_since(since) < UNBOUND_GRACE {
            return;
        }
        self.unbound.insert(node.clone(), now);
        tracing::warn!(%node, "the edge cannot bind its consumer; replacing it");
        self.spawn_recreation(node.clone(), true);
    }

    /// Creates `node`'s consumer in the background until it succeeds, deleting the old one
    /// first when `replace`.
    ///
    /// A creation already under way for the node is left to finish, unless this is a
    /// replacement and it is not: a consumer on a server that is gone can be neither
    /// created nor reached, so only deleting it helps, and the edge that asks for that
    /// must not wait behind a creation that cannot succeed.
    fn spawn_recreation(&mut self, node: NodeId, replace: bool) {
        if let Some(running) = self.being_recreated.get(&node) {
            if running.replace || !replace {
                return;
            }
            running.task.abort();
        }
        let (js, shutdown, id) = (self.js.clone(), self.shutdown.clone(), node.clone());
        let task = self.recreating.spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let made = if replace {
                    cairn_streams::replace_node_consumer(&js, &node).await
                } else {
                    cairn_streams::ensure_node_consumer(&js, &node).await
                };
                match made {
                    Ok(()) => return node,
                    Err(e) => tracing::warn!(%node, error = %e, "recreating a node consumer"),
                }
                if !pause(&shutdown, &mut backoff).await {
                    return node;
                }
            }
        });
        self.being_recreated
            .insert(id, Recreation { task, replace });
    }

    /// A heartbeat from `node`: remembered, and decided on when the node was away or
    /// names an attempt the state has as lost (its node came back with it running).
    async fn heartbeat(&mut self, node: NodeId, beat: Beat) -> Result<()> {
        self.heard.insert(node.clone(), Instant::now());
        self.note_binding(&node, beat.bound);
        let running = beat.running;
        let away = self
            .state
            .node(&node)
            .is_some_and(|n| matches!(n.state, NodeState::Disconnected | NodeState::Lost));
        let returned = running.iter().any(|a| {
            self.state
                .execution(a.execution)
                .is_some_and(|e| e.state == ExecutionState::Lost && e.node == node)
        });
        if away || returned {
            self.decide(&Input::Heartbeat { node, running }, None)
                .await
                .map(drop)
        } else {
            Ok(())
        }
    }

    /// Turns silence past the thresholds into liveness inputs: the node's own, and its
    /// executions' (a job's `disconnect.lost_after`).
    async fn check_liveness(&mut self) -> Result<()> {
        let now = Instant::now();
        let lost_after = self.liveness.lost_after;
        let mut due = Vec::new();
        for node in self.state.nodes() {
            let heard = *self.heard.entry(node.id.clone()).or_insert(now);
            let silent = now.duration_since(heard);
            let since = Timestamp(
                Timestamp::now()
                    .0
                    .saturating_sub(u64::try_from(silent.as_millis()).unwrap_or(0)),
            );
            match node.state {
                NodeState::Connected if silent >= self.liveness.disconnect_after => {
                    due.push(Input::NodeSilent {
                        node: node.id.clone(),
                        since,
                    });
                }
                NodeState::Disconnected | NodeState::Lost
                    if lost_due(&self.state, &node.id, lost_after)
                        .is_some_and(|due| silent >= due) =>
                {
                    due.push(Input::NodeSilentTooLong {
                        node: node.id.clone(),
                        since,
                        silent,
                        lost_after,
                    });
                }
                _ => {}
            }
        }
        if !due.is_empty() {
            let steps: Vec<_> = due.iter().map(|input| Step::Decide(input, None)).collect();
            self.record(&steps).await?;
        }
        Ok(())
    }

    /// Tells the decider the time of every drain whose deadline has passed. The decider
    /// asks what still runs there to stop once; told again (every tick until the drain
    /// ends, and after a restart) it decides nothing, so nothing needs remembering here.
    async fn check_drains(&mut self) -> Result<()> {
        let now = Timestamp::now();
        let due: Vec<Input> = self
            .state
            .draining()
            .filter(|n| n.drain.is_some_and(|deadline| deadline <= now))
            .map(|n| Input::DrainDeadline {
                node: n.id.clone(),
                now,
            })
            .collect();
        if !due.is_empty() {
            let steps: Vec<_> = due.iter().map(|input| Step::Decide(input, None)).collect();
            self.record(&steps).await?;
        }
        Ok(())
    }

    /// Runs until shutdown: inputs in order, heartbeats, liveness checks. The input pulls
    /// bind again whenever they break (see [`Intake`]), so no input waits undecided
    /// because its consumer was deleted or its leader moved.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        self.shutdown = shutdown.clone();
        // A server restart since the last run may have dropped them.
        self.restore_consumers("started");
        let input = |kind| {
            Intake::new(
                self.js.clone(),
                kind,
                cairn_streams::topology::ORCHESTRATOR_CONSUMER,
                Binding::Create(Box::new(
                    cairn_streams::topology::orchestrator_consumer_config(),
                )),
                MAX_INPUTS,
            )
        };
        let mut commands = input(StreamKind::Commands);
        let mut reports = input(StreamKind::Reports);
        let mut heartbeats = self
            .js
            .client()
            .subscribe(subjects::HEARTBEATS)
            .await
            .map_err(|e| Error::stopped("decider", format!("subscribing to heartbeats: {e}")))?;
        // A node consumer someone deleted is made again at once: its edge can only bind.
        let mut deletions = self
            .js
            .client()
            .subscribe(subjects::CONSUMER_DELETIONS)
            .await
            .map_err(|e| {
                Error::stopped(
                    "decider",
                    format!("subscribing to consumer advisories: {e}"),
                )
            })?;
        let mut tick =
            tokio::time::interval(self.liveness.heartbeat_interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                pulled = commands.next() => {
                    self.pulled(StreamKind::Commands, pulled, &mut commands, &mut reports).await?;
                }
                pulled = reports.next() => {
                    self.pulled(StreamKind::Reports, pulled, &mut commands, &mut reports).await?;
                }
                Some(beat) = heartbeats.next() => {
                    if let Some(node) = subjects::node_of_heartbeat(&beat.subject) {
                        let beat = Beat::read(&node, &beat.payload);
                        self.heartbeat(node, beat).await?;
                    }
                }
                Some(advisory) = deletions.next() => {
                    if let Some(node) = subjects::node_of_deleted_consumer(&advisory.subject) {
                        self.recreate_consumer(node);
                    }
                }
                Some(done) = self.recreating.join_next_with_id(), if !self.recreating.is_empty() => {
                    // An aborted task's node belongs to the one that took over from it; a
                    // task that panicked gives no node, so its entry is found by its id.
                    let task = match &done {
                        Ok((task, _)) => *task,
                        Err(e) => e.id(),
                    };
                    self.being_recreated.retain(|_, r| r.task.id() != task);
                }
                _ = tick.tick() => {
                    let reconnected = self.reconnected();
                    if reconnected {
                        // Node consumers keep their state in memory, so a server restart
                        // drops them.
                        self.restore_consumers("reconnected");
                    }
                    if self.hearing(reconnected) {
                        self.check_liveness().await?;
                    }
                    self.check_drains().await?;
                }
            }
        }
    }

    /// Handles what one input pull brought: a message is decided with whatever else both
    /// inputs have already delivered; a pull that broke or came back is said.
    async fn pulled(
        &mut self,
        kind: StreamKind,
        pulled: Pulled,
        commands: &mut Intake,
        reports: &mut Intake,
    ) -> Result<()> {
        match pulled {
            Pulled::Message(message) => {
                let batch = gather((kind, message), commands, reports);
                self.take(batch).await
            }
            Pulled::Bound { pending } => {
                tracing::info!(stream = kind.name(), pending, "taking inputs");
                Ok(())
            }
            Pulled::Unbound { reason, lost: true } => {
                tracing::warn!(stream = kind.name(), %reason, "input pull broke; binding again");
                if let Some(next) = self.recorded.get(&kind) {
                    let intake = match kind {
                        StreamKind::Commands => commands,
                        _ => reports,
                    };
                    intake.recreate_from(next.0);
                }
                Ok(())
            }
            Pulled::Unbound {
                reason,
                lost: false,
            } => {
                tracing::warn!(stream = kind.name(), %reason, "cannot bind the input consumer yet; retrying");
                Ok(())
            }
        }
    }

    /// Whether silence can count against nodes now. Not while this orchestrator's own
    /// connection is down, and not before every node has had a full grace period since it
    /// came back: nobody could have been heard meanwhile. So the heartbeat clocks restart
    /// whenever the connection does (`reconnected`, or seen down since the last tick), as
    /// they start afresh when the orchestrator starts.
    fn hearing(&mut self, reconnected: bool) -> bool {
        let connected = matches!(
            self.js.client().connection_state(),
            async_nats::connection::State::Connected
        );
        if !connected {
            self.deaf = true;
            return false;
        }
        if self.deaf || reconnected {
            self.deaf = false;
            let now = Instant::now();
            for heard in self.heard.values_mut() {
                *heard = now;
            }
            tracing::info!(
                nodes = self.heard.len(),
                "connected to NATS again: nodes' silence counts from now"
            );
        }
        true
    }
}

/// How many times the client has connected to a server so far.
fn js_connects(js: &jetstream::Context) -> u64 {
    js.client()
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A node consumer being made in the background.
struct Recreation {
    task: tokio::task::AbortHandle,
    /// Whether it deletes the consumer first.
    replace: bool,
}

/// One input's part of a recorded batch.
enum Step<'a> {
    /// Decide this input (caused by this command, if it is one).
    Decide(&'a Input, Option<CommandId>),
    /// Record this fact as it is.
    Record(&'a Event),
}

/// The decider's input in a message, with the command id that causes its events; or why
/// it cannot be one.
fn parse(
    kind: StreamKind,
    message: &jetstream::Message,
    origin: Origin,
) -> std::result::Result<(Input, Option<CommandId>), String> {
    match kind {
        StreamKind::Commands => Envelope::<Command>::decode(&message.payload)
            .map(|env| {
                (
                    Input::Command {
                        id: env.id,
                        command: env.body,
                    },
                    Some(env.id),
                )
            })
            .map_err(|e| e.to_string()),
        _ => match subjects::node_of_report(&message.subject) {
            None => Err(format!(
                "report on a subject that names no node: {}",
                message.subject
            )),
            Some(node) => Envelope::<Report>::decode(&message.payload)
                .map(|env| {
                    (
                        Input::Report {
                            node,
                            origin,
                            report: env.body,
                        },
                        None,
                    )
                })
                .map_err(|e| e.to_string()),
        },
    }
}

/// Inputs a round takes at most while the decider keeps up: each input waits for its whole
/// round, and on a busy machine larger rounds feed back into longer ones (BENCHMARKS.md,
/// "round sizes", has the measurement).
const ROUND_INPUTS: usize = 128;

/// Inputs a round takes at most while a backlog waits on the server: then fewer, larger
/// rounds (one atomic batch of single-event decisions each) drain it sooner.
const MAX_INPUTS: usize = cairn_streams::publish::MAX_ATOMIC_BATCH;

/// Inputs waiting on the server beyond which rounds take [`MAX_INPUTS`]: several full
/// rounds' worth, so a decider that is only briefly behind keeps its short rounds.
const BACKLOG: usize = 4 * MAX_INPUTS;

/// `first`, and whatever else both inputs have already delivered, up to [`ROUND_INPUTS`],
/// or [`MAX_INPUTS`] when more than [`BACKLOG`] still waits on the server behind `first`;
/// each stream in its own order. Never waits.
fn gather(
    first: (StreamKind, jetstream::Message),
    commands: &mut Intake,
    reports: &mut Intake,
) -> Vec<(StreamKind, jetstream::Message)> {
    let mut open = [true, true];
    let backlog = first.1.info().map_or(0, |info| {
        usize::try_from(info.pending).unwrap_or(usize::MAX)
    });
    let limit = if backlog > BACKLOG {
        MAX_INPUTS
    } else {
        ROUND_INPUTS
    };
    let mut batch = vec![first];
    while batch.len() < limit && open.iter().any(|o| *o) {
        for (i, (kind, intake)) in [
            (StreamKind::Commands, &mut *commands),
            (StreamKind::Reports, &mut *reports),
        ]
        .into_iter()
        .enumerate()
        {
            if !open[i] || batch.len() >= limit {
                continue;
            }
            match intake.ready() {
                Some(message) => batch.push((kind, message)),
                None => open[i] = false,
            }
        }
    }
    batch
}

/// What the engine reads in a heartbeat.
#[derive(Debug)]
struct Beat {
    /// The attempts the node runs.
    running: Vec<RunningAttempt>,
    /// Whether its edge holds its pull.
    bound: bool,
}

/// A beat that says nothing of its node's attempts, and its pull taken as bound: nothing
/// is replaced on the word of a beat that could not be read.
impl Default for Beat {
    fn default() -> Self {
        Beat {
            running: Vec::new(),
            bound: true,
        }
    }
}

impl Beat {
    /// The subject already proved which node sent it (only that node may publish there); a
    /// beat that does not decode, or names another node, still counts as the node being
    /// heard, with nothing said about its attempts and its pull taken as bound.
    fn read(node: &NodeId, payload: &[u8]) -> Self {
        match Envelope::<Liveness>::decode(payload) {
            Ok(Envelope {
                body: Liveness::Heartbeat(beat),
                ..
            }) if &beat.node == node => Beat {
                running: beat.executions,
                bound: beat.bound,
            },
            Ok(_) => Beat::default(),
            Err(e) => {
                tracing::debug!(%node, error = %e, "undecodable heartbeat");
                Beat::default()
            }
        }
    }
}

/// How long an edge may say it cannot bind its consumer before the orchestrator replaces
/// it. An edge binds within moments of its hello or of a consumer's recreation; one that
/// cannot for this long has a consumer no server serves.
pub const UNBOUND_GRACE: Duration = Duration::from_secs(5);
