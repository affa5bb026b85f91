//! Rolling updates through the built binary against a real nats-server: a daemon on three
//! edges replaced one node at a time as its new executions become healthy, a broken
//! version reverted after one node, and an orchestrator killed mid-rollout.
//!
//! Every check of "never more than one node without a running execution" is made on the
//! event log afterwards, event by event, so it holds at every recorded moment, not only at
//! the moments a poll happened to look.

use std::collections::{BTreeMap, BTreeSet};

mod support;
use support::stack::{SLOW_LIVENESS, Stack, events, executions, of_type};
use support::{cairn, json};

/// `job describe beacon`, or why not (an orchestrator not answering yet).
fn described(url: &str) -> Result<serde_json::Value, String> {
    let out = cairn(url, &["job", "describe", "beacon", "-o", "json"]);
    serde_json::from_slice(&out.stdout)
        .map_err(|_| String::from_utf8_lossy(&out.stderr).into_owned())
}

const NODES: [&str; 3] = ["edge-1", "edge-2", "edge-3"];

fn beacon(text: &str) -> String {
    format!(
        r#"
name: beacon
type: daemon
update: {{max_parallel: 1, min_healthy_time: 1s, healthy_deadline: 30s, auto_revert: true}}
task:
  engine: exec
  command: ["sh", "-c", "{text}"]
"#
    )
}

const V1: &str = "echo v1; while true; do sleep 1; done";
const V2: &str = "echo v2; while true; do sleep 1; done";
const BROKEN: &str = "echo v3; exit 7";

/// The fewest nodes with a running execution of the job at any moment from the first
/// time all of `NODES` had one, replaying the log's execution states in order.
fn fewest_running_nodes(log: &[serde_json::Value], job: &str) -> usize {
    let mut node_of: BTreeMap<String, String> = BTreeMap::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut fewest: Option<usize> = None;
    for event in log {
        let data = &event["data"];
        match event["type"].as_str() {
            Some("ExecutionAssigned") if data["job_name"] == job => {
                let id = data["execution"].as_str().unwrap().to_owned();
                node_of.insert(id, data["node"].as_str().unwrap().to_owned());
            }
            Some("ExecutionStateChanged") => {
                let id = data["execution"].as_str().unwrap();
                if !node_of.contains_key(id) {
                    continue;
                }
                if data["state"] == "running" {
                    running.insert(id.to_owned());
                } else {
                    running.remove(id);
                }
                let nodes: BTreeSet<&String> =
                    running.iter().filter_map(|e| node_of.get(e)).collect();
                if fewest.is_some() || nodes.len() == NODES.len() {
                    fewest = Some(fewest.map_or(nodes.len(), |f| f.min(nodes.len())));
                }
            }
            _ => {}
        }
    }
    fewest.expect("every node ran the job at some point")
}

/// The nodes that were ever given an execution of `version`.
fn nodes_given(log: &[serde_json::Value], version: u64) -> BTreeSet<String> {
    of_type(log, "ExecutionAssigned")
        .into_iter()
        .filter(|e| e["data"]["job_name"] == "beacon" && e["data"]["version"] == version)
        .map(|e| e["data"]["node"].as_str().unwrap().to_owned())
        .collect()
}

/// Every node running `version`, as [`running_versions`] lists them.
fn every_node_at(version: u64) -> Vec<(String, u64)> {
    NODES.iter().map(|n| ((*n).to_owned(), version)).collect()
}

fn running_versions(url: &str) -> Vec<(String, u64)> {
    let mut out: Vec<_> = executions(url, "beacon")
        .into_iter()
        .filter(|e| e["state"] == "running")
        .map(|e| {
            (
                e["node_id"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_daemon_rolls_out_a_node_at_a_time_and_a_broken_version_is_reverted_after_one() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&NODES, "edge", 4).await;

    let v1 = stack.deploy("beacon", &beacon(V1), true);
    assert_eq!(
        (v1["state"].as_str(), v1["version"].as_u64()),
        (Some("running"), Some(1)),
        "{v1:#}"
    );
    let v2 = stack.deploy("beacon", &beacon(V2), true);
    assert_eq!(
        (v2["state"].as_str(), v2["version"].as_u64()),
        (Some("running"), Some(2)),
        "{v2:#}"
    );
    assert_eq!(running_versions(&url), every_node_at(2));
    let describe = json(&url, &["job", "describe", "beacon"]);
    assert_eq!(describe["rollout"]["state"], "succeeded", "{describe:#}");
    assert_eq!(describe["rollout"]["healthy"], 3, "{describe:#}");
    assert!(
        describe["executions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["healthy"].is_boolean()),
        "executions of a job with update carry healthy: {describe:#}"
    );
    assert_eq!(
        fewest_running_nodes(&events(&url), "beacon"),
        2,
        "one node at a time"
    );

    // A version whose task exits at once: one node gets it, then the job goes back.
    let spec = stack.spec("broken", &beacon(BROKEN));
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            spec.to_str().unwrap(),
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert!(!out.status.success(), "--wait on a failed rollout fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("version 3: its rollout failed"), "{stderr}");
    assert!(stderr.contains("before it was healthy"), "{stderr}");

    // Version 4 is version 2's spec again, rolled out everywhere.
    support::stack::eventually("the revert to roll out", 30, || {
        let d = described(&url)?;
        if d["version"] == 4 && d["rollout"]["state"] == "succeeded" {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    let describe = json(&url, &["job", "describe", "beacon"]);
    assert_eq!(describe["spec"]["task"]["command"][2], V2, "{describe:#}");
    assert_eq!(running_versions(&url), every_node_at(4));
    let log = events(&url);
    assert_eq!(
        nodes_given(&log, 3).len(),
        1,
        "at most one node ever ran version 3"
    );
    assert_eq!(
        fewest_running_nodes(&log, "beacon"),
        2,
        "one node at a time, reverting included"
    );
    let failed: Vec<_> = of_type(&log, "RolloutChanged")
        .into_iter()
        .filter(|e| e["data"]["version"] == 3 && e["data"]["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "the log says the rollout failed");
    let why = failed[0]["data"]["reason"].as_str().unwrap();
    assert!(why.contains("exit code 7"), "{failed:#?}");
    let revert = of_type(&log, "JobDeployed")
        .into_iter()
        .find(|e| e["data"]["version"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(revert["data"]["reverted_to"], 2, "{revert:#}");
}

#[tokio::test]
async fn fault_an_orchestrator_killed_mid_rollout_resumes_it_one_node_at_a_time() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&NODES, "edge", 4).await;
    assert_eq!(
        stack.deploy("beacon", &beacon(V1), true)["state"],
        "running"
    );

    let v2 = stack.deploy("beacon", &beacon(V2), false);
    assert_eq!(v2["state"], "submitted");
    // Mid-rollout: the first node runs version 2, not yet healthy (it needs a second).
    support::stack::eventually("a version 2 execution to run", 30, || {
        let at_v2: Vec<_> = running_versions(&url)
            .into_iter()
            .filter(|(_, v)| *v == 2)
            .collect();
        if at_v2.is_empty() {
            Err("none yet".into())
        } else {
            Ok(())
        }
    })
    .await;
    orchestrator.kill9();
    let _orchestrator = stack.orchestrator("orchestrator");

    support::stack::eventually("the rollout to finish after the restart", 60, || {
        let d = described(&url)?;
        if d["version"] == 2 && d["rollout"]["state"] == "succeeded" {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .await;
    assert_eq!(running_versions(&url), every_node_at(2));
    let log = events(&url);
    assert_eq!(
        fewest_running_nodes(&log, "beacon"),
        2,
        "never two nodes at once, across the restart"
    );
    assert_eq!(nodes_given(&log, 2).len(), 3);
    let stops = of_type(&log, "ExecutionStopRequested").len();
    assert_eq!(stops, 3, "each version 1 execution stopped once: {stops}");
}

fn web(text: &str) -> String {
    format!(
        r#"
name: web
type: service
count: 2
update: {{max_parallel: 1, min_healthy_time: 1s, healthy_deadline: 30s, canary: 1}}
task:
  engine: exec
  command: ["sh", "-c", "{text}"]
"#
    )
}

#[tokio::test]
async fn a_canary_runs_beside_the_old_version_until_promoted_then_the_rest_rolls() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&NODES, "edge", 4).await;
    assert_eq!(stack.deploy("web", &web(V1), true)["state"], "running");

    // --wait returns once the canary is healthy, the rest waiting for a promotion.
    let spec = stack.spec("web-v2", &web(V2));
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            spec.to_str().unwrap(),
            "--wait",
            "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (deployed["version"].as_u64(), deployed["state"].as_str()),
        (Some(2), Some("deploying"))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cairn job promote web"));
    let versions = |url: &str| -> Vec<u64> {
        let mut v: Vec<u64> = executions(url, "web")
            .into_iter()
            .filter(|e| e["state"] == "running" && e["desired_state"] == "running")
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        versions(&url),
        [1, 1, 2],
        "one canary beside both old replicas"
    );
    let describe = json(&url, &["job", "describe", "web"]);
    assert_eq!(describe["rollout"]["state"], "rolling", "{describe:#}");
    assert_eq!(describe["rollout"]["promoted"], false, "{describe:#}");

    let promoted = json(&url, &["job", "promote", "web", "--wait"]);
    assert_eq!(
        (promoted["version"].as_u64(), promoted["state"].as_str()),
        (Some(2), Some("running")),
        "{promoted:#}"
    );
    assert_eq!(versions(&url), [2, 2]);
    // Nothing of version 1 was asked to stop before the promotion.
    let log = events(&url);
    let seq = |e: &serde_json::Value| e["seq"].as_u64().unwrap();
    let promotion = of_type(&log, "RolloutPromoted")
        .first()
        .map(|e| seq(e))
        .expect("promoted");
    let stops: Vec<u64> = of_type(&log, "ExecutionStopRequested")
        .into_iter()
        .map(seq)
        .collect();
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(
        stops.iter().all(|s| *s > promotion),
        "stops {stops:?}, promotion {promotion}"
    );
    let again = cairn(&url, &["job", "promote", "web", "--wait"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no rollout waiting to be promoted"));
}

#[tokio::test]
async fn fault_cluster_a_rollout_carries_on_through_a_server_killed_and_restarted() {
    // Health reports, rollout steps and their stops on a 3-server cluster, with one
    // server SIGKILLed mid-rollout and restarted on its store.
    let mut stack = Stack::clustered(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&NODES, "edge", 4).await;
    assert_eq!(
        stack.deploy("beacon", &beacon(V1), true)["state"],
        "running"
    );

    assert_eq!(
        stack.deploy("beacon", &beacon(V2), false)["state"],
        "submitted"
    );
    support::stack::eventually("a version 2 execution to run", 60, || {
        let at_v2 = running_versions(&url)
            .into_iter()
            .filter(|(_, v)| *v == 2)
            .count();
        if at_v2 == 0 {
            Err("none yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    stack.cluster().server_mut(0).kill9();
    support::stack::eventually("the rollout to finish with a server down", 90, || {
        let d = described(&url)?;
        if d["version"] == 2 && d["rollout"]["state"] == "succeeded" {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .await;
    stack.cluster().server_mut(0).restart();
    // A read while the restarted server rejoins may fail (the CLI may reach it first):
    // the state is read until it answers, and must then be every node at v2.
    let running = support::stack::eventually("every node's v2 read after the restart", 30, || {
        match running_versions(&url) {
            running if running.is_empty() => Err("no answer yet".to_owned()),
            running => Ok(running),
        }
    })
    .await;
    assert_eq!(running, every_node_at(2));
    let log = events(&url);
    assert_eq!(
        fewest_running_nodes(&log, "beacon"),
        2,
        "one node at a time on the cluster"
    );
}
