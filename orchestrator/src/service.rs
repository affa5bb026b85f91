//! The orchestrator process: sets up cairn's streams, opens the view file under its data
//! directory and runs the projector until shutdown.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_streams::{Reader, Topology};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::projector::{Projector, ProjectorConfig, ProjectorHandle};
use crate::store::ViewStore;

#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Holds `views.redb`. Disposable: deleting it rebuilds the views from the log.
    pub data_dir: PathBuf,
    pub topology: Topology,
    pub projector: ProjectorConfig,
}

impl OrchestratorConfig {
    pub fn views_path(&self) -> PathBuf {
        self.data_dir.join("views.redb")
    }
}

/// A started orchestrator: its view store and projector progress, and the tasks to await.
pub struct Orchestrator {
    pub store: Arc<ViewStore>,
    pub projector: ProjectorHandle,
    projector_task: tokio::task::JoinHandle<Result<()>>,
    query_task: tokio::task::JoinHandle<Result<()>>,
    /// Stops both tasks when either ends on its own.
    stop: CancellationToken,
}

impl Orchestrator {
    /// Sets up the streams and starts the projector; it runs until `shutdown` is cancelled.
    pub async fn start(
        config: OrchestratorConfig,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let js = cairn_streams::jetstream(client);
        config.topology.ensure(&js).await?;
        let path = config.views_path();
        let store = Arc::new(
            tokio::task::spawn_blocking(move || ViewStore::open(path))
                .await
                .map_err(|e| crate::Error::Stopped(format!("opening the view store: {e}")))??,
        );
        let (projector, handle) = Projector::new(
            config.projector,
            Reader::new(js.clone()),
            Arc::clone(&store),
        )?;
        tracing::info!(
            views = %store.path().display(),
            applied = %handle.applied(),
            "orchestrator started"
        );
        let stop = shutdown.child_token();
        let query_task = tokio::spawn(crate::query::serve(
            js.client(),
            Arc::clone(&store),
            stop.clone(),
        ));
        let projector_task = tokio::spawn(projector.run(stop.clone()));
        Ok(Self {
            store,
            projector: handle,
            projector_task,
            query_task,
            stop,
        })
    }

    /// Waits until the orchestrator has stopped (after shutdown, or on a fatal error).
    pub async fn stopped(self) -> Result<()> {
        let joined =
            |e: tokio::task::JoinError| crate::Error::Stopped(format!("orchestrator task: {e}"));
        let (mut projector, mut query) = (self.projector_task, self.query_task);
        // Whichever ends first (shutdown, or a fatal error) ends the other.
        let (first, second) = tokio::select! {
            r = &mut projector => (r, query),
            r = &mut query => (r, projector),
        };
        self.stop.cancel();
        let first = first.map_err(joined)?;
        let second = second.await.map_err(joined)?;
        first.and(second)
    }
}
