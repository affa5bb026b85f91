//! The scale scenario: fleets of growing size. For each size N, a fresh orchestrator
//! process and N edges — N-1 simulated ones and one real `cairn edge` process, so one
//! edge's memory can be read — then the time until all N are registered, the time until a
//! daemon job runs on all N, and the resident memory of nats-server (on a cluster, of each
//! server and their sum), the orchestrator and the real edge. Before each size, JetStream's floor for the same fleet: N per-node
//! consumers created, and one message to each node received and acked. It stops at the
//! first size that fails and says why.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_shared::{ExecutionState, JobType};
use cairn_streams::Publisher;

use crate::fleet::Fleet;
use crate::lifecycle::{deploy, spec};
use crate::raw::RawFleet;
use crate::report::{Figure, Scenario};
use crate::stack::{Nats, OrchestratorProcess, rss_bytes, spawn_cairn};
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

pub async fn run(nats: &Nats, sizes: &[usize]) -> Result<Scenario> {
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for &n in sizes {
        eprintln!("scale: {n} edges");
        match step(nats, n, &mut figures).await {
            Ok(()) => {}
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

/// One size. Figures are added as they are measured, so a size that fails still reports
/// how far it got and the memory at that point.
async fn step(nats: &Nats, n: usize, figures: &mut Vec<Figure>) -> Result<()> {
    let url = nats.url.as_str();
    let client = cairn_streams::connect(url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client);
    nats.fresh_streams(&js).await?;

    // JetStream's floor for the same fleet: its consumers, and one message to each node.
    let raw = RawFleet::start(nats, n).await?;
    figures.push(Figure::value(
        &format!("{n} edges: raw, {n} per-node consumers created"),
        raw.created_in.as_secs_f64(),
        "s",
    ));
    let one_each = raw.throughput_within(n as u64, STEP_DEADLINE).await;
    if let Ok(took) = &one_each {
        figures.push(Figure::value(
            &format!("{n} edges: raw, one message to each node received and acked"),
            took.as_secs_f64(),
            "s",
        ));
    }
    raw.close().await?;
    one_each.context("the raw baseline")?;

    let orchestrator = OrchestratorProcess::start(nats).await?;
    let watch = Watch::start(&js).await?;

    let started = Instant::now();
    let real = RealEdge::start(url, &format!("scale-real-{n}"))?;
    let mut fleet = Fleet::connect(url, &format!("scale-{n}"), n - 1, 4).await?;
    watch
        .until("every node registered", STEP_DEADLINE, |s| {
            s.registered.len() >= n
        })
        .await?;
    figures.push(Figure::value(
        &format!("{n} edges: all registered"),
        started.elapsed().as_secs_f64(),
        "s",
    ));
    // The simulated edges bind their consumers only now, so that the figure above is the
    // edges' connections and hellos and cairn's registration, not the benchmark's binding.
    fleet.run(false).await?;

    let publisher = Publisher::new(js.clone());
    let started = Instant::now();
    deploy(
        &publisher,
        spec("scale-daemon", JobType::Daemon, None, &["sleep", "3600"]),
    )
    .await?;
    let placed = watch
        .until("the daemon running on every node", STEP_DEADLINE, |s| {
            s.reached(ExecutionState::Running) >= n
        })
        .await;
    match &placed {
        Ok(()) => figures.push(Figure::value(
            &format!("{n} edges: daemon deployed → running on all"),
            started.elapsed().as_secs_f64(),
            "s",
        )),
        Err(_) => figures.push(Figure::value(
            &format!("{n} edges: daemon running after {STEP_DEADLINE:?}"),
            watch.with(|s| s.reached(ExecutionState::Running)) as f64,
            "nodes",
        )),
    }

    let mb = |bytes: Option<u64>| bytes.map_or(f64::NAN, |b| b as f64 / 1_000_000.0);
    let mut memory = vec![
        (
            format!("{n} edges: orchestrator RSS"),
            rss_bytes(orchestrator.pid()),
        ),
        (
            format!("{n} edges: one real edge RSS"),
            rss_bytes(real.child.id()),
        ),
        (
            format!("{n} edges: this benchmark's RSS (the simulated edges)"),
            rss_bytes(std::process::id()),
        ),
    ];
    match nats.server_pids.as_slice() {
        [pid] => memory.push((format!("{n} edges: nats-server RSS"), rss_bytes(*pid))),
        // A cluster's members differ (stream and consumer leaders are spread over them),
        // so each is shown, and the sum is what the fleet costs the cluster.
        pids => {
            for (i, pid) in pids.iter().enumerate() {
                memory.push((
                    format!("{n} edges: nats-server RSS, server {i}"),
                    rss_bytes(*pid),
                ));
            }
            if !pids.is_empty() {
                memory.push((
                    format!("{n} edges: nats-server RSS, sum of the {}", pids.len()),
                    pids.iter().map(|pid| rss_bytes(*pid)).sum(),
                ));
            }
        }
    }
    for (name, bytes) in memory {
        figures.push(Figure::value(&name, mb(bytes), "MB"));
    }
    drop(fleet);
    placed
}
