//! End to end through the built binary: a real nats-server, a `cairn orchestrator` process
//! and `cairn edge` processes. Jobs are deployed, run, logged and stopped with the CLI;
//! edges are SIGKILLed while work is decided for them and get it when they return.

use std::time::Instant;

mod support;
use support::stack::{SLOW_LIVENESS, Stack};
use support::{cairn, json};

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
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = [
        stack.edge("edge-a", "edge", 4),
        stack.edge("edge-b", "edge", 4),
    ];
    stack.nodes_in(&["edge-a", "edge-b"], "connected").await;

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
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: unknown execution \"01ARZ3NDEKTSV4RRFFQ69G5FAV\""
    );

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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown job \"nope\""), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().contains("unknown job"),
        "the reason is the last line, after the progress: {stderr}"
    );
}

#[tokio::test]
async fn fault_edges_dead_when_work_is_decided_get_it_on_return_and_nothing_cascades() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let mut a = stack.edge("edge-a", "edge", 4);
    let mut b = stack.edge("edge-b", "edge", 4);
    stack.nodes_in(&["edge-a", "edge-b"], "connected").await;

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
    let _a = stack.edge("edge-a", "edge", 4);
    let _b = stack.edge("edge-b", "edge", 4);
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
