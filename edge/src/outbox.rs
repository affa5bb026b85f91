//! The outbox: every report and log chunk is written to the local store before it is sent,
//! and deleted only after JetStream acknowledged it. The flusher sends entries in key order
//! with their stored `Nats-Msg-Id`, so whatever is resent after a lost ack, a reconnect or
//! a crash is stored once by JetStream (within the stream's duplicate window).
//!
//! Order: entries are sent in order with up to `window` acks in flight and deleted as a
//! contiguous prefix of acknowledged entries. After a failure everything from the first
//! unacknowledged entry is sent again. If a later entry of the failed window was stored
//! and an earlier one was not (possible only across a connection loss), the resend stores
//! the earlier one after it: consumers of reports must not assume more than per-attempt
//! monotonicity, which the orchestrator gets anyway from terminal states being final.

use std::collections::VecDeque;
use std::time::Duration;

use cairn_shared::codec::Envelope;
use cairn_shared::report::{ExecutionUpdate, NodeHello};
use cairn_shared::{ExecutionId, ExecutionState, NodeId, Report, ReportId, Timestamp};
use cairn_streams::logs::header_map;
use cairn_streams::{Expect, LogEntry, Outgoing, Pipeline, Publisher, subjects};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::{AttemptKey, OutboxEntry, Store};
use cairn_streams::backoff::Backoff;

/// Entries read from the store per round.
const BATCH: usize = 256;
/// How often to look whether a lost connection came back.
const RECONNECT_POLL: Duration = Duration::from_millis(50);

/// The longest pause between failed flushes.
const FLUSH_PAUSE_CAP: Duration = Duration::from_secs(5);

/// A report, with a fresh report id that stays its `Nats-Msg-Id` for every resend.
pub fn report_entry(node: &NodeId, report: Report) -> Result<OutboxEntry> {
    let envelope = Envelope::new(ReportId::generate(), None, Timestamp::now(), report);
    Ok(OutboxEntry {
        subject: subjects::report(node).to_string(),
        msg_id: envelope.id.to_string(),
        payload: envelope.encode()?,
        headers: Vec::new(),
    })
}

pub fn hello_entry(
    node: &NodeId,
    labels: cairn_shared::spec::Labels,
    capacity: Option<u32>,
    resources: cairn_shared::Resources,
) -> Result<OutboxEntry> {
    report_entry(
        node,
        NodeHello {
            node: node.clone(),
            labels,
            capacity,
            resources: Some(resources),
        }
        .into(),
    )
}

pub fn update_entry(
    node: &NodeId,
    key: AttemptKey,
    state: ExecutionState,
    exit_code: Option<i32>,
    reason: Option<String>,
) -> Result<OutboxEntry> {
    report_entry(
        node,
        ExecutionUpdate {
            node: node.clone(),
            execution: key.execution,
            attempt: key.attempt,
            state,
            exit_code,
            reason,
        }
        .into(),
    )
}

pub fn log_entry(
    node: &NodeId,
    execution: ExecutionId,
    msg_id: String,
    entry: &LogEntry,
) -> OutboxEntry {
    let out = Outgoing::log(node, execution, msg_id, entry.payload());
    OutboxEntry {
        subject: out.subject.to_string(),
        msg_id: out.msg_id,
        payload: out.payload.to_vec(),
        headers: entry.header_pairs(),
    }
}

/// The marker that ends an attempt's log, with how the attempt ended: written with the
/// attempt's terminal report, so a terminal attempt's log is complete.
pub fn end_of_log(node: &NodeId, key: AttemptKey, outcome: ExecutionState) -> OutboxEntry {
    log_entry(
        node,
        key.execution,
        LogEntry::end_id(key.execution, key.attempt),
        &LogEntry::End {
            attempt: key.attempt,
            outcome: outcome.as_str().to_owned(),
        },
    )
}

/// Sends the outbox, in order, for as long as it runs.
pub struct Flusher {
    pub store: Store,
    pub client: async_nats::Client,
    pub publisher: Publisher,
    pub window: usize,
}

impl Flusher {
    /// Runs until `stop`; what was not acknowledged by then stays in the store for the
    /// next start.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), FLUSH_PAUSE_CAP);
        // Flushes failed in a row, and whether the longest pause has been announced.
        let (mut failures, mut capped) = (0u32, false);
        while !stop.is_cancelled() {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                // Publishing now would only queue in the client and time out; wait for the
                // connection instead, so the flush starts as soon as it is back.
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_POLL) => continue,
                }
            }
            let batch = match self.store.outbox_from(0, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed");
                    sleep_or_stop(&stop, backoff.next_delay()).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.store.outbox_added() => {}
                }
                continue;
            }
            let sent = tokio::select! {
                // Dropping a round is safe: unacknowledged entries stay in the store.
                () = stop.cancelled() => return,
                sent = self.send(batch) => sent,
            };
            match sent {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, "outbox flushing again");
                    }
                    (failures, capped) = (0, false);
                    backoff.reset();
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    let pending = self.store.outbox_len();
                    // Said once when it starts and once when the pause reaches its cap: a
                    // stream not made yet at start-up fails a few times, and each retry
                    // saying so again is noise.
                    if failures == 1 || (delay == FLUSH_PAUSE_CAP && !capped) {
                        capped |= delay == FLUSH_PAUSE_CAP;
                        tracing::warn!(error = %e, retry_in = ?delay, pending, failures, "outbox flush failed; will resend from the first unacknowledged entry");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?delay, pending, failures, "outbox flush failed again");
                    }
                    sleep_or_stop(&stop, delay).await;
                }
            }
        }
    }

    /// Sends one batch through a pipeline and deletes the acknowledged prefix.
    async fn send(&self, batch: Vec<(u64, OutboxEntry)>) -> Result<(), String> {
        let mut pipeline = Pipeline::new(self.publisher.clone(), self.window);
        let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(self.window);
        let mut acked = Vec::with_capacity(batch.len());
        let mut failure = None;
        let mut settle = |key: Option<u64>, ack: cairn_streams::Result<cairn_streams::Appended>| {
            match (key, ack) {
                (Some(key), Ok(_)) => {
                    acked.push(key);
                    None
                }
                (_, Err(e)) => Some(e.to_string()),
                (None, Ok(_)) => Some("an ack without its entry".to_owned()),
            }
        };
        for (key, entry) in batch {
            let headers = header_map(entry.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let out = Outgoing {
                subject: entry.subject.into(),
                msg_id: entry.msg_id,
                payload: entry.payload.into(),
                expect: Expect::Nothing,
            };
            match pipeline.send_with_headers(out, headers).await {
                Ok(oldest) => {
                    in_flight.push_back(key);
                    if let Some(ack) = oldest
                        && let Some(e) = settle(in_flight.pop_front(), ack)
                    {
                        failure = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if failure.is_none() {
            while let Some(ack) = pipeline.next().await {
                if let Some(e) = settle(in_flight.pop_front(), ack) {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !acked.is_empty()
            && let Err(e) = self.store.delete(acked).await
        {
            // They will be resent and de-duplicated by their message ids.
            tracing::error!(error = %e, "deleting sent outbox entries failed");
        }
        match failure {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

async fn sleep_or_stop(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}
