//! Appending to cairn's streams: every publish carries a `Nats-Msg-Id` (so a retried publish
//! is stored once) and may carry an optimistic-concurrency expectation. Sending and awaiting
//! the ack are separate steps, so many appends can be in flight at once.

use std::collections::VecDeque;
use std::future::IntoFuture;

use async_nats::HeaderMap;
use async_nats::Subject;
use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID,
};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use cairn_shared::codec::Envelope;
use cairn_shared::{Assignment, Command, Event, ExecutionId, JobId, NodeId, Report, Seq};

use crate::error::{Error, Result};
use crate::subjects;

/// An optimistic-concurrency expectation checked by the server before storing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Store unconditionally (de-duplication by message id still applies).
    Nothing,
    /// The stream's last sequence must be this one.
    LastSeq(Seq),
    /// The last message on this subject must be at this sequence; `Seq::ZERO` means the
    /// subject must be empty.
    LastSubjectSeq(Seq),
}

impl Expect {
    /// Sets the header the server checks, if any.
    fn add_header(self, headers: &mut HeaderMap) {
        match self {
            Expect::Nothing => {}
            Expect::LastSeq(seq) => {
                headers.insert(NATS_EXPECTED_LAST_SEQUENCE, seq.0.to_string().as_str())
            }
            Expect::LastSubjectSeq(seq) => headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                seq.0.to_string().as_str(),
            ),
        }
    }

    fn expected(self) -> Option<Seq> {
        match self {
            Expect::Nothing => None,
            Expect::LastSeq(s) | Expect::LastSubjectSeq(s) => Some(s),
        }
    }
}

/// A message ready to publish: subject, de-duplication id, payload and expectation.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: Subject,
    pub msg_id: String,
    pub payload: Bytes,
    pub expect: Expect,
}

impl Outgoing {
    /// An event on its entity's subject, de-duplicated by event id: for events that name
    /// everything their subject needs, which is all but `ExecutionStopRequested` and
    /// `ExecutionStateChanged` (their subject names the execution's job, which they do not
    /// carry: those are refused, see [`Outgoing::event_with`]).
    pub fn event(envelope: &Envelope<Event>) -> Result<Self> {
        Self::event_with(envelope, |_| None)
    }

    /// An event on its entity's subject, where `job_of` gives the job of an execution
    /// whose event does not name it, as [`subjects::event`] asks: the publisher, which
    /// decided the event, knows it.
    pub fn event_with(
        envelope: &Envelope<Event>,
        job_of: impl FnOnce(ExecutionId) -> Option<JobId>,
    ) -> Result<Self> {
        Ok(Self {
            subject: subjects::event(&envelope.body, job_of)?,
            msg_id: envelope.id.to_string(),
            payload: envelope.encode()?.into(),
            expect: Expect::Nothing,
        })
    }

    /// A command, de-duplicated by command id.
    pub fn command(envelope: &Envelope<Command>) -> Result<Self> {
        Ok(Self {
            subject: subjects::command(&envelope.body),
            msg_id: envelope.id.to_string(),
            payload: envelope.encode()?.into(),
            expect: Expect::Nothing,
        })
    }

    /// A report from `node`, de-duplicated by report id.
    pub fn report(node: &NodeId, envelope: &Envelope<Report>) -> Result<Self> {
        Ok(Self {
            subject: subjects::report(node),
            msg_id: envelope.id.to_string(),
            payload: envelope.encode()?.into(),
            expect: Expect::Nothing,
        })
    }

    /// Work for `node`. The message id is derived from the work itself (execution,
    /// attempt, kind), so every dispatcher that derives it (another orchestrator, or this
    /// one after a restart) queues it once within the duplicate window; beyond it the edge
    /// de-duplicates by execution and attempt.
    pub fn assignment(node: &NodeId, envelope: &Envelope<Assignment>) -> Result<Self> {
        let msg_id = match &envelope.body {
            Assignment::RunExecution(run) => format!("{}.{}.run", run.execution, run.attempt),
            Assignment::StopExecution(stop) => format!("{}.{}.stop", stop.execution, stop.attempt),
        };
        Ok(Self {
            subject: subjects::assignments(node),
            msg_id,
            payload: envelope.encode()?.into(),
            expect: Expect::Nothing,
        })
    }

    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: Seq,
    /// The message id was seen within the duplicate window: nothing new was stored and
    /// `seq` is the original's. A success, not an error.
    pub duplicate: bool,
}

/// Appends to cairn's streams. Cheap to clone; clones share one connection, whose order
/// the server preserves.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    /// Acks in flight per connection before `send` waits for one to return.
    pub const MAX_IN_FLIGHT: usize = 8_192;

    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Sends without waiting for the ack. Messages sent one after another on this publisher
    /// reach the server in that order, so expectations can be chained (`LastSeq(n)`,
    /// `LastSeq(n + 1)`, …) while their acks are still in flight.
    ///
    /// Each unawaited [`PendingAppend`] holds one of the connection's
    /// [`Publisher::MAX_IN_FLIGHT`] slots until it is awaited or dropped, and `send` waits
    /// for a free slot: a task that keeps more than that many unawaited waits forever. Use a
    /// [`Pipeline`], which bounds its own window, to keep many appends in flight.
    pub async fn send(&self, out: Outgoing) -> Result<PendingAppend> {
        self.send_with_headers(out, HeaderMap::new()).await
    }

    /// Like [`Publisher::send`], with extra headers beside the ones cairn sets (message id,
    /// expectations), which win on a clash. Log chunks use this to say which output they
    /// carry and where the log ends.
    pub async fn send_with_headers(
        &self,
        out: Outgoing,
        mut headers: HeaderMap,
    ) -> Result<PendingAppend> {
        headers.insert(NATS_MESSAGE_ID, out.msg_id.as_str());
        out.expect.add_header(&mut headers);
        let ack = self
            .js
            .send_publish(
                out.subject.clone(),
                PublishMessage::build()
                    .payload(out.payload)
                    .headers(headers),
            )
            .await
            .map_err(|e| publish_error(&out.subject, out.expect, e))?;
        Ok(PendingAppend {
            ack,
            subject: out.subject,
            expect: out.expect,
        })
    }

    /// Sends and waits for the ack.
    pub async fn append(&self, out: Outgoing) -> Result<Appended> {
        self.send(out).await?.await
    }
}

/// Keeps up to `window` appends in flight on one publisher and hands their acks back in
/// the order they were sent.
pub struct Pipeline {
    publisher: Publisher,
    window: usize,
    in_flight: VecDeque<PendingAppend>,
}

impl Pipeline {
    /// Enough to keep a loopback connection busy while leaving slots for other users.
    pub const DEFAULT_WINDOW: usize = Publisher::MAX_IN_FLIGHT / 4;

    pub fn new(publisher: Publisher, window: usize) -> Self {
        let window = window.clamp(1, Publisher::MAX_IN_FLIGHT);
        Self {
            publisher,
            window,
            in_flight: VecDeque::with_capacity(window),
        }
    }

    /// Sends `out`. When the window is full it first waits for the oldest ack and returns
    /// it; `Err` means `out` itself could not be sent.
    pub async fn send(&mut self, out: Outgoing) -> Result<Option<Result<Appended>>> {
        self.send_with_headers(out, HeaderMap::new()).await
    }

    /// Like [`Pipeline::send`], with extra headers (see [`Publisher::send_with_headers`]).
    pub async fn send_with_headers(
        &mut self,
        out: Outgoing,
        headers: HeaderMap,
    ) -> Result<Option<Result<Appended>>> {
        let oldest = if self.in_flight.len() >= self.window {
            self.next().await
        } else {
            None
        };
        let pending = self.publisher.send_with_headers(out, headers).await?;
        self.in_flight.push_back(pending);
        Ok(oldest)
    }

    /// Waits for the oldest ack in flight; `None` when nothing is in flight.
    pub async fn next(&mut self) -> Option<Result<Appended>> {
        match self.in_flight.pop_front() {
            Some(pending) => Some(pending.await),
            None => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends every message and waits for every ack, failing at the first refusal: a bulk
    /// load (histories for tests and benchmarks, a restore) at the pipelined rate.
    pub async fn append_all(&mut self, all: impl IntoIterator<Item = Outgoing>) -> Result<()> {
        for out in all {
            if let Some(ack) = self.send(out).await? {
                ack?;
            }
        }
        while let Some(ack) = self.next().await {
            ack?;
        }
        Ok(())
    }
}

/// An append whose ack has not arrived yet. Await it to learn where the message landed.
pub struct PendingAppend {
    ack: PublishAckFuture,
    subject: Subject,
    expect: Expect,
}

impl IntoFuture for PendingAppend {
    type Output = Result<Appended>;
    type IntoFuture = futures::future::BoxFuture<'static, Result<Appended>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let ack = self
                .ack
                .await
                .map_err(|e| publish_error(&self.subject, self.expect, e))?;
            Ok(Appended {
                seq: Seq(ack.sequence),
                duplicate: ack.duplicate,
            })
        })
    }
}

fn publish_error(subject: &Subject, expect: Expect, e: PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => Error::Conflict {
            expected: expect.expected().unwrap_or(Seq::ZERO),
            actual: reported_sequence(&e),
        },
        kind => Error::Publish {
            subject: subject.to_string(),
            reason: e.to_string(),
            // Safe to retry: the message id makes a second store of the same message a no-op.
            // "No stream" is what nobody answering means (503), and on a cluster that is a
            // stream without a leader for a moment (just created, or its leader lost).
            retryable: matches!(
                kind,
                PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::MaxAckPending
                    | PublishErrorKind::StreamNotFound
            ),
        },
    }
}

/// The server says `wrong last sequence: N`; N is the sequence it holds.
fn reported_sequence(e: &PublishError) -> Option<Seq> {
    parse_wrong_last_sequence(&std::error::Error::source(e)?.to_string())
}

fn parse_wrong_last_sequence(text: &str) -> Option<Seq> {
    let rest = text.split("wrong last sequence:").nth(1)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Seq)
}

/// The most messages the server accepts in one atomic batch.
pub const MAX_ATOMIC_BATCH: usize = 1_000;

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

#[derive(serde::Deserialize)]
struct BatchReply {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
}

impl Publisher {
    /// Appends `messages` as one atomic batch (ADR-50): the server stores all of them,
    /// contiguously, or none. `expect` is checked against the stream before the first.
    ///
    /// JetStream refuses `Nats-Msg-Id` inside a batch, so a batch is not de-duplicated by
    /// id: a retried batch must carry an expectation (`Expect::LastSeq`), which fails with
    /// `Conflict` if the first attempt was stored after all. A single message is appended
    /// normally, keeping its message id.
    pub async fn append_atomic(&self, messages: Vec<Outgoing>, expect: Expect) -> Result<Appended> {
        let count = messages.len();
        if count == 0 {
            return Err(Error::Publish {
                subject: String::new(),
                reason: "an atomic batch needs at least one message".into(),
                retryable: false,
            });
        }
        if count > MAX_ATOMIC_BATCH {
            return Err(Error::Publish {
                subject: messages[0].subject.to_string(),
                reason: format!(
                    "{count} messages exceed the atomic batch limit of {MAX_ATOMIC_BATCH}"
                ),
                retryable: false,
            });
        }
        if count == 1 {
            let mut messages = messages;
            let single = messages.remove(0).expect(expect);
            return self.append(single).await;
        }
        let client = self.js.client();
        let batch_id = cairn_shared::EventId::generate().to_string();
        let mut last_subject = String::new();
        for (i, out) in messages.into_iter().enumerate() {
            let sequence = i + 1;
            let mut headers = HeaderMap::new();
            headers.insert(NATS_BATCH_ID, batch_id.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, sequence.to_string().as_str());
            if sequence == 1 {
                expect.add_header(&mut headers);
            }
            let commit = sequence == count;
            if commit {
                headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
            }
            last_subject = out.subject.to_string();
            let transport = |e: String| Error::Publish {
                subject: out.subject.to_string(),
                reason: e,
                retryable: true,
            };
            // Only the commit asks for a reply: the server checks the expectation and
            // everything else when it commits, and answers the commit with the batch's
            // ack or the first failure. One round trip per batch, whatever its size.
            if commit {
                let reply = client
                    .request_with_headers(out.subject.clone(), headers, out.payload)
                    .await
                    .map_err(|e| transport(e.to_string()))?;
                let parsed: BatchReply = serde_json::from_slice(&reply.payload)
                    .map_err(|e| transport(format!("unreadable batch reply: {e}")))?;
                if let Some(error) = parsed.error {
                    return Err(batch_error(&out.subject, expect, error));
                }
                if parsed.count != count as u64 {
                    return Err(transport(format!(
                        "batch ack counts {} of {count} messages",
                        parsed.count
                    )));
                }
                return Ok(Appended {
                    seq: Seq(parsed.seq),
                    duplicate: false,
                });
            }
            client
                .publish_with_headers(out.subject.clone(), headers, out.payload)
                .await
                .map_err(|e| transport(e.to_string()))?;
        }
        Err(Error::Publish {
            subject: last_subject,
            reason: "the batch ended without a commit".into(),
            retryable: false,
        })
    }
}

fn batch_error(subject: &Subject, expect: Expect, error: ApiError) -> Error {
    if jetstream::ErrorCode(u64::from(error.err_code))
        == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
    {
        let actual = parse_wrong_last_sequence(&error.description);
        return Error::Conflict {
            expected: expect.expected().unwrap_or(Seq::ZERO),
            actual,
        };
    }
    Error::Publish {
        subject: subject.to_string(),
        reason: format!("{} (error code {})", error.description, error.err_code),
        retryable: false,
    }
}
