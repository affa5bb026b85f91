//! What an edge counts for Prometheus (`cairn edge --metrics ADDR`, `GET /metrics`, every
//! metric named `cairn_edge_…`): what runs, what waits in the outbox, and how its task
//! starts go.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::EdgeHandle;
use crate::error::{Error, Result};

/// The counters the edge's attempts update as they go; cloning shares them.
#[derive(Clone, Debug)]
pub struct TaskMetrics {
    /// Task processes started.
    pub starts: Counter,
    /// Attempts that ended `failed` (the task's exit, a timeout, a start that failed).
    pub failures: Counter,
    /// From the edge taking an assignment to its process starting (a restart's pause
    /// included), in seconds.
    pub start_seconds: Histogram,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        Self {
            starts: Counter::default(),
            failures: Counter::default(),
            // 1 ms to ~65 s, doubling.
            start_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }
}

struct Served {
    registry: Registry,
    edge: EdgeHandle,
    running: Gauge,
    outbox: Gauge,
    outbox_age: Gauge<f64, AtomicU64>,
}

/// Binds `addr` now, so a port in use fails the edge's start with its reason.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Metrics(format!("cannot listen on {addr}: {e}")))
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    edge: EdgeHandle,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut registry = Registry::with_prefix("cairn_edge");
    let (running, outbox, outbox_age) = (Gauge::default(), Gauge::default(), Gauge::default());
    registry.register(
        "running_executions",
        "Attempts whose task runs (or is about to start) on this edge",
        running.clone(),
    );
    registry.register(
        "outbox_entries",
        "Reports and log chunks stored here and not yet acknowledged by JetStream",
        outbox.clone(),
    );
    registry.register_with_unit(
        "outbox_oldest_age",
        "How long the oldest entry still in the outbox has waited (0 when empty)",
        Unit::Seconds,
        outbox_age.clone(),
    );
    let tasks = edge.task_metrics();
    registry.register("task_starts", "Task processes started", tasks.starts);
    registry.register(
        "task_failures",
        "Attempts that ended failed: a task's exit, a timeout, or a start that failed",
        tasks.failures,
    );
    registry.register_with_unit(
        "assignment_to_start",
        "From taking an assignment to its task's start, a restart's pause included",
        Unit::Seconds,
        tasks.start_seconds,
    );
    let served = Arc::new(Served {
        registry,
        edge,
        running,
        outbox,
        outbox_age,
    });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(served);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::Metrics(format!("serving: {e}")))
}

async fn scrape(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let edge = &served.edge;
    served.running.set(i64::from(edge.running()));
    served
        .outbox
        .set(i64::try_from(edge.outbox_len()).unwrap_or(i64::MAX));
    served
        .outbox_age
        .set(edge.outbox_oldest_age().map_or(0.0, |a| a.as_secs_f64()));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &served.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
    }
}
