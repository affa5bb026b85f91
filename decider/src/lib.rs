//! The decider: the pure, synchronous heart of the orchestrator, scheduler included.
//!
//! `decide(&State, &Input, &mut impl IdSource) -> Decision` turns one input (a command, an
//! edge report, a liveness fact) into the events to append; `evolve(&mut State, &Event)`
//! folds one event into the state. The state is built *only* by `evolve`, so an orchestrator
//! rebuilds it by replaying the event stream, and the shell applies `evolve` to every event
//! it appends. Nothing in here performs I/O, reads the clock or draws random numbers: fresh
//! ids come from the [`IdSource`] the shell passes in, and times arrive inside inputs.
//!
//! # Shape
//!
//! One input may yield many events (a deploy places several executions), so `decide`
//! returns a [`Decision`]: the events, in order, plus the [`Rejection`] when the input was
//! refused. A refusal is a value, and it is *also* an event (`CommandRejected` or
//! `InputRejected`) so users and audits see it. Internally each handler has the classic
//! shape `Result<_, Rejection>` over a `Draft`: a scratch copy of the state onto which every
//! emitted event is evolved at once, so later steps of the same decision (placement after a
//! node is lost, job state after placement) see earlier ones. A refused handler's draft is
//! thrown away, so a refusal never changes state.
//!
//! The shell must append a decision's events atomically (one JetStream batch) or not at all:
//! a command's `CommandAccepted` comes *last*, after its effects, so a partial append would
//! leave effects without the record that the command was decided.
//!
//! # Choices
//!
//! - **Redelivery is harmless.** A command id already decided yields no events. A report
//!   repeating an execution's current state yields no events either (an edge's outbox may
//!   resend after JetStream's duplicate window), and neither does one older than what is
//!   recorded: edges report in order, so it is an earlier report delivered again.
//! - **Identical redeploy is a no-op.** Deploying the spec the current version already has,
//!   while the job is not terminal, is accepted with no other event (like `kubectl apply`).
//!   On a terminal job it creates a new version, which runs again.
//! - **A new version replaces the old one at once** unless its spec has `update`: every
//!   execution of the job that is still meant to run gets `ExecutionStopRequested`, and the
//!   new version is placed in the same decision. The old executions keep their capacity
//!   until their edge reports them ended.
//! - **With `update`, a new version rolls out** (`rollout.rs`) unless it changes the
//!   job's type (then it replaces at once, and only its health is followed):
//!   `RolloutChanged` records it rolling, and the old version's executions keep running while they are replaced a
//!   step at a time. An old one is asked to stop only while the slots still covered by an
//!   old execution or a healthy new one stay at least the count (for a daemon, the nodes it
//!   runs on) less `max_parallel`; a new one is placed only where an old one made room (a
//!   daemon's node with no old execution left meant to run; a service while old and new
//!   ones meant to run are fewer than `count`). A placement that replaces nothing (a
//!   first version, a node that had none) is not held. Health is the edge's word
//!   (`ExecutionHealth`, recorded once as `ExecutionHealthChanged`): healthy after
//!   `min_healthy_time` running, not healthy if that has not happened `healthy_deadline`
//!   after the edge took it. A new execution that ends unasked, or is found not healthy,
//!   before it was healthy fails the rollout: nothing more is stopped or placed for the
//!   version (what runs keeps running, and the job reads `running`, or `failed` once
//!   nothing runs), and with
//!   `auto_revert` the last version whose rollout succeeded is deployed again as the next
//!   version, which rolls out the same way, the bad version's executions replaced first.
//!   A lost node, a drain or a stop is no fault of the version. The rollout succeeds once
//!   nothing of an earlier version is meant to run and every slot has a healthy execution
//!   of the version; while it rolls the job reads `deploying`. A newer version or a stop
//!   cancels it. With `canary: N` and something to replace, N new executions run first
//!   (a service's beside every old one, a daemon's on N nodes moved over) and the rest
//!   waits for `PromoteJob`, refused until every one of them is healthy; an auto-revert is
//!   promoted at once.
//! - **Stopping is asked, never assumed.** `StopJob` requests a stop of every execution and
//!   marks the job stopped; executions end when their edge says so, because the node may
//!   already be running them. Stopping an already terminal job is accepted and changes
//!   nothing. The only executions ended by decision are those on a lost node.
//! - **Silence is judged twice.** A node silent for the orchestrator's lost-after is
//!   `lost`; each of its executions is `lost` once the node has been silent for its job's
//!   `disconnect.lost_after` (the same by default), before or after the node. A lost
//!   execution is *not* asked to stop, because the node may only be cut off; only work it
//!   never took (`pending`) is withdrawn when its job replaces it. With `replace: false`
//!   the slot waits for the node instead of being filled elsewhere.
//! - **Late truth is recorded, then reconciled.** What an edge reports about an execution
//!   declared lost (in a report, or as running in a heartbeat) is recorded as it arrives,
//!   never refused. The execution takes its slot back when it still runs, or completed a
//!   batch slot its replacement has not: the replacement is asked to stop. Otherwise, if it
//!   still runs, it is asked to stop itself (its slot was completed, its job stopped or
//!   moved to a new version). A slot thus never has two executions meant to run (but for a
//!   replica moving off a draining node, until its replacement runs); a batch
//!   slot can still end with two completed attempts when both ran while the node was cut
//!   off, which the log then shows (the case `replace: false` exists for).
//! - **Eligibility:** a node takes an execution when it is not lost, an operator has not
//!   made it ineligible (`SetNodeEligibility`: it keeps what it runs; a daemon asks nothing
//!   of it; an ops target not yet placed there waits for it), its labels contain every
//!   selector pair and meet every constraint, its non-terminal executions are fewer than its
//!   cap if it set one (a cap of 0 takes nothing), and the execution's request fits in what
//!   the node's declared resources leave after what its non-terminal executions ask (a node
//!   that declared none is limited by its cap alone). A node that lowers its cap or its
//!   resources below what it runs keeps it and takes nothing new until it has room. An
//!   execution's request is fixed when it is placed (`ExecutionAssigned.resources`; when
//!   its job asks nothing it is absent and reads as the defaults of the build reading it,
//!   so logs of jobs without resources encode as before) and counts until it ends. Connected nodes are preferred; a disconnected node is used only when no
//!   connected one fits, because its assignment waits durably on its subject (no skipped
//!   dispatch) but may wait long. Among equals: a node this slot has not used before, then
//!   fewer executions of this job, then fewer executions overall, then the node id.
//! - **Draining** (`DrainNode`, see `drain.rs`) makes a node ineligible and moves its work
//!   off it without leaving a slot empty that need not be: a service replica there is
//!   given a replacement elsewhere (its slot's next attempt, beside it) and asked to stop
//!   once the replacement runs (a replacement whose own node starts draining before it
//!   ran is asked to stop instead, and the slot placed again, so a slot never holds more
//!   than the replica moving and its one replacement). Batch and ops work is not moved, because restarted
//!   elsewhere it would run twice: it runs out on the node. Daemons serve the node until
//!   nothing else runs there, then are asked to stop. At the deadline, carried in the
//!   command because the decider reads no clock, the shell's timer ([`Input::DrainDeadline`])
//!   has whatever still runs there asked to stop, and a batch or service slot whose
//!   execution ends so is placed elsewhere without paying an attempt. The drain ends
//!   (`NodeDrained`) once nothing runs on the node, which stays ineligible; making it
//!   eligible again ends a drain in progress, and what it still runs stays.
//! - **Why work waits is a fact.** When slots still wait after placing, the decider
//!   reads every node and records what ruled each out (lost, ineligible, the selector, a
//!   constraint, its cap, a resource it is short of) as `JobBlocked`, again whenever that changes, and
//!   `JobUnblocked` once nothing waits; a terminal state or a new run ends a blockage
//!   without an event. Reasons are read after every placement of the decision, for every
//!   job with something waiting whenever room was taken or placement was due, so no
//!   recorded reason is stale (the tests reconcile after every step and require nothing
//!   new). A blocked job thus costs a pass over the fleet per such decision.
//! - **Retries** follow the job's `restart` policy: `attempts` restarts per slot (two by
//!   default, so [`MAX_ATTEMPTS`] executions in all). A batch slot is retried (new execution
//!   id, attempt + 1, preferring another node) after it fails, is lost, or stops unasked; a
//!   slot that used all its executions fails the job. Service and daemon slots are replaced
//!   after any end nobody asked for; `lost` does not count against them (losing a node is
//!   not the task's fault) but `failed`, unasked `stopped` and `completed` (a long-running
//!   task that exits is a crash) do. Ops executions are never retried. A restart after a
//!   fault carries the policy's pause for the slot's count of faults
//!   (`ExecutionAssigned.delay`: `delay`, times `backoff` per further fault, at most
//!   `max_delay`), and the edge that takes it waits that long before starting it: the pause
//!   is decided from facts, so the decider needs no clock, and it holds wherever the
//!   restart lands. A replacement that follows no fault (a lost replica, a drain) starts at
//!   once.
//! - **Versions** are kept, every spec by its number, so `RevertJob` deploys an earlier
//!   version's spec as the next version (`JobDeployed.reverted_to` names it), replacing
//!   what runs as any new version does. A revert to the current version, or to a spec the
//!   running version already has, is refused: it would change nothing. `RerunJob` runs a
//!   job that ended again, at its current version, with fresh attempts.
//! - **A failed job stops what it still runs**: its outcome is decided and the rest would only
//!   hold capacity.
//! - **ops** runs once on every node that matches (and is not lost, and is eligible) when the
//!   run starts; the set is fixed then. It completes when every target has ended and all completed; it fails
//!   if any failed, stopped, was lost, or its node was lost before it was placed. An ops job
//!   that matches no node fails at once.
//! - **daemon** keeps one execution on every matching, non-lost node, including nodes that
//!   register, reconnect or change labels later. An execution on a lost node is lost, not
//!   moved; it is placed again if that node comes back. A node whose labels stop matching
//!   has its daemon execution stopped.
//! - **service** keeps `count` replicas; a lost or crashed replica is replaced on another node
//!   when one fits.
//! - **Runs.** A job's current run is its current version since it last started. Two events
//!   start one, and projections must read them the same way: `JobDeployed` (the version
//!   starts, `queued`) and a `JobStateChanged` that leaves a terminal state (a rerun). Batch
//!   and service runs have `count` slots; ops runs one slot per node matching at the start;
//!   daemon runs grow a slot per node. A retry is the next execution of its slot, and
//!   `evolve` finds that slot again from the attempt number (lowest open slot whose chain is
//!   one shorter), so no slot number needs to travel in `ExecutionAssigned`.
//! - **Job state** is derived after every decision from the current run: `failed` as above; `completed` when every batch slot completed (or
//!   ops as above); `queued` when nothing is in flight or done (waiting for a node);
//!   `deploying` while some demand is unplaced or some execution is still `pending`;
//!   otherwise `running` (`accepted` counts as up). Terminal states stick until a rerun or a
//!   new version. `JobStateChanged` is emitted only on a change.
//! - **Placement reacts to facts, not to timers**: it runs when a decision deployed or reran a
//!   job, registered, reconnected or lost a node, changed a node's eligibility or started
//!   its drain, or ended an execution; then every active
//!   job is reconciled, oldest job id first, so older jobs get freed capacity first. Unplaced
//!   demand is not stored as such: it is what the state says is missing, so it is retried on
//!   the next such fact.
//! - **Heartbeats** from a disconnected or lost node reconnect it ([`Input::Heartbeat`]), as
//!   does its `NodeHello`. Other reports do not: liveness is the shell's timers' business.
//!   A heartbeat's attempts are read before the reconnection, so a daemon still running on a
//!   returning node is not placed there a second time.
//! - **No time is needed**: events carry no timestamps (the shell stamps envelopes when it
//!   appends), liveness inputs carry the instant the shell measured from, and a drain's
//!   deadline is an instant its command names, which the shell's timer compares.
//! - **The state keeps every decided command id and every execution** so redelivery and late
//!   reports are recognised forever. That is memory proportional to history; pruning belongs
//!   with snapshots, later.
//!
//! # Cost
//!
//! A decision clones the state into its draft in O(1): every collection in [`State`] is a
//! persistent `imbl` one, so the draft shares everything and copies only the tree nodes its
//! events touch. The state is the facts (what happened) and an index derived from them,
//! which `evolve` keeps in one step per event and the tests check against a recount.
//! Reconciling a job costs what it places, not the size of its run: the index keeps a
//! [`Tally`] per active run (each slot's [`Status`], counts by status, the waiting and
//! exhausted slots in placement order, and for a daemon the usable nodes it has no slot on
//! and the ones that stopped matching), reading again only the slot an event concerns, so a
//! report on a 10,000-slot batch job reads one slot and the job's state follows from the
//! counts. Node facts are the exception: each reads that node's slot in every active run,
//! and they are rare. When placement is due every active job is reconciled, one look at the
//! tally for a job with nothing waiting; a job with waiting demand gathers its candidate
//! nodes once, from the index of nodes below their cap (none on a fleet at its caps; a
//! fleet whose resources are spent is read node by node, each a subtraction and a
//! division), with each node's allocation and the job's load per node kept beside its live
//! executions, and placing one execution scans them once. A retry finds its slot among the run's waiting and exhausted ones. A job
//! that ends keeps its facts and drops its run's index.

mod command;
mod draft;
mod drain;
mod facts;
mod index;
mod liveness;
mod placement;
mod report;
mod rollout;
mod schedule;
mod state;
mod tally;

#[cfg(test)]
mod tests;

use std::time::Duration;

use cairn_shared::command::Command;
use cairn_shared::event::{CommandAccepted, CommandRejected, InputRejected};
use cairn_shared::{
    CommandId, Event, ExecutionId, JobId, NodeId, Report, RunningAttempt, Seq, Timestamp,
};

pub use facts::{Execution, Job, Node, Rollout, Run, Slot};
pub use liveness::lost_due;
pub use state::{State, evolve};
pub use tally::{Counts, SlotKey, Status, Tally};

use draft::Draft;

/// Executions a slot may use up when its job sets no `restart`: a batch slot's attempts, or
/// the crashes a service or daemon slot survives. Three tolerates a flaky node or two
/// without hiding a task that always fails.
pub const MAX_ATTEMPTS: u32 = cairn_shared::spec::Restart::DEFAULT.executions();

/// Fresh ids for a decision. The shell implements it with `JobId::generate()` and
/// `ExecutionId::generate()`; tests use a counter, so every scenario is deterministic.
pub trait IdSource {
    fn job_id(&mut self) -> JobId;
    fn execution_id(&mut self) -> ExecutionId;
}

/// Where an input message sits on its stream, so a refusal can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub stream: String,
    pub seq: Seq,
}

/// Everything the decider reacts to.
// A command carries a whole job spec; an input is built, decided and dropped, one at a
// time, so its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A user's command, with its envelope id.
    Command { id: CommandId, command: Command },
    /// An edge report. `node` is taken from the subject it arrived on, which only that node
    /// may publish to; the body must name the same node.
    Report {
        node: NodeId,
        origin: Origin,
        report: Report,
    },
    /// The shell heard from a node (a heartbeat) after it had been silent, or naming an
    /// attempt it runs that the state has as lost; `running` is every attempt it names.
    Heartbeat {
        node: NodeId,
        running: Vec<RunningAttempt>,
    },
    /// The shell's drain timer: it is `now`, and the node's drain deadline may have passed.
    DrainDeadline { node: NodeId, now: Timestamp },
    /// The shell's liveness timer: the node has been silent since `since`.
    NodeSilent { node: NodeId, since: Timestamp },
    /// The shell's liveness timer: the node has been silent for `silent` (since `since`),
    /// which [`lost_due`] said is due for a decision. `lost_after` is the orchestrator's
    /// threshold, for the node and for jobs that set none.
    NodeSilentTooLong {
        node: NodeId,
        since: Timestamp,
        silent: Duration,
        lost_after: Duration,
    },
}

/// What to append for one input.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    /// The events, in order. Empty when the input changes nothing.
    pub events: Vec<Event>,
    /// Set when the input was refused. The refusal is also among `events`, as
    /// `CommandRejected` or `InputRejected`.
    pub rejection: Option<Rejection>,
}

/// Why an input was refused: a value for the user or the audit log, not an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub reason: String,
}

/// The families of refusal, so callers and tests can tell them apart without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    InvalidSpec,
    UnknownJob,
    UnknownNode,
    JobStillActive,
    TooManyVersions,
    UnknownVersion,
    NothingToPromote,
    NodeMismatch,
    UnknownExecution,
    WrongNode,
    WrongAttempt,
    NotReportable,
    TerminalExecution,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// Decides what one input means. Never mutates `state`, never panics on any input.
pub fn decide(state: &State, input: &Input, ids: &mut impl IdSource) -> Decision {
    match input {
        Input::Command { id, command } => decide_command(state, *id, command, ids),
        Input::Report {
            node,
            origin,
            report,
        } => decide_report(state, node, origin, report, ids),
        Input::Heartbeat { node, running } => {
            run(state, ids, |d| liveness::heard(d, node, running))
        }
        Input::NodeSilent { node, .. } => run(state, ids, |d| liveness::silent(d, node)),
        Input::DrainDeadline { node, now } => run(state, ids, |d| drain::deadline(d, node, *now)),
        Input::NodeSilentTooLong {
            node,
            since,
            silent,
            lost_after,
        } => run(state, ids, |d| {
            liveness::lost(d, node, *since, *silent, *lost_after)
        }),
    }
}

fn decide_command(
    state: &State,
    id: CommandId,
    command: &Command,
    ids: &mut impl IdSource,
) -> Decision {
    if state.is_decided(id) {
        return Decision::default();
    }
    let mut draft = Draft::new(state);
    match command::handle(&mut draft, command, ids) {
        Ok(job) => {
            schedule::schedule(&mut draft, ids);
            let version = job.and_then(|j| draft.state.job(j)).map(|j| j.version);
            draft.emit(CommandAccepted {
                command: id,
                job,
                version,
            });
            Decision {
                events: draft.into_events(),
                rejection: None,
            }
        }
        Err(rejection) => Decision {
            events: vec![
                CommandRejected {
                    command: id,
                    reason: rejection.reason.clone(),
                }
                .into(),
            ],
            rejection: Some(rejection),
        },
    }
}

fn decide_report(
    state: &State,
    node: &NodeId,
    origin: &Origin,
    report: &Report,
    ids: &mut impl IdSource,
) -> Decision {
    let mut draft = Draft::new(state);
    match report::handle(&mut draft, node, report) {
        Ok(()) => {
            schedule::schedule(&mut draft, ids);
            Decision {
                events: draft.into_events(),
                rejection: None,
            }
        }
        Err(rejection) => Decision {
            events: vec![
                InputRejected {
                    stream: origin.stream.clone(),
                    seq: origin.seq,
                    reason: rejection.reason.clone(),
                }
                .into(),
            ],
            rejection: Some(rejection),
        },
    }
}

/// Runs a handler that cannot be refused, then the scheduler.
fn run(state: &State, ids: &mut impl IdSource, handle: impl FnOnce(&mut Draft)) -> Decision {
    let mut draft = Draft::new(state);
    handle(&mut draft);
    schedule::schedule(&mut draft, ids);
    Decision {
        events: draft.into_events(),
        rejection: None,
    }
}
