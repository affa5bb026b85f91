//! The pause between attempts at work that waits for NATS to answer: it doubles from where
//! the caller starts it up to 2 s, and shutdown cuts it short.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `backoff` and doubles it (up to 2 s); false if shutdown came first.
pub(crate) async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let delay = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}
