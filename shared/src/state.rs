//! The lifecycle states of nodes, jobs and executions, with the words CLI.md fixes for them.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($name),
                        [$($word),+].join(", ")
                    )),
                }
            }
        }
    };
}

word_enum!(
    /// Liveness of a node as the orchestrator sees it. Affects placement, never delivery.
    NodeState { Connected = "connected", Disconnected = "disconnected", Lost = "lost" }
);

word_enum!(
    /// A job's overall state, decided by the orchestrator from its executions.
    JobState {
        Queued = "queued",
        Deploying = "deploying",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Stopped = "stopped",
    }
);

word_enum!(
    /// What the orchestrator wants an execution to be doing.
    DesiredState { Running = "running", Stopped = "stopped" }
);

word_enum!(
    /// What an execution is actually doing, as last reported or decided.
    ExecutionState {
        Pending = "pending",
        Accepted = "accepted",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Stopped = "stopped",
        Cancelled = "cancelled",
        Lost = "lost",
    }
);

impl ExecutionState {
    /// A terminal execution never changes state again and no longer counts against its
    /// node's capacity.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Stopped | Self::Cancelled | Self::Lost
        )
    }
}

impl JobState {
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in ExecutionState::ALL {
            assert_eq!(s.as_str().parse::<ExecutionState>().unwrap(), *s);
        }
        assert!("bogus".parse::<JobState>().is_err());
    }
}

word_enum!(
    /// Where a version's rollout stands (a job with `update`): replacing what runs, a step
    /// at a time; done, every slot healthy at the version; stopped by an execution that
    /// was not healthy; or ended by a newer version or a stop before it was done.
    RolloutState {
        Rolling = "rolling",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);
