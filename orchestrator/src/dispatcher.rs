//! The dispatcher: turns assignment and stop events into work on each node's subject of
//! its assignment shard, the moment they appear in the event stream.
//!
//! It follows the event stream itself (not just what this orchestrator appended), so work
//! decided by any orchestrator is dispatched even if its decider died right after
//! appending. It keeps no checkpoint: at start it re-queues every execution that is not
//! finished (from the decider's state), then follows the stream from there. Message ids
//! derived from execution, attempt and kind make a re-queue within the duplicate window a
//! no-op, and the edge de-duplicates beyond it.
//!
//! The stream is the source of truth, but waiting for this orchestrator's own events to
//! come back through it costs a delivery through a busy server. So the decider also hands
//! each batch it stored straight to the dispatcher ([`Decided`]), which takes it when it
//! continues exactly where dispatch stands, and otherwise leaves it to the stream: work is
//! always queued in stream order, once, whichever path brought it first.

use std::collections::VecDeque;
use std::future::IntoFuture;

use cairn_shared::assignment::{RunExecution, StopExecution};
use cairn_shared::codec::Envelope;
use cairn_shared::{Assignment, DesiredState, Event, EventId, NodeId, Seq, Timestamp};
use cairn_streams::{Appended, Outgoing, Publisher, ReadFrom, Reader, StreamKind};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::decider::State;
use crate::error::Result;
use crate::retry::pause;
use cairn_streams::backoff::Backoff;
use prometheus_client::metrics::histogram::Histogram;

/// A batch of events the decider has just stored, `first` being the sequence of the
/// first: the dispatcher can queue their work without reading them back.
pub struct Decided {
    pub first: Seq,
    pub events: Vec<Envelope<Event>>,
}

/// The decider's side of the hand-off; the dispatcher holds the receiver.
pub type Handoff = tokio::sync::mpsc::Sender<Decided>;

/// Batches the hand-off holds for a dispatcher that is busy; beyond them the decider drops
/// its batches and the dispatcher reads them from the stream.
pub const HANDOFF_BATCHES: usize = 64;

/// The work an event puts on a node's subject, if any.
pub fn assignment_for(
    event: &Event,
    id: EventId,
    at: Timestamp,
) -> Option<(NodeId, Envelope<Assignment>)> {
    let (node, body): (NodeId, Assignment) = match event {
        Event::ExecutionAssigned(e) => (
            e.node.clone(),
            RunExecution {
                execution: e.execution,
                attempt: e.attempt,
                job: e.job,
                job_name: e.job_name.clone(),
                version: e.version,
                task: e.task.clone(),
                delay: e.delay,
                health: e.health,
            }
            .into(),
        ),
        Event::ExecutionStopRequested(e) => (
            e.node.clone(),
            StopExecution {
                execution: e.execution,
                attempt: e.attempt,
                reason: e.reason.clone(),
            }
            .into(),
        ),
        _ => return None,
    };
    Some((node, Envelope::new(id, None, at, body)))
}

/// Everything not finished in `state`, as the work its node should hold.
pub fn pending_work(state: &State) -> Vec<(NodeId, Envelope<Assignment>)> {
    let now = Timestamp::now();
    let mut work = Vec::new();
    for execution in state.executions().filter(|e| !e.state.is_terminal()) {
        let Some(job) = state.job(execution.job) else {
            continue;
        };
        // An earlier version's execution still meant to run belongs to a rollout that has
        // not replaced it yet: it runs as its own version's spec says.
        let spec = job.versions.get(&execution.version);
        let body: Assignment = match (execution.desired, spec) {
            (DesiredState::Running, Some(spec)) => RunExecution {
                execution: execution.id,
                attempt: execution.attempt,
                job: job.id,
                job_name: job.name.clone(),
                version: execution.version,
                task: spec.task.clone(),
                delay: execution.delay,
                health: spec.update.map(|u| u.health()),
            }
            .into(),
            // A version the state does not know: its stop is what is owed.
            (DesiredState::Running, None) => StopExecution {
                execution: execution.id,
                attempt: execution.attempt,
                reason: format!("replaced by version {}", job.version),
            }
            .into(),
            (DesiredState::Stopped, _) => StopExecution {
                execution: execution.id,
                attempt: execution.attempt,
                reason: execution
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| "stop requested".into()),
            }
            .into(),
        };
        work.push((
            execution.node.clone(),
            Envelope::new(EventId::generate(), None, now, body),
        ));
    }
    work
}

/// Publishes work in order with a bounded window of acks in flight, resending from the
/// first failure (message ids make resends harmless) until it is stored or shutdown.
struct Sender {
    publisher: Publisher,
    /// Each ack stays here until it resolves, so waiting on the oldest can be interrupted
    /// (by a new event) without losing track of it; with when its event was decided.
    in_flight: VecDeque<(
        Outgoing,
        Option<Timestamp>,
        BoxFuture<'static, cairn_streams::Result<Appended>>,
    )>,
    /// Decided → queued on the node's subject, in seconds (`/metrics`).
    queued: Histogram,
}

impl Sender {
    const WINDOW: usize = 256;

    /// Queues `out`; `decided` is when its event was decided, for the latency measured
    /// once it is stored (none for work queued again at start).
    async fn send(
        &mut self,
        out: Outgoing,
        decided: Option<Timestamp>,
        shutdown: &CancellationToken,
    ) -> bool {
        while self.in_flight.len() >= Self::WINDOW {
            if !self.settle_oldest(shutdown).await {
                return false;
            }
        }
        self.push(out, decided, shutdown).await
    }

    async fn push(
        &mut self,
        out: Outgoing,
        decided: Option<Timestamp>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::default();
        loop {
            match self.publisher.send(out.clone()).await {
                Ok(pending) => {
                    self.in_flight
                        .push_back((out, decided, pending.into_future()));
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, subject = %out.subject, "dispatch failed; retrying");
                    if !pause(shutdown, &mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    /// The oldest ack, once it resolves. Cancel-safe: the entry leaves the window only
    /// after its ack has resolved, with no await in between.
    #[allow(clippy::type_complexity)]
    async fn next_ack(
        &mut self,
    ) -> Option<(Outgoing, Option<Timestamp>, cairn_streams::Result<Appended>)> {
        let (_, _, pending) = self.in_flight.front_mut()?;
        let result = pending.await;
        let (out, decided, _) = self.in_flight.pop_front()?;
        Some((out, decided, result))
    }

    /// A failed ack resends that message and everything after it, in order.
    async fn handle_ack(
        &mut self,
        out: Outgoing,
        decided: Option<Timestamp>,
        result: cairn_streams::Result<Appended>,
        shutdown: &CancellationToken,
    ) -> bool {
        let Err(e) = result else {
            if let Some(decided) = decided {
                let ms = Timestamp::now().0.saturating_sub(decided.0);
                self.queued.observe(ms as f64 / 1000.0);
            }
            return true;
        };
        tracing::warn!(error = %e, subject = %out.subject, "dispatch not acknowledged; resending");
        let rest: Vec<(Outgoing, Option<Timestamp>)> = std::iter::once((out, decided))
            .chain(self.in_flight.drain(..).map(|(o, d, _)| (o, d)))
            .collect();
        let mut backoff = Backoff::default();
        if !pause(shutdown, &mut backoff).await {
            return false;
        }
        for (out, decided) in rest {
            if !self.push(out, decided, shutdown).await {
                return false;
            }
        }
        true
    }

    async fn settle_oldest(&mut self, shutdown: &CancellationToken) -> bool {
        match self.next_ack().await {
            None => true,
            Some((out, decided, result)) => self.handle_ack(out, decided, result, shutdown).await,
        }
    }

    async fn flush(&mut self, shutdown: &CancellationToken) -> bool {
        while !self.in_flight.is_empty() {
            if !self.settle_oldest(shutdown).await {
                return false;
            }
        }
        true
    }
}

/// Runs the dispatcher: re-queues `pending`, then follows the event stream after `from`,
/// taking batches from `decided` whenever one continues where dispatch stands.
pub async fn run(
    publisher: Publisher,
    reader: Reader,
    pending: Vec<(NodeId, Envelope<Assignment>)>,
    from: Seq,
    mut decided: tokio::sync::mpsc::Receiver<Decided>,
    queued: Histogram,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut sender = Sender {
        publisher,
        in_flight: VecDeque::new(),
        queued,
    };
    let requeued = pending.len();
    for (node, envelope) in pending {
        if !sender
            .send(Outgoing::assignment(&node, &envelope)?, None, &shutdown)
            .await
        {
            return Ok(());
        }
    }
    if !sender.flush(&shutdown).await {
        return Ok(());
    }
    tracing::info!(
        requeued,
        "dispatcher following the event stream from {}",
        from.next()
    );
    // The next sequence to dispatch: everything before it has been queued.
    let mut next = from.next();
    let mut backoff = Backoff::default();
    loop {
        let events = match reader
            .read(StreamKind::Events, ReadFrom::Seq(next), None)
            .await
        {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "dispatcher cannot read the event stream; retrying");
                if !pause(&shutdown, &mut backoff).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut events = std::pin::pin!(events);
        loop {
            let settling = !sender.in_flight.is_empty();
            // Settle acks whenever the stream is quiet, so nothing waits in the window.
            let item = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(batch) = decided.recv() => {
                    let first = batch.first;
                    for (i, envelope) in batch.events.into_iter().enumerate() {
                        let seq = Seq(first.0 + i as u64);
                        if seq != next {
                            // Already queued from the stream, or a gap only the stream fills.
                            if seq > next { break; }
                            continue;
                        }
                        next = seq.next();
                        if !dispatch(&mut sender, &envelope, &shutdown).await? {
                            return Ok(());
                        }
                    }
                    continue;
                }
                acked = sender.next_ack(), if settling => {
                    if let Some((out, at, result)) = acked
                        && !sender.handle_ack(out, at, result, &shutdown).await
                    {
                        return Ok(());
                    }
                    continue;
                }
                item = events.next() => item,
            };
            let raw = match item {
                Some(Ok(raw)) => {
                    // The read works: the next break pauses from the start again.
                    backoff.reset();
                    raw
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "event stream read failed; resuming");
                    break;
                }
                None => break,
            };
            if raw.seq < next {
                continue; // queued already, from the decider's hand-off
            }
            next = raw.seq.next();
            let Ok(envelope) = Envelope::<Event>::decode(&raw.payload) else {
                continue; // the projector records undecodable events; nothing to dispatch
            };
            if !dispatch(&mut sender, &envelope, &shutdown).await? {
                return Ok(());
            }
        }
        if !pause(&shutdown, &mut backoff).await {
            return Ok(());
        }
    }
}

/// Queues the work `envelope`'s event puts on a node, if any; false if shutdown came first.
async fn dispatch(
    sender: &mut Sender,
    envelope: &Envelope<Event>,
    shutdown: &CancellationToken,
) -> Result<bool> {
    match assignment_for(&envelope.body, envelope.id, envelope.at) {
        Some((node, work)) => Ok(sender
            .send(
                Outgoing::assignment(&node, &work)?,
                Some(envelope.at),
                shutdown,
            )
            .await),
        None => Ok(true),
    }
}
