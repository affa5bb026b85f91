//! The `exec` engine: runs one attempt as a child process in a process group of its own,
//! streams its output into the outbox, and records exactly one terminal state for it.
//!
//! Every state change is recorded together with its report in one store transaction, and a
//! terminal change is refused once the attempt is terminal, so an attempt reports at most
//! one outcome whatever races (stop against exit, shutdown against timeout) occur.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_shared::report::ExecutionHealth;
use cairn_shared::spec::{Health, HumanDuration, TaskSpec};
use cairn_shared::{ExecutionState, NodeId};
use cairn_streams::backoff::Backoff;
use cairn_streams::{LogEntry, OutputStream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::TaskMetrics;
use crate::outbox;
use crate::store::{AttemptKey, Change, ProcessIdentity, Store};

/// Largest log chunk: far below NATS's 1 MiB payload limit, so no chunk is ever refused,
/// and the most output one execution holds in memory per stream.
pub const MAX_CHUNK: usize = 16 * 1024;
/// A partial line (no newline yet) is sent after this much quiet, so prompts and progress
/// output reach followers.
const PARTIAL_LINE_AFTER: Duration = Duration::from_millis(200);
/// How long output may keep flowing after the task's process group is gone; a process that
/// escaped the group and still holds the pipes does not keep the attempt open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// When and how a running attempt is judged: healthy once it has run `min_healthy_time`,
/// unless `healthy_deadline`, counted from when the edge took it (a restart's pause
/// included), comes first, and then not healthy.
async fn judgement(
    health: Option<Health>,
    taken: Instant,
    running: Instant,
) -> (bool, Option<String>) {
    let Some(Health {
        min_healthy_time: HumanDuration(min),
        healthy_deadline: HumanDuration(deadline),
    }) = health
    else {
        return std::future::pending().await;
    };
    let healthy_at = running + min;
    let deadline_at = taken + deadline;
    if healthy_at <= deadline_at {
        tokio::time::sleep_until(healthy_at).await;
        (true, None)
    } else {
        tokio::time::sleep_until(deadline_at).await;
        let reason = format!(
            "not running for {} within {} of being taken",
            HumanDuration(min),
            HumanDuration(deadline)
        );
        (false, Some(reason))
    }
}

/// Why an attempt must end before its process does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The orchestrator asked (a `StopExecution`), with its reason.
    Requested(String),
    /// The edge is shutting down.
    Shutdown,
}

/// Everything one attempt needs.
pub struct Attempt {
    pub node: NodeId,
    pub store: Store,
    pub key: AttemptKey,
    pub job_name: String,
    pub task: TaskSpec,
    /// How long to wait before starting the process: a restart's pause.
    pub delay: Duration,
    /// How to judge its health, for a job with `update`.
    pub health: Option<Health>,
    /// Where its start and failure are counted.
    pub tasks: TaskMetrics,
    pub stop_grace: Duration,
    /// Where the task's secrets are read from, if the edge has any.
    pub secrets_dir: Option<std::sync::Arc<std::path::Path>>,
    pub stop: watch::Receiver<Option<StopCause>>,
}

/// How the attempt ended.
#[derive(Clone)]
struct Outcome {
    state: ExecutionState,
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl Outcome {
    fn failed(reason: String) -> Self {
        Self {
            state: ExecutionState::Failed,
            exit_code: None,
            reason: Some(reason),
        }
    }

    fn stopped(cause: &StopCause, exit_code: Option<i32>) -> Self {
        match cause {
            StopCause::Requested(reason) => Self {
                state: ExecutionState::Stopped,
                exit_code,
                reason: Some(reason.clone()),
            },
            StopCause::Shutdown => Self {
                state: ExecutionState::Failed,
                exit_code,
                reason: Some("edge shut down".into()),
            },
        }
    }

    fn of_exit(status: std::process::ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(0), _) => Self {
                state: ExecutionState::Completed,
                exit_code: Some(0),
                reason: None,
            },
            (Some(code), _) => Self {
                state: ExecutionState::Failed,
                exit_code: Some(code),
                reason: Some(format!("exited with code {code}")),
            },
            (None, Some(signal)) => Self::failed(format!("killed by signal {signal}")),
            (None, None) => Self::failed("ended without an exit code".into()),
        }
    }
}

impl Attempt {
    /// Runs the attempt to its end. Recording the end is retried while the store says it
    /// may succeed (disk trouble), since until it is recorded the attempt holds its place
    /// on the node and nobody hears how it ended. A failure that cannot pass (the store
    /// closed at shutdown) leaves the attempt non-terminal in the store, and it is reported
    /// `failed` ("edge restarted") on the next start.
    pub async fn run(mut self) {
        let key = self.key;
        let outcome = self.execute().await;
        let Some(outcome) = outcome else { return };
        let mut backoff = Backoff::default();
        loop {
            match self.finish(outcome.clone()).await {
                Ok(()) => return,
                Err(e) if e.is_retryable() => {
                    let pause = backoff.next_delay();
                    tracing::warn!(attempt = %key, error = %e, retry_in = ?pause, "recording the end of an attempt failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => {
                    tracing::error!(attempt = %key, error = %e, "recording the end of an attempt failed");
                    return;
                }
            }
        }
    }

    /// Records the end: the log's end marker and the terminal report, in that order and in
    /// one transaction, so once an attempt is reported terminal its log is complete.
    async fn finish(&self, outcome: Outcome) -> crate::Result<()> {
        let failed = outcome.state == ExecutionState::Failed;
        let entries = vec![
            outbox::end_of_log(&self.node, self.key, outcome.state),
            outbox::update_entry(
                &self.node,
                self.key,
                outcome.state,
                outcome.exit_code,
                outcome.reason.clone(),
            )?,
        ];
        let change = Change {
            state: outcome.state,
            exit_code: outcome.exit_code,
            reason: outcome.reason,
            process: None,
        };
        if !self.store.transition(self.key, change, entries).await? {
            tracing::debug!(attempt = %self.key, "attempt was already terminal");
        } else if failed {
            self.tasks.failures.inc();
        }
        Ok(())
    }

    fn stop_cause(&self) -> Option<StopCause> {
        self.stop.borrow().clone()
    }

    /// Runs the process; `None` when there is nothing left to record.
    async fn execute(&mut self) -> Option<Outcome> {
        let taken = Instant::now();
        if !self.delay.is_zero() {
            tracing::debug!(attempt = %self.key, delay = ?self.delay, "waiting before starting: the restart's pause");
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                // A stop ends the wait, and is read below; the sender gone means the
                // agent is gone, which is a shutdown.
                stopped = stop.wait_for(Option::is_some) => if stopped.is_err() {
                    return Some(Outcome::stopped(&StopCause::Shutdown, None));
                },
            }
        }
        if let Some(cause) = self.stop_cause() {
            // Stopped between being recorded and being started: never started at all.
            return Some(Outcome::stopped(&cause, None));
        }
        let mut child = match self.command().and_then(|mut c| {
            c.spawn().map_err(|e| {
                format!(
                    "cannot start {:?}: {e}",
                    self.task.command.first().map_or("", String::as_str)
                )
            })
        }) {
            Ok(child) => child,
            Err(reason) => return Some(Outcome::failed(reason)),
        };
        let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            // Only possible if it was already reaped, which nothing here does.
            return Some(Outcome::failed("the process vanished at start".into()));
        };
        let identity = ProcessIdentity {
            pid,
            start_ticks: start_ticks(pid),
        };
        let running =
            match outbox::update_entry(&self.node, self.key, ExecutionState::Running, None, None) {
                Ok(entry) => {
                    let change = Change {
                        state: ExecutionState::Running,
                        exit_code: None,
                        reason: None,
                        process: Some(identity),
                    };
                    self.store.transition(self.key, change, vec![entry]).await
                }
                Err(e) => Err(e),
            };
        match running {
            Ok(true) => {
                self.tasks.starts.inc();
                self.tasks
                    .start_seconds
                    .observe(taken.elapsed().as_secs_f64());
            }
            Ok(false) => {
                // Already terminal (cannot happen while this task owns the attempt); do not
                // leave a process running that nobody accounts for.
                kill_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
                return None;
            }
            Err(e) => {
                // Without a durable `running` record a crash could not find this process
                // again: do not run it.
                tracing::error!(attempt = %self.key, error = %e, "recording running failed");
                kill_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
                return Some(Outcome::failed(format!(
                    "edge could not record the start: {e}"
                )));
            }
        }
        let index = Arc::new(AtomicU64::new(0));
        let mut pumps = tokio::task::JoinSet::new();
        if let Some(out) = child.stdout.take() {
            pumps.spawn(self.pump(out, OutputStream::Stdout, Arc::clone(&index)));
        }
        if let Some(err) = child.stderr.take() {
            pumps.spawn(self.pump(err, OutputStream::Stderr, Arc::clone(&index)));
        }
        let outcome = self.supervise(&mut child, pid, taken).await;
        // Whatever the task left behind in its group ends with it and releases the pipes.
        kill_group(pid, Signal::SIGKILL);
        let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            while pumps.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(attempt = %self.key, "output still open after the task ended; log cut");
            pumps.abort_all();
        }
        Some(outcome)
    }

    /// Waits for the process, a timeout or a stop, whichever comes first; meanwhile, for
    /// a job with `update`, says once whether it is healthy (see [`Attempt::judge`]).
    async fn supervise(&mut self, child: &mut Child, pid: i32, taken: Instant) -> Outcome {
        let timeout = self.task.timeout;
        let deadline = async {
            match timeout {
                Some(HumanDuration(d)) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let judgement = judgement(self.health, taken, Instant::now());
        tokio::pin!(judgement);
        let mut judged = self.health.is_none();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                status = child.wait() => return match status {
                    Ok(status) => Outcome::of_exit(status),
                    Err(e) => Outcome::failed(format!("waiting for the process: {e}")),
                },
                () = &mut deadline => {
                    let status = terminate(child, pid, self.stop_grace).await;
                    let timeout = timeout.map(|t| t.to_string()).unwrap_or_default();
                    return Outcome {
                        state: ExecutionState::Failed,
                        exit_code: status.and_then(|s| s.code()),
                        reason: Some(format!("timed out after {timeout}")),
                    };
                }
                // The guard `wait_for` returns must not live across an await: clone it out.
                cause = async { stop.wait_for(Option::is_some).await.ok().and_then(|c| c.clone()) } => {
                    // The sender gone means the agent is gone: treat it as a shutdown.
                    let cause = cause.unwrap_or(StopCause::Shutdown);
                    let status = terminate(child, pid, self.stop_grace).await;
                    return Outcome::stopped(&cause, status.and_then(|s| s.code()));
                }
                verdict = &mut judgement, if !judged => {
                    judged = true;
                    self.judge(verdict).await;
                }
            }
        }
    }

    /// Reports the attempt's health, once, after its `running` report (the outbox keeps
    /// the order). A store that cannot take it is logged: the orchestrator then hears no
    /// word on it, and its rollout waits as for any execution not yet healthy.
    async fn judge(&self, (healthy, reason): (bool, Option<String>)) {
        let report = ExecutionHealth {
            node: self.node.clone(),
            execution: self.key.execution,
            attempt: self.key.attempt,
            healthy,
            reason,
        };
        let written = match outbox::report_entry(&self.node, report.into()) {
            Ok(entry) => self.store.append(vec![entry]).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => tracing::debug!(attempt = %self.key, healthy, "health reported"),
            Err(e) => {
                tracing::error!(attempt = %self.key, error = %e, "recording the attempt's health failed");
            }
        }
    }

    fn command(&self) -> Result<Command, String> {
        let task = &self.task;
        let (program, rest) = task
            .command
            .split_first()
            .ok_or_else(|| "the task names no program".to_owned())?;
        let mut command = Command::new(program);
        command
            .args(rest)
            .args(&task.args)
            .envs(&task.env)
            .env("CAIRN_NODE_ID", self.node.as_str())
            .env("CAIRN_EXECUTION_ID", self.key.execution.to_string())
            .env("CAIRN_ATTEMPT", self.key.attempt.to_string())
            .env("CAIRN_JOB_NAME", &self.job_name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: stop and timeout signal the whole group, so `sh -c`
            // children die with their shell. It also keeps a terminal's Ctrl-C aimed at
            // the edge from reaching tasks directly; the edge decides how they end.
            .process_group(0)
            // If this task is dropped without reaping (runtime shutdown), do not leave
            // the direct child running unaccounted.
            .kill_on_drop(true);
        if let Some(dir) = &task.working_dir {
            command.current_dir(dir);
        }
        for name in &task.secrets {
            command.env(name, self.secret(name)?);
        }
        Ok(command)
    }

    /// The value of the secret `name`: the file of that name in the secrets directory,
    /// less one trailing newline. Why it cannot be had names the secret, never its value.
    fn secret(&self, name: &str) -> Result<String, String> {
        let Some(dir) = &self.secrets_dir else {
            return Err(format!(
                "the task needs secret {name:?}, and this edge has no --secrets-dir"
            ));
        };
        let path = dir.join(name);
        let value = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!(
                    "secret {name:?} is not on this node (no file {})",
                    path.display()
                )
            }
            _ => format!(
                "secret {name:?} cannot be read from {}: {e}",
                path.display()
            ),
        })?;
        Ok(value
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v))
            .unwrap_or(&value)
            .to_owned())
    }

    /// Reads one output stream into outbox chunks that end on line boundaries, holding at
    /// most [`MAX_CHUNK`] bytes. Backpressure is the pipe: while the outbox write waits,
    /// the task blocks on its writes instead of the edge buffering without bound.
    fn pump(
        &self,
        mut reader: impl AsyncRead + Unpin + Send + 'static,
        stream: OutputStream,
        index: Arc<AtomicU64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let node = self.node.clone();
        let key = self.key;
        async move {
            let mut pending = BytesMut::with_capacity(MAX_CHUNK);
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let read = if pending.is_empty() {
                    Ok(reader.read(&mut buf).await)
                } else {
                    tokio::time::timeout(PARTIAL_LINE_AFTER, reader.read(&mut buf)).await
                };
                let (eof, quiet) = match read {
                    Ok(Ok(0)) | Ok(Err(_)) => (true, false),
                    Ok(Ok(n)) => {
                        pending.extend_from_slice(&buf[..n]);
                        (false, false)
                    }
                    // Quiet for a while with a partial line: send it as it is.
                    Err(_) => (false, true),
                };
                // Send whole lines; hold a trailing partial line unless the stream ended
                // or went quiet, or the line alone fills a chunk.
                let cut = if eof || quiet {
                    pending.len()
                } else {
                    match pending.iter().rposition(|b| *b == b'\n') {
                        Some(i) => i + 1,
                        None if pending.len() >= MAX_CHUNK => pending.len(),
                        None => 0,
                    }
                };
                let mut chunks: Vec<Bytes> = Vec::new();
                let mut ready = pending.split_to(cut);
                while !ready.is_empty() {
                    let n = ready.len().min(MAX_CHUNK);
                    chunks.push(ready.split_to(n).freeze());
                }
                if !chunks.is_empty() {
                    let entries = chunks
                        .into_iter()
                        .map(|data| {
                            let n = index.fetch_add(1, Ordering::Relaxed);
                            let entry = LogEntry::Output {
                                attempt: key.attempt,
                                stream,
                                data,
                            };
                            outbox::log_entry(
                                &node,
                                key.execution,
                                LogEntry::chunk_id(key.execution, key.attempt, n),
                                &entry,
                            )
                        })
                        .collect();
                    if let Err(e) = store.append(entries).await {
                        tracing::error!(attempt = %key, error = %e, "log output lost: store write failed");
                    }
                }
                if eof {
                    return;
                }
            }
        }
    }
}

/// SIGTERM to the group, then SIGKILL after `grace`; returns the exit status if it came.
async fn terminate(
    child: &mut Child,
    pid: i32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    kill_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            kill_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Signals every process of a task's group. A group that is already gone is fine.
pub fn kill_group(pgid: i32, signal: Signal) {
    if pgid <= 1 {
        return;
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, error = %e, "signalling a task's processes failed"),
    }
}

/// A process's start time in clock ticks since boot, from `/proc/<pid>/stat` (Linux).
/// With the pid it identifies the process: a pid is reused, a (pid, start) pair is not.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields
    // after its closing parenthesis, where field 3 (state) starts.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// After a crash: kills the process group of a task the previous edge process started, if
/// that very process still exists. Returns whether it did. Without a recorded start time
/// (not Linux) the pid cannot be told from a reused one, so nothing is killed.
pub fn kill_orphan(process: ProcessIdentity) -> bool {
    match (process.start_ticks, start_ticks(process.pid)) {
        (Some(recorded), Some(now)) if recorded == now => {
            kill_group(process.pid, Signal::SIGKILL);
            true
        }
        _ => false,
    }
}
