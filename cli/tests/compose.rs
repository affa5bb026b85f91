//! The compose file is for users with a container engine (there is none in CI): this test
//! checks that every command and flag it gives `cairn` exists in `cairn --help`, so the
//! file cannot silently rot.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "cairn {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
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
        // Global flags come first; the first bare word is the subcommand.
        let global = help(&[]);
        let mut i = 0;
        while words[i].starts_with("--") {
            assert!(
                global.contains(words[i]),
                "{name}: global flag {} is unknown",
                words[i]
            );
            i += 2;
        }
        let sub = words[i];
        assert!(global.contains(sub), "{name}: no subcommand {sub}");
        let sub_help = help(&[sub]);
        for flag in words[i + 1..].iter().filter(|w| w.starts_with("--")) {
            assert!(
                sub_help.contains(flag),
                "{name}: `cairn {sub}` has no flag {flag}"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "both orchestrators and the three edges (single server and cluster) were checked"
    );
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).exists());
}
