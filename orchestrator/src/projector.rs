//! The projector service: follows the event stream from the store's checkpoint and applies
//! every message, in order, in batched write transactions on a blocking thread.
//!
//! Decoding happens on the async side while the writer thread commits the previous batch;
//! the writer takes whatever has arrived (up to `batch_max`) into each transaction, so
//! batches grow under load and stay small when idle.

use std::sync::Arc;

use cairn_shared::Seq;
use cairn_streams::{ReadFrom, Reader, StreamKind};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::projection::Applied;
use crate::retry::pause;
use crate::store::{Incoming, ViewStore};
use cairn_streams::backoff::Backoff;

#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// The most messages applied in one write transaction.
    pub batch_max: usize,
    /// Messages decoded ahead of the writer.
    pub queue: usize,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_max: 8_192,
            queue: 16_384,
        }
    }
}

/// Follows the projector's progress.
#[derive(Clone)]
pub struct ProjectorHandle {
    applied: watch::Receiver<Seq>,
}

impl ProjectorHandle {
    /// The last sequence whose effects are committed to the views.
    pub fn applied(&self) -> Seq {
        *self.applied.borrow()
    }

    /// Waits until the views include sequence `seq`. Fails if the projector stops first.
    pub async fn wait_for(&mut self, seq: Seq) -> Result<()> {
        self.applied
            .wait_for(|applied| *applied >= seq)
            .await
            .map(drop)
            .map_err(|_| Error::stopped("projector", format!("before reaching sequence {seq}")))
    }
}

pub struct Projector {
    config: ProjectorConfig,
    reader: Reader,
    store: Arc<ViewStore>,
    applied: watch::Sender<Seq>,
}

impl Projector {
    pub fn new(
        config: ProjectorConfig,
        reader: Reader,
        store: Arc<ViewStore>,
    ) -> Result<(Self, ProjectorHandle)> {
        let (applied, rx) = watch::channel(store.applied_seq()?);
        Ok((
            Self {
                config,
                reader,
                store,
                applied,
            },
            ProjectorHandle { applied: rx },
        ))
    }

    /// Runs until `shutdown` is cancelled (then returns `Ok` once everything received is
    /// committed) or an error that retrying cannot fix.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.run_until(None, shutdown).await
    }

    /// Like [`Projector::run`], but stops on its own once sequence `until` is committed,
    /// never applying anything past it: a replay "as of" that sequence.
    async fn run_until(self, until: Option<Seq>, shutdown: CancellationToken) -> Result<()> {
        let from = self.store.applied_seq()?.next();
        if until.is_some_and(|until| until < from) {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<Incoming>(self.config.queue);
        let writer = {
            let store = Arc::clone(&self.store);
            let applied = self.applied.clone();
            let batch_max = self.config.batch_max;
            tokio::task::spawn_blocking(move || write_loop(&store, rx, batch_max, &applied))
        };
        let read = read_loop(&self.reader, from, until, tx, &shutdown);
        let read_result = read.await;
        // The sender is gone: the writer drains what it has and stops.
        let write_result = writer
            .await
            .map_err(|e| Error::stopped("projector", format!("writer thread: {e}")))?;
        read_result.and(write_result)
    }
}

async fn read_loop(
    reader: &Reader,
    mut next: Seq,
    until: Option<Seq>,
    tx: mpsc::Sender<Incoming>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let messages = match reader
            .read(StreamKind::Events, ReadFrom::Seq(next), None)
            .await
        {
            Ok(messages) => messages,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "event stream unavailable; retrying");
                if !pause(shutdown, &mut backoff).await {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut messages = std::pin::pin!(messages);
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                item = messages.next() => item,
            };
            match item {
                Some(Ok(raw)) => {
                    if until.is_some_and(|until| raw.seq > until) {
                        return Ok(());
                    }
                    backoff.reset();
                    let incoming = Incoming::decode(raw.seq, raw.subject.as_str(), &raw.payload);
                    next = raw.seq.next();
                    if tx.send(incoming).await.is_err() {
                        return Err(Error::stopped("projector", "its writer stopped"));
                    }
                    if until.is_some_and(|until| raw.seq >= until) {
                        return Ok(());
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, next = %next, "event stream read failed; resuming");
                    break;
                }
                None => break,
            }
        }
        if !pause(shutdown, &mut backoff).await {
            return Ok(());
        }
    }
}

fn write_loop(
    store: &ViewStore,
    mut rx: mpsc::Receiver<Incoming>,
    batch_max: usize,
    applied: &watch::Sender<Seq>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(batch_max);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(incoming) => batch.push(incoming),
                Err(_) => break,
            }
        }
        for (seq, outcome) in store.apply_batch(&batch)? {
            match outcome {
                Applied::Changed => {}
                Applied::Ignored(reason) => tracing::debug!(%seq, %reason, "event changes no view"),
                Applied::Undecodable => {
                    tracing::warn!(%seq, "undecodable event recorded and skipped")
                }
            }
        }
        if let Some(last) = batch.last() {
            applied.send_if_modified(|seq| {
                let advanced = last.seq > *seq;
                if advanced {
                    *seq = last.seq;
                }
                advanced
            });
        }
        batch.clear();
    }
    Ok(())
}

/// Projects the event stream into `store` up to and including sequence `until` (for
/// example the stream's last sequence when a rebuild began) and nothing past it, then
/// stops. Used to rebuild views into a fresh file for audits, verification and benchmarks.
/// Refuses with `Trimmed` when the stream no longer holds the sequences the file lacks.
pub async fn replay_until(
    config: ProjectorConfig,
    reader: Reader,
    store: Arc<ViewStore>,
    until: Seq,
) -> Result<Seq> {
    replay_with_progress(config, reader, store, until, |_| {}).await
}

/// [`replay_until`], calling `progress` with the committed sequence as it advances.
pub async fn replay_with_progress(
    config: ProjectorConfig,
    reader: Reader,
    store: Arc<ViewStore>,
    until: Seq,
    mut progress: impl FnMut(Seq),
) -> Result<Seq> {
    let (projector, mut handle) = Projector::new(config, reader, store)?;
    let mut run = tokio::spawn(projector.run_until(Some(until), CancellationToken::new()));
    let ran = loop {
        tokio::select! {
            ran = &mut run => break ran,
            changed = handle.applied.changed() => match changed {
                Ok(()) => progress(handle.applied()),
                // The projector is finishing: nothing more to report.
                Err(_) => break (&mut run).await,
            }
        }
    };
    ran.map_err(|e| Error::stopped("projector", format!("its task: {e}")))??;
    let applied = handle.applied();
    progress(applied);
    if applied < until {
        return Err(Error::stopped(
            "projector",
            format!("the event stream ended at {applied}, before sequence {until}"),
        ));
    }
    Ok(applied)
}
