//! The raw cost of the way cairn records a decision: an atomic batch appended to a stream
//! configured as the event stream, beside a single publish to it, one at a time on an
//! otherwise idle server. It is the floor under the dispatch figures: work can be queued
//! only once the batch that decided it is acknowledged, and the acknowledgement leaves the
//! server some time after the batch was stored.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream;
use cairn_shared::Seq;
use cairn_streams::{Expect, Outgoing, Publisher, StreamKind, Topology};
use hdrhistogram::Histogram;

use crate::fleet::now_nanos;
use crate::lifecycle::micros;

const STREAM: &str = "BENCH_RAW_LOG";

/// Events per batch: a single-execution deploy decides four.
pub const EVENTS: usize = 4;

/// Bytes per event, about an encoded `ExecutionAssigned`.
const EVENT_BYTES: usize = 256;

/// Round trips (µs) of each way to append, measured alternately.
pub struct Appends {
    /// An atomic batch of [`EVENTS`] messages, sent → acknowledged.
    pub batch: Histogram<u64>,
    /// The batch's last message stored (the server's clock) → its acknowledgement received.
    pub stored_to_ack: Histogram<u64>,
    /// One message, sent → acknowledged.
    pub single: Histogram<u64>,
}

/// Appends `samples` atomic batches and as many single messages, alternately, paced so
/// each meets an idle server, to a stream with the event stream's settings in `topology`
/// (its replicas included).
pub async fn measure(
    js: &jetstream::Context,
    topology: &Topology,
    samples: usize,
) -> Result<Appends> {
    let _ = js.delete_stream(STREAM).await;
    let mut config = topology.config(StreamKind::Events);
    config.name = STREAM.into();
    config.subjects = vec!["bench.log.*".into()];
    config.description = Some("cairn-bench: the event stream's settings, for raw appends".into());
    let stream = js.create_stream(config).await?;
    let publisher = Publisher::new(js.clone());
    let mut appends = Appends {
        batch: Histogram::new(3)?,
        stored_to_ack: Histogram::new(3)?,
        single: Histogram::new(3)?,
    };
    let mut last = Seq::ZERO;
    let mut id = 0u64;
    let mut message = |subject: &str| {
        id += 1;
        Outgoing {
            subject: subject.to_owned().into(),
            msg_id: format!("bench-{id}"),
            payload: vec![0u8; EVENT_BYTES].into(),
            expect: Expect::Nothing,
        }
    };
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..samples {
        pace.tick().await;
        let batch = (0..EVENTS).map(|_| message("bench.log.batch")).collect();
        let sent = Instant::now();
        last = publisher
            .append_atomic(batch, Expect::LastSeq(last))
            .await
            .context("raw atomic batch")?
            .seq;
        let acked_at = now_nanos();
        appends.batch.record(micros(sent.elapsed()))?;
        let stored = stream.get_raw_message(last.0).await?.time;
        let stored = u64::try_from(stored.unix_timestamp_nanos()).unwrap_or(0);
        appends
            .stored_to_ack
            .record(acked_at.saturating_sub(stored) / 1_000)?;

        pace.tick().await;
        let sent = Instant::now();
        last = publisher
            .append(message("bench.log.single"))
            .await
            .context("raw single append")?
            .seq;
        appends.single.record(micros(sent.elapsed()))?;
    }
    js.delete_stream(STREAM).await?;
    Ok(appends)
}
