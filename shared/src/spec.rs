//! The job spec users write (YAML or JSON) and its validation.
//!
//! Validation lives here so the CLI (before publishing) and the decider (before accepting)
//! apply exactly the same rules.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::resources::{Request, Resource, Resources};

/// Node labels and selectors: label equality, ordered so encodings are deterministic.
pub type Labels = BTreeMap<String, String>;

/// How a job places its executions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// `count` executions that run to completion.
    Batch,
    /// Once on every matching node at deploy time.
    Ops,
    /// On every matching node, including nodes that join later.
    Daemon,
    /// `count` long-running replicas, replaced when their node is lost.
    Service,
}

impl JobType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Ops => "ops",
            Self::Daemon => "daemon",
            Self::Service => "service",
        }
    }

    /// Whether `count` means something for this type.
    pub const fn takes_count(self) -> bool {
        matches!(self, Self::Batch | Self::Service)
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as the user declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// Executions for `batch` and `service` jobs; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default)]
    pub selector: Labels,
    /// Rules on node labels beyond the selector's equality; a node must meet every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// What each execution asks of its node; what it leaves out takes the defaults
    /// (`Resources::REQUEST_DEFAULT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Request>,
    pub task: TaskSpec,
    /// What happens to the job's executions while their node is silent; absent means the
    /// orchestrator's `--lost-after`, replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    /// How a slot follows up an execution that failed; absent means [`Restart::default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// How a new version replaces the one that runs (service and daemon jobs); absent
    /// means all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
}

/// A rule on one node label, beyond the selector's equality: the set-based selectors of
/// Kubernetes (`zone in (a, b)`, `!gpu`), as `{key, op, values}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub key: String,
    pub op: ConstraintOp,
    /// The values `in` and `notin` compare with; none for `exists` and `notexists`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// How a [`Constraint`] reads its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstraintOp {
    /// The node has the label, with one of the values.
    In,
    /// The node lacks the label, or has it with none of the values.
    NotIn,
    /// The node has the label, whatever its value.
    Exists,
    /// The node lacks the label.
    NotExists,
}

impl ConstraintOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::NotIn => "notin",
            Self::Exists => "exists",
            Self::NotExists => "notexists",
        }
    }
}

impl Constraint {
    /// Whether a node with these labels meets the rule.
    pub fn admits(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        let listed = value.is_some_and(|v| self.values.contains(v));
        match self.op {
            ConstraintOp::In => listed,
            ConstraintOp::NotIn => !listed,
            ConstraintOp::Exists => value.is_some(),
            ConstraintOp::NotExists => value.is_none(),
        }
    }
}

impl fmt::Display for Constraint {
    /// `zone in [a, b]`, `gpu exists`: how reasons and tables name a constraint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.op.as_str())?;
        if !self.values.is_empty() {
            write!(f, " [{}]", self.values.join(", "))?;
        }
        Ok(())
    }
}

/// The job's answer to a node that went silent (Nomad's `disconnect` block).
///
/// An execution on a silent node is declared `lost` once the node has been silent for
/// `lost_after`. With `replace` (the default) its slot is then filled again elsewhere;
/// without it the slot waits for that node, so the work never runs twice, at the price of
/// not running while the node is away. Either way a node that comes back is heard: what
/// its edge reports about a lost execution is recorded, and an execution still running
/// (or a batch execution that completed) takes its slot back from the replacement, which
/// is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Silence after which the job's executions on the node are lost; absent means the
    /// orchestrator's `--lost-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_after: Option<HumanDuration>,
    /// Whether a lost execution is replaced (true) or waits for its node (false).
    #[serde(default = "replaces")]
    pub replace: bool,
}

fn replaces() -> bool {
    true
}

/// How a new version of a service or daemon replaces the executions of the one before: at
/// most `max_parallel` at a time, each step waiting until the new executions are healthy
/// (they ran for `min_healthy_time`; an edge that cannot say so within `healthy_deadline`
/// of taking one says it is not). With `canary`, that many new executions run first,
/// beside the old version, and the rest wait for `cairn job promote`. An execution that
/// ends, or is found not healthy, before it was healthy fails the rollout: nothing more is replaced, and with `auto_revert` the
/// job is deployed again, as a new version, with the spec of the last version whose
/// rollout succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    #[serde(default = "Update::default_max_parallel")]
    pub max_parallel: u32,
    #[serde(default = "Update::default_min_healthy_time")]
    pub min_healthy_time: HumanDuration,
    #[serde(default = "Update::default_healthy_deadline")]
    pub healthy_deadline: HumanDuration,
    #[serde(default)]
    pub auto_revert: bool,
    /// New executions to run beside the old version until `cairn job promote` (a daemon:
    /// nodes to move to the new version first); 0 rolls out without waiting.
    #[serde(default)]
    pub canary: u32,
}

impl Update {
    /// Far beyond any fleet cairn targets, like a batch's count.
    pub const MAX_PARALLEL: u32 = JobSpec::MAX_COUNT;

    const fn default_max_parallel() -> u32 {
        1
    }

    const fn default_min_healthy_time() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }

    const fn default_healthy_deadline() -> HumanDuration {
        HumanDuration(Duration::from_secs(5 * 60))
    }

    /// What the edge running one of the job's executions judges its health by.
    pub const fn health(&self) -> Health {
        Health {
            min_healthy_time: self.min_healthy_time,
            healthy_deadline: self.healthy_deadline,
        }
    }

    fn validate(&self, job_type: JobType) -> Result<(), SpecError> {
        if !matches!(job_type, JobType::Service | JobType::Daemon) {
            return Err(SpecError::new(
                "update",
                format!(
                    "applies to service and daemon jobs only; a {job_type} job's version runs once"
                ),
            ));
        }
        if self.max_parallel == 0 || self.max_parallel > Self::MAX_PARALLEL {
            return Err(SpecError::new(
                "update.max_parallel",
                format!("must be from 1 to {}", Self::MAX_PARALLEL),
            ));
        }
        if self.healthy_deadline.0 <= self.min_healthy_time.0 {
            return Err(SpecError::new(
                "update.healthy_deadline",
                format!(
                    "must be longer than update.min_healthy_time ({})",
                    self.min_healthy_time
                ),
            ));
        }
        if self.canary > Self::MAX_PARALLEL {
            return Err(SpecError::new(
                "update.canary",
                format!("must be at most {}", Self::MAX_PARALLEL),
            ));
        }
        Ok(())
    }
}

/// How an edge judges an execution's health: healthy once it has run `min_healthy_time`;
/// not healthy if that has not happened `healthy_deadline` after the edge took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Health {
    pub min_healthy_time: HumanDuration,
    pub healthy_deadline: HumanDuration,
}

/// How a slot follows up a fault (an end nobody asked for; see the decider): up to
/// `attempts` restarts, each started after a pause that begins at `delay` and grows by
/// `backoff` with every further fault, to at most `max_delay`. The defaults are two
/// restarts without a pause: three executions in all.
///
/// The pause is decided with the restart and carried in its assignment; the edge that
/// takes it waits that long before starting the task, so the decider needs no clock and
/// the pause holds whatever node the restart lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    #[serde(default = "Restart::default_attempts")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// The factor each further fault multiplies the pause by; absent means 1 (a constant
    /// pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Factor>,
    /// The longest pause; absent means no bound but `delay` and `backoff`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
}

impl Default for Restart {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Restart {
    /// Two restarts without a pause.
    pub const DEFAULT: Self = Self {
        attempts: Self::default_attempts(),
        delay: None,
        backoff: None,
        max_delay: None,
    };
    /// Far beyond what a failing task deserves; guards against a typo retrying forever.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// The longest pause a restart may be given.
    pub const MAX_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

    const fn default_attempts() -> u32 {
        2
    }

    /// Executions a slot may use up: the first, then each restart.
    pub const fn executions(&self) -> u32 {
        self.attempts.saturating_add(1)
    }

    /// The pause before the restart that follows a slot's `faults`-th fault (the first
    /// restart follows the first): `delay`, multiplied by `backoff` for each fault after
    /// the first, at most `max_delay`. Computed in whole milliseconds, so it is the same
    /// on every machine.
    pub fn delay_after(&self, faults: u32) -> Duration {
        let Some(HumanDuration(delay)) = self.delay else {
            return Duration::ZERO;
        };
        let cap = self
            .max_delay
            .map_or(Self::MAX_DELAY, |HumanDuration(d)| d.min(Self::MAX_DELAY));
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        let factor = u64::from(self.backoff.map_or(Factor::ONE, |f| f.0));
        let mut ms = u64::try_from(delay.as_millis())
            .unwrap_or(u64::MAX)
            .min(cap_ms);
        for _ in 1..faults {
            if ms >= cap_ms || factor == u64::from(Factor::ONE) {
                break;
            }
            ms = (ms.saturating_mul(factor) / u64::from(Factor::ONE)).min(cap_ms);
        }
        Duration::from_millis(ms)
    }
}

/// A factor written as a number (`2`, `1.5`), kept in thousandths so a spec compares and
/// encodes exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Factor(pub u32);

impl Factor {
    /// Thousandths in one.
    pub const ONE: u32 = 1000;
    /// The largest factor a spec may name.
    pub const MAX: u32 = 100 * Self::ONE;

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::ONE)
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Factor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(d)?;
        let max = f64::from(Self::MAX / Self::ONE);
        if !value.is_finite() || !(1.0..=max).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "must be a number from 1 to {max}, not {value}"
            )));
        }
        // In range, so the product fits: at most MAX thousandths.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let thousandths = (value * f64::from(Self::ONE)).round() as u32;
        Ok(Self(thousandths))
    }
}

impl JobSpec {
    /// Whether a node with these labels may run the job: every selector pair equal, every
    /// constraint met. An empty selector and no constraints admit every node.
    pub fn admits(&self, labels: &Labels) -> bool {
        self.selects(labels) && self.constraints.iter().all(|c| c.admits(labels))
    }

    /// Whether the labels have every selector pair.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }

    /// What each execution asks of its node, defaults filled in.
    pub fn request(&self) -> Resources {
        self.resources.unwrap_or_default().resolve()
    }

    /// Whether a lost execution of this job is replaced, or its slot waits for its node.
    pub fn replaces_lost(&self) -> bool {
        self.disconnect.is_none_or(|d| d.replace)
    }

    /// How the job's slots follow up a fault, defaults filled in.
    pub fn restart(&self) -> Restart {
        self.restart.unwrap_or_default()
    }

    /// How long the job's executions may stay on a silent node before they are lost;
    /// `default` (the orchestrator's) unless the job says.
    pub fn lost_after(&self, default: Duration) -> Duration {
        self.disconnect
            .and_then(|d| d.lost_after)
            .map_or(default, |HumanDuration(d)| d)
    }
}

/// Which engine runs the task. Only `exec` exists today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Exec,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub engine: Engine,
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Names of secrets the task needs in its environment, each read on the node from the
    /// file of that name in the edge's `--secrets-dir`: only the names travel, the values
    /// never leave the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// A duration written the human way (`500ms`, `30s`, `5m`) in every encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?}: {e} (write it like 500ms, 30s or 5m)"))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A spec that is well-formed but breaks a rule; `field` is a dotted path into the spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl JobSpec {
    pub const MAX_NAME_LEN: usize = 128;
    /// Far beyond any fleet cairn targets; guards against a typo placing millions of tasks.
    pub const MAX_COUNT: u32 = 100_000;

    /// The number of executions a `batch` or `service` job asks for.
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// Checks every rule a spec must meet beyond its shape.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name = &self.name;
        if name.is_empty() {
            return Err(SpecError::new("name", "must not be empty"));
        }
        if name.len() > Self::MAX_NAME_LEN {
            return Err(SpecError::new("name", "must be at most 128 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(SpecError::new(
                "name",
                format!(
                    "{name:?} must start with a letter or digit and contain only letters, digits, '-', '_' and '.'"
                ),
            ));
        }
        match (self.job_type.takes_count(), self.count) {
            (true, Some(0)) => return Err(SpecError::new("count", "must be at least 1")),
            (true, Some(n)) if n > Self::MAX_COUNT => {
                return Err(SpecError::new(
                    "count",
                    format!("must be at most {}", Self::MAX_COUNT),
                ));
            }
            (false, Some(_)) => {
                return Err(SpecError::new(
                    "count",
                    format!(
                        "applies to batch and service jobs only; a {} job runs once on every matching node",
                        self.job_type
                    ),
                ));
            }
            _ => {}
        }
        for key in self.selector.keys() {
            if key.is_empty() {
                return Err(SpecError::new("selector", "label keys must not be empty"));
            }
        }
        if let Some(request) = self.resources {
            let asked = request.resolve();
            for resource in Resource::ALL {
                if asked.get(resource) > Resources::MAX_REQUEST {
                    return Err(SpecError::new(
                        format!("resources.{resource}"),
                        "is beyond what any node offers",
                    ));
                }
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let field = || format!("constraints[{i}]");
            if c.key.is_empty() {
                return Err(SpecError::new(field(), "the label key must not be empty"));
            }
            match (c.op, c.values.is_empty()) {
                (ConstraintOp::In | ConstraintOp::NotIn, true) => {
                    return Err(SpecError::new(
                        field(),
                        format!("{} needs at least one value", c.op.as_str()),
                    ));
                }
                (ConstraintOp::Exists | ConstraintOp::NotExists, false) => {
                    return Err(SpecError::new(
                        field(),
                        format!("{} takes no values", c.op.as_str()),
                    ));
                }
                _ => {}
            }
        }
        let task = &self.task;
        match task.command.first() {
            None => return Err(SpecError::new("task.command", "must name a program to run")),
            Some(program) if program.is_empty() => {
                return Err(SpecError::new(
                    "task.command",
                    "the program must not be empty",
                ));
            }
            Some(_) => {}
        }
        for key in task.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(SpecError::new(
                    "task.env",
                    format!("{key:?} is not a valid environment variable name"),
                ));
            }
        }
        if let Some(HumanDuration(t)) = task.timeout
            && t.is_zero()
        {
            return Err(SpecError::new("task.timeout", "must be longer than zero"));
        }
        for (i, name) in task.secrets.iter().enumerate() {
            // An environment variable's name, which is also a plain file name.
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(SpecError::new(
                    format!("task.secrets[{i}]"),
                    format!(
                        "{name:?} must be a variable name: letters, digits and '_', not starting with a digit"
                    ),
                ));
            }
            if task.env.contains_key(name) {
                return Err(SpecError::new(
                    format!("task.secrets[{i}]"),
                    format!("{name:?} is also set in task.env: set it in one place"),
                ));
            }
        }
        if let Some(Disconnect {
            lost_after: Some(HumanDuration(t)),
            ..
        }) = self.disconnect
            && t.is_zero()
        {
            return Err(SpecError::new(
                "disconnect.lost_after",
                "must be longer than zero",
            ));
        }
        if let Some(restart) = self.restart {
            restart.validate()?;
        }
        if let Some(update) = self.update {
            update.validate(self.job_type)?;
        }
        Ok(())
    }
}

impl Restart {
    fn validate(&self) -> Result<(), SpecError> {
        if self.attempts > Self::MAX_ATTEMPTS {
            return Err(SpecError::new(
                "restart.attempts",
                format!("must be at most {}", Self::MAX_ATTEMPTS),
            ));
        }
        let day = humantime::format_duration(Self::MAX_DELAY);
        for (field, value) in [
            ("restart.delay", self.delay),
            ("restart.max_delay", self.max_delay),
        ] {
            if value.is_some_and(|HumanDuration(d)| d > Self::MAX_DELAY) {
                return Err(SpecError::new(field, format!("must be at most {day}")));
            }
        }
        if let (Some(HumanDuration(delay)), Some(HumanDuration(max))) = (self.delay, self.max_delay)
            && max < delay
        {
            return Err(SpecError::new(
                "restart.max_delay",
                format!(
                    "must not be shorter than restart.delay ({})",
                    HumanDuration(delay)
                ),
            ));
        }
        if let Some(Factor(f)) = self.backoff
            && !(Factor::ONE..=Factor::MAX).contains(&f)
        {
            return Err(SpecError::new(
                "restart.backoff",
                format!("must be a number from 1 to {}", Factor::MAX / Factor::ONE),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "heartbeat".into(),
            job_type: JobType::Batch,
            count: Some(3),
            selector: Labels::from([("role".into(), "edge".into())]),
            constraints: vec![],
            resources: None,
            task: TaskSpec {
                engine: Engine::Exec,
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                args: vec![],
                env: BTreeMap::new(),
                working_dir: None,
                timeout: Some(HumanDuration(Duration::from_secs(30))),
                secrets: vec![],
            },
            disconnect: None,
            restart: None,
            update: None,
        }
    }

    #[test]
    fn a_good_spec_validates() {
        spec().validate().unwrap();
    }

    #[test]
    fn secrets_are_variable_names_set_in_one_place() {
        let mut s = spec();
        s.task.secrets = vec!["API_TOKEN".into(), "_x1".into()];
        s.validate().unwrap();
        for bad in ["1TOKEN", "../etc/passwd", "A-B", ""] {
            let mut s = spec();
            s.task.secrets = vec!["OK".into(), bad.into()];
            assert_eq!(
                s.validate().unwrap_err().field,
                "task.secrets[1]",
                "{bad:?}"
            );
        }
        let mut s = spec();
        s.task.secrets = vec!["GREETING".into()];
        s.task.env.insert("GREETING".into(), "hi".into());
        assert_eq!(s.validate().unwrap_err().field, "task.secrets[0]");
    }

    #[test]
    fn rule_breaks_name_their_field() {
        let mut s = spec();
        s.count = Some(0);
        assert_eq!(s.validate().unwrap_err().field, "count");

        let mut s = spec();
        s.job_type = JobType::Daemon;
        assert_eq!(s.validate().unwrap_err().field, "count");

        let mut s = spec();
        s.task.command.clear();
        assert_eq!(s.validate().unwrap_err().field, "task.command");

        let mut s = spec();
        s.name = "has space".into();
        assert_eq!(s.validate().unwrap_err().field, "name");

        let mut s = spec();
        s.task.timeout = Some(HumanDuration(Duration::ZERO));
        assert_eq!(s.validate().unwrap_err().field, "task.timeout");

        let mut s = spec();
        s.disconnect = Some(Disconnect {
            lost_after: Some(HumanDuration(Duration::ZERO)),
            replace: true,
        });
        assert_eq!(s.validate().unwrap_err().field, "disconnect.lost_after");
    }

    fn restart(delay: u64, backoff: Option<u32>, max: Option<u64>) -> Restart {
        Restart {
            attempts: 5,
            delay: Some(HumanDuration(Duration::from_millis(delay))),
            backoff: backoff.map(Factor),
            max_delay: max.map(|ms| HumanDuration(Duration::from_millis(ms))),
        }
    }

    #[test]
    fn restart_pauses_grow_by_the_backoff_up_to_the_bound() {
        let ms = |r: Restart, faults| r.delay_after(faults).as_millis();
        assert_eq!(Restart::default().executions(), 3);
        assert_eq!(Restart::default().delay_after(4), Duration::ZERO);
        let constant = restart(1000, None, None);
        assert_eq!([1, 2, 3].map(|n| ms(constant, n)), [1000; 3]);
        let doubling = restart(1000, Some(2000), Some(5000));
        assert_eq!(
            [1, 2, 3, 4, 9].map(|n| ms(doubling, n)),
            [1000, 2000, 4000, 5000, 5000]
        );
        let halves = restart(100, Some(1500), None);
        assert_eq!([1, 2, 3].map(|n| ms(halves, n)), [100, 150, 225]);
        // No bound of the spec's own: still at most a day, however many faults.
        let steep = restart(1000, Some(100_000), None);
        assert_eq!(steep.delay_after(u32::MAX), Restart::MAX_DELAY);
    }

    #[test]
    fn restart_rules_name_the_field() {
        let field = |r: Restart| {
            let mut s = spec();
            s.restart = Some(r);
            s.validate().err().map(|e| e.field)
        };
        assert_eq!(field(restart(1000, Some(2000), Some(60_000))), None);
        let many = Restart {
            attempts: Restart::MAX_ATTEMPTS + 1,
            ..Restart::default()
        };
        assert_eq!(field(many).as_deref(), Some("restart.attempts"));
        assert_eq!(
            field(restart(2000, None, Some(1000))).as_deref(),
            Some("restart.max_delay")
        );
        let long = 1000 * (Restart::MAX_DELAY.as_secs() + 1);
        assert_eq!(
            field(restart(long, None, None)).as_deref(),
            Some("restart.delay")
        );
        assert_eq!(
            field(restart(1, Some(999), None)).as_deref(),
            Some("restart.backoff")
        );
    }

    #[test]
    fn a_backoff_is_read_as_a_number_in_range() {
        let read = |yaml: &str| serde_json::from_str::<Restart>(yaml).map(|r| r.backoff);
        assert_eq!(read(r#"{"backoff": 2}"#).unwrap(), Some(Factor(2000)));
        assert_eq!(read(r#"{"backoff": 1.5}"#).unwrap(), Some(Factor(1500)));
        assert!(read(r#"{"backoff": 0.5}"#).is_err());
        assert!(read(r#"{"backoff": "fast"}"#).is_err());
        let r: Restart = serde_json::from_str(r#"{"delay": "1s"}"#).unwrap();
        assert_eq!(r.attempts, 2, "attempts defaults to today's two restarts");
        let back: Restart =
            serde_json::from_str(&serde_json::to_string(&restart(1, Some(1500), None)).unwrap())
                .unwrap();
        assert_eq!(back.backoff, Some(Factor(1500)));
    }

    #[test]
    fn disconnect_defaults_to_the_orchestrators_threshold_and_replacing() {
        let default = Duration::from_secs(300);
        assert_eq!(spec().lost_after(default), default);
        assert!(spec().replaces_lost());

        let mut json = serde_json::to_value(spec()).unwrap();
        json["disconnect"] = serde_json::json!({"lost_after": "2m"});
        let s: JobSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(s.lost_after(default), Duration::from_secs(120));
        assert!(s.replaces_lost(), "replace defaults to true");

        json["disconnect"] = serde_json::json!({"replace": false});
        let s: JobSpec = serde_json::from_value(json).unwrap();
        assert_eq!(s.lost_after(default), default);
        assert!(!s.replaces_lost());
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn constraints_read_labels_as_kubernetes_set_selectors_do() {
        let c = |json: &str| -> Constraint { serde_json::from_str(json).unwrap() };
        let zone_a = labels(&[("zone", "a")]);
        let zone_b = labels(&[("zone", "b"), ("gpu", "")]);
        let bare = labels(&[]);
        let within = c(r#"{"key": "zone", "op": "in", "values": ["a", "c"]}"#);
        assert!(within.admits(&zone_a) && !within.admits(&zone_b) && !within.admits(&bare));
        let outside = c(r#"{"key": "zone", "op": "notin", "values": ["a"]}"#);
        assert!(!outside.admits(&zone_a) && outside.admits(&zone_b) && outside.admits(&bare));
        let gpu = c(r#"{"key": "gpu", "op": "exists"}"#);
        assert!(!gpu.admits(&zone_a) && gpu.admits(&zone_b));
        let no_gpu = c(r#"{"key": "gpu", "op": "notexists"}"#);
        assert!(no_gpu.admits(&zone_a) && !no_gpu.admits(&zone_b));
        assert_eq!(within.to_string(), "zone in [a, c]");
        assert_eq!(gpu.to_string(), "gpu exists");

        let mut s = spec();
        s.selector = labels(&[("zone", "b")]);
        s.constraints = vec![gpu];
        assert!(s.admits(&zone_b), "selector and constraint both met");
        assert!(
            !s.admits(&labels(&[("zone", "b")])),
            "the constraint is not met"
        );
        assert!(
            !s.admits(&labels(&[("gpu", "1")])),
            "the selector is not met"
        );
    }

    #[test]
    fn constraints_that_cannot_mean_anything_are_refused() {
        let mut s = spec();
        for (op, values) in [
            (ConstraintOp::In, vec![]),
            (ConstraintOp::NotIn, vec![]),
            (ConstraintOp::Exists, vec!["x".to_owned()]),
            (ConstraintOp::NotExists, vec!["x".to_owned()]),
        ] {
            s.constraints = vec![Constraint {
                key: "zone".into(),
                op,
                values,
            }];
            assert_eq!(s.validate().unwrap_err().field, "constraints[0]");
        }
        s.constraints = vec![Constraint {
            key: String::new(),
            op: ConstraintOp::Exists,
            values: vec![],
        }];
        assert_eq!(s.validate().unwrap_err().field, "constraints[0]");
        let mut s = spec();
        s.resources = Some(Request {
            memory: Some(crate::resources::Bytes(u64::MAX)),
            ..Request::default()
        });
        assert_eq!(s.validate().unwrap_err().field, "resources.memory");
        let unknown = serde_json::from_str::<Constraint>(r#"{"key": "a", "op": "like"}"#);
        assert!(unknown.is_err(), "an unknown op is an error, not ignored");
    }

    #[test]
    fn durations_are_human_in_json() {
        let json = serde_json::to_value(spec()).unwrap();
        assert_eq!(json["task"]["timeout"], "30s");
        let back: JobSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec());
    }
}
