//! The one error type of the streams crate.

use cairn_shared::Seq;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An optimistic-concurrency expectation failed: someone else appended first. Catch up
    /// to `actual` and decide again. `actual` is what the server reported, when it did.
    #[error("append conflict: expected last sequence {expected}, stream is at {}", actual.map_or("an unreported sequence".to_owned(), |s| s.to_string()))]
    Conflict { expected: Seq, actual: Option<Seq> },

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

    #[error("setting up stream {stream}: {reason}")]
    Setup { stream: String, reason: String },

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
            Error::Publish { retryable, .. } => *retryable,
            Error::Connect(_) | Error::Read { .. } | Error::Consumer { .. } => true,
            Error::Codec(_) | Error::Setup { .. } | Error::Trimmed { .. } => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
