//! Reading whole streams or ranges of them as [`Record`]s (decoded in
//! `cairn_orchestrator::records`): `cairn audit export` and `cairn audit history` read the
//! log through here.

use anyhow::Result;
use async_nats::Subject;
use cairn_shared::Seq;
use cairn_streams::{ReadFrom, Reader, StreamKind};
use futures::StreamExt;

pub use cairn_orchestrator::records::{Body, Record};

/// Calls `each` with every message of `kind` from `from` to `to` (both inclusive, as they
/// stand now) in order, and returns how many there were. Refuses with `Trimmed` when `from`
/// is below what the stream still holds.
pub async fn read_range(
    reader: &Reader,
    kind: StreamKind,
    from: Seq,
    to: Seq,
    mut each: impl FnMut(Record) -> Result<()>,
) -> Result<u64> {
    if to < from || to == Seq::ZERO {
        return Ok(0);
    }
    if matches!(kind, StreamKind::Assignments(_)) {
        // A work queue (a shard on one server) refuses readers that do not take its work:
        // get message by message (a shard holds only work not yet acked or swept, so little).
        let (mut next, mut count) = (from, 0);
        while let Some(raw) = reader.next_held(kind, next).await? {
            if raw.seq > to {
                break;
            }
            next = raw.seq.next();
            each(Record::decode(kind, raw))?;
            count += 1;
        }
        return Ok(count);
    }
    // The read itself checks `from` against trimming.
    let messages = reader.read(kind, ReadFrom::Seq(from), None).await?;
    match reader.next_held(kind, from).await? {
        Some(first) if first.seq <= to => {}
        _ => return Ok(0),
    }
    let mut messages = std::pin::pin!(messages);
    let mut count = 0;
    while let Some(raw) = messages.next().await {
        let raw = raw?;
        if raw.seq > to {
            break;
        }
        let seq = raw.seq;
        each(Record::decode(kind, raw))?;
        count += 1;
        if seq >= to {
            break;
        }
    }
    Ok(count)
}

/// Every message of `kind` the stream holds now on any of `subjects` (filters that do not
/// overlap), in order; none when the stream does not exist.
pub async fn read_held(
    reader: &Reader,
    kind: StreamKind,
    subjects: &[Subject],
) -> Result<Vec<Record>> {
    if subjects.is_empty() || !exists(reader, kind).await? {
        return Ok(Vec::new());
    }
    Ok(reader
        .held(kind, subjects)
        .await?
        .into_iter()
        .map(|raw| Record::decode(kind, raw))
        .collect())
}

/// Whether `kind`'s stream exists (an orchestrator creates them all; the CLI only the
/// command stream, when it stores a command before any orchestrator ran).
pub async fn exists(reader: &Reader, kind: StreamKind) -> Result<bool> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    match reader.context().get_stream(kind.name()).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(anyhow::anyhow!("looking up {}: {e}", kind.name())),
        },
    }
}
