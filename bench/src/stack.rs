//! What the fleet scenarios run against: the NATS servers and the replicas of every stream
//! on them, fresh cairn streams, a real orchestrator process (`cairn orchestrator`, so its
//! memory is its own), and the memory of a process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use cairn_orchestrator::query::{Answer, endpoint};
use cairn_streams::{Topology, subjects};

/// The NATS a run measures: where it is, and the replicas of every stream the run creates.
/// cairn's streams and the raw baselines' take the same count, so that each ratio compares
/// like with like.
#[derive(Clone, Debug)]
pub struct Nats {
    /// One URL, or a cluster's, comma-separated.
    pub url: String,
    /// 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// The servers' processes, when this run started them (one, or a cluster's three in
    /// order); empty for a server named with `--nats`, whose memory is not this run's to read.
    pub server_pids: Vec<u32>,
}

impl Nats {
    /// The settings of cairn's streams in this run.
    pub fn topology(&self) -> Topology {
        Topology {
            replicas: self.replicas,
            ..Topology::default()
        }
    }

    /// Deletes every cairn stream and declares them again, empty.
    pub async fn fresh_streams(&self, js: &jetstream::Context) -> Result<()> {
        cairn_streams::testing::fresh_streams(js, &self.topology()).await?;
        Ok(())
    }
}

/// The `cairn` binary: `CAIRN_BIN`, or the one built beside this benchmark.
pub fn cairn_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CAIRN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating cairn-bench")?;
    let path = exe.with_file_name("cairn");
    if !path.exists() {
        bail!(
            "the orchestrator runs as its own process, but {} does not exist: build it with \
             `cargo build --release -p cairn-cli` (or set CAIRN_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `cairn --nats URL <args> --data DIR`, quiet but for warnings unless `CAIRN_LOG`
/// asks for more (to see where a scenario's time goes).
pub fn spawn_cairn(url: &str, args: &[&str], data: &std::path::Path) -> Result<Child> {
    Ok(Command::new(cairn_binary()?)
        .args(["--nats", url])
        .args(args)
        .arg("--data")
        .arg(data)
        .env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// A `cairn orchestrator` child process on a fresh data directory; killed on drop.
pub struct OrchestratorProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl OrchestratorProcess {
    /// Starts it, declaring its streams with the run's replicas (as [`Nats::fresh_streams`]
    /// did, so it finds them as it wants them), and waits until its query service answers.
    pub async fn start(nats: &Nats) -> Result<Self> {
        Self::start_with(nats, &[]).await
    }

    /// [`OrchestratorProcess::start`] with more arguments (`--http ADDR`).
    pub async fn start_with(nats: &Nats, more: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let replicas = nats.replicas.to_string();
        let mut args = vec!["orchestrator", "--replicas", &replicas];
        args.extend(more);
        let child =
            spawn_cairn(&nats.url, &args, dir.path()).context("starting the orchestrator")?;
        let process = Self { child, _dir: dir };
        let client = cairn_streams::connect(&nats.url, None, "cairn-bench-probe").await?;
        let started = Instant::now();
        loop {
            let asked = client
                .request(subjects::query(endpoint::JOBS), "{}".into())
                .await;
            if let Ok(reply) = asked
                && serde_json::from_slice::<Answer<serde_json::Value>>(&reply.payload).is_ok()
            {
                return Ok(process);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the orchestrator did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_kilobytes(&format!("/proc/{pid}/status"), "VmRSS:").map(|kb| kb * 1024)
}

/// A `Key:   N kB` line of a `/proc` file.
pub fn proc_kilobytes(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
