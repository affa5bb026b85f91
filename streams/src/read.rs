//! Reading a stream in order from a sequence or a time, for the projector, replay and audit.
//! Readers use ordered consumers: ephemeral, flow-controlled, recreated by the client on a
//! gap, and never acked, so reading leaves no trace on the server.

use async_nats::Subject;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use bytes::Bytes;
use cairn_shared::{Seq, Timestamp};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::topology::StreamKind;

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first message the stream still holds.
    Start,
    /// This sequence (inclusive). Refused if the stream was trimmed past it.
    Seq(Seq),
    /// The first message stored at or after this time.
    Time(Timestamp),
}

/// A message as stored, before decoding.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub seq: Seq,
    pub subject: Subject,
    /// When the server stored it.
    pub stored_at: Timestamp,
    /// The same, in nanoseconds since the epoch: orders messages of different streams on
    /// one server (milliseconds tie too often).
    pub stored_at_ns: u64,
    pub payload: Bytes,
    pub headers: Option<async_nats::HeaderMap>,
    /// Messages matching the read's filter still waiting after this one, as the server
    /// counted when it delivered it: zero means the reader has caught up.
    pub pending: u64,
}

/// The sequence range a stream holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub first: Seq,
    pub last: Seq,
}

/// Reads cairn's streams.
#[derive(Clone)]
pub struct Reader {
    js: jetstream::Context,
}

impl Reader {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    fn read_error(kind: StreamKind, e: impl std::fmt::Display) -> Error {
        Error::Read {
            stream: kind.name().to_owned(),
            reason: e.to_string(),
        }
    }

    /// The first and last sequence the stream holds.
    pub async fn bounds(&self, kind: StreamKind) -> Result<Bounds> {
        let mut stream = self
            .js
            .get_stream(kind.name())
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        let info = stream.info().await.map_err(|e| Self::read_error(kind, e))?;
        Ok(Bounds {
            first: Seq(info.state.first_sequence),
            last: Seq(info.state.last_sequence),
        })
    }

    /// The last sequence stored at or before `at` (millisecond precision), `Seq::ZERO` if
    /// none was: where a replay "as of" that time stops, or an export "until" it ends.
    pub async fn last_at(&self, kind: StreamKind, at: Timestamp) -> Result<Seq> {
        let mut stream = self
            .js
            .get_stream(kind.name())
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        let state = stream
            .info()
            .await
            .map_err(|e| Self::read_error(kind, e))?
            .state
            .clone();
        let last_ms =
            u64::try_from(state.last_timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        if state.messages == 0 || last_ms <= at.0 {
            return Ok(Seq(state.last_sequence));
        }
        // Some message was stored after `at`, so a read from just past it yields one at once.
        let after = self
            .read(kind, ReadFrom::Time(Timestamp(at.0 + 1)), None)
            .await?;
        let mut after = std::pin::pin!(after);
        match after.next().await {
            Some(message) => Ok(Seq(message?.seq.0.saturating_sub(1))),
            None => Err(Self::read_error(kind, "the read ended early")),
        }
    }

    /// The first message at or after `from` that the stream still holds, if any, fetched by
    /// a direct get: reading leaves no trace, even on a work-queue stream, where a consumer
    /// would have to take and ack (delete) the work. (A work queue deletes what was acked,
    /// so its sequences have gaps.)
    pub async fn next_held(&self, kind: StreamKind, from: Seq) -> Result<Option<RawMessage>> {
        let stream = self
            .js
            .get_stream_no_info(kind.name())
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        Self::next_held_on(&stream, kind, kind.subjects(), from).await
    }

    /// [`Reader::next_held`] among the messages on `subject` (a filter).
    async fn next_held_on(
        stream: &jetstream::stream::Stream<()>,
        kind: StreamKind,
        subject: &str,
        from: Seq,
    ) -> Result<Option<RawMessage>> {
        match stream
            .direct_get_next_for_subject(subject, Some(from.0.max(1)))
            .await
        {
            Ok(message) => {
                let stored_at_ns = u64::try_from(message.time.unix_timestamp_nanos()).unwrap_or(0);
                Ok(Some(RawMessage {
                    seq: Seq(message.sequence),
                    subject: message.subject,
                    stored_at: Timestamp(stored_at_ns / 1_000_000),
                    stored_at_ns,
                    payload: message.payload,
                    headers: Some(message.headers),
                    pending: 0,
                }))
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(Self::read_error(kind, e)),
        }
    }

    /// Every message the stream holds now on any of `subjects` (filters, which must not
    /// overlap), in stream order, up to the last one stored when the read began: one
    /// entity's share of a stream, for audits, where [`Reader::read`] follows a stream
    /// forever. A work queue is read by direct gets, as [`Reader::next_held`] reads it, so
    /// its work stays where it is.
    ///
    /// The server counts what matches when the read begins and says with every message
    /// how much is left, so the read ends without waiting past the last match. One that
    /// stalls for [`HELD_STALL`] (its messages deleted meanwhile) fails.
    pub async fn held(&self, kind: StreamKind, subjects: &[Subject]) -> Result<Vec<RawMessage>> {
        let mut filters: Vec<String> = subjects.iter().map(|s| s.to_string()).collect();
        filters.sort();
        filters.dedup();
        let last = self.bounds(kind).await?.last;
        if filters.is_empty() || last == Seq::ZERO {
            return Ok(Vec::new());
        }
        let stream = self
            .js
            .get_stream_no_info(kind.name())
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        let mut held = Vec::new();
        if matches!(kind, StreamKind::Assignments(_)) {
            // A consumer of a work queue would take its work; a shard holds little (only work
            // not yet acked, or not yet swept), so message by message is fine.
            for filter in &filters {
                let mut next = Seq(1);
                while let Some(raw) = Self::next_held_on(&stream, kind, filter, next).await? {
                    if raw.seq > last {
                        break;
                    }
                    next = raw.seq.next();
                    held.push(raw);
                }
            }
            held.sort_by_key(|raw| raw.seq);
            return Ok(held);
        }
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                filter_subjects: filters,
                ..Default::default()
            })
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(held);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        loop {
            let message = match tokio::time::timeout(HELD_STALL, messages.next()).await {
                Ok(Some(message)) => message.map_err(|e| Self::read_error(kind, e))?,
                Ok(None) => return Err(Self::read_error(kind, "the read ended early")),
                Err(_) => {
                    return Err(Self::read_error(
                        kind,
                        format!(
                            "nothing arrived for {HELD_STALL:?} after sequence {}",
                            held.last().map_or(Seq::ZERO, |raw: &RawMessage| raw.seq)
                        ),
                    ));
                }
            };
            let raw = Self::raw(kind, message)?;
            if raw.seq > last {
                break;
            }
            let done = raw.seq >= last || raw.pending == 0;
            held.push(raw);
            if done {
                break;
            }
        }
        Ok(held)
    }

    /// Every message from `from` on (optionally only those matching `filter`), in stream
    /// order, following new messages as they arrive. The stream never ends by itself;
    /// callers stop at the sequence they want (see [`Reader::bounds`]).
    ///
    /// It survives the server going away, and its consumer ending: when the client
    /// reconnects, or the consumer's messages end, the read resumes
    /// from the message after the last one it yielded, on a fresh ordered consumer, within
    /// [`RECONNECT_CHECK`]. (Left to itself, the client would notice its vanished consumer
    /// only after two missed idle heartbeats, 15 to 30 s.) While the server cannot be
    /// reached the stream yields an error now and then and keeps trying.
    pub async fn read(
        &self,
        kind: StreamKind,
        from: ReadFrom,
        filter: Option<Subject>,
    ) -> Result<impl Stream<Item = Result<RawMessage>> + Send + 'static + use<>> {
        let first = self.open(kind, from, filter.clone()).await?;
        let statistics = self.js.client().statistics();
        let mut tick = tokio::time::interval(RECONNECT_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let follow = Follow {
            reader: self.clone(),
            kind,
            from,
            filter,
            next: None,
            connects: statistics.connects.load(Ordering::Relaxed),
            statistics,
            inner: Some(Box::pin(first)),
            tick,
        };
        Ok(futures::stream::unfold(follow, Follow::step))
    }

    /// One ordered consumer's messages from `from` on; ends with the consumer.
    async fn open(
        &self,
        kind: StreamKind,
        from: ReadFrom,
        filter: Option<Subject>,
    ) -> Result<impl Stream<Item = Result<RawMessage>> + Send + 'static + use<>> {
        let deliver_policy = match from {
            ReadFrom::Start => DeliverPolicy::All,
            ReadFrom::Seq(seq) => {
                let bounds = self.bounds(kind).await?;
                if seq < bounds.first && seq <= bounds.last {
                    return Err(Error::Trimmed {
                        stream: kind.name().to_owned(),
                        requested: seq,
                        first: bounds.first,
                    });
                }
                if seq.0 <= 1 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: seq.0,
                    }
                }
            }
            ReadFrom::Time(at) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(at.as_millis()) * 1_000_000,
                )
                .map_err(|e| Self::read_error(kind, e))?,
            },
        };
        let stream = self
            .js
            .get_stream_no_info(kind.name())
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                filter_subject: filter.map(|s| s.to_string()).unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Self::read_error(kind, e))?;
        Ok(messages.map(move |item| {
            let message = item.map_err(|e| Self::read_error(kind, e))?;
            Self::raw(kind, message)
        }))
    }

    /// A message a consumer delivered, as stored.
    fn raw(kind: StreamKind, message: jetstream::Message) -> Result<RawMessage> {
        let (seq, stored_at_ns, pending) = {
            let info = message.info().map_err(|e| Self::read_error(kind, e))?;
            let nanos = info.published.unix_timestamp_nanos();
            (
                Seq(info.stream_sequence),
                u64::try_from(nanos).unwrap_or(0),
                info.pending,
            )
        };
        // Moved, not cloned: a header map is a heap allocation per message, which a
        // replay of millions of events notices.
        let inner = message.message;
        Ok(RawMessage {
            seq,
            stored_at: Timestamp(stored_at_ns / 1_000_000),
            stored_at_ns,
            subject: inner.subject,
            payload: inner.payload,
            headers: inner.headers,
            pending,
        })
    }
}

/// How long [`Reader::held`] waits for a message it was told is there.
pub const HELD_STALL: Duration = Duration::from_secs(30);
/// How often a quiet read looks whether the client reconnected.
pub const RECONNECT_CHECK: Duration = Duration::from_millis(250);
/// Between attempts to reopen a read while the server cannot be reached.
const REOPEN_PAUSE: Duration = Duration::from_millis(250);

type Messages = Pin<Box<dyn Stream<Item = Result<RawMessage>> + Send>>;

/// The state of a read that follows the stream across reconnects.
struct Follow {
    reader: Reader,
    kind: StreamKind,
    from: ReadFrom,
    filter: Option<Subject>,
    /// The sequence after the last message yielded; `None` before the first.
    next: Option<Seq>,
    statistics: Arc<async_nats::Statistics>,
    /// The client's connection count when `inner` was opened.
    connects: u64,
    inner: Option<Messages>,
    tick: tokio::time::Interval,
}

impl Follow {
    async fn step(mut self) -> Option<(Result<RawMessage>, Self)> {
        loop {
            let connects = self.statistics.connects.load(Ordering::Relaxed);
            if connects != self.connects {
                // The server may have restarted without the ephemeral consumer: start over
                // where this read is, rather than wait for the old one to time out.
                self.connects = connects;
                self.inner = None;
            }
            let Some(inner) = self.inner.as_mut() else {
                let from = self.next.map_or(self.from, ReadFrom::Seq);
                match self.reader.open(self.kind, from, self.filter.clone()).await {
                    Ok(messages) => {
                        tracing::debug!(
                            stream = self.kind.name(),
                            ?from,
                            "read reopened after a reconnect"
                        );
                        self.inner = Some(Box::pin(messages));
                        continue;
                    }
                    Err(e) => {
                        tokio::time::sleep(REOPEN_PAUSE).await;
                        return Some((Err(e), self));
                    }
                }
            };
            tokio::select! {
                biased;
                item = inner.next() => {
                    match item {
                        Some(item) => {
                            if let Ok(raw) = &item {
                                self.next = Some(raw.seq.next());
                            }
                            return Some((item, self));
                        }
                        None => {
                            // The ordered consumer gave up (deleted, or its stream went
                            // away for a while): a read follows forever, so open another.
                            tracing::debug!(stream = self.kind.name(), "read ended; reopening");
                            self.inner = None;
                            tokio::time::sleep(REOPEN_PAUSE).await;
                        }
                    }
                }
                _ = self.tick.tick() => {}
            }
        }
    }
}
