//! The event log against a real nats-server: set-up, ordered read-back, de-duplication,
//! optimistic concurrency, pipelining, replay bounds, bounded reads of a few subjects, and
//! execution events stored under their job and node.

use std::time::Duration;

use async_nats::jetstream::stream::RetentionPolicy;
use cairn_shared::codec::Envelope;
use cairn_shared::event::{Event, NodeRegistered};
use cairn_shared::{EventId, NodeId, Seq, Timestamp};
use cairn_streams::subjects::Shard;
use cairn_streams::testing::NatsServer;
use cairn_streams::{
    Error, Expect, Outgoing, Pipeline, Publisher, ReadFrom, Reader, StreamKind, Topology,
    UNSHARDED_ASSIGNMENTS,
};
use futures::StreamExt;

fn event(node: &str, capacity: u32) -> Envelope<Event> {
    Envelope::new(
        EventId::generate(),
        None,
        Timestamp(1_800_000_000_000 + u64::from(capacity)),
        NodeRegistered {
            node: NodeId::new(node).unwrap(),
            labels: Default::default(),
            capacity: Some(capacity),
            resources: None,
        }
        .into(),
    )
}

async fn setup(server: &NatsServer) -> (Publisher, Reader) {
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    (Publisher::new(js.clone()), Reader::new(js))
}

async fn read_n(reader: &Reader, from: ReadFrom, n: usize) -> Vec<cairn_streams::RawMessage> {
    let messages = reader.read(StreamKind::Events, from, None).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        messages.take(n).map(Result::unwrap).collect(),
    )
    .await
    .expect("reading back in time")
}

#[tokio::test]
async fn set_up_is_idempotent_and_sets_consumer_limits() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    let topology = Topology::default();
    // Two processes starting at once, then a restart.
    let (a, b) = tokio::join!(topology.ensure(&js), topology.ensure(&js));
    a.unwrap();
    b.unwrap();
    topology.ensure(&js).await.unwrap();
    assert_eq!(StreamKind::all().count(), 4 + usize::from(Shard::COUNT));
    for kind in StreamKind::all() {
        let mut stream = js.get_stream(kind.name()).await.unwrap();
        let config = &stream.info().await.unwrap().config;
        assert!(
            config.max_consumers > 0,
            "{} has no explicit consumer limit",
            kind.name()
        );
    }
    let shard = StreamKind::Assignments(Shard::all().last().unwrap());
    let mut assign = js.get_stream(shard.name()).await.unwrap();
    let config = assign.info().await.unwrap().config.clone();
    assert_eq!(config.max_consumers, 20_000);
    assert_eq!(config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(config.subjects, ["cairn.assign.63.*"]);

    // A changed setting is applied to the existing stream on the next start.
    let bigger = Topology {
        max_nodes: 30_000,
        ..Topology::default()
    };
    bigger.ensure(&js).await.unwrap();
    assert_eq!(assign.info().await.unwrap().config.max_consumers, 30_000);
}

#[tokio::test]
async fn the_unsharded_assignment_stream_is_retired_only_when_empty() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    let legacy = |subjects: &str| async_nats::jetstream::stream::Config {
        name: UNSHARDED_ASSIGNMENTS.into(),
        subjects: vec![subjects.into()],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    js.create_stream(legacy("cairn.assign.*")).await.unwrap();
    js.publish("cairn.assign.edge-1", "work".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Work stored by an older version is never stranded: set-up refuses, naming it.
    let refused = Topology::default().ensure(&js).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Setup { stream, reason, retryable: false }
            if stream == UNSHARDED_ASSIGNMENTS && reason.contains("holds 1 assignments")),
        "{refused}"
    );
    assert_eq!(
        js.get_stream(UNSHARDED_ASSIGNMENTS)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        1,
        "the refusal touched nothing"
    );

    // Once its edges took the work, the next start removes it and declares the shards.
    js.delete_stream(UNSHARDED_ASSIGNMENTS).await.unwrap();
    js.create_stream(legacy("cairn.assign.*")).await.unwrap();
    Topology::default().ensure(&js).await.unwrap();
    assert!(js.get_stream(UNSHARDED_ASSIGNMENTS).await.is_err());
    for kind in StreamKind::assignments() {
        js.get_stream(kind.name()).await.unwrap();
    }
}

#[tokio::test]
async fn create_if_missing_creates_a_missing_stream_and_leaves_an_existing_one_alone() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    let small = Topology {
        max_nodes: 10,
        ..Topology::default()
    };
    let shard = StreamKind::Assignments(Shard::all().next().unwrap());
    small.create_if_missing(&js, shard).await.unwrap();
    let mut assign = js.get_stream(shard.name()).await.unwrap();
    assert_eq!(assign.info().await.unwrap().config.max_consumers, 10);
    Topology::default()
        .create_if_missing(&js, shard)
        .await
        .unwrap();
    assert_eq!(
        assign.info().await.unwrap().config.max_consumers,
        10,
        "an existing stream keeps its settings"
    );
}

#[tokio::test]
async fn appended_events_read_back_in_order_and_identical() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let sent: Vec<_> = (0..50).map(|i| event(&format!("n{}", i % 7), i)).collect();
    for (i, env) in sent.iter().enumerate() {
        let appended = publisher
            .append(Outgoing::event(env).unwrap())
            .await
            .unwrap();
        assert_eq!(
            appended,
            cairn_streams::Appended {
                seq: Seq(i as u64 + 1),
                duplicate: false
            }
        );
    }
    let read = read_n(&reader, ReadFrom::Start, 50).await;
    for (i, (raw, env)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(raw.seq, Seq(i as u64 + 1));
        assert_eq!(raw.subject.as_str(), format!("cairn.evt.node.n{}", i % 7));
        assert_eq!(&Envelope::<Event>::decode(&raw.payload).unwrap(), env);
    }
    // Reading from the middle starts exactly there.
    let tail = read_n(&reader, ReadFrom::Seq(Seq(41)), 10).await;
    assert_eq!(tail.first().unwrap().seq, Seq(41));
    assert_eq!(tail.last().unwrap().seq, Seq(50));
}

#[tokio::test]
async fn the_same_message_id_is_stored_once() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let env = event("n1", 1);
    let first = publisher
        .append(Outgoing::event(&env).unwrap())
        .await
        .unwrap();
    let again = publisher
        .append(Outgoing::event(&env).unwrap())
        .await
        .unwrap();
    assert_eq!(
        first,
        cairn_streams::Appended {
            seq: Seq(1),
            duplicate: false
        }
    );
    assert_eq!(
        again,
        cairn_streams::Appended {
            seq: Seq(1),
            duplicate: true
        }
    );
    let other = publisher
        .append(Outgoing::event(&event("n1", 2)).unwrap())
        .await
        .unwrap();
    assert_eq!(other.seq, Seq(2));
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(2)
    );
}

#[tokio::test]
async fn two_writers_with_the_same_expectation_one_wins() {
    let server = NatsServer::start();
    let (_, reader) = setup(&server).await;
    // Two independent connections, as two orchestrators would have.
    let a = Publisher::new(cairn_streams::jetstream(server.connect().await));
    let b = Publisher::new(cairn_streams::jetstream(server.connect().await));
    a.append(Outgoing::event(&event("n0", 0)).unwrap())
        .await
        .unwrap();

    for round in 0..20u64 {
        let expected = Seq(round + 1);
        let ea = Outgoing::event(&event("na", 1))
            .unwrap()
            .expect(Expect::LastSeq(expected));
        let eb = Outgoing::event(&event("nb", 2))
            .unwrap()
            .expect(Expect::LastSeq(expected));
        let (ra, rb) = tokio::join!(a.append(ea), b.append(eb));
        let (won, lost) = match (ra, rb) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        assert_eq!(won.seq, expected.next());
        match lost {
            Error::Conflict {
                expected: e,
                actual,
            } => {
                assert_eq!(e, expected);
                assert_eq!(actual, Some(expected.next()));
            }
            other => panic!("round {round}: the loser should see a conflict, got {other:?}"),
        }
    }
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(21)
    );
}

#[tokio::test]
async fn per_subject_expectations_guard_one_entity() {
    let server = NatsServer::start();
    let (publisher, _) = setup(&server).await;
    // Zero means "this entity has no events yet".
    let first = Outgoing::event(&event("solo", 1))
        .unwrap()
        .expect(Expect::LastSubjectSeq(Seq::ZERO));
    assert_eq!(publisher.append(first).await.unwrap().seq, Seq(1));
    // Another entity's event moves the stream, not this subject.
    publisher
        .append(Outgoing::event(&event("other", 1)).unwrap())
        .await
        .unwrap();
    let stale = Outgoing::event(&event("solo", 2))
        .unwrap()
        .expect(Expect::LastSubjectSeq(Seq::ZERO));
    assert!(matches!(
        publisher.append(stale).await,
        Err(Error::Conflict {
            expected: Seq(0),
            actual: Some(Seq(1))
        })
    ));
    let fresh = Outgoing::event(&event("solo", 3))
        .unwrap()
        .expect(Expect::LastSubjectSeq(Seq(1)));
    assert_eq!(publisher.append(fresh).await.unwrap().seq, Seq(3));
}

#[tokio::test]
async fn pipelined_appends_chain_their_expectations() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    // Far more appends than the connection's ack slots: the pipeline bounds its window.
    const N: u64 = 3 * Publisher::MAX_IN_FLIGHT as u64;
    let mut pipeline = Pipeline::new(publisher.clone(), Pipeline::DEFAULT_WINDOW);
    let mut acked = Vec::with_capacity(N as usize);
    for i in 0..N {
        let out = Outgoing::event(&event("p", i as u32))
            .unwrap()
            .expect(Expect::LastSeq(Seq(i)));
        if let Some(ack) = pipeline.send(out).await.unwrap() {
            acked.push(ack.unwrap().seq);
        }
    }
    while let Some(ack) = pipeline.next().await {
        acked.push(ack.unwrap().seq);
    }
    assert_eq!(acked, (1..=N).map(Seq).collect::<Vec<_>>());
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(N)
    );

    // A chain built on a sequence older than the chain is long stores nothing. (A chain is
    // not atomic: one whose tail happened to expect the current sequence would store that
    // tail. All-or-nothing needs an atomic batch.)
    let mut stale = Vec::new();
    for i in 0..10 {
        let out = Outgoing::event(&event("p", 0))
            .unwrap()
            .expect(Expect::LastSeq(Seq(N - 20 + i)));
        stale.push(publisher.send(out).await.unwrap());
    }
    for ack in stale {
        assert!(matches!(ack.await, Err(Error::Conflict { .. })));
    }
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(N)
    );
}

#[tokio::test]
async fn reads_start_at_a_time_and_refuse_trimmed_ranges() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    for i in 0..5 {
        publisher
            .append(Outgoing::event(&event("t", i)).unwrap())
            .await
            .unwrap();
    }
    let first_batch = read_n(&reader, ReadFrom::Start, 5).await;
    let cut = first_batch.last().unwrap().stored_at;
    // Stored times have millisecond resolution here: make sure the next batch is later.
    cairn_streams::testing::wait_until(
        "the clock to move past the first batch",
        Duration::from_secs(2),
        || async {
            if cairn_shared::Timestamp::now() > cut {
                Ok(())
            } else {
                Err(cut)
            }
        },
    )
    .await;
    for i in 5..8 {
        publisher
            .append(Outgoing::event(&event("t", i)).unwrap())
            .await
            .unwrap();
    }
    let later = read_n(
        &reader,
        ReadFrom::Time(cairn_shared::Timestamp(cut.0 + 1)),
        3,
    )
    .await;
    assert_eq!(
        later.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![Seq(6), Seq(7), Seq(8)]
    );
    // "As of" a time: the last message stored at or before it.
    assert_eq!(
        reader.last_at(StreamKind::Events, cut).await.unwrap(),
        Seq(5)
    );
    assert_eq!(
        reader
            .last_at(StreamKind::Events, Timestamp(0))
            .await
            .unwrap(),
        Seq::ZERO
    );
    assert_eq!(
        reader
            .last_at(StreamKind::Events, Timestamp::now())
            .await
            .unwrap(),
        Seq(8)
    );

    // Trim the stream (as limits would) and ask for what is gone.
    let js = publisher.context();
    js.get_stream(StreamKind::Events.name())
        .await
        .unwrap()
        .purge()
        .sequence(7)
        .await
        .unwrap();
    match reader
        .read(StreamKind::Events, ReadFrom::Seq(Seq(2)), None)
        .await
    {
        Err(Error::Trimmed {
            requested, first, ..
        }) => {
            assert_eq!((requested, first), (Seq(2), Seq(7)));
        }
        Err(other) => panic!("expected a trimmed-range refusal, got {other:?}"),
        Ok(_) => panic!("expected a trimmed-range refusal, got a reader"),
    }
}

#[tokio::test]
async fn node_consumers_are_created_once_and_never_expire() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let node = NodeId::new("edge-9").unwrap();
    let (a, b) = tokio::join!(
        cairn_streams::ensure_node_consumer(&js, &node),
        cairn_streams::ensure_node_consumer(&js, &node)
    );
    a.unwrap();
    b.unwrap();
    cairn_streams::ensure_node_consumer(&js, &node)
        .await
        .unwrap();
    assert_eq!(StreamKind::assignments_of(&node).name(), "CAIRN_ASSIGN_14");
    let stream = js
        .get_stream(StreamKind::assignments_of(&node).name())
        .await
        .unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("node-edge-9").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.filter_subject, "cairn.assign.14.edge-9");
    assert_eq!(info.config.inactive_threshold, Duration::ZERO);
    assert!(
        info.config.memory_storage,
        "the work queue, not the consumer, keeps work"
    );
    assert_eq!(info.config.max_deliver, -1);
    assert_eq!(stream.clone().info().await.unwrap().state.consumer_count, 1);

    // A consumer an earlier version made, with other settings, is kept as it is.
    let old = NodeId::new("edge-old").unwrap();
    let older = async_nats::jetstream::consumer::pull::Config {
        memory_storage: false,
        ..cairn_streams::node_consumer_config(&old)
    };
    let shard = js
        .get_stream(StreamKind::assignments_of(&old).name())
        .await
        .unwrap();
    shard.create_consumer(older).await.unwrap();
    cairn_streams::ensure_node_consumer(&js, &old)
        .await
        .unwrap();
    let kept = shard.consumer_info("node-edge-old").await.unwrap();
    assert!(!kept.config.memory_storage);
}

#[tokio::test]
async fn atomic_batches_store_all_or_nothing() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let batch = |n: u32| {
        (0..n)
            .map(|i| Outgoing::event(&event("b", i)).unwrap())
            .collect::<Vec<_>>()
    };

    let first = publisher
        .append_atomic(batch(5), Expect::LastSeq(Seq::ZERO))
        .await
        .unwrap();
    assert_eq!(first.seq, Seq(5));
    let read = read_n(&reader, ReadFrom::Start, 5).await;
    assert_eq!(
        read.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=5).map(Seq).collect::<Vec<_>>()
    );

    // A stale expectation stores nothing of the batch.
    match publisher
        .append_atomic(batch(4), Expect::LastSeq(Seq(3)))
        .await
    {
        Err(Error::Conflict { expected, actual }) => {
            assert_eq!((expected, actual), (Seq(3), Some(Seq(5))))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(5)
    );

    // Two writers race whole batches on the same expectation: one batch lands whole.
    let a = Publisher::new(cairn_streams::jetstream(server.connect().await));
    let b = Publisher::new(cairn_streams::jetstream(server.connect().await));
    let (ra, rb) = tokio::join!(
        a.append_atomic(batch(30), Expect::LastSeq(Seq(5))),
        b.append_atomic(batch(30), Expect::LastSeq(Seq(5)))
    );
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one batch wins: {ra:?} {rb:?}"
    );
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(35)
    );

    // Over the server's limit: refused before anything is sent.
    assert!(
        publisher
            .append_atomic(batch(1_001), Expect::Nothing)
            .await
            .is_err()
    );
    assert_eq!(
        reader.bounds(StreamKind::Events).await.unwrap().last,
        Seq(35)
    );
}

#[tokio::test]
async fn the_same_work_derived_twice_is_queued_once() {
    use cairn_shared::assignment::StopExecution;
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let node = NodeId::new("edge-1").unwrap();
    let execution = cairn_shared::ExecutionId::generate();
    // Two dispatchers (or one, before and after a restart) derive the same stop.
    for _ in 0..2 {
        let work = Envelope::new(
            EventId::generate(),
            None,
            Timestamp::now(),
            cairn_shared::Assignment::from(StopExecution {
                execution,
                attempt: 1,
                reason: "stop".into(),
            }),
        );
        publisher
            .append(Outgoing::assignment(&node, &work).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(
        reader
            .bounds(StreamKind::assignments_of(&node))
            .await
            .unwrap()
            .last,
        Seq(1)
    );
}

#[tokio::test]
async fn direct_gets_read_a_work_queue_without_taking_its_work() {
    use cairn_shared::assignment::{Assignment, StopExecution};
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let node = NodeId::new("edge-3").unwrap();
    for attempt in 1..=3 {
        let stop: Assignment = StopExecution {
            execution: cairn_shared::ExecutionId::generate(),
            attempt,
            reason: "test".into(),
        }
        .into();
        let envelope = Envelope::new(EventId::generate(), None, Timestamp::now(), stop);
        publisher
            .append(Outgoing::assignment(&node, &envelope).unwrap())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let mut seen = Vec::new();
        let mut next = Seq(1);
        while let Some(raw) = reader
            .next_held(StreamKind::assignments_of(&node), next)
            .await
            .unwrap()
        {
            assert_eq!(raw.subject.as_str(), "cairn.assign.16.edge-3");
            seen.push(raw.seq);
            next = raw.seq.next();
        }
        assert_eq!(seen, [Seq(1), Seq(2), Seq(3)], "reading took nothing away");
    }
}

#[tokio::test]
async fn a_read_resumes_where_it_was_after_the_server_restarts() {
    let mut server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let before: Vec<_> = (0..3).map(|i| event("restart", i)).collect();
    for e in &before {
        publisher.append(Outgoing::event(e).unwrap()).await.unwrap();
    }
    let mut messages = Box::pin(
        reader
            .read(StreamKind::Events, ReadFrom::Start, None)
            .await
            .unwrap(),
    );
    for e in &before {
        let raw = messages.next().await.unwrap().unwrap();
        assert_eq!(Envelope::<Event>::decode(&raw.payload).unwrap().id, e.id);
    }

    server.restart();
    let after = event("restart", 3);
    let outgoing = Outgoing::event(&after).unwrap();
    // Stored once whatever the retries: the message id dedupes.
    let appended = cairn_streams::testing::wait_until(
        "the restarted server stores again",
        Duration::from_secs(20),
        || {
            let publisher = publisher.clone();
            let outgoing = outgoing.clone();
            async move { publisher.append(outgoing).await }
        },
    )
    .await;
    let stored = std::time::Instant::now();

    // The property is "resumes on the reconnect", not "on a heartbeat timeout": left to
    // itself the client notices its consumer is gone only after missed idle heartbeats
    // (5 s at the very least, seen here), so a read that waits for that fails this.
    let raw = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match messages.next().await {
                Some(Ok(raw)) => break raw,
                Some(Err(e)) => eprintln!("while the server comes back: {e}"),
                None => panic!("the read ended"),
            }
        }
    })
    .await
    .expect("the read resumed after the restart");
    eprintln!(
        "read resumed {:?} after the first append to the restarted server",
        stored.elapsed()
    );
    assert_eq!(raw.seq, appended.seq);
    assert_eq!(raw.seq, Seq(4), "no message skipped or repeated");
    assert_eq!(
        Envelope::<Event>::decode(&raw.payload).unwrap().id,
        after.id
    );
}

/// An execution's events of one job on one node, as the orchestrator decides them.
fn execution_events(
    job: cairn_shared::JobId,
    node: &str,
    execution: cairn_shared::ExecutionId,
) -> [Envelope<Event>; 2] {
    use cairn_shared::event::{ExecutionAssigned, ExecutionStateChanged};
    let node = NodeId::new(node).unwrap();
    let assigned = ExecutionAssigned {
        execution,
        job,
        job_name: format!("job-{job}"),
        version: 1,
        node: node.clone(),
        attempt: 1,
        task: serde_json::from_str(r#"{"engine": "exec", "command": ["true"]}"#).unwrap(),
        resources: None,
        delay: None,
        health: None,
    };
    let running = ExecutionStateChanged {
        execution,
        node,
        state: cairn_shared::ExecutionState::Running,
        exit_code: None,
        reason: None,
    };
    [assigned.into(), running.into()]
        .map(|body| Envelope::new(EventId::generate(), None, Timestamp::now(), body))
}

#[tokio::test]
async fn an_execution_event_is_stored_under_its_job_and_node_and_read_by_either() {
    use cairn_shared::{ExecutionId, JobId};
    use cairn_streams::subjects;
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    let (web, db) = (JobId::generate(), JobId::generate());
    let runs = [
        (web, "edge-1", ExecutionId::generate()),
        (web, "edge-2", ExecutionId::generate()),
        (db, "edge-1", ExecutionId::generate()),
    ];
    for (job, node, execution) in runs {
        let [assigned, running] = execution_events(job, node, execution);
        // The assignment names its job; a later event of the execution is told it.
        publisher
            .append(Outgoing::event(&assigned).unwrap())
            .await
            .unwrap();
        let refused = Outgoing::event(&running).unwrap_err();
        assert!(
            matches!(&refused, Error::Unaddressed { missing: "job", execution: e, .. } if *e == execution),
            "{refused}"
        );
        publisher
            .append(Outgoing::event_with(&running, |e| (e == execution).then_some(job)).unwrap())
            .await
            .unwrap();
    }
    // An execution event stored before execution subjects named their job and node.
    let old = runs[0].2;
    let [_, legacy] = execution_events(web, "edge-1", old);
    publisher
        .context()
        .publish(
            format!("cairn.evt.exec.{old}"),
            legacy.encode().unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    publisher
        .append(Outgoing::event(&event("edge-1", 4)).unwrap())
        .await
        .unwrap();

    let all = read_n(&reader, ReadFrom::Start, 8).await;
    let stored: Vec<&str> = all.iter().map(|raw| raw.subject.as_str()).collect();
    let at = |(job, node, execution): (JobId, &str, ExecutionId)| {
        format!("cairn.evt.exec.{job}.{node}.{execution}")
    };
    assert_eq!(
        stored,
        [
            at(runs[0]),
            at(runs[0]),
            at(runs[1]),
            at(runs[1]),
            at(runs[2]),
            at(runs[2]),
            format!("cairn.evt.exec.{old}"),
            "cairn.evt.node.edge-1".to_owned(),
        ],
    );
    let held = |filters| held_events(&reader, filters);
    assert_eq!(
        held(vec![subjects::job_executions(web)]).await,
        [1, 2, 3, 4]
    );
    assert_eq!(held(vec![subjects::job_executions(db)]).await, [5, 6]);
    let edge_1 = NodeId::new("edge-1").unwrap();
    assert_eq!(
        held(vec![subjects::node_executions(&edge_1)]).await,
        [1, 2, 5, 6]
    );
    assert_eq!(
        held(vec![subjects::execution_events(runs[1].2)]).await,
        [3, 4]
    );
    // The old layout's filter matches only the old layout; filters combine, in stream order.
    assert_eq!(
        held(vec![subjects::LEGACY_EXECUTION_EVENTS.into()]).await,
        [7]
    );
    assert_eq!(
        held(vec![
            subjects::node_events(&edge_1),
            subjects::LEGACY_EXECUTION_EVENTS.into(),
            subjects::job_executions(db),
        ])
        .await,
        [5, 6, 7, 8]
    );
    assert_eq!(
        held(vec![subjects::job_executions(JobId::generate())]).await,
        [0u64; 0]
    );
    assert_eq!(held(vec![]).await, [0u64; 0]);
}

/// The sequences of the events a held read of `filters` yields.
async fn held_events(reader: &Reader, filters: Vec<async_nats::Subject>) -> Vec<u64> {
    let held = reader.held(StreamKind::Events, &filters).await.unwrap();
    held.into_iter().map(|raw| raw.seq.0).collect()
}

#[tokio::test]
async fn a_held_read_yields_what_its_subjects_hold_and_ends() {
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    for (i, node) in ["n1", "n2", "n1", "n3", "n2"].into_iter().enumerate() {
        publisher
            .append(Outgoing::event(&event(node, i as u32)).unwrap())
            .await
            .unwrap();
    }
    let held = |filters: &[&str]| {
        let filters: Vec<async_nats::Subject> = filters.iter().map(|&f| f.into()).collect();
        held_events(&reader, filters)
    };
    // It ends at its last match, however much of the stream comes after.
    assert_eq!(held(&["cairn.evt.node.n1"]).await, [1, 3]);
    assert_eq!(
        held(&["cairn.evt.node.n3", "cairn.evt.node.n1"]).await,
        [1, 3, 4]
    );
    assert_eq!(held(&["cairn.evt.node.*"]).await, [1, 2, 3, 4, 5]);
    assert_eq!(held(&["cairn.evt.node.n9"]).await, [0u64; 0]);
    assert_eq!(held(&[]).await, [0u64; 0]);
}

#[tokio::test]
async fn a_held_read_of_a_work_queue_reads_its_nodes_subjects_and_takes_nothing() {
    use cairn_shared::assignment::{Assignment, StopExecution};
    let server = NatsServer::start();
    let (publisher, reader) = setup(&server).await;
    // Two nodes of one shard, and another node's work in the same shard between theirs.
    let nodes: Vec<NodeId> = {
        let shard = Shard::of(&NodeId::new("edge-0").unwrap());
        (0..)
            .map(|i| NodeId::new(format!("edge-{i}")).unwrap())
            .filter(|n| Shard::of(n) == shard)
            .take(3)
            .collect()
    };
    for node in nodes.iter().cycle().take(6) {
        let stop: Assignment = StopExecution {
            execution: cairn_shared::ExecutionId::generate(),
            attempt: 1,
            reason: "test".into(),
        }
        .into();
        let envelope = Envelope::new(EventId::generate(), None, Timestamp::now(), stop);
        publisher
            .append(Outgoing::assignment(node, &envelope).unwrap())
            .await
            .unwrap();
    }
    let shard = StreamKind::assignments_of(&nodes[0]);
    let filters = [
        cairn_streams::subjects::assignments(&nodes[2]),
        cairn_streams::subjects::assignments(&nodes[0]),
    ];
    for _ in 0..2 {
        let held = reader.held(shard, &filters).await.unwrap();
        let seqs: Vec<u64> = held.iter().map(|raw| raw.seq.0).collect();
        assert_eq!(seqs, [1, 3, 4, 6], "in stream order, and still there");
    }
    assert!(reader.held(shard, &[]).await.unwrap().is_empty());
}
