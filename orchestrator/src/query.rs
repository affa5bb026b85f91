//! The query service: answers the CLI's questions from the redb views over NATS
//! request/reply, as a discoverable NATS micro service named `cairn`. Requests and answers
//! are JSON; every answer says which event sequence the views had reached.

use std::sync::Arc;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use cairn_shared::{ExecutionState, NodeId, Seq};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::{ExecutionFilter, Lookup, NodeSummary, ViewReader, ViewStore};
use crate::views::{CommandOutcome, ExecutionView, JobView, Table};

/// The endpoints, each answering on `streams::subjects::query(name)`.
pub mod endpoint {
    pub const NODES: &str = "nodes";
    pub const JOBS: &str = "jobs";
    pub const JOB: &str = "job";
    pub const EXECUTIONS: &str = "executions";
    pub const OUTCOME: &str = "outcome";
    pub const EXECUTION: &str = "execution";
    /// One digest per view table, for `cairn audit verify`.
    pub const DIGESTS: &str = "digests";
    /// A page of one table's rows as key and value hash, to find the first that differs.
    pub const ROWS: &str = "rows";
    /// One stored row, decoded for display.
    pub const ROW: &str = "row";
    pub const ALL: [&str; 9] = [
        NODES, JOBS, JOB, EXECUTIONS, OUTCOME, EXECUTION, DIGESTS, ROWS, ROW,
    ];
}

/// An answer and the event sequence the views had reached when it was read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer<T> {
    pub applied_seq: Seq,
    pub result: T,
}

/// `job`: one job by id, name or unique id prefix, with its executions of every version.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobQuery {
    pub job: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    pub executions: Vec<ExecutionView>,
}

/// `executions`: all given filters must match; `job` is an id, a name or a unique id prefix.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecutionQuery {
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub node: Option<NodeId>,
    #[serde(default)]
    pub state: Option<ExecutionState>,
}

/// `execution`: one execution by id or unique id prefix.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecutionIdQuery {
    pub execution: String,
}

/// `outcome`: what became of a command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomeQuery {
    pub command: cairn_shared::CommandId,
}

/// `rows`: up to `limit` rows of `table` with keys after `after`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsQuery {
    pub table: String,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

impl RowsQuery {
    /// The most rows one answer carries (about 100 bytes each).
    pub const MAX_LIMIT: usize = 2_000;
}

/// `row`: one row of `table`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowQuery {
    pub table: String,
    pub key: String,
}

/// A refusal the asker can act on, sent as the service error (status text and code).
#[derive(Debug)]
pub struct Refusal {
    pub code: usize,
    pub status: String,
}

impl Refusal {
    fn bad_request(status: impl Into<String>) -> Self {
        Self {
            code: 400,
            status: status.into(),
        }
    }

    fn not_found(status: impl Into<String>) -> Self {
        Self {
            code: 404,
            status: status.into(),
        }
    }

    /// What a lookup found, or why it found nothing: unknown (404), or a prefix of several
    /// ids (409, naming some of them so the asker can type more).
    pub(crate) fn found<T>(what: &str, key: &str, lookup: Lookup<T>) -> Result<T, Self> {
        match lookup {
            Lookup::Found(row) => Ok(row),
            Lookup::Missing => Err(Self::not_found(format!("unknown {what} {key:?}"))),
            Lookup::Ambiguous { first, matches } => {
                let more = matches - first.len();
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                Err(Self {
                    code: 409,
                    status: format!(
                        "{what} id prefix {key:?} is ambiguous: it matches {}{tail}",
                        first.join(", ")
                    ),
                })
            }
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Self {
            code: 500,
            status: e.to_string(),
        }
    }
}

fn answer<T: Serialize>(reader: &ViewReader, result: T) -> Result<Bytes, Refusal> {
    let answer = Answer {
        applied_seq: reader.applied_seq()?,
        result,
    };
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| Refusal {
            code: 500,
            status: format!("encoding the answer: {e}"),
        })
}

fn parse<T: serde::de::DeserializeOwned + Default>(payload: &[u8]) -> Result<T, Refusal> {
    if payload.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(payload)
        .map_err(|e| Refusal::bad_request(format!("malformed request: {e}")))
}

fn job_or_refuse(reader: &ViewReader, key: &str) -> Result<JobView, Refusal> {
    Refusal::found("job", key, reader.find_job(key)?)
}

fn table_or_refuse(name: &str) -> Result<Table, Refusal> {
    Table::from_name(name).ok_or_else(|| Refusal::not_found(format!("no view table {name:?}")))
}

/// Answers one request from one snapshot of the views, as the JSON the service sends.
/// Synchronous: runs on a blocking thread. Public so a replayed view file (`cairn … --at-seq`)
/// is answered by exactly the code that answers the live one.
pub fn handle(store: &ViewStore, endpoint: &str, payload: &[u8]) -> Result<Bytes, Refusal> {
    let reader = store.read()?;
    match endpoint {
        endpoint::NODES => {
            let nodes: Vec<NodeSummary> = reader.nodes()?;
            answer(&reader, nodes)
        }
        endpoint::JOBS => answer(&reader, reader.jobs()?),
        endpoint::JOB => {
            let query: JobQuery = parse(payload)?;
            let job = job_or_refuse(&reader, &query.job)?;
            let executions = reader.executions(&ExecutionFilter {
                job: Some(job.id),
                ..Default::default()
            })?;
            answer(&reader, JobDetail { job, executions })
        }
        endpoint::EXECUTIONS => {
            let query: ExecutionQuery = parse(payload)?;
            let job = match &query.job {
                Some(j) => Some(job_or_refuse(&reader, j)?.id),
                None => None,
            };
            let filter = ExecutionFilter {
                job,
                node: query.node,
                state: query.state,
            };
            answer(&reader, reader.executions(&filter)?)
        }
        endpoint::EXECUTION => {
            let query: ExecutionIdQuery = parse(payload)?;
            let key = &query.execution;
            let execution = Refusal::found("execution", key, reader.find_execution(key)?)?;
            answer(&reader, execution)
        }
        endpoint::OUTCOME => {
            let query: OutcomeQuery = serde_json::from_slice(payload)
                .map_err(|e| Refusal::bad_request(format!("malformed request: {e}")))?;
            let outcome: Option<CommandOutcome> = reader.command_outcome(query.command)?;
            answer(&reader, outcome)
        }
        endpoint::DIGESTS => answer(&reader, reader.digests()?),
        endpoint::ROWS => {
            let query: RowsQuery = parse(payload)?;
            let table = table_or_refuse(&query.table)?;
            let limit = query
                .limit
                .unwrap_or(RowsQuery::MAX_LIMIT)
                .min(RowsQuery::MAX_LIMIT);
            answer(
                &reader,
                reader.row_hashes(table, query.after.as_deref(), limit)?,
            )
        }
        endpoint::ROW => {
            let query: RowQuery = parse(payload)?;
            let table = table_or_refuse(&query.table)?;
            answer(&reader, reader.row(table, &query.key)?)
        }
        other => Err(Refusal::not_found(format!("no query endpoint {other:?}"))),
    }
}

/// Serves the query endpoints until `shutdown` is cancelled.
pub async fn serve(
    client: async_nats::Client,
    store: Arc<ViewStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let service = client
        .service_builder()
        .description("cairn orchestrator queries over the projected views")
        .start("cairn", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| Error::stopped("query service", format!("starting: {e}")))?;
    let group = service.group(cairn_streams::subjects::QUERY_PREFIX);
    let mut tasks = JoinSet::new();
    for name in endpoint::ALL {
        let mut requests = group.endpoint(name).await.map_err(|e| {
            Error::stopped(
                "query service",
                format!("adding query endpoint {name}: {e}"),
            )
        })?;
        let store = Arc::clone(&store);
        // Shutdown aborts these: a query in flight is simply not answered, and the asker
        // gets "no orchestrator is answering" rather than a stale result.
        tasks.spawn(async move {
            while let Some(request) = requests.next().await {
                let store = Arc::clone(&store);
                let payload = request.message.payload.clone();
                let result = tokio::task::spawn_blocking(move || handle(&store, name, &payload))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Refusal {
                            code: 500,
                            status: format!("query failed: {e}"),
                        })
                    });
                let response = result.map_err(|r| service::error::Error {
                    status: r.status,
                    code: r.code,
                });
                if let Err(e) = request.respond(response).await {
                    tracing::debug!(error = %e, "could not answer a query");
                }
            }
        });
    }
    shutdown.cancelled().await;
    tasks.abort_all();
    let _ = service.stop().await;
    Ok(())
}
