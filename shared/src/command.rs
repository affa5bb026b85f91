//! Commands: what users ask for. Published to the command stream by the CLI; the decider
//! turns each into events or a `CommandRejected` event with the reason.

use serde::{Deserialize, Serialize};

use crate::codec::messages;
use crate::ids::CommandId;
use crate::spec::JobSpec;

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

messages! {
    /// Everything a user can ask of cairn.
    pub enum Command: id = CommandId {
        DeployJob = ("DeployJob", 1),
        StopJob = ("StopJob", 1),
        RerunJob = ("RerunJob", 1),
    }
}

impl Command {
    /// The job the command names, as its user wrote it (a name or an id).
    pub fn job(&self) -> &str {
        match self {
            Command::DeployJob(DeployJob { spec }) => &spec.name,
            Command::StopJob(StopJob { job }) | Command::RerunJob(RerunJob { job }) => &job.0,
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
        }
    }
}
