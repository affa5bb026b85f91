//! The one error type of the edge crate.

use std::path::PathBuf;

use cairn_shared::NodeId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The data directory was created by another node. A data dir holds one node's
    /// identity, assignments and unsent reports: adopting it under another id would report
    /// that node's work as ours.
    #[error(
        "data directory {} belongs to node {recorded:?}, not {requested:?}; use that node id or another --data directory",
        dir.display()
    )]
    NodeMismatch {
        dir: PathBuf,
        recorded: NodeId,
        requested: NodeId,
    },

    /// The local redb file could not be opened or created.
    #[error("opening {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },

    /// A read or write of the local redb file failed.
    #[error("local store: {0}")]
    Store(String),

    /// The local store has stopped (the edge is shutting down or its writer died).
    #[error("local store is closed")]
    StoreClosed,

    #[error("encoding: {0}")]
    Codec(#[from] cairn_shared::codec::Error),

    #[error("invalid configuration: {0}")]
    Config(String),

    /// The metrics endpoint (`--metrics`) could not listen or serve.
    #[error("metrics: {0}")]
    Metrics(String),
}

impl Error {
    /// Whether trying the same thing again may succeed. Store errors are disk trouble and
    /// identity or configuration errors need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(_) => true,
            Error::NodeMismatch { .. }
            | Error::Open { .. }
            | Error::StoreClosed
            | Error::Codec(_)
            | Error::Config(_)
            | Error::Metrics(_) => false,
        }
    }
}

macro_rules! store_error {
    ($($t:ty),+) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        })+
    };
}
store_error!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
