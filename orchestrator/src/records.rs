//! Messages of every cairn stream, decoded into one shape: the stream and sequence, the
//! subject, when the server stored it, and the command, event, report, assignment or log
//! entry it holds (or why it does not decode). `cairn events`, `cairn audit` and the HTTP
//! API's event stream all show the log through here, as the same JSON.

use cairn_shared::codec::{Envelope, Message};
use cairn_shared::{Assignment, Command, CommandId, Event, Report, Seq, Timestamp};
use cairn_streams::{LogEntry, RawMessage, StreamKind};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// What one message holds.
#[derive(Debug)]
pub enum Body {
    Command(Envelope<Command>),
    Event(Envelope<Event>),
    Report(Envelope<Report>),
    Assignment(Envelope<Assignment>),
    Log(LogEntry),
    Undecodable(String),
}

/// One message of one stream, decoded.
#[derive(Debug)]
pub struct Record {
    pub stream: StreamKind,
    pub seq: Seq,
    pub subject: String,
    /// When the server stored it, in nanoseconds: orders records of different streams.
    pub stored_at_ns: u64,
    pub body: Body,
}

impl Record {
    pub fn decode(stream: StreamKind, raw: RawMessage) -> Self {
        fn envelope<M: Message>(raw: &RawMessage, wrap: fn(Envelope<M>) -> Body) -> Body {
            Envelope::<M>::decode(&raw.payload)
                .map_or_else(|e| Body::Undecodable(e.to_string()), wrap)
        }
        let body = match stream {
            StreamKind::Commands => envelope(&raw, Body::Command),
            StreamKind::Events => envelope(&raw, Body::Event),
            StreamKind::Reports => envelope(&raw, Body::Report),
            StreamKind::Assignments(_) => envelope(&raw, Body::Assignment),
            StreamKind::Logs => LogEntry::decode(raw.headers.as_ref(), raw.payload.clone())
                .map_or_else(Body::Undecodable, Body::Log),
        };
        Self {
            stream,
            seq: raw.seq,
            subject: raw.subject.to_string(),
            stored_at_ns: raw.stored_at_ns,
            body,
        }
    }

    pub fn stored_at(&self) -> Timestamp {
        Timestamp(self.stored_at_ns / 1_000_000)
    }

    /// The message's own time: when it was decided or issued, else when it was stored.
    pub fn time(&self) -> Timestamp {
        match &self.body {
            Body::Command(e) => e.at,
            Body::Event(e) => e.at,
            Body::Report(e) => e.at,
            Body::Assignment(e) => e.at,
            Body::Log(_) | Body::Undecodable(_) => self.stored_at(),
        }
    }

    /// The type name, `None` when the message does not decode.
    pub fn type_name(&self) -> Option<&'static str> {
        match &self.body {
            Body::Command(e) => Some(e.type_name()),
            Body::Event(e) => Some(e.type_name()),
            Body::Report(e) => Some(e.type_name()),
            Body::Assignment(e) => Some(e.type_name()),
            Body::Log(LogEntry::Output { .. }) => Some("LogOutput"),
            Body::Log(LogEntry::End { .. }) => Some("LogEnd"),
            Body::Undecodable(_) => None,
        }
    }

    /// The command that caused this message, as its envelope says.
    pub fn cause(&self) -> Option<CommandId> {
        match &self.body {
            Body::Command(e) => e.causation,
            Body::Event(e) => e.causation,
            Body::Report(e) => e.causation,
            Body::Assignment(e) => e.causation,
            Body::Log(_) | Body::Undecodable(_) => None,
        }
    }

    /// `{seq, time, type, subject, id, cause, data}`, or `{seq, time, type: null, subject,
    /// error}` for a message that does not decode: one line of `cairn events`.
    pub fn fields(&self) -> Map<String, Value> {
        fn of<M: Message + Serialize>(e: &Envelope<M>) -> (Value, Value, Value)
        where
            M::Id: Serialize,
        {
            (json!(e.id), json!(e.causation), json!(e.body))
        }
        let (id, cause, data) = match &self.body {
            Body::Command(e) => of(e),
            Body::Event(e) => of(e),
            Body::Report(e) => of(e),
            Body::Assignment(e) => of(e),
            Body::Log(entry) => (Value::Null, Value::Null, log_data(entry)),
            Body::Undecodable(error) => {
                let mut fields = Map::new();
                fields.insert("seq".into(), json!(self.seq));
                fields.insert("time".into(), json!(self.stored_at().to_string()));
                fields.insert("type".into(), Value::Null);
                fields.insert("subject".into(), json!(self.subject));
                fields.insert("error".into(), json!(error));
                return fields;
            }
        };
        let mut fields = Map::new();
        fields.insert("seq".into(), json!(self.seq));
        fields.insert("time".into(), json!(self.time().to_string()));
        fields.insert("type".into(), json!(self.type_name()));
        fields.insert("subject".into(), json!(self.subject));
        fields.insert("id".into(), id);
        fields.insert("cause".into(), cause);
        fields.insert("data".into(), data);
        fields
    }

    /// One line of `cairn audit export`: [`Record::fields`] plus the stream and the time the
    /// server stored the message.
    pub fn export(&self) -> Value {
        let mut fields = self.fields();
        fields.insert("stream".into(), json!(self.stream.name()));
        fields.insert("stored".into(), json!(self.stored_at().to_string()));
        Value::Object(fields)
    }
}

/// A log entry's data: the attempt, and the text (or hex, if it is not UTF-8) or outcome.
fn log_data(entry: &LogEntry) -> Value {
    match entry {
        LogEntry::Output {
            attempt,
            stream,
            data,
        } => match std::str::from_utf8(data) {
            Ok(text) => json!({"attempt": attempt, "stream": stream.as_str(), "text": text}),
            Err(_) => {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                json!({"attempt": attempt, "stream": stream.as_str(), "hex": hex})
            }
        },
        LogEntry::End { attempt, outcome } => json!({"attempt": attempt, "outcome": outcome}),
    }
}
