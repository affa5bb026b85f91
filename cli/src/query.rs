//! Queries over NATS request/reply to the orchestrator's query service: `node list`,
//! `job list`, `job describe`, `execution list`. The CLI never opens the live views; with
//! `--at-seq`/`--at` the same answers come from a replay of the log (`replay.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_orchestrator::query::{Answer, ExecutionQuery, JobDetail, JobQuery, endpoint};
use cairn_orchestrator::store::NodeSummary;
use cairn_orchestrator::views::{ExecutionView, JobView, RolloutView};
use cairn_shared::placement::Placement;
use cairn_shared::{ExecutionState, JobSpec, NodeId};
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

/// `node list` rows: `{id, state, labels, executions}` plus the cap (`null` without one),
/// the resources the node declared (absent when it declared none) and what its
/// executions ask of them (`allocated`).
#[derive(Serialize)]
pub struct NodeRow {
    id: NodeId,
    state: cairn_shared::NodeState,
    labels: BTreeMap<String, String>,
    executions: u32,
    capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<cairn_shared::Resources>,
    /// What its non-terminal executions ask of it.
    allocated: cairn_shared::Resources,
    /// `eligible`, or `ineligible` for new work.
    eligibility: &'static str,
    /// Whether its work is being moved off it (`cairn node drain`).
    draining: bool,
    /// While it drains: when what still runs there is asked to stop (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_deadline: Option<String>,
}

impl From<NodeSummary> for NodeRow {
    fn from(n: NodeSummary) -> Self {
        Self {
            id: n.node.id,
            state: n.node.state,
            labels: n.node.labels,
            executions: n.executions,
            capacity: n.node.capacity,
            resources: n.node.resources,
            allocated: n.allocated,
            eligibility: if n.node.eligible {
                "eligible"
            } else {
                "ineligible"
            },
            draining: n.node.drain_deadline.is_some(),
            drain_deadline: n.node.drain_deadline.map(|t| t.to_string()),
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

/// `job list` rows: `{id, name, type, version, state}`, and the reason for the state when
/// there is one.
#[derive(Serialize)]
pub struct JobRow {
    id: cairn_shared::JobId,
    name: String,
    #[serde(rename = "type")]
    job_type: cairn_shared::JobType,
    version: u32,
    state: cairn_shared::JobState,
    /// Why the job is in its state, or why some of it waits for a node.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// While some of it waits for a node: what ruled out each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<Placement>,
}

/// The reason a job gives: why some of it waits for a node while it does, else its
/// state's.
pub fn job_reason(j: &JobView) -> Option<String> {
    j.placement
        .as_ref()
        .map(|p| format!("waiting for a node: {p}"))
        .or_else(|| j.reason.clone())
}

impl From<&JobView> for JobRow {
    fn from(j: &JobView) -> Self {
        Self {
            id: j.id,
            name: j.name.clone(),
            job_type: j.job_type,
            version: j.version,
            state: j.state,
            reason: job_reason(j),
            placement: j.placement.clone(),
        }
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

/// `execution list` rows: `{id, job_id, node_id, version, attempt, desired_state, state,
/// exit_code}`, with the job's name and the reason for the state when there is one.
#[derive(Serialize)]
pub struct ExecutionRow {
    id: cairn_shared::ExecutionId,
    job_id: cairn_shared::JobId,
    job_name: String,
    node_id: NodeId,
    version: u32,
    attempt: u32,
    desired_state: cairn_shared::DesiredState,
    state: ExecutionState,
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Whether its edge found it healthy; only for a job with `update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy: Option<bool>,
}

impl From<ExecutionView> for ExecutionRow {
    fn from(e: ExecutionView) -> Self {
        Self {
            id: e.id,
            job_id: e.job_id,
            job_name: e.job_name,
            node_id: e.node_id,
            version: e.version,
            attempt: e.attempt,
            desired_state: e.desired_state,
            state: e.state,
            exit_code: e.exit_code,
            reason: e.reason,
            healthy: e.healthy,
        }
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

/// `job describe`: `{id, name, type, version, state, spec, executions: [...]}`.
#[derive(Serialize)]
pub struct JobDescription {
    #[serde(flatten)]
    row: JobRow,
    spec: JobSpec,
    /// The current version's rollout and how far it got, for a job with `update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<RolloutProgress>,
    executions: Vec<ExecutionRow>,
}

/// A rollout as `job describe` shows it: its state, and how far it got, counted from the
/// executions still meant to run.
#[derive(Serialize)]
pub struct RolloutProgress {
    version: u32,
    state: cairn_shared::RolloutState,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    since: String,
    /// Whether its canaries were promoted (`cairn job promote`).
    promoted: bool,
    /// Executions of the version that run and are healthy.
    pub healthy: usize,
    /// Executions of the version placed and not healthy yet.
    pub pending: usize,
    /// Executions of earlier versions still meant to run: what is left to replace.
    pub older: usize,
}

impl RolloutProgress {
    pub fn of(rollout: &RolloutView, executions: &[ExecutionView]) -> Self {
        let meant = executions.iter().filter(|e| {
            !e.state.is_terminal() && e.desired_state == cairn_shared::DesiredState::Running
        });
        let (mut healthy, mut pending, mut older) = (0, 0, 0);
        for e in meant {
            if e.version != rollout.version {
                older += 1;
            } else if e.healthy == Some(true) && e.state == ExecutionState::Running {
                healthy += 1;
            } else {
                pending += 1;
            }
        }
        Self {
            version: rollout.version,
            state: rollout.state,
            reason: rollout.reason.clone(),
            since: rollout.since.to_string(),
            promoted: rollout.promoted,
            healthy,
            pending,
            older,
        }
    }

    fn text(&self) -> String {
        let mut text = format!(
            "version {} {} since {}: {} healthy, {} not yet, {} of earlier versions to replace",
            self.version, self.state, self.since, self.healthy, self.pending, self.older
        );
        if self.promoted {
            text.push_str(", promoted");
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(" ({reason})"));
        }
        text
    }
}

impl JobDescription {
    /// Fields one per line, then the executions. Wide shows the full id and every field of
    /// the task.
    fn table(&self, wide: bool) -> String {
        let (row, spec) = (&self.row, &self.spec);
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
        if let Some(rollout) = &self.rollout {
            fields.push(vec!["rollout".into(), rollout.text().into()]);
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
        out += &ExecutionRow::table(&self.executions, wide);
        out
    }
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
    let rollout = detail
        .job
        .rollout
        .as_ref()
        .map(|r| RolloutProgress::of(r, &detail.executions));
    let description = JobDescription {
        row: JobRow::from(&detail.job),
        spec: detail.job.spec.clone(),
        rollout,
        executions: detail
            .executions
            .into_iter()
            .map(ExecutionRow::from)
            .collect(),
    };
    output::print(global.output, &description, || description.table(wide))
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
