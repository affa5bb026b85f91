//! Task output on `cairn.log.<node>.<execution>`: how an edge writes it and how a follower
//! reads it back.
//!
//! Each message carries one chunk of one output stream (stdout or stderr) of one attempt,
//! raw bytes that end on a line boundary unless a single line was longer than a chunk. The
//! last message of an attempt is an end marker with an empty payload, so a follower knows
//! the log is complete instead of waiting forever. Headers, not the payload, say which is
//! which: the payload stays exactly what the task wrote.

use async_nats::HeaderMap;
use bytes::Bytes;
use cairn_shared::{ExecutionId, NodeId};

use crate::publish::{Expect, Outgoing};
use crate::subjects;

/// Which output a chunk came from: `stdout` or `stderr`.
pub const STREAM_HEADER: &str = "Cairn-Log-Stream";
/// The attempt the output belongs to (one execution's attempts share its log subject).
pub const ATTEMPT_HEADER: &str = "Cairn-Attempt";
/// Present on the end marker only; its value is the attempt's final state word
/// (`completed`, `failed`, `stopped`).
pub const END_HEADER: &str = "Cairn-Log-End";

/// One of a task's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub const fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// One message of an execution's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    /// Output, in the order the edge read it from this stream.
    Output {
        attempt: u32,
        stream: OutputStream,
        data: Bytes,
    },
    /// Nothing more will be written for this attempt.
    End { attempt: u32, outcome: String },
}

impl LogEntry {
    /// The de-duplication id of the `index`-th chunk of an attempt's output. Derived from
    /// the position, so a chunk re-sent after a crash or a lost ack is stored once.
    pub fn chunk_id(execution: ExecutionId, attempt: u32, index: u64) -> String {
        format!("{execution}.{attempt}.{index}")
    }

    /// The de-duplication id of an attempt's end marker: at most one per attempt is stored
    /// within the duplicate window, whoever writes it.
    pub fn end_id(execution: ExecutionId, attempt: u32) -> String {
        format!("{execution}.{attempt}.end")
    }

    pub fn attempt(&self) -> u32 {
        match self {
            LogEntry::Output { attempt, .. } | LogEntry::End { attempt, .. } => *attempt,
        }
    }

    /// The headers that describe this entry, as plain pairs (an outbox stores them as such).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![(ATTEMPT_HEADER.to_owned(), self.attempt().to_string())];
        match self {
            LogEntry::Output { stream, .. } => {
                pairs.push((STREAM_HEADER.to_owned(), stream.as_str().to_owned()));
            }
            LogEntry::End { outcome, .. } => {
                pairs.push((END_HEADER.to_owned(), outcome.clone()));
            }
        }
        pairs
    }

    pub fn payload(&self) -> Bytes {
        match self {
            LogEntry::Output { data, .. } => data.clone(),
            LogEntry::End { .. } => Bytes::new(),
        }
    }

    /// Reads a log message back. `Err` says why the message is not a cairn log entry.
    pub fn decode(headers: Option<&HeaderMap>, payload: Bytes) -> Result<Self, String> {
        let headers = headers.ok_or("log message without headers")?;
        let attempt = headers
            .get(ATTEMPT_HEADER)
            .ok_or("log message without an attempt header")?
            .as_str()
            .parse::<u32>()
            .map_err(|e| format!("bad {ATTEMPT_HEADER} header: {e}"))?;
        if let Some(outcome) = headers.get(END_HEADER) {
            return Ok(LogEntry::End {
                attempt,
                outcome: outcome.as_str().to_owned(),
            });
        }
        let stream = match headers.get(STREAM_HEADER).map(|v| v.as_str()) {
            Some("stdout") => OutputStream::Stdout,
            Some("stderr") => OutputStream::Stderr,
            other => return Err(format!("bad {STREAM_HEADER} header: {other:?}")),
        };
        Ok(LogEntry::Output {
            attempt,
            stream,
            data: payload,
        })
    }
}

/// Builds a header map from pairs stored as plain strings.
pub fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(name, value);
    }
    headers
}

impl Outgoing {
    /// A message of `execution`'s log written by `node`. Its headers come from
    /// [`LogEntry::header_pairs`] and go beside it through `send_with_headers`.
    pub fn log(node: &NodeId, execution: ExecutionId, msg_id: String, payload: Bytes) -> Self {
        Self {
            subject: subjects::log(node, execution),
            msg_id,
            payload,
            expect: Expect::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_headers() {
        let entries = [
            LogEntry::Output {
                attempt: 2,
                stream: OutputStream::Stderr,
                data: Bytes::from_static(b"oops\n"),
            },
            LogEntry::End {
                attempt: 2,
                outcome: "failed".into(),
            },
        ];
        for entry in entries {
            let pairs = entry.header_pairs();
            let headers = header_map(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            assert_eq!(
                LogEntry::decode(Some(&headers), entry.payload()).unwrap(),
                entry
            );
        }
        assert!(LogEntry::decode(None, Bytes::new()).is_err());
    }
}
