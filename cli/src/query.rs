//! Queries over NATS request/reply to the orchestrator's query service: `node list`,
//! `job list`, `job describe`, `execution list`. The CLI never opens the live views; with
//! `--at-seq`/`--at` the same answers come from a replay of the log (`replay.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_orchestrator::query::{Answer, ExecutionQuery, JobDetail, JobQuery, endpoint};
use cairn_orchestrator::store::NodeSummary;
use cairn_orchestrator::views::{ExecutionView, JobView};
use cairn_shared::{ExecutionState, JobSpec, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Global;
use crate::output::{self, Tabular};
use crate::replay::{self, AsOf};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The orchestrator answered with a refusal: `code` 404 for something it does not know
/// (yet), 400 for a malformed question.
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

/// `node list` rows: `{id, state, labels, executions}` plus the capacity.
#[derive(Serialize)]
pub struct NodeRow {
    id: NodeId,
    state: cairn_shared::NodeState,
    labels: BTreeMap<String, String>,
    executions: u32,
    capacity: u32,
}

impl From<NodeSummary> for NodeRow {
    fn from(n: NodeSummary) -> Self {
        Self {
            id: n.node.id,
            state: n.node.state,
            labels: n.node.labels,
            executions: n.executions,
            capacity: n.node.capacity,
        }
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Tabular for NodeRow {
    fn headers() -> &'static [&'static str] {
        &["id", "state", "executions", "capacity", "labels"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.state.to_string(),
            self.executions.to_string(),
            self.capacity.to_string(),
            labels_text(&self.labels),
        ]
    }
}

/// `job list` rows: `{id, name, type, version, state}`.
#[derive(Serialize)]
pub struct JobRow {
    id: cairn_shared::JobId,
    name: String,
    #[serde(rename = "type")]
    job_type: cairn_shared::JobType,
    version: u32,
    state: cairn_shared::JobState,
}

impl From<&JobView> for JobRow {
    fn from(j: &JobView) -> Self {
        Self {
            id: j.id,
            name: j.name.clone(),
            job_type: j.job_type,
            version: j.version,
            state: j.state,
        }
    }
}

impl Tabular for JobRow {
    fn headers() -> &'static [&'static str] {
        &["id", "name", "type", "version", "state"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.name.clone(),
            self.job_type.to_string(),
            self.version.to_string(),
            self.state.to_string(),
        ]
    }
}

/// `execution list` rows: `{id, job_id, node_id, version, attempt, desired_state, state, exit_code}`.
#[derive(Serialize)]
pub struct ExecutionRow {
    id: cairn_shared::ExecutionId,
    job_id: cairn_shared::JobId,
    node_id: NodeId,
    version: u32,
    attempt: u32,
    desired_state: cairn_shared::DesiredState,
    state: ExecutionState,
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<ExecutionView> for ExecutionRow {
    fn from(e: ExecutionView) -> Self {
        Self {
            id: e.id,
            job_id: e.job_id,
            node_id: e.node_id,
            version: e.version,
            attempt: e.attempt,
            desired_state: e.desired_state,
            state: e.state,
            exit_code: e.exit_code,
            reason: e.reason,
        }
    }
}

impl Tabular for ExecutionRow {
    fn headers() -> &'static [&'static str] {
        &[
            "id", "job_id", "node_id", "version", "attempt", "desired", "state", "exit",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.job_id.to_string(),
            self.node_id.to_string(),
            self.version.to_string(),
            self.attempt.to_string(),
            self.desired_state.to_string(),
            self.state.to_string(),
            self.exit_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        ]
    }
}

/// `job describe`: `{id, name, type, version, state, spec, executions: [...]}`.
#[derive(Serialize)]
pub struct JobDescription {
    #[serde(flatten)]
    row: JobRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    spec: JobSpec,
    executions: Vec<ExecutionRow>,
}

pub async fn node_list(global: &Global, at: &AsOf) -> Result<()> {
    let answer: Answer<Vec<NodeSummary>> = replay::ask(global, at, endpoint::NODES, &()).await?;
    let rows: Vec<NodeRow> = answer.result.into_iter().map(NodeRow::from).collect();
    output::print_list(global.output, &rows)
}

pub async fn job_list(global: &Global, at: &AsOf) -> Result<()> {
    let answer: Answer<Vec<JobView>> = replay::ask(global, at, endpoint::JOBS, &()).await?;
    let rows: Vec<JobRow> = answer.result.iter().map(JobRow::from).collect();
    output::print_list(global.output, &rows)
}

pub async fn job_describe(global: &Global, job: String, at: &AsOf) -> Result<()> {
    let answer: Answer<JobDetail> =
        replay::ask(global, at, endpoint::JOB, &JobQuery { job }).await?;
    let detail = answer.result;
    let description = JobDescription {
        row: JobRow::from(&detail.job),
        reason: detail.job.reason.clone(),
        spec: detail.job.spec.clone(),
        executions: detail
            .executions
            .into_iter()
            .map(ExecutionRow::from)
            .collect(),
    };
    output::print(global.output, &description, || {
        let d = &description;
        let mut out = output::table(
            &["field", "value"],
            vec![
                vec!["id".into(), d.row.id.to_string()],
                vec!["name".into(), d.row.name.clone()],
                vec!["type".into(), d.row.job_type.to_string()],
                vec!["version".into(), d.row.version.to_string()],
                vec!["state".into(), d.row.state.to_string()],
                vec!["selector".into(), labels_text(&d.spec.selector)],
                vec!["command".into(), d.spec.task.command.join(" ")],
            ],
        );
        out += "\nExecutions\n";
        out += &output::table(
            ExecutionRow::headers(),
            d.executions.iter().map(Tabular::row).collect(),
        );
        out
    })
}

pub async fn execution_list(global: &Global, query: ExecutionQuery, at: &AsOf) -> Result<()> {
    let answer: Answer<Vec<ExecutionView>> =
        replay::ask(global, at, endpoint::EXECUTIONS, &query).await?;
    let rows: Vec<ExecutionRow> = answer.result.into_iter().map(ExecutionRow::from).collect();
    output::print_list(global.output, &rows)
}
