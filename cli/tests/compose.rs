//! The compose file is for users with a container engine (there is none in CI): this test
//! has `cairn` itself parse every command line the file gives it, so the file cannot
//! silently rot.

use std::process::Command;

/// Parses `words` as `cairn` would, up to `--help`: clap refuses an unknown subcommand or
/// flag, or a missing or malformed value, with exit status 2 before it prints any help, so
/// success means the whole command line would be accepted.
fn accepted(words: &[&str]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(words)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_compose_command_is_a_real_cairn_command() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let compose: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let services = compose["services"].as_object().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        let Some(command) = service["command"].as_array() else {
            continue;
        };
        if service["image"] != "cairn" {
            continue;
        }
        let words: Vec<&str> = command.iter().map(|w| w.as_str().unwrap()).collect();
        if let Err(refusal) = accepted(&words) {
            panic!("{name}: `cairn {}` is refused: {refusal}", words.join(" "));
        }
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "both orchestrators and the three edges (single server and cluster) were checked"
    );
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).exists());
}
