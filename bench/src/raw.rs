//! The raw JetStream baseline for a fleet: the least work a dispatch can cost. Messages
//! are published to per-node subjects of work-queue streams sharded as cairn shards its
//! assignments ([`Shard::COUNT`] streams), and received and acked through each node's
//! durable pull consumer (kept in memory, as cairn keeps them), with the same client
//! library, servers, stream replicas and number of nodes as the cairn figures they are
//! compared with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use cairn_streams::Topology;
use cairn_streams::subjects::Shard;

use crate::fleet::now_nanos;
use crate::stack::Nats;

const SHARDS: usize = Shard::COUNT as usize;

fn stream_name(shard: usize) -> String {
    format!("BENCH_RAW_{shard}")
}

/// Deletes every raw stream (and with it its consumers), trying each; the first failure.
async fn delete_streams(js: &jetstream::Context) -> Result<()> {
    let mut first_error = None;
    for shard in 0..SHARDS {
        if let Err(e) = js.delete_stream(stream_name(shard)).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}

fn subject(node: usize) -> String {
    format!("bench.raw.{}.{node}", node % SHARDS)
}

/// A raw fleet: one connection and one durable consumer per node.
pub struct RawFleet {
    js: jetstream::Context,
    consumers: Vec<(async_nats::Client, PullConsumer)>,
    /// How long creating the consumers took.
    pub created_in: Duration,
}

/// Consumers created at once, as the orchestrator creates them for a round of
/// registrations; connections opened at once, as the simulated fleet opens them.
const CREATING_AT_ONCE: usize = cairn_streams::topology::NODE_CONSUMERS_AT_ONCE;
const CONNECTING_AT_ONCE: usize = 64;

impl RawFleet {
    pub async fn start(nats: &Nats, nodes: usize) -> Result<Self> {
        let url = nats.url.as_str();
        let client = cairn_streams::connect(url, None, "cairn-bench-raw").await?;
        let js = cairn_streams::jetstream(client);
        // Left by an earlier run, if any.
        let _ = delete_streams(&js).await;
        let mut streams = Vec::with_capacity(SHARDS);
        for shard in 0..SHARDS {
            streams.push(
                js.create_stream(stream::Config {
                    name: stream_name(shard),
                    subjects: vec![format!("bench.raw.{shard}.*")],
                    // Laid out as cairn lays out its assignment shards: the same retention
                    // and replicas for this run's servers, R1 consumers below.
                    retention: Topology {
                        replicas: nats.replicas,
                        ..Topology::default()
                    }
                    .assignment_retention(),
                    storage: stream::StorageType::File,
                    num_replicas: nats.replicas,
                    max_consumers: i32::try_from(nodes + 10).unwrap_or(i32::MAX),
                    ..Default::default()
                })
                .await?,
            );
        }
        let started = Instant::now();
        futures::stream::iter(0..nodes)
            .map(|node| {
                let stream = streams[node % SHARDS].clone();
                async move {
                    stream
                        .create_consumer(jetstream::consumer::pull::Config {
                            durable_name: Some(format!("raw-{node}")),
                            filter_subject: subject(node),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            // In memory and on one server, as cairn keeps its node
                            // consumers.
                            memory_storage: true,
                            num_replicas: 1,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                        .map_err(|e| anyhow::anyhow!("creating a raw consumer: {e}"))
                }
            })
            .buffer_unordered(CREATING_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        let created_in = started.elapsed();
        let consumers = futures::stream::iter(0..nodes)
            .map(|node| async move {
                let client = cairn_streams::connect(url, None, "cairn-bench-raw-node").await?;
                let js = cairn_streams::jetstream(client.clone());
                let consumer: PullConsumer = js
                    .get_stream_no_info(stream_name(node % SHARDS))
                    .await?
                    .get_consumer(&format!("raw-{node}"))
                    .await
                    .map_err(|e| anyhow::anyhow!("binding a raw consumer: {e}"))?;
                anyhow::Ok((client, consumer))
            })
            .buffered(CONNECTING_AT_ONCE)
            .try_collect()
            .await?;
        Ok(Self {
            js,
            consumers,
            created_in,
        })
    }

    /// Starts every node's pull; each message's payload carries its send time, and the
    /// receive latency goes into the returned histogram.
    async fn receive(&self) -> Result<Receiving> {
        let received = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
        let changed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        for (_, consumer) in &self.consumers {
            let mut messages = consumer.messages().await?;
            let (received, latencies, changed) = (
                Arc::clone(&received),
                Arc::clone(&latencies),
                Arc::clone(&changed),
            );
            tasks.spawn(async move {
                while let Some(Ok(message)) = messages.next().await {
                    let now = now_nanos();
                    if let Ok(bytes) =
                        <[u8; 8]>::try_from(&message.payload[..8.min(message.payload.len())])
                    {
                        let sent = u64::from_le_bytes(bytes);
                        let _ = latencies
                            .lock()
                            .unwrap()
                            .record(now.saturating_sub(sent) / 1_000);
                    }
                    if message.ack().await.is_err() {
                        return;
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                    changed.notify_waiters();
                }
            });
        }
        Ok(Receiving {
            received,
            latencies,
            changed,
            _tasks: tasks,
        })
    }

    /// Publishes the `i`th message, to node `i` modulo the fleet, carrying its send time.
    async fn publish(&self, i: u64) -> Result<jetstream::context::PublishAckFuture> {
        let node = usize::try_from(i).unwrap_or(0) % self.consumers.len();
        Ok(self
            .js
            .publish(subject(node), now_nanos().to_le_bytes().to_vec().into())
            .await?)
    }

    /// Publishes `total` messages round-robin over the nodes, as fast as the window
    /// allows, and returns how long until every one was received and acked.
    pub async fn throughput(&self, total: u64) -> Result<Duration> {
        self.throughput_within(total, Duration::from_secs(120))
            .await
    }

    /// [`RawFleet::throughput`], giving up after `deadline`.
    pub async fn throughput_within(&self, total: u64, deadline: Duration) -> Result<Duration> {
        let receiving = self.receive().await?;
        let started = Instant::now();
        let mut pending = futures::stream::FuturesOrdered::new();
        for i in 0..total {
            pending.push_back(self.publish(i).await?.into_future());
            if pending.len() >= 256 {
                pending.next().await.context("publish")??;
            }
        }
        while let Some(ack) = pending.next().await {
            ack?;
        }
        receiving.wait(total, deadline).await?;
        Ok(started.elapsed())
    }

    /// Publishes at `rate` per second for `duration` and returns the publish → receive
    /// latency histogram (µs).
    pub async fn latency(&self, rate: u64, duration: Duration) -> Result<Histogram<u64>> {
        let receiving = self.receive().await?;
        let total = (rate as f64 * duration.as_secs_f64()) as u64;
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut pending = futures::stream::FuturesUnordered::new();
        for i in 0..total {
            ticks.tick().await;
            pending.push(self.publish(i).await?.into_future());
            while let Some(ack) = futures::FutureExt::now_or_never(pending.next()).flatten() {
                ack?;
            }
        }
        while let Some(ack) = pending.next().await {
            ack?;
        }
        receiving.wait(total, Duration::from_secs(60)).await?;
        let histogram = receiving.latencies.lock().unwrap().clone();
        Ok(histogram)
    }
}

impl RawFleet {
    /// Deletes the raw streams and their consumers, and waits until they are gone.
    pub async fn close(self) -> Result<()> {
        delete_streams(&self.js).await
    }
}

impl Drop for RawFleet {
    fn drop(&mut self) {
        let js = self.js.clone();
        tokio::spawn(async move {
            let _ = delete_streams(&js).await;
        });
    }
}

struct Receiving {
    received: Arc<AtomicU64>,
    latencies: Arc<std::sync::Mutex<Histogram<u64>>>,
    changed: Arc<Notify>,
    _tasks: JoinSet<()>,
}

impl Receiving {
    async fn wait(&self, total: u64, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let notified = self.changed.notified();
            let received = self.received.load(Ordering::Relaxed);
            if received >= total {
                return Ok(());
            }
            ensure!(
                started.elapsed() < deadline,
                "raw fleet received {received} of {total} within {deadline:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}
