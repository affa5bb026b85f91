//! `cairn audit verify`: proves the live views are what the log implies. The orchestrator
//! serves one digest per view table together with the sequence its views reflect; the CLI
//! replays the log into a fresh file up to exactly that sequence and compares digests. When
//! a table differs it pages through both sides' row hashes, in key order, to the first row
//! that differs and shows it from both. If the live views move on meanwhile (every answer
//! says its sequence), the replay catches up and compares again.

use anyhow::{Result, bail};
use cairn_orchestrator::digest::{RowHash, RowValue, TableDigest};
use cairn_orchestrator::query::{Answer, RowQuery, RowsQuery, endpoint};
use cairn_shared::Seq;
use serde::Serialize;

use crate::Global;
use crate::output;
use crate::replay::{self, Replay};

/// Comparisons tried while the live views keep moving before giving up.
const ATTEMPTS: usize = 10;

/// The verdict, as `-o json` prints it.
#[derive(Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
enum Verdict {
    Match {
        seq: Seq,
        tables: Vec<TableDigest>,
    },
    Mismatch {
        seq: Seq,
        table: String,
        key: String,
        live: Option<RowValue>,
        replay: Option<RowValue>,
    },
}

/// What comparing at one sequence found.
enum Compared {
    Same(Vec<TableDigest>),
    Differs {
        table: String,
        key: String,
    },
    /// The live views moved on while we looked: compare again.
    Moved,
}

pub async fn run(global: &Global) -> Result<()> {
    let reader = replay::reader(global).await?;
    let replay = Replay::create()?;
    for _ in 0..ATTEMPTS {
        let live: Answer<Vec<TableDigest>> =
            crate::query::ask(global, endpoint::DIGESTS, &()).await?;
        let seq = live.applied_seq;
        if seq < replay.applied()? {
            bail!(
                "the live views went back to sequence {seq} while this ran (were they rebuilt?): run it again"
            );
        }
        replay.advance(&reader, seq).await?;
        let verdict = match compare(global, &replay, seq, live.result).await? {
            Compared::Moved => continue,
            Compared::Same(tables) => Verdict::Match { seq, tables },
            Compared::Differs { table, key } => {
                let query = RowQuery {
                    table: table.clone(),
                    key: key.clone(),
                };
                let live: Answer<Option<RowValue>> =
                    crate::query::ask(global, endpoint::ROW, &query).await?;
                if live.applied_seq != seq {
                    continue;
                }
                let replayed: Answer<Option<RowValue>> = replay.ask(endpoint::ROW, &query).await?;
                Verdict::Mismatch {
                    seq,
                    table,
                    key,
                    live: live.result,
                    replay: replayed.result,
                }
            }
        };
        return show(global, &verdict);
    }
    bail!("the live views kept moving: no comparison at one sequence in {ATTEMPTS} tries")
}

fn show(global: &Global, verdict: &Verdict) -> Result<()> {
    output::print(global.output, verdict, || match verdict {
        Verdict::Match { seq, tables } => format!(
            "match: the live views equal a replay of the log up to sequence {seq} ({} tables, {} rows)\n",
            tables.len(),
            tables.iter().map(|t| t.rows).sum::<u64>()
        ),
        Verdict::Mismatch {
            seq,
            table,
            key,
            live,
            replay,
        } => {
            let shown = |v: &Option<RowValue>| match v {
                None => "(no such row)".to_owned(),
                Some(RowValue {
                    value: Some(value), ..
                }) => value.to_string(),
                Some(RowValue { error, .. }) => error.clone().unwrap_or_default(),
            };
            format!(
                "mismatch at sequence {seq}: table {table}, key {key}\n  live:   {}\n  replay: {}\n",
                shown(live),
                shown(replay)
            )
        }
    })?;
    if let Verdict::Mismatch { seq, .. } = verdict {
        bail!("the live views differ from a replay of the log up to sequence {seq}");
    }
    Ok(())
}

async fn compare(
    global: &Global,
    replay: &Replay,
    seq: Seq,
    live: Vec<TableDigest>,
) -> Result<Compared> {
    let local: Answer<Vec<TableDigest>> = replay.ask(endpoint::DIGESTS, &()).await?;
    let differing = local
        .result
        .iter()
        .find(|mine| !live.contains(mine))
        .map(|t| t.table.clone())
        .or_else(|| {
            // A table only the live side has (a newer orchestrator) differs too.
            live.iter()
                .find(|theirs| !local.result.iter().any(|t| t.table == theirs.table))
                .map(|t| t.table.clone())
        });
    let Some(table) = differing else {
        return Ok(Compared::Same(local.result));
    };
    let mut after: Option<String> = None;
    loop {
        let query = RowsQuery {
            table: table.clone(),
            after: after.clone(),
            limit: Some(RowsQuery::MAX_LIMIT),
        };
        let theirs: Answer<Vec<RowHash>> =
            crate::query::ask(global, endpoint::ROWS, &query).await?;
        if theirs.applied_seq != seq {
            return Ok(Compared::Moved);
        }
        let mine: Answer<Vec<RowHash>> = replay.ask(endpoint::ROWS, &query).await?;
        if let Some(key) = first_difference(&theirs.result, &mine.result) {
            return Ok(Compared::Differs { table, key });
        }
        match mine.result.last() {
            Some(last) if mine.result.len() == RowsQuery::MAX_LIMIT => {
                after = Some(last.key.clone());
            }
            // Every row is the same: the digests were of different moments after all.
            _ => return Ok(Compared::Moved),
        }
    }
}

/// The smallest key whose row differs between two pages that start at the same key.
fn first_difference(theirs: &[RowHash], mine: &[RowHash]) -> Option<String> {
    for i in 0..theirs.len().max(mine.len()) {
        match (theirs.get(i), mine.get(i)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => return Some(a.key.clone().min(b.key.clone())),
            (Some(only), None) | (None, Some(only)) => return Some(only.key.clone()),
            (None, None) => break,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, hash: &str) -> RowHash {
        RowHash {
            key: key.into(),
            hash: hash.into(),
        }
    }

    #[test]
    fn the_first_differing_key_is_found_whichever_side_has_it() {
        let a = [row("a", "1"), row("b", "2"), row("c", "3")];
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&a, &[row("a", "1"), row("b", "9"), row("c", "3")]),
            Some("b".into())
        );
        // A row missing on one side shows as the smaller of the two keys at that place.
        assert_eq!(
            first_difference(&a, &[row("a", "1"), row("c", "3")]),
            Some("b".into())
        );
        assert_eq!(first_difference(&a, &a[..2]), Some("c".into()));
    }
}
