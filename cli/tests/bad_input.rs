//! Bad input through the built binary, one test per case: each exits 1 with one line on
//! stderr that names the problem, and a spec that is refused leaves the command stream as
//! it was. (Unknown job and execution ids, which need an orchestrator, are tested with one:
//! `job describe` in `queries.rs`, `job stop` and `execution logs` in `e2e.rs`.)

use std::path::Path;

use cairn_streams::testing::NatsServer;
use cairn_streams::{StreamKind, Topology};

mod support;
use support::{VALID_SPEC, cairn, write_spec};

/// Messages the command stream holds.
async fn commands_stored(server: &NatsServer) -> u64 {
    let js = cairn_streams::jetstream(server.connect().await);
    let mut stream = js.get_stream(StreamKind::Commands.name()).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Runs `cairn job deploy FILE` against a real server whose command stream exists, and
/// checks the refusal: exit 1, one line naming the file and every one of `names`, and
/// nothing stored.
async fn refused(file: &Path, names: &[&str]) -> String {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default()
        .create_if_missing(&js, StreamKind::Commands)
        .await
        .unwrap();
    let out = cairn(&server.url(), &["job", "deploy", file.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let file_name = file.file_name().unwrap().to_str().unwrap();
    for name in std::iter::once(&file_name).chain(names) {
        assert!(stderr.contains(name), "{stderr:?} should name {name:?}");
    }
    assert_eq!(commands_stored(&server).await, 0, "nothing was published");
    stderr
}

/// Writes `text` as `name` in a fresh directory and checks that deploying it is refused.
async fn refused_spec(name: &str, text: &str, names: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    refused(&write_spec(dir.path(), name, text), names).await
}

#[tokio::test]
async fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    refused(&dir.path().join("absent.yaml"), &["No such file"]).await;
}

#[tokio::test]
async fn an_empty_file_is_named() {
    refused_spec("empty.yaml", "\n  \n", &["empty"]).await;
}

#[tokio::test]
async fn invalid_yaml_names_the_line() {
    refused_spec(
        "broken.yaml",
        "name: broken\ntype: batch\ntask: {engine: exec, command: [\"true\"]\n",
        &["line 3", "unclosed"],
    )
    .await;
    refused_spec(
        "quote.yaml",
        "name: \"unclosed\ntype: batch\n",
        &["line 1", "unclosed quote"],
    )
    .await;
}

#[tokio::test]
async fn invalid_json_names_the_line() {
    refused_spec(
        "broken.json",
        "{\"name\": \"x\",\n \"type\": \"batch\",,\n}",
        &["line 2"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_job_type_names_the_field_and_the_choices() {
    refused_spec(
        "cron.yaml",
        "name: cron\ntype: cron\ntask: {engine: exec, command: [\"true\"]}\n",
        &["line 2", "type", "cron", "batch, ops, daemon, service"],
    )
    .await;
}

#[tokio::test]
async fn a_negative_count_names_the_field_and_line() {
    refused_spec(
        "negative.yaml",
        "name: negative\ntype: batch\ncount: -1\ntask: {engine: exec, command: [\"true\"]}\n",
        &["line 3", "count"],
    )
    .await;
}

#[tokio::test]
async fn a_missing_task_is_named() {
    refused_spec("taskless.yaml", "name: taskless\ntype: batch\n", &["task"]).await;
}

#[tokio::test]
async fn a_misspelt_field_is_named() {
    refused_spec(
        "typo.yaml",
        "name: typo\ntype: batch\ncuont: 2\ntask: {engine: exec, command: [\"true\"]}\n",
        &["unknown field", "cuont"],
    )
    .await;
}

#[tokio::test]
async fn a_spec_that_breaks_a_rule_names_the_field() {
    refused_spec(
        "zero.yaml",
        "name: zero\ntype: batch\ntask: {engine: exec, command: [\"true\"], timeout: 0s}\n",
        &["task.timeout"],
    )
    .await;
}

#[test]
fn unreachable_nats_fails_deploys_and_queries_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "ok.yaml", VALID_SPEC);
    let url = "nats://127.0.0.1:1";
    for args in [
        &["job", "deploy", spec.to_str().unwrap()][..],
        &["job", "stop", "ok"],
        &["node", "list"],
        &["events"],
    ] {
        let out = cairn(url, args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot reach NATS at nats://127.0.0.1:1"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_cluster_with_no_room_for_its_route_ports_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let url = "nats://127.0.0.1:64000,nats://127.0.0.1:64001,nats://127.0.0.1:64002";
    let data = dir.path().join("dev");
    let out = cairn(
        url,
        &[
            "dev",
            "--servers",
            "3",
            "--edges",
            "0",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("client port 64000"), "{stderr}");
    assert!(!data.exists(), "nothing was set up");
}
