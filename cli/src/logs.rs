//! `cairn execution logs ID [--follow]`: the task's output as it was written, from the log
//! stream. Without --follow it prints what is stored and stops; with it, it keeps printing
//! until the execution's end marker.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_orchestrator::query::{Answer, ExecutionIdQuery, endpoint};
use cairn_orchestrator::views::ExecutionView;
use cairn_streams::logs::LogEntry;
use cairn_streams::{ReadFrom, Reader, StreamKind, subjects};
use futures::StreamExt;

use crate::Global;

/// How long a non-following read waits for a log that has nothing stored yet.
const QUIET: Duration = Duration::from_secs(1);

pub async fn run(global: &Global, execution: String, follow: bool) -> Result<()> {
    // Through the orchestrator, so an unknown id is named as such rather than printing nothing.
    let answer: Answer<ExecutionView> =
        crate::query::ask(global, endpoint::EXECUTION, &ExecutionIdQuery { execution }).await?;
    let execution = answer.result;
    let reader = Reader::new(global.jetstream("cairn-logs").await?);
    let lines = reader
        .read(
            StreamKind::Logs,
            ReadFrom::Start,
            Some(subjects::log_of(execution.id)),
        )
        .await?;
    let mut lines = std::pin::pin!(lines);
    let mut out = std::io::stdout().lock();
    loop {
        let next = if follow {
            lines.next().await
        } else {
            match tokio::time::timeout(QUIET, lines.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        let Some(raw) = next else { break };
        let raw = raw?;
        let pending = raw.pending;
        match LogEntry::decode(raw.headers.as_ref(), raw.payload) {
            Ok(LogEntry::Output { data, .. }) => {
                out.write_all(&data).context("writing to stdout")?
            }
            Ok(LogEntry::End { attempt, .. }) if attempt == execution.attempt => break,
            Ok(LogEntry::End { .. }) => {}
            Err(reason) => tracing::warn!(%reason, "skipping a log message that does not decode"),
        }
        out.flush()?;
        if !follow && pending == 0 {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
