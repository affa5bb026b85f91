//! Placement through the built binary against a real nats-server: constraints on node
//! labels beyond the selector's equality, and requests fitted into what edges offer.

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

const BIG: &str = r#"
name: big
type: batch
resources: {memory: 1Gi}
task:
  engine: exec
  command: ["true"]
"#;

const SMALL: &str = r#"
name: small
type: service
count: 3
resources: {cpu: 250m, memory: 100Mi}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

#[tokio::test]
async fn requests_fit_into_what_an_edge_offers() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.edge_with("tiny", &[], &["--memory", "256Mi", "--cpu", "2"]);
    stack.nodes_in(&["tiny"], "connected").await;
    let nodes = support::json(&url, &["node", "list"]);
    let tiny = &nodes.as_array().unwrap()[0];
    assert_eq!(
        tiny["capacity"],
        serde_json::Value::Null,
        "no cap unless asked: {tiny:#}"
    );
    assert_eq!(tiny["resources"]["memory"], "256Mi", "{tiny:#}");
    assert_eq!(tiny["resources"]["cpu"], "2", "{tiny:#}");

    // 1Gi fits nowhere: the job waits, queued.
    let big = stack.deploy("big", BIG, false);
    assert_eq!(big["name"], "big");
    // Two replicas of 100Mi fit in 256Mi, the third waits.
    stack.deploy("small", SMALL, false);
    stack.executions_in("small", "running", 2).await;
    let nodes = support::json(&url, &["node", "list"]);
    let tiny = &nodes.as_array().unwrap()[0];
    assert_eq!(tiny["allocated"]["memory"], "200Mi", "{tiny:#}");
    assert_eq!(tiny["allocated"]["cpu"], "500m", "{tiny:#}");
    let table = String::from_utf8(cairn(&url, &["node", "list"]).stdout).unwrap();
    assert!(
        table.contains("500m/2") && table.contains("200Mi/256Mi"),
        "{table}"
    );
    let job = support::json(&url, &["job", "describe", "small"]);
    assert_eq!(job["state"], "deploying", "{job:#}");
    assert!(
        executions(&url, "big").is_empty(),
        "nothing of big was placed"
    );
    let job = support::json(&url, &["job", "describe", "big"]);
    assert_eq!(job["state"], "queued", "{job:#}");
    assert_eq!(job["placement"]["unplaced"], 1, "{job:#}");
    assert_eq!(job["placement"]["nodes"], 1, "{job:#}");
    assert_eq!(job["placement"]["exhausted"]["memory"], 1, "{job:#}");
    let reason = job["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("1 short of memory"), "{job:#}");
    let table = String::from_utf8(cairn(&url, &["job", "describe", "big"]).stdout).unwrap();
    assert!(table.contains("waiting for a node"), "{table}");
    // Waiting for it says why, and gives up at the timeout with the reason.
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            stack.spec("big", BIG).to_str().unwrap(),
            "--wait",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job big: queued, waiting for a node")
            && stderr.contains("short of memory"),
        "{stderr}"
    );

    // Stopping the service frees the memory; the batch still does not fit, and nothing
    // else waits.
    support::json(&url, &["job", "stop", "small", "--wait"]);
    stack.executions_in("small", "stopped", 2).await;
    assert!(executions(&url, "big").is_empty());
}

const HOG: &str = r#"
name: hog
type: service
resources: {memory: 200Mi}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const LATER: &str = r#"
name: later
type: service
resources: {memory: 200Mi}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

#[tokio::test]
async fn a_job_waiting_for_room_is_placed_the_moment_room_is_freed() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.edge_with("tiny", &[], &["--memory", "256Mi"]);
    stack.nodes_in(&["tiny"], "connected").await;
    let hog = stack.deploy("hog", HOG, true);
    assert_eq!(hog["state"], "running", "{hog:#}");
    stack.deploy("later", LATER, false);
    let blocked = support::stack::eventually("later to be blocked", 30, || {
        // Until the views have the job, describing it fails: keep waiting.
        let out = cairn(&url, &["job", "describe", "later", "-o", "json"]);
        let job: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        match job["placement"]["exhausted"]["memory"].as_u64() {
            Some(1) => Ok(job),
            _ => Err(format!("{job:#}")),
        }
    })
    .await;
    assert_eq!(blocked["state"], "queued", "{blocked:#}");

    support::json(&url, &["job", "stop", "hog", "--wait"]);
    stack.executions_in("later", "running", 1).await;
    let job = support::json(&url, &["job", "describe", "later"]);
    assert!(
        job.get("placement").is_none(),
        "nothing waits any more: {job:#}"
    );
    assert!(job.get("reason").is_none(), "{job:#}");
}

const PAIR: &str = r#"
name: pair
type: service
count: 2
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const EVERYWHERE: &str = r#"
name: everywhere
type: daemon
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

#[tokio::test]
async fn an_ineligible_node_gets_no_new_work_until_it_is_enabled() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = [
        stack.edge_labelled("a", &[], 4),
        stack.edge_labelled("b", &[], 4),
    ];
    stack.nodes_in(&["a", "b"], "connected").await;

    let set = support::json(&url, &["node", "eligibility", "a", "disable", "--wait"]);
    assert_eq!(set["eligibility"], "ineligible", "{set:#}");
    assert_eq!(set["state"], "decided", "{set:#}");
    let nodes = support::json(&url, &["node", "list"]);
    let a = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "a")
        .unwrap();
    assert_eq!(a["eligibility"], "ineligible", "{nodes:#}");

    let pair = stack.deploy("pair", PAIR, true);
    assert_eq!(pair["state"], "running", "{pair:#?}");
    let running = stack.executions_in("pair", "running", 2).await;
    assert_eq!(nodes_of(&running), ["b".into()].into(), "nothing new on a");

    support::json(&url, &["node", "eligibility", "a", "enable", "--wait"]);
    let everywhere = stack.deploy("everywhere", EVERYWHERE, true);
    assert_eq!(everywhere["state"], "running", "{everywhere:#}");
    let running = stack.executions_in("everywhere", "running", 2).await;
    assert_eq!(nodes_of(&running), ["a".into(), "b".into()].into());

    let out = cairn(&url, &["node", "eligibility", "ghost", "disable", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown node \"ghost\""), "{stderr}");
}

const LONG: &str = r#"
name: long
type: batch
selector: {role: x}
task:
  engine: exec
  command: ["sh", "-c", "while true; do sleep 1; done"]
"#;

const AFTER: &str = r#"
name: after
type: batch
count: 2
task:
  engine: exec
  command: ["true"]
"#;

fn node_row(url: &str, id: &str) -> serde_json::Value {
    let nodes = support::json(url, &["node", "list"]);
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no node {id} in {nodes:#}"))
}

#[tokio::test]
async fn a_drained_node_hands_its_replicas_over_and_returns_to_service_when_enabled() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = [
        stack.edge_labelled("a", &[("role", "x")], 4),
        stack.edge_labelled("b", &[], 4),
    ];
    stack.nodes_in(&["a", "b"], "connected").await;
    stack.deploy("pair", PAIR, true);
    let running = stack.executions_in("pair", "running", 2).await;
    assert_eq!(nodes_of(&running), ["a".into(), "b".into()].into());
    stack.deploy("everywhere", EVERYWHERE, true);
    stack.executions_in("everywhere", "running", 2).await;

    // The replica on a moves to b; the daemon on a stops once it has; then nothing runs
    // on a and the drain is over.
    let drained = support::json(&url, &["node", "drain", "a", "--wait", "--timeout", "60s"]);
    assert_eq!(drained["state"], "drained", "{drained:#}");
    let pair = executions(&url, "pair");
    let running: Vec<_> = pair
        .iter()
        .filter(|e| e["state"] == "running")
        .cloned()
        .collect();
    assert_eq!(nodes_of(&running), ["b".into()].into(), "{pair:#?}");
    assert_eq!(running.len(), 2, "{pair:#?}");
    let moved: Vec<_> = pair.iter().filter(|e| e["node_id"] == "a").collect();
    assert_eq!(moved.len(), 1, "{pair:#?}");
    assert_eq!(
        moved[0]["state"], "stopped",
        "asked to stop, not failed: {pair:#?}"
    );
    stack.executions_in("everywhere", "stopped", 1).await;
    let a = node_row(&url, "a");
    assert_eq!(a["eligibility"], "ineligible", "{a:#}");
    assert_eq!(a["draining"], false, "{a:#}");
    assert_eq!(a["executions"], 0, "{a:#}");
    let job = support::json(&url, &["job", "describe", "pair"]);
    assert_eq!(job["state"], "running", "{job:#}");

    // A drained node gets no new work.
    let after = stack.deploy("after", AFTER, true);
    assert_eq!(after["state"], "completed", "{after:#}");
    assert_eq!(nodes_of(&executions(&url, "after")), ["b".into()].into());

    // Back in service, it takes work again: the daemon returns to it.
    support::json(&url, &["node", "eligibility", "a", "enable", "--wait"]);
    let everywhere = stack.executions_in("everywhere", "running", 2).await;
    assert_eq!(nodes_of(&everywhere), ["a".into(), "b".into()].into());
    assert_eq!(node_row(&url, "a")["eligibility"], "eligible");

    // Work nowhere else can take waits for the deadline, then stops; its slot waits, and
    // says why, until the node is back.
    stack.deploy("long", LONG, false);
    stack.executions_in("long", "running", 1).await;
    let started = support::json(&url, &["node", "drain", "a", "--deadline", "2s"]);
    assert_eq!(started["state"], "submitted", "{started:#}");
    let a = support::stack::eventually("a to drain", 30, || {
        let a = node_row(&url, "a");
        if a["draining"] == true {
            Ok(a)
        } else {
            Err(format!("{a:#}"))
        }
    })
    .await;
    assert_eq!(a["eligibility"], "ineligible", "{a:#}");
    assert!(a["drain_deadline"].is_string(), "{a:#}");
    let table = String::from_utf8(cairn(&url, &["node", "list"]).stdout).unwrap();
    assert!(table.contains("ineligible, draining"), "{table}");
    stack.executions_in("long", "stopped", 1).await;
    support::stack::eventually("a to be drained", 30, || {
        let a = node_row(&url, "a");
        if a["draining"] == false {
            Ok(())
        } else {
            Err(format!("{a:#}"))
        }
    })
    .await;
    let job = support::json(&url, &["job", "describe", "long"]);
    assert_eq!(job["state"], "queued", "{job:#}");
    assert_eq!(job["placement"]["ineligible"], 1, "{job:#}");
    support::json(&url, &["node", "eligibility", "a", "enable", "--wait"]);
    let retried = stack.executions_in("long", "running", 1).await;
    assert_eq!(retried[0]["attempt"], 2, "{retried:#?}");

    // The views a drain left are the ones a replay of the log builds, and the node's
    // history tells the drain.
    let verified = cairn(&url, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && said.starts_with("match"),
        "{said}"
    );
    let history =
        String::from_utf8(cairn(&url, &["audit", "history", "node", "a"]).stdout).unwrap();
    assert!(
        history.contains("drain node a by") && history.contains("a drained: nothing runs there"),
        "{history}"
    );

    let out = cairn(&url, &["node", "drain", "ghost", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown node \"ghost\""), "{stderr}");
}
