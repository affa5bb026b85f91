//! The cluster harness itself, and the JetStream facts the per-node layout rests on, checked
//! against three real servers on loopback.

use std::time::Duration;

use cairn_streams::testing::{NatsCluster, wait_until};
use cairn_streams::{StreamKind, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_streams_are_replicated_and_survive_their_leader() {
    let mut cluster = NatsCluster::start().await;
    let js = cairn_streams::jetstream(cluster.connect().await);
    let topology = Topology {
        replicas: 3,
        ..Topology::default()
    };
    topology.ensure(&js).await.expect("streams on the cluster");
    let name = StreamKind::Events.name();
    let info = js
        .get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    js.publish("cairn.evt.probe", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let leader = cluster.stream_leader(&js, name).await.expect("a leader");
    cluster.server_mut(leader).kill9();
    // The two that remain elect a new leader and keep what was acknowledged.
    let messages = wait_until(
        "the stream answering without its old leader",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            async move {
                let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?;
                let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
                match leader {
                    Some(_) => Ok(info.state.messages),
                    None => Err("no leader".to_owned()),
                }
            }
        },
    )
    .await;
    assert_eq!(messages, 1);
    cluster.server_mut(leader).restart();
}

/// A fresh 3-server cluster with cairn's streams as a cluster has them.
async fn cluster_with_streams() -> (NatsCluster, async_nats::jetstream::Context) {
    let cluster = NatsCluster::start().await;
    let js = cairn_streams::jetstream(cluster.connect().await);
    clustered()
        .ensure(&js)
        .await
        .expect("streams on the cluster");
    (cluster, js)
}

fn clustered() -> Topology {
    Topology {
        replicas: 3,
        ..Topology::default()
    }
}

/// Messages the node's subject holds in its shard.
async fn held(js: &async_nats::jetstream::Context, node: &cairn_shared::NodeId) -> u64 {
    let subject = cairn_streams::subjects::assignments(node).to_string();
    let stream = js
        .get_stream(StreamKind::assignments_of(node).name())
        .await
        .unwrap();
    let info = stream.info_with_subjects(subject.clone()).await.unwrap();
    let mut held = 0;
    futures::pin_mut!(info);
    while let Some(entry) = futures::StreamExt::next(&mut info).await {
        let (name, count) = entry.unwrap();
        if name == subject {
            held += count as u64;
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_acked_work_is_swept_and_unacked_work_kept() {
    let (_cluster, js) = cluster_with_streams().await;
    let node = cairn_shared::NodeId::new("edge-a").unwrap();
    let shard = js
        .get_stream(StreamKind::assignments_of(&node).name())
        .await
        .unwrap();
    let info = shard.cached_info().clone();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits
    );
    cairn_streams::ensure_node_consumer(&js, &node)
        .await
        .expect("an R1 consumer on a replicated shard");
    let subject = cairn_streams::subjects::assignments(&node);
    for n in 0..3 {
        js.publish(subject.clone(), format!("work {n}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // An operator's consumer on the same subject, acking everything: it must not count.
    let other = shard
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("operator".into()),
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = other.fetch().max_messages(3).messages().await.unwrap();
    while let Some(m) = futures::StreamExt::next(&mut seen).await {
        m.unwrap().double_ack().await.unwrap();
    }

    let consumer: async_nats::jetstream::consumer::PullConsumer = shard
        .get_consumer(&cairn_streams::subjects::node_consumer(&node))
        .await
        .unwrap();
    let mut sweeper = cairn_streams::Sweeper::default();
    assert_eq!(
        sweeper.sweep(&js).await.purged,
        0,
        "nothing acked by the node"
    );
    assert_eq!(held(&js, &node).await, 3);

    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    while let Some(m) = futures::StreamExt::next(&mut batch).await {
        m.unwrap().double_ack().await.unwrap();
    }
    let swept = sweeper.sweep(&js).await;
    assert_eq!(swept.purged, 2, "{swept:?}");
    assert_eq!(swept.failed, 0, "{swept:?}");
    assert_eq!(held(&js, &node).await, 1, "the unacked one stays");
    assert_eq!(sweeper.sweep(&js).await.purged, 0, "a floor swept once");

    let mut rest = consumer.fetch().max_messages(1).messages().await.unwrap();
    let last = futures::StreamExt::next(&mut rest).await.unwrap().unwrap();
    assert_eq!(&last.payload[..], b"work 2");
    last.double_ack().await.unwrap();
    assert_eq!(sweeper.sweep(&js).await.purged, 1);
    assert_eq!(held(&js, &node).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_shard_of_an_earlier_layout_is_converted_only_while_empty() {
    let cluster = NatsCluster::start().await;
    let js = cairn_streams::jetstream(cluster.connect().await);
    let topology = clustered();
    let empty = StreamKind::Assignments(cairn_streams::subjects::Shard::all().next().unwrap());
    let full = StreamKind::Assignments(cairn_streams::subjects::Shard::all().nth(1).unwrap());
    for kind in [empty, full] {
        let mut old = topology.config(kind);
        old.retention = async_nats::jetstream::stream::RetentionPolicy::WorkQueue;
        js.create_stream(old).await.unwrap();
    }
    let node = (0..)
        .map(|n| cairn_shared::NodeId::new(format!("n{n}")).unwrap())
        .find(|n| StreamKind::assignments_of(n) == full)
        .unwrap();
    js.publish(
        cairn_streams::subjects::assignments(&node),
        "waiting".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let refused = topology
        .ensure(&js)
        .await
        .expect_err("a shard holding work");
    assert!(!refused.is_retryable(), "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains(full.name()) && text.contains("holds 1"),
        "{text}"
    );
    let retention = |kind: StreamKind| {
        let js = js.clone();
        async move {
            js.get_stream(kind.name())
                .await
                .unwrap()
                .cached_info()
                .config
                .retention
        }
    };
    assert_eq!(
        retention(empty).await,
        async_nats::jetstream::stream::RetentionPolicy::Limits,
        "the empty one was converted"
    );
    assert_eq!(
        retention(full).await,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        "the one holding work was left alone"
    );
}
