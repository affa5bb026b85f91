//! Fault test (slow): a real `cairn orchestrator` process is SIGKILLed again and again
//! while it projects a long event stream, and restarted on the same data directory. Its
//! views must end equal to a plain fold over the stream.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn_orchestrator::projection;
use cairn_orchestrator::query::{Answer, endpoint};
use cairn_orchestrator::store::{Incoming, NodeSummary, ViewStore};
use cairn_orchestrator::views::MemTables;
use cairn_shared::codec::Envelope;
use cairn_shared::event::{ExecutionAssigned, ExecutionStateChanged, NodeRegistered};
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::*;
use cairn_streams::testing::{ExecutionJobs, NatsServer, wait_until};
use cairn_streams::{Pipeline, Publisher, ReadFrom, Reader, StreamKind, Topology};
use futures::StreamExt;

const EVENTS: u64 = 40_000;
const KILLS: u64 = 6;

fn orchestrator(url: &str, data: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--nats", url, "orchestrator", "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn events() -> impl Iterator<Item = Event> {
    let nodes: Vec<NodeId> = (0..20)
        .map(|i| NodeId::new(format!("n{i}")).unwrap())
        .collect();
    let task = TaskSpec {
        engine: Engine::Exec,
        command: vec!["true".into()],
        args: vec![],
        env: Default::default(),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    };
    let job = JobId::generate();
    let registrations: Vec<Event> = nodes
        .iter()
        .map(|n| {
            NodeRegistered {
                node: n.clone(),
                labels: Default::default(),
                capacity: Some(1_000),
                resources: None,
            }
            .into()
        })
        .collect();
    let work = (0u64..).flat_map(move |i| {
        let execution = ExecutionId::generate();
        let node = nodes[(i % 20) as usize].clone();
        let assigned: Event = ExecutionAssigned {
            execution,
            job,
            job_name: "fault".into(),
            version: 1,
            node: node.clone(),
            attempt: 1,
            task: task.clone(),
            resources: None,
            delay: None,
            health: None,
        }
        .into();
        let done: Event = ExecutionStateChanged {
            execution,
            node,
            state: if i % 3 == 0 {
                ExecutionState::Failed
            } else {
                ExecutionState::Completed
            },
            exit_code: Some((i % 3) as i32),
            reason: None,
        }
        .into();
        [assigned, done]
    });
    registrations.into_iter().chain(work)
}

/// The sequence the running orchestrator's views have reached, if it answers.
async fn applied(client: &async_nats::Client) -> Result<Seq, String> {
    let reply = client
        .request(cairn_streams::subjects::query(endpoint::NODES), "".into())
        .await
        .map_err(|e| e.to_string())?;
    let answer: Answer<Vec<NodeSummary>> =
        serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
    Ok(answer.applied_seq)
}

#[tokio::test]
async fn fault_orchestrator_killed_repeatedly_while_projecting_ends_equal_to_a_fold() {
    let server = NatsServer::start();
    let url = server.url();
    let client = server.connect().await;
    let js = cairn_streams::jetstream(client.clone());
    Topology::default().ensure(&js).await.unwrap();
    let mut jobs = ExecutionJobs::default();
    let outgoing = events().take(EVENTS as usize).enumerate().map(|(i, body)| {
        let at = Timestamp(1_800_000_000_000 + i as u64);
        jobs.outgoing(&Envelope::new(EventId::generate(), None, at, body))
            .unwrap()
    });
    Pipeline::new(Publisher::new(js.clone()), Pipeline::DEFAULT_WINDOW)
        .append_all(outgoing)
        .await
        .unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut kills = Vec::new();
    for round in 1..=KILLS {
        let mut child = orchestrator(&url, data.path());
        // Kill it once it has made progress past this round's mark (or at any point after
        // start-up if it is already there): each kill lands mid-stream.
        let mark = Seq(EVENTS * round / (KILLS + 2));
        let seen = wait_until(
            "the orchestrator to pass its mark",
            Duration::from_secs(60),
            || {
                let client = client.clone();
                async move {
                    match applied(&client).await {
                        Ok(seq) if seq >= mark => Ok(seq),
                        other => Err(other),
                    }
                }
            },
        )
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills.push(seen);
    }
    eprintln!("killed at applied sequences {kills:?} of {EVENTS}");

    let mut child = orchestrator(&url, data.path());
    wait_until(
        "the restarted orchestrator to reach the end",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                match applied(&client).await {
                    Ok(seq) if seq == Seq(EVENTS) => Ok(()),
                    other => Err(other),
                }
            }
        },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    // The plain fold over what the stream holds.
    let reader = Reader::new(js);
    let messages = reader
        .read(StreamKind::Events, ReadFrom::Start, None)
        .await
        .unwrap();
    let raw: Vec<_> = messages.take(EVENTS as usize).collect().await;
    let mut fold = MemTables::default();
    for r in raw {
        let r = r.unwrap();
        let m = Incoming::decode(r.seq, r.subject.as_str(), &r.payload);
        projection::apply(&mut fold, m.seq, &m.subject, &m.message).unwrap();
    }
    let store = Arc::new(ViewStore::open(data.path().join("views.redb")).unwrap());
    let views = store.read().unwrap();
    assert_eq!(views.applied_seq().unwrap(), Seq(EVENTS));
    assert!(views.undecodable().unwrap().is_empty());
    assert_eq!(
        views.dump().unwrap(),
        fold,
        "views after {KILLS} SIGKILLs differ from the fold"
    );
}
