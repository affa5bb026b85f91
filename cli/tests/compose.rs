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
        checked, 9,
        "the orchestrators and edges of the single-server, cluster and secure shapes, and \
         the secure shape's two set-up steps, were checked"
    );
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).exists());
}

/// Prometheus (deploy/prometheus.yml) scrapes exactly the addresses the compose file's
/// orchestrators (`--http`) and edges (`--metrics`) serve on.
#[test]
fn prometheus_scrapes_every_cairn_that_serves_metrics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let compose: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let mut served = std::collections::BTreeSet::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        let Some(command) = service["command"].as_array() else {
            continue;
        };
        let words: Vec<&str> = command.iter().filter_map(|w| w.as_str()).collect();
        for pair in words.windows(2) {
            if matches!(pair[0], "--http" | "--metrics") {
                let port = pair[1].rsplit(':').next().unwrap();
                served.insert(format!("{name}:{port}"));
            }
        }
    }
    let prometheus: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let scraped: std::collections::BTreeSet<String> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_array().unwrap())
        .flat_map(|config| config["targets"].as_array().unwrap())
        .map(|target| target.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(scraped, served);
    assert_eq!(
        served.len(),
        6,
        "three orchestrators and three edges: {served:?}"
    );
}
