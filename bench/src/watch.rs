//! Follows the event stream as the orchestrator writes it and keeps what the scenarios
//! wait for and time: registrations, assignments and execution states, each with the
//! time the server stored it (nanoseconds, the server's clock on this same machine).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use cairn_shared::codec::Envelope;
use cairn_shared::{Event, ExecutionId, ExecutionState, JobId, JobState, NodeId, Seq};
use cairn_streams::StreamKind;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the event stream has said so far.
#[derive(Default)]
pub struct Seen {
    pub last_seq: Seq,
    pub registered: HashSet<NodeId>,
    /// Execution → when its `ExecutionAssigned` was stored (ns since the epoch).
    pub assigned: HashMap<ExecutionId, u64>,
    /// Execution → its latest state and when that was stored.
    pub states: HashMap<ExecutionId, (ExecutionState, u64)>,
    /// Executions that reached each state at least once.
    pub reached: HashMap<ExecutionState, usize>,
    /// Job → its latest state and the sequence of that event.
    pub jobs: HashMap<JobId, (JobState, Seq)>,
}

/// A running follower of the event stream.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
}

impl Watch {
    /// Follows the stream from its current end.
    pub async fn start(js: &jetstream::Context) -> Result<Self> {
        let mut stream = js.get_stream(StreamKind::Events.name()).await?;
        let from = stream.info().await?.state.last_sequence + 1;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (task_seen, task_changed, task_stop) =
            (Arc::clone(&seen), Arc::clone(&changed), stop.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = task_stop.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(Ok(message)) = message else {
                    tracing::warn!("the event watch ended");
                    return;
                };
                let Ok(info) = message.info() else { continue };
                let seq = Seq(info.stream_sequence);
                let at = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
                let Ok(envelope) = Envelope::<Event>::decode(&message.payload) else {
                    continue;
                };
                task_seen.lock().unwrap().note(seq, at, envelope.body);
                task_changed.notify_waiters();
            }
        });
        Ok(Self {
            seen,
            changed,
            stop,
        })
    }

    /// Looks at what was seen.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    /// Waits until `done` holds, or fails after `deadline` saying what was awaited.
    pub async fn until(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let notified = self.changed.notified();
            if self.with(&done) {
                return Ok(());
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                bail!("timed out after {deadline:?} waiting for {what}");
            }
            // Woken by the next event; the timeout only bounds a silent wait.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Seen {
    fn note(&mut self, seq: Seq, at: u64, event: Event) {
        self.last_seq = seq;
        match event {
            Event::NodeRegistered(e) => {
                self.registered.insert(e.node);
            }
            Event::ExecutionAssigned(e) => {
                self.assigned.insert(e.execution, at);
                self.states
                    .insert(e.execution, (ExecutionState::Pending, at));
            }
            Event::ExecutionStateChanged(e) => {
                *self.reached.entry(e.state).or_default() += 1;
                self.states.insert(e.execution, (e.state, at));
            }
            Event::JobStateChanged(e) => {
                self.jobs.insert(e.job, (e.state, seq));
            }
            _ => {}
        }
    }

    pub fn reached(&self, state: ExecutionState) -> usize {
        self.reached.get(&state).copied().unwrap_or(0)
    }
}
