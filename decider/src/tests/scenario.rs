//! A tiny given / when / then harness: deterministic ids, inputs built from names, and the
//! invariants checked after every decision of every test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_shared::command::{Command, DeployJob, JobRef, RerunJob, StopJob};
use cairn_shared::report::{ExecutionUpdate, NodeHello};
use cairn_shared::resources::{Bytes, Request};
use cairn_shared::spec::{Engine, Factor, HumanDuration, Labels, Restart, TaskSpec, Update};
use cairn_shared::{
    CommandId, DesiredState, Event, ExecutionId, ExecutionState, JobId, JobSpec, JobState, JobType,
    NodeId, NodeState, Report, Resources, RunningAttempt, Seq, Timestamp,
};
use ulid::Ulid;

use crate::{Decision, IdSource, Input, Origin, RejectionKind, State, decide, evolve};

/// The orchestrator's lost-after in every scenario.
pub const LOST_AFTER: Duration = Duration::from_secs(300);

/// Ids from counters, so the n-th id of a scenario is known in advance.
#[derive(Default)]
pub struct Counter {
    jobs: u128,
    executions: u128,
}

impl IdSource for Counter {
    fn job_id(&mut self) -> JobId {
        self.jobs += 1;
        job_id(self.jobs)
    }

    fn execution_id(&mut self) -> ExecutionId {
        self.executions += 1;
        exec_id(self.executions)
    }
}

/// The n-th job id a scenario hands out (from 1).
pub fn job_id(n: u128) -> JobId {
    JobId::from_ulid(Ulid::from_parts(1, n))
}

/// The n-th execution id a scenario hands out (from 1).
pub fn exec_id(n: u128) -> ExecutionId {
    ExecutionId::from_ulid(Ulid::from_parts(2, n))
}

pub fn cmd_id(n: u128) -> CommandId {
    CommandId::from_ulid(Ulid::from_parts(3, n))
}

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).expect("test node ids are valid")
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn spec(name: &str, job_type: JobType, count: Option<u32>) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        job_type,
        count,
        selector: Labels::new(),
        constraints: vec![],
        resources: None,
        task: TaskSpec {
            engine: Engine::Exec,
            command: vec!["true".to_owned()],
            args: vec![],
            env: BTreeMap::new(),
            working_dir: None,
            timeout: None,
            secrets: vec![],
        },
        disconnect: None,
        restart: None,
        update: None,
    }
}

pub fn batch(name: &str, count: u32) -> JobSpec {
    spec(name, JobType::Batch, Some(count))
}

pub fn service(name: &str, count: u32) -> JobSpec {
    spec(name, JobType::Service, Some(count))
}

pub fn ops(name: &str) -> JobSpec {
    spec(name, JobType::Ops, None)
}

pub fn daemon(name: &str) -> JobSpec {
    spec(name, JobType::Daemon, None)
}

/// The spec asking `cpu` and `memory` per execution.
pub fn asking(mut spec: JobSpec, cpu: &str, memory: &str) -> JobSpec {
    spec.resources = Some(Request {
        cpu: Some(cpu.parse().expect("a test cpu amount")),
        memory: Some(memory.parse().expect("a test memory amount")),
        disk: None,
    });
    spec
}

/// The spec with a restart policy: `attempts` restarts, the first after `delay_ms`, each
/// next one `backoff` thousandths as long, at most `max_ms`.
pub fn restarting(
    mut spec: JobSpec,
    attempts: u32,
    delay_ms: u64,
    backoff: Option<u32>,
    max_ms: Option<u64>,
) -> JobSpec {
    let ms = |ms| HumanDuration(Duration::from_millis(ms));
    spec.restart = Some(Restart {
        attempts,
        delay: Some(ms(delay_ms)),
        backoff: backoff.map(Factor),
        max_delay: max_ms.map(ms),
    });
    spec
}

/// The spec with `update`: `max_parallel` at a time, reverting on failure if `auto_revert`.
pub fn updating(mut spec: JobSpec, max_parallel: u32, auto_revert: bool) -> JobSpec {
    spec.update = Some(Update {
        max_parallel,
        min_healthy_time: HumanDuration(Duration::from_secs(10)),
        healthy_deadline: HumanDuration(Duration::from_secs(300)),
        auto_revert,
        canary: 0,
    });
    spec
}

/// The spec with `update` and `canary` canaries to promote.
pub fn canaries(spec: JobSpec, canary: u32, auto_revert: bool) -> JobSpec {
    let mut spec = updating(spec, 1, auto_revert);
    if let Some(update) = spec.update.as_mut() {
        update.canary = canary;
    }
    spec
}

/// The spec with its command's text set to `text` (`sh -c text`), to tell versions apart.
pub fn running(mut spec: JobSpec, text: &str) -> JobSpec {
    spec.task.command = vec!["sh".into(), "-c".into(), text.into()];
    spec
}

pub fn selecting(mut spec: JobSpec, pairs: &[(&str, &str)]) -> JobSpec {
    spec.selector = labels(pairs);
    spec
}

pub fn hello(id: &str, pairs: &[(&str, &str)], capacity: u32) -> Report {
    Report::NodeHello(NodeHello {
        node: node(id),
        labels: labels(pairs),
        capacity: Some(capacity),
        resources: None,
    })
}

pub fn update(
    node_id: &str,
    execution: ExecutionId,
    attempt: u32,
    state: ExecutionState,
) -> Report {
    Report::ExecutionUpdate(ExecutionUpdate {
        node: node(node_id),
        execution,
        attempt,
        state,
        exit_code: None,
        reason: None,
    })
}

pub struct Scenario {
    pub state: State,
    pub ids: Counter,
    /// Every event so far, to check that replaying them rebuilds the state.
    pub log: Vec<Event>,
    commands: u128,
    seq: u64,
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            state: State::default(),
            ids: Counter::default(),
            log: Vec::new(),
            commands: 0,
            seq: 0,
        }
    }

    /// Facts that happened before the test, folded in without deciding anything.
    pub fn given(&mut self, events: impl IntoIterator<Item = Event>) -> &mut Self {
        for event in events {
            evolve(&mut self.state, &event);
            self.log.push(event);
        }
        self
    }

    /// Decides one input, checks the invariants, and folds the events in.
    pub fn when(&mut self, input: Input) -> Decision {
        let before = self.state.clone();
        let decision = decide(&self.state, &input, &mut self.ids);
        assert_eq!(self.state, before, "decide must not change the state");
        super::invariants::check_decision(&self.state, &input, &decision);
        self.given(decision.events.clone());
        super::invariants::check_state(&self.state, &self.log);
        decision
    }

    pub fn command(&mut self, command: Command) -> Decision {
        self.commands += 1;
        let id = cmd_id(self.commands);
        self.when(Input::Command { id, command })
    }

    /// `cairn node eligibility ID enable|disable`.
    pub fn eligible(&mut self, id: &str, eligible: bool) -> Decision {
        self.command(Command::SetNodeEligibility(
            cairn_shared::command::SetNodeEligibility {
                node: node(id),
                eligible,
            },
        ))
    }

    /// `cairn node drain ID` with its deadline at `deadline` (ms since the epoch).
    pub fn drain(&mut self, id: &str, deadline: u64) -> Decision {
        self.command(Command::DrainNode(cairn_shared::command::DrainNode {
            node: node(id),
            deadline: Timestamp(deadline),
        }))
    }

    /// The shell's drain timer for the node, at `now` (ms since the epoch).
    pub fn drain_timer(&mut self, id: &str, now: u64) -> Decision {
        self.when(Input::DrainDeadline {
            node: node(id),
            now: Timestamp(now),
        })
    }

    /// The id of the last command sent.
    pub fn last_command(&self) -> CommandId {
        cmd_id(self.commands)
    }

    pub fn deploy(&mut self, spec: JobSpec) -> Decision {
        self.command(Command::DeployJob(DeployJob { spec }))
    }

    pub fn stop(&mut self, job: &str) -> Decision {
        self.command(Command::StopJob(StopJob {
            job: JobRef(job.to_owned()),
        }))
    }

    pub fn rerun(&mut self, job: &str) -> Decision {
        self.command(Command::RerunJob(RerunJob {
            job: JobRef(job.to_owned()),
        }))
    }

    /// `cairn job revert JOB [--version N]`.
    pub fn revert(&mut self, job: &str, version: Option<u32>) -> Decision {
        self.command(Command::RevertJob(cairn_shared::command::RevertJob {
            job: JobRef(job.to_owned()),
            version,
        }))
    }

    /// `cairn job promote JOB`.
    pub fn promote(&mut self, job: &str) -> Decision {
        self.command(Command::PromoteJob(cairn_shared::command::PromoteJob {
            job: JobRef(job.to_owned()),
        }))
    }

    /// A report arriving on `subject`'s subject.
    pub fn report_on(&mut self, subject: &str, report: Report) -> Decision {
        self.seq += 1;
        self.when(Input::Report {
            node: node(subject),
            origin: Origin {
                stream: "REPORT".to_owned(),
                seq: Seq(self.seq),
            },
            report,
        })
    }

    pub fn join(&mut self, id: &str, pairs: &[(&str, &str)], capacity: u32) -> Decision {
        self.report_on(id, hello(id, pairs, capacity))
    }

    /// A node with no labels and no cap, offering `cpu` and `memory` (`"2"`, `"1Gi"`) and
    /// no disk.
    pub fn offering(&mut self, id: &str, cpu: &str, memory: &str) -> Decision {
        self.offering_as(id, &[], cpu, memory)
    }

    /// Like [`Scenario::offering`], with labels.
    pub fn offering_as(
        &mut self,
        id: &str,
        pairs: &[(&str, &str)],
        cpu: &str,
        memory: &str,
    ) -> Decision {
        let resources = Resources {
            cpu: cpu.parse().expect("a test cpu amount"),
            memory: memory.parse().expect("a test memory amount"),
            disk: Bytes(0),
        };
        let hello = Report::NodeHello(NodeHello {
            node: node(id),
            labels: labels(pairs),
            capacity: None,
            resources: Some(resources),
        });
        self.report_on(id, hello)
    }

    /// Nodes `a`, `b`, … with no labels and the given capacity each.
    pub fn nodes(&mut self, ids: &[&str], capacity: u32) -> &mut Self {
        for id in ids {
            self.join(id, &[], capacity);
        }
        self
    }

    /// The execution's own edge reports it reached `to`.
    pub fn report(&mut self, execution: ExecutionId, to: ExecutionState) -> Decision {
        let e = self
            .state
            .execution(execution)
            .expect("the execution exists");
        let (node_id, attempt) = (e.node.to_string(), e.attempt);
        self.report_on(&node_id, update(&node_id, execution, attempt, to))
    }

    /// The execution's edge found it healthy, or not.
    pub fn health(&mut self, execution: ExecutionId, healthy: bool) -> Decision {
        let e = self
            .state
            .execution(execution)
            .expect("the execution exists");
        let (node_id, attempt) = (e.node.to_string(), e.attempt);
        let report = Report::ExecutionHealth(cairn_shared::report::ExecutionHealth {
            node: node(&node_id),
            execution,
            attempt,
            healthy,
            reason: (!healthy).then(|| "not running long enough in time".to_owned()),
        });
        self.report_on(&node_id, report)
    }

    /// Walks an execution through accepted and running, and for a job with `update`
    /// reports it healthy.
    pub fn start_healthy(&mut self, execution: ExecutionId) -> Decision {
        self.start(execution);
        self.health(execution, true)
    }

    /// Walks an execution through accepted and running.
    pub fn start(&mut self, execution: ExecutionId) {
        self.report(execution, ExecutionState::Accepted);
        self.report(execution, ExecutionState::Running);
    }

    pub fn silent(&mut self, id: &str) -> Decision {
        self.when(Input::NodeSilent {
            node: node(id),
            since: Timestamp(1_000),
        })
    }

    /// The node silent for the orchestrator's whole lost-after ([`LOST_AFTER`]).
    pub fn lose(&mut self, id: &str) -> Decision {
        self.silent_for(id, LOST_AFTER)
    }

    /// The shell's liveness timer, the node silent for `silent`.
    pub fn silent_for(&mut self, id: &str, silent: Duration) -> Decision {
        self.when(Input::NodeSilentTooLong {
            node: node(id),
            since: Timestamp(1_000),
            silent,
            lost_after: LOST_AFTER,
        })
    }

    pub fn heartbeat(&mut self, id: &str) -> Decision {
        self.heartbeat_running(id, &[])
    }

    /// A heartbeat naming the executions (their current attempts) the node runs.
    pub fn heartbeat_running(&mut self, id: &str, running: &[ExecutionId]) -> Decision {
        let running = running
            .iter()
            .filter_map(|e| self.state.execution(*e))
            .map(|e| RunningAttempt {
                execution: e.id,
                attempt: e.attempt,
            })
            .collect();
        self.when(Input::Heartbeat {
            node: node(id),
            running,
        })
    }

    pub fn job(&self, name: &str) -> &crate::Job {
        self.state.job_by_name(name).expect("the job exists")
    }

    pub fn job_state(&self, name: &str) -> JobState {
        self.job(name).state
    }

    pub fn node_state(&self, id: &str) -> NodeState {
        self.state.node(&node(id)).expect("the node exists").state
    }

    /// Non-terminal executions of the job still meant to run, as (node, attempt).
    pub fn live(&self, name: &str) -> Vec<(String, u32)> {
        let job = self.job(name);
        let mut live: Vec<_> = self
            .state
            .live(job.id)
            .filter_map(|id| self.state.execution(id))
            .filter(|e| e.desired == DesiredState::Running)
            .map(|e| (e.node.to_string(), e.attempt))
            .collect();
        live.sort();
        live
    }

    /// The job's non-terminal execution ids meant to run, oldest first.
    pub fn live_ids(&self, name: &str) -> Vec<ExecutionId> {
        let job = self.job(name);
        self.state
            .live(job.id)
            .filter(|id| {
                self.state
                    .execution(*id)
                    .is_some_and(|e| e.desired == DesiredState::Running)
            })
            .collect()
    }

    /// The non-terminal executions on a node.
    pub fn load(&self, id: &str) -> usize {
        self.state.load(&node(id))
    }
}

/// Reading a decision's events without spelling every field.
pub trait Read {
    fn events(&self) -> &[Event];

    fn names(&self) -> Vec<&'static str> {
        use cairn_shared::Message;
        self.events().iter().map(|e| e.type_name()).collect()
    }

    /// Rollout states recorded, in order, as (version, state).
    fn rollouts(&self) -> Vec<(u32, cairn_shared::RolloutState)> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::RolloutChanged(r) => Some((r.version, r.state)),
                _ => None,
            })
            .collect()
    }

    /// Assignments as (attempt, the pause before it starts in ms).
    fn delays(&self) -> Vec<(u32, u128)> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::ExecutionAssigned(a) => {
                    Some((a.attempt, a.delay.map_or(0, |d| d.0.as_millis())))
                }
                _ => None,
            })
            .collect()
    }

    /// Assignments as (node, attempt).
    fn assigned(&self) -> Vec<(String, u32)> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::ExecutionAssigned(a) => Some((a.node.to_string(), a.attempt)),
                _ => None,
            })
            .collect()
    }

    fn assigned_ids(&self) -> Vec<ExecutionId> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::ExecutionAssigned(a) => Some(a.execution),
                _ => None,
            })
            .collect()
    }

    fn stopped(&self) -> BTreeSet<ExecutionId> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::ExecutionStopRequested(s) => Some(s.execution),
                _ => None,
            })
            .collect()
    }

    fn job_states(&self) -> Vec<JobState> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::JobStateChanged(s) => Some(s.state),
                _ => None,
            })
            .collect()
    }

    fn ended(&self) -> Vec<(ExecutionId, ExecutionState)> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::ExecutionStateChanged(s) => Some((s.execution, s.state)),
                _ => None,
            })
            .collect()
    }
}

impl Read for Decision {
    fn events(&self) -> &[Event] {
        &self.events
    }
}

impl Decision {
    pub fn rejected(&self) -> Option<RejectionKind> {
        self.rejection.as_ref().map(|r| r.kind)
    }

    pub fn reason(&self) -> String {
        self.rejection
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    }
}
