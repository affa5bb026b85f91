//! The one error type of the streams crate.

use cairn_shared::{ExecutionId, Seq};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An optimistic-concurrency expectation failed: someone else appended first. Catch up
    /// to `actual` and decide again. `actual` is what the server reported, when it did.
    #[error("append conflict: expected last sequence {expected}, stream is at {}", actual.map_or("an unreported sequence".to_owned(), |s| s.to_string()))]
    Conflict { expected: Seq, actual: Option<Seq> },

    /// An execution event's subject names the execution's job and node
    /// (`cairn.evt.exec.<job>.<node>.<execution>`), and this one neither carries the
    /// `missing` one nor was given it by its publisher: published without it, the event would
    /// be missing from that job's or node's history.
    #[error(
        "{event} of execution {execution} cannot be published: its subject names the execution's {missing}, which was not given"
    )]
    Unaddressed {
        event: &'static str,
        execution: ExecutionId,
        missing: &'static str,
    },

    #[error("encoding message: {0}")]
    Codec(#[from] cairn_shared::codec::Error),

    #[error("publishing to {subject}: {reason}")]
    Publish {
        subject: String,
        reason: String,
        retryable: bool,
    },

    #[error("connecting to NATS: {0}")]
    Connect(String),

    /// Creating, checking or updating a stream failed. `retryable` when the server did not
    /// answer or said "not now" (a cluster electing its leader, or short of peers while it
    /// forms); a refusal of the settings themselves is final.
    #[error("setting up stream {stream}: {reason}")]
    Setup {
        stream: String,
        reason: String,
        retryable: bool,
    },

    /// Creating or binding a consumer failed. Retried: the usual causes (the server is
    /// unreachable or electing a leader) pass, and the operation is idempotent.
    #[error("consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },

    #[error("reading {stream}: {reason}")]
    Read { stream: String, reason: String },

    /// A replay asked for messages the stream no longer holds (trimmed by its limits).
    #[error(
        "{stream} no longer holds sequence {requested}: its first retained sequence is {first}"
    )]
    Trimmed {
        stream: String,
        requested: cairn_shared::Seq,
        first: cairn_shared::Seq,
    },
}

impl Error {
    /// Whether the same operation may succeed if simply tried again (after catching up, for
    /// a conflict).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::Publish { retryable, .. } | Error::Setup { retryable, .. } => *retryable,
            Error::Connect(_) | Error::Read { .. } | Error::Consumer { .. } => true,
            Error::Codec(_) | Error::Trimmed { .. } | Error::Unaddressed { .. } => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a failed JetStream API request may succeed later, unchanged: the server did not
/// answer in time, nobody answered, or it said "not now".
pub(crate) trait Transient {
    fn transient(&self) -> bool;
}

/// The JetStream error codes that mean "not now" rather than "no": a cluster without a
/// leader, or one whose peers have not all joined yet (an R3 stream asked of a forming
/// cluster is refused for want of resources until the third server is known).
pub(crate) fn transient_code(code: ErrorCode) -> bool {
    [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::CLUSTER_NOT_ASSIGNED,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::RAFT_GENERAL,
    ]
    .contains(&code)
}

use async_nats::jetstream::{self, ErrorCode, context, stream};

impl Transient for context::GetStreamError {
    fn transient(&self) -> bool {
        match self.kind() {
            context::GetStreamErrorKind::Request => true,
            context::GetStreamErrorKind::JetStream(e) => transient_code(e.error_code()),
            _ => false,
        }
    }
}

impl Transient for context::CreateStreamError {
    fn transient(&self) -> bool {
        match self.kind() {
            context::CreateStreamErrorKind::JetStreamUnavailable
            | context::CreateStreamErrorKind::TimedOut
            | context::CreateStreamErrorKind::Response => true,
            context::CreateStreamErrorKind::JetStream(e) => transient_code(e.error_code()),
            _ => false,
        }
    }
}

impl Transient for context::RequestError {
    fn transient(&self) -> bool {
        !matches!(self.kind(), context::RequestErrorKind::InvalidSubject)
    }
}

impl Transient for stream::ConsumerError {
    fn transient(&self) -> bool {
        match self.kind() {
            stream::ConsumerErrorKind::TimedOut | stream::ConsumerErrorKind::Request => true,
            stream::ConsumerErrorKind::JetStream(e) => transient_code(e.error_code()),
            _ => false,
        }
    }
}

impl Transient for jetstream::Error {
    fn transient(&self) -> bool {
        transient_code(self.error_code())
    }
}
