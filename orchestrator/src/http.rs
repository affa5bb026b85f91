//! The orchestrator's HTTP side (`--http ADDR`): Prometheus metrics, a health check, and
//! read-only `/v1/…` endpoints answered from the views in the CLI's own JSON (`rows.rs`),
//! so `GET /v1/jobs` is the document `cairn job list -o json` prints, and the event log as
//! Server-Sent Events. Nothing here changes anything: commands go through the command
//! stream, as the CLI sends them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_shared::{ExecutionState, Seq};
use cairn_streams::logs::LogEntry;
use cairn_streams::{ReadFrom, Reader, StreamKind};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::history::{self, JobVersion};
use crate::metrics::{Metrics, Observed};
use crate::query::Refusal;
use crate::records::Record;
use crate::rows::{ExecutionRow, JobDescription, JobRow, NodeRow};
use crate::store::{ExecutionFilter, Lookup, ViewStore};

/// What every handler reads.
struct Shared {
    views: Arc<ViewStore>,
    metrics: Metrics,
    js: async_nats::jetstream::Context,
}

type App = State<Arc<Shared>>;

/// Binds `addr` now, so a port in use fails the start with its reason; then serves until
/// `shutdown`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::stopped("http", format!("cannot listen on {addr}: {e}")))
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    views: Arc<ViewStore>,
    metrics: Metrics,
    js: async_nats::jetstream::Context,
    access: Access,
    shutdown: CancellationToken,
) -> Result<()> {
    let shared = Arc::new(Shared { views, metrics, js });
    let access = Arc::new(access);
    let guarded = Router::new()
        .route("/metrics", get(scrape))
        .route("/v1/nodes", get(nodes))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{job}", get(job))
        .route("/v1/jobs/{job}/versions", get(versions))
        .route("/v1/executions", get(executions))
        .route("/v1/executions/{execution}/logs", get(logs))
        .route("/v1/events", get(events))
        .merge(crate::dashboard::routes())
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&access),
            require_token,
        ));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login))
        .with_state(access)
        .merge(guarded);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::stopped("http", format!("serving: {e}")))
}

/// Who may read (`--http-token`): everyone on the listening address, or whoever presents
/// the token, as `Authorization: Bearer TOKEN` (Prometheus, curl) or as the cookie
/// `/login?token=TOKEN` sets (a browser, whose event stream cannot carry a header).
pub struct Access {
    token: Option<String>,
}

impl Access {
    pub fn new(token: Option<String>) -> Self {
        Self { token }
    }

    /// Whether `presented` is the token, compared in time independent of where they differ.
    fn admits(&self, presented: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(presented) = presented else {
            return false;
        };
        let (a, b) = (token.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

const COOKIE: &str = "cairn_token";

/// The token a request presents, by header or by cookie.
fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("cairn_token="))
    })
}

async fn require_token(
    State(access): State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if access.admits(presented(request.headers())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this API needs its token: `Authorization: Bearer TOKEN`, or open /login?token=TOKEN \
         in a browser (the token is the file `cairn auth init` wrote, DIR/http.token)\n",
    )
        .into_response()
}

/// `GET /login?token=TOKEN`.
#[derive(Deserialize)]
struct LoginParams {
    token: Option<String>,
}

/// Sets the token as a cookie for this origin and goes to the dashboard.
async fn login(State(access): State<Arc<Access>>, Query(params): Query<LoginParams>) -> Response {
    let Some(token) = params.token.filter(|t| access.admits(Some(t))) else {
        return (StatusCode::UNAUTHORIZED, "that is not this API's token\n").into_response();
    };
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

/// The longest a scrape waits for JetStream's side of the metrics.
const OBSERVE: std::time::Duration = std::time::Duration::from_secs(1);

/// A failed request: its status and a one-line reason, as plain text.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// Runs a read of the views on a blocking thread, as the NATS query service does.
async fn read<T: Send + 'static>(
    app: &Shared,
    query: impl FnOnce(&ViewStore) -> std::result::Result<T, Failure> + Send + 'static,
) -> std::result::Result<T, Failure> {
    let views = Arc::clone(&app.views);
    tokio::task::spawn_blocking(move || query(&views))
        .await
        .map_err(|e| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("query failed: {e}"),
            )
        })?
}

async fn scrape(State(app): App) -> std::result::Result<Response, Failure> {
    // How far the views are behind is the event stream's last sequence against theirs;
    // the queues are counted by the node consumers. What does not answer within a second
    // is left as last measured, so a scrape never hangs on a broker away.
    let stored = async {
        let stream = app.js.get_stream(StreamKind::Events.name()).await.ok()?;
        Some(stream.cached_info().state.last_sequence)
    };
    let waiting = async {
        let counted = cairn_streams::sweep::waiting(&app.js).await;
        (counted.failed == 0).then_some(counted)
    };
    let (stored, waiting) = futures::join!(
        tokio::time::timeout(OBSERVE, stored),
        tokio::time::timeout(OBSERVE, waiting)
    );
    let observed = Observed {
        stored: stored.ok().flatten(),
        waiting: waiting.ok().flatten(),
    };
    let shared = Arc::clone(&app);
    let text = read(&app, move |views| {
        let reader = views.read()?;
        Ok(shared.metrics.render(&reader, observed)?)
    })
    .await?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

async fn nodes(State(app): App) -> std::result::Result<Json<Vec<NodeRow>>, Failure> {
    let rows = read(&app, |views| {
        Ok(views
            .read()?
            .nodes()?
            .into_iter()
            .map(NodeRow::from)
            .collect())
    })
    .await?;
    Ok(Json(rows))
}

async fn jobs(State(app): App) -> std::result::Result<Json<Vec<JobRow>>, Failure> {
    let rows = read(&app, |views| {
        Ok(views.read()?.jobs()?.iter().map(JobRow::from).collect())
    })
    .await?;
    Ok(Json(rows))
}

async fn job(
    State(app): App,
    Path(key): Path<String>,
) -> std::result::Result<Json<JobDescription>, Failure> {
    let description = read(&app, move |views| {
        let reader = views.read()?;
        let job = found("job", &key, reader.find_job(&key)?)?;
        let executions = reader.executions(&ExecutionFilter {
            job: Some(job.id),
            ..Default::default()
        })?;
        Ok(JobDescription::of(&job, executions))
    })
    .await?;
    Ok(Json(description))
}

/// Every version of a job with its spec and its diff against the one before: the JSON of
/// `cairn job history -p`. A job the views do not know yet may still have deploys in the
/// log; the log is what is read.
async fn versions(
    State(app): App,
    Path(key): Path<String>,
) -> std::result::Result<Json<Vec<JobVersion>>, Failure> {
    let versions = history::versions(&Reader::new(app.js.clone()), &key, true)
        .await
        .map_err(|e| unavailable(&e))?;
    if versions.is_empty() {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("unknown job {key:?}: the event log records no deploy of it"),
        ));
    }
    Ok(Json(versions))
}

/// `GET /v1/executions?job=&node=&state=`, as `cairn execution list` filters.
#[derive(Deserialize)]
struct ExecutionParams {
    job: Option<String>,
    node: Option<String>,
    state: Option<String>,
}

async fn executions(
    State(app): App,
    Query(params): Query<ExecutionParams>,
) -> std::result::Result<Json<Vec<ExecutionRow>>, Failure> {
    let bad = |what: String| Failure(StatusCode::BAD_REQUEST, what);
    let state = params
        .state
        .as_deref()
        .map(str::parse::<ExecutionState>)
        .transpose()
        .map_err(bad)?;
    let node = params
        .node
        .map(cairn_shared::NodeId::new)
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let rows = read(&app, move |views| {
        let reader = views.read()?;
        let job = match &params.job {
            Some(key) => Some(found("job", key, reader.find_job(key)?)?.id),
            None => None,
        };
        let filter = ExecutionFilter { job, node, state };
        Ok(reader
            .executions(&filter)?
            .into_iter()
            .map(ExecutionRow::from)
            .collect())
    })
    .await?;
    Ok(Json(rows))
}

/// `GET /v1/executions/{id}/logs?follow=1`.
#[derive(Deserialize)]
struct LogParams {
    follow: Option<String>,
}

/// How long a read that does not follow waits for a log with nothing stored yet, as
/// `cairn execution logs` does.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// The task's output as it was written, plain text: what is stored, or with `follow=1`
/// (or `true`) everything until the end of the execution's current attempt, as it comes.
async fn logs(
    State(app): App,
    Path(key): Path<String>,
    Query(params): Query<LogParams>,
) -> std::result::Result<Response, Failure> {
    let follow = match params.follow.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true" | "") => true,
        Some(other) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("follow={other:?}: write follow=1 or follow=0"),
            ));
        }
    };
    let execution = read(&app, move |views| {
        let reader = views.read()?;
        found("execution", &key, reader.find_execution(&key)?)
    })
    .await?;
    let lines = Reader::new(app.js.clone())
        .read(
            StreamKind::Logs,
            ReadFrom::Start,
            Some(cairn_streams::subjects::log_of(execution.id)),
        )
        .await
        .map_err(|e| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading the log stream: {e}"),
            )
        })?;
    let attempt = execution.attempt;
    let chunks = futures::stream::unfold(Some(Box::pin(lines)), move |lines| async move {
        let mut lines = lines?;
        loop {
            let next = if follow {
                lines.next().await
            } else {
                tokio::time::timeout(QUIET, lines.next())
                    .await
                    .ok()
                    .flatten()
            };
            let raw = match next? {
                Ok(raw) => raw,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a task's log broke off");
                    return None;
                }
            };
            let last = !follow && raw.pending == 0;
            let chunk = match LogEntry::decode(raw.headers.as_ref(), raw.payload) {
                Ok(LogEntry::Output { data, .. }) => Some(data),
                Ok(LogEntry::End { attempt: ended, .. }) if ended == attempt => return None,
                Ok(LogEntry::End { .. }) => None,
                Err(reason) => {
                    tracing::warn!(%reason, "skipping a log message that does not decode");
                    None
                }
            };
            let rest = (!last).then_some(lines);
            if let Some(data) = chunk {
                return Some((Ok::<_, Infallible>(data), rest));
            }
            lines = rest?;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// `GET /v1/events?from_seq=N` or `?tail=N`.
#[derive(Deserialize)]
struct EventsParams {
    from_seq: Option<u64>,
    /// Starts this many events before the end of the log (`tail -n`), for a reader that
    /// wants what is happening now rather than the whole history.
    tail: Option<u64>,
}

/// The event log from `from_seq` (the start without it; the last `tail` events with that)
/// as Server-Sent Events, then every event as it is appended: one event per `data:` line,
/// the JSON `cairn events` prints, with the sequence as the SSE id. A client that
/// reconnects with `Last-Event-ID` (as browsers do) resumes after that event. An event
/// the stream cannot give is sent as an `error` event with its reason, and the stream
/// goes on.
async fn events(
    State(app): App,
    Query(params): Query<EventsParams>,
    headers: axum::http::HeaderMap,
) -> std::result::Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>, Failure>
{
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let from = match (resumed, params.from_seq, params.tail) {
        (Some(seen), _, _) => ReadFrom::Seq(Seq(seen + 1)),
        (None, Some(_), Some(_)) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "from_seq and tail both say where to start: give one".into(),
            ));
        }
        (None, Some(seq), None) => ReadFrom::Seq(Seq(seq)),
        (None, None, Some(tail)) => {
            let stream = app
                .js
                .get_stream(StreamKind::Events.name())
                .await
                .map_err(|e| unavailable(&e))?;
            let held = &stream.cached_info().state;
            let from = (held.last_sequence.saturating_sub(tail) + 1).max(held.first_sequence);
            ReadFrom::Seq(Seq(from))
        }
        (None, None, None) => ReadFrom::Start,
    };
    let messages = Reader::new(app.js.clone())
        .read(StreamKind::Events, from, None)
        .await
        .map_err(|e| unavailable(&e))?;
    let stream = messages.map(|raw| {
        Ok(match raw {
            Ok(raw) => {
                let seq = raw.seq;
                let line =
                    serde_json::Value::Object(Record::decode(StreamKind::Events, raw).fields());
                SseEvent::default()
                    .id(seq.to_string())
                    .data(line.to_string())
            }
            Err(e) => SseEvent::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The event stream did not answer.
fn unavailable(e: &dyn std::fmt::Display) -> Failure {
    Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("reading the event stream: {e}"),
    )
}

/// The one thing a key names, or why not, as the query service refuses it (404 unknown,
/// 409 a prefix of several ids).
fn found<T>(what: &str, key: &str, lookup: Lookup<T>) -> std::result::Result<T, Failure> {
    Refusal::found(what, key, lookup).map_err(|r| {
        let status = u16::try_from(r.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Failure(status, r.status)
    })
}
