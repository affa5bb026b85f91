//! The production shape through the built binary: a NATS outage longer than `--lost-after`
//! convicts no edge, a lost node that returns is believed (its late reports recorded and
//! reconciled by the job's `disconnect` policy), the orchestrator's input consumers and an
//! edge's own consumer deleted under load are bound again, parts started before any server
//! wait for it, and a 3-server cluster started together with its orchestrator runs work and
//! survives the loss of a stream's leader. Every process is real (nats-servers,
//! `cairn orchestrator`, `cairn edge`).

use std::time::Duration;

use cairn_streams::StreamKind;
use cairn_streams::testing::{NatsServer, wait_until};
use serde_json::Value;

mod support;
use support::stack::{
    FAST_LIVENESS, Nats, SLOW_LIVENESS, Stack, alive, count_in, events, eventually, executions,
    of_type,
};
use support::{Proc, cairn};

/// Liveness as in the report of this failure: a node is lost after 6 s of silence.
const OUTAGE_LIVENESS: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--disconnect-after",
    "2s",
    "--lost-after",
    "6s",
];

fn batch(name: &str, count: u32) -> String {
    format!(
        "name: {name}\ntype: batch\ncount: {count}\nselector: {{role: edge}}\n\
         task: {{engine: exec, command: [\"true\"]}}\n"
    )
}

/// Waits until every execution of `job` has completed, `count` of them.
async fn completed(stack: &Stack, job: &str, count: usize, secs: u64) -> Vec<Value> {
    let url = stack.url();
    eventually(
        &format!("{count} executions of {job} completed"),
        secs,
        || {
            let all = executions(&url, job);
            if all.len() == count && count_in(&all, "completed") == count {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await
}

// Acceptance 3 — NATS down for twice `--lost-after` while a daemon and a batch task run;
// the batch task finishes during the outage.
#[tokio::test]
async fn fault_a_nats_outage_longer_than_lost_after_convicts_no_edge() {
    let mut stack = Stack::new(OUTAGE_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.connected_edges(&["edge-a"], "edge", 4).await;

    let flags = stack.dir.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let go = flags.join("go");
    stack.deploy(
        "keeper",
        "name: keeper\ntype: daemon\nselector: {role: edge}\ntask: {engine: exec, command: \
         [\"sh\", \"-c\", \"while kill -0 $PPID 2>/dev/null; do sleep 0.2; done\"]}\n",
        false,
    );
    let task = format!(
        "name: finisher\ntype: batch\ncount: 1\nselector: {{role: edge}}\ntask: {{engine: exec, \
         command: [\"sh\", \"-c\", \"while [ ! -e {go} ]; do sleep 0.1; done\"]}}\n",
        go = go.display()
    );
    stack.deploy("finisher", &task, false);
    let daemon = stack.executions_in("keeper", "running", 1).await;
    stack.executions_in("finisher", "running", 1).await;

    stack.server().kill9();
    std::fs::write(&go, b"").unwrap();
    // The outage itself: twice the lost threshold with no server at all.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stack.server().restart();

    let done = completed(&stack, "finisher", 1, 60).await;
    assert_eq!(done[0]["attempt"], 1, "the batch ran once: {done:?}");
    // Give liveness more than its lost threshold after the return to judge wrongly.
    let node_up = eventually("the node connected after the outage", 30, || {
        let out = cairn(&url, &["node", "list", "-o", "json"]);
        let nodes: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        if nodes[0]["state"] == "connected" {
            Ok(nodes)
        } else {
            Err(nodes.to_string())
        }
    })
    .await;
    assert_eq!(node_up.as_array().unwrap().len(), 1);
    let after = stack.executions_in("keeper", "running", 1).await;
    assert_eq!(
        after[0]["id"], daemon[0]["id"],
        "the daemon is the same execution"
    );
    let log = events(&url);
    assert!(
        of_type(&log, "NodeLost").is_empty(),
        "no node was lost: {log:?}"
    );
    assert!(
        of_type(&log, "InputRejected").is_empty(),
        "no report was rejected: {:?}",
        of_type(&log, "InputRejected")
    );
    let finisher: Vec<Value> = executions(&url, "finisher");
    assert_eq!(finisher.len(), 1, "no second attempt: {finisher:?}");
    assert!(alive(&mut orchestrator));
}

// Acceptance 4 — an edge really gone (SIGKILL) for longer than `--lost-after` while the
// orchestrator hears everyone else is still lost, and its work replaced, as before.
#[tokio::test]
async fn fault_an_edge_really_gone_is_still_lost_and_its_work_replaced() {
    let stack = Stack::new(OUTAGE_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let mut edge_a = stack.edge("edge-a", "edge", 4);
    stack.nodes_in(&["edge-a"], "connected").await;
    stack.deploy(
        "long",
        "name: long\ntype: batch\ncount: 1\nselector: {role: edge}\ntask: {engine: exec, \
         command: [\"sh\", \"-c\", \"sleep 2\"]}\n",
        false,
    );
    stack.executions_in("long", "running", 1).await;
    let _edge_b = stack.edge("edge-b", "edge", 4);
    stack.nodes_in(&["edge-b"], "connected").await;
    edge_a.kill9();
    stack.nodes_in(&["edge-a"], "lost").await;
    let all = eventually("the slot replaced on edge-b and completed", 60, || {
        let all = executions(&url, "long");
        let replaced = all
            .iter()
            .any(|e| e["node_id"] == "edge-b" && e["attempt"] == 2 && e["state"] == "completed");
        if replaced {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    assert_eq!(count_in(&all, "lost"), 1, "{all:?}");
    assert_eq!(of_type(&events(&url), "NodeLost").len(), 1);
}

/// Deletes the orchestrators' durable consumer on `kind`'s stream.
async fn delete_input_consumer(url: &str, kind: StreamKind) {
    let js = cairn_streams::jetstream(
        cairn_streams::connect(url, None, "cairn-test")
            .await
            .unwrap(),
    );
    js.get_stream(kind.name())
        .await
        .unwrap()
        .delete_consumer(cairn_streams::topology::ORCHESTRATOR_CONSUMER)
        .await
        .unwrap_or_else(|e| panic!("deleting the consumer on {}: {e}", kind.name()));
}

// Acceptance 6 — the command consumer and the report consumer, deleted in turn under load.
#[tokio::test]
async fn fault_input_consumers_deleted_under_load_are_bound_again() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack
        .connected_edges(&["edge-a", "edge-b"], "edge", 8)
        .await;

    for (round, kind) in [StreamKind::Commands, StreamKind::Reports]
        .into_iter()
        .enumerate()
    {
        // Load: jobs stored one after another while the consumer goes away among them.
        let names: Vec<String> = (0..6).map(|i| format!("load-{round}-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            stack.deploy(name, &batch(name, 10), false);
            if i == 2 {
                delete_input_consumer(&url, kind).await;
            }
        }
        for name in &names {
            completed(&stack, name, 10, 30).await;
        }
    }
    let log = events(&url);
    assert!(
        of_type(&log, "InputRejected").is_empty(),
        "inputs already decided were not delivered again: {:?}",
        of_type(&log, "InputRejected")
    );
    assert!(alive(&mut orchestrator));
}

// Inputs are rebound, never silent: an edge's own consumer, deleted while work flows, is
// made again by the orchestrator, and the edge binds to it again.
#[tokio::test]
async fn fault_a_node_consumer_deleted_under_load_is_made_again() {
    let stack = Stack::new(SLOW_LIVENESS);
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.connected_edges(&["edge-a"], "edge", 8).await;
    let node = cairn_shared::NodeId::new("edge-a").unwrap();
    let js = cairn_streams::jetstream(
        cairn_streams::connect(&stack.url(), None, "cairn-test")
            .await
            .unwrap(),
    );
    stack.deploy("first", &batch("first", 30), false);
    js.get_stream(StreamKind::assignments_of(&node).name())
        .await
        .unwrap()
        .delete_consumer(&cairn_streams::subjects::node_consumer(&node))
        .await
        .expect("deleting the node's consumer");
    stack.deploy("second", &batch("second", 30), false);
    for job in ["first", "second"] {
        for execution in completed(&stack, job, 30, 60).await {
            assert_eq!(execution["attempt"], 1, "ran once: {execution}");
        }
    }
    assert!(alive(&mut orchestrator));
}

// Acceptance 7 — the orchestrator (and an edge) started before any server is reachable.
#[tokio::test]
async fn fault_parts_started_before_nats_wait_and_serve_once_it_is_up() {
    let port = NatsServer::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["orchestrator"];
    args.extend(SLOW_LIVENESS);
    let mut orchestrator = Proc::spawn(&url, &args, &dir.path().join("orchestrator"));
    let mut edge = Proc::spawn(
        &url,
        &[
            "edge",
            "--node-id",
            "early",
            "--label",
            "role=edge",
            "--heartbeat-interval",
            "200ms",
        ],
        &dir.path().join("early"),
    );
    // The absence itself: nothing listens for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(&mut orchestrator), "the orchestrator waits for NATS");
    assert!(alive(&mut edge), "the edge waits for NATS");

    let stack = Stack::on(Nats::Server(NatsServer::start_on(port)), SLOW_LIVENESS);
    stack.nodes_in(&["early"], "connected").await;
    stack.deploy("first", &batch("first", 2), false);
    completed(&stack, "first", 2, 30).await;
}

// Acceptance 2 — on a cluster, the server holding a node's consumer is SIGKILLed while work
// waits for the node, and the orchestrator is restarted while that server is still down:
// it starts, and the work is delivered once the node's consumer is made again elsewhere.
// The edge comes back with a new label, so its hello registers it again, which tries (and
// fails) to create its consumer: the replacement its heartbeats ask for must not wait on
// that.
#[tokio::test]
async fn fault_cluster_work_waiting_for_a_node_survives_its_consumers_server() {
    let mut stack = Stack::clustered(SLOW_LIVENESS);
    let mut orchestrator = stack.orchestrator("orchestrator");
    let mut edge = stack.edge("edge-a", "edge", 8);
    stack.nodes_in(&["edge-a"], "connected").await;
    edge.kill9();
    stack.deploy("waiting", &batch("waiting", 5), false);
    let node = cairn_shared::NodeId::new("edge-a").unwrap();
    let shard = StreamKind::assignments_of(&node).name();
    let js = cairn_streams::jetstream(stack.cluster().connect().await);
    let held = wait_until(
        "the work to wait in the node's stream",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            async move {
                let mut stream = js.get_stream(shard).await.map_err(|e| e.to_string())?;
                match stream
                    .info()
                    .await
                    .map_err(|e| e.to_string())?
                    .state
                    .messages
                {
                    5 => Ok(5),
                    n => Err(format!("{n} held")),
                }
            }
        },
    )
    .await;
    assert_eq!(held, 5);
    let leader = {
        let stream = js.get_stream(shard).await.unwrap();
        let info = stream
            .consumer_info(cairn_streams::subjects::node_consumer(&node))
            .await
            .unwrap();
        let name = info
            .cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("a leader");
        stack.cluster().index_of(&name).expect("a member leads it")
    };
    stack.cluster().server_mut(leader).kill9();
    orchestrator.kill9();
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.edge_labelled("edge-a", &[("role", "edge"), ("back", "yes")], 8);
    for execution in completed(&stack, "waiting", 5, 90).await {
        assert_eq!(execution["attempt"], 1, "ran once: {execution}");
    }
    assert!(alive(&mut orchestrator), "the orchestrator kept running");
    stack.cluster().server_mut(leader).restart();
}

// Acceptance 1 — a cluster and its orchestrator started together; a batch completes; the
// server leading the event stream is SIGKILLed; a second batch completes; nothing ran twice.
#[tokio::test]
async fn fault_cluster_started_with_its_orchestrator_survives_the_event_leader() {
    let mut stack = Stack::clustered(SLOW_LIVENESS);
    let mut orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack
        .connected_edges(&["edge-a", "edge-b"], "edge", 8)
        .await;
    stack.deploy("before", &batch("before", 20), false);
    let before = completed(&stack, "before", 20, 60).await;

    let js = cairn_streams::jetstream(stack.cluster().connect().await);
    let cluster = stack.cluster();
    let leader = cluster
        .stream_leader(&js, StreamKind::Events.name())
        .await
        .expect("the event stream has a leader");
    cluster.server_mut(leader).kill9();

    stack.deploy("after", &batch("after", 20), false);
    let after = completed(&stack, "after", 20, 90).await;
    for execution in before.iter().chain(&after) {
        assert_eq!(execution["attempt"], 1, "ran once: {execution}");
    }
    assert!(alive(&mut orchestrator));
    stack.cluster().server_mut(leader).restart();
    // The member that returns catches up with the stream it led.
    let js = js.clone();
    wait_until(
        "the restarted member to rejoin",
        Duration::from_secs(60),
        || {
            let js = js.clone();
            async move {
                let mut stream = js
                    .get_stream(StreamKind::Events.name())
                    .await
                    .map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?;
                let replicas = info
                    .cluster
                    .as_ref()
                    .map_or(0, |c| c.replicas.iter().filter(|r| r.current).count());
                if replicas == 2 {
                    Ok(())
                } else {
                    Err(format!("{:?}", info.cluster))
                }
            }
        },
    )
    .await;
}

/// Waits for `job` to be in `state`, as `job list` says.
async fn job_in(url: &str, job: &str, state: &str) {
    eventually(&format!("{job} {state}"), 30, || {
        let out = cairn(url, &["job", "list", "-o", "json"]);
        let jobs: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let found = jobs
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["name"] == job && j["state"] == state);
        if found { Ok(()) } else { Err(jobs.to_string()) }
    })
    .await;
}

/// Events whose JSON mentions `text` (a reason, an id).
fn mentioning<'e>(log: &'e [Value], kind: &str, text: &str) -> Vec<&'e Value> {
    of_type(log, kind)
        .into_iter()
        .filter(|e| e.to_string().contains(text))
        .collect()
}

// Acceptance 5 — a lost node returns with its attempts already completed: the late reports
// are recorded; a batch slot whose job replaces lost work keeps the original's completion
// and stops its replacement; one that does not (`replace: false`) was never replaced.
#[tokio::test]
async fn fault_a_lost_node_returning_with_completed_work_is_believed() {
    let stack = Stack::new(FAST_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let edge_a = stack.edge("edge-a", "edge", 4);
    stack.nodes_in(&["edge-a"], "connected").await;

    // The first attempt finishes when told to; any later one runs until stopped.
    let go = stack.dir.path().join("go");
    let task = |name: &str, disconnect: &str| {
        format!(
            "name: {name}\ntype: batch\ncount: 1\nselector: {{role: edge}}\n{disconnect}\
             task: {{engine: exec, command: [\"sh\", \"-c\", \"if [ $CAIRN_ATTEMPT = 1 ]; then \
             while [ ! -e {go} ]; do sleep 0.1; done; else sleep 600; fi\"]}}\n",
            go = go.display()
        )
    };
    stack.deploy("moved", &task("moved", ""), false);
    stack.deploy(
        "waits",
        &task("waits", "disconnect: {replace: false}\n"),
        false,
    );
    stack.executions_in("moved", "running", 1).await;
    stack.executions_in("waits", "running", 1).await;
    let _edge_b = stack.edge("edge-b", "edge", 4);
    stack.nodes_in(&["edge-b"], "connected").await;

    edge_a.freeze();
    stack.nodes_in(&["edge-a"], "lost").await;
    let replacement = stack.executions_in("moved", "running", 1).await;
    assert_eq!(replacement[0]["node_id"], "edge-b");
    assert_eq!(replacement[0]["attempt"], 2);
    // The first attempts finish while their edge is frozen, and it reports them on return.
    std::fs::write(&go, b"").unwrap();
    edge_a.thaw();

    for job in ["moved", "waits"] {
        job_in(&url, job, "completed").await;
    }
    let moved = executions(&url, "moved");
    let completed: Vec<&Value> = moved.iter().filter(|e| e["state"] == "completed").collect();
    assert_eq!(completed.len(), 1, "one completed attempt: {moved:?}");
    assert_eq!(completed[0]["attempt"], 1, "{moved:?}");
    let stopped = eventually("the replacement stopped", 30, || {
        let all = executions(&url, "moved");
        match all.iter().find(|e| e["attempt"] == 2) {
            Some(e) if e["state"] == "stopped" => Ok(e.clone()),
            _ => Err(format!("{all:?}")),
        }
    })
    .await;
    assert_eq!(stopped["node_id"], "edge-b");
    let waits = executions(&url, "waits");
    assert_eq!(waits.len(), 1, "replace: false never replaced: {waits:?}");
    assert_eq!(waits[0]["state"], "completed");

    // The log tells the story: the late report, recorded, and the stop it led to.
    let log = events(&url);
    let late = mentioning(
        &log,
        "ExecutionStateChanged",
        "reported after its node was declared lost",
    );
    assert_eq!(late.len(), 2, "both late completions recorded: {late:?}");
    let attempt_two = stopped["id"].as_str().unwrap();
    let reconciled = mentioning(&log, "ExecutionStopRequested", attempt_two);
    assert_eq!(reconciled.len(), 1, "{reconciled:?}");
    assert!(
        reconciled[0].to_string().contains("keeps the slot"),
        "{reconciled:?}"
    );
    assert!(
        of_type(&log, "InputRejected").is_empty(),
        "no report was refused: {:?}",
        of_type(&log, "InputRejected")
    );
}

// Acceptance 5 — a lost node returns with its long-running work still running: the
// service replica and the daemon are the same executions as before, and the replica's
// replacement is stopped.
#[tokio::test]
async fn fault_a_lost_node_returning_with_running_work_keeps_it() {
    let stack = Stack::new(FAST_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let edge_a = stack.edge("edge-a", "edge", 4);
    stack.nodes_in(&["edge-a"], "connected").await;
    let forever = "task: {engine: exec, command: [\"sleep\", \"600\"]}\n";
    stack.deploy(
        "web",
        &format!("name: web\ntype: service\ncount: 1\nselector: {{role: edge}}\n{forever}"),
        false,
    );
    stack.deploy(
        "agent",
        &format!("name: agent\ntype: daemon\nselector: {{host: edge-a}}\n{forever}"),
        false,
    );
    let replica = stack.executions_in("web", "running", 1).await;
    let daemon = stack.executions_in("agent", "running", 1).await;
    let _edge_b = stack.edge("edge-b", "edge", 4);
    stack.nodes_in(&["edge-b"], "connected").await;

    edge_a.freeze();
    stack.nodes_in(&["edge-a"], "lost").await;
    let replacement = stack.executions_in("web", "running", 1).await;
    assert_eq!(replacement[0]["node_id"], "edge-b");
    edge_a.thaw();
    stack.nodes_in(&["edge-a"], "connected").await;

    let replacement_id = replacement[0]["id"].clone();
    let web = eventually(
        "the returning replica kept, its replacement stopped",
        30,
        || {
            let all = executions(&url, "web");
            let running: Vec<&Value> = all.iter().filter(|e| e["state"] == "running").collect();
            let replaced_stopped = all
                .iter()
                .any(|e| e["id"] == replacement_id && e["state"] == "stopped");
            if running.len() == 1 && running[0]["id"] == replica[0]["id"] && replaced_stopped {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    assert_eq!(web.len(), 2, "no third replica: {web:?}");
    let agent = stack.executions_in("agent", "running", 1).await;
    assert_eq!(
        agent[0]["id"], daemon[0]["id"],
        "the daemon is the same execution"
    );
    assert_eq!(
        executions(&url, "agent").len(),
        1,
        "no second daemon execution"
    );
    let log = events(&url);
    let replica_id = replica[0]["id"].as_str().unwrap();
    assert!(
        !mentioning(
            &log,
            "ExecutionStateChanged",
            "still running when its node was heard again"
        )
        .iter()
        .filter(|e| e.to_string().contains(replica_id))
        .collect::<Vec<_>>()
        .is_empty(),
        "the return is in the log"
    );
}
