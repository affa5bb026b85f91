//! `cairn events`: the event log as JSON lines, one object per message:
//! `{seq, time, type, subject, id, cause, data}`. An undecodable message is printed with
//! `type: null` and an `error`, never skipped silently.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_shared::{Seq, Timestamp};
use cairn_streams::{ReadFrom, Reader, StreamKind};
use clap::Args;
use futures::StreamExt;

use crate::Global;
use crate::records::Record;

#[derive(Args)]
pub struct EventsArgs {
    /// Start at this stream sequence.
    #[arg(long, conflicts_with = "since")]
    from_seq: Option<u64>,
    /// Start at this time: RFC 3339 (2026-11-23T10:02:00Z) or a duration ago (10m).
    #[arg(long)]
    since: Option<String>,
    /// Keep printing new events as they are appended.
    #[arg(long)]
    follow: bool,
}

/// Parses `--since`: an RFC 3339 time, or a duration meaning that long ago.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(Timestamp::from_system_time(t));
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(Timestamp(
            now.0
                .saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)),
        )),
        Err(_) => bail!(
            "invalid --since {text:?}: write a time like 2026-11-23T10:02:00Z or a duration like 10m"
        ),
    }
}

pub async fn run(global: &Global, args: EventsArgs) -> Result<()> {
    let from = match (args.from_seq, &args.since) {
        (Some(seq), _) => ReadFrom::Seq(Seq(seq)),
        (None, Some(since)) => ReadFrom::Time(parse_since(since, Timestamp::now())?),
        (None, None) => ReadFrom::Start,
    };
    let reader = Reader::new(global.jetstream("cairn-events").await?);
    let bounds = tokio::time::timeout(Duration::from_secs(10), reader.bounds(StreamKind::Events))
        .await
        .with_context(|| format!("no answer from NATS at {}", global.nats))?
        .context(
            "the event stream is not available (has an orchestrator ever run against this server?)",
        )?;
    // Without --follow, print what the log holds now and stop.
    let end = bounds.last;
    if !args.follow && (end == Seq::ZERO || matches!(from, ReadFrom::Seq(s) if s > end)) {
        return Ok(());
    }
    let mut messages = std::pin::pin!(reader.read(StreamKind::Events, from, None).await?);
    let mut out = std::io::stdout().lock();
    loop {
        let next = if args.follow {
            messages.next().await
        } else {
            // A time-based start may begin past the end: stop when nothing more arrives.
            match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
                Ok(item) => item,
                Err(_) => break,
            }
        };
        let Some(raw) = next else { break };
        let raw = raw?;
        let seq = raw.seq;
        let line = serde_json::Value::Object(Record::decode(StreamKind::Events, raw).fields());
        writeln!(out, "{line}").context("writing to stdout")?;
        if !args.follow && seq >= end {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        let now = Timestamp(1_800_000_000_000);
        assert_eq!(
            parse_since("10m", now).unwrap(),
            Timestamp(1_800_000_000_000 - 600_000)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z", now).unwrap(),
            Timestamp(1000)
        );
        assert!(parse_since("yesterday-ish", now).is_err());
    }
}
