//! Every version of a job as the event log recorded it (when, by which command, with which
//! spec, and a line diff of each spec against the one before, like `nomad job history -p`):
//! `cairn job history` prints it and `GET /v1/jobs/{key}/versions` serves it.

use cairn_shared::event::JobDeployed;
use cairn_shared::{CommandId, Event, JobId, JobSpec, Seq};
use cairn_streams::{Reader, StreamKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::records::{Body, Record};

/// One version of a job.
#[derive(Clone, Debug, Serialize)]
pub struct JobVersion {
    pub version: u32,
    pub job_id: JobId,
    pub seq: Seq,
    pub time: String,
    pub command_id: Option<CommandId>,
    /// The earlier version whose spec this one brought back (`cairn job revert`).
    pub reverted_to: Option<u32>,
    pub spec: JobSpec,
    /// The spec (as YAML) against the previous version's, line by line (`+ `, `- `, `  `);
    /// only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Vec<String>>,
}

/// Every version of the job named `key` (its name or its id) the log holds now, oldest
/// first, with diffs when `with_diff`; none when the log records no deploy of it.
pub async fn versions(reader: &Reader, key: &str, with_diff: bool) -> Result<Vec<JobVersion>> {
    // Deploys are filed under their job, so the other events are never read.
    let held = reader
        .held(
            StreamKind::Events,
            &[cairn_streams::subjects::JOB_EVENTS.into()],
        )
        .await?;
    let mut versions: Vec<JobVersion> = Vec::new();
    for raw in held {
        let record = Record::decode(StreamKind::Events, raw);
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
        if spec.name != key && id.to_string() != key {
            continue;
        }
        versions.push(JobVersion {
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
    if with_diff {
        let mut previous = String::new();
        for v in &mut versions {
            let text = serde_saphyr::to_string(&v.spec)
                .map_err(|e| Error::stopped("job history", format!("rendering a spec: {e}")))?;
            v.diff = Some(diff(&previous, &text));
            previous = text;
        }
    }
    Ok(versions)
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
