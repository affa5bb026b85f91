//! The stack the end-to-end tests run against: a real nats-server, `cairn orchestrator` and
//! `cairn edge` processes, and probes that read the system only through the CLI (and the raw
//! stream counts where a test must see what is queued).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use cairn_streams::StreamKind;
use cairn_streams::testing::{NatsCluster, NatsServer, wait_until};
use serde_json::Value;

use super::{Proc, cairn, json};

/// The whole event log, one JSON object per event.
pub fn events(url: &str) -> Vec<Value> {
    let out = cairn(url, &["events", "-o", "json"]);
    assert!(
        out.status.success(),
        "events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn of_type<'e>(events: &'e [Value], kind: &str) -> Vec<&'e Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Every execution of `job` (all versions); empty while the views do not know the job yet.
pub fn executions(url: &str, job: &str) -> Vec<Value> {
    let out = cairn(url, &["execution", "list", "--job", job, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

pub fn count_in(executions: &[Value], state: &str) -> usize {
    executions.iter().filter(|e| e["state"] == state).count()
}

/// Waits, with a deadline, for a synchronous probe (a CLI call) to succeed.
pub async fn eventually<T>(
    what: &str,
    secs: u64,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    wait_until(what, Duration::from_secs(secs), || {
        let seen = probe();
        async move { seen }
    })
    .await
}

/// Whether a part is still running (it has not exited or crashed).
pub fn alive(part: &mut Proc) -> bool {
    matches!(part.0.try_wait(), Ok(None))
}

/// Liveness settings used where nodes must become `lost` within the test.
pub const FAST_LIVENESS: &[&str] = &[
    "--heartbeat-interval",
    "200ms",
    "--disconnect-after",
    "1s",
    "--lost-after",
    "3s",
];

/// Liveness settings under which a dead edge stays merely `disconnected`.
pub const SLOW_LIVENESS: &[&str] = &[
    "--heartbeat-interval",
    "200ms",
    "--disconnect-after",
    "2s",
    "--lost-after",
    "60s",
];

/// What a stack's parts connect to: one server, or three clustered.
pub enum Nats {
    Server(NatsServer),
    Cluster(NatsCluster),
}

/// Real NATS and a temporary directory; orchestrators and edges are started on demand as
/// `cairn` processes whose data lives under that directory.
pub struct Stack {
    pub nats: Nats,
    pub dir: tempfile::TempDir,
    liveness: &'static [&'static str],
}

impl Stack {
    pub fn new(liveness: &'static [&'static str]) -> Self {
        Self::on(Nats::Server(NatsServer::start()), liveness)
    }

    /// A stack on a 3-server cluster that is still forming: its parts must wait for it.
    pub fn clustered(liveness: &'static [&'static str]) -> Self {
        Self::on(Nats::Cluster(NatsCluster::start_unready()), liveness)
    }

    pub fn on(nats: Nats, liveness: &'static [&'static str]) -> Self {
        Self {
            nats,
            dir: tempfile::tempdir().unwrap(),
            liveness,
        }
    }

    pub fn url(&self) -> String {
        match &self.nats {
            Nats::Server(server) => server.url(),
            Nats::Cluster(cluster) => cluster.url(),
        }
    }

    /// The single server; panics on a clustered stack.
    pub fn server(&mut self) -> &mut NatsServer {
        match &mut self.nats {
            Nats::Server(server) => server,
            Nats::Cluster(_) => panic!("a clustered stack has three servers"),
        }
    }

    /// The cluster; panics on a single-server stack.
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match &mut self.nats {
            Nats::Cluster(cluster) => cluster,
            Nats::Server(_) => panic!("this stack runs on one server"),
        }
    }

    /// An orchestrator whose views live in `<tmp>/<name>`: the same name is the same data
    /// dir. On a cluster its streams get three replicas.
    pub fn orchestrator(&self, name: &str) -> Proc {
        self.orchestrator_with(name, &[])
    }

    /// An orchestrator with more arguments (`--http ADDR`).
    pub fn orchestrator_with(&self, name: &str, more: &[&str]) -> Proc {
        let mut args = vec!["orchestrator"];
        args.extend(self.liveness);
        args.extend(more);
        if matches!(self.nats, Nats::Cluster(_)) {
            args.extend(["--replicas", "3"]);
        }
        Proc::spawn(&self.url(), &args, &self.dir.path().join(name))
    }

    pub fn edge_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    /// Starts an edge per id (label `role=<role>`, the same capacity) and waits until the
    /// orchestrator has them all connected.
    pub async fn connected_edges(&self, ids: &[&str], role: &str, capacity: u32) -> Vec<Proc> {
        let edges = ids.iter().map(|id| self.edge(id, role, capacity)).collect();
        self.nodes_in(ids, "connected").await;
        edges
    }

    /// An edge labelled `role=<role>` and `host=<id>` (so a job can pin one node).
    pub fn edge(&self, id: &str, role: &str, capacity: u32) -> Proc {
        self.edge_labelled(id, &[("role", role)], capacity)
    }

    /// An edge with these labels and `host=<id>`, capped at `capacity`.
    pub fn edge_labelled(&self, id: &str, labels: &[(&str, &str)], capacity: u32) -> Proc {
        let capacity = capacity.to_string();
        self.edge_with(id, labels, &["--capacity", &capacity])
    }

    /// An edge with these labels, `host=<id>`, and these more arguments.
    pub fn edge_with(&self, id: &str, labels: &[(&str, &str)], more: &[&str]) -> Proc {
        let labels: Vec<String> = labels
            .iter()
            .chain(&[("host", id)])
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut args = vec!["edge", "--node-id", id];
        for label in &labels {
            args.extend(["--label", label.as_str()]);
        }
        args.extend(more);
        args.extend(["--heartbeat-interval", "200ms"]);
        Proc::spawn(&self.url(), &args, &self.edge_dir(id))
    }

    pub fn spec(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub fn deploy(&self, name: &str, yaml: &str, wait: bool) -> Value {
        let spec = self.spec(name, yaml);
        let mut args = vec!["job", "deploy", spec.to_str().unwrap()];
        if wait {
            args.push("--wait");
        }
        json(&self.url(), &args)
    }

    pub async fn nodes_in(&self, ids: &[&str], state: &str) {
        let url = self.url();
        eventually(&format!("nodes {ids:?} to be {state}"), 30, || {
            // Until the orchestrator answers, there is nothing to see: keep waiting.
            let out = cairn(&url, &["node", "list", "-o", "json"]);
            let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let there: BTreeSet<&str> = nodes
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["state"] == state)
                .filter_map(|n| n["id"].as_str())
                .collect();
            if ids.iter().all(|id| there.contains(id)) {
                Ok(())
            } else {
                Err(format!("{nodes} {}", String::from_utf8_lossy(&out.stderr)))
            }
        })
        .await;
    }

    /// Waits for exactly `count` executions of `job` to be in `state`, and returns them.
    pub async fn executions_in(&self, job: &str, state: &str, count: usize) -> Vec<Value> {
        let url = self.url();
        eventually(
            &format!("{count} executions of {job} to be {state}"),
            30,
            || {
                // Until the views have the job, the answer is "unknown job": keep waiting.
                let all = executions(&url, job);
                let matching: Vec<Value> = all
                    .iter()
                    .filter(|e| e["state"] == state)
                    .cloned()
                    .collect();
                if matching.len() == count {
                    Ok(matching)
                } else {
                    Err(format!("{all:?}"))
                }
            },
        )
        .await
    }
}

/// Messages a stream holds now.
pub async fn stream_messages(stack: &Stack, stream: StreamKind) -> u64 {
    let client = cairn_streams::connect(&stack.url(), None, "cairn-test")
        .await
        .expect("connecting to count a stream's messages");
    let js = cairn_streams::jetstream(client);
    let mut stream = js
        .get_stream(stream.name())
        .await
        .unwrap_or_else(|e| panic!("{} should exist: {e}", stream.name()));
    stream.info().await.map_or(0, |i| i.state.messages)
}
