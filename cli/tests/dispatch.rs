//! Dispatch through the built binary under faults: daemons reaching nodes that join later
//! (and only matching ones), nodes replaced by new ids, a NATS outage while a task finishes,
//! a stop decided while its edge is dead, job updates, an orchestrator SIGKILLed mid-batch,
//! two orchestrators at once, and bad reports published straight onto a report subject.
//! Every process is real (nats-server, `cairn orchestrator`, `cairn edge`); figures are
//! printed, never asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_shared::report::ExecutionUpdate;
use cairn_shared::{Envelope, ExecutionId, ExecutionState, NodeId, Report, ReportId, Timestamp};
use cairn_streams::testing::wait_until;
use cairn_streams::{Outgoing, Publisher, StreamKind};
use serde_json::Value;

mod support;
use support::json;
use support::stack::{
    FAST_LIVENESS, SLOW_LIVENESS, Stack, alive, count_in, events, eventually, executions, of_type,
    stream_messages,
};

/// A long-running task that ends by itself once its edge is gone (`$PPID` is the edge; the
/// task runs in a process group of its own, so SIGKILLing the edge would leave it behind).
/// `marker` makes specs differ, so deploying again is a new version.
fn daemon(name: &str, selector: &str, marker: &str) -> String {
    format!(
        r#"
name: {name}
type: daemon
selector: {selector}
task:
  engine: exec
  command: ["sh", "-c", "echo {marker}; while kill -0 $PPID 2>/dev/null; do sleep 0.2; done"]
"#
    )
}

fn batch(name: &str, count: u32, selector: &str) -> String {
    format!(
        r#"
name: {name}
type: batch
count: {count}
selector: {selector}
task:
  engine: exec
  command: ["true"]
"#
    )
}

/// Executions of `job` per node, keeping only those in `state`.
fn per_node(executions: &[Value], state: &str) -> BTreeMap<String, usize> {
    let mut nodes = BTreeMap::new();
    for e in executions.iter().filter(|e| e["state"] == state) {
        *nodes
            .entry(e["node_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    nodes
}

// Case 2 — a daemon follows the fleet as it grows, onto matching nodes only.
#[tokio::test]
async fn a_daemon_reaches_every_matching_node_that_joins_later_and_no_other() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _first = stack
        .connected_edges(&["edge-1", "edge-2"], "edge", 4)
        .await;
    let deployed = stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v1"), true);
    assert_eq!(deployed["state"], "running");

    let joined = Instant::now();
    let _later = [
        stack.edge("edge-3", "edge", 4),
        stack.edge("edge-4", "edge", 4),
        stack.edge("edge-5", "edge", 4),
        stack.edge("other-1", "other", 4),
    ];
    let running = eventually("the daemon to run on all five matching nodes", 30, || {
        let all = executions(&url, "keeper");
        if count_in(&all, "running") == 5 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    eprintln!(
        "3 nodes joined → daemon running on each: {:?}",
        joined.elapsed()
    );
    let expected: BTreeMap<String, usize> = (1..=5).map(|i| (format!("edge-{i}"), 1)).collect();
    assert_eq!(per_node(&running, "running"), expected);
    assert_eq!(running.len(), 5, "no extra executions: {running:?}");

    // The other node registered; a decision is stored whole, so once its registration is in
    // the log, any placement made with it is too.
    stack.nodes_in(&["other-1"], "connected").await;
    let log = events(&url);
    assert!(
        of_type(&log, "NodeRegistered")
            .iter()
            .any(|e| e["data"]["node"] == "other-1")
    );
    let on_other: Vec<_> = of_type(&log, "ExecutionAssigned")
        .into_iter()
        .filter(|e| e["data"]["node"] == "other-1")
        .collect();
    assert!(on_other.is_empty(), "{on_other:?}");
    let listed = json(&url, &["execution", "list", "--node", "other-1"]);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

// Case 4 — the fleet is replaced by nodes with new ids: the new version reaches them, the old
// nodes are lost with their executions, and no job stays deploying.
#[tokio::test]
async fn fault_edges_replaced_by_new_ids_get_the_new_version_and_the_old_ones_are_lost() {
    let stack = Stack::new(FAST_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let mut old = vec![
        stack.edge("old-1", "edge", 4),
        stack.edge("old-2", "edge", 4),
    ];
    stack.nodes_in(&["old-1", "old-2"], "connected").await;
    let v1 = stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v1"), true);
    assert_eq!(v1["state"], "running");

    // The old machines vanish with their data; new ones come up under new ids.
    for edge in &mut old {
        edge.kill9();
    }
    std::fs::remove_dir_all(stack.edge_dir("old-1")).unwrap();
    std::fs::remove_dir_all(stack.edge_dir("old-2")).unwrap();
    let _new = [
        stack.edge("new-1", "edge", 4),
        stack.edge("new-2", "edge", 4),
    ];
    stack.nodes_in(&["new-1", "new-2"], "connected").await;

    // Redeployed before the old nodes count as lost: part of v2 goes to them and waits.
    let redeployed = Instant::now();
    let v2 = stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v2"), true);
    eprintln!(
        "v2 deployed → running (old nodes lost on the way): {:?}",
        redeployed.elapsed()
    );
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["state"], "running");
    stack.nodes_in(&["old-1", "old-2"], "lost").await;

    let all = eventually(
        "old executions lost, v2 running on the new nodes",
        30,
        || {
            let all = executions(&url, "keeper");
            let old_done = all
                .iter()
                .filter(|e| e["node_id"].as_str().unwrap().starts_with("old-"))
                .all(|e| e["state"] == "lost");
            let new_running: Vec<_> = all
                .iter()
                .filter(|e| e["state"] == "running" && e["version"] == 2)
                .collect();
            if old_done && new_running.len() == 2 {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    let running: BTreeSet<&str> = all
        .iter()
        .filter(|e| e["state"] == "running")
        .map(|e| e["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(running, BTreeSet::from(["new-1", "new-2"]), "{all:?}");
    // v1 also reached the new nodes when they joined; v2 replaced it there.
    assert!(
        all.iter()
            .filter(|e| e["version"] == 1 && e["node_id"].as_str().unwrap().starts_with("new-"))
            .all(|e| e["state"] == "stopped"),
        "{all:?}"
    );
    eprintln!(
        "keeper: {} executions, {} lost",
        all.len(),
        count_in(&all, "lost")
    );
    let jobs = json(&url, &["job", "list"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] != "deploying"),
        "{jobs}"
    );
}

// Case 5 — a task ends while nats-server is down; its completion arrives when it is back.
#[tokio::test]
async fn fault_a_completion_made_while_nats_is_down_arrives_after_it_returns() {
    let mut stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.edge("edge-a", "edge", 4);
    stack.nodes_in(&["edge-a"], "connected").await;

    // The task says where it runs and then waits for a file, so the test decides when it ends.
    let flags = stack.dir.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let (pid_file, go) = (flags.join("pid"), flags.join("go"));
    let spec = format!(
        r#"
name: outage
type: batch
count: 1
selector: {{role: edge}}
task:
  engine: exec
  command: ["sh", "-c", "echo $$ > {pid}; while [ ! -e {go} ]; do sleep 0.1; done"]
"#,
        pid = pid_file.display(),
        go = go.display()
    );
    stack.deploy("outage", &spec, false);
    eventually("the task to run", 30, || {
        let all = executions(&url, "outage");
        if count_in(&all, "running") == 1 && pid_file.exists() {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let reports_before = stream_messages(&stack, StreamKind::Reports).await;
    stack.server().kill9();
    std::fs::write(&go, b"").unwrap();
    // Its /proc entry goes only when the edge reaps it, which is when the edge records the end.
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    eventually("the task to end and be reaped", 30, || {
        if proc_dir.exists() {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    })
    .await;

    stack.server().restart();
    let back = Instant::now();
    // Three figures: the edge's outbox delivered the report, the decider recorded it, the
    // views show it.
    wait_until(
        "the report to be stored",
        Duration::from_secs(60),
        || async {
            match stream_messages(&stack, StreamKind::Reports).await {
                n if n > reports_before => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
    eprintln!("nats back → completion report stored: {:?}", back.elapsed());
    eventually("the completion to be decided", 60, || {
        let decided = of_type(&events(&url), "ExecutionStateChanged")
            .iter()
            .any(|e| e["data"]["state"] == "completed");
        if decided {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    eprintln!(
        "nats back → completion in the event log: {:?}",
        back.elapsed()
    );
    let done = eventually("the completion to show in the views", 60, || {
        let all = executions(&url, "outage");
        if count_in(&all, "completed") == 1 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    eprintln!("nats back → completion in the views: {:?}", back.elapsed());
    assert_eq!(done.len(), 1, "no retry was needed: {done:?}");
    assert_eq!(done[0]["exit_code"], 0);
    assert!(
        alive(&mut orchestrator),
        "the orchestrator outlives the outage"
    );

    // Work decided after the outage reaches the node too: the restart dropped its
    // consumer, which lives in the server's memory, and the orchestrator made it again.
    stack.deploy("after", &batch("after", 1, "{host: edge-a}"), false);
    eventually("work decided after the outage to complete", 60, || {
        let all = executions(&url, "after");
        if count_in(&all, "completed") == 1 {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    eprintln!("nats back → later work completed: {:?}", back.elapsed());
}

/// How a node is away while its job is stopped.
#[derive(Clone, Copy, Debug)]
enum Away {
    /// Frozen (SIGSTOP), as a partitioned or suspended machine: its task keeps running.
    Frozen,
    /// SIGKILLed: its task dies with it, and it restarts on the same data.
    Crashed,
}

/// Runs a daemon on one edge, takes the edge away, stops the job, brings the edge back,
/// and returns the execution once it has ended. Checks on the way that the stop was
/// decided while the node was away and delivered (taken off its queue) on its return,
/// and that nothing new was placed.
async fn stop_while_away(away: Away) -> Value {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let mut edge = stack.edge("edge-a", "edge", 4);
    stack.nodes_in(&["edge-a"], "connected").await;
    stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v1"), true);
    let running = eventually("the daemon to run", 30, || {
        let all = executions(&url, "keeper");
        if count_in(&all, "running") == 1 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    let id = running[0]["id"].as_str().unwrap().to_owned();

    let pid = nix::unistd::Pid::from_raw(edge.0.id() as i32);
    match away {
        Away::Frozen => nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap(),
        Away::Crashed => edge.kill9(),
    }
    let stopped = json(&url, &["job", "stop", "keeper", "--wait"]);
    assert_eq!(stopped["state"], "stopped");
    // Decided, not yet done: only the edge can say its execution ended.
    let pending = executions(&url, "keeper");
    assert_eq!(pending[0]["desired_state"], "stopped", "{pending:?}");
    assert_eq!(pending[0]["state"], "running", "{pending:?}");

    let returned = Instant::now();
    let _returned_edge = match away {
        Away::Frozen => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            None
        }
        Away::Crashed => Some(stack.edge("edge-a", "edge", 4)),
    };
    // Delivered: the node's work queue empties once the edge has taken (and acked) the stop.
    let edge_a = NodeId::new("edge-a").unwrap();
    wait_until("the stop to be taken", Duration::from_secs(30), || async {
        match stream_messages(&stack, StreamKind::assignments_of(&edge_a)).await {
            0 => Ok(()),
            n => Err(format!("{n} messages waiting")),
        }
    })
    .await;
    let ended = eventually("the execution to end", 30, || {
        let all = executions(&url, "keeper");
        match all.iter().find(|e| e["id"] == id.as_str()) {
            Some(e) if e["state"] != "running" => Ok(e.clone()),
            _ => Err(format!("{all:?}")),
        }
    })
    .await;
    eprintln!(
        "{away:?} edge back → execution ended {}: {:?}",
        ended["state"],
        returned.elapsed()
    );
    assert_eq!(
        executions(&url, "keeper").len(),
        1,
        "nothing new was placed"
    );
    ended
}

// Case 7 — a stop decided while the node is away reaches it when it comes back, and the
// task it stops ends `stopped`.
#[tokio::test]
async fn fault_a_stop_decided_while_the_node_is_away_is_delivered_on_return() {
    let ended = stop_while_away(Away::Frozen).await;
    assert_eq!(ended["state"], "stopped", "{ended}");
}

// Case 7, crashed edge — the task died with its edge before the stop could reach it. On
// restart the edge reads its queue before it reports what the crash interrupted, so the
// waiting stop is taken first and the execution ends `stopped`, not "edge restarted".
#[tokio::test]
async fn fault_a_stop_decided_while_the_edge_is_down_ends_its_crashed_attempt_stopped() {
    let ended = stop_while_away(Away::Crashed).await;
    assert_eq!(ended["state"], "stopped", "{ended}");
    assert_eq!(ended["desired_state"], "stopped", "{ended}");
}

// Case 8 — a new version of a job replaces the old one everywhere it runs.
#[tokio::test]
async fn a_new_version_stops_the_old_executions_and_runs_on_every_matching_node() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack
        .connected_edges(&["edge-1", "edge-2", "edge-3"], "edge", 4)
        .await;
    stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v1"), true);

    let updated = Instant::now();
    let v2 = stack.deploy("keeper", &daemon("keeper", "{role: edge}", "v2"), true);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["state"], "running");
    let all = eventually("v1 stopped and v2 running on every node", 30, || {
        let all = executions(&url, "keeper");
        let v1_stopped = all
            .iter()
            .filter(|e| e["version"] == 1 && e["state"] == "stopped")
            .count();
        let v2_running = all
            .iter()
            .filter(|e| e["version"] == 2 && e["state"] == "running")
            .count();
        if v1_stopped == 3 && v2_running == 3 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    eprintln!("update → old stopped, new running: {:?}", updated.elapsed());
    assert_eq!(all.len(), 6, "{all:?}");
    let expected: BTreeMap<String, usize> = (1..=3).map(|i| (format!("edge-{i}"), 1)).collect();
    let v2: Vec<Value> = all.iter().filter(|e| e["version"] == 2).cloned().collect();
    assert_eq!(per_node(&v2, "running"), expected);
}

/// Checks a finished batch job of `count` slots: `count` completed executions, unique ids,
/// nothing else; and in the log every execution assigned once and completed once.
fn assert_each_slot_completed_once(url: &str, job: &str, count: usize) {
    let all = executions(url, job);
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "execution ids are unique");
    assert_eq!(count_in(&all, "completed"), count);
    // `count` slots, `count` executions all completed: no slot can hold two of them.
    assert_eq!(all.len(), count, "no retries or duplicates");
    let described = json(url, &["job", "describe", job]);
    assert_eq!(described["state"], "completed");

    let log = events(url);
    let mut assigned = BTreeMap::<&str, usize>::new();
    for e in of_type(&log, "ExecutionAssigned") {
        if e["data"]["job_name"] == job {
            *assigned
                .entry(e["data"]["execution"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    assert_eq!(assigned.len(), count, "every execution was assigned");
    assert!(
        assigned.values().all(|n| *n == 1),
        "an execution was assigned twice: {:?}",
        assigned.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let mut completed = BTreeMap::<&str, usize>::new();
    for e in of_type(&log, "ExecutionStateChanged") {
        if e["data"]["state"] == "completed" {
            *completed
                .entry(e["data"]["execution"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    let mine: Vec<_> = completed
        .iter()
        .filter(|(id, _)| assigned.contains_key(*id))
        .collect();
    assert_eq!(mine.len(), count);
    assert!(
        mine.iter().all(|(_, n)| **n == 1),
        "completed twice: {mine:?}"
    );
}

// Case 9 — the orchestrator is SIGKILLed in the middle of a large batch and restarted on the
// same data dir: every execution completes exactly once.
#[tokio::test]
async fn fault_an_orchestrator_killed_mid_batch_completes_every_execution_exactly_once() {
    const COUNT: usize = 200;
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack
        .connected_edges(&["edge-1", "edge-2", "edge-3"], "edge", 20)
        .await;

    let started = Instant::now();
    stack.deploy("many", &batch("many", COUNT as u32, "{role: edge}"), false);
    // Killed once a quarter is done, so some work is finished, some in flight, some unplaced.
    let at_kill = eventually("the batch to be under way", 60, || {
        let done = count_in(&executions(&url, "many"), "completed");
        if done >= COUNT / 4 {
            Ok(done)
        } else {
            Err(done.to_string())
        }
    })
    .await;
    orchestrator.kill9();
    eprintln!(
        "orchestrator SIGKILLed {:?} after deploy, {at_kill} of {COUNT} completed in its views",
        started.elapsed()
    );

    let restarted = Instant::now();
    let _orchestrator = stack.orchestrator("orchestrator");
    eventually("every execution to complete", 120, || {
        let all = executions(&url, "many");
        match count_in(&all, "completed") {
            COUNT => Ok(()),
            n => Err(format!("{n} completed of {} listed", all.len())),
        }
    })
    .await;
    eprintln!(
        "restart → all {COUNT} completed: {:?} (deploy → all: {:?})",
        restarted.elapsed(),
        started.elapsed()
    );
    assert_each_slot_completed_once(&url, "many", COUNT);
}

// Case 10 — two orchestrators decide side by side through a whole batch job: one set of facts.
#[tokio::test]
async fn fault_two_orchestrators_at_once_record_no_conflicting_facts() {
    const COUNT: usize = 60;
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut one = stack.orchestrator("orchestrator-1");
    let mut two = stack.orchestrator("orchestrator-2");
    let _edges = stack
        .connected_edges(&["edge-1", "edge-2", "edge-3"], "edge", 10)
        .await;

    let started = Instant::now();
    let deployed = stack.deploy("pair", &batch("pair", COUNT as u32, "{role: edge}"), true);
    assert_eq!(deployed["state"], "completed");
    eprintln!(
        "two orchestrators: batch of {COUNT} deployed → completed: {:?}",
        started.elapsed()
    );
    eventually("the views to show every completion", 30, || {
        let n = count_in(&executions(&url, "pair"), "completed");
        if n == COUNT {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_each_slot_completed_once(&url, "pair", COUNT);

    let log = events(&url);
    let accepted = of_type(&log, "CommandAccepted");
    assert_eq!(accepted.len(), 1, "one command, decided once: {accepted:?}");
    assert!(of_type(&log, "CommandRejected").is_empty());
    assert_eq!(of_type(&log, "JobDeployed").len(), 1);
    let mut registered = BTreeMap::<&str, usize>::new();
    for e in of_type(&log, "NodeRegistered") {
        *registered
            .entry(e["data"]["node"].as_str().unwrap())
            .or_default() += 1;
    }
    assert!(registered.values().all(|n| *n == 1), "{registered:?}");
    let finished = of_type(&log, "JobStateChanged")
        .into_iter()
        .filter(|e| e["data"]["state"] == "completed")
        .count();
    assert_eq!(finished, 1, "the job completed once");
    eprintln!("two orchestrators: {} events in the log", log.len());
    assert!(alive(&mut one) && alive(&mut two), "neither gave up");
}

// Case 11 — reports that are garbage or do not fit the facts are refused with a reason, and
// the orchestrator carries on.
#[tokio::test]
async fn bad_reports_are_refused_with_a_reason_and_nothing_crashes() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edges = [
        stack.edge("edge-a", "edge", 4),
        stack.edge("edge-b", "edge", 4),
    ];
    stack.nodes_in(&["edge-a", "edge-b"], "connected").await;
    // One finished and one running execution, both on edge-a.
    let done = stack.deploy("once", &batch("once", 1, "{host: edge-a}"), true);
    assert_eq!(done["state"], "completed");
    stack.deploy("keeper", &daemon("keeper", "{host: edge-a}", "v1"), true);
    let completed = executions(&url, "once")[0].clone();
    let running = eventually("the daemon to run", 30, || {
        let all = executions(&url, "keeper");
        match all.iter().find(|e| e["state"] == "running") {
            Some(e) => Ok(e.clone()),
            None => Err(format!("{all:?}")),
        }
    })
    .await;
    let id_of = |e: &Value| e["id"].as_str().unwrap().parse::<ExecutionId>().unwrap();
    let (a, b) = (
        NodeId::new("edge-a").unwrap(),
        NodeId::new("edge-b").unwrap(),
    );

    let js = cairn_streams::jetstream(
        cairn_streams::connect(&stack.url(), None, "cairn-test")
            .await
            .unwrap(),
    );
    let publisher = Publisher::new(js.clone());
    let update = |node: &NodeId, execution: ExecutionId, attempt: u64, state: ExecutionState| {
        Report::from(ExecutionUpdate {
            node: node.clone(),
            execution,
            attempt: attempt as u32,
            state,
            exit_code: None,
            reason: None,
        })
    };
    let send = |subject_node: NodeId, report: Report| {
        let publisher = publisher.clone();
        async move {
            let envelope = Envelope::new(ReportId::generate(), None, Timestamp::now(), report);
            let out = Outgoing::report(&subject_node, &envelope).unwrap();
            publisher.append(out).await.unwrap().seq.0
        }
    };
    let attempt = |e: &Value| e["attempt"].as_u64().unwrap();

    // (sequence on the report stream, what the recorded reason must mention)
    let mut expected: Vec<(u64, &str)> = Vec::new();
    let garbage = js
        .publish(
            "cairn.report.edge-a",
            b"\xc1 not msgpack at all".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    expected.push((garbage, "not a cairn envelope"));
    let unknown = ExecutionId::generate();
    expected.push((
        send(a.clone(), update(&a, unknown, 1, ExecutionState::Completed)).await,
        "unknown execution",
    ));
    // edge-b, on its own subject, claims edge-a's running execution.
    expected.push((
        send(
            b.clone(),
            update(
                &b,
                id_of(&running),
                attempt(&running),
                ExecutionState::Failed,
            ),
        )
        .await,
        "belongs to node",
    ));
    // A report naming edge-b sent on edge-a's subject.
    expected.push((
        send(
            a.clone(),
            update(
                &b,
                id_of(&running),
                attempt(&running),
                ExecutionState::Failed,
            ),
        )
        .await,
        "arrived on the subject",
    ));
    // completed → failed: another end after the end. (An older report delivered again,
    // such as running → accepted, is no news and yields nothing: the decider's scenarios.)
    expected.push((
        send(
            a.clone(),
            update(
                &a,
                id_of(&completed),
                attempt(&completed),
                ExecutionState::Failed,
            ),
        )
        .await,
        "already ended",
    ));
    // The right node, the wrong attempt.
    expected.push((
        send(
            a.clone(),
            update(
                &a,
                id_of(&running),
                attempt(&running) + 1,
                ExecutionState::Failed,
            ),
        )
        .await,
        "attempt",
    ));

    let published = Instant::now();
    let rejections = eventually("every bad report to be refused", 30, || {
        let log = events(&url);
        let rejected: BTreeMap<u64, String> = of_type(&log, "InputRejected")
            .into_iter()
            .filter(|e| e["data"]["stream"] == "CAIRN_REPORT")
            .map(|e| {
                (
                    e["data"]["seq"].as_u64().unwrap(),
                    e["data"]["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if expected.iter().all(|(seq, _)| rejected.contains_key(seq)) {
            Ok(rejected)
        } else {
            Err(format!("{rejected:?}"))
        }
    })
    .await;
    eprintln!(
        "{} bad reports published → all refused: {:?}",
        expected.len(),
        published.elapsed()
    );
    for (seq, mention) in &expected {
        let reason = &rejections[seq];
        eprintln!("  report #{seq}: {reason}");
        assert!(
            reason.contains(mention),
            "#{seq}: {reason:?} should mention {mention:?}"
        );
    }

    // Nothing changed and nothing crashed: the facts stand, queries answer, work still runs.
    assert!(alive(&mut orchestrator));
    let keeper = executions(&url, "keeper");
    assert_eq!(count_in(&keeper, "running"), 1, "{keeper:?}");
    assert_eq!(executions(&url, "once")[0]["state"], "completed");
    let nodes = json(&url, &["node", "list"]);
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{nodes}");
    let later = stack.deploy("later", &batch("later", 2, "{role: edge}"), true);
    assert_eq!(later["state"], "completed");
}
