//! Replay and audit through the built binary, against real nats-servers: as-of queries
//! answer exactly what the live views answered at that moment of a scripted history (deploys,
//! an update, a node loss, a stop); `audit verify` says `match` and then finds a row
//! corrupted in the orchestrator's file; `audit history` shows an execution's causal chain;
//! `job history -p` diffs versions; `audit export` round-trips 100,000 messages; and
//! replays refuse ranges the stream no longer holds. In a log written by hand, of several
//! jobs and nodes and both execution subject layouts, a history shows exactly its
//! entity's messages and asks the server for only their subjects.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_orchestrator::query::{Answer, endpoint};
use cairn_shared::assignment::{Assignment, RunExecution, StopExecution};
use cairn_shared::codec::Envelope;
use cairn_shared::command::{DeployJob, StopJob};
use cairn_shared::event::{
    CommandAccepted, ExecutionAssigned, ExecutionStateChanged, ExecutionStopRequested, JobDeployed,
    JobStateChanged, NodeRegistered,
};
use cairn_shared::report::{ExecutionUpdate, NodeHello};
use cairn_shared::spec::TaskSpec;
use cairn_shared::{
    Command, CommandId, Event, EventId, ExecutionId, ExecutionState, JobId, JobSpec, JobState,
    NodeId, Report, ReportId, Seq, Timestamp,
};
use cairn_streams::testing::{ExecutionJobs, NatsServer, wait_until};
use cairn_streams::{Outgoing, Pipeline, Publisher, Reader, StreamKind, Topology, subjects};
use futures::StreamExt;
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
            capacity: Some((i % 7) as u32),
            resources: None,
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

/// A log written by hand, message by message, each with the histories that must show it.
struct Script {
    publisher: Publisher,
    jobs: ExecutionJobs,
    /// Every message's id, with the histories (`cairn audit history …` arguments) showing it.
    written: Vec<(String, Vec<String>)>,
}

impl Script {
    fn note(&mut self, id: String, shown_in: &[&String]) {
        self.written
            .push((id, shown_in.iter().map(|s| s.to_string()).collect()));
    }

    /// The ids `history` must list, in the order they were written.
    fn shown_in(&self, history: &str) -> Vec<String> {
        self.written
            .iter()
            .filter(|(_, shown)| shown.iter().any(|s| s == history))
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn append(&self, out: Outgoing) {
        self.publisher.append(out).await.unwrap();
    }

    async fn command(&mut self, body: Command, shown_in: &[&String]) -> CommandId {
        let envelope = Envelope::new(CommandId::generate(), None, Timestamp::now(), body);
        self.append(Outgoing::command(&envelope).unwrap()).await;
        self.note(envelope.id.to_string(), shown_in);
        envelope.id
    }

    fn event_envelope(&mut self, cause: Option<CommandId>, body: Event) -> Outgoing {
        let envelope = Envelope::new(EventId::generate(), cause, Timestamp::now(), body);
        self.jobs.outgoing(&envelope).unwrap()
    }

    async fn event(&mut self, cause: Option<CommandId>, body: Event, shown_in: &[&String]) {
        let out = self.event_envelope(cause, body);
        self.append(out.clone()).await;
        self.note(out.msg_id, shown_in);
    }

    /// An execution event where logs written before execution subjects named job and node
    /// kept it: `cairn.evt.exec.<execution>`.
    async fn legacy_event(&mut self, cause: Option<CommandId>, body: Event, shown_in: &[&String]) {
        let Some(execution) = body.touches().execution else {
            panic!("not an execution event: {body:?}");
        };
        let mut out = self.event_envelope(cause, body);
        out.subject = format!("cairn.evt.exec.{execution}").into();
        self.append(out.clone()).await;
        self.note(out.msg_id, shown_in);
    }

    async fn report(&mut self, node: &NodeId, body: Report, shown_in: &[&String]) {
        let envelope = Envelope::new(ReportId::generate(), None, Timestamp::now(), body);
        self.append(Outgoing::report(node, &envelope).unwrap())
            .await;
        self.note(envelope.id.to_string(), shown_in);
    }

    async fn assignment(
        &mut self,
        node: &NodeId,
        cause: CommandId,
        body: Assignment,
        shown_in: &[&String],
    ) {
        let envelope = Envelope::new(EventId::generate(), Some(cause), Timestamp::now(), body);
        self.append(Outgoing::assignment(node, &envelope).unwrap())
            .await;
        self.note(envelope.id.to_string(), shown_in);
    }
}

fn task() -> TaskSpec {
    serde_saphyr::from_str::<JobSpec>(ONCE).unwrap().task
}

fn assigned(execution: ExecutionId, job: JobId, name: &str, version: u32, node: &NodeId) -> Event {
    ExecutionAssigned {
        execution,
        job,
        job_name: name.into(),
        version,
        node: node.clone(),
        attempt: 1,
        task: task(),
        resources: None,
        delay: None,
        health: None,
    }
    .into()
}

fn changed(execution: ExecutionId, node: &NodeId, state: ExecutionState) -> Event {
    ExecutionStateChanged {
        execution,
        node: node.clone(),
        state,
        exit_code: None,
        reason: None,
    }
    .into()
}

fn update(execution: ExecutionId, node: &NodeId, state: ExecutionState) -> Report {
    ExecutionUpdate {
        node: node.clone(),
        execution,
        attempt: 1,
        state,
        exit_code: None,
        reason: None,
    }
    .into()
}

fn run(execution: ExecutionId, job: JobId, name: &str, version: u32) -> Assignment {
    RunExecution {
        execution,
        attempt: 1,
        job,
        job_name: name.into(),
        version,
        task: task(),
        delay: None,
        health: None,
    }
    .into()
}

fn stop(execution: ExecutionId) -> Assignment {
    StopExecution {
        execution,
        attempt: 1,
        reason: "test".into(),
    }
    .into()
}

fn deployed(job: JobId, version: u32, spec: JobSpec) -> Event {
    JobDeployed {
        job,
        version,
        spec,
        reverted_to: None,
    }
    .into()
}

fn deploy(name: &str, marker: &str) -> (Command, JobSpec) {
    let mut spec = serde_saphyr::from_str::<JobSpec>(ONCE).unwrap();
    spec.name = name.into();
    spec.task.env.insert("MARKER".into(), marker.into());
    (DeployJob { spec: spec.clone() }.into(), spec)
}

/// What `cairn` asked JetStream for while it ran: every consumer created (stream and
/// subject filters) and every direct get (stream and subject).
async fn asked_while(
    client: &async_nats::Client,
    url: &str,
    args: &[&str],
) -> (Value, Vec<(String, Vec<String>)>) {
    use futures::FutureExt;
    let mut creates = client.subscribe("$JS.API.CONSUMER.CREATE.>").await.unwrap();
    let mut gets = client.subscribe("$JS.API.DIRECT.GET.>").await.unwrap();
    client.flush().await.unwrap();
    let (url, args): (String, Vec<String>) =
        (url.to_owned(), args.iter().map(|a| a.to_string()).collect());
    let answer = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        json(&url, &args)
    })
    .await
    .unwrap();
    // The server sent this connection every request it saw before the pong.
    client.flush().await.unwrap();
    let mut asked = Vec::new();
    while let Some(Some(request)) = creates.next().now_or_never() {
        let body: Value = serde_json::from_slice(&request.payload).unwrap();
        let config = &body["config"];
        let mut filters: Vec<String> = config["filter_subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        filters.extend(config["filter_subject"].as_str().map(str::to_owned));
        asked.push((body["stream_name"].as_str().unwrap().to_owned(), filters));
    }
    while let Some(Some(request)) = gets.next().now_or_never() {
        let body: Value = serde_json::from_slice(&request.payload).unwrap();
        let stream = request
            .subject
            .as_str()
            .trim_start_matches("$JS.API.DIRECT.GET.");
        let subject = body["next_by_subj"].as_str().unwrap_or("").to_owned();
        asked.push((stream.to_owned(), vec![subject]));
    }
    (answer, asked)
}

#[tokio::test]
async fn history_of_one_entity_shows_exactly_its_messages_and_reads_only_its_subjects() {
    const OTHERS: usize = 1_500;
    let server = NatsServer::start();
    let url = server.url();
    let client = server.connect().await;
    let js = cairn_streams::jetstream(client.clone());
    Topology::default().ensure(&js).await.unwrap();
    let mut log = Script {
        publisher: Publisher::new(js.clone()),
        jobs: ExecutionJobs::default(),
        written: Vec::new(),
    };
    let [n1, n2, n3] = ["n1", "n2", "n3"].map(|n| NodeId::new(n).unwrap());
    let (alpha, beta) = (JobId::generate(), JobId::generate());
    let (a1, a2, b0) = (
        ExecutionId::generate(),
        ExecutionId::generate(),
        ExecutionId::generate(),
    );
    let (job, execution, node) = (
        "job alpha".to_owned(),
        format!("execution {a1}"),
        "node n1".to_owned(),
    );
    let (j, x, n) = (&job, &execution, &node);
    for (node, shown) in [(&n1, &[n][..]), (&n2, &[]), (&n3, &[])] {
        let registered = NodeRegistered {
            node: node.clone(),
            labels: BTreeMap::new(),
            capacity: Some(4),
            resources: None,
        };
        log.event(None, registered.into(), shown).await;
    }

    // Version 1 of alpha, in the layout of earlier logs.
    let (command, spec) = deploy("alpha", "one");
    let c1 = log.command(command, &[j, x, n]).await;
    log.event(Some(c1), deployed(alpha, 1, spec), &[j]).await;
    log.legacy_event(Some(c1), assigned(a1, alpha, "alpha", 1, &n1), &[j, x, n])
        .await;
    let accepted = |command, job| -> Event {
        CommandAccepted {
            command,
            job: Some(job),
            version: None,
        }
        .into()
    };
    log.event(Some(c1), accepted(c1, alpha), &[j, x, n]).await;
    log.assignment(&n1, c1, run(a1, alpha, "alpha", 1), &[j, x, n])
        .await;
    log.report(&n1, update(a1, &n1, ExecutionState::Running), &[j, x, n])
        .await;
    log.legacy_event(None, changed(a1, &n1, ExecutionState::Running), &[j, x, n])
        .await;

    // Beta, much larger than alpha: one execution beside alpha's on n1, the rest on n3.
    let (command, spec) = deploy("beta", "one");
    let c2 = log.command(command, &[n]).await;
    log.event(Some(c2), deployed(beta, 1, spec), &[]).await;
    log.event(Some(c2), assigned(b0, beta, "beta", 1, &n1), &[n])
        .await;
    let others: Vec<ExecutionId> = (0..OTHERS).map(|_| ExecutionId::generate()).collect();
    let mut bulk = Vec::new();
    for &b in &others {
        bulk.push(log.event_envelope(Some(c2), assigned(b, beta, "beta", 1, &n3)));
    }
    log.event(Some(c2), accepted(c2, beta), &[n]).await;
    log.assignment(&n1, c2, run(b0, beta, "beta", 1), &[n])
        .await;
    for &b in &others {
        let work = Envelope::new(
            EventId::generate(),
            Some(c2),
            Timestamp::now(),
            run(b, beta, "beta", 1),
        );
        bulk.push(Outgoing::assignment(&n3, &work).unwrap());
        let report = Envelope::new(
            ReportId::generate(),
            None,
            Timestamp::now(),
            update(b, &n3, ExecutionState::Completed),
        );
        bulk.push(Outgoing::report(&n3, &report).unwrap());
        bulk.push(log.event_envelope(None, changed(b, &n3, ExecutionState::Completed)));
    }
    Pipeline::new(log.publisher.clone(), Pipeline::DEFAULT_WINDOW)
        .append_all(bulk)
        .await
        .unwrap();
    log.report(&n1, update(b0, &n1, ExecutionState::Running), &[n])
        .await;
    log.event(None, changed(b0, &n1, ExecutionState::Running), &[n])
        .await;
    // Only n1's hello is its history's; n2's reports are read for alpha's, and left out.
    let hello = |node: &NodeId| -> Report {
        NodeHello {
            node: node.clone(),
            labels: BTreeMap::new(),
            capacity: Some(4),
            resources: None,
        }
        .into()
    };
    log.report(&n1, hello(&n1), &[n]).await;
    log.report(&n2, hello(&n2), &[]).await;

    // Version 2 of alpha replaces a1 with a2 on n2; then alpha is stopped.
    let (command, spec) = deploy("alpha", "two");
    let c4 = log.command(command, &[j, x, n]).await;
    log.event(Some(c4), deployed(alpha, 2, spec), &[j]).await;
    let stopping = |execution, node: &NodeId| -> Event {
        ExecutionStopRequested {
            execution,
            node: node.clone(),
            reason: "test".into(),
            attempt: 1,
        }
        .into()
    };
    log.event(Some(c4), stopping(a1, &n1), &[j, x, n]).await;
    log.event(Some(c4), assigned(a2, alpha, "alpha", 2, &n2), &[j])
        .await;
    log.event(Some(c4), accepted(c4, alpha), &[j, x, n]).await;
    log.assignment(&n1, c4, stop(a1), &[j, x, n]).await;
    log.assignment(&n2, c4, run(a2, alpha, "alpha", 2), &[j])
        .await;
    log.report(&n2, update(a2, &n2, ExecutionState::Accepted), &[j])
        .await;
    log.event(None, changed(a2, &n2, ExecutionState::Accepted), &[j])
        .await;
    let c3 = log
        .command(
            StopJob {
                job: cairn_shared::command::JobRef("alpha".into()),
            }
            .into(),
            &[j],
        )
        .await;
    log.event(Some(c3), stopping(a2, &n2), &[j]).await;
    let stopped = JobStateChanged {
        job: alpha,
        state: JobState::Stopped,
        reason: None,
    };
    log.event(Some(c3), stopped.into(), &[j]).await;
    log.event(Some(c3), accepted(c3, alpha), &[j]).await;
    log.assignment(&n2, c3, stop(a2), &[j]).await;
    log.report(&n1, update(a1, &n1, ExecutionState::Stopped), &[j, x, n])
        .await;
    log.event(None, changed(a1, &n1, ExecutionState::Stopped), &[j, x, n])
        .await;

    for history in [j, x, n] {
        let mut args = vec!["audit", "history"];
        args.extend(history.split(' '));
        let started = Instant::now();
        let rows = json(&url, &args);
        eprintln!("{history}: {:?}", started.elapsed());
        let ids: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, log.shown_in(history), "{history}: {rows:#}");
        for row in rows.as_array().unwrap() {
            let keys: Vec<&str> = row
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                ["cause", "id", "seq", "stream", "summary", "time", "type"],
                "{row}"
            );
        }
    }
    let by_id = json(&url, &["audit", "history", "job", &alpha.to_string()]);
    let ids: Vec<&str> = by_id
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, log.shown_in(j), "a job named by id");

    // The history asked the server only for alpha's share of each stream (beta's job
    // events excepted, which a job named by name is found among), and the versions only
    // for job events.
    let (_, asked) = asked_while(&client, &url, &["audit", "history", "job", "alpha"]).await;
    assert!(
        asked.iter().any(|(stream, _)| stream == "CAIRN_REPORT"),
        "{asked:?}"
    );
    for (stream, filters) in &asked {
        let whole = stream != "CAIRN_CMD"
            && (filters.is_empty()
                || filters
                    .iter()
                    .any(|f| f.ends_with('>') || f == "cairn.report.*"));
        let beta_or_n3 = filters
            .iter()
            .any(|f| f.contains(&beta.to_string()) || f.split('.').any(|t| t == "n3"));
        assert!(!whole && !beta_or_n3, "{stream} {filters:?} in {asked:?}");
    }
    let (versions, asked) = asked_while(&client, &url, &["job", "history", "alpha"]).await;
    assert_eq!(
        asked,
        [(
            "CAIRN_EVT".to_owned(),
            vec![subjects::JOB_EVENTS.to_owned()]
        )]
    );
    let versions: Vec<(u64, &str, &str)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["job_id"].as_str().unwrap(),
                v["command_id"].as_str().unwrap(),
            )
        })
        .collect();
    let (alpha, c1, c4) = (alpha.to_string(), c1.to_string(), c4.to_string());
    assert_eq!(
        versions,
        [(1, alpha.as_str(), c1.as_str()), (2, &alpha, &c4)]
    );
}
