//! An operator watching a run over the orchestrator's HTTP side, for the lifecycle
//! scenario's "HTTP on" runs: Prometheus scraping `/metrics` every second (fifteen times
//! as often as its default), and optionally an open dashboard, which follows `/v1/events`
//! and after each burst of events reads the nodes, jobs and executions again, at most once
//! a second (as the page does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often Prometheus scrapes, and the least time between two dashboard reads.
const EVERY: Duration = Duration::from_secs(1);

/// What the watching cost the orchestrator in requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Watched {
    pub scrapes: u64,
    pub dashboard_reads: u64,
    pub events_streamed: u64,
    pub failures: u64,
}

#[derive(Default)]
struct Counts {
    scrapes: AtomicU64,
    dashboard_reads: AtomicU64,
    events_streamed: AtomicU64,
    failures: AtomicU64,
}

pub struct Observer {
    stop: CancellationToken,
    counts: Arc<Counts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Observer {
    /// Waits for the orchestrator at `addr` to answer `/healthz`, then starts scraping it
    /// and, with `dashboard`, watching it as an open dashboard does.
    pub async fn start(addr: SocketAddr, dashboard: bool) -> Result<Self> {
        let started = std::time::Instant::now();
        while get(addr, "/healthz").await.is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the orchestrator's HTTP side did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stop = CancellationToken::new();
        let counts = Arc::new(Counts::default());
        let burst = Arc::new(Notify::new());
        let mut tasks = vec![tokio::spawn(scrape(
            addr,
            Arc::clone(&counts),
            stop.clone(),
        ))];
        if dashboard {
            tasks.push(tokio::spawn(follow(
                addr,
                Arc::clone(&counts),
                Arc::clone(&burst),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(read_views(
                addr,
                Arc::clone(&counts),
                burst,
                stop.clone(),
            )));
        }
        Ok(Self {
            stop,
            counts,
            tasks,
        })
    }

    pub async fn stop(self) -> Watched {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Watched {
            scrapes: read(&self.counts.scrapes),
            dashboard_reads: read(&self.counts.dashboard_reads),
            events_streamed: read(&self.counts.events_streamed),
            failures: read(&self.counts.failures),
        }
    }
}

async fn scrape(addr: SocketAddr, counts: Arc<Counts>, stop: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    while stop.run_until_cancelled(every.tick()).await.is_some() {
        let counter = match get(addr, "/metrics").await {
            Ok(_) => &counts.scrapes,
            Err(_) => &counts.failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Follows the event stream from its end, counting events and waking the dashboard.
async fn follow(
    addr: SocketAddr,
    counts: Arc<Counts>,
    burst: Arc<Notify>,
    stop: CancellationToken,
) {
    let streamed = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /v1/events?tail=0 HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            // An event is one `data:` line; a chunk boundary may split one in rare cases,
            // which only undercounts.
            let events = buf[..n].windows(6).filter(|w| w == b"data: ").count();
            counts
                .events_streamed
                .fetch_add(events as u64, Ordering::Relaxed);
            burst.notify_one();
        }
    };
    if let Some(Err(_)) = stop.run_until_cancelled(streamed).await {
        counts.failures.fetch_add(1, Ordering::Relaxed);
    }
}

async fn read_views(
    addr: SocketAddr,
    counts: Arc<Counts>,
    burst: Arc<Notify>,
    stop: CancellationToken,
) {
    while stop.run_until_cancelled(burst.notified()).await.is_some() {
        for path in ["/v1/nodes", "/v1/jobs", "/v1/executions"] {
            let counter = match get(addr, path).await {
                Ok(_) => &counts.dashboard_reads,
                Err(_) => &counts.failures,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if stop
            .run_until_cancelled(tokio::time::sleep(EVERY))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// `GET path` on a connection of its own; the body's length. Refuses anything but 200.
async fn get(addr: SocketAddr, path: &str) -> Result<usize> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let status = std::str::from_utf8(&response[..head_end])?
        .split_whitespace()
        .nth(1)
        .unwrap_or("");
    if status != "200" {
        bail!("GET {path}: {status}");
    }
    Ok(response.len() - head_end - 4)
}
