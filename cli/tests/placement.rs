//! Placement through the built binary against a real nats-server: constraints on node
//! labels beyond the selector's equality.

use std::collections::BTreeSet;

mod support;
use support::cairn;
use support::stack::{SLOW_LIVENESS, Stack, executions};

const ZONAL: &str = r#"
name: zonal
type: daemon
constraints:
  - {key: zone, op: in, values: [a]}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const TRAINER: &str = r#"
name: trainer
type: daemon
constraints:
  - {key: gpu, op: exists}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const MEANINGLESS: &str = r#"
name: meaningless
type: daemon
constraints:
  - {key: zone, op: in}
task:
  engine: exec
  command: ["true"]
"#;

fn nodes_of(executions: &[serde_json::Value]) -> BTreeSet<String> {
    executions
        .iter()
        .map(|e| e["node_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn constraints_place_only_on_the_nodes_they_admit() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = [
        stack.edge_labelled("a1", &[("zone", "a")], 4),
        stack.edge_labelled("b1", &[("zone", "b"), ("gpu", "1")], 4),
        stack.edge_labelled("a2", &[("zone", "a")], 4),
    ];
    stack.nodes_in(&["a1", "b1", "a2"], "connected").await;

    let zonal = stack.deploy("zonal", ZONAL, true);
    assert_eq!(zonal["state"], "running", "{zonal:#}");
    let running = stack.executions_in("zonal", "running", 2).await;
    assert_eq!(nodes_of(&running), ["a1".into(), "a2".into()].into());
    assert_eq!(executions(&url, "zonal").len(), 2, "nothing on zone b");

    let trainer = stack.deploy("trainer", TRAINER, true);
    assert_eq!(trainer["state"], "running", "{trainer:#}");
    let running = stack.executions_in("trainer", "running", 1).await;
    assert_eq!(nodes_of(&running), ["b1".into()].into());
    assert_eq!(
        executions(&url, "trainer").len(),
        1,
        "nothing without a gpu"
    );

    // A constraint that cannot mean anything is refused before it is stored.
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            stack.spec("meaningless", MEANINGLESS).to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("constraints[0]") && stderr.contains("in needs at least one value"),
        "{stderr}"
    );
}
