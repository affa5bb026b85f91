//! Queries over NATS request/reply to the orchestrator's query service: `node list`,
//! `job list`, `job describe`, `execution list`. The CLI never opens the live views; with
//! `--at-seq`/`--at` the same answers come from a replay of the log (`replay.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_orchestrator::query::{Answer, ExecutionQuery, JobDetail, JobQuery, endpoint};
use cairn_orchestrator::rows::{ExecutionRow, JobDescription, JobRow, NodeRow, RolloutProgress};
use cairn_orchestrator::store::NodeSummary;
use cairn_orchestrator::views::{ExecutionView, JobView};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Global;
use crate::output::{self, Cell, ShortIds, Tabular};
use crate::replay::{self, AsOf};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The orchestrator answered with a refusal: `code` 404 for something it does not know
/// (yet), 409 for an id prefix that matches several ids, 400 for a malformed question.
#[derive(Debug, thiserror::Error)]
#[error("{status}")]
pub struct Refused {
    pub code: u16,
    pub status: String,
}

impl Refused {
    /// Whether `error` says the asked-for thing is unknown to the views.
    pub fn is_not_found(error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<Refused>()
            .is_some_and(|r| r.code == 404)
    }

    /// Whether `error` says an id prefix matches more than one id.
    pub fn is_ambiguous(error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<Refused>()
            .is_some_and(|r| r.code == 409)
    }
}

/// Asks one endpoint and decodes its answer; a refusal becomes its one-line reason.
pub async fn ask<Q: Serialize, T: DeserializeOwned>(
    global: &Global,
    name: &str,
    query: &Q,
) -> Result<Answer<T>> {
    let client = global.connect("cairn-cli").await?;
    let payload = serde_json::to_vec(query)?;
    let subject = cairn_streams::subjects::query(name);
    let reply = match tokio::time::timeout(TIMEOUT, client.request(subject, payload.into())).await {
        Err(_) => bail!(
            "no answer from the orchestrator within {}s",
            TIMEOUT.as_secs()
        ),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => bail!(
            "no orchestrator is answering at {} (start one with `cairn orchestrator` or `cairn dev`)",
            global.nats
        ),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            bail!(
                "no answer from the orchestrator within {}s",
                TIMEOUT.as_secs()
            )
        }
        Ok(Err(e)) => bail!("asking the orchestrator: {e}"),
        Ok(Ok(reply)) => reply,
    };
    if let Some(headers) = &reply.headers
        && let Some(status) = headers.get(async_nats::service::NATS_SERVICE_ERROR)
    {
        let code = headers
            .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .and_then(|c| c.as_str().parse().ok())
            .unwrap_or(500);
        return Err(Refused {
            code,
            status: status.as_str().to_owned(),
        }
        .into());
    }
    serde_json::from_slice(&reply.payload).context("the orchestrator's answer does not decode")
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Tabular for NodeRow {
    /// Node ids are chosen by people and never shortened, so `wide` changes nothing here.
    /// Cpu and memory read allocated/offered.
    fn table(rows: &[Self], _wide: bool) -> String {
        output::table(
            &[
                "id",
                "state",
                "eligibility",
                "executions",
                "capacity",
                "cpu",
                "memory",
                "labels",
            ],
            rows.iter()
                .map(|n| {
                    vec![
                        n.id.to_string().into(),
                        Cell::state(n.state),
                        if n.draining {
                            format!("{}, draining", n.eligibility).into()
                        } else {
                            n.eligibility.into()
                        },
                        n.executions.to_string().into(),
                        n.capacity
                            .map_or_else(|| "-".to_owned(), |c| c.to_string())
                            .into(),
                        n.resources
                            .map_or_else(
                                || "-".to_owned(),
                                |r| format!("{}/{}", n.allocated.cpu, r.cpu),
                            )
                            .into(),
                        n.resources
                            .map_or_else(
                                || "-".to_owned(),
                                |r| format!("{}/{}", n.allocated.memory, r.memory),
                            )
                            .into(),
                        labels_text(&n.labels).into(),
                    ]
                })
                .collect(),
        )
    }
}

impl Tabular for JobRow {
    fn table(rows: &[Self], wide: bool) -> String {
        let ids: Vec<String> = rows.iter().map(|j| j.id.to_string()).collect();
        let short = ShortIds::new(ids.iter().map(String::as_str), wide);
        let mut headers = vec!["id", "name", "type", "version", "state"];
        if wide {
            headers.push("reason");
        }
        let cells = rows
            .iter()
            .zip(&ids)
            .map(|(j, id)| {
                let mut row = vec![
                    short.show(id).into(),
                    j.name.clone().into(),
                    j.job_type.to_string().into(),
                    j.version.to_string().into(),
                    Cell::state(j.state),
                ];
                if wide {
                    row.push(j.reason.clone().unwrap_or_default().into());
                }
                row
            })
            .collect();
        output::table(&headers, cells)
    }
}

impl Tabular for ExecutionRow {
    /// At a glance: which job (by name), where, which version, what is wanted and what is.
    /// Wide adds the job's id, the attempt and the reason.
    fn table(rows: &[Self], wide: bool) -> String {
        let ids: Vec<String> = rows.iter().map(|e| e.id.to_string()).collect();
        let short = ShortIds::new(ids.iter().map(String::as_str), wide);
        let mut headers: Vec<&str> = if wide {
            vec![
                "id", "job_id", "job", "node", "version", "attempt", "desired", "state", "exit",
            ]
        } else {
            vec!["id", "job", "node", "version", "desired", "state", "exit"]
        };
        // Health is judged only for jobs with `update`: a column only when some row has it.
        let judged = rows.iter().any(|e| e.healthy.is_some());
        if judged {
            headers.push("healthy");
        }
        if wide {
            headers.push("reason");
        }
        let cells = rows
            .iter()
            .zip(&ids)
            .map(|(e, id)| {
                let exit = e
                    .exit_code
                    .map_or_else(|| "-".to_owned(), |c| c.to_string());
                let mut row: Vec<Cell> = vec![short.show(id).into()];
                if wide {
                    row.push(e.job_id.to_string().into());
                }
                row.extend([e.job_name.clone().into(), e.node_id.to_string().into()]);
                row.push(e.version.to_string().into());
                if wide {
                    row.push(e.attempt.to_string().into());
                }
                row.extend([
                    e.desired_state.to_string().into(),
                    Cell::state(e.state),
                    exit.into(),
                ]);
                if judged {
                    let healthy = match e.healthy {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    };
                    row.push(healthy.into());
                }
                if wide {
                    row.push(e.reason.clone().unwrap_or_default().into());
                }
                row
            })
            .collect();
        output::table(&headers, cells)
    }
}

/// `job describe`'s table: fields one per line, then the executions. Wide shows the full
/// id and every field of the task.
fn describe_table(description: &JobDescription, wide: bool) -> String {
    let (row, spec) = (&description.row, &description.spec);
    let id = row.id.to_string();
    let mut fields: Vec<Vec<Cell>> = vec![
        vec![
            "id".into(),
            ShortIds::new([id.as_str()], wide).show(&id).into(),
        ],
        vec!["name".into(), row.name.clone().into()],
        vec!["type".into(), row.job_type.to_string().into()],
        vec!["version".into(), row.version.to_string().into()],
        vec!["state".into(), Cell::state(row.state)],
    ];
    if let Some(reason) = &row.reason {
        fields.push(vec!["reason".into(), reason.clone().into()]);
    }
    if let Some(rollout) = &description.rollout {
        fields.push(vec!["rollout".into(), rollout_text(rollout).into()]);
    }
    if let Some(count) = spec.count {
        fields.push(vec!["count".into(), count.to_string().into()]);
    }
    fields.push(vec!["selector".into(), labels_text(&spec.selector).into()]);
    fields.push(vec!["command".into(), spec.task.command.join(" ").into()]);
    if wide {
        let task = &spec.task;
        if !task.args.is_empty() {
            fields.push(vec!["args".into(), task.args.join(" ").into()]);
        }
        if !task.env.is_empty() {
            fields.push(vec!["env".into(), labels_text(&task.env).into()]);
        }
        if let Some(dir) = &task.working_dir {
            fields.push(vec!["working_dir".into(), dir.clone().into()]);
        }
        if let Some(timeout) = &task.timeout {
            fields.push(vec!["timeout".into(), timeout.to_string().into()]);
        }
    }
    let mut out = output::table(&["field", "value"], fields);
    out += "\nExecutions\n";
    out += &ExecutionRow::table(&description.executions, wide);
    out
}

/// A rollout's progress in one line.
fn rollout_text(progress: &RolloutProgress) -> String {
    let mut text = format!(
        "version {} {} since {}: {} healthy, {} not yet, {} of earlier versions to replace",
        progress.version,
        progress.state,
        progress.since,
        progress.healthy,
        progress.pending,
        progress.older
    );
    if progress.promoted {
        text.push_str(", promoted");
    }
    if let Some(reason) = &progress.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text
}

pub async fn node_list(global: &Global, at: &AsOf, wide: bool) -> Result<()> {
    let answer: Answer<Vec<NodeSummary>> = replay::ask(global, at, endpoint::NODES, &()).await?;
    let rows: Vec<NodeRow> = answer.result.into_iter().map(NodeRow::from).collect();
    output::print_list(global.output, &rows, wide)
}

pub async fn job_list(global: &Global, at: &AsOf, wide: bool) -> Result<()> {
    let answer: Answer<Vec<JobView>> = replay::ask(global, at, endpoint::JOBS, &()).await?;
    let rows: Vec<JobRow> = answer.result.iter().map(JobRow::from).collect();
    output::print_list(global.output, &rows, wide)
}

pub async fn job_describe(global: &Global, job: String, at: &AsOf, wide: bool) -> Result<()> {
    let answer: Answer<JobDetail> =
        replay::ask(global, at, endpoint::JOB, &JobQuery { job }).await?;
    let detail = answer.result;
    let description = JobDescription::of(&detail.job, detail.executions);
    output::print(global.output, &description, || {
        describe_table(&description, wide)
    })
}

pub async fn execution_list(
    global: &Global,
    query: ExecutionQuery,
    at: &AsOf,
    wide: bool,
) -> Result<()> {
    let answer: Answer<Vec<ExecutionView>> =
        replay::ask(global, at, endpoint::EXECUTIONS, &query).await?;
    let rows: Vec<ExecutionRow> = answer.result.into_iter().map(ExecutionRow::from).collect();
    output::print_list(global.output, &rows, wide)
}
