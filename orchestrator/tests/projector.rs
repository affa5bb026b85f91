//! The projector against a real nats-server: random event histories, projected with
//! crashes injected mid-batch and restarts, must equal a plain fold over the same events;
//! a rebuild into a fresh file must answer every query identically; garbage on event
//! subjects is recorded and skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_orchestrator::projection;
use cairn_orchestrator::store::{ExecutionFilter, Incoming, ViewStore};
use cairn_orchestrator::views::MemTables;
use cairn_orchestrator::{Projector, ProjectorConfig, replay_until};
use cairn_shared::codec::Envelope;
use cairn_shared::event::*;
use cairn_shared::spec::{Engine, TaskSpec};
use cairn_shared::*;
use cairn_streams::testing::{NatsServer, wait_until};
use cairn_streams::{Outgoing, Pipeline, Publisher, ReadFrom, Reader, StreamKind, Topology};
use futures::StreamExt;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const NODES: usize = 4;
const JOBS: usize = 3;
const EXECUTIONS: usize = 10;
const COMMANDS: usize = 4;

/// One generated stream message: an event built from small pools of ids (so events refer
/// to each other, and sometimes to entities never created), or garbage bytes.
#[derive(Clone, Debug)]
enum Gen {
    Register {
        node: usize,
        capacity: u32,
        zone: u8,
    },
    NodeState {
        node: usize,
        which: u8,
    },
    Deploy {
        job: usize,
        version: u32,
        count: u32,
    },
    JobState {
        job: usize,
        state: usize,
    },
    Assign {
        execution: usize,
        job: usize,
        node: usize,
        attempt: u32,
    },
    Stop {
        execution: usize,
        node: usize,
    },
    ExecState {
        execution: usize,
        node: usize,
        state: usize,
        exit: Option<i32>,
    },
    Accepted {
        command: usize,
        job: Option<usize>,
    },
    Rejected {
        command: usize,
    },
    InputRejected {
        seq: u64,
    },
    Garbage {
        bytes: Vec<u8>,
        on_node: bool,
    },
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        3 => (0..NODES, 0..4u32, 0..2u8).prop_map(|(node, capacity, zone)| Gen::Register { node, capacity, zone }),
        2 => (0..NODES, 0..3u8).prop_map(|(node, which)| Gen::NodeState { node, which }),
        2 => (0..JOBS, 1..4u32, 1..5u32).prop_map(|(job, version, count)| Gen::Deploy { job, version, count }),
        1 => (0..JOBS, 0..JobState::ALL.len()).prop_map(|(job, state)| Gen::JobState { job, state }),
        4 => (0..EXECUTIONS, 0..JOBS, 0..NODES, 1..3u32)
            .prop_map(|(execution, job, node, attempt)| Gen::Assign { execution, job, node, attempt }),
        1 => (0..EXECUTIONS, 0..NODES).prop_map(|(execution, node)| Gen::Stop { execution, node }),
        5 => (0..EXECUTIONS, 0..NODES, 0..ExecutionState::ALL.len(), proptest::option::of(-1..3i32))
            .prop_map(|(execution, node, state, exit)| Gen::ExecState { execution, node, state, exit }),
        1 => (0..COMMANDS, proptest::option::of(0..JOBS)).prop_map(|(command, job)| Gen::Accepted { command, job }),
        1 => (0..COMMANDS).prop_map(|command| Gen::Rejected { command }),
        1 => (1..50u64).prop_map(|seq| Gen::InputRejected { seq }),
        1 => (proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())
            .prop_map(|(bytes, on_node)| Gen::Garbage { bytes, on_node }),
    ]
}

/// Fixed id pools, so a history can be replayed deterministically.
struct Pools {
    nodes: Vec<NodeId>,
    jobs: Vec<JobId>,
    executions: Vec<ExecutionId>,
    commands: Vec<CommandId>,
}

impl Pools {
    fn new() -> Self {
        let id = |n: usize| ulid::Ulid::from_parts(1_800_000_000_000 + n as u64, n as u128);
        Self {
            nodes: (0..NODES)
                .map(|i| NodeId::new(format!("node-{i}")).unwrap())
                .collect(),
            jobs: (0..JOBS).map(|i| JobId::from_ulid(id(100 + i))).collect(),
            executions: (0..EXECUTIONS)
                .map(|i| ExecutionId::from_ulid(id(200 + i)))
                .collect(),
            commands: (0..COMMANDS)
                .map(|i| CommandId::from_ulid(id(300 + i)))
                .collect(),
        }
    }
}

fn task() -> TaskSpec {
    TaskSpec {
        engine: Engine::Exec,
        command: vec!["true".into()],
        args: vec![],
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    }
}

/// The subject and payload of a generated message, as it is published.
fn render(pools: &Pools, index: usize, g: &Gen) -> (String, Bytes) {
    let body: Event = match g.clone() {
        Gen::Register {
            node,
            capacity,
            zone,
        } => NodeRegistered {
            node: pools.nodes[node].clone(),
            labels: BTreeMap::from([("zone".to_owned(), zone.to_string())]),
            capacity: Some(capacity),
            resources: None,
        }
        .into(),
        Gen::NodeState { node, which } => {
            let node = pools.nodes[node].clone();
            match which {
                0 => NodeDisconnected { node }.into(),
                1 => NodeReconnected { node }.into(),
                _ => NodeLost { node }.into(),
            }
        }
        Gen::Deploy {
            job,
            version,
            count,
        } => JobDeployed {
            job: pools.jobs[job],
            version,
            spec: JobSpec {
                name: format!("job-{job}"),
                job_type: JobType::Batch,
                count: Some(count),
                selector: BTreeMap::new(),
                constraints: vec![],
                resources: None,
                task: task(),
                disconnect: None,
                restart: None,
                update: None,
            },
            reverted_to: None,
        }
        .into(),
        Gen::JobState { job, state } => JobStateChanged {
            job: pools.jobs[job],
            state: JobState::ALL[state],
            reason: None,
        }
        .into(),
        Gen::Assign {
            execution,
            job,
            node,
            attempt,
        } => ExecutionAssigned {
            execution: pools.executions[execution],
            job: pools.jobs[job],
            job_name: format!("job-{job}"),
            version: 1,
            node: pools.nodes[node].clone(),
            attempt,
            task: task(),
            resources: None,
            delay: None,
            health: None,
        }
        .into(),
        Gen::Stop { execution, node } => ExecutionStopRequested {
            execution: pools.executions[execution],
            node: pools.nodes[node].clone(),
            reason: "stop".into(),
            attempt: 1,
        }
        .into(),
        Gen::ExecState {
            execution,
            node,
            state,
            exit,
        } => ExecutionStateChanged {
            execution: pools.executions[execution],
            node: pools.nodes[node].clone(),
            state: ExecutionState::ALL[state],
            exit_code: exit,
            reason: exit.map(|c| format!("exit {c}")),
        }
        .into(),
        Gen::Accepted { command, job } => CommandAccepted {
            command: pools.commands[command],
            job: job.map(|j| pools.jobs[j]),
            version: None,
        }
        .into(),
        Gen::Rejected { command } => CommandRejected {
            command: pools.commands[command],
            reason: "no".into(),
        }
        .into(),
        Gen::InputRejected { seq } => InputRejected {
            stream: "CAIRN_REPORT".into(),
            seq: Seq(seq),
            reason: "garbage".into(),
        }
        .into(),
        Gen::Garbage { bytes, on_node } => {
            let subject = if on_node {
                "cairn.evt.node.node-0"
            } else {
                "cairn.evt.input"
            };
            return (subject.to_owned(), Bytes::from(bytes));
        }
    };
    let id = EventId::from_ulid(ulid::Ulid::from_parts(
        1_800_000_000_000,
        1_000_000 + index as u128,
    ));
    let envelope = Envelope::new(id, None, Timestamp(1_800_000_000_000 + index as u64), body);
    // The projector reads the subject of undecodable events only: any job will do for an
    // execution's (generated histories do not keep one job per execution anyway).
    let out = Outgoing::event_with(&envelope, |_| Some(pools.jobs[0])).unwrap();
    (out.subject.to_string(), out.payload)
}

/// Publishes a history and returns it as the projector will see it. `first` is the
/// history's position in the stream (0 for a fresh stream), which numbers its messages.
async fn publish(
    publisher: &Publisher,
    pools: &Pools,
    history: &[Gen],
    first: usize,
) -> Vec<Incoming> {
    let mut pipeline = Pipeline::new(publisher.clone(), Pipeline::DEFAULT_WINDOW);
    let mut expected = Vec::with_capacity(history.len());
    for (offset, g) in history.iter().enumerate() {
        let i = first + offset;
        let (subject, payload) = render(pools, i, g);
        expected.push(Incoming::decode(Seq(i as u64 + 1), &subject, &payload));
        let out = Outgoing {
            subject: subject.into(),
            msg_id: format!("m{i}"),
            payload,
            expect: cairn_streams::Expect::Nothing,
        };
        if let Some(ack) = pipeline.send(out).await.unwrap() {
            ack.unwrap();
        }
    }
    while let Some(ack) = pipeline.next().await {
        ack.unwrap();
    }
    expected
}

/// The plain fold: every message applied in order to in-memory tables.
fn fold(messages: &[Incoming]) -> MemTables {
    let mut mem = MemTables::default();
    for m in messages {
        projection::apply(&mut mem, m.seq, &m.subject, &m.message).unwrap();
    }
    mem
}

async fn fresh_streams(server: &NatsServer) -> (Publisher, Reader) {
    let js = cairn_streams::jetstream(server.connect().await);
    // Only the streams this test writes: recreating the 64 assignment shards for every
    // case would be most of its time.
    for kind in [
        StreamKind::Commands,
        StreamKind::Events,
        StreamKind::Reports,
    ] {
        let _ = js.delete_stream(kind.name()).await;
        Topology::default()
            .create_if_missing(&js, kind)
            .await
            .unwrap();
    }
    (Publisher::new(js.clone()), Reader::new(js))
}

/// Reads `count` messages of the event stream starting at `from`.
async fn read_from(reader: &Reader, from: Seq, count: usize) -> Vec<Incoming> {
    let stream = reader
        .read(StreamKind::Events, ReadFrom::Seq(from), None)
        .await
        .unwrap();
    let raw: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        stream.take(count).collect::<Vec<_>>(),
    )
    .await
    .expect("reading the event stream");
    raw.into_iter()
        .map(|r| {
            let r = r.unwrap();
            Incoming::decode(r.seq, r.subject.as_str(), &r.payload)
        })
        .collect()
}

/// A crash plan: batch sizes to take and, for each, whether to crash partway through.
fn plan_strategy() -> impl Strategy<Value = Vec<(usize, Option<usize>)>> {
    proptest::collection::vec(
        (1..40usize, proptest::option::weighted(0.4, 0..40usize)),
        1..30,
    )
}

#[test]
fn projection_with_crashes_equals_a_fold() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pools = Pools::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(gen_strategy(), 1..160),
        plan_strategy(),
    );
    runner
        .run(&strategy, |(history, plan)| {
            rt.block_on(async {
                let (publisher, reader) = fresh_streams(&server).await;
                let messages = publish(&publisher, &pools, &history, 0).await;
                let expected = fold(&messages);
                let last = Seq(messages.len() as u64);

                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("views.redb");
                let mut plan = plan.into_iter().cycle();
                loop {
                    // Every iteration is a process start: open the file, resume from its
                    // checkpoint, read the stream from there.
                    let store = ViewStore::open(&path).unwrap();
                    let applied = store.applied_seq().unwrap();
                    if applied == last {
                        let got = store.read().unwrap().dump().unwrap();
                        prop_assert_eq!(got, expected);
                        return Ok(());
                    }
                    let (size, crash) = plan.next().unwrap();
                    let size = size.min((last.0 - applied.0) as usize);
                    let batch = read_from(&reader, applied.next(), size).await;
                    match crash {
                        Some(at) if at < size => store.apply_batch_and_crash(&batch, at).unwrap(),
                        _ => {
                            store.apply_batch(&batch).unwrap();
                        }
                    }
                    // Replaying an overlapping batch after the checkpoint is harmless.
                    store.apply_batch(&batch[..batch.len().min(1)]).unwrap();
                }
            })
        })
        .unwrap();
}

/// A small but complete history: nodes, a job with two versions, executions in every
/// state, a command of each outcome, garbage.
fn sample_history() -> Vec<Gen> {
    let mut h = vec![
        Gen::Register {
            node: 0,
            capacity: 4,
            zone: 0,
        },
        Gen::Register {
            node: 1,
            capacity: 2,
            zone: 1,
        },
        Gen::Register {
            node: 2,
            capacity: 1,
            zone: 1,
        },
        Gen::Deploy {
            job: 0,
            version: 1,
            count: 3,
        },
        Gen::Accepted {
            command: 0,
            job: Some(0),
        },
        Gen::Garbage {
            bytes: b"\xc1 not msgpack".to_vec(),
            on_node: true,
        },
        Gen::Deploy {
            job: 1,
            version: 1,
            count: 1,
        },
        Gen::Rejected { command: 1 },
    ];
    for e in 0..EXECUTIONS {
        h.push(Gen::Assign {
            execution: e,
            job: e % 2,
            node: e % 3,
            attempt: 1,
        });
    }
    h.push(Gen::Garbage {
        bytes: vec![],
        on_node: false,
    });
    for e in 0..EXECUTIONS {
        h.push(Gen::ExecState {
            execution: e,
            node: e % 3,
            state: e % ExecutionState::ALL.len(),
            exit: Some(0),
        });
    }
    h.extend([
        Gen::NodeState { node: 2, which: 0 },
        Gen::NodeState { node: 1, which: 2 },
        Gen::Deploy {
            job: 0,
            version: 2,
            count: 2,
        },
        Gen::JobState { job: 0, state: 2 },
        Gen::Stop {
            execution: 3,
            node: 0,
        },
        Gen::InputRejected { seq: 7 },
    ]);
    h
}

/// Every query the CLI can ask, answered as JSON.
fn answers(store: &ViewStore) -> serde_json::Value {
    let r = store.read().unwrap();
    let pools = Pools::new();
    serde_json::json!({
        "applied": r.applied_seq().unwrap(),
        "nodes": r.nodes().unwrap(),
        "jobs": r.jobs().unwrap(),
        "job_by_name": r.job("job-0").unwrap(),
        "job_by_id": r.job(&pools.jobs[1].to_string()).unwrap(),
        "executions": r.executions(&ExecutionFilter::default()).unwrap(),
        "by_job": r.executions(&ExecutionFilter { job: Some(pools.jobs[0]), ..Default::default() }).unwrap(),
        "by_node": r.executions(&ExecutionFilter { node: Some(pools.nodes[1].clone()), ..Default::default() }).unwrap(),
        "running": r.executions(&ExecutionFilter { state: Some(ExecutionState::Running), ..Default::default() }).unwrap(),
        "outcome": r.command_outcome(pools.commands[1]).unwrap(),
        "rejected": r.rejected_inputs().unwrap(),
        "undecodable": r.undecodable().unwrap(),
    })
}

#[tokio::test]
async fn the_service_resumes_after_restarts_and_a_rebuild_answers_identically() {
    let server = NatsServer::start();
    let (publisher, reader) = fresh_streams(&server).await;
    let pools = Pools::new();
    let history = sample_history();
    let half = history.len() / 2;
    let messages = publish(&publisher, &pools, &history[..half], 0).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let config = ProjectorConfig {
        batch_max: 3,
        queue: 4,
    };

    // First run: project the first half, then stop.
    {
        let store = Arc::new(ViewStore::open(&path).unwrap());
        let (projector, mut handle) =
            Projector::new(config.clone(), reader.clone(), store).unwrap();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(projector.run(shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(20), handle.wait_for(Seq(half as u64)))
            .await
            .unwrap()
            .unwrap();
        shutdown.cancel();
        run.await.unwrap().unwrap();
    }

    // Second run: started before the rest is published; it follows the stream live.
    let store = Arc::new(ViewStore::open(&path).unwrap());
    let (projector, handle) =
        Projector::new(config.clone(), reader.clone(), Arc::clone(&store)).unwrap();
    assert_eq!(
        handle.applied(),
        Seq(half as u64),
        "resumes from its checkpoint"
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(projector.run(shutdown.clone()));
    let mut all = messages;
    all.extend(publish(&publisher, &pools, &history[half..], half).await);
    let last = Seq(history.len() as u64);
    wait_until(
        "the live projector to reach the end",
        Duration::from_secs(20),
        || {
            let h = handle.clone();
            async move {
                if h.applied() >= last {
                    Ok(())
                } else {
                    Err(h.applied())
                }
            }
        },
    )
    .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let live = answers(&store);
    assert_eq!(
        store.read().unwrap().dump().unwrap(),
        fold(&all),
        "live views equal the fold"
    );
    // The sample really exercises the views: guard against a vacuous comparison.
    assert_eq!(live["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(live["undecodable"].as_array().unwrap().len(), 2);
    assert_eq!(live["job_by_name"]["version"], 2);
    assert!(!live["by_job"].as_array().unwrap().is_empty());

    // Delete the file and rebuild: byte-for-byte the same answers.
    drop(store);
    std::fs::remove_file(&path).unwrap();
    let rebuilt = Arc::new(ViewStore::open(&path).unwrap());
    let applied = replay_until(config, reader, Arc::clone(&rebuilt), last)
        .await
        .unwrap();
    assert_eq!(applied, last);
    assert_eq!(
        serde_json::to_vec(&answers(&rebuilt)).unwrap(),
        serde_json::to_vec(&live).unwrap()
    );
}

#[tokio::test]
async fn garbage_on_event_subjects_is_recorded_and_skipped() {
    let server = NatsServer::start();
    let (publisher, reader) = fresh_streams(&server).await;
    let pools = Pools::new();
    let history = vec![
        Gen::Garbage {
            bytes: vec![0xff; 16],
            on_node: true,
        },
        Gen::Register {
            node: 0,
            capacity: 2,
            zone: 0,
        },
        Gen::Garbage {
            bytes: b"{\"json\": true}".to_vec(),
            on_node: false,
        },
        Gen::Garbage {
            bytes: vec![],
            on_node: true,
        },
        Gen::Register {
            node: 1,
            capacity: 3,
            zone: 1,
        },
    ];
    publish(&publisher, &pools, &history, 0).await;
    // A message of a type this build does not know, written by a "newer" build.
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        type_name: &'a str,
        v: u16,
        id: EventId,
        at: Timestamp,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    }
    let future = rmp_serde::to_vec_named(&Wire {
        type_name: "NodeTeleported",
        v: 1,
        id: EventId::generate(),
        at: Timestamp(9),
        body: vec![0x80],
    })
    .unwrap();
    publisher
        .append(Outgoing {
            subject: "cairn.evt.node.node-0".into(),
            msg_id: "future".into(),
            payload: future.into(),
            expect: cairn_streams::Expect::Nothing,
        })
        .await
        .unwrap();
    // One good event after it; its returned stream position is not needed.
    publish(
        &publisher,
        &pools,
        &[Gen::Register {
            node: 2,
            capacity: 1,
            zone: 0,
        }],
        99,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ViewStore::open(dir.path().join("views.redb")).unwrap());
    let applied = replay_until(
        ProjectorConfig::default(),
        reader,
        Arc::clone(&store),
        Seq(7),
    )
    .await
    .unwrap();
    assert_eq!(applied, Seq(7));
    let r = store.read().unwrap();
    let undecodable = r.undecodable().unwrap();
    assert_eq!(
        undecodable.iter().map(|u| u.seq).collect::<Vec<_>>(),
        vec![Seq(1), Seq(3), Seq(4), Seq(6)]
    );
    assert!(
        undecodable[3].reason.contains("NodeTeleported"),
        "{:?}",
        undecodable[3]
    );
    assert_eq!(undecodable[0].subject, "cairn.evt.node.node-0");
    // Projection continued past every bad message.
    let nodes: Vec<_> = r
        .nodes()
        .unwrap()
        .into_iter()
        .map(|n| (n.node.id.to_string(), n.node.capacity))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("node-0".to_owned(), Some(2)),
            ("node-1".to_owned(), Some(3)),
            ("node-2".to_owned(), Some(1))
        ]
    );
}

/// Views written in an earlier shape are emptied at open, checkpoint included, so the
/// projector folds them again from the event stream; a file of the current shape is kept.
#[test]
fn views_of_an_earlier_shape_are_emptied_to_be_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let registered = Envelope::new(
        EventId::generate(),
        None,
        Timestamp::now(),
        Event::from(NodeRegistered {
            node: NodeId::new("n1").unwrap(),
            labels: BTreeMap::new(),
            capacity: Some(2),
            resources: None,
        }),
    );
    let payload = registered.encode().unwrap();
    {
        let store = ViewStore::open(&path).unwrap();
        store
            .apply_batch(&[Incoming::decode(Seq(1), "cairn.evt.node.n1", &payload)])
            .unwrap();
    }
    let store = ViewStore::open(&path).unwrap();
    assert_eq!(
        store.applied_seq().unwrap(),
        Seq(1),
        "the current shape is kept"
    );
    assert_eq!(store.read().unwrap().nodes().unwrap().len(), 1);
    drop(store);

    // As a build before the shape was recorded left it.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.remove("views_schema").unwrap();
        }
        txn.commit().unwrap();
    }
    let store = ViewStore::open(&path).unwrap();
    assert_eq!(store.applied_seq().unwrap(), Seq(0));
    assert!(store.read().unwrap().nodes().unwrap().is_empty());
}
