//! Commands: what users ask for. Published to the command stream by the CLI; the decider
//! turns each into events or a `CommandRejected` event with the reason.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::{CommandId, NodeId};
use crate::spec::JobSpec;
use crate::time::Timestamp;

/// A job named by id or by name, as a user types it (`cairn job stop ID|NAME`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobRef(pub String);

/// Create a job, or a new version of the job with the same name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployJob {
    pub spec: JobSpec,
}

/// Stop every execution of a job and mark it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopJob {
    pub job: JobRef,
}

/// Run the current version of a job again, as if freshly deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunJob {
    pub job: JobRef,
}

/// Deploy an earlier version's spec again, as a new version (`cairn job revert`): the
/// version before the current one unless `version` names another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertJob {
    pub job: JobRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// Roll out the rest of a version whose canaries are healthy (`cairn job promote`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteJob {
    pub job: JobRef,
}

/// Make a node eligible for new work, or not (`cairn node eligibility ID enable|disable`).
/// An ineligible node keeps what it runs and takes nothing new.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNodeEligibility {
    pub node: NodeId,
    pub eligible: bool,
}

/// Take a node out of service (`cairn node drain ID [--deadline D]`): it takes no new
/// work, its service replicas move to other nodes as their replacements come up, and
/// whatever still runs there at `deadline` (batch and ops work, daemons, replicas nowhere
/// else could take) is asked to stop. The deadline is an instant, computed by whoever
/// asks, because the decider reads no clock; draining again sets a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainNode {
    pub node: NodeId,
    pub deadline: Timestamp,
}

messages! {
    /// Everything a user can ask of cairn.
    pub enum Command: id = CommandId {
        DeployJob = ("DeployJob", 1),
        StopJob = ("StopJob", 1),
        RerunJob = ("RerunJob", 1),
        SetNodeEligibility = ("SetNodeEligibility", 1),
        DrainNode = ("DrainNode", 1),
        RevertJob = ("RevertJob", 1),
        PromoteJob = ("PromoteJob", 1),
    }
}

impl Command {
    /// The job the command names, as its user wrote it (a name or an id), if it names one.
    pub fn job(&self) -> Option<&str> {
        match self {
            Command::DeployJob(DeployJob { spec }) => Some(&spec.name),
            Command::StopJob(StopJob { job })
            | Command::RerunJob(RerunJob { job })
            | Command::RevertJob(RevertJob { job, .. })
            | Command::PromoteJob(PromoteJob { job }) => Some(&job.0),
            Command::SetNodeEligibility(_) | Command::DrainNode(_) => None,
        }
    }

    /// The node the command names, if it names one.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Command::SetNodeEligibility(c) => Some(&c.node),
            Command::DrainNode(c) => Some(&c.node),
            Command::DeployJob(_)
            | Command::StopJob(_)
            | Command::RerunJob(_)
            | Command::RevertJob(_)
            | Command::PromoteJob(_) => None,
        }
    }

    /// One line saying what was asked, for people (`cairn audit history`).
    pub fn summary(&self) -> String {
        match self {
            Command::DeployJob(DeployJob { spec }) => {
                format!("deploy {} ({})", spec.name, spec.job_type)
            }
            Command::StopJob(StopJob { job }) => format!("stop {}", job.0),
            Command::RerunJob(RerunJob { job }) => format!("rerun {}", job.0),
            Command::PromoteJob(PromoteJob { job }) => format!("promote {}", job.0),
            Command::RevertJob(RevertJob { job, version }) => match version {
                Some(v) => format!("revert {} to version {v}", job.0),
                None => format!("revert {} to its previous version", job.0),
            },
            Command::SetNodeEligibility(c) => format!(
                "make node {} {}",
                c.node,
                if c.eligible { "eligible" } else { "ineligible" }
            ),
            Command::DrainNode(c) => format!("drain node {} by {}", c.node, c.deadline),
        }
    }
}
