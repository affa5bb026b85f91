//! Heartbeats on core NATS: not stored, not retried. A beat that cannot be sent is simply
//! skipped; the next one carries the same facts, and liveness never affects delivery.

use std::sync::Arc;
use std::time::Duration;

use cairn_shared::codec::Envelope;
use cairn_shared::{Heartbeat, Liveness, NodeId, ReportId, Timestamp};
use cairn_streams::subjects;
use tokio_util::sync::CancellationToken;

use crate::Stats;
use crate::store::Store;

pub struct Beater {
    pub client: async_nats::Client,
    pub node: NodeId,
    pub capacity: Option<u32>,
    pub interval: Duration,
    pub stats: Arc<Stats>,
    pub store: Store,
}

impl Beater {
    pub async fn run(self, stop: CancellationToken) {
        let subject = subjects::heartbeat(&self.node);
        let mut ticks = tokio::time::interval(self.interval);
        // After a stall, one beat says everything; a burst of stale ones says nothing more.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if self.client.connection_state() != async_nats::connection::State::Connected {
                // Queued in the client, it would arrive late and claim a liveness that is
                // stale by then.
                continue;
            }
            let executions = self.stats.running_attempts();
            let beat: Liveness = Heartbeat {
                node: self.node.clone(),
                running: u32::try_from(executions.len()).unwrap_or(u32::MAX),
                capacity: self.capacity,
                outbox: self.store.outbox_len(),
                executions,
                bound: self.stats.is_bound(),
            }
            .into();
            let payload =
                match Envelope::new(ReportId::generate(), None, Timestamp::now(), beat).encode() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding a heartbeat failed");
                        continue;
                    }
                };
            if let Err(e) = self.client.publish(subject.clone(), payload.into()).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
    }
}
