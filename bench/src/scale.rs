//! The scale scenario: fleets of growing size. For each size N, a fresh orchestrator
//! process and N edges — N-1 simulated ones and one real `cairn edge` process, so one
//! edge's memory can be read — then the time until all N are registered, the time until a
//! daemon job runs on all N, and the resident memory of nats-server, the orchestrator and
//! the real edge. It stops at the first size that fails and says why.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_shared::{ExecutionState, JobType};
use cairn_streams::Publisher;

use crate::fleet::Fleet;
use crate::lifecycle::{deploy, spec};
use crate::report::{Figure, Scenario};
use crate::stack::{OrchestratorProcess, fresh_streams, rss_bytes, spawn_cairn};
use crate::watch::Watch;

/// How long one size may take to register or to run its daemon before the scenario
/// stops there.
const STEP_DEADLINE: Duration = Duration::from_secs(180);

/// A real edge process, stopped with SIGTERM (so it ends its task) when dropped.
struct RealEdge {
    child: Child,
    _dir: tempfile::TempDir,
}

impl RealEdge {
    fn start(url: &str, node: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let child = spawn_cairn(
            url,
            &["edge", "--node-id", node, "--label", "role=edge"],
            dir.path(),
        )
        .context("starting a real edge")?;
        Ok(Self { child, _dir: dir })
    }
}

impl Drop for RealEdge {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

pub async fn run(url: &str, sizes: &[usize], server_pid: Option<u32>) -> Result<Scenario> {
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for &n in sizes {
        eprintln!("scale: {n} edges");
        match step(url, n, server_pid).await {
            Ok(mut step) => figures.append(&mut step),
            Err(e) => {
                notes.push(format!("stopped at {n} edges: {e:#}"));
                break;
            }
        }
    }
    let mut note = format!(
        "sizes {:?}; each: N-1 simulated edges and one real edge process, a fresh orchestrator process",
        sizes
    );
    for n in notes {
        note += "; ";
        note += &n;
    }
    Ok(Scenario {
        name: "scale".into(),
        notes: note,
        figures,
    })
}

async fn step(url: &str, n: usize, server_pid: Option<u32>) -> Result<Vec<Figure>> {
    let client = cairn_streams::connect(url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client);
    fresh_streams(&js).await?;
    let orchestrator = OrchestratorProcess::start(url).await?;
    let watch = Watch::start(&js).await?;

    let started = Instant::now();
    let real = RealEdge::start(url, &format!("scale-real-{n}"))?;
    let fleet = Fleet::start(url, &watch, &format!("scale-{n}"), n - 1, 4, false).await?;
    watch
        .until("every node registered", STEP_DEADLINE, |s| {
            s.registered.len() >= n
        })
        .await?;
    let registered = started.elapsed();

    let publisher = Publisher::new(js.clone());
    let started = Instant::now();
    deploy(
        &publisher,
        spec("scale-daemon", JobType::Daemon, None, &["sleep", "3600"]),
    )
    .await?;
    watch
        .until("the daemon running on every node", STEP_DEADLINE, |s| {
            s.reached(ExecutionState::Running) >= n
        })
        .await?;
    let placed = started.elapsed();

    let mb = |bytes: Option<u64>| bytes.map_or(f64::NAN, |b| b as f64 / 1_000_000.0);
    let mut figures = vec![
        Figure::value(
            &format!("{n} edges: all registered"),
            registered.as_secs_f64(),
            "s",
        ),
        Figure::value(
            &format!("{n} edges: daemon deployed → running on all"),
            placed.as_secs_f64(),
            "s",
        ),
        Figure::value(
            &format!("{n} edges: orchestrator RSS"),
            mb(rss_bytes(orchestrator.pid())),
            "MB",
        ),
        Figure::value(
            &format!("{n} edges: one real edge RSS"),
            mb(rss_bytes(real.child.id())),
            "MB",
        ),
    ];
    if let Some(pid) = server_pid {
        figures.push(Figure::value(
            &format!("{n} edges: nats-server RSS"),
            mb(rss_bytes(pid)),
            "MB",
        ));
    }
    figures.push(Figure::value(
        &format!("{n} edges: this benchmark's RSS (the simulated edges)"),
        mb(rss_bytes(std::process::id())),
        "MB",
    ));
    drop(fleet);
    Ok(figures)
}
