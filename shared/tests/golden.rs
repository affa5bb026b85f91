//! Golden fixtures: encodings written by earlier builds must keep decoding to the same
//! values. A fixture is never rewritten; a new schema version gets new fixtures beside the
//! old ones. Run with `CAIRN_BLESS=1` to write fixtures that do not exist yet.

use std::path::{Path, PathBuf};

use cairn_shared::codec::{Envelope, Message};

mod samples;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn check<M: Message + PartialEq + std::fmt::Debug>(family: &str, samples: Vec<Envelope<M>>)
where
    M::Id: PartialEq + std::fmt::Debug,
{
    let bless = std::env::var_os("CAIRN_BLESS").is_some();
    for sample in samples {
        let path = dir().join(format!("{family}-{}.msgpack", sample.type_name()));
        if !path.exists() && bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, sample.encode().unwrap()).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "missing fixture {} ({e}); run with CAIRN_BLESS=1 once",
                path.display()
            )
        });
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

#[test]
fn old_encodings_still_decode() {
    check("event", samples::events());
    check("command", samples::commands());
    check("report", samples::reports());
    check("assignment", samples::assignments());
    check("heartbeat", samples::heartbeats());
}
