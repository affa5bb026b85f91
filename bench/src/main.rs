//! `cairn-bench`: cairn's throughput measured beside raw JetStream in the same run, on the
//! same server and client, so every figure is reported as a ratio to its baseline.

mod history;
mod reconnect;
mod replay;
mod report;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "cairn-bench",
    version,
    about = "Measure cairn against raw JetStream in one run"
)]
struct Cli {
    /// Use this NATS server instead of starting a private one (its cairn streams are
    /// deleted and recreated).
    #[arg(long, global = true, env = "CAIRN_BENCH_NATS_URL")]
    nats: Option<String>,
    /// Write every figure, with the machine and versions, to this JSON file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// A small run that checks the benchmark works; its speeds mean nothing.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay events from a real stream through the projector into a fresh redb file,
    /// beside the raw publish and consume rates of the same stream.
    Replay {
        /// Events in the history (default 1,000,000; 20,000 with --quick).
        #[arg(long)]
        events: Option<u64>,
    },
    /// An edge returns to work that waited for it: time to the first assignment and the
    /// backlog drain rate, beside a bare pull consumer's.
    Reconnect {
        /// Assignments waiting for the returning edge (default 10,000; 300 with --quick).
        #[arg(long)]
        backlog: Option<u64>,
        /// Returns measured for the time to the first assignment (default 20; 3 with --quick).
        #[arg(long)]
        trials: Option<u32>,
        /// The program every assignment runs; a path that does not exist measures the edge
        /// without process start-up.
        #[arg(long, default_value = "true")]
        task: String,
    },
    /// Every scenario in turn.
    All,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let server = match &cli.nats {
        Some(_) => None,
        None => Some(cairn_streams::testing::NatsServer::start()),
    };
    let url = cli
        .nats
        .clone()
        .or_else(|| server.as_ref().map(|s| s.url()))
        .context("no NATS server")?;
    let quick = cli.quick;
    let replay_events =
        |events: Option<u64>| events.unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let backlog = |b: Option<u64>| b.unwrap_or(if quick { 300 } else { 10_000 });
    let trials = |t: Option<u32>| t.unwrap_or(if quick { 3 } else { 20 });
    let scenarios = match cli.command {
        Command::Replay { events } => vec![replay::run(&url, replay_events(events)).await?],
        Command::Reconnect {
            backlog: b,
            trials: t,
            task,
        } => vec![reconnect::run(&url, backlog(b), trials(t), &task).await?],
        Command::All => vec![
            replay::run(&url, replay_events(None)).await?,
            reconnect::run(&url, backlog(None), trials(None), "true").await?,
        ],
    };
    let report = report::Report::new(&url, cli.quick, scenarios).await?;
    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}
