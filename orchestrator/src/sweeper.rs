//! The sweeper: on a cluster, where the assignment shards keep acked work (limits
//! retention, so that node consumers can stay R1), it purges what every node has acked,
//! every [`SWEEP_INTERVAL`]. Purging is about space and about how much a recreated
//! consumer delivers again (edges deduplicate it), never about correctness: work that is
//! not yet acked is never purged. Every orchestrator sweeps; purging an acked range twice
//! removes nothing the second time.

use std::time::Duration;

use cairn_streams::Sweeper;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// How often acked work is swept out.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Sweeps until shutdown. A sweep that fails in part is logged and tried again next time.
pub async fn run(js: async_nats::jetstream::Context, shutdown: CancellationToken) -> Result<()> {
    let mut sweeper = Sweeper::default();
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let swept = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            swept = sweeper.sweep(&js) => swept,
        };
        if swept.failed > 0 {
            tracing::info!(?swept, "sweep incomplete; the rest waits for the next one");
        } else {
            tracing::debug!(?swept, "acked work swept");
        }
    }
}
