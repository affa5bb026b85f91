//! The one error type of the orchestrator crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("view store: {0}")]
    Store(#[from] redb::Error),

    #[error("view store {path}: {reason}")]
    Open { path: String, reason: String },

    #[error("a stored view does not decode ({table} {key}): {reason}")]
    CorruptView {
        table: &'static str,
        key: String,
        reason: String,
    },

    #[error(transparent)]
    Streams(#[from] cairn_streams::Error),

    /// A part of the orchestrator could not go on.
    #[error("the {part} stopped: {reason}")]
    Stopped { part: &'static str, reason: String },
}

impl Error {
    /// `part` (the decider, the projector, …) could not go on, for `reason`.
    pub fn stopped(part: &'static str, reason: impl Into<String>) -> Self {
        Error::Stopped {
            part,
            reason: reason.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Streams(e) => e.is_retryable(),
            Error::Store(_)
            | Error::Open { .. }
            | Error::CorruptView { .. }
            | Error::Stopped { .. } => false,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),+) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.into())
            }
        }
    )+};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
