//! `cairn-bench` interrupted mid-run stops the processes it started: its private
//! nats-server (and that server's store) and the `cairn orchestrator` it runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_streams::testing::wait_until;

/// The processes whose parent is `parent`, with their command lines.
fn children(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so read after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// Whether `pid` still runs `cmdline` (and is not a zombie awaiting its parent).
fn alive(pid: u32, cmdline: &str) -> bool {
    let now = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !now.is_empty() && String::from_utf8_lossy(&now).replace('\0', " ") == cmdline
}

#[tokio::test]
async fn an_interrupted_benchmark_leaves_no_process_or_store_behind() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["--quick", "lifecycle", "--executions", "20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = bench.id();
    let started = wait_until(
        "the benchmark to run its nats-server and an orchestrator",
        Duration::from_secs(60),
        || async {
            let children = children(pid);
            let server = children.iter().find(|(_, c)| c.contains("nats-server"));
            let orchestrator = children.iter().find(|(_, c)| c.contains(" orchestrator "));
            match (server, orchestrator) {
                (Some(s), Some(o)) => Ok([s.clone(), o.clone()]),
                _ => Err(children),
            }
        },
    )
    .await;
    let store = started[0]
        .1
        .split_whitespace()
        .skip_while(|arg| *arg != "-sd")
        .nth(1)
        .expect("the server's store directory")
        .to_owned();
    assert!(std::path::Path::new(&store).exists(), "{store}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the benchmark did not stop in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{status}");

    // Its children were stopped and reaped before it exited, not left to run on.
    for (pid, cmdline) in &started {
        assert!(!alive(*pid, cmdline), "{pid} still runs: {cmdline}");
    }
    assert!(
        !std::path::Path::new(&store).exists(),
        "{store} is left behind"
    );
}
