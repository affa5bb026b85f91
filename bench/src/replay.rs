//! The replay scenario: publish a history to the event stream, read it back raw, then
//! rebuild the views from it with the projector. All three on the same stream and server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use cairn_orchestrator::{ProjectorConfig, ViewStore, replay_until};
use cairn_shared::Seq;
use cairn_streams::{Pipeline, Publisher, Reader, StreamKind};
use futures::StreamExt;

use crate::history;
use crate::report::{Figure, Scenario};
use crate::stack::Nats;

pub async fn run(nats: &Nats, events: u64) -> Result<Scenario> {
    let client = cairn_streams::connect(&nats.url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client);
    nats.fresh_streams(&js).await?;

    eprintln!("replay: encoding {events} events");
    let outgoing: Vec<_> = history::events(events).collect();
    let bytes: usize = outgoing.iter().map(|o| o.payload.len()).sum();

    eprintln!("replay: publishing");
    let started = Instant::now();
    Pipeline::new(Publisher::new(js.clone()), Pipeline::DEFAULT_WINDOW)
        .append_all(outgoing)
        .await?;
    let publish = started.elapsed();
    let last = Reader::new(js.clone())
        .bounds(StreamKind::Events)
        .await?
        .last;
    ensure!(
        last == Seq(events),
        "stream holds {last} events, expected {events}"
    );

    let rebuilt = rebuild(&js, last).await?;
    let store = Arc::clone(&rebuilt.store);
    let view = store.read()?;
    ensure!(
        view.undecodable()?.is_empty(),
        "the projector found undecodable events"
    );
    let jobs = view.jobs()?.len();
    ensure!(
        jobs > 0 || events <= history::NODES as u64,
        "the projector built no job views"
    );
    let file_size = std::fs::metadata(store.path())?.len();

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let mut figures = vec![Figure::rate(
        "raw publish (pipelined, Nats-Msg-Id)",
        rate(publish),
        None,
    )];
    figures.extend(rebuilt.figures(events));
    Ok(Scenario {
        name: "replay".into(),
        notes: format!(
            "{events} events ({} bytes on average), {jobs} jobs; views file {} MB",
            bytes / events.max(1) as usize,
            file_size / 1_000_000
        ),
        figures,
    })
}

/// A rebuild of the views from the event stream, beside a raw read of the same stream.
pub struct Rebuild {
    pub consume: Duration,
    pub project: Duration,
    pub store: Arc<ViewStore>,
    _dir: tempfile::TempDir,
}

impl Rebuild {
    pub fn figures(&self, events: u64) -> Vec<Figure> {
        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        vec![
            Figure::rate(
                "raw consume (ordered consumer, no decode)",
                rate(self.consume),
                None,
            ),
            Figure::rate(
                "projector rebuild into redb",
                rate(self.project),
                Some(rate(self.consume)),
            ),
        ]
    }
}

/// Reads the event stream up to `last` raw, then rebuilds the views from it into a fresh
/// redb file with the projector.
pub async fn rebuild(js: &async_nats::jetstream::Context, last: Seq) -> Result<Rebuild> {
    eprintln!("replay: raw consume");
    let consume = raw_consume(js, last.0).await?;

    eprintln!("replay: projector rebuild into a fresh redb file");
    let dir = tempfile::tempdir()?;
    let store = Arc::new(ViewStore::open(dir.path().join("views.redb"))?);
    let started = Instant::now();
    let applied = replay_until(
        ProjectorConfig::default(),
        Reader::new(js.clone()),
        Arc::clone(&store),
        last,
    )
    .await?;
    let project = started.elapsed();
    ensure!(
        applied == last,
        "projector stopped at {applied}, expected {last}"
    );
    Ok(Rebuild {
        consume,
        project,
        store,
        _dir: dir,
    })
}

/// Reads the whole event stream with a bare ordered consumer: the floor of any replay.
async fn raw_consume(js: &async_nats::jetstream::Context, events: u64) -> Result<Duration> {
    let stream = js.get_stream(StreamKind::Events.name()).await?;
    let started = Instant::now();
    let consumer = stream.create_consumer(OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0u64;
    while seen < events {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("raw consume stalled")?
            .context("raw consume ended early")??;
        std::hint::black_box(message.payload.len());
        seen += 1;
    }
    Ok(started.elapsed())
}
