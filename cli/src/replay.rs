//! Replays of the event log into a temporary view file, for as-of queries (`--at-seq`,
//! `--at`) and `cairn audit verify`. The orchestrator's own projector builds the file and
//! its own query code answers from it, so there is one projection and one set of answers.
//! The file lives in a temporary directory deleted when the replay is dropped; the CLI never
//! opens the orchestrator's live view file.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_orchestrator::query::Answer;
use cairn_orchestrator::{ProjectorConfig, ViewStore};
use cairn_shared::{Seq, Timestamp};
use cairn_streams::{Reader, StreamKind};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Global;
use crate::query::Refused;

/// `--at-seq N` / `--at TIME`: answer as the views stood after that event.
#[derive(Args, Clone, Debug, Default)]
pub struct AsOf {
    /// Answer as of this event sequence, from a replay of the log up to it.
    #[arg(long, value_name = "N", conflicts_with = "at")]
    pub at_seq: Option<u64>,
    /// Answer as of this time (the last event stored at or before it): RFC 3339
    /// (2026-11-23T10:02:00Z) or a duration ago (10m).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

impl AsOf {
    pub fn is_live(&self) -> bool {
        self.at_seq.is_none() && self.at.is_none()
    }
}

/// Asks a query endpoint: the live orchestrator, or a replay of the log as of `at`.
pub async fn ask<Q: Serialize, T: DeserializeOwned>(
    global: &Global,
    at: &AsOf,
    name: &'static str,
    query: &Q,
) -> Result<Answer<T>> {
    if at.is_live() {
        return crate::query::ask(global, name, query).await;
    }
    let reader = reader(global).await?;
    let until = resolve(&reader, at).await?;
    let replay = Replay::create()?;
    replay.advance(&reader, until).await?;
    replay.ask(name, query).await
}

/// A reader on the server the global flags name.
pub async fn reader(global: &Global) -> Result<Reader> {
    Ok(Reader::new(global.jetstream("cairn-replay").await?))
}

/// The event sequence an `--at-seq` or `--at` names, checked against what the log holds.
async fn resolve(reader: &Reader, at: &AsOf) -> Result<Seq> {
    let bounds = events_bounds(reader).await?;
    let seq = match (&at.at_seq, &at.at) {
        (Some(seq), _) => Seq(*seq),
        (None, Some(time)) => {
            let time = crate::events::parse_since(time, Timestamp::now())
                .map_err(|_| anyhow::anyhow!("invalid --at {time:?}: write a time like 2026-11-23T10:02:00Z or a duration like 10m"))?;
            reader.last_at(StreamKind::Events, time).await?
        }
        (None, None) => bounds.last,
    };
    if seq > bounds.last {
        bail!(
            "the event log ends at sequence {}: there is no sequence {seq} yet",
            bounds.last
        );
    }
    Ok(seq)
}

/// The event stream's bounds, with a sentence when there is no event stream at all.
pub async fn events_bounds(reader: &Reader) -> Result<cairn_streams::read::Bounds> {
    tokio::time::timeout(Duration::from_secs(10), reader.bounds(StreamKind::Events))
        .await
        .context("no answer from NATS")?
        .context(
            "the event stream is not available (has an orchestrator ever run against this server?)",
        )
}

/// A view file in a temporary directory, built by replaying the event log.
pub struct Replay {
    store: Arc<ViewStore>,
    // Dropped after the store: the directory goes once nothing has the file open.
    _dir: tempfile::TempDir,
}

impl Replay {
    pub fn create() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-replay-")
            .tempdir()
            .context("creating a directory for the replay")?;
        let store = Arc::new(ViewStore::open(dir.path().join("views.redb"))?);
        Ok(Self { store, _dir: dir })
    }

    pub fn applied(&self) -> Result<Seq> {
        Ok(self.store.applied_seq()?)
    }

    /// Applies the log from where the file stands up to `until`, exactly, showing progress
    /// on stderr when it is a terminal. Refuses when the stream was trimmed past what the
    /// file still needs.
    pub async fn advance(&self, reader: &Reader, until: Seq) -> Result<()> {
        let from = self.applied()?;
        if until <= from {
            return Ok(());
        }
        let bar = progress(until.0 - from.0, "replaying events");
        let applied = cairn_orchestrator::replay_with_progress(
            ProjectorConfig::default(),
            reader.clone(),
            Arc::clone(&self.store),
            until,
            |seq| bar.set_position(seq.0.saturating_sub(from.0)),
        )
        .await;
        bar.finish_and_clear();
        applied.context("replaying the event log")?;
        Ok(())
    }

    /// Answers a query endpoint from the replayed file with the query service's own code.
    pub async fn ask<Q: Serialize, T: DeserializeOwned>(
        &self,
        name: &'static str,
        query: &Q,
    ) -> Result<Answer<T>> {
        let payload = serde_json::to_vec(query)?;
        let store = Arc::clone(&self.store);
        let answer = tokio::task::spawn_blocking(move || {
            cairn_orchestrator::query::handle(&store, name, &payload)
        })
        .await?
        .map_err(|r| Refused {
            code: u16::try_from(r.code).unwrap_or(500),
            status: r.status,
        })?;
        serde_json::from_slice(&answer).context("decoding a replayed answer")
    }
}

/// A progress bar on stderr for `len` items (events/s and ETA), or a hidden one when stderr
/// is not a terminal, so scripts and logs never see it.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
