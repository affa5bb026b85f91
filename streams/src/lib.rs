//! Every JetStream stream, subject and consumer cairn uses, declared in one place, plus the
//! append API (message-id de-duplication, optimistic concurrency, pipelined acks) and the
//! replay reader. No other crate builds a subject string or a stream config.

pub mod backoff;
mod error;
pub mod intake;
pub mod logs;
pub mod publish;
pub mod read;
pub mod subjects;
pub mod sweep;
pub mod topology;

#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{Error, Result};
pub use intake::{Binding, Intake, Pulled};
pub use logs::{LogEntry, OutputStream};
pub use publish::{Appended, Expect, Outgoing, PendingAppend, Pipeline, Publisher};
pub use read::{RawMessage, ReadFrom, Reader};
pub use sweep::{Sweeper, Swept, Waiting};
pub use topology::{
    StreamKind, Topology, UNSHARDED_ASSIGNMENTS, ensure_node_consumer, ensure_node_consumers,
    node_consumer_config, replace_node_consumer,
};

/// Connects to NATS, failing at once if no server answers: for commands a person waits on.
pub async fn connect(
    urls: &str,
    creds: Option<&std::path::Path>,
    name: &str,
) -> Result<async_nats::Client> {
    connect_with(urls, creds, async_nats::ConnectOptions::new().name(name)).await
}

/// Connects to NATS and keeps trying until a server answers: for long-running parts (an
/// edge or orchestrator may start before its server, or outlive a restart of it).
pub async fn connect_persistent(
    urls: &str,
    creds: Option<&std::path::Path>,
    name: &str,
) -> Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect();
    connect_with(urls, creds, options).await
}

async fn connect_with(
    urls: &str,
    creds: Option<&std::path::Path>,
    mut options: async_nats::ConnectOptions,
) -> Result<async_nats::Client> {
    if let Some(path) = creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| Error::Connect(format!("reading credentials {}: {e}", path.display())))?;
    }
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Connect(format!("invalid NATS URL {urls:?}: {e}")))?;
    options
        .connect(addrs)
        .await
        .map_err(|e| Error::Connect(format!("cannot reach NATS at {urls}: {e}")))
}

/// Waits until JetStream answers an account request: a fresh cluster answers only once it
/// has elected its meta leader, and a server that is still starting, or a cluster whose
/// leader is moving, refuses or times out meanwhile. Never gives up; says once, at `info`,
/// that it is waiting and why, and once that it stopped.
pub async fn wait_for_jetstream(js: &async_nats::jetstream::Context) {
    let mut delay = std::time::Duration::from_millis(50);
    let mut waited = false;
    loop {
        match js.query_account().await {
            Ok(_) => {
                if waited {
                    tracing::info!("JetStream answers");
                }
                return;
            }
            Err(e) => {
                if !waited {
                    tracing::info!(reason = %e, "waiting for JetStream (a cluster still electing its leader, or a server not up yet)");
                    waited = true;
                } else {
                    tracing::debug!(reason = %e, "JetStream not answering yet");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(1));
    }
}

/// A JetStream context with cairn's publish settings: bounded acks in flight, waiting (not
/// failing) when the bound is reached.
pub fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .max_ack_inflight(Publisher::MAX_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client)
}
