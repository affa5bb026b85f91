//! End to end through the built binary: a real nats-server, a `cairn orchestrator` process
//! and `cairn edge` processes. Jobs are deployed, run, logged and stopped with the CLI;
//! edges are SIGKILLed while work is decided for them and get it when they return.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_streams::testing::{NatsServer, wait_until};
use serde_json::Value;

mod support;
use support::{Proc, cairn, json};

struct Stack {
    server: NatsServer,
    dir: tempfile::TempDir,
    _orchestrator: Proc,
}

impl Stack {
    fn start() -> Self {
        let server = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let orchestrator = Proc::spawn(
            &server.url(),
            &[
                "orchestrator",
                "--heartbeat-interval",
                "200ms",
                "--disconnect-after",
                "2s",
                "--lost-after",
                "20s",
            ],
            &dir.path().join("orchestrator"),
        );
        Self {
            server,
            dir,
            _orchestrator: orchestrator,
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn edge(&self, id: &str) -> Proc {
        Proc::spawn(
            &self.url(),
            &[
                "edge",
                "--node-id",
                id,
                "--label",
                "role=edge",
                "--capacity",
                "4",
                "--heartbeat-interval",
                "200ms",
            ],
            &self.dir.path().join(id),
        )
    }

    fn spec(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    async fn nodes_connected(&self, ids: &[&str]) {
        let url = self.url();
        let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        wait_until("the edges to register", Duration::from_secs(30), || {
            let (url, want) = (url.clone(), want.clone());
            async move {
                let out = cairn(&url, &["node", "list", "-o", "json"]);
                let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                let connected: Vec<String> = nodes
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|n| n["state"] == "connected")
                            .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if want.iter().all(|w| connected.contains(w)) {
                    Ok(())
                } else {
                    Err(nodes)
                }
            }
        })
        .await;
    }

    async fn executions_in(&self, job: &str, state: &str, count: usize) -> Vec<Value> {
        let url = self.url();
        let (job, state) = (job.to_owned(), state.to_owned());
        wait_until(
            &format!("{count} executions of {job} to be {state}"),
            Duration::from_secs(30),
            || {
                let (url, job, state) = (url.clone(), job.clone(), state.clone());
                async move {
                    // Until the views have the job, the answer is "unknown job": keep waiting.
                    let out = cairn(&url, &["execution", "list", "--job", &job, "-o", "json"]);
                    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    let matching: Vec<Value> = all
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|e| e["state"] == state.as_str())
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    if matching.len() == count {
                        Ok(matching)
                    } else {
                        Err((all, String::from_utf8_lossy(&out.stderr).into_owned()))
                    }
                }
            },
        )
        .await
    }
}

const HELLO: &str = r#"
name: hello
type: batch
count: 3
selector: {role: edge}
task:
  engine: exec
  command: ["sh", "-c", "echo hello from $CAIRN_NODE_ID; echo oops >&2"]
"#;

const DAEMON: &str = r#"
name: keeper
type: daemon
selector: {role: edge}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

#[tokio::test]
async fn deploy_runs_logs_and_stops_through_the_cli() {
    let stack = Stack::start();
    let url = stack.url();
    let _edges = [stack.edge("edge-a"), stack.edge("edge-b")];
    stack.nodes_connected(&["edge-a", "edge-b"]).await;

    // A bad spec is refused locally and nothing is published.
    let bad = stack.spec(
        "bad",
        "name: bad\ntype: batch\ncount: -1\ntask: {engine: exec, command: [true]}\n",
    );
    let out = cairn(&url, &["job", "deploy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert_eq!(json(&url, &["job", "list"]).as_array().unwrap().len(), 0);

    let started = Instant::now();
    let deployed = json(
        &url,
        &[
            "job",
            "deploy",
            stack.spec("hello", HELLO).to_str().unwrap(),
            "--wait",
        ],
    );
    eprintln!("deploy → batch of 3 completed: {:?}", started.elapsed());
    assert_eq!(deployed["name"], "hello");
    assert_eq!(deployed["version"], 1);
    assert_eq!(deployed["state"], "completed");
    let completed = stack.executions_in("hello", "completed", 3).await;
    let id = completed[0]["id"].as_str().unwrap();
    let node = completed[0]["node_id"].as_str().unwrap();
    let logs = cairn(&url, &["execution", "logs", id]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let text = String::from_utf8(logs.stdout).unwrap();
    assert!(text.contains(&format!("hello from {node}")), "{text:?}");
    assert!(text.contains("oops"), "stderr is in the log too: {text:?}");
    let out = cairn(&url, &["execution", "logs", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown execution"));

    // A daemon runs on both edges until stopped.
    let daemon = json(
        &url,
        &[
            "job",
            "deploy",
            stack.spec("keeper", DAEMON).to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(daemon["state"], "running");
    stack.executions_in("keeper", "running", 2).await;
    let stopped = json(&url, &["job", "stop", "keeper", "--wait"]);
    assert_eq!(stopped["state"], "stopped");
    stack.executions_in("keeper", "stopped", 2).await;

    // Stopping an unknown job is refused with its name.
    let out = cairn(&url, &["job", "stop", "nope", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job \"nope\""));
}

#[tokio::test]
async fn fault_edges_dead_when_work_is_decided_get_it_on_return_and_nothing_cascades() {
    let stack = Stack::start();
    let url = stack.url();
    let mut a = stack.edge("edge-a");
    let mut b = stack.edge("edge-b");
    stack.nodes_connected(&["edge-a", "edge-b"]).await;

    // Both edges die; the orchestrator has not noticed (disconnect-after is 2 s).
    a.kill9();
    b.kill9();
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            stack.spec("hello", HELLO).to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.executions_in("hello", "pending", 3).await;

    // They come back with the same ids and data: the work waiting for them runs.
    let returned = Instant::now();
    let _a = stack.edge("edge-a");
    let _b = stack.edge("edge-b");
    stack.executions_in("hello", "completed", 3).await;
    eprintln!(
        "edges back → 3 waiting executions completed: {:?}",
        returned.elapsed()
    );

    // Nothing is stuck, so a later job on the same nodes runs at once.
    let later = stack.spec("later", &HELLO.replace("name: hello", "name: later"));
    let started = Instant::now();
    let deployed = json(&url, &["job", "deploy", later.to_str().unwrap(), "--wait"]);
    eprintln!("later job deployed → completed: {:?}", started.elapsed());
    assert_eq!(deployed["state"], "completed");
    let jobs = json(&url, &["job", "list"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == "completed"),
        "{jobs}"
    );
}
