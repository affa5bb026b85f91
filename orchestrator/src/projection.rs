//! The projection: how one event changes the views. A pure function of the tables' current
//! contents, the event and its stream sequence — no clock, no randomness, no I/O beyond
//! the [`Tables`] it is handed — so rebuilding from the log always gives the same views.

use cairn_shared::codec::Envelope;
use cairn_shared::event::{
    CommandAccepted, CommandRejected, ExecutionAssigned, ExecutionStateChanged,
    ExecutionStopRequested, InputRejected, JobDeployed, JobStateChanged, NodeRegistered,
};
use cairn_shared::placement::Placement;
use cairn_shared::{
    DesiredState, Event, ExecutionState, JobId, JobState, NodeId, NodeState, Resources, Seq,
    Timestamp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::views::{
    CommandOutcome, ExecutionView, JobView, NodeView, RejectedInput, RolloutView, Table, Tables,
    Undecodable, decode, encode, index_key, seq_key,
};

/// What applying one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// A well-formed event that changes nothing (e.g. about an entity never seen); the reason
    /// is for logs.
    Ignored(String),
    /// The message could not be decoded and was recorded in the `undecodable` table.
    Undecodable,
}

/// Applies one stream message: a decoded event, or the reason it could not be decoded.
pub fn apply<T: Tables>(
    tables: &mut T,
    seq: Seq,
    subject: &str,
    message: &Result<Envelope<Event>, cairn_shared::codec::Error>,
) -> Result<Applied> {
    match message {
        Ok(envelope) => apply_event(tables, seq, envelope),
        Err(reason) => {
            let record = Undecodable {
                seq,
                subject: subject.to_owned(),
                reason: reason.to_string(),
            };
            put(tables, Table::Undecodable, &seq_key(seq), &record)?;
            Ok(Applied::Undecodable)
        }
    }
}

fn apply_event<T: Tables>(t: &mut T, seq: Seq, envelope: &Envelope<Event>) -> Result<Applied> {
    let at = envelope.at;
    match &envelope.body {
        Event::NodeRegistered(e) => node_registered(t, e, at),
        Event::NodeDisconnected(e) => node_state(t, &e.node, NodeState::Disconnected, at),
        Event::NodeReconnected(e) => node_state(t, &e.node, NodeState::Connected, at),
        Event::NodeLost(e) => node_state(t, &e.node, NodeState::Lost, at),
        Event::NodeEligibilityChanged(e) => node_change(t, &e.node, at, "eligibility", |n| {
            n.eligible = e.eligible;
            if e.eligible {
                n.drain_deadline = None;
            }
        }),
        Event::NodeDrainStarted(e) => node_change(t, &e.node, at, "drain", |n| {
            n.eligible = false;
            n.drain_deadline = Some(e.deadline);
        }),
        Event::NodeDrained(e) => node_change(t, &e.node, at, "end of drain", |n| {
            n.drain_deadline = None;
        }),
        Event::JobDeployed(e) => job_deployed(t, e, at),
        Event::JobStateChanged(e) => job_state(t, e, at),
        Event::JobBlocked(e) => job_blocked(t, e.job, Some(&e.placement), at),
        Event::JobUnblocked(e) => job_blocked(t, e.job, None, at),
        Event::ExecutionAssigned(e) => execution_assigned(t, e, at),
        Event::ExecutionStopRequested(e) => stop_requested(t, e, at),
        Event::ExecutionStateChanged(e) => execution_state(t, e, at),
        Event::ExecutionHealthChanged(e) => {
            let key = e.execution.to_string();
            let Some(mut view) = get::<ExecutionView, _>(t, Table::Executions, &key)? else {
                return Ok(Applied::Ignored(format!(
                    "health of unknown execution {key}"
                )));
            };
            view.healthy = Some(e.healthy);
            if let Some(reason) = &e.reason {
                view.reason = Some(reason.clone());
            }
            view.updated_at = at;
            put(t, Table::Executions, &key, &view)?;
            Ok(Applied::Changed)
        }
        Event::RolloutChanged(e) => {
            let key = e.job.to_string();
            let Some(mut view) = get::<JobView, _>(t, Table::Jobs, &key)? else {
                return Ok(Applied::Ignored(format!("rollout of unknown job {key}")));
            };
            if view.version != e.version {
                return Ok(Applied::Ignored(format!(
                    "rollout of version {} of job {key}, at version {}",
                    e.version, view.version
                )));
            }
            let promoted = view
                .rollout
                .as_ref()
                .is_some_and(|r| r.version == e.version && r.promoted);
            view.rollout = Some(RolloutView {
                version: e.version,
                state: e.state,
                reason: e.reason.clone(),
                promoted,
                since: at,
            });
            view.updated_at = at;
            put(t, Table::Jobs, &key, &view)?;
            Ok(Applied::Changed)
        }
        Event::RolloutPromoted(e) => {
            let key = e.job.to_string();
            let Some(mut view) = get::<JobView, _>(t, Table::Jobs, &key)? else {
                return Ok(Applied::Ignored(format!("promotion of unknown job {key}")));
            };
            let Some(rollout) = view.rollout.as_mut().filter(|r| r.version == e.version) else {
                return Ok(Applied::Ignored(format!(
                    "promotion of version {} of job {key}, which has no rollout of it",
                    e.version
                )));
            };
            rollout.promoted = true;
            view.updated_at = at;
            put(t, Table::Jobs, &key, &view)?;
            Ok(Applied::Changed)
        }
        Event::CommandAccepted(CommandAccepted { command, job, .. }) => outcome(
            t,
            CommandOutcome {
                command_id: *command,
                accepted: true,
                reason: None,
                job_id: *job,
                seq,
                at,
            },
        ),
        Event::CommandRejected(CommandRejected { command, reason }) => outcome(
            t,
            CommandOutcome {
                command_id: *command,
                accepted: false,
                reason: Some(reason.clone()),
                job_id: None,
                seq,
                at,
            },
        ),
        Event::InputRejected(InputRejected {
            stream,
            seq: input_seq,
            reason,
        }) => {
            let record = RejectedInput {
                stream: stream.clone(),
                seq: *input_seq,
                reason: reason.clone(),
                event_seq: seq,
                at,
            };
            put(t, Table::RejectedInputs, &seq_key(seq), &record)?;
            Ok(Applied::Changed)
        }
    }
}

fn node_registered<T: Tables>(t: &mut T, e: &NodeRegistered, at: Timestamp) -> Result<Applied> {
    let key = e.node.as_str();
    let known = get::<NodeView, _>(t, Table::Nodes, key)?;
    let view = NodeView {
        id: e.node.clone(),
        state: NodeState::Connected,
        labels: e.labels.clone(),
        capacity: e.capacity,
        resources: e.resources,
        // Registering again keeps what an operator set.
        eligible: known.as_ref().is_none_or(|n| n.eligible),
        drain_deadline: known.as_ref().and_then(|n| n.drain_deadline),
        registered_at: known.map_or(at, |n| n.registered_at),
        updated_at: at,
    };
    put(t, Table::Nodes, key, &view)?;
    Ok(Applied::Changed)
}

fn node_state<T: Tables>(
    t: &mut T,
    node: &NodeId,
    state: NodeState,
    at: Timestamp,
) -> Result<Applied> {
    let Some(mut view) = get::<NodeView, _>(t, Table::Nodes, node.as_str())? else {
        return Ok(Applied::Ignored(format!("{state} for unknown node {node}")));
    };
    view.state = state;
    view.updated_at = at;
    put(t, Table::Nodes, node.as_str(), &view)?;
    Ok(Applied::Changed)
}

/// An operator's change to a known node (`what` names it when the node is unknown).
fn node_change<T: Tables>(
    t: &mut T,
    node: &NodeId,
    at: Timestamp,
    what: &str,
    change: impl FnOnce(&mut NodeView),
) -> Result<Applied> {
    let Some(mut view) = get::<NodeView, _>(t, Table::Nodes, node.as_str())? else {
        return Ok(Applied::Ignored(format!("{what} of unknown node {node}")));
    };
    change(&mut view);
    view.updated_at = at;
    put(t, Table::Nodes, node.as_str(), &view)?;
    Ok(Applied::Changed)
}

fn job_deployed<T: Tables>(t: &mut T, e: &JobDeployed, at: Timestamp) -> Result<Applied> {
    let key = e.job.to_string();
    let known = get::<JobView, _>(t, Table::Jobs, &key)?;
    let created_at = known.as_ref().map_or(at, |j| j.created_at);
    let previous_rollout = known.and_then(|j| j.rollout);
    let view = JobView {
        id: e.job,
        name: e.spec.name.clone(),
        job_type: e.spec.job_type,
        version: e.version,
        state: JobState::Queued,
        reason: None,
        placement: None,
        rollout: None,
        previous_rollout,
        spec: e.spec.clone(),
        created_at,
        updated_at: at,
    };
    put(t, Table::Jobs, &key, &view)?;
    put(t, Table::JobNames, &e.spec.name, &e.job)?;
    Ok(Applied::Changed)
}

fn job_state<T: Tables>(t: &mut T, e: &JobStateChanged, at: Timestamp) -> Result<Applied> {
    let key = e.job.to_string();
    let Some(mut view) = get::<JobView, _>(t, Table::Jobs, &key)? else {
        return Ok(Applied::Ignored(format!(
            "state {} for unknown job {key}",
            e.state
        )));
    };
    // As in the decider: a terminal state, or leaving one (a rerun), ends a blockage.
    if e.state.is_terminal() || view.state.is_terminal() {
        view.placement = None;
    }
    view.state = e.state;
    view.reason = e.reason.clone();
    view.updated_at = at;
    put(t, Table::Jobs, &key, &view)?;
    Ok(Applied::Changed)
}

fn job_blocked<T: Tables>(
    t: &mut T,
    job: JobId,
    placement: Option<&Placement>,
    at: Timestamp,
) -> Result<Applied> {
    let key = job.to_string();
    let Some(mut view) = get::<JobView, _>(t, Table::Jobs, &key)? else {
        return Ok(Applied::Ignored(format!("placement of unknown job {key}")));
    };
    if view.state.is_terminal() {
        return Ok(Applied::Ignored(format!("placement of ended job {key}")));
    }
    view.placement = placement.cloned();
    view.updated_at = at;
    put(t, Table::Jobs, &key, &view)?;
    Ok(Applied::Changed)
}

fn execution_assigned<T: Tables>(
    t: &mut T,
    e: &ExecutionAssigned,
    at: Timestamp,
) -> Result<Applied> {
    let key = e.execution.to_string();
    if let Some(existing) = get::<ExecutionView, _>(t, Table::Executions, &key)? {
        return Ok(Applied::Ignored(format!(
            "execution {key} assigned again (already on {})",
            existing.node_id
        )));
    }
    let view = ExecutionView {
        id: e.execution,
        job_id: e.job,
        job_name: e.job_name.clone(),
        node_id: e.node.clone(),
        version: e.version,
        attempt: e.attempt,
        desired_state: DesiredState::Running,
        state: ExecutionState::Pending,
        exit_code: None,
        reason: None,
        resources: e.resources,
        // Judged only for a job with `update`, and not healthy until its edge says so.
        healthy: e.health.map(|_| false),
        created_at: at,
        updated_at: at,
    };
    put(t, Table::Executions, &key, &view)?;
    put(
        t,
        Table::ExecutionsByJob,
        &index_key(&e.job.to_string(), e.execution),
        &(),
    )?;
    put(
        t,
        Table::ExecutionsByNode,
        &index_key(e.node.as_str(), e.execution),
        &(),
    )?;
    adjust_load(t, &view, true)?;
    Ok(Applied::Changed)
}

fn stop_requested<T: Tables>(
    t: &mut T,
    e: &ExecutionStopRequested,
    at: Timestamp,
) -> Result<Applied> {
    let key = e.execution.to_string();
    let Some(mut view) = get::<ExecutionView, _>(t, Table::Executions, &key)? else {
        return Ok(Applied::Ignored(format!(
            "stop for unknown execution {key}"
        )));
    };
    view.desired_state = DesiredState::Stopped;
    view.updated_at = at;
    put(t, Table::Executions, &key, &view)?;
    Ok(Applied::Changed)
}

fn execution_state<T: Tables>(
    t: &mut T,
    e: &ExecutionStateChanged,
    at: Timestamp,
) -> Result<Applied> {
    let key = e.execution.to_string();
    let Some(mut view) = get::<ExecutionView, _>(t, Table::Executions, &key)? else {
        return Ok(Applied::Ignored(format!(
            "state {} for unknown execution {key}",
            e.state
        )));
    };
    let was_active = !view.state.is_terminal();
    let is_active = !e.state.is_terminal();
    view.state = e.state;
    view.exit_code = e.exit_code.or(view.exit_code);
    if e.reason.is_some() {
        view.reason = e.reason.clone();
    }
    view.updated_at = at;
    put(t, Table::Executions, &key, &view)?;
    if was_active != is_active {
        adjust_load(t, &view, is_active)?;
    }
    Ok(Applied::Changed)
}

fn outcome<T: Tables>(t: &mut T, outcome: CommandOutcome) -> Result<Applied> {
    put(
        t,
        Table::CommandOutcomes,
        &outcome.command_id.to_string(),
        &outcome,
    )?;
    Ok(Applied::Changed)
}

/// Counts the execution on its node, and what it asks of it, when it becomes active
/// (`starts`) or stops being.
fn adjust_load<T: Tables>(t: &mut T, execution: &ExecutionView, starts: bool) -> Result<()> {
    let node = execution.node_id.as_str();
    let load = get::<u32, _>(t, Table::NodeLoad, node)?.unwrap_or(0);
    let load = if starts {
        load.saturating_add(1)
    } else {
        load.saturating_sub(1)
    };
    put(t, Table::NodeLoad, node, &load)?;
    let allocated = get::<Resources, _>(t, Table::NodeAllocated, node)?.unwrap_or_default();
    let allocated = if starts {
        allocated + execution.request()
    } else {
        allocated - execution.request()
    };
    put(t, Table::NodeAllocated, node, &allocated)
}

pub(crate) fn get<V: DeserializeOwned, T: Tables>(
    t: &T,
    table: Table,
    key: &str,
) -> Result<Option<V>> {
    match t.get(table, key).map_err(Into::into)? {
        Some(bytes) => decode(table, key, &bytes).map(Some),
        None => Ok(None),
    }
}

fn put<V: Serialize, T: Tables>(t: &mut T, table: Table, key: &str, value: &V) -> Result<()> {
    t.put(table, key, &encode(value)).map_err(Into::into)
}
