//! `node list`, `job list`, `job describe` and `execution list` through the built binary,
//! answered by a real `cairn orchestrator` process from views projected off a real stream.
//! (Events are appended directly here; deploying through the decider is tested with it.)

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_shared::codec::Envelope;
use cairn_shared::event::*;
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::*;
use cairn_streams::testing::{NatsServer, wait_until};
use cairn_streams::{Outgoing, Publisher, Topology};
use serde_json::Value;

mod support;
use support::{Proc, cairn, json};

fn at(n: u64) -> Timestamp {
    Timestamp(1_800_000_000_000 + n)
}

fn history() -> (JobId, Vec<ExecutionId>, Vec<Event>) {
    let job = JobId::generate();
    let executions: Vec<ExecutionId> = (0..3).map(|_| ExecutionId::generate()).collect();
    let node = |n: &str| NodeId::new(n).unwrap();
    let task = TaskSpec {
        engine: Engine::Exec,
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        args: vec![],
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
    };
    let spec = JobSpec {
        name: "heartbeat".into(),
        job_type: JobType::Batch,
        count: Some(3),
        selector: BTreeMap::from([("role".into(), "edge".into())]),
        task: task.clone(),
    };
    let mut events: Vec<Event> = vec![
        NodeRegistered {
            node: node("edge-1"),
            labels: BTreeMap::from([("role".into(), "edge".into())]),
            capacity: 4,
        }
        .into(),
        NodeRegistered {
            node: node("edge-2"),
            labels: BTreeMap::from([("role".into(), "edge".into())]),
            capacity: 2,
        }
        .into(),
        JobDeployed {
            job,
            version: 1,
            spec,
        }
        .into(),
        JobStateChanged {
            job,
            state: JobState::Running,
            reason: None,
        }
        .into(),
    ];
    for (i, e) in executions.iter().enumerate() {
        events.push(
            ExecutionAssigned {
                execution: *e,
                job,
                job_name: "heartbeat".into(),
                version: 1,
                node: node(if i == 0 { "edge-2" } else { "edge-1" }),
                attempt: 1,
                task: task.clone(),
            }
            .into(),
        );
    }
    events.push(
        ExecutionStateChanged {
            execution: executions[1],
            node: node("edge-1"),
            state: ExecutionState::Completed,
            exit_code: Some(0),
            reason: None,
        }
        .into(),
    );
    events.push(
        NodeDisconnected {
            node: node("edge-2"),
        }
        .into(),
    );
    (job, executions, events)
}

#[tokio::test]
async fn queries_answer_from_the_orchestrators_views_in_every_format() {
    let server = NatsServer::start();
    let url = server.url();

    // No orchestrator yet: a clear sentence, exit 1.
    let out = cairn(&url, &["node", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no orchestrator is answering"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let data = tempfile::tempdir().unwrap();
    let _orchestrator = Proc::spawn(&url, &["orchestrator"], data.path());
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let publisher = Publisher::new(js);
    let (job, executions, events) = history();
    let total = events.len();
    for (i, body) in events.into_iter().enumerate() {
        let envelope = Envelope::new(EventId::generate(), None, at(i as u64), body);
        publisher
            .append(Outgoing::event(&envelope).unwrap())
            .await
            .unwrap();
    }
    let url2 = url.clone();
    wait_until(
        "the orchestrator to project every event",
        Duration::from_secs(30),
        || {
            let url = url2.clone();
            async move {
                let out = cairn(&url, &["node", "list", "-o", "json"]);
                let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                match nodes.as_array() {
                    Some(n) if n.len() == 2 && n[1]["state"] == "disconnected" => Ok(()),
                    _ => Err(format!("{nodes} {}", String::from_utf8_lossy(&out.stderr))),
                }
            }
        },
    )
    .await;
    assert!(total > 0);

    let nodes = json(&url, &["node", "list"]);
    assert_eq!(nodes[0]["id"], "edge-1");
    assert_eq!(nodes[0]["state"], "connected");
    assert_eq!(nodes[0]["labels"]["role"], "edge");
    assert_eq!(
        nodes[0]["executions"], 1,
        "one of edge-1's two executions completed"
    );
    assert_eq!(nodes[1]["executions"], 1);

    let jobs = json(&url, &["job", "list"]);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], job.to_string());
    assert_eq!(jobs[0]["name"], "heartbeat");
    assert_eq!(jobs[0]["type"], "batch");
    assert_eq!(jobs[0]["version"], 1);
    assert_eq!(jobs[0]["state"], "running");

    for key in ["heartbeat", &job.to_string()] {
        let described = json(&url, &["job", "describe", key]);
        assert_eq!(described["id"], job.to_string());
        assert_eq!(described["spec"]["count"], 3);
        assert_eq!(described["executions"].as_array().unwrap().len(), 3);
    }

    let all = json(&url, &["execution", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let first = &all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == executions[0].to_string())
        .unwrap();
    for field in [
        "id",
        "job_id",
        "node_id",
        "version",
        "attempt",
        "desired_state",
        "state",
        "exit_code",
    ] {
        assert!(
            first.get(field).is_some(),
            "execution JSON lacks {field}: {first}"
        );
    }
    let completed = json(
        &url,
        &[
            "execution",
            "list",
            "--job",
            "heartbeat",
            "--state",
            "completed",
        ],
    );
    assert_eq!(completed.as_array().unwrap().len(), 1);
    assert_eq!(completed[0]["id"], executions[1].to_string());
    assert_eq!(completed[0]["exit_code"], 0);
    let on_edge2 = json(&url, &["execution", "list", "--node", "edge-2"]);
    assert_eq!(on_edge2.as_array().unwrap().len(), 1);

    // Tables for people, YAML for those who prefer it.
    let table = String::from_utf8(cairn(&url, &["node", "list"]).stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID "), "{table}");
    assert!(
        lines[1].starts_with("edge-1  ") && lines[1].contains("connected"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let yaml = String::from_utf8(cairn(&url, &["job", "list", "-o", "yaml"]).stdout).unwrap();
    assert!(yaml.contains("name: heartbeat"), "{yaml}");
    let describe =
        String::from_utf8(cairn(&url, &["job", "describe", "heartbeat"]).stdout).unwrap();
    assert!(describe.contains("Executions"), "{describe}");

    // Unknown ids name what was missing.
    let out = cairn(&url, &["job", "describe", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: unknown job \"nope\""
    );
    let out = cairn(&url, &["execution", "list", "--job", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job \"nope\""));
    let out = cairn(&url, &["execution", "list", "--state", "sleeping"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
}
