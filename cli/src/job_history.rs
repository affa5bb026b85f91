//! `cairn job history NAME`: every version of a job as the log recorded it (when, by which
//! command, with which spec) and, with `-p`, a line diff of each version's spec against the
//! one before, like `nomad job history -p`.

use anyhow::{Context, Result, bail};
use cairn_shared::event::JobDeployed;
use cairn_shared::{CommandId, Event, JobId, JobSpec, Seq};
use serde::Serialize;

use crate::Global;
use crate::output;
use crate::records::{self, Body};
use crate::replay;

/// One version of a job.
#[derive(Serialize)]
struct Version {
    version: u32,
    job_id: JobId,
    seq: Seq,
    time: String,
    command_id: Option<CommandId>,
    /// The earlier version whose spec this one brought back (`cairn job revert`).
    reverted_to: Option<u32>,
    spec: JobSpec,
    /// The spec against the previous version's, line by line (`+ `, `- `, `  `); only with -p.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<String>>,
}

impl Version {
    const HEADERS: [&'static str; 6] =
        ["version", "job_id", "seq", "time", "command", "reverted_to"];

    fn row(&self) -> Vec<String> {
        vec![
            self.version.to_string(),
            self.job_id.to_string(),
            self.seq.to_string(),
            self.time.clone(),
            self.command_id
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            self.reverted_to
                .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        ]
    }
}

pub async fn run(global: &Global, job: &str, with_diff: bool) -> Result<()> {
    let reader = replay::reader(global).await?;
    replay::events_bounds(&reader).await?;
    // Deploys are filed under their job, so the other events are never read.
    let events = records::read_held(
        &reader,
        cairn_streams::StreamKind::Events,
        &[cairn_streams::subjects::JOB_EVENTS.into()],
    )
    .await?;
    let mut versions: Vec<Version> = Vec::new();
    for record in events {
        let Body::Event(envelope) = record.body else {
            continue;
        };
        let Event::JobDeployed(JobDeployed {
            job: id,
            version,
            spec,
            reverted_to,
        }) = envelope.body
        else {
            continue;
        };
        if spec.name != job && id.to_string() != job {
            continue;
        }
        versions.push(Version {
            version,
            job_id: id,
            seq: record.seq,
            time: envelope.at.to_string(),
            command_id: envelope.causation,
            reverted_to,
            spec,
            diff: None,
        });
    }
    if versions.is_empty() {
        bail!("unknown job {job:?}: the event log records no deploy of it");
    }
    if with_diff {
        let mut previous = String::new();
        for v in &mut versions {
            let text = serde_saphyr::to_string(&v.spec).context("rendering a spec")?;
            v.diff = Some(diff(&previous, &text));
            previous = text;
        }
    }
    output::print(global.output, &versions, || {
        if !with_diff {
            return output::table(
                &Version::HEADERS,
                versions
                    .iter()
                    .map(|v| v.row().into_iter().map(Into::into).collect())
                    .collect(),
            );
        }
        let mut out = String::new();
        for v in &versions {
            let [version, id, seq, time, command, _] =
                <[String; 6]>::try_from(v.row()).unwrap_or_else(|_| Default::default());
            let revert = v
                .reverted_to
                .map(|to| format!(", a revert to version {to}"))
                .unwrap_or_default();
            out += &format!(
                "Version {version} (job {id}, sequence {seq}, {time}, command {command}{revert})\n"
            );
            for line in v.diff.iter().flatten() {
                out += &format!("  {line}\n");
            }
            out += "\n";
        }
        out
    })
}

/// A line diff of `old` to `new`: every line of both, in order, marked `- ` (only in old),
/// `+ ` (only in new) or `  ` (in both), by their longest common subsequence. Specs are
/// short, so the quadratic table is fine.
pub fn diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diffs_mark_removed_added_and_kept_lines() {
        assert_eq!(
            diff(
                "name: a\ncount: 1\ntype: batch\n",
                "name: a\ncount: 3\ntype: batch\n"
            ),
            ["  name: a", "- count: 1", "+ count: 3", "  type: batch"]
        );
        assert_eq!(diff("", "x\n"), ["+ x"]);
        assert_eq!(diff("x\n", ""), ["- x"]);
    }
}
