//! The orchestrator process: sets up cairn's streams, catches the decider up on the event
//! stream, and runs its parts side by side until shutdown — the decider's shell (inputs,
//! liveness), the dispatcher, the projector into the view file under the data directory,
//! and the query service. If any part stops on its own, the others are stopped too.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_streams::{Publisher, Reader, Topology};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, LivenessConfig};
use crate::error::Result;
use crate::metrics::{DeciderMetrics, Metrics};
use crate::projector::{Projector, ProjectorConfig, ProjectorHandle};
use crate::store::ViewStore;

#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Holds `views.redb`. Disposable: deleting it rebuilds the views from the log.
    pub data_dir: PathBuf,
    pub topology: Topology,
    pub projector: ProjectorConfig,
    pub liveness: LivenessConfig,
    /// Where to serve metrics and the read-only HTTP API, if anywhere (`--http`).
    pub http: Option<std::net::SocketAddr>,
    /// The bearer token every HTTP request but `/healthz` must carry, if any
    /// (`--http-token FILE`, as `cairn auth init` writes it).
    pub http_token: Option<String>,
}

impl OrchestratorConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            topology: Topology::default(),
            projector: ProjectorConfig::default(),
            liveness: LivenessConfig::default(),
            http: None,
            http_token: None,
        }
    }

    pub fn views_path(&self) -> PathBuf {
        self.data_dir.join("views.redb")
    }
}

/// A started orchestrator: its view store and projector progress, and its parts to await.
pub struct Orchestrator {
    pub store: Arc<ViewStore>,
    pub projector: ProjectorHandle,
    /// Where it serves metrics and the HTTP API, when it does (the port bound, if `:0`
    /// asked for any).
    pub http: Option<std::net::SocketAddr>,
    parts: JoinSet<(&'static str, Result<()>)>,
    /// Stops every part when one ends on its own.
    stop: CancellationToken,
}

impl Orchestrator {
    /// Sets up the streams, catches up, and starts every part; they run until `shutdown`
    /// is cancelled.
    pub async fn start(
        config: OrchestratorConfig,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let js = cairn_streams::jetstream(client);
        set_up_streams(&js, &config.topology).await?;
        let path = config.views_path();
        let store = Arc::new(
            tokio::task::spawn_blocking(move || ViewStore::open(path))
                .await
                .map_err(|e| {
                    crate::Error::stopped("orchestrator", format!("opening the view store: {e}"))
                })??,
        );
        let (projector, handle) = Projector::new(
            config.projector,
            Reader::new(js.clone()),
            Arc::clone(&store),
        )?;

        // Bound before anything runs, so a port in use fails the start with its reason.
        let listener = match config.http {
            Some(addr) => Some(crate::http::bind(addr).await?),
            None => None,
        };
        let decider_metrics = DeciderMetrics::default();
        let mut engine = Engine::start(js.clone(), config.liveness).await?;
        engine.measure(decider_metrics.clone());
        let (handoff, decided) = tokio::sync::mpsc::channel(crate::dispatcher::HANDOFF_BATCHES);
        engine.hand_off_to(handoff);
        let pending = crate::dispatcher::pending_work(engine.state());
        let from = engine.last();
        tracing::info!(
            views = %store.path().display(),
            applied = %handle.applied(),
            decided = %from,
            pending = pending.len(),
            "orchestrator started"
        );

        let stop = shutdown.child_token();
        let mut parts = JoinSet::new();
        let token = stop.clone();
        parts.spawn(async move { ("decider", on_own_thread(engine.run(token)).await) });
        let (publisher, reader, token) = (
            Publisher::new(js.clone()),
            Reader::new(js.clone()),
            stop.clone(),
        );
        let queued = decider_metrics.dispatch_seconds.clone();
        parts.spawn(async move {
            (
                "dispatcher",
                crate::dispatcher::run(publisher, reader, pending, from, decided, queued, token)
                    .await,
            )
        });
        let token = stop.clone();
        parts.spawn(async move { ("projector", projector.run(token).await) });
        if config.topology.sweeps_assignments() {
            let (js, token) = (js.clone(), stop.clone());
            parts.spawn(async move { ("sweeper", crate::sweeper::run(js, token).await) });
        }
        let http = listener.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(listener) = listener {
            tracing::info!(address = ?http, "serving metrics and the HTTP API");
            let (views, js, token) = (Arc::clone(&store), js.clone(), stop.clone());
            let metrics = Metrics::new(decider_metrics);
            let access = crate::http::Access::new(config.http_token.clone());
            parts.spawn(async move {
                (
                    "http",
                    crate::http::serve(listener, views, metrics, js, access, token).await,
                )
            });
        }
        let (client, views, token) = (js.client(), Arc::clone(&store), stop.clone());
        parts.spawn(async move {
            (
                "query service",
                crate::query::serve(client, views, token).await,
            )
        });
        Ok(Self {
            store,
            projector: handle,
            http,
            parts,
            stop,
        })
    }

    /// Waits until the orchestrator has stopped (after shutdown, or when a part failed,
    /// which stops the rest) and returns the first failure.
    pub async fn stopped(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.parts.join_next().await {
            // Whichever part ends first, for whatever reason, ends the others.
            self.stop.cancel();
            let (part, result) = match joined {
                Ok(done) => done,
                Err(e) => (
                    "a part",
                    Err(crate::Error::stopped(
                        "orchestrator",
                        format!("a part's task failed: {e}"),
                    )),
                ),
            };
            if let Err(e) = result {
                tracing::error!(part, error = %e, "orchestrator part stopped");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Waits for JetStream, then creates or checks every stream, trying again for as long as the
/// answer is "not now" (a cluster still forming or electing a leader): started together
/// with its servers, the orchestrator waits for them rather than exit. Settings the server
/// refuses outright end the start with the reason.
async fn set_up_streams(js: &async_nats::jetstream::Context, topology: &Topology) -> Result<()> {
    cairn_streams::wait_for_jetstream(js).await;
    let mut backoff = cairn_streams::backoff::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    loop {
        match topology.ensure(js).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                tracing::info!(reason = %e, retry_in = ?delay, "streams not ready yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `part` on a thread and runtime of its own. The decider decides rounds of inputs
/// synchronously; on the shared runtime such a round holds a worker, and whatever waits on
/// that worker (following the log to queue work, answering a query) waits with it.
async fn on_own_thread(part: impl Future<Output = Result<()>> + Send + 'static) -> Result<()> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cairn-decider".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| crate::Error::stopped("decider", format!("starting its runtime: {e}")))
                .and_then(|runtime| runtime.block_on(part));
            let _ = done.send(outcome);
        })
        .map_err(|e| crate::Error::stopped("decider", format!("starting its thread: {e}")))?;
    result
        .await
        .map_err(|_| crate::Error::stopped("decider", "its thread ended"))?
}
