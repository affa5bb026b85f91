//! A job's versions and attempts through the built binary against a real nats-server:
//! a restart policy's attempts and pauses as the edge runs them, `job rerun` and
//! `job revert`.

mod support;
use support::cairn;
use support::stack::{SLOW_LIVENESS, Stack, executions};

/// A task that notes when it started, in nanoseconds, and fails.
fn flaky(starts: &std::path::Path) -> String {
    format!(
        r#"
name: flaky
type: batch
restart: {{attempts: 2, delay: 1s}}
task:
  engine: exec
  command: ["sh", "-c", "date +%s%N >> {}; exit 3"]
"#,
        starts.display()
    )
}

#[tokio::test]
async fn a_restart_policy_starts_a_failing_task_its_attempts_a_pause_apart_then_fails_the_job() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&["edge-1"], "edge", 4).await;
    let starts = stack.dir.path().join("starts");

    let spec = stack.spec("flaky", &flaky(&starts));
    let out = cairn(
        &url,
        &[
            "job",
            "deploy",
            spec.to_str().unwrap(),
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert!(!out.status.success(), "a job that fails fails --wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job flaky failed"), "{stderr}");

    let all = executions(&url, "flaky");
    let mut attempts: Vec<(u64, String)> = all
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [
            (1, "failed".into()),
            (2, "failed".into()),
            (3, "failed".into())
        ],
        "two restarts: three executions in all"
    );
    // The edge's own record of each start: three, each at least the pause after the last.
    let text = std::fs::read_to_string(&starts).unwrap();
    let at: Vec<u128> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(at.len(), 3, "started three times: {text}");
    for pair in at.windows(2) {
        let gap_ms = (pair[1] - pair[0]) / 1_000_000;
        assert!(gap_ms >= 1000, "restarts {gap_ms} ms apart: {text}");
    }
    let describe = support::json(&url, &["job", "describe", "flaky"]);
    let reason = describe["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("all 3 attempts"), "{describe:#}");
}

const ONCE: &str = r#"
name: once
type: batch
task:
  engine: exec
  command: ["sh", "-c", "echo run"]
"#;

fn web(text: &str) -> String {
    format!(
        r#"
name: web
type: service
task:
  engine: exec
  command: ["sh", "-c", "echo {text}; while true; do sleep 1; done"]
"#
    )
}

#[tokio::test]
async fn rerun_runs_a_finished_job_again_and_revert_brings_an_earlier_spec_back() {
    let stack = Stack::new(SLOW_LIVENESS);
    let url = stack.url();
    let _orchestrator = stack.orchestrator("orchestrator");
    let _edges = stack.connected_edges(&["edge-1"], "edge", 4).await;

    let once = stack.deploy("once", ONCE, true);
    assert_eq!(once["state"], "completed", "{once:#}");
    let again = support::json(&url, &["job", "rerun", "once", "--wait"]);
    assert_eq!(again["state"], "completed", "{again:#}");
    assert_eq!(again["version"], 1, "a rerun keeps the version: {again:#}");
    assert_eq!(again["job_id"], once["job_id"]);
    let runs = executions(&url, "once");
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(
        runs.iter()
            .all(|e| e["state"] == "completed" && e["attempt"] == 1)
    );

    assert_eq!(stack.deploy("web", &web("v1"), true)["state"], "running");
    assert_eq!(stack.deploy("web", &web("v2"), true)["version"], 2);
    // Running: a rerun is refused, by name, and nothing changes.
    let out = cairn(&url, &["job", "rerun", "web", "--wait"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still running"), "{stderr}");

    let reverted = support::json(&url, &["job", "revert", "web", "--version", "1", "--wait"]);
    assert_eq!(reverted["state"], "running", "{reverted:#}");
    assert_eq!(reverted["version"], 3, "{reverted:#}");
    assert_eq!(reverted["reverted_to"], 1, "{reverted:#}");
    let describe = support::json(&url, &["job", "describe", "web"]);
    assert_eq!(
        describe["spec"]["task"]["command"][2],
        "echo v1; while true; do sleep 1; done"
    );
    stack.executions_in("web", "running", 1).await;
    let running: Vec<_> = executions(&url, "web")
        .into_iter()
        .filter(|e| e["state"] == "running")
        .collect();
    assert_eq!(running[0]["version"], 3, "{running:#?}");

    // The default is the version before the current one: back to v2's spec, as version 4.
    let back = support::json(&url, &["job", "revert", "web", "--wait"]);
    assert_eq!(
        (back["version"].as_u64(), back["reverted_to"].as_u64()),
        (Some(4), Some(2))
    );
    let history = support::json(&url, &["job", "history", "web"]);
    let reverts: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["reverted_to"].as_u64()))
        .collect();
    assert_eq!(reverts, [(1, None), (2, None), (3, Some(1)), (4, Some(2))]);

    // Bad input names what was wrong and stores nothing that changes the job.
    let out = cairn(&url, &["job", "revert", "web", "--version", "9", "--wait"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no version 9: its versions are 1 to 4"),
        "{stderr}"
    );
    let out = cairn(&url, &["job", "revert", "web", "--version", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("versions start at 1"));
    let out = cairn(
        &url,
        &[
            "job",
            "revert",
            "nothing-here",
            "--wait",
            "--timeout",
            "10s",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job"));
    assert_eq!(
        support::json(&url, &["job", "describe", "web"])["version"],
        4
    );
}
