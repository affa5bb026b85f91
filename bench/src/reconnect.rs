//! The reconnect scenario: a node comes back to work that waited for it. Measures, for a
//! real edge agent, the time from its start to the first waiting assignment received, and
//! the rate at which it drains a backlog (received, recorded durably, acked) — beside the
//! same backlog drained by a bare pull consumer that only acks, and beside starting the
//! backlog's processes alone (no NATS, no store), in the same run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, consumer::PullConsumer};
use cairn_edge::{Edge, EdgeConfig};
use cairn_shared::assignment::RunExecution;
use cairn_shared::codec::Envelope;
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::{Assignment, EventId, ExecutionId, JobId, NodeId, Timestamp};
use cairn_streams::{Outgoing, Pipeline, Publisher, StreamKind, subjects};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::micros;
use crate::report::{Figure, Scenario};
use crate::stack::Nats;

fn work(node: &NodeId, program: &str) -> Outgoing {
    let task = TaskSpec {
        engine: Engine::Exec,
        command: vec![program.to_owned()],
        args: vec![],
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    };
    let body: Assignment = RunExecution {
        execution: ExecutionId::generate(),
        attempt: 1,
        job: JobId::generate(),
        job_name: "bench".into(),
        version: 1,
        task,
        delay: None,
        health: None,
    }
    .into();
    let envelope = Envelope::new(EventId::generate(), None, Timestamp::now(), body);
    Outgoing::assignment(node, &envelope).expect("bench work encodes")
}

/// Queues `count` assignments for `node`, as a dispatcher would while it is away.
async fn queue(js: &jetstream::Context, node: &NodeId, count: u64, program: &str) -> Result<()> {
    cairn_streams::ensure_node_consumer(js, node).await?;
    let mut pipeline = Pipeline::new(Publisher::new(js.clone()), Pipeline::DEFAULT_WINDOW);
    for _ in 0..count {
        if let Some(ack) = pipeline.send(work(node, program)).await? {
            ack?;
        }
    }
    while let Some(ack) = pipeline.next().await {
        ack?;
    }
    Ok(())
}

async fn consumer(js: &jetstream::Context, node: &NodeId) -> Result<PullConsumer> {
    let stream = js
        .get_stream_no_info(StreamKind::assignments_of(node).name())
        .await?;
    stream
        .get_consumer(&subjects::node_consumer(node))
        .await
        .map_err(|e| anyhow::anyhow!("binding {node}'s consumer: {e}"))
}

/// Waits until `node`'s consumer has nothing pending or unacked.
async fn drained(js: &jetstream::Context, node: &NodeId, deadline: Duration) -> Result<()> {
    let mut consumer = consumer(js, node).await?;
    let start = Instant::now();
    loop {
        let info = consumer.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        ensure!(
            start.elapsed() < deadline,
            "backlog not drained within {deadline:?}: {} left",
            info.num_pending + info.num_ack_pending as u64
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A bare pull consumer that acks each message: the floor of any drain.
async fn raw_drain(
    js: &jetstream::Context,
    node: &NodeId,
    count: u64,
) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let consumer = consumer(js, node).await?;
    let mut messages = consumer.messages().await?;
    let mut first = None;
    for _ in 0..count {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("raw drain stalled")?
            .context("raw drain ended")??;
        first.get_or_insert_with(|| started.elapsed());
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok((first.unwrap_or_default(), started.elapsed()))
}

/// Starts a real edge for `node` and returns the time to its first received assignment
/// and, once `count` were received, the time to drain them all.
async fn edge_drain(
    url: &str,
    js: &jetstream::Context,
    node: &NodeId,
    count: u64,
) -> Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let mut config = EdgeConfig::new(node.clone(), dir.path());
    config.capacity = Some(u32::try_from(count).unwrap_or(u32::MAX));
    let edge = Edge::open(config).await?;
    let handle = edge.handle();
    let client = cairn_streams::connect(url, None, "cairn-bench-edge").await?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(edge.run(client, shutdown.clone()));
    let first = loop {
        if handle.received() >= 1 {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no assignment reached the edge"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    drained(js, node, Duration::from_secs(120)).await?;
    let drain = started.elapsed();
    shutdown.cancel();
    task.await.context("edge task")??;
    Ok((first, drain))
}

/// Processes started at once by the process baseline: the fastest of 16, 64, 256 and
/// 1,024 on the development machine.
const STARTING_AT_ONCE: usize = 64;

/// Starts `program` `count` times, as the edge starts a task (no stdin, output piped and
/// read to its end, a process group of its own), [`STARTING_AT_ONCE`] at a time, and
/// waits for each: the floor of a drain that starts a process per assignment. A program
/// that cannot start fails each time, as it does on the edge.
async fn raw_starts(program: &str, count: u64) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|_| async move {
            let child = tokio::process::Command::new(program)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .spawn();
            let Ok(mut child) = child else { return };
            // Both at once, as the edge pumps them: a task filling one pipe while the
            // other is read would otherwise never end.
            tokio::join!(read_all(child.stdout.take()), read_all(child.stderr.take()));
            let _ = child.wait().await;
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .collect::<()>()
        .await;
    started.elapsed()
}

/// Reads `pipe` to its end, discarding what it says.
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) {
    use tokio::io::AsyncReadExt;
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut Vec::new()).await;
    }
}

/// `program` is what every assignment runs (`true` by default; a path that does not exist
/// measures the edge without process start-up). The raw drains read cairn's own
/// assignment streams, so they have its replicas.
pub async fn run(nats: &Nats, backlog: u64, trials: u32, program: &str) -> Result<Scenario> {
    let url = nats.url.as_str();
    let client = cairn_streams::connect(url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client);
    nats.fresh_streams(&js).await?;

    // Time to first: many returns to a small backlog.
    let mut first_edge = Histogram::<u64>::new(3)?;
    let mut first_raw = Histogram::<u64>::new(3)?;
    for trial in 0..trials {
        let node = NodeId::new(format!("first-{trial}"))?;
        queue(&js, &node, 20, program).await?;
        let (first, _) = edge_drain(url, &js, &node, 20).await?;
        first_edge.record(micros(first))?;
        let raw = NodeId::new(format!("first-raw-{trial}"))?;
        queue(&js, &raw, 20, program).await?;
        let (first, _) = raw_drain(&js, &raw, 20).await?;
        first_raw.record(micros(first))?;
    }

    // Drain: one return to a large backlog.
    eprintln!("reconnect: queueing {backlog} assignments for each of two nodes");
    let raw = NodeId::new("drain-raw")?;
    queue(&js, &raw, backlog, program).await?;
    let (_, raw_time) = raw_drain(&js, &raw, backlog).await?;
    let node = NodeId::new("drain-edge")?;
    queue(&js, &node, backlog, program).await?;
    eprintln!("reconnect: an edge returns to its backlog (it runs `{program}` for each)");
    let (_, edge_time) = edge_drain(url, &js, &node, backlog).await?;
    eprintln!("reconnect: starting `{program}` {backlog} times without an edge");
    let starts_time = raw_starts(program, backlog).await;

    let rate = |d: Duration| backlog as f64 / d.as_secs_f64();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Scenario {
        name: "reconnect".into(),
        notes: format!(
            "{trials} returns to a 20-assignment backlog; one return to {backlog} (each runs `{program}`)"
        ),
        figures: vec![
            Figure::latency(
                "raw first message after bind, p50",
                ms(&first_raw, 0.5),
                None,
            ),
            Figure::latency(
                "raw first message after bind, p99",
                ms(&first_raw, 0.99),
                None,
            ),
            Figure::latency(
                "edge start → first assignment, p50",
                ms(&first_edge, 0.5),
                Some(ms(&first_raw, 0.5)),
            ),
            Figure::latency(
                "edge start → first assignment, p99",
                ms(&first_edge, 0.99),
                Some(ms(&first_raw, 0.99)),
            ),
            Figure::rate("raw drain (pull + ack)", rate(raw_time), None),
            Figure::rate(
                "edge drain (record durably, confirmed ack)",
                rate(edge_time),
                Some(rate(raw_time)),
            ),
            Figure::rate_of(
                "starts/s",
                &format!("raw process starts (`{program}`, {STARTING_AT_ONCE} at once)"),
                rate(starts_time),
                None,
            ),
            Figure::rate(
                "edge drain, against the process starts alone",
                rate(edge_time),
                Some(rate(starts_time)),
            ),
        ],
    })
}
