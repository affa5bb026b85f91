//! Every JetStream stream, subject and consumer cairn uses, declared in one place, plus the
//! append API (message-id de-duplication, optimistic concurrency, pipelined acks) and the
//! replay reader. No other crate builds a subject string or a stream config.

pub mod backoff;
mod error;
pub mod intake;
pub mod logs;
pub mod publish;
pub mod read;
pub mod servers;
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

/// How a part reaches NATS beyond the URL: its credentials, the CA its server's
/// certificate must chain to, and (for an edge) the inbox prefix its credentials allow.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// A NATS credentials file (`cairn auth`).
    pub creds: Option<std::path::PathBuf>,
    /// With it, the connection requires TLS and trusts only this CA (PEM).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Replies come to `<prefix>.…` instead of `_INBOX.…`: a node's credentials let it
    /// subscribe only to its own ([`subjects::inbox_prefix`]).
    pub inbox_prefix: Option<String>,
}

/// Connects to NATS, failing at once if no server answers: for commands a person waits on.
pub async fn connect(
    urls: &str,
    creds: Option<&std::path::Path>,
    name: &str,
) -> Result<async_nats::Client> {
    let access = Access {
        creds: creds.map(Into::into),
        ..Access::default()
    };
    connect_as(urls, &access, name, false).await
}

/// Connects to NATS and keeps trying until a server answers: for long-running parts (an
/// edge or orchestrator may start before its server, or outlive a restart of it).
pub async fn connect_persistent(
    urls: &str,
    creds: Option<&std::path::Path>,
    name: &str,
) -> Result<async_nats::Client> {
    let access = Access {
        creds: creds.map(Into::into),
        ..Access::default()
    };
    connect_as(urls, &access, name, true).await
}

/// The last permission violation the server reported to this process, if any: a publish
/// the credentials do not allow is dropped by the server with an asynchronous `-ERR`, so
/// a request waiting for its answer learns why only here.
pub fn permission_refusal() -> Option<String> {
    REFUSAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

static REFUSAL: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Keeps the last permission violation for [`permission_refusal`] (the client logs every
/// event itself).
async fn on_event(event: async_nats::Event) {
    if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) = &event
        && message
            .to_ascii_lowercase()
            .contains("permissions violation")
    {
        tracing::warn!(%message, "the server refused what these credentials may not do");
        *REFUSAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message.clone());
    }
}

/// Connects with `access`; `persistent` keeps trying until a server answers.
pub async fn connect_as(
    urls: &str,
    access: &Access,
    name: &str,
    persistent: bool,
) -> Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .event_callback(on_event);
    if persistent {
        options = options.retry_on_initial_connect();
    }
    if let Some(path) = &access.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| Error::Connect(format!("reading credentials {}: {e}", path.display())))?;
    }
    if let Some(ca) = &access.tls_ca {
        if !ca.is_file() {
            return Err(Error::Connect(format!(
                "the TLS CA {} is not a readable file",
                ca.display()
            )));
        }
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some(prefix) = &access.inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
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
