//! The intake layer against a real server: it binds once its consumer exists however often
//! its caller's `select!` drops the call, and binds again after the consumer is deleted.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use cairn_streams::testing::NatsServer;
use cairn_streams::{Binding, Intake, Pulled, StreamKind, Topology};

#[tokio::test]
async fn an_intake_binds_however_often_its_call_is_dropped() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let kind = StreamKind::Commands;
    let mut intake = Intake::new(js.clone(), kind, "probe", Binding::Existing, 16);
    // No consumer yet: the bind fails, and the next waits out a pause first.
    match intake.next().await {
        Pulled::Unbound { lost: false, .. } => {}
        other => panic!("expected a failed bind, got {other:?}"),
    }
    js.get_stream(kind.name())
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("probe".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // A caller woken far more often than the pause lasts, as the engine is by heartbeats:
    // each call is dropped after 5 ms, yet the pause and the bind both get done.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_millis(5), intake.next()).await {
            Ok(Pulled::Bound { .. }) => break,
            Ok(other) => panic!("expected the bind, got {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "never bound"),
        }
    }
    assert!(intake.is_bound());

    // Deleted under it: the pull breaks, and the intake binds again once it is back.
    js.publish("cairn.cmd.probe", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    match intake.next().await {
        Pulled::Message(message) => message.ack().await.unwrap(),
        other => panic!("expected the message, got {other:?}"),
    }
    js.get_stream(kind.name())
        .await
        .unwrap()
        .delete_consumer("probe")
        .await
        .unwrap();
    let broke = tokio::time::timeout(Duration::from_secs(15), intake.next())
        .await
        .expect("the deletion is noticed");
    assert!(
        matches!(broke, Pulled::Unbound { lost: true, .. }),
        "{broke:?}"
    );
}
