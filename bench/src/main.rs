//! `cairn-bench`: cairn's throughput measured beside raw JetStream in the same run, on the
//! same servers, stream replicas and client, so every figure is reported as a ratio to its
//! baseline.

mod appends;
mod dispatch;
mod fleet;
mod history;
mod layout;
mod lifecycle;
mod observer;
mod raw;
mod reconnect;
mod replay;
mod report;
mod scale;
mod stack;
mod watch;

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_streams::testing::{NatsCluster, NatsServer};
use clap::{CommandFactory, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "cairn-bench",
    version,
    about = "Measure cairn against raw JetStream in one run"
)]
struct Cli {
    /// Use this NATS server instead of starting a private one (its cairn streams are
    /// deleted and recreated, with one replica).
    #[arg(long, global = true, env = "CAIRN_BENCH_NATS_URL")]
    nats: Option<String>,
    /// Private nats-servers to start: 1, or 3 clustered on loopback, and then every stream
    /// of the run, cairn's and the raw baselines', has three replicas. Not with --nats, and
    /// not for `layout`, which starts clusters of its own.
    #[arg(long, global = true, default_value_t = 1, value_parser = parse_servers)]
    servers: usize,
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
    /// One batch job from deploy to every execution completed and in the views, on
    /// simulated edges, beside raw messages through as many per-node consumers.
    Lifecycle {
        /// Simulated edges (default 100; 10 with --quick).
        #[arg(long)]
        nodes: Option<usize>,
        /// Executions in the batch job (default 10,000; 500 with --quick).
        #[arg(long)]
        executions: Option<u32>,
        /// Times the job is run with the orchestrator's HTTP side off and then on and
        /// watched, alternating; the figures are each half's median.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
    /// Work offered at a fixed rate: decided → edge has it, beside raw publish → receive.
    Dispatch {
        /// Simulated edges (default 100; 10 with --quick).
        #[arg(long)]
        nodes: Option<usize>,
        /// Executions offered per second (default 1,000; 200 with --quick).
        #[arg(long)]
        rate: Option<u64>,
        /// How long work is offered (default 10s; 1s with --quick).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Fleets of growing size: time to register all, time to run a daemon on all, and
    /// the memory of nats-server (each one's and their sum on a cluster), the orchestrator
    /// and one edge.
    Scale {
        /// Fleet sizes, in order (default 10,100,1000,10000; 10,50 with --quick).
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<usize>>,
    },
    /// Per-node consumer layouts on a fresh 3-server loopback cluster each (this
    /// scenario starts its own clusters and ignores --nats): consumer creation, server
    /// memory and CPU, one message to each node, and a server's SIGKILL and restart.
    Layout {
        /// Fleet sizes, in order (default 1000,10000; 100 with --quick).
        #[arg(long, value_delimiter = ',')]
        nodes: Option<Vec<usize>>,
        /// Only these candidates (A, B, C, D; default all).
        #[arg(long, value_delimiter = ',')]
        candidates: Option<Vec<String>>,
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
    // Caught from the start, before anything is started: a signal's default action would
    // end the run without stopping the server and processes it runs.
    let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let cli = Cli::parse();
    if cli.servers > 1 {
        let refusal = match (&cli.nats, &cli.command) {
            (Some(url), _) => Some(format!(
                "--servers {} starts a private cluster, so it cannot be used with --nats {url} \
                 (given, or from CAIRN_BENCH_NATS_URL)",
                cli.servers
            )),
            (None, Command::Layout { .. }) => Some(
                "layout starts 3-server clusters of its own, so --servers does not apply to it"
                    .to_owned(),
            ),
            (None, _) => None,
        };
        if let Some(refusal) = refusal {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, refusal)
                .exit();
        }
    }
    let server = match &cli.nats {
        Some(_) => None,
        None => Some(Private::start(cli.servers).await),
    };
    let nats = match &server {
        Some(server) => stack::Nats {
            url: server.url(),
            replicas: cli.servers,
            server_pids: server.pids(),
        },
        None => stack::Nats {
            url: cli.nats.clone().context("no NATS server")?,
            replicas: 1,
            server_pids: vec![],
        },
    };
    let quick = cli.quick;
    let replay_events =
        |events: Option<u64>| events.unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let backlog = |b: Option<u64>| b.unwrap_or(if quick { 300 } else { 10_000 });
    let trials = |t: Option<u32>| t.unwrap_or(if quick { 3 } else { 20 });
    let nodes = |n: Option<usize>| n.unwrap_or(if quick { 10 } else { 100 });
    let executions = |e: Option<u32>| e.unwrap_or(if quick { 500 } else { 10_000 });
    let rate = |r: Option<u64>| r.unwrap_or(if quick { 200 } else { 1_000 });
    let appends = if quick { 20 } else { 300 };
    let duration = |d: Option<std::time::Duration>| {
        d.unwrap_or(std::time::Duration::from_secs(if quick { 1 } else { 10 }))
    };
    let sizes = |s: Option<Vec<usize>>| {
        s.unwrap_or_else(|| {
            if quick {
                vec![10, 50]
            } else {
                vec![10, 100, 1_000, 10_000]
            }
        })
    };
    let run = async {
        anyhow::Ok(match cli.command {
            Command::Lifecycle {
                nodes: n,
                executions: e,
                rounds,
            } => vec![lifecycle::run(&nats, nodes(n), executions(e), rounds).await?],
            Command::Dispatch {
                nodes: n,
                rate: r,
                duration: d,
            } => vec![dispatch::run(&nats, nodes(n), rate(r), duration(d), appends).await?],
            Command::Scale { sizes: s } => vec![scale::run(&nats, &sizes(s)).await?],
            Command::Replay { events } => vec![replay::run(&nats, replay_events(events)).await?],
            Command::Reconnect {
                backlog: b,
                trials: t,
                task,
            } => vec![reconnect::run(&nats, backlog(b), trials(t), &task).await?],
            Command::Layout {
                nodes: n,
                candidates,
            } => {
                let sizes = n.unwrap_or_else(|| {
                    if quick {
                        vec![100]
                    } else {
                        vec![1_000, 10_000]
                    }
                });
                vec![layout::run(&sizes, candidates.as_deref(), quick).await?]
            }
            Command::All => vec![
                lifecycle::run(&nats, nodes(None), executions(None), 1).await?,
                dispatch::run(&nats, nodes(None), rate(None), duration(None), appends).await?,
                reconnect::run(&nats, backlog(None), trials(None), "true").await?,
                // Before replay, whose million events would stay in both processes' memory.
                scale::run(&nats, &sizes(None)).await?,
                replay::run(&nats, replay_events(None)).await?,
            ],
        })
    };
    // Interrupted, the run is dropped (stopping the orchestrator and edge processes it
    // started) and then the private server: a signal's default action would leave them
    // running.
    // The status is the one a process ended by the signal has: 128 + its number.
    let scenarios = tokio::select! {
        scenarios = run => Ok(scenarios?),
        _ = interrupt.recv() => Err(("interrupted", 130)),
        _ = terminate.recv() => Err(("terminated", 143)),
    };
    let scenarios = match scenarios {
        Ok(scenarios) => scenarios,
        Err((signal, status)) => {
            eprintln!("cairn-bench: {signal}; stopping every process it started");
            drop(server);
            std::process::exit(status);
        }
    };
    let report = report::Report::new(&nats, cli.quick, scenarios).await?;
    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

fn parse_servers(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(NatsCluster::SIZE),
        _ => Err(format!("{text:?} is not 1 or 3")),
    }
}

/// The nats-server(s) this run started; they stop, their stores deleted, when it is dropped.
enum Private {
    Server(NatsServer),
    Cluster(NatsCluster),
}

impl Private {
    /// One server, or a loopback cluster of [`NatsCluster::SIZE`] once JetStream answers
    /// through it.
    async fn start(servers: usize) -> Self {
        if servers == NatsCluster::SIZE {
            Self::Cluster(NatsCluster::start().await)
        } else {
            Self::Server(NatsServer::start())
        }
    }

    /// Every server's client URL, comma-separated.
    fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// The servers' processes, in order.
    fn pids(&self) -> Vec<u32> {
        match self {
            Self::Server(server) => server.pid().into_iter().collect(),
            Self::Cluster(cluster) => (0..NatsCluster::SIZE)
                .filter_map(|i| cluster.server(i).pid())
                .collect(),
        }
    }
}
