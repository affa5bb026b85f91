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

/// A started orchestrator: its view store and projector progress, and the task to await.
pub struct Orchestrator {
    pub store: Arc<ViewStore>,
    pub projector: ProjectorHandle,
    task: tokio::task::JoinHandle<Result<()>>,
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
        let (projector, handle) =
            Projector::new(config.projector, Reader::new(js), Arc::clone(&store))?;
        tracing::info!(
            views = %store.path().display(),
            applied = %handle.applied(),
            "orchestrator started"
        );
        let task = tokio::spawn(projector.run(shutdown));
        Ok(Self {
            store,
            projector: handle,
            task,
        })
    }

    /// Waits until the orchestrator has stopped (after shutdown, or on a fatal error).
    pub async fn stopped(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| crate::Error::Stopped(format!("projector task: {e}")))?
    }
}
