//! Codec properties: round trips, refusal of unknown or newer messages, and no panic on any
//! input bytes.

use cairn_shared::codec::{Envelope, Error, Message};
use cairn_shared::event::{Event, NodeLost};
use cairn_shared::{Assignment, Command, EventId, Liveness, NodeId, Report, Timestamp};
use proptest::prelude::*;

mod samples;

#[test]
fn every_sample_round_trips() {
    for env in samples::events() {
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::<Event>::decode(&bytes).unwrap(), env);
    }
    for env in samples::commands() {
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::<Command>::decode(&bytes).unwrap(), env);
    }
    for env in samples::reports() {
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::<Report>::decode(&bytes).unwrap(), env);
    }
    for env in samples::assignments() {
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::<Assignment>::decode(&bytes).unwrap(), env);
    }
    for env in samples::heartbeats() {
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::<Liveness>::decode(&bytes).unwrap(), env);
    }
}

/// Fields newer than the golden fixtures, which hold them empty.
#[test]
fn newer_fields_round_trip() {
    let mut beat = samples::heartbeats().remove(0);
    let Liveness::Heartbeat(ref mut body) = beat.body;
    body.executions = vec![cairn_shared::RunningAttempt {
        execution: cairn_shared::ExecutionId::generate(),
        attempt: 2,
    }];
    let bytes = beat.encode().unwrap();
    assert_eq!(Envelope::<Liveness>::decode(&bytes).unwrap(), beat);

    let mut spec = samples::spec();
    spec.disconnect = Some(cairn_shared::spec::Disconnect {
        lost_after: Some(cairn_shared::spec::HumanDuration(
            std::time::Duration::from_secs(90),
        )),
        replace: false,
    });
    let bytes = rmp_serde::to_vec_named(&spec).unwrap();
    assert_eq!(
        rmp_serde::from_slice::<cairn_shared::JobSpec>(&bytes).unwrap(),
        spec
    );
}

#[test]
fn the_samples_cover_every_type() {
    let mut seen: Vec<&str> = samples::events().iter().map(|e| e.type_name()).collect();
    seen.sort_unstable();
    let mut all = Event::TYPE_NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(seen, all);
    assert_eq!(samples::commands().len(), Command::TYPE_NAMES.len());
    assert_eq!(samples::reports().len(), Report::TYPE_NAMES.len());
    assert_eq!(samples::assignments().len(), Assignment::TYPE_NAMES.len());
    assert_eq!(samples::heartbeats().len(), Liveness::TYPE_NAMES.len());
}

/// Re-encodes an event envelope with a different type name or version, the way a future
/// build would write it.
fn reencode(env: &Envelope<Event>, type_name: &str, version: u16) -> Vec<u8> {
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
    rmp_serde::to_vec_named(&Wire {
        type_name,
        v: version,
        id: env.id,
        at: env.at,
        body: env.body.encode_body().unwrap(),
    })
    .unwrap()
}

fn node_lost() -> Envelope<Event> {
    Envelope::new(
        EventId::generate(),
        None,
        Timestamp(1),
        NodeLost {
            node: NodeId::new("n1").unwrap(),
        }
        .into(),
    )
}

#[test]
fn unknown_types_and_newer_versions_are_typed_errors() {
    let env = node_lost();
    assert_eq!(
        Envelope::<Event>::decode(&reencode(&env, "NodeVanished", 1)),
        Err(Error::UnknownType {
            type_name: "NodeVanished".into()
        })
    );
    assert!(matches!(
        Envelope::<Event>::decode(&reencode(&env, "NodeLost", 2)),
        Err(Error::NewerVersion {
            version: 2,
            known: 1,
            ..
        })
    ));
    // A command is not an event: the wrong family is an unknown type, not a misread.
    let cmd = &samples::commands()[0];
    assert!(matches!(
        Envelope::<Event>::decode(&cmd.encode().unwrap()),
        Err(Error::UnknownType { .. }) | Err(Error::Malformed(_))
    ));
}

#[test]
fn unknown_fields_are_ignored() {
    #[derive(serde::Serialize)]
    struct Future<'a> {
        node: &'a str,
        why: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        #[serde(rename = "type")]
        type_name: &'a str,
        v: u16,
        id: EventId,
        at: Timestamp,
        extra: u8,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    }
    let body = rmp_serde::to_vec_named(&Future {
        node: "n1",
        why: "unplugged",
    })
    .unwrap();
    let bytes = rmp_serde::to_vec_named(&Wire {
        type_name: "NodeLost",
        v: 1,
        id: EventId::generate(),
        at: Timestamp(5),
        extra: 7,
        body,
    })
    .unwrap();
    let env = Envelope::<Event>::decode(&bytes).unwrap();
    assert_eq!(
        env.body,
        Event::NodeLost(NodeLost {
            node: NodeId::new("n1").unwrap()
        })
    );
}

#[test]
fn an_invalid_id_inside_a_body_is_refused() {
    let env = node_lost();
    let mut bytes = env.encode().unwrap();
    // "n1" becomes "n." — no longer a valid node id.
    let pos = bytes.windows(2).rposition(|w| w == b"n1").unwrap();
    bytes[pos + 1] = b'.';
    assert!(matches!(
        Envelope::<Event>::decode(&bytes),
        Err(Error::MalformedBody { .. })
    ));
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    // 0x91 is a one-element array: a million of them nest a million levels deep.
    let bytes = vec![0x91u8; 1_000_000];
    assert!(Envelope::<Event>::decode(&bytes).is_err());
    let mut bytes = vec![0x81u8, 0xa4, b'b', b'o', b'd', b'y'];
    bytes.extend(std::iter::repeat_n(0x91u8, 1_000_000));
    assert!(Envelope::<Event>::decode(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::<Event>::decode(&bytes);
        let _ = Envelope::<Command>::decode(&bytes);
        let _ = Envelope::<Report>::decode(&bytes);
        let _ = Envelope::<Assignment>::decode(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        pick in 0usize..64,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let events = samples::events();
        let mut bytes = events[pick % events.len()].encode().unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = Envelope::<Event>::decode(&bytes);
        let keep = cut.index(bytes.len() + 1);
        let _ = Envelope::<Event>::decode(&bytes[..keep]);
    }
}
