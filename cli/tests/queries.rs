//! `node list`, `job list`, `job describe` and `execution list` through the built binary,
//! answered by a real `cairn orchestrator` process from views projected off a real stream.
//! (Events are appended directly here; deploying through the decider is tested with it.)

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_shared::codec::Envelope;
use cairn_shared::event::*;
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::*;
use cairn_streams::testing::{ExecutionJobs, NatsServer, wait_until};
use cairn_streams::{Publisher, StreamKind, Topology};
use serde_json::Value;

mod support;
use support::{Proc, cairn, command, json, succeed};

fn at(n: u64) -> Timestamp {
    Timestamp(1_800_000_000_000 + n)
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

/// A node labelled `role=edge` joins.
fn registered(id: &str, capacity: u32) -> Event {
    NodeRegistered {
        node: node(id),
        labels: BTreeMap::from([("role".into(), "edge".into())]),
        capacity: Some(capacity),
        resources: None,
    }
    .into()
}

fn task() -> TaskSpec {
    TaskSpec {
        engine: Engine::Exec,
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        args: vec![],
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    }
}

fn spec(name: &str, count: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        job_type: JobType::Batch,
        count: Some(count),
        selector: BTreeMap::from([("role".into(), "edge".into())]),
        constraints: vec![],
        resources: None,
        task: task(),
        disconnect: None,
        restart: None,
        update: None,
    }
}

fn history() -> (JobId, Vec<ExecutionId>, Vec<Event>) {
    let job = JobId::generate();
    let executions: Vec<ExecutionId> = (0..3).map(|_| ExecutionId::generate()).collect();
    let task = task();
    let spec = spec("heartbeat", 3);
    let mut events: Vec<Event> = vec![
        registered("edge-1", 4),
        registered("edge-2", 2),
        JobDeployed {
            job,
            version: 1,
            spec,
            reverted_to: None,
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
                resources: None,
                delay: None,
                health: None,
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

/// Appends `events` to the log as if an orchestrator had decided them, at made-up times.
async fn append(server: &NatsServer, events: Vec<Event>) {
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let publisher = Publisher::new(js);
    let mut jobs = ExecutionJobs::default();
    for (i, body) in events.into_iter().enumerate() {
        let envelope = Envelope::new(EventId::generate(), None, at(i as u64), body);
        publisher
            .append(jobs.outgoing(&envelope).unwrap())
            .await
            .unwrap();
    }
}

/// Waits until the orchestrator's JSON answer to `args` is one `ready` accepts: the views
/// have projected what the test appended.
async fn answered(url: &str, args: &[&str], ready: impl Fn(&Value) -> bool) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    wait_until(
        "the orchestrator to project every event",
        Duration::from_secs(30),
        || {
            let out = cairn(url, &all);
            let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let seen = if ready(&answer) {
                Ok(())
            } else {
                Err(format!("{answer} {}", String::from_utf8_lossy(&out.stderr)))
            };
            async move { seen }
        },
    )
    .await;
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
    let (job, executions, events) = history();
    append(&server, events).await;
    answered(&url, &["node", "list"], |nodes| {
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 2 && n[1]["state"] == "disconnected")
    })
    .await;

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

/// Ids made to share long prefixes, as ULIDs made close together do: the jobs share their
/// first 9 characters, two of the executions their first 12.
const ALPHA: &str = "01JD3XQ2A0MRCTV7Z4W5Y6P8N9";
const BETA: &str = "01JD3XQ2A1KRCTV7Z4W5Y6P8N9";
const ALPHA_1: &str = "01JD3XQ2B0CD0RCTV7Z4W5Y6P8";
const ALPHA_2: &str = "01JD3XQ2B0CD1RCTV7Z4W5Y6P8";
const BETA_1: &str = "01JD3XQ2C0CD0RCTV7Z4W5Y6P8";

/// Two jobs and three executions with those ids, projected by a real orchestrator.
async fn close_ids() -> (NatsServer, Proc, tempfile::TempDir) {
    let server = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let orchestrator = Proc::spawn(&server.url(), &["orchestrator"], data.path());
    let mut events: Vec<Event> = vec![registered("edge-1", 4)];
    for (job, name) in [(ALPHA, "alpha"), (BETA, "beta")] {
        let job = job.parse().unwrap();
        events.push(
            JobDeployed {
                job,
                version: 1,
                spec: spec(name, 2),
                reverted_to: None,
            }
            .into(),
        );
    }
    for (execution, job, name) in [
        (ALPHA_1, ALPHA, "alpha"),
        (ALPHA_2, ALPHA, "alpha"),
        (BETA_1, BETA, "beta"),
    ] {
        let execution = execution.parse().unwrap();
        events.push(
            ExecutionAssigned {
                execution,
                job: job.parse().unwrap(),
                job_name: name.into(),
                version: 1,
                node: node("edge-1"),
                attempt: 1,
                task: task(),
                resources: None,
                delay: None,
                health: None,
            }
            .into(),
        );
    }
    for (execution, state, exit_code) in [
        (ALPHA_1, ExecutionState::Completed, 0),
        (BETA_1, ExecutionState::Failed, 1),
    ] {
        events.push(
            ExecutionStateChanged {
                execution: execution.parse().unwrap(),
                node: node("edge-1"),
                state,
                exit_code: Some(exit_code),
                reason: None,
            }
            .into(),
        );
    }
    append(&server, events).await;
    answered(&server.url(), &["execution", "list"], |all| {
        all.as_array()
            .is_some_and(|a| a.len() == 3 && a[2]["state"] == "failed")
    })
    .await;
    (server, orchestrator, data)
}

/// The first column of every row below the header.
fn first_column(table: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(table)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// Runs a command that must fail, and returns its one line on stderr.
fn refusal(url: &str, args: &[&str]) -> String {
    let out = cairn(url, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

/// Messages the command stream holds (0 before anything created it).
async fn commands_stored(server: &NatsServer) -> u64 {
    let js = cairn_streams::jetstream(server.connect().await);
    match js.get_stream(StreamKind::Commands.name()).await {
        Ok(mut stream) => stream.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

#[tokio::test]
async fn tables_show_the_shortest_unique_ids_and_wide_shows_them_whole() {
    let (server, _orchestrator, _data) = close_ids().await;
    let url = server.url();

    // Jobs share 9 characters: 10 tell them apart (8 would be the least).
    let jobs = cairn(&url, &["job", "list"]);
    assert_eq!(first_column(&jobs.stdout), [&ALPHA[..10], &BETA[..10]]);
    let wide = cairn(&url, &["job", "list", "--wide"]);
    assert_eq!(first_column(&wide.stdout), [ALPHA, BETA]);
    // Two executions share 12 characters, so the whole column shows 13.
    let executions = cairn(&url, &["execution", "list"]);
    assert_eq!(
        first_column(&executions.stdout),
        [&ALPHA_1[..13], &ALPHA_2[..13], &BETA_1[..13]]
    );
    let table = String::from_utf8(executions.stdout).unwrap();
    assert!(table.contains("alpha") && !table.contains(ALPHA), "{table}");
    let wide = String::from_utf8(cairn(&url, &["execution", "list", "--wide"]).stdout).unwrap();
    assert!(wide.contains(ALPHA_1) && wide.contains(ALPHA), "{wide}");
    // Within one job's executions the two of alpha still need 13; beta's one needs 8.
    let described = cairn(&url, &["job", "describe", "beta"]);
    let text = String::from_utf8(described.stdout).unwrap();
    let id_line = text.lines().find(|l| l.starts_with("id ")).unwrap();
    assert!(id_line.ends_with(&format!(" {}", &BETA[..8])), "{text}");
    assert!(
        text.contains(&format!("\n{}  beta", &BETA_1[..8])),
        "{text}"
    );

    // Scripts always get whole ids.
    let listed = json(&url, &["execution", "list"]);
    assert_eq!(listed[0]["id"], ALPHA_1);
    assert_eq!(listed[0]["job_id"], ALPHA);
    assert_eq!(listed[0]["job_name"], "alpha");
    assert_eq!(json(&url, &["job", "describe", "beta"])["id"], BETA);
    let yaml = String::from_utf8(cairn(&url, &["job", "list", "-o", "yaml"]).stdout).unwrap();
    assert!(yaml.contains(ALPHA), "{yaml}");
}

#[tokio::test]
async fn a_unique_id_prefix_names_a_job_or_execution_and_an_ambiguous_one_is_refused() {
    let (server, _orchestrator, _data) = close_ids().await;
    let url = server.url();

    // Any case, as long as it matches one id.
    let short = ALPHA[..10].to_ascii_lowercase();
    assert_eq!(json(&url, &["job", "describe", &short])["id"], ALPHA);
    let of_beta = json(&url, &["execution", "list", "--job", &BETA[..10]]);
    assert_eq!(of_beta.as_array().unwrap().len(), 1);
    assert_eq!(of_beta[0]["id"], BETA_1);
    let logs = cairn(&url, &["execution", "logs", &ALPHA_1[..13]]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // A prefix of several ids names them; one of none is unknown; a very short key is
    // only ever a name.
    for args in [
        &["job", "describe", &ALPHA[..9]][..],
        &["execution", "list", "--job", &ALPHA[..9]],
    ] {
        let stderr = refusal(&url, args);
        assert!(
            stderr.contains(&format!("job id prefix \"{}\" is ambiguous", &ALPHA[..9]))
                && stderr.contains(ALPHA)
                && stderr.contains(BETA),
            "{stderr}"
        );
    }
    let stderr = refusal(&url, &["execution", "logs", &ALPHA_1[..12]]);
    assert!(
        stderr.contains("is ambiguous") && stderr.contains(ALPHA_1) && stderr.contains(ALPHA_2),
        "{stderr}"
    );
    assert_eq!(
        refusal(&url, &["job", "describe", "01JD3XQ2Z"]).trim(),
        "error: unknown job \"01JD3XQ2Z\""
    );
    assert_eq!(
        refusal(&url, &["execution", "logs", "01JZ"]).trim(),
        "error: unknown execution \"01JZ\""
    );
    assert_eq!(
        refusal(&url, &["job", "describe", "01J"]).trim(),
        "error: unknown job \"01J\"",
        "shorter than 4 characters: not a prefix"
    );

    // A stop by an ambiguous prefix stores nothing; by a unique one it carries the full id.
    let stderr = refusal(&url, &["job", "stop", &ALPHA[..9]]);
    assert!(stderr.contains("is ambiguous"), "{stderr}");
    assert_eq!(commands_stored(&server).await, 0, "nothing was published");
    let stopped = json(&url, &["job", "stop", &ALPHA[..10]]);
    assert_eq!(stopped["job_id"], ALPHA);
    assert_eq!(stopped["state"], "submitted");
    let command = stopped["command_id"].as_str().unwrap().to_owned();
    wait_until("the stop to be decided", Duration::from_secs(30), || {
        let out = cairn(&url, &["events"]);
        let decided = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["type"] == "CommandAccepted" && e["data"]["command"] == command.as_str());
        let seen = match decided {
            Some(e) if e["data"]["job"] == ALPHA => Ok(()),
            other => Err(format!("{other:?}")),
        };
        async move { seen }
    })
    .await;
}

#[tokio::test]
async fn colour_only_when_asked_for_and_never_with_no_color() {
    let (server, _orchestrator, _data) = close_ids().await;
    let url = server.url();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        succeed(command(&url).args(args).envs(env.iter().copied()))
    };
    let escape = '\u{1b}';
    let list = ["execution", "list"];

    // Piped, as here, output is plain: tests and scripts see no escape codes.
    for args in [
        &list[..],
        &["node", "list"],
        &["job", "list"],
        &["job", "describe", "alpha"],
    ] {
        let text = run(args, &[]);
        assert!(!text.contains(escape), "{args:?}: {text:?}");
    }
    // Where colour is forced (as a terminal would get it), states are coloured...
    let forced = run(&list, &[("CLICOLOR_FORCE", "1")]);
    let (green, red) = ("\u{1b}[32mcompleted", "\u{1b}[31mfailed");
    assert!(forced.contains(green) && forced.contains(red), "{forced:?}");
    // ...except under NO_COLOR, which only an empty value leaves unset.
    let no_color = run(&list, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!no_color.contains(escape), "{no_color:?}");
    let empty = run(&list, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")]);
    assert!(empty.contains(green), "{empty:?}");
    // JSON and YAML never carry colour.
    for format in ["json", "yaml"] {
        let text = run(
            &["execution", "list", "-o", format],
            &[("CLICOLOR_FORCE", "1")],
        );
        assert!(!text.contains(escape), "{format}: {text:?}");
    }
}
