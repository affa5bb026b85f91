//! The decider's shell: feeds commands, edge reports and liveness facts to the pure
//! decider, one at a time and in order, and appends each decision to the event stream as
//! one atomic batch, expecting the stream to end where this orchestrator last saw it.
//!
//! If another orchestrator appended first, the append fails with a conflict: the shell
//! reads what was appended, evolves its state, and decides the same input again — which,
//! for an input the other already decided, yields nothing. So two orchestrators running at
//! once never record conflicting facts. An input is acked only after its decision is
//! stored; one that was not is redelivered and decided again, harmlessly.
//!
//! Liveness timers live here too: they turn silence into `NodeSilent` and
//! `NodeSilentTooLong` inputs. They never delay or gate dispatch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use cairn_shared::codec::Envelope;
use cairn_shared::event::InputRejected;
use cairn_shared::{
    Command, CommandId, Event, EventId, ExecutionId, JobId, NodeId, NodeState, Report, Seq,
    Timestamp,
};
use cairn_streams::{
    Error as StreamsError, Expect, Outgoing, Publisher, ReadFrom, Reader, StreamKind, subjects,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::decider::{self, IdSource, Input, Origin, State};
use crate::error::{Error, Result};

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
}

impl Engine {
    /// Builds the state from the whole event stream.
    pub async fn start(js: jetstream::Context, liveness: LivenessConfig) -> Result<Self> {
        let mut engine = Self {
            publisher: Publisher::new(js.clone()),
            reader: Reader::new(js.clone()),
            js,
            state: State::default(),
            last: Seq::ZERO,
            liveness,
            heard: HashMap::new(),
            shutdown: CancellationToken::new(),
        };
        engine.catch_up().await?;
        // Every node gets a full grace period from this start before it counts as silent.
        let now = Instant::now();
        engine.heard = engine.state.nodes().map(|n| (n.id.clone(), now)).collect();
        Ok(engine)
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
                    return Err(Error::Stopped(format!(
                        "catching up stalled at {} of {end}",
                        self.last
                    )));
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
        self.record(
            |state| decider::decide(state, input, &mut FreshIds).events,
            cause,
        )
        .await
    }

    /// Appends the events `decision` yields for the current state, atomically after `last`.
    /// After a conflict it catches up and decides again; while NATS is unreachable it keeps
    /// trying. Returns false if shutdown came first: nothing was recorded, and the input
    /// must not be acked.
    async fn record(
        &mut self,
        decision: impl Fn(&State) -> Vec<Event>,
        cause: Option<CommandId>,
    ) -> Result<bool> {
        let mut backoff = Duration::from_millis(50);
        let mut behind = false;
        loop {
            let attempt = async {
                if behind {
                    self.catch_up().await?;
                }
                let events = decision(&self.state);
                if events.is_empty() {
                    return Ok(());
                }
                // A node's consumer exists before any work for it does.
                for event in &events {
                    if let Event::NodeRegistered(e) = event {
                        cairn_streams::ensure_node_consumer(&self.js, &e.node).await?;
                    }
                }
                let last = self.append(&events, cause).await?;
                for event in &events {
                    decider::evolve(&mut self.state, event);
                }
                self.last = last;
                Ok::<(), Error>(())
            };
            match attempt.await {
                Ok(()) => return Ok(true),
                Err(Error::Streams(StreamsError::Conflict { .. })) => behind = true,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "recording a decision failed; retrying");
                    behind = true;
                    let delay = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
            if self.shutdown.is_cancelled() {
                return Ok(false);
            }
        }
    }

    /// Appends in atomic batches of at most the server's limit, each expecting the last.
    /// (A decision larger than one batch — placing a daemon on over a thousand nodes — is
    /// appended in several; a crash between them leaves a prefix, which the redelivered
    /// input then completes.)
    async fn append(
        &self,
        events: &[Event],
        cause: Option<CommandId>,
    ) -> cairn_streams::Result<Seq> {
        let at = Timestamp::now();
        let mut last = self.last;
        for chunk in events.chunks(cairn_streams::publish::MAX_ATOMIC_BATCH) {
            let outgoing = chunk
                .iter()
                .map(|event| {
                    Outgoing::event(&Envelope::new(
                        EventId::generate(),
                        cause,
                        at,
                        event.clone(),
                    ))
                })
                .collect::<cairn_streams::Result<Vec<_>>>()?;
            last = self
                .publisher
                .append_atomic(outgoing, Expect::LastSeq(last))
                .await?
                .seq;
        }
        Ok(last)
    }

    /// Takes one input message, decides, appends, then acks it (or terminates it when it
    /// cannot be decoded, after recording why).
    async fn take(&mut self, kind: StreamKind, message: jetstream::Message) -> Result<()> {
        let seq = match message.info() {
            Ok(info) => Seq(info.stream_sequence),
            Err(e) => {
                tracing::warn!(error = %e, "input without stream metadata; skipped");
                return Ok(());
            }
        };
        let origin = Origin {
            stream: kind.name().to_owned(),
            seq,
        };
        let parsed = match kind {
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
                                origin: origin.clone(),
                                report: env.body,
                            },
                            None,
                        )
                    })
                    .map_err(|e| e.to_string()),
            },
        };
        match parsed {
            Ok((input, cause)) => {
                if let Input::Report { node, .. } = &input {
                    self.heard.insert(node.clone(), Instant::now());
                }
                if !self.decide(&input, cause).await? {
                    return Ok(()); // shutting down: the input stays unacked and comes back
                }
                if let Err(e) = message.ack().await {
                    tracing::debug!(error = %e, "ack lost; the input will be decided again, harmlessly");
                }
            }
            Err(reason) => {
                tracing::warn!(stream = kind.name(), %seq, %reason, "refusing an undecodable input");
                let refusal: Event = InputRejected {
                    stream: origin.stream,
                    seq,
                    reason,
                }
                .into();
                // A crash between recording and terminating records it twice on redelivery:
                // a duplicate note, never a wrong fact.
                if !self.record(|_| vec![refusal.clone()], None).await? {
                    return Ok(());
                }
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    tracing::debug!(error = %e, "terminating an undecodable input failed");
                }
            }
        }
        Ok(())
    }

    /// A heartbeat from `node`: remembered, and a reconnection if the node was away.
    async fn heartbeat(&mut self, node: NodeId) -> Result<()> {
        self.heard.insert(node.clone(), Instant::now());
        match self.state.node(&node).map(|n| n.state) {
            Some(NodeState::Disconnected | NodeState::Lost) => self
                .decide(&Input::Heartbeat { node }, None)
                .await
                .map(drop),
            _ => Ok(()),
        }
    }

    /// Turns silence past the thresholds into liveness inputs.
    async fn check_liveness(&mut self) -> Result<()> {
        let now = Instant::now();
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
                NodeState::Disconnected if silent >= self.liveness.lost_after => {
                    due.push(Input::NodeSilentTooLong {
                        node: node.id.clone(),
                        since,
                    });
                }
                _ => {}
            }
        }
        for input in due {
            if !self.decide(&input, None).await? {
                break;
            }
        }
        Ok(())
    }

    /// Runs until shutdown: inputs in order, heartbeats, liveness checks.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        self.shutdown = shutdown.clone();
        let commands = cairn_streams::orchestrator_consumer(&self.js, StreamKind::Commands).await?;
        let reports = cairn_streams::orchestrator_consumer(&self.js, StreamKind::Reports).await?;
        let stream_error = |e: &dyn std::fmt::Display| Error::Stopped(format!("input stream: {e}"));
        let mut commands = commands.messages().await.map_err(|e| stream_error(&e))?;
        let mut reports = reports.messages().await.map_err(|e| stream_error(&e))?;
        let mut heartbeats = self
            .js
            .client()
            .subscribe(subjects::HEARTBEATS)
            .await
            .map_err(|e| Error::Stopped(format!("subscribing to heartbeats: {e}")))?;
        let mut tick =
            tokio::time::interval(self.liveness.heartbeat_interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(message) = commands.next() => match message {
                    Ok(message) => self.take(StreamKind::Commands, message).await?,
                    Err(e) => tracing::warn!(error = %e, "command stream hiccup"),
                },
                Some(message) = reports.next() => match message {
                    Ok(message) => self.take(StreamKind::Reports, message).await?,
                    Err(e) => tracing::warn!(error = %e, "report stream hiccup"),
                },
                Some(beat) = heartbeats.next() => {
                    if let Some(node) = subjects::node_of_heartbeat(&beat.subject) {
                        self.heartbeat(node).await?;
                    }
                }
                _ = tick.tick() => self.check_liveness().await?,
            }
        }
    }
}
