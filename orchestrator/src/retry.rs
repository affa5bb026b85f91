//! The pause between attempts at work that waits for NATS to answer: the one backoff
//! policy (`cairn_streams::backoff::Backoff`, 50 ms doubling to 2 s, reset by the caller
//! after a success), cut short by shutdown.

use cairn_streams::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Sleeps for the backoff's next delay; false if shutdown came first.
pub(crate) async fn pause(shutdown: &CancellationToken, backoff: &mut Backoff) -> bool {
    let delay = backoff.next_delay();
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}
