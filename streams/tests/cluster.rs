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
