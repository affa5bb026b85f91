//! Secrets stay on the node: a task names them (`task.secrets`), the edge reads each from
//! its `--secrets-dir`, and no stream (by `cairn audit export` of all of them) ever holds a
//! value. A secret the node lacks fails the attempt with a reason that names it.

mod support;
use support::stack::{SLOW_LIVENESS, Stack};

/// Unlike anything else a run writes, so finding it anywhere is a leak.
const VALUE: &str = "s3cr3t-7f4a-value-never-logged";

const USES: &str = r#"
name: uses-secret
type: batch
count: 1
task:
  engine: exec
  command: ["sh", "-c", "printf '%s\\n' \"$API_TOKEN\" | rev"]
  secrets: [API_TOKEN]
"#;

const LACKS: &str = r#"
name: lacks-secret
type: batch
count: 1
restart: {attempts: 0}
task:
  engine: exec
  command: ["true"]
  secrets: [NOT_THERE]
"#;

#[tokio::test]
async fn a_task_sees_its_secret_and_no_stream_ever_holds_it() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let secrets = stack.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("API_TOKEN"), format!("{VALUE}\n")).unwrap();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edge = stack.edge_with(
        "edge-1",
        &[("role", "edge")],
        &["--secrets-dir", secrets.to_str().unwrap()],
    );
    stack.nodes_in(&["edge-1"], "connected").await;

    assert_eq!(
        stack.deploy("uses-secret", USES, true)["state"],
        "completed"
    );
    let ran = stack.executions_in("uses-secret", "completed", 1).await;
    let id = ran[0]["id"].as_str().unwrap();
    let logs = support::cairn(&url, &["execution", "logs", id]);
    // The task saw the value: it printed it reversed (so the log does not hold it).
    let reversed: String = VALUE.chars().rev().collect();
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        format!("{reversed}\n")
    );

    stack.deploy("lacks-secret", LACKS, false);
    let failed = stack.executions_in("lacks-secret", "failed", 1).await;
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("NOT_THERE"), "{reason}");

    // Every stream, every message: the value is nowhere, its name is where it belongs.
    let export = support::cairn(&url, &["audit", "export"]);
    assert!(export.status.success(), "{export:?}");
    let export = String::from_utf8_lossy(&export.stdout);
    assert!(export.contains("API_TOKEN"), "the spec names its secret");
    assert!(!export.contains(VALUE), "a secret's value reached a stream");
}
