//! `job deploy` and `job stop`: commands go to the command stream and are accepted the
//! moment JetStream stores them, whether or not an orchestrator runs. `--wait` then follows
//! the decision in the event stream: accepted or rejected (with the reason), then the
//! job's state.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cairn_shared::codec::Envelope;
use cairn_shared::command::{
    DeployJob, DrainNode, JobRef, PromoteJob, RerunJob, RevertJob, SetNodeEligibility, StopJob,
};
use cairn_shared::{
    Command, CommandId, Event, JobId, JobSpec, JobState, JobType, NodeId, RolloutState, Seq,
    Timestamp,
};
use cairn_streams::{Outgoing, Publisher, ReadFrom, Reader, StreamKind, Topology, subjects};
use futures::StreamExt;
use serde::Serialize;

use cairn_orchestrator::query::{Answer, JobDetail, JobQuery, endpoint};
use cairn_orchestrator::store::NodeSummary;

use crate::Global;
use crate::output::{self, Cell};

/// Reads and checks a job spec; every error is one line that names the file, the line and
/// column where known, and the field (`line 3 column 8: count: invalid u32`).
pub fn load_spec(path: &Path) -> Result<JobSpec> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{name}: {e}"))?;
    if text.trim().is_empty() {
        bail!("{name}: the job spec is empty");
    }
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    // Unknown keys are kept for forward compatibility on the wire, but in a file a person
    // wrote they are almost always typos: note them on the way.
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path| unknown.push(path.to_string());
    let spec: JobSpec = if is_json {
        let mut de = serde_json::Deserializer::from_str(&text);
        let spec =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut de, &mut note))
                .map_err(|e| anyhow!("{name}: {}{}", field_of(e.path()), e.inner()))?;
        de.end().map_err(|e| anyhow!("{name}: {e}"))?;
        spec
    } else {
        let mut field = None;
        serde_saphyr::with_deserializer_from_str(&text, |de| {
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))
                .map_err(|e| {
                    field = Some(field_of(e.path()));
                    e.into_inner()
                })
        })
        .map_err(|e| anyhow!("{name}: {}", yaml_error(&e, field.as_deref())))?
    };
    if let Some(field) = unknown.first() {
        bail!("{name}: unknown field {field:?}");
    }
    spec.validate().map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(spec)
}

/// `count: ` for a field inside the spec; nothing for the spec as a whole, or where the
/// document broke off before a field could be named (`task.?`).
fn field_of(path: &serde_path_to_error::Path) -> String {
    match path.to_string() {
        unnamed if unnamed == "." || unnamed.contains('?') => String::new(),
        field => format!("{field}: "),
    }
}

/// The parser's message spans several lines with a snippet; its first line has the
/// position and the reason, and the field goes between them.
fn yaml_error(error: &serde_saphyr::Error, field: Option<&str>) -> String {
    let message = error.to_string();
    let first = message.lines().next().unwrap_or("invalid YAML");
    let first = first.trim_start_matches("error: ");
    let field = field.unwrap_or_default();
    match first.split_once(": ") {
        Some((at, reason)) if at.starts_with("line ") => format!("{at}: {field}{reason}"),
        _ => format!("{field}{first}"),
    }
}

/// Stores a command; returns once JetStream has it.
async fn submit(global: &Global, command: Command) -> Result<(CommandId, Reader)> {
    let js = global.jetstream("cairn-cli").await?;
    let id = CommandId::generate();
    let envelope = Envelope::new(id, None, Timestamp::now(), command);
    let publisher = Publisher::new(js.clone());
    let outgoing = Outgoing::command(&envelope)?;
    // Retried while the answer is "not now" (a cluster electing a stream's leader); the
    // command id makes a second store of it a no-op.
    let store = retrying(|| async {
        // Storing a command must not need an orchestrator to have run first, nor change
        // the settings of streams an operator set up.
        Topology::default()
            .create_if_missing(&js, StreamKind::Commands)
            .await?;
        publisher.append(outgoing.clone()).await
    });
    tokio::pin!(store);
    // A publish these credentials may not make is dropped by the server, which says so
    // apart from the publish: watched for, so a refusal is told at once and by name.
    let refused = async {
        loop {
            if let Some(refusal) = cairn_streams::permission_refusal() {
                return refusal;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(refused);
    let stored = tokio::select! {
        stored = tokio::time::timeout(Duration::from_secs(1), &mut store) => stored.ok(),
        refusal = &mut refused => return Err(refused_by(&refusal)),
    };
    let stored = match stored {
        Some(stored) => stored,
        None => {
            // A stream whose leader was just lost answers again once the cluster has
            // elected another, which can take a while on a loaded one.
            eprintln!("waiting for JetStream to store the command (a stream electing its leader?)");
            let rest = crate::JETSTREAM_WAIT.saturating_sub(Duration::from_secs(1));
            tokio::select! {
                stored = tokio::time::timeout(rest, &mut store) => stored.with_context(|| {
                    format!(
                        "JetStream did not store the command within {}s",
                        crate::JETSTREAM_WAIT.as_secs()
                    )
                })?,
                refusal = &mut refused => return Err(refused_by(&refusal)),
            }
        }
    };
    stored?;
    Ok((id, Reader::new(js.clone())))
}

/// A command the credentials may not store: nothing was stored.
fn refused_by(refusal: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "NATS refused the command ({refusal}): these credentials may not store commands \
         (the reader role queries and follows only); nothing was stored"
    )
}

/// Runs `attempt` until it succeeds or fails for good: a JetStream that answers "not now"
/// (a cluster electing a leader) is asked again. The caller bounds the time.
async fn retrying<T, F, Fut>(mut attempt: F) -> cairn_streams::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = cairn_streams::Result<T>>,
{
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "JetStream is not ready; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// The decision on a command: the job it concerns, and where the decision sits in the log.
struct Outcome {
    job: Option<JobId>,
    /// The job's version once decided (absent from decisions of older builds).
    version: Option<u32>,
    seq: Seq,
}

/// A command's decision about a job: the job, its version then, and where it sits.
struct Decided {
    job: JobId,
    version: Option<u32>,
    seq: Seq,
}

/// Waits for the decision on a command about a job: the job, and where the decision sits.
async fn decided_job(reader: &Reader, command: CommandId, deadline: Instant) -> Result<Decided> {
    let decided = outcome(reader, command, deadline).await?;
    let job = decided
        .job
        .context("the orchestrator accepted the command without naming its job")?;
    Ok(Decided {
        job,
        version: decided.version,
        seq: decided.seq,
    })
}

/// Follows the event stream until the command's outcome appears.
async fn outcome(reader: &Reader, command: CommandId, deadline: Instant) -> Result<Outcome> {
    let topology = Topology::default();
    let created = retrying(|| topology.create_if_missing(reader.context(), StreamKind::Events));
    tokio::time::timeout_at(deadline.into(), created)
        .await
        .context("JetStream did not answer for the event stream in time")??;
    let events = reader
        .read(
            StreamKind::Events,
            ReadFrom::Start,
            Some(subjects::command_outcome(command)),
        )
        .await?;
    let mut events = std::pin::pin!(events);
    eprintln!("waiting for an orchestrator to decide command {command}…");
    loop {
        let raw = match tokio::time::timeout_at(deadline.into(), events.next()).await {
            Err(_) => bail!(
                "timed out waiting for command {command} to be decided (is an orchestrator running?)"
            ),
            Ok(None) => bail!("the event stream ended"),
            Ok(Some(raw)) => raw?,
        };
        match Envelope::<Event>::decode(&raw.payload).map(|e| e.body) {
            Ok(Event::CommandAccepted(accepted)) => {
                return Ok(Outcome {
                    job: accepted.job,
                    version: accepted.version,
                    seq: raw.seq,
                });
            }
            Ok(Event::CommandRejected(rejected)) => bail!("rejected: {}", rejected.reason),
            _ => continue,
        }
    }
}

/// Where a job's state settles after a command: its version and state.
struct Settled {
    version: u32,
    state: JobState,
}

/// Watches the job through the orchestrator's views until they include the command's
/// decision and the job's state is one `done` accepts, or a failure. Progress goes to stderr.
async fn follow_job(
    global: &Global,
    decided: &Decided,
    deadline: Instant,
    done: impl Fn(JobType, JobState) -> bool,
) -> Result<Settled> {
    let (job, decided_at) = (decided.job, decided.seq);
    let mut shown = None;
    let mut said = None;
    let mut version = decided.version;
    loop {
        let query = JobQuery {
            job: job.to_string(),
        };
        let answer = match crate::query::ask::<_, JobDetail>(global, endpoint::JOB, &query).await {
            Ok(answer) => Some(answer),
            // The views have not caught up with the decision yet.
            Err(e) if crate::query::Refused::is_not_found(&e) => None,
            Err(e) => return Err(e),
        };
        if let Some(answer) = answer.filter(|a: &Answer<JobDetail>| a.applied_seq >= decided_at) {
            let job = &answer.result.job;
            // The version the command started: a rollout of it that fails, or a version
            // after it (an auto-revert, another deploy), ends the wait.
            let ours = *version.get_or_insert(job.version);
            let failed = [&job.rollout, &job.previous_rollout]
                .into_iter()
                .flatten()
                .find(|r| r.version == ours && r.state == RolloutState::Failed);
            if let Some(rollout) = failed {
                if job.version != ours {
                    bail!(
                        "job {} version {ours}: its rollout failed: {}; the job went back to an earlier spec as version {}",
                        job.name,
                        rollout.reason.as_deref().unwrap_or("no reason recorded"),
                        job.version
                    );
                }
                bail!(
                    "job {} version {ours}: its rollout failed: {}",
                    job.name,
                    rollout.reason.as_deref().unwrap_or("no reason recorded")
                );
            }
            if job.version != ours {
                bail!(
                    "job {} version {ours} was replaced by version {} before it got there",
                    job.name,
                    job.version
                );
            }
            let state = job.state;
            let reason = cairn_orchestrator::rows::job_reason(job);
            if shown != Some(state) || said != reason {
                match &reason {
                    Some(reason) if job.placement.is_some() => {
                        eprintln!("job {}: {state}, {reason}", job.name);
                    }
                    _ => eprintln!("job {}: {state}", job.name),
                }
                shown = Some(state);
                said = reason;
            }
            if done(job.job_type, state) || matches!(state, JobState::Failed | JobState::Stopped) {
                return Ok(Settled {
                    version: answer.result.job.version,
                    state,
                });
            }
            if let Some(healthy) = canaries_waiting(&answer.result) {
                eprintln!(
                    "job {}: {healthy} canaries of version {} healthy; `cairn job promote {}` rolls out the rest",
                    job.name, job.version, job.name
                );
                return Ok(Settled {
                    version: job.version,
                    state,
                });
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out waiting for job {job}; its state is {}{}",
                shown.map_or("unknown".to_owned(), |s| s.to_string()),
                said.map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
        // The views follow the log within milliseconds; a person waits on this loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many canaries a rollout waiting for `cairn job promote` has, once every one of
/// them is healthy (as the decider requires to promote); none while it waits for nothing.
fn canaries_waiting(detail: &JobDetail) -> Option<usize> {
    let job = &detail.job;
    let rollout = job
        .rollout
        .as_ref()
        .filter(|r| r.version == job.version && r.state == RolloutState::Rolling && !r.promoted)?;
    job.spec.update.filter(|u| u.canary > 0)?;
    let progress = cairn_orchestrator::rows::RolloutProgress::of(rollout, &detail.executions);
    (progress.older > 0 && progress.healthy > 0 && progress.pending == 0)
        .then_some(progress.healthy)
}

/// What `job deploy` prints. Only the orchestrator decides a job's id and version, so
/// without `--wait` they are `null` (never guessed) and `state` is `submitted`: the command
/// is stored and will be decided. The fields are always present, so a script can test them.
#[derive(Serialize)]
struct Deployed {
    job_id: Option<JobId>,
    name: String,
    version: Option<u32>,
    command_id: CommandId,
    /// `submitted` until an orchestrator decides; with `--wait`, the job's state.
    state: String,
}

pub async fn deploy(global: &Global, file: &Path, wait: bool, timeout: Duration) -> Result<()> {
    let spec = load_spec(file)?;
    let name = spec.name.clone();
    let job_type = spec.job_type;
    let (command_id, reader) = submit(global, DeployJob { spec }.into()).await?;
    let mut result = Deployed {
        job_id: None,
        name,
        version: None,
        command_id,
        state: "submitted".into(),
    };
    if wait {
        let deadline = Instant::now() + timeout;
        let decided = decided_job(&reader, command_id, deadline).await?;
        result.job_id = Some(decided.job);
        let settled = follow_job(global, &decided, deadline, |_, s| started(job_type, s)).await?;
        result.version = Some(settled.version);
        result.state = settled.state.to_string();
        print_result(global, &result)?;
        if matches!(settled.state, JobState::Failed | JobState::Stopped) {
            bail!("job {} {}", result.name, settled.state);
        }
        return Ok(());
    }
    print_result(global, &result)
}

/// Whether a job that was (re)started has got where `--wait` waits for: long-running jobs
/// when they run, batch and ops when they finish.
fn started(job_type: JobType, state: JobState) -> bool {
    match job_type {
        JobType::Batch | JobType::Ops => state == JobState::Completed,
        JobType::Service | JobType::Daemon => {
            matches!(state, JobState::Running | JobState::Completed)
        }
    }
}

/// What `job rerun` and `job revert` print: like `job deploy`'s, `version` (the version
/// that runs) is `null` until `--wait` has seen the decision. `job revert` adds
/// `reverted_to`, the version whose spec comes back: known at once when `--version` names
/// it, and otherwise once `--wait` has seen the new version.
#[derive(Serialize)]
struct Restarted {
    job_id: Option<JobId>,
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverted_to: Option<Option<u32>>,
    command_id: CommandId,
    /// `submitted` until an orchestrator decides; with `--wait`, the job's state.
    state: String,
}

pub async fn rerun(global: &Global, job: String, wait: bool, timeout: Duration) -> Result<()> {
    let (job, job_id) = target(global, job).await?;
    restart(global, RerunJob { job }.into(), job_id, None, wait, timeout).await
}

pub async fn promote(global: &Global, job: String, wait: bool, timeout: Duration) -> Result<()> {
    let (job, job_id) = target(global, job).await?;
    restart(
        global,
        PromoteJob { job }.into(),
        job_id,
        None,
        wait,
        timeout,
    )
    .await
}

pub async fn revert(
    global: &Global,
    job: String,
    version: Option<u32>,
    wait: bool,
    timeout: Duration,
) -> Result<()> {
    if version == Some(0) {
        bail!("--version: versions start at 1");
    }
    let (job, job_id) = target(global, job).await?;
    let command = RevertJob { job, version }.into();
    restart(global, command, job_id, Some(version), wait, timeout).await
}

/// Stores a command that starts a job's run afresh and prints what it did, with `--wait`
/// once the run got where `--wait` waits for.
async fn restart(
    global: &Global,
    command: Command,
    job_id: Option<JobId>,
    reverted_to: Option<Option<u32>>,
    wait: bool,
    timeout: Duration,
) -> Result<()> {
    let (command_id, reader) = submit(global, command).await?;
    let mut result = Restarted {
        job_id,
        version: None,
        reverted_to,
        command_id,
        state: "submitted".into(),
    };
    if !wait {
        return print_result(global, &result);
    }
    let settled = wait_started(global, &reader, command_id, timeout).await?;
    result.job_id = Some(settled.job);
    result.version = Some(settled.version);
    // A revert by default brings back the version before the one it replaced.
    if let Some(to @ None) = &mut result.reverted_to {
        *to = settled.version.checked_sub(2);
    }
    result.state = settled.state.to_string();
    print_result(global, &result)?;
    settled.ended_badly()
}

/// Where a (re)started job got to under `--wait`.
struct Started {
    job: JobId,
    version: u32,
    state: JobState,
}

impl Started {
    /// `--wait` fails when the job ended failed or stopped, after printing it.
    fn ended_badly(&self) -> Result<()> {
        if matches!(self.state, JobState::Failed | JobState::Stopped) {
            bail!("job {} {}", self.job, self.state);
        }
        Ok(())
    }
}

/// Waits for the decision on a command that (re)starts a job, then for the job to run or
/// finish as `--wait` means it for its type.
async fn wait_started(
    global: &Global,
    reader: &Reader,
    command_id: CommandId,
    timeout: Duration,
) -> Result<Started> {
    let deadline = Instant::now() + timeout;
    let decided = decided_job(reader, command_id, deadline).await?;
    let settled = follow_job(global, &decided, deadline, started).await?;
    Ok(Started {
        job: decided.job,
        version: settled.version,
        state: settled.state,
    })
}

fn print_result<T: Serialize>(global: &Global, value: &T) -> Result<()> {
    output::print(global.output, value, || {
        let json = serde_json::to_value(value).unwrap_or_default();
        let rows = json
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        // `null` is for scripts; a person reads "not decided yet" as "-".
                        let text = match v {
                            serde_json::Value::Null => "-".to_owned(),
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let value = if k == "state" {
                            Cell::state(text)
                        } else {
                            text.into()
                        };
                        vec![k.as_str().into(), value]
                    })
                    .collect()
            })
            .unwrap_or_default();
        output::table(&["field", "value"], rows)
    })
}

/// What `node eligibility` sets a node to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Eligibility {
    Enable,
    Disable,
}

/// What `node eligibility` prints: `state` is `submitted`, or with `--wait` `decided`.
#[derive(Serialize)]
struct EligibilitySet {
    node_id: NodeId,
    eligibility: &'static str,
    command_id: CommandId,
    state: &'static str,
}

pub async fn eligibility(
    global: &Global,
    node: NodeId,
    to: Eligibility,
    wait: bool,
    timeout: Duration,
) -> Result<()> {
    let eligible = to == Eligibility::Enable;
    let command = SetNodeEligibility {
        node: node.clone(),
        eligible,
    };
    let (command_id, reader) = submit(global, command.into()).await?;
    let mut result = EligibilitySet {
        node_id: node,
        eligibility: if eligible { "eligible" } else { "ineligible" },
        command_id,
        state: "submitted",
    };
    if wait {
        outcome(&reader, command_id, Instant::now() + timeout).await?;
        result.state = "decided";
    }
    print_result(global, &result)
}

/// What `node drain` prints: `state` is `submitted`; with `--wait`, `drained`.
#[derive(Serialize)]
struct DrainStarted {
    node_id: NodeId,
    /// RFC 3339, as every time the CLI prints.
    deadline: String,
    command_id: CommandId,
    state: &'static str,
}

/// `cairn node drain`: the deadline is taken from this machine's clock, since the decider
/// reads none. `--wait` follows the node in the views until nothing runs there.
pub async fn drain(
    global: &Global,
    node: NodeId,
    deadline: Duration,
    wait: bool,
    timeout: Option<Duration>,
) -> Result<()> {
    let at = Timestamp::now().saturating_add(deadline);
    let command = DrainNode {
        node: node.clone(),
        deadline: at,
    };
    let (command_id, reader) = submit(global, command.into()).await?;
    let mut result = DrainStarted {
        node_id: node,
        deadline: at.to_string(),
        command_id,
        state: "submitted",
    };
    if wait {
        // Past the deadline what is left is asked to stop; a minute more lets it.
        let until = Instant::now() + timeout.unwrap_or(deadline + Duration::from_secs(60));
        let decided = outcome(&reader, command_id, until).await?;
        follow_drain(global, &result.node_id, decided.seq, until).await?;
        result.state = "drained";
    }
    print_result(global, &result)
}

/// Watches the node through the views until they include the drain and it is over.
/// Progress goes to stderr.
async fn follow_drain(
    global: &Global,
    node: &NodeId,
    decided_at: Seq,
    until: Instant,
) -> Result<()> {
    let mut shown = None;
    loop {
        let answer: Answer<Vec<NodeSummary>> =
            crate::query::ask(global, endpoint::NODES, &()).await?;
        if answer.applied_seq >= decided_at {
            let summary = answer
                .result
                .into_iter()
                .find(|n| n.node.id == *node)
                .with_context(|| format!("node {node} is not in the views"))?;
            if summary.node.drain_deadline.is_none() {
                return Ok(());
            }
            if shown != Some(summary.executions) {
                eprintln!(
                    "node {node}: draining, {} executions left",
                    summary.executions
                );
                shown = Some(summary.executions);
            }
        }
        if Instant::now() >= until {
            bail!(
                "timed out waiting for node {node} to drain; {} executions left",
                shown.map_or("how many".to_owned(), |n| n.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `job stop` prints: `job_id` is the job the command names when the CLI knows it
/// before the decision (see [`target`]), else `null` until `--wait` sees the decision.
#[derive(Serialize)]
struct Stopped {
    job_id: Option<JobId>,
    command_id: CommandId,
    state: String,
}

/// The job a stop should name. A full id names itself. Otherwise the orchestrator's views
/// resolve the key (a name or a unique id prefix, as tables show them), and the command
/// carries the full id, so it stops exactly the job the user saw. An ambiguous prefix is
/// refused here, before anything is stored. When no orchestrator answers, or its views do
/// not know the key yet (a deploy not yet decided), the key goes as written and the decider
/// resolves it by id or name when it decides — so a stop is still stored without an
/// orchestrator, as the contract promises.
async fn target(global: &Global, key: String) -> Result<(JobRef, Option<JobId>)> {
    if let Ok(id) = key.parse::<JobId>() {
        return Ok((JobRef(key), Some(id)));
    }
    let query = JobQuery { job: key.clone() };
    match crate::query::ask::<_, JobDetail>(global, endpoint::JOB, &query).await {
        Ok(answer) => {
            let id = answer.result.job.id;
            Ok((JobRef(id.to_string()), Some(id)))
        }
        Err(e) if crate::query::Refused::is_ambiguous(&e) => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "the views do not resolve {key:?}; the decider will");
            Ok((JobRef(key), None))
        }
    }
}

pub async fn stop(global: &Global, job: String, wait: bool, timeout: Duration) -> Result<()> {
    let (job, job_id) = target(global, job).await?;
    let (command_id, reader) = submit(global, StopJob { job }.into()).await?;
    let mut result = Stopped {
        job_id,
        command_id,
        state: "submitted".into(),
    };
    if wait {
        let deadline = Instant::now() + timeout;
        let decided = decided_job(&reader, command_id, deadline).await?;
        result.job_id = Some(decided.job);
        let settled = follow_job(global, &decided, deadline, |_, s| s.is_terminal()).await?;
        result.state = settled.state.to_string();
    }
    print_result(global, &result)
}
