//! The edge agent against a real nats-server: assignments run once and report in order,
//! logs end with a marker, stops kill whole process groups, redeliveries are deduped, the
//! outbox outlives a NATS outage, a crashed edge (a real child process, SIGKILLed) reports
//! its interrupted work failed exactly once and never reruns it, and garbage is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use cairn_edge::{Edge, EdgeConfig, EdgeHandle};
use cairn_shared::assignment::{RunExecution, StopExecution};
use cairn_shared::codec::Envelope;
use cairn_shared::report::ExecutionUpdate;
use cairn_shared::spec::{Engine, Health, HumanDuration, TaskSpec};
use cairn_shared::{
    Assignment, EventId, ExecutionId, ExecutionState, JobId, Liveness, NodeId, Report, Timestamp,
};
use cairn_streams::testing::{NatsServer, wait_until};
use cairn_streams::{
    Expect, LogEntry, Outgoing, OutputStream, Publisher, Reader, StreamKind, Topology,
    ensure_node_consumer, subjects,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

struct Fixture {
    server: NatsServer,
    js: jetstream::Context,
    publisher: Publisher,
    reader: Reader,
    node: NodeId,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A server with cairn's streams and, as the orchestrator would make it on the node's
    /// hello, the node's consumer (unless `consumer` is false).
    async fn new(node: &str, consumer: bool) -> Self {
        let server = NatsServer::start();
        let js = cairn_streams::jetstream(server.connect().await);
        Topology::default().ensure(&js).await.unwrap();
        let node = NodeId::new(node).unwrap();
        if consumer {
            ensure_node_consumer(&js, &node).await.unwrap();
        }
        Self {
            publisher: Publisher::new(js.clone()),
            reader: Reader::new(js.clone()),
            server,
            js,
            node,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("edge-data")
    }

    fn config(&self) -> EdgeConfig {
        let mut config = EdgeConfig::new(self.node.clone(), self.data_dir());
        config.capacity = Some(4);
        config.heartbeat_interval = Duration::from_millis(200);
        config.stop_grace = Duration::from_secs(2);
        config.shutdown_flush_timeout = Duration::from_secs(10);
        config
    }

    async fn start_edge(&self) -> RunningEdge {
        let edge = Edge::open(self.config()).await.unwrap();
        let handle = edge.handle();
        let shutdown = CancellationToken::new();
        let client = self.server.connect().await;
        let join = tokio::spawn(edge.run(client, shutdown.clone()));
        RunningEdge {
            handle,
            shutdown,
            join,
        }
    }

    async fn publish(&self, body: Assignment) {
        let envelope = Envelope::new(EventId::generate(), None, Timestamp::now(), body);
        let mut out = Outgoing::assignment(&self.node, &envelope).unwrap();
        // A message id of its own, as a re-queue after JetStream's duplicate window would
        // have: what is tested is the edge's own de-duplication, not JetStream's.
        out.msg_id = envelope.id.to_string();
        self.publisher.append(out).await.unwrap();
    }

    async fn run(&self, execution: ExecutionId, task: TaskSpec) {
        self.publish(run(execution, task).into()).await;
    }

    /// Every report stored so far, in stream order. Read with direct gets, which create no
    /// consumer: tests poll this often, and the report stream allows few consumers.
    async fn reports(&self) -> Vec<Envelope<Report>> {
        let bounds = self.reader.bounds(StreamKind::Reports).await.unwrap();
        if bounds.last.0 == 0 {
            return Vec::new();
        }
        let stream = self
            .js
            .get_stream_no_info(StreamKind::Reports.name())
            .await
            .unwrap();
        let mut reports = Vec::new();
        for seq in bounds.first.0..=bounds.last.0 {
            let message = stream.direct_get(seq).await.unwrap();
            assert_eq!(
                message.subject.as_str(),
                subjects::report(&self.node).as_str()
            );
            reports.push(Envelope::decode(&message.payload).unwrap());
        }
        reports
    }

    async fn updates(&self, execution: ExecutionId) -> Vec<ExecutionUpdate> {
        self.reports()
            .await
            .into_iter()
            .filter_map(|r| match r.body {
                Report::ExecutionUpdate(u) if u.execution == execution => Some(u),
                _ => None,
            })
            .collect()
    }

    /// The execution's updates, once one of them is in state `until`.
    async fn updates_until(
        &self,
        execution: ExecutionId,
        until: ExecutionState,
    ) -> Vec<ExecutionUpdate> {
        wait_until(&format!("{execution} to be {until}"), DEADLINE, || async {
            let updates = self.updates(execution).await;
            if updates.iter().any(|u| u.state == until) {
                Ok(updates)
            } else {
                Err(states(&updates))
            }
        })
        .await
    }

    /// Waits until the node's consumer holds no pending and no unacked message.
    async fn assignments_settled(&self) {
        let stream = self
            .js
            .get_stream(StreamKind::assignments_of(&self.node).name())
            .await
            .unwrap();
        let name = subjects::node_consumer(&self.node);
        wait_until("every assignment acked", DEADLINE, || async {
            let mut consumer: jetstream::consumer::PullConsumer = stream
                .get_consumer(&name)
                .await
                .map_err(|e| e.to_string())?;
            let info = consumer.info().await.map_err(|e| e.to_string())?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                Ok(())
            } else {
                Err(format!(
                    "pending {} unacked {}",
                    info.num_pending, info.num_ack_pending
                ))
            }
        })
        .await;
    }

    /// Follows the execution's log from its start to its end marker, as `cairn execution
    /// logs --follow` would.
    async fn log(&self, execution: ExecutionId) -> (String, String, String) {
        let stream = self.js.get_stream(StreamKind::Logs.name()).await.unwrap();
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::log_of(execution).to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        loop {
            let message = tokio::time::timeout(DEADLINE, messages.next())
                .await
                .expect("the log's end marker in time")
                .unwrap()
                .unwrap();
            match LogEntry::decode(message.headers.as_ref(), message.payload.clone()).unwrap() {
                LogEntry::Output { stream, data, .. } => {
                    let text = String::from_utf8_lossy(&data);
                    match stream {
                        OutputStream::Stdout => out.push_str(&text),
                        OutputStream::Stderr => err.push_str(&text),
                    }
                }
                LogEntry::End { outcome, .. } => return (out, err, outcome),
            }
        }
    }
}

struct RunningEdge {
    handle: EdgeHandle,
    shutdown: CancellationToken,
    join: tokio::task::JoinHandle<cairn_edge::Result<()>>,
}

impl RunningEdge {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.join)
            .await
            .expect("the edge stops in time")
            .unwrap()
            .unwrap();
    }
}

fn task(command: &[&str]) -> TaskSpec {
    TaskSpec {
        engine: Engine::Exec,
        command: command.iter().map(|s| s.to_string()).collect(),
        args: Vec::new(),
        env: Default::default(),
        working_dir: None,
        timeout: None,
        secrets: vec![],
    }
}

fn sh(script: &str) -> TaskSpec {
    task(&["sh", "-c", script])
}

fn run(execution: ExecutionId, task: TaskSpec) -> RunExecution {
    RunExecution {
        execution,
        attempt: 1,
        job: JobId::generate(),
        job_name: "test-job".into(),
        version: 1,
        task,
        delay: None,
        health: None,
    }
}

fn states(updates: &[ExecutionUpdate]) -> Vec<ExecutionState> {
    updates.iter().map(|u| u.state).collect()
}

/// Whether `pid` is a live process (a zombie counts as gone: it runs nothing).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn read_pid(path: &Path) -> i32 {
    wait_until(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || async {
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())?
                .trim()
                .parse::<i32>()
                .map_err(|e| e.to_string())
        },
    )
    .await
}

#[tokio::test]
async fn an_assignment_waiting_before_start_runs_and_reports_in_order() {
    let fx = Fixture::new("edge-1", true).await;
    let execution = ExecutionId::generate();
    fx.run(
        execution,
        sh("echo hello from $CAIRN_NODE_ID; echo oops >&2; echo job=$CAIRN_JOB_NAME exec=$CAIRN_EXECUTION_ID"),
    )
    .await;

    let started = Instant::now();
    let edge = fx.start_edge().await;
    let updates = fx.updates_until(execution, ExecutionState::Completed).await;
    println!("edge start -> completion reported: {:?}", started.elapsed());
    assert_eq!(
        states(&updates),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Completed
        ]
    );
    assert_eq!(updates[2].exit_code, Some(0));
    assert!(updates.iter().all(|u| u.node == fx.node && u.attempt == 1));
    // The hello comes first, before any work.
    let reports = fx.reports().await;
    assert!(
        matches!(&reports[0].body, Report::NodeHello(h) if h.node == fx.node && h.capacity == Some(4))
    );

    let (out, err, outcome) = fx.log(execution).await;
    assert_eq!(
        out,
        format!("hello from edge-1\njob=test-job exec={execution}\n")
    );
    assert_eq!(err, "oops\n");
    assert_eq!(outcome, "completed");
    edge.stop().await;
}

#[tokio::test]
async fn the_edge_waits_for_the_consumer_the_orchestrator_creates() {
    let fx = Fixture::new("edge-late", false).await;
    let edge = fx.start_edge().await;
    // The hello goes out although there is nothing to bind to yet.
    wait_until("the hello", DEADLINE, || async {
        let reports = fx.reports().await;
        match reports.first().map(|r| &r.body) {
            Some(Report::NodeHello(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(!edge.handle.is_bound());
    let stream = fx
        .js
        .get_stream(StreamKind::assignments_of(&fx.node).name())
        .await
        .unwrap();
    assert!(
        stream
            .consumer_info(subjects::node_consumer(&fx.node))
            .await
            .is_err(),
        "the edge must never create its consumer"
    );

    // The orchestrator handles the hello.
    let created = Instant::now();
    ensure_node_consumer(&fx.js, &fx.node).await.unwrap();
    wait_until("the edge to bind", DEADLINE, || async {
        if edge.handle.is_bound() {
            Ok(())
        } else {
            Err("unbound")
        }
    })
    .await;
    println!("consumer created -> edge bound: {:?}", created.elapsed());
    let execution = ExecutionId::generate();
    fx.run(execution, sh("true")).await;
    fx.updates_until(execution, ExecutionState::Completed).await;
    edge.stop().await;
}

#[tokio::test]
async fn failures_are_reported_with_their_reason() {
    let fx = Fixture::new("edge-fail", true).await;
    let edge = fx.start_edge().await;
    let (exit3, missing, slow) = (
        ExecutionId::generate(),
        ExecutionId::generate(),
        ExecutionId::generate(),
    );
    fx.run(exit3, sh("echo failing >&2; exit 3")).await;
    fx.run(missing, task(&["/no/such/program-cairn", "x"]))
        .await;
    let mut sleeper = task(&["sleep", "30"]);
    sleeper.timeout = Some(HumanDuration(Duration::from_millis(300)));
    fx.run(slow, sleeper).await;

    let updates = fx.updates_until(exit3, ExecutionState::Failed).await;
    assert_eq!(
        states(&updates),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Failed
        ]
    );
    assert_eq!(updates[2].exit_code, Some(3));
    assert_eq!(
        fx.log(exit3).await,
        (String::new(), "failing\n".into(), "failed".into())
    );

    let updates = fx.updates_until(missing, ExecutionState::Failed).await;
    assert_eq!(
        states(&updates),
        [ExecutionState::Accepted, ExecutionState::Failed],
        "a program that cannot start never runs"
    );
    let reason = updates[1].reason.clone().unwrap();
    assert!(
        reason.contains("/no/such/program-cairn") && reason.contains("No such file"),
        "{reason}"
    );

    let updates = fx.updates_until(slow, ExecutionState::Failed).await;
    assert_eq!(
        updates.last().unwrap().reason.as_deref(),
        Some("timed out after 300ms")
    );
    assert_eq!(edge.handle.running(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn stop_kills_the_task_and_its_children_and_wins_over_a_later_run() {
    let fx = Fixture::new("edge-stop", true).await;
    let mut beats = fx
        .server
        .connect()
        .await
        .subscribe(subjects::heartbeat(&fx.node))
        .await
        .unwrap();
    let edge = fx.start_edge().await;
    let dir = fx.dir.path().to_path_buf();
    let execution = ExecutionId::generate();
    let mut spec = sh("sleep 300 & echo $! > $PIDS/child.pid; echo $$ > $PIDS/shell.pid; wait");
    spec.env.insert("PIDS".into(), dir.display().to_string());
    fx.run(execution, spec).await;
    fx.updates_until(execution, ExecutionState::Running).await;
    let shell = read_pid(&dir.join("shell.pid")).await;
    let child = read_pid(&dir.join("child.pid")).await;
    assert!(alive(shell) && alive(child));

    // Heartbeats carry the node and what it runs.
    let beat = tokio::time::timeout(DEADLINE, async {
        loop {
            let message = beats.next().await.unwrap();
            let Liveness::Heartbeat(beat) =
                Envelope::<Liveness>::decode(&message.payload).unwrap().body;
            if beat.running == 1 {
                return beat;
            }
        }
    })
    .await
    .expect("a heartbeat counting the running task");
    assert_eq!(
        (beat.node.clone(), beat.capacity),
        (fx.node.clone(), Some(4))
    );

    let asked = Instant::now();
    fx.publish(
        StopExecution {
            execution,
            attempt: 1,
            reason: "job stopped".into(),
        }
        .into(),
    )
    .await;
    let updates = fx.updates_until(execution, ExecutionState::Stopped).await;
    println!("stop published -> stopped reported: {:?}", asked.elapsed());
    assert_eq!(
        states(&updates),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Stopped
        ]
    );
    assert_eq!(updates[2].reason.as_deref(), Some("job stopped"));
    wait_until("the shell and its child to be gone", DEADLINE, || async {
        if alive(shell) || alive(child) {
            Err((alive(shell), alive(child)))
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(fx.log(execution).await.2, "stopped");

    // A stop for an attempt never received is reported stopped, and the run that follows
    // it is not started.
    let ghost = ExecutionId::generate();
    fx.publish(
        StopExecution {
            execution: ghost,
            attempt: 1,
            reason: "job stopped".into(),
        }
        .into(),
    )
    .await;
    let marker = dir.join("ghost-ran");
    fx.run(ghost, sh(&format!("touch {}", marker.display())))
        .await;
    fx.assignments_settled().await;
    let updates = fx.updates_until(ghost, ExecutionState::Stopped).await;
    assert_eq!(states(&updates), [ExecutionState::Stopped]);
    assert!(!marker.exists());
    edge.stop().await;
}

#[tokio::test]
async fn a_redelivered_assignment_runs_once() {
    let fx = Fixture::new("edge-dup", true).await;
    let dir = fx.dir.path().to_path_buf();
    let lines = dir.join("runs");
    let execution = ExecutionId::generate();
    let spec = sh(&format!("echo ran >> {}", lines.display()));
    // Two messages (two message ids) for the same attempt, as a dispatcher re-deriving
    // its work after a crash might publish.
    fx.run(execution, spec.clone()).await;
    fx.run(execution, spec.clone()).await;
    let edge = fx.start_edge().await;
    fx.updates_until(execution, ExecutionState::Completed).await;
    fx.assignments_settled().await;
    // And once more after it finished.
    fx.run(execution, spec).await;
    fx.assignments_settled().await;
    assert!(edge.handle.received() >= 3);
    // Wait for the outbox to drain, so a wrongly queued report would be visible.
    wait_until("the outbox to drain", DEADLINE, || async {
        match edge.handle.outbox_len() {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert_eq!(
        states(&fx.updates(execution).await),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Completed
        ]
    );
    assert_eq!(std::fs::read_to_string(&lines).unwrap(), "ran\n");
    edge.stop().await;
}

#[tokio::test]
async fn the_outbox_outlives_a_nats_outage() {
    let mut fx = Fixture::new("edge-outage", true).await;
    let edge = fx.start_edge().await;
    let go = fx.dir.path().join("go");
    let execution = ExecutionId::generate();
    fx.run(
        execution,
        sh(&format!(
            "echo waiting; while [ ! -e {} ]; do sleep 0.05; done; echo finished",
            go.display()
        )),
    )
    .await;
    fx.updates_until(execution, ExecutionState::Running).await;

    fx.server.kill9();
    std::fs::write(&go, "").unwrap();
    // The task finishes while NATS is gone: its completion and log wait in the outbox.
    wait_until("the task to finish offline", DEADLINE, || async {
        let (running, queued) = (edge.handle.running(), edge.handle.outbox_len());
        if running == 0 && queued >= 2 {
            Ok(())
        } else {
            Err((running, queued))
        }
    })
    .await;
    println!("queued while offline: {} entries", edge.handle.outbox_len());

    fx.server.restart();
    let restarted = Instant::now();
    let updates = fx.updates_until(execution, ExecutionState::Completed).await;
    println!(
        "server restart -> completion stored: {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        states(&updates),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Completed
        ]
    );
    let (out, _, outcome) = fx.log(execution).await;
    assert_eq!(
        (out.as_str(), outcome.as_str()),
        ("waiting\nfinished\n", "completed")
    );

    // New work reaches the edge once its pull is re-established on its consumer, which
    // lived in the server's memory: as the orchestrator does after a reconnect, the
    // fixture creates it again.
    wait_until("the node's consumer to be recreated", DEADLINE, || {
        ensure_node_consumer(&fx.js, &fx.node)
    })
    .await;
    let after = ExecutionId::generate();
    fx.run(after, sh("true")).await;
    fx.updates_until(after, ExecutionState::Completed).await;
    println!(
        "server restart -> new assignment completed: {:?}",
        restarted.elapsed()
    );
    wait_until("the outbox to drain", DEADLINE, || async {
        match edge.handle.outbox_len() {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    // Nothing stored twice.
    let reports = fx.reports().await;
    let mut ids: Vec<_> = reports.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), reports.len(), "a report was stored twice");
    assert_eq!(fx.updates(execution).await.len(), 3);
    edge.stop().await;
}

#[tokio::test]
async fn garbage_is_terminated_and_later_work_runs() {
    let fx = Fixture::new("edge-garbage", true).await;
    let edge = fx.start_edge().await;
    fx.publisher
        .append(Outgoing {
            subject: subjects::assignments(&fx.node),
            msg_id: "garbage-1".into(),
            payload: bytes_of(b"\xc1\xff not a cairn envelope"),
            expect: Expect::Nothing,
        })
        .await
        .unwrap();
    // A well-formed envelope of the wrong family: an unknown type for an edge.
    let report = Envelope::new(
        cairn_shared::ReportId::generate(),
        None,
        Timestamp::now(),
        Report::from(cairn_shared::report::NodeHello {
            node: fx.node.clone(),
            labels: Default::default(),
            capacity: Some(1),
            resources: None,
        }),
    );
    fx.publisher
        .append(Outgoing {
            subject: subjects::assignments(&fx.node),
            msg_id: "garbage-2".into(),
            payload: report.encode().unwrap().into(),
            expect: Expect::Nothing,
        })
        .await
        .unwrap();
    let execution = ExecutionId::generate();
    fx.run(execution, sh("true")).await;
    fx.updates_until(execution, ExecutionState::Completed).await;
    fx.assignments_settled().await;
    let rejected = edge.handle.rejected().await.unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[1].1.contains("NodeHello"), "{rejected:?}");
    assert_eq!(edge.handle.rejected_count(), 2);
    edge.stop().await;
}

fn bytes_of(b: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(b)
}

#[tokio::test]
async fn a_data_dir_belongs_to_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeId::new("node-a").unwrap();
    let edge = Edge::open(EdgeConfig::new(a.clone(), dir.path()))
        .await
        .unwrap();
    drop(edge);
    // Same id again: fine (the writer thread of the first may still be closing the file).
    let reopen = || async {
        match Edge::open(EdgeConfig::new(a.clone(), dir.path())).await {
            Ok(edge) => Ok(edge),
            Err(cairn_edge::Error::Open { reason, .. }) => Err(reason),
            Err(e) => panic!("unexpected: {e}"),
        }
    };
    drop(wait_until("reopening", DEADLINE, reopen).await);
    let b = NodeId::new("node-b").unwrap();
    let refused = wait_until("a verdict on another id", DEADLINE, || async {
        match Edge::open(EdgeConfig::new(b.clone(), dir.path())).await {
            Ok(_) => panic!("a data dir of node-a was adopted by node-b"),
            Err(cairn_edge::Error::Open { reason, .. }) => Err(reason),
            Err(e) => Ok(e),
        }
    })
    .await;
    let text = refused.to_string();
    assert!(
        matches!(refused, cairn_edge::Error::NodeMismatch { .. })
            && text.contains("node-a")
            && text.contains("node-b"),
        "{text}"
    );
}

/// The edge as a real process: this test binary re-executed with `CAIRN_EDGE_CHILD` set
/// runs only [`edge_child_process`], which runs an edge until it is killed.
fn spawn_edge_process(fx: &Fixture, log_name: &str) -> EdgeProcess {
    let log = std::fs::File::create(fx.dir.path().join(log_name)).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "edge_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CAIRN_EDGE_CHILD", "1")
        .env("CAIRN_EDGE_URL", fx.server.url())
        .env("CAIRN_EDGE_NODE", fx.node.as_str())
        .env("CAIRN_EDGE_DATA", fx.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    EdgeProcess(child)
}

/// Not a test by itself: the body of the edge child process (see [`spawn_edge_process`]).
#[test]
fn edge_child_process() {
    if std::env::var_os("CAIRN_EDGE_CHILD").is_none() {
        return;
    }
    let env = |name: &str| std::env::var(name).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = EdgeConfig::new(
            NodeId::new(env("CAIRN_EDGE_NODE")).unwrap(),
            env("CAIRN_EDGE_DATA"),
        );
        config.capacity = Some(2);
        config.heartbeat_interval = Duration::from_millis(200);
        let edge = Edge::open(config).await.unwrap();
        let client = cairn_streams::connect_persistent(&env("CAIRN_EDGE_URL"), None, "edge-child")
            .await
            .unwrap();
        edge.run(client, CancellationToken::new()).await.unwrap();
    });
}

/// An edge child process, SIGKILLed when dropped so a failing test leaves none behind.
struct EdgeProcess(Child);

impl EdgeProcess {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A task's pid, SIGKILLed when dropped: a crash test's orphan must not outlive a failure.
struct TaskPid(i32);

impl Drop for TaskPid {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[tokio::test]
async fn a_crashed_edge_reports_its_work_failed_once_and_never_reruns_it() {
    let fx = Fixture::new("edge-crash", true).await;
    let dir = fx.dir.path().to_path_buf();
    let mut first = spawn_edge_process(&fx, "edge-1.log");
    let execution = ExecutionId::generate();
    let script = format!(
        "echo $$ > {}/task.pid; echo started >> {}/runs; exec sleep 300",
        dir.display(),
        dir.display()
    );
    fx.run(execution, sh(&script)).await;
    fx.updates_until(execution, ExecutionState::Running).await;
    let task_pid = read_pid(&dir.join("task.pid")).await;
    let _orphan = TaskPid(task_pid);

    first.kill9();
    assert!(alive(task_pid), "the task outlives its edge's SIGKILL");

    let restarted = Instant::now();
    let mut second = spawn_edge_process(&fx, "edge-2.log");
    let updates = fx.updates_until(execution, ExecutionState::Failed).await;
    println!(
        "edge restart -> interrupted attempt reported failed: {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        updates.last().unwrap().reason.as_deref(),
        Some("edge restarted")
    );
    wait_until("the orphaned task to be killed", DEADLINE, || async {
        if alive(task_pid) {
            Err(task_pid)
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(fx.log(execution).await.2, "failed");

    // The same attempt delivered again is deduped, not rerun.
    fx.run(execution, sh(&script)).await;
    fx.assignments_settled().await;

    // Barrier: a third start flushes whatever the second left in its outbox before its
    // own hello, so once that hello is stored every report of the second is too.
    second.kill9();
    let mut third = spawn_edge_process(&fx, "edge-3.log");
    wait_until("the third hello", DEADLINE, || async {
        let hellos = fx
            .reports()
            .await
            .iter()
            .filter(|r| matches!(r.body, Report::NodeHello(_)))
            .count();
        if hellos == 3 { Ok(()) } else { Err(hellos) }
    })
    .await;
    third.kill9();

    assert_eq!(
        states(&fx.updates(execution).await),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Failed
        ],
        "reported failed exactly once"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        "started\n"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_ends_running_tasks_and_says_so() {
    let fx = Fixture::new("edge-shutdown", true).await;
    let edge = fx.start_edge().await;
    let dir = fx.dir.path().to_path_buf();
    let execution = ExecutionId::generate();
    fx.run(
        execution,
        sh(&format!(
            "echo $$ > {}/task.pid; exec sleep 300",
            dir.display()
        )),
    )
    .await;
    fx.updates_until(execution, ExecutionState::Running).await;
    let pid = read_pid(&dir.join("task.pid")).await;
    let _guard = TaskPid(pid);
    // Returns only after the task ended and its report was flushed.
    edge.stop().await;
    assert!(!alive(pid));
    let updates = fx.updates(execution).await;
    assert_eq!(
        states(&updates),
        [
            ExecutionState::Accepted,
            ExecutionState::Running,
            ExecutionState::Failed
        ]
    );
    assert_eq!(updates[2].reason.as_deref(), Some("edge shut down"));
}

/// The health reports of an execution, in stream order, with what came before each.
async fn health_after(fx: &Fixture, execution: ExecutionId) -> Vec<(bool, Vec<ExecutionState>)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for report in fx.reports().await {
        match report.body {
            Report::ExecutionUpdate(u) if u.execution == execution => seen.push(u.state),
            Report::ExecutionHealth(h) if h.execution == execution => {
                out.push((h.healthy, seen.clone()));
            }
            _ => {}
        }
    }
    out
}

/// Waits for the execution's health reports, once there is one.
async fn first_health(fx: &Fixture, execution: ExecutionId) -> Vec<(bool, Vec<ExecutionState>)> {
    wait_until("a health report", DEADLINE, || async {
        let judged = health_after(fx, execution).await;
        if judged.is_empty() {
            Err("none yet")
        } else {
            Ok(judged)
        }
    })
    .await
}

fn health(min_ms: u64, deadline_ms: u64) -> Option<Health> {
    Some(Health {
        min_healthy_time: HumanDuration(Duration::from_millis(min_ms)),
        healthy_deadline: HumanDuration(Duration::from_millis(deadline_ms)),
    })
}

#[tokio::test]
async fn a_task_that_keeps_running_is_reported_healthy_once_after_running() {
    let fx = Fixture::new("edge-1", true).await;
    let edge = fx.start_edge().await;
    let execution = ExecutionId::generate();
    let mut assignment = run(execution, sh("sleep 30"));
    assignment.health = health(300, 10_000);
    fx.publish(assignment.into()).await;
    let judged = first_health(&fx, execution).await;
    assert_eq!(
        judged,
        [(
            true,
            vec![ExecutionState::Accepted, ExecutionState::Running]
        )],
        "healthy once, after running"
    );
    // A task that ends first says nothing of its health: its end says it.
    let quick = ExecutionId::generate();
    let mut assignment = run(quick, sh("exit 4"));
    assignment.health = health(300, 10_000);
    fx.publish(assignment.into()).await;
    fx.updates_until(quick, ExecutionState::Failed).await;
    fx.updates_until(execution, ExecutionState::Running).await;
    assert_eq!(health_after(&fx, quick).await, []);
    edge.stop().await;
}

#[tokio::test]
async fn a_task_not_running_long_enough_by_the_deadline_is_reported_not_healthy() {
    // A restart's pause counts against the deadline: 400 ms of pause and 300 ms of running
    // cannot fit in 500 ms.
    let fx = Fixture::new("edge-1", true).await;
    let edge = fx.start_edge().await;
    let execution = ExecutionId::generate();
    let mut assignment = run(execution, sh("sleep 30"));
    assignment.health = health(300, 500);
    assignment.delay = Some(HumanDuration(Duration::from_millis(400)));
    fx.publish(assignment.into()).await;
    let judged = first_health(&fx, execution).await;
    assert_eq!(judged.len(), 1, "{judged:?}");
    assert!(!judged[0].0, "not healthy: {judged:?}");
    let reason = fx
        .reports()
        .await
        .into_iter()
        .find_map(|r| match r.body {
            Report::ExecutionHealth(h) => h.reason,
            _ => None,
        })
        .unwrap_or_default();
    assert!(reason.contains("within 500ms"), "{reason}");
    edge.stop().await;
}

#[tokio::test]
async fn a_stop_during_a_restarts_pause_ends_it_without_starting_the_task() {
    let fx = Fixture::new("edge-1", true).await;
    let edge = fx.start_edge().await;
    let execution = ExecutionId::generate();
    let marker = fx.dir.path().join("started");
    let mut assignment = run(execution, sh(&format!("touch {}", marker.display())));
    assignment.delay = Some(HumanDuration(Duration::from_secs(30)));
    fx.publish(assignment.into()).await;
    fx.updates_until(execution, ExecutionState::Accepted).await;
    fx.publish(
        StopExecution {
            execution,
            attempt: 1,
            reason: "job stopped".into(),
        }
        .into(),
    )
    .await;
    let updates = fx.updates_until(execution, ExecutionState::Stopped).await;
    assert_eq!(
        states(&updates),
        [ExecutionState::Accepted, ExecutionState::Stopped],
        "never running"
    );
    assert!(!marker.exists(), "the task never started");
    edge.stop().await;
}
