//! The built `cairn` binary against a real nats-server: `events` output and errors, and
//! `cairn dev` starting a stack and leaving nothing behind after Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_shared::codec::Envelope;
use cairn_shared::event::NodeRegistered;
use cairn_shared::{Event, EventId, NodeId, Timestamp};
use cairn_streams::testing::{NatsServer, wait_until};
use cairn_streams::{Outgoing, Publisher, StreamKind, Topology};

mod support;

fn cairn() -> Command {
    support::bare()
}

fn registered(node: &str) -> Envelope<Event> {
    Envelope::new(
        EventId::generate(),
        None,
        Timestamp(1_800_000_000_000),
        NodeRegistered {
            node: NodeId::new(node).unwrap(),
            labels: Default::default(),
            capacity: Some(2),
            resources: None,
        }
        .into(),
    )
}

#[tokio::test]
async fn events_prints_the_log_as_json_lines() {
    let server = NatsServer::start();
    let js = cairn_streams::jetstream(server.connect().await);
    Topology::default().ensure(&js).await.unwrap();
    let publisher = Publisher::new(js);
    for node in ["a", "b"] {
        publisher
            .append(Outgoing::event(&registered(node)).unwrap())
            .await
            .unwrap();
    }
    publisher
        .append(Outgoing {
            subject: "cairn.evt.input".into(),
            msg_id: "garbage".into(),
            payload: b"garbage".to_vec().into(),
            expect: cairn_streams::Expect::Nothing,
        })
        .await
        .unwrap();

    let out = support::succeed(cairn().args(["--nats", &server.url(), "events"]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["type"], "NodeRegistered");
    assert_eq!(lines[0]["subject"], "cairn.evt.node.a");
    assert_eq!(lines[0]["data"]["node"], "a");
    assert_eq!(lines[0]["time"], "2027-01-15T08:00:00.000Z");
    assert_eq!(lines[1]["data"]["node"], "b");
    assert_eq!(lines[2]["type"], serde_json::Value::Null);
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("not a cairn envelope")
    );

    let out = cairn()
        .args(["--nats", &server.url(), "events", "--from-seq", "2"])
        .output()
        .unwrap();
    let seqs: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[tokio::test]
async fn a_deploy_is_stored_without_an_orchestrator_and_leaves_undecided_fields_null() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = support::write_spec(dir.path(), "ok.yaml", support::VALID_SPEC);
    // No orchestrator has ever run here: not even the command stream exists yet.
    let out = support::succeed(
        support::command(&server.url())
            .args(["job", "deploy", "-o", "json"])
            .arg(&spec),
    );
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Every field is there; what only the orchestrator decides is null, never guessed.
    assert_eq!(deployed["name"], "ok");
    assert_eq!(deployed["state"], "submitted");
    assert!(
        deployed["job_id"].is_null() && deployed["version"].is_null(),
        "{deployed}"
    );
    let command = deployed["command_id"].as_str().unwrap();
    assert_eq!(command.len(), 26, "{deployed}");

    let js = cairn_streams::jetstream(server.connect().await);
    let mut stream = js.get_stream(StreamKind::Commands.name()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[test]
fn usage_errors_exit_2() {
    let out = cairn()
        .args(["events", "--from-seq", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free client port for a clustered `cairn dev` whose route port, 2000 above it, is free
/// too (and exists: ephemeral ports reach 60999).
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let route_free = port
            .checked_add(2000)
            .is_some_and(|route| std::net::TcpListener::bind(("127.0.0.1", route)).is_ok());
        if route_free {
            return port;
        }
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Starts `cairn dev` on `url` with its data in `data`; returns it once it has printed
/// its first line (the URL to use), with that line.
fn start_dev(url: &str, data: &std::path::Path) -> (Dev, String) {
    start_dev_with(url, data, &[])
}

/// A running `cairn dev`, SIGKILLed if a test ends (or fails) without stopping it; its
/// servers then go with it.
struct Dev(Option<std::process::Child>);

impl Dev {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("cairn dev still owned")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`start_dev`] with more `cairn dev` arguments.
fn start_dev_with(url: &str, data: &std::path::Path, args: &[&str]) -> (Dev, String) {
    let mut child = cairn()
        .args(["--nats", url, "dev", "--http", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("cairn dev prints its URL");
    (Dev(Some(child)), banner)
}

/// Deploys the README's sample job with `--wait` (and `extra` flags) and checks that it
/// completed.
fn deploy_hello(url: &str, extra: &[&str]) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.yaml");
    deploy_waiting(url, std::path::Path::new(example), extra, "completed");
}

/// Deploys `spec` with `--wait` (and `extra` flags) and checks that it reached `state`.
fn deploy_waiting(url: &str, spec: &std::path::Path, extra: &[&str], state: &str) {
    let out = cairn()
        .args(["--nats", url, "job", "deploy"])
        .arg(spec)
        .args(["--wait", "-o", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deployed["state"], state, "{deployed}");
}

/// Sends `cairn dev` SIGINT and checks that it exits 0 within `within` and leaves no
/// process of its stack (each mentions its data directory) behind.
async fn interrupt_dev(mut dev: Dev, data: &std::path::Path, within: Duration) {
    let mut child = dev.0.take().expect("cairn dev still owned");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (exited, status) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait()));
    let status = status
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("cairn dev stops within {within:?} of SIGINT"))
        .unwrap();
    assert!(status.success(), "cairn dev exited with {status}");
    wait_until(
        "no process of the stack to remain",
        Duration::from_secs(10),
        || async {
            let left = processes_mentioning(&data.display().to_string());
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
}

#[tokio::test]
async fn dev_starts_a_stack_and_stops_cleanly_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (child, banner) = start_dev(&url, data.path());
    assert!(banner.contains(&url), "{banner}");

    // The orchestrator set up cairn's streams on the local server.
    let client = cairn_streams::connect(&url, None, "test").await.unwrap();
    let js = cairn_streams::jetstream(client);
    wait_until(
        "the orchestrator to create the event stream",
        Duration::from_secs(20),
        || {
            let js = js.clone();
            async move {
                js.get_stream(StreamKind::Events.name())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    assert!(!processes_mentioning(&data.path().display().to_string()).is_empty());

    // The README's flow: the sample daemon and one more run on both dev edges, and the
    // sample batch still finds room beside them (the edges' resources hold them all; a
    // count of executions per core once filled each edge with the two loops).
    let heartbeat = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/heartbeat.yaml");
    let another = data.path().join("watchdog.yaml");
    let text = std::fs::read_to_string(heartbeat).unwrap();
    std::fs::write(&another, text.replace("name: heartbeat", "name: watchdog")).unwrap();
    for spec in [std::path::Path::new(heartbeat), another.as_path()] {
        deploy_waiting(&url, spec, &["--timeout", "30s"], "running");
    }
    // The sample job runs to completion on the dev edges, as the README promises.
    deploy_hello(&url, &["--timeout", "30s"]);
    let out = cairn()
        .args([
            "--nats",
            &url,
            "execution",
            "list",
            "--job",
            "hello",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let executions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: std::collections::BTreeSet<&str> = executions
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node_id"].as_str().unwrap())
        .collect();
    assert!(
        nodes.iter().all(|n| n.starts_with("dev-edge-")),
        "{nodes:?}"
    );

    interrupt_dev(child, data.path(), Duration::from_secs(20)).await;
}

#[tokio::test]
async fn dev_killed_outright_leaves_no_server_behind() {
    let data = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let (mut dev, _banner) = start_dev(&url, data.path());
    let store = data.path().join("nats").display().to_string();
    assert!(
        !processes_mentioning(&store).is_empty(),
        "the dev nats-server runs on {store}"
    );

    // SIGKILL: cairn gets no chance to stop the server itself.
    dev.child().kill().unwrap();
    dev.child().wait().unwrap();
    wait_until(
        "the dev nats-server to stop with its parent",
        Duration::from_secs(10),
        || async {
            let left = processes_mentioning(&store);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
}

/// The subcommands a help text lists under `Commands:` (clap's own `help` aside).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_help_with_examples() {
    // Walks the whole command tree from `cairn --help`, so a new command cannot slip by.
    let mut pending: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = pending.pop() {
        let out = cairn().args(&path).arg("--help").output().unwrap();
        assert!(out.status.success(), "{path:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(
            help.contains("Example"),
            "`cairn {} --help` shows no example:\n{help}",
            path.join(" ")
        );
        for sub in subcommands(&help) {
            pending.push(path.iter().cloned().chain([sub]).collect());
        }
        seen.push(path.join(" "));
    }
    for command in ["job deploy", "execution logs", "node list", "events", "dev"] {
        assert!(seen.iter().any(|s| s == command), "{command} in {seen:?}");
    }
}

#[test]
fn completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cairn().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["deploy", "execution", "orchestrator", "nats"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = cairn().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[tokio::test]
async fn dev_secure_runs_the_stack_with_credentials_only() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let data = dev_secure(&url, &[], "30s").await;
    // Each dev edge ran with credentials of its own.
    for i in 1..=2 {
        let creds = data.path().join(format!("auth/nodes/dev-edge-{i}.creds"));
        assert!(creds.is_file(), "{}", creds.display());
    }
}

#[tokio::test]
async fn fault_dev_secure_with_three_servers_runs_with_credentials_only() {
    dev_secure(&cluster_url(), &["--servers", "3"], "90s").await;
}

/// `cairn dev --secure` at `url` (with `more`): a client without the deployment's CA, or
/// with it and no credentials, is refused; with the CA and the admin's credentials it
/// printed, the sample job completes within `timeout`; then it stops cleanly. Returns its
/// data directory.
async fn dev_secure(url: &str, more: &[&str], timeout: &str) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let (child, banner) = start_dev_with(url, data.path(), &[more, &["--secure"]].concat());
    assert!(banner.contains(url), "{banner}");
    let auth = data.path().join("auth");
    let (admin, ca) = (auth.join("admin.creds"), auth.join("tls").join("ca.pem"));
    assert!(
        admin.is_file() && ca.is_file(),
        "the admin's credentials and the CA are made"
    );
    let (admin, ca) = (admin.to_str().unwrap(), ca.to_str().unwrap());
    for refused in [&["--creds", admin][..], &["--tls-ca", ca]] {
        let out = cairn()
            .args(["--nats", url, "node", "list"])
            .args(refused)
            .output()
            .unwrap();
        assert!(!out.status.success(), "let in with only {refused:?}");
    }
    deploy_hello(
        url,
        &["--timeout", timeout, "--creds", admin, "--tls-ca", ca],
    );
    interrupt_dev(child, data.path(), Duration::from_secs(30)).await;
    data
}

/// Three free loopback ports for a cluster's clients, as `--nats` lists them.
fn cluster_url() -> String {
    (0..3)
        .map(|_| format!("nats://127.0.0.1:{}", free_cluster_port()))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn fault_dev_with_three_servers_runs_a_replicated_stack() {
    let data = tempfile::tempdir().unwrap();
    let url = cluster_url();
    let (child, banner) = start_dev_with(&url, data.path(), &["--servers", "3"]);
    assert!(
        banner.contains(&url),
        "the banner lists all three: {banner}"
    );

    // The sample job completes, and its record is replicated three times.
    deploy_hello(&url, &["--timeout", "90s"]);
    let js = cairn_streams::jetstream(cairn_streams::connect(&url, None, "test").await.unwrap());
    let mut events = js.get_stream(StreamKind::Events.name()).await.unwrap();
    assert_eq!(events.info().await.unwrap().config.num_replicas, 3);

    interrupt_dev(child, data.path(), Duration::from_secs(30)).await;
}
