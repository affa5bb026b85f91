//! `cairn job history NAME`: every version of a job as the log recorded it (read in
//! `cairn_orchestrator::history`, which the HTTP API serves too) as a table or, with `-p`,
//! each version's spec diffed against the one before, like `nomad job history -p`.

use anyhow::{Result, bail};
use cairn_orchestrator::history::{self, JobVersion};

use crate::Global;
use crate::output;
use crate::replay;

const HEADERS: [&str; 6] = ["version", "job_id", "seq", "time", "command", "reverted_to"];

fn row(v: &JobVersion) -> Vec<String> {
    vec![
        v.version.to_string(),
        v.job_id.to_string(),
        v.seq.to_string(),
        v.time.clone(),
        v.command_id
            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        v.reverted_to
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
    ]
}

pub async fn run(global: &Global, job: &str, with_diff: bool) -> Result<()> {
    let reader = replay::reader(global).await?;
    replay::events_bounds(&reader).await?;
    let versions = history::versions(&reader, job, with_diff).await?;
    if versions.is_empty() {
        bail!("unknown job {job:?}: the event log records no deploy of it");
    }
    output::print(global.output, &versions, || {
        if !with_diff {
            return output::table(
                &HEADERS,
                versions
                    .iter()
                    .map(|v| row(v).into_iter().map(Into::into).collect())
                    .collect(),
            );
        }
        let mut out = String::new();
        for v in &versions {
            let [version, id, seq, time, command, _] =
                <[String; 6]>::try_from(row(v)).unwrap_or_else(|_| Default::default());
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
