//! Simulated edges: each a real NATS connection that says hello, heartbeats, pulls its own
//! durable consumer with a long-lived stream, and reports like a real edge — `accepted`,
//! `running`, then `completed` — for a no-op task, without a local store or a process.
//! What a real edge adds (its redb file, its outbox, process start-up) is measured by the
//! reconnect scenario against a real edge agent.
//!
//! A task whose program is `true` completes at once; any other keeps running until the
//! orchestrator stops it (a daemon's task, say).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::jetstream;
use cairn_shared::codec::Envelope;
use cairn_shared::report::{ExecutionUpdate, NodeHello};
use cairn_shared::{
    Assignment, ExecutionId, ExecutionState, Heartbeat, Liveness, NodeId, Report, ReportId,
    Timestamp,
};
use cairn_streams::{Outgoing, Publisher, StreamKind, subjects};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::watch::Watch;

/// Connections opened at once while a fleet starts.
const CONNECTING_AT_ONCE: usize = 64;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// When an assignment was queued (the server stored the work message) and when its edge
/// received it, both in ns since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    pub queued: u64,
    pub received: u64,
}

/// Execution → the receipt of its assignment.
pub type Receipts = Arc<Mutex<HashMap<ExecutionId, Receipt>>>;

/// A started fleet; its edges stop when it is dropped.
pub struct Fleet {
    pub nodes: Vec<NodeId>,
    clients: Vec<async_nats::Client>,
    pub receipts: Receipts,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Fleet {
    /// Connects `count` edges, waits until the orchestrator has registered them all (so
    /// their consumers exist), and runs them.
    pub async fn start(
        url: &str,
        watch: &Watch,
        prefix: &str,
        count: usize,
        capacity: u32,
        record_receipts: bool,
    ) -> Result<Self> {
        let mut fleet = Self::connect(url, prefix, count, capacity).await?;
        fleet.registered(watch).await?;
        fleet.run(record_receipts).await?;
        Ok(fleet)
    }

    /// Waits until the orchestrator has registered every edge of this fleet.
    async fn registered(&self, watch: &Watch) -> Result<()> {
        let mine: Vec<NodeId> = self.nodes.clone();
        watch
            .until("every node registered", Duration::from_secs(180), |s| {
                mine.iter().all(|n| s.registered.contains(n))
            })
            .await
    }

    /// Connects `count` edges named `<prefix>-<n>` and has each say hello with label
    /// `role=edge` and `capacity`; returns once every hello is stored.
    pub async fn connect(url: &str, prefix: &str, count: usize, capacity: u32) -> Result<Self> {
        let nodes: Vec<NodeId> = (0..count)
            .map(|i| NodeId::new(format!("{prefix}-{i:05}")))
            .collect::<Result<_, _>>()?;
        let clients: Vec<async_nats::Client> = futures::stream::iter(nodes.iter().cloned())
            .map(|node| {
                let url = url.to_owned();
                async move {
                    let client = cairn_streams::connect(&url, None, node.as_str()).await?;
                    let hello: Report = NodeHello {
                        node: node.clone(),
                        labels: [("role".to_owned(), "edge".to_owned())].into(),
                        capacity: Some(capacity),
                        resources: None,
                    }
                    .into();
                    let envelope =
                        Envelope::new(ReportId::generate(), None, Timestamp::now(), hello);
                    Publisher::new(cairn_streams::jetstream(client.clone()))
                        .append(Outgoing::report(&node, &envelope)?)
                        .await?;
                    anyhow::Ok(client)
                }
            })
            .buffered(CONNECTING_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        Ok(Self {
            nodes,
            clients,
            receipts: Arc::default(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
        })
    }

    /// Starts every edge's heartbeat and pull. Their consumers must exist by now (the
    /// orchestrator creates one before it records the node registered).
    pub async fn run(&mut self, record_receipts: bool) -> Result<()> {
        let edges: Vec<SimEdge> = self
            .nodes
            .iter()
            .zip(&self.clients)
            .map(|(node, client)| SimEdge {
                node: node.clone(),
                client: client.clone(),
                receipts: record_receipts.then(|| Arc::clone(&self.receipts)),
            })
            .collect();
        let bound: Vec<(SimEdge, jetstream::consumer::PullConsumer)> = futures::stream::iter(edges)
            .map(|edge| async move {
                let consumer = edge.consumer().await?;
                anyhow::Ok((edge, consumer))
            })
            .buffered(CONNECTING_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        for (edge, consumer) in bound {
            self.tasks.spawn(edge.clone().beat(self.stop.clone()));
            self.tasks.spawn(edge.pull(consumer, self.stop.clone()));
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.abort_all();
    }
}

#[derive(Clone)]
struct SimEdge {
    node: NodeId,
    client: async_nats::Client,
    receipts: Option<Receipts>,
}

impl SimEdge {
    async fn consumer(&self) -> Result<jetstream::consumer::PullConsumer> {
        let js = cairn_streams::jetstream(self.client.clone());
        let stream = js
            .get_stream_no_info(StreamKind::assignments_of(&self.node).name())
            .await?;
        stream
            .get_consumer(&subjects::node_consumer(&self.node))
            .await
            .map_err(|e| anyhow::anyhow!("{}'s consumer: {e}", self.node))
    }

    async fn beat(self, stop: CancellationToken) {
        let subject = subjects::heartbeat(&self.node);
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let beat: Liveness = Heartbeat {
                node: self.node.clone(),
                running: 0,
                capacity: Some(0),
                outbox: 0,
                executions: Vec::new(),
                bound: true,
            }
            .into();
            if let Ok(payload) =
                Envelope::new(ReportId::generate(), None, Timestamp::now(), beat).encode()
            {
                let _ = self.client.publish(subject.clone(), payload.into()).await;
            }
        }
    }

    /// Pulls and handles assignments until `stop`; a failure ends this edge only.
    async fn pull(self, consumer: jetstream::consumer::PullConsumer, stop: CancellationToken) {
        if let Err(e) = self.pull_inner(consumer, stop).await {
            tracing::warn!(node = %self.node, error = %e, "simulated edge stopped");
        }
    }

    async fn pull_inner(
        &self,
        consumer: jetstream::consumer::PullConsumer,
        stop: CancellationToken,
    ) -> Result<()> {
        let publisher = Publisher::new(cairn_streams::jetstream(self.client.clone()));
        let mut messages = consumer.messages().await.context("pulling")?;
        let mut running: HashSet<(ExecutionId, u32)> = HashSet::new();
        let mut acks = FuturesUnordered::new();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                Some(done) = acks.next(), if !acks.is_empty() => {
                    let done: cairn_streams::Result<cairn_streams::Appended> = done;
                    done.context("a report was not stored")?;
                    continue;
                }
                m = messages.next() => match m {
                    Some(m) => m.map_err(|e| anyhow::anyhow!("pull: {e}"))?,
                    None => return Ok(()),
                },
            };
            let envelope = Envelope::<Assignment>::decode(&message.payload)?;
            if let (Some(receipts), Assignment::RunExecution(run)) =
                (&self.receipts, &envelope.body)
            {
                let received = now_nanos();
                let queued = message.info().map_or(0, |i| {
                    u64::try_from(i.published.unix_timestamp_nanos()).unwrap_or(0)
                });
                receipts
                    .lock()
                    .unwrap()
                    .insert(run.execution, Receipt { queued, received });
            }
            let updates: Vec<(ExecutionId, u32, ExecutionState)> = match envelope.body {
                Assignment::RunExecution(run) => {
                    let finishes = run.task.command.first().is_some_and(|p| p == "true");
                    if finishes {
                        [
                            ExecutionState::Accepted,
                            ExecutionState::Running,
                            ExecutionState::Completed,
                        ]
                        .map(|s| (run.execution, run.attempt, s))
                        .to_vec()
                    } else {
                        running.insert((run.execution, run.attempt));
                        [ExecutionState::Accepted, ExecutionState::Running]
                            .map(|s| (run.execution, run.attempt, s))
                            .to_vec()
                    }
                }
                Assignment::StopExecution(stop) => {
                    if running.remove(&(stop.execution, stop.attempt)) {
                        vec![(stop.execution, stop.attempt, ExecutionState::Stopped)]
                    } else {
                        vec![]
                    }
                }
            };
            // Published in order on one connection, so stored in order; the assignment
            // is acked once the first report is stored, as a real edge acks once it has
            // recorded the assignment.
            let mut first = None;
            for (execution, attempt, state) in updates {
                let report: Report = ExecutionUpdate {
                    node: self.node.clone(),
                    execution,
                    attempt,
                    state,
                    exit_code: (state == ExecutionState::Completed).then_some(0),
                    reason: None,
                }
                .into();
                let envelope = Envelope::new(ReportId::generate(), None, Timestamp::now(), report);
                let pending = publisher
                    .send(Outgoing::report(&self.node, &envelope)?)
                    .await?;
                match first {
                    None => first = Some(pending),
                    Some(_) => acks.push(pending.into_future()),
                }
            }
            if let Some(first) = first {
                first.await.context("the first report was not stored")?;
            }
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
    }
}
