//! Replay and audit through the built binary, against real nats-servers: as-of queries
//! answer exactly what the live views answered at that moment of a scripted history (deploys,
//! an update, a node loss, a stop); `audit verify` says `match` and then finds a row
//! corrupted in the orchestrator's file; `audit history` shows an execution's causal chain;
//! `job history -p` diffs versions; `audit export` round-trips 100,000 messages; and
//! replays refuse ranges the stream no longer holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_orchestrator::query::{Answer, endpoint};
use cairn_shared::codec::Envelope;
use cairn_shared::command::{DeployJob, StopJob};
use cairn_shared::event::NodeRegistered;
use cairn_shared::{Command, CommandId, Event, EventId, JobSpec, NodeId, Seq, Timestamp};
use cairn_streams::testing::{NatsServer, wait_until};
use cairn_streams::{Outgoing, Pipeline, Publisher, Reader, StreamKind, Topology, subjects};
use serde_json::Value;

mod support;
use support::stack::eventually;
use support::{Proc, cairn, json};

/// The live views' answers at one sequence, and a time at which the log held exactly that.
struct Moment {
    seq: Seq,
    time: Timestamp,
    answers: Vec<(Vec<String>, Value)>,
}

/// The queries recorded at every moment.
const QUERIES: &[&[&str]] = &[
    &["node", "list"],
    &["job", "list"],
    &["execution", "list"],
    &["execution", "list", "--job", "beat"],
    &["job", "describe", "once"],
];

/// The live query service's answer, with the sequence its views reflect.
async fn live_applied(client: &async_nats::Client) -> Option<Seq> {
    let reply = client
        .request(cairn_streams::subjects::query(endpoint::NODES), "".into())
        .await
        .ok()?;
    let answer: Answer<Value> = serde_json::from_slice(&reply.payload).ok()?;
    Some(answer.applied_seq)
}

/// Waits until the live views have applied the whole log and nothing is being appended,
/// then records every query's answer at that sequence.
async fn record(url: &str, client: &async_nats::Client, reader: &Reader) -> Moment {
    wait_until(
        "a quiet moment in the log",
        Duration::from_secs(60),
        || async {
            let last = reader.bounds(StreamKind::Events).await.unwrap().last;
            if live_applied(client).await != Some(last) {
                return Err(format!("views behind {last}"));
            }
            let answers: Vec<(Vec<String>, Value)> = QUERIES
                .iter()
                .map(|q| {
                    let mut args: Vec<&str> = q.to_vec();
                    args.extend(["-o", "json"]);
                    let out = cairn(url, &args);
                    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    (q.iter().map(|s| s.to_string()).collect(), value)
                })
                .collect();
            let time = Timestamp::now();
            let after = reader.bounds(StreamKind::Events).await.unwrap().last;
            if after != last || live_applied(client).await != Some(last) {
                return Err(format!("the log moved from {last} to {after}"));
            }
            Ok(Moment {
                seq: last,
                time,
                answers,
            })
        },
    )
    .await
}

fn spec_file(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A daemon whose task lives as long as its edge (the edge is `$PPID`); `marker` makes
/// versions differ.
fn beat(marker: &str) -> String {
    format!(
        r#"
name: beat
type: daemon
selector: {{role: edge}}
task:
  engine: exec
  command: ["sh", "-c", "while kill -0 $PPID 2>/dev/null; do sleep 0.2; done"]
  env: {{MARKER: "{marker}"}}
"#
    )
}

const ONCE: &str = r#"
name: once
type: batch
count: 2
selector: {role: edge}
task:
  engine: exec
  command: ["true"]
"#;

/// Heartbeats every 200 ms; the orchestrator calls a node lost after 3 s of silence.
const BEAT: [&str; 2] = ["--heartbeat-interval", "200ms"];
const LOSS: [&str; 4] = ["--disconnect-after", "1s", "--lost-after", "3s"];

fn edge(url: &str, dir: &Path, id: &str) -> Proc {
    let node = ["edge", "--node-id", id, "--label=role=edge", "--capacity=4"];
    Proc::spawn(url, &[&node[..], &BEAT].concat(), &dir.join(id))
}

fn orchestrator(url: &str, dir: &Path) -> Proc {
    let args = [&["orchestrator"][..], &BEAT, &LOSS].concat();
    Proc::spawn(url, &args, &dir.join("orchestrator"))
}

#[tokio::test]
async fn as_of_queries_history_and_verification_over_a_scripted_history() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut orch = orchestrator(&url, dir.path());
    let client = server.connect().await;
    let reader = Reader::new(cairn_streams::jetstream(client.clone()));
    let _e1 = edge(&url, dir.path(), "e1");
    let mut e2 = edge(&url, dir.path(), "e2");
    let mut moments = Vec::new();

    eventually("both edges to register", 60, || {
        let nodes = cairn(&url, &["node", "list", "-o", "json"]);
        let nodes: Value = serde_json::from_slice(&nodes.stdout).unwrap_or(Value::Null);
        match nodes.as_array() {
            Some(n) if n.len() == 2 => Ok(()),
            _ => Err(nodes.to_string()),
        }
    })
    .await;
    moments.push(record(&url, &client, &reader).await);

    let once = json(
        &url,
        &[
            "job",
            "deploy",
            &spec_file(dir.path(), "once", ONCE),
            "--wait",
        ],
    );
    assert_eq!(once["state"], "completed", "{once}");
    moments.push(record(&url, &client, &reader).await);

    let v1 = spec_file(dir.path(), "beat1", &beat("one"));
    assert_eq!(
        json(&url, &["job", "deploy", &v1, "--wait"])["state"],
        "running"
    );
    moments.push(record(&url, &client, &reader).await);

    let v2 = spec_file(dir.path(), "beat2", &beat("two"));
    let updated = json(&url, &["job", "deploy", &v2, "--wait"]);
    assert_eq!(updated["version"], 2, "{updated}");
    eventually("version 1 of beat to stop", 60, || {
        let all = json(&url, &["execution", "list", "--job", "beat"]);
        let stopped = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["version"] == 1 && e["state"] == "stopped")
            .count();
        if stopped == 2 {
            Ok(())
        } else {
            Err(all.to_string())
        }
    })
    .await;
    moments.push(record(&url, &client, &reader).await);

    e2.kill9();
    eventually("e2 to be lost", 60, || {
        let nodes = json(&url, &["node", "list"]);
        if nodes[1]["state"] == "lost" {
            Ok(())
        } else {
            Err(nodes.to_string())
        }
    })
    .await;
    moments.push(record(&url, &client, &reader).await);

    json(&url, &["job", "stop", "beat", "--wait"]);
    eventually("beat to end on e1", 60, || {
        let all = json(
            &url,
            &["execution", "list", "--job", "beat", "--node", "e1"],
        );
        let ended = all
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "stopped");
        if ended { Ok(()) } else { Err(all.to_string()) }
    })
    .await;
    moments.push(record(&url, &client, &reader).await);

    // Every recorded moment, asked again as of its sequence, answers the same; the first
    // and a later one also as of their time.
    let seqs: Vec<Seq> = moments.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "moments {seqs:?}");
    for (i, moment) in moments.iter().enumerate() {
        for (query, live) in &moment.answers {
            let mut args: Vec<&str> = query.iter().map(String::as_str).collect();
            let seq = moment.seq.to_string();
            args.extend(["--at-seq", &seq, "-o", "json"]);
            let out = cairn(&url, &args);
            let replayed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            assert_eq!(
                &replayed,
                live,
                "{args:?} at moment {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if i == 1 || i == 4 {
                let time = moment.time.to_string();
                let at = [
                    &query.iter().map(String::as_str).collect::<Vec<_>>()[..],
                    &["--at", &time, "-o", "json"],
                ]
                .concat();
                let out = cairn(&url, &at);
                let replayed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                assert_eq!(&replayed, live, "{at:?}");
            }
        }
    }
    let past_the_end = cairn(&url, &["node", "list", "--at-seq", "999999"]);
    assert_eq!(past_the_end.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&past_the_end.stderr).contains("the event log ends at"));

    // The causal chain of one execution: its command, its assignment, its edge's reports.
    let execution = json(&url, &["execution", "list", "--job", "once"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = json(&url, &["audit", "history", "execution", &execution]);
    let rows = history.as_array().unwrap();
    let position = |pred: &dyn Fn(&Value) -> bool| rows.iter().position(pred);
    let command = position(&|r| r["type"] == "DeployJob").expect("the deploy command");
    let command_id = rows[command]["id"].clone();
    assert_eq!(rows[command]["stream"], "CAIRN_CMD");
    let assigned = position(&|r| r["type"] == "ExecutionAssigned").expect("the assignment");
    assert_eq!(rows[assigned]["cause"], command_id, "{history:#}");
    let first_report = position(&|r| r["stream"] == "CAIRN_REPORT").expect("a report");
    let completed = position(&|r| {
        r["type"] == "ExecutionStateChanged" && r["summary"].as_str().unwrap().contains("completed")
    })
    .expect("the completion");
    assert!(
        command < assigned && assigned < first_report && first_report < completed,
        "{history:#}"
    );
    assert!(
        rows.iter()
            .filter(|r| r["stream"] == "CAIRN_REPORT")
            .all(|r| r["summary"].as_str().unwrap().contains(&execution)),
        "{history:#}"
    );
    let table = String::from_utf8(cairn(&url, &["audit", "history", "node", "e2"]).stdout).unwrap();
    assert!(table.contains("e2 lost"), "{table}");

    // The orchestrator stores every execution event under the execution's job and node, so
    // a job's history finds its executions by subject: those of `once`, none of `beat`.
    let mut jobs = std::collections::HashMap::new();
    let mut filed = 0;
    for raw in reader
        .held(StreamKind::Events, &[subjects::EVENTS.into()])
        .await
        .unwrap()
    {
        let event = Envelope::<Event>::decode(&raw.payload).unwrap().body;
        if let Event::ExecutionAssigned(a) = &event {
            jobs.insert(a.execution, a.job);
        }
        let touches = event.touches();
        if let Some(execution) = touches.execution {
            let (job, node) = (jobs[&execution], touches.node.unwrap());
            assert_eq!(
                raw.subject.as_str(),
                format!("cairn.evt.exec.{job}.{node}.{execution}")
            );
            filed += 1;
        }
    }
    assert!(filed > 10, "{filed} execution events");
    let once = json(&url, &["audit", "history", "job", "once"]);
    let rows = once.as_array().unwrap();
    let count = |what: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| what(r)).count();
    let summary = |r: &Value| r["summary"].as_str().unwrap().to_owned();
    assert_eq!(count(&|r| r["type"] == "DeployJob"), 1, "{once:#}");
    assert_eq!(count(&|r| r["type"] == "ExecutionAssigned"), 2, "{once:#}");
    assert!(
        rows.iter()
            .filter(|r| r["type"] == "ExecutionAssigned")
            .all(|r| summary(r).contains(" of once version 1 ")),
        "{once:#}"
    );
    let completed =
        |r: &Value| r["type"] == "ExecutionStateChanged" && summary(r).contains(" completed");
    assert_eq!(count(&completed), 2, "{once:#}");
    assert!(count(&|r| r["stream"] == "CAIRN_REPORT") >= 2, "{once:#}");

    // Versions of a job with the spec's diff.
    let versions = json(&url, &["job", "history", "beat", "-p"]);
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions:#}");
    let diff: Vec<&str> = versions[1]["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let changed: Vec<&str> = diff
        .iter()
        .copied()
        .filter(|l| !l.starts_with("  "))
        .collect();
    assert_eq!(
        changed,
        ["-     MARKER: one", "+     MARKER: two"],
        "{diff:?}"
    );

    // A healthy system verifies.
    let verified = cairn(&url, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && said.starts_with("match"),
        "{said}"
    );

    // Corrupt the completed batch job's row in the orchestrator's own file while it is
    // stopped, start it again, and verification finds that row.
    let job_id = json(&url, &["job", "describe", "once"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    orch.kill9();
    {
        let views = dir.path().join("orchestrator").join("views.redb");
        use redb::ReadableTable;
        let db = redb::Database::create(&views).unwrap();
        let jobs: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("jobs");
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(jobs).unwrap();
            let mut row: Value = {
                let stored = table.get(job_id.as_str()).unwrap().expect("the job's row");
                rmp_serde::from_slice(stored.value()).unwrap()
            };
            assert_eq!(row["state"], "completed");
            row["state"] = "running".into();
            let bytes = rmp_serde::to_vec_named(&row).unwrap();
            table.insert(job_id.as_str(), bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let _orch = orchestrator(&url, dir.path());
    eventually("the restarted orchestrator to answer", 60, || {
        let out = cairn(&url, &["job", "list", "-o", "json"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into())
        }
    })
    .await;
    let verified = cairn(&url, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{said}");
    assert!(said.starts_with("mismatch"), "{said}");
    assert!(
        said.contains(&format!("table jobs, key {job_id}")),
        "{said}"
    );
    assert!(said.contains("\"state\":\"running\""), "{said}");
    assert!(said.contains("\"state\":\"completed\""), "{said}");
}

#[tokio::test]
async fn export_round_trips_100k_messages_and_trimmed_ranges_are_refused() {
    const EVENTS: u64 = 100_000;
    let server = NatsServer::start();
    let url = server.url();
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let publisher = Publisher::new(js.clone());
    let command: Envelope<Command> = Envelope::new(
        CommandId::generate(),
        None,
        Timestamp::now(),
        DeployJob {
            spec: serde_saphyr::from_str::<JobSpec>(ONCE).unwrap(),
        }
        .into(),
    );
    publisher
        .append(Outgoing::command(&command).unwrap())
        .await
        .unwrap();
    let stop: Envelope<Command> = Envelope::new(
        CommandId::generate(),
        None,
        Timestamp::now(),
        StopJob {
            job: cairn_shared::command::JobRef("once".into()),
        }
        .into(),
    );
    publisher
        .append(Outgoing::command(&stop).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let outgoing = (0..EVENTS).map(|i| {
        let body: Event = NodeRegistered {
            node: NodeId::new(format!("node-{}", i % 1000)).unwrap(),
            labels: BTreeMap::new(),
            capacity: (i % 7) as u32,
        }
        .into();
        let envelope = Envelope::new(EventId::generate(), Some(command.id), Timestamp(i), body);
        Outgoing::event(&envelope).unwrap()
    });
    Pipeline::new(publisher, Pipeline::DEFAULT_WINDOW)
        .append_all(outgoing)
        .await
        .unwrap();
    eprintln!("published {EVENTS} events in {:?}", started.elapsed());

    let started = Instant::now();
    let out = cairn(&url, &["audit", "export"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).expect("every line is JSON");
        assert!(record["type"].is_string(), "undecoded: {record}");
        assert!(record["data"].is_object(), "{record}");
        if record["stream"] == "CAIRN_EVT" {
            assert_eq!(record["cause"], command.id.to_string());
        }
        seqs.entry(record["stream"].as_str().unwrap().to_owned())
            .or_default()
            .push(record["seq"].as_u64().unwrap());
    }
    let events = &seqs["CAIRN_EVT"];
    assert_eq!(events.len() as u64, EVENTS);
    assert!(
        events.iter().copied().eq(1..=EVENTS),
        "event sequences are contiguous"
    );
    assert_eq!(seqs["CAIRN_CMD"], [1, 2]);
    eprintln!(
        "exported {} messages in {took:?} ({:.0}/s)",
        EVENTS + 2,
        (EVENTS + 2) as f64 / took.as_secs_f64()
    );

    let some = cairn(
        &url,
        &[
            "audit",
            "export",
            "--stream",
            "events",
            "--from-seq",
            "500",
            "--to-seq",
            "600",
        ],
    );
    let lines: Vec<Value> = String::from_utf8(some.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[0]["seq"], 500);
    assert_eq!(lines[100]["seq"], 600);

    // An as-of query over the whole log: the projector's rate through the binary.
    let started = Instant::now();
    let nodes = json(&url, &["node", "list", "--at-seq", &EVENTS.to_string()]);
    let took = started.elapsed();
    assert_eq!(nodes.as_array().unwrap().len(), 1000);
    eprintln!(
        "replayed {EVENTS} events for an as-of query in {took:?} ({:.0}/s)",
        EVENTS as f64 / took.as_secs_f64()
    );

    // Trim the event stream as limits or an operator would: replays that need what is gone
    // refuse, saying what the stream still holds; an export from the start says it begins
    // later.
    let stream = js.get_stream(StreamKind::Events.name()).await.unwrap();
    stream.purge().sequence(50_001).await.unwrap();
    let refused = cairn(
        &url,
        &["audit", "export", "--stream", "events", "--from-seq", "10"],
    );
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(
            "CAIRN_EVT no longer holds sequence 10: its first retained sequence is 50001"
        ),
        "{said}"
    );
    let refused = cairn(&url, &["node", "list", "--at-seq", "60000"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no longer holds sequence 1"), "{said}");
    let rest = cairn(
        &url,
        &["audit", "export", "--stream", "events", "--to-seq", "50003"],
    );
    assert!(String::from_utf8_lossy(&rest.stderr).contains("starts at sequence 50001"));
    let lines: Vec<Value> = String::from_utf8(rest.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [50_001, 50_002, 50_003]
    );
}
