//! Golden fixtures: encodings written by earlier builds must keep decoding to the same
//! values. A fixture is never rewritten; a new schema version gets new fixtures beside the
//! old ones (`fixtures/v<N>/`), and every version's still decodes to today's sample. Run
//! with `CAIRN_BLESS=1` to write fixtures that do not exist yet.

use std::path::{Path, PathBuf};

use cairn_shared::codec::{Envelope, Message};

mod samples;

fn dir(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

fn check<M: Message + PartialEq + std::fmt::Debug>(family: &str, samples: Vec<Envelope<M>>)
where
    M::Id: PartialEq + std::fmt::Debug,
{
    let bless = std::env::var_os("CAIRN_BLESS").is_some();
    for sample in samples {
        let name = format!("{family}-{}.msgpack", sample.type_name());
        let current = sample.body.schema_version();
        let path = dir(current).join(&name);
        if !path.exists() && bless {
            std::fs::create_dir_all(dir(current)).unwrap();
            std::fs::write(&path, sample.encode().unwrap()).unwrap();
        }
        assert!(
            path.exists(),
            "missing fixture {}; run with CAIRN_BLESS=1 once",
            path.display()
        );
        // Every version's fixture, the current one and each earlier one kept beside it.
        for version in 1..=current {
            let path = dir(version).join(&name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let decoded = Envelope::<M>::decode(&bytes)
                .unwrap_or_else(|e| panic!("{} no longer decodes: {e}", path.display()));
            assert_eq!(
                decoded,
                sample,
                "{} decodes to a different value",
                path.display()
            );
        }
    }
}

#[test]
fn old_encodings_still_decode() {
    check("event", samples::events());
    check("command", samples::commands());
    check("report", samples::reports());
    check("assignment", samples::assignments());
    check("heartbeat", samples::heartbeats());
}
