//! What the orchestrator counts for Prometheus (`GET /metrics`, see `http.rs`): the
//! decider's work as it happens (counters and histograms the engine and dispatcher update), and the
//! fleet as the views hold it, read afresh at every scrape.

use std::sync::atomic::AtomicU64;

use cairn_shared::{ExecutionState, JobState, NodeState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::{ExecutionFilter, ViewReader};

/// A state label: `{state="running"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Which part of the assignment queues: `{stage="undelivered"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

/// What a scrape reads from JetStream beside the views; `None` where the server did not
/// answer, which leaves that metric as last read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed {
    /// The event stream's last sequence.
    pub stored: Option<u64>,
    /// The work waiting in the assignment shards.
    pub waiting: Option<cairn_streams::Waiting>,
}

/// The decider's counters, shared with the engine that updates them; cloning shares them.
#[derive(Clone, Debug)]
pub struct DeciderMetrics {
    /// Inputs decided (commands, reports, liveness facts), one per decision.
    pub decisions: Counter,
    /// Events appended to the event stream by this orchestrator.
    pub events_appended: Counter,
    /// Appends refused because another writer appended first (then decided again).
    pub append_conflicts: Counter,
    /// Time to decide one round of inputs and append its events, in seconds.
    pub round_seconds: Histogram,
    /// From an assignment's event being decided to the work stored on its node's subject,
    /// in seconds (the dispatcher's).
    pub dispatch_seconds: Histogram,
}

impl Default for DeciderMetrics {
    fn default() -> Self {
        Self {
            decisions: Counter::default(),
            events_appended: Counter::default(),
            append_conflicts: Counter::default(),
            // 100 µs to ~13 s, doubling.
            round_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18),
            ),
            dispatch_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18),
            ),
        }
    }
}

/// Every metric the orchestrator serves, in one registry.
pub struct Metrics {
    registry: Registry,
    nodes: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    executions: Family<StateLabel, Gauge>,
    projector_lag: Gauge<u64, AtomicU64>,
    assignments_waiting: Family<StageLabel, Gauge<u64, AtomicU64>>,
    pub decider: DeciderMetrics,
}

impl Metrics {
    pub fn new(decider: DeciderMetrics) -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let metrics = Self {
            nodes: Family::default(),
            jobs: Family::default(),
            executions: Family::default(),
            projector_lag: Gauge::default(),
            assignments_waiting: Family::default(),
            decider,
            registry: Registry::default(),
        };
        registry.register(
            "nodes",
            "Nodes by state, as the views hold them",
            metrics.nodes.clone(),
        );
        registry.register(
            "jobs",
            "Jobs by state, at their current version",
            metrics.jobs.clone(),
        );
        registry.register(
            "executions",
            "Executions of every version by state",
            metrics.executions.clone(),
        );
        registry.register(
            "projector_lag_events",
            "Events stored in the event stream that the views do not include yet",
            metrics.projector_lag.clone(),
        );
        registry.register(
            "assignments_waiting",
            "Work stored for nodes and not yet acked by them: undelivered (the node is away \
             or has not pulled it) or unacked (delivered, not yet accepted)",
            metrics.assignments_waiting.clone(),
        );
        registry.register(
            "decisions",
            "Inputs the decider decided",
            metrics.decider.decisions.clone(),
        );
        registry.register(
            "events_appended",
            "Events this orchestrator appended to the event stream",
            metrics.decider.events_appended.clone(),
        );
        registry.register(
            "append_conflicts",
            "Appends refused because another writer appended first; decided again",
            metrics.decider.append_conflicts.clone(),
        );
        registry.register_with_unit(
            "decision_round",
            "Time to decide a round of inputs and append its events",
            Unit::Seconds,
            metrics.decider.round_seconds.clone(),
        );
        registry.register_with_unit(
            "dispatch",
            "From an assignment decided to its work stored on the node's subject",
            Unit::Seconds,
            metrics.decider.dispatch_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Reads the fleet from one snapshot of the views, how far they are behind the event
    /// stream and what waits in the assignment queues (`observed`), then encodes every
    /// metric in the Prometheus text format. Every state appears, at 0 when nothing is in
    /// it, so a series never vanishes.
    pub fn render(&self, views: &ViewReader, observed: Observed) -> crate::Result<String> {
        let set = |family: &Family<StateLabel, Gauge>, state: &str, n: usize| {
            family
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        let nodes = views.nodes()?;
        for state in NodeState::ALL {
            let n = nodes.iter().filter(|n| n.node.state == *state).count();
            set(&self.nodes, state.as_str(), n);
        }
        let jobs = views.jobs()?;
        for state in JobState::ALL {
            let n = jobs.iter().filter(|j| j.state == *state).count();
            set(&self.jobs, state.as_str(), n);
        }
        // Every execution ever made is read: a scrape costs the size of the history, as
        // `execution list` does.
        let executions = views.executions(&ExecutionFilter::default())?;
        for state in ExecutionState::ALL {
            let n = executions.iter().filter(|e| e.state == *state).count();
            set(&self.executions, state.as_str(), n);
        }
        if let Some(stored) = observed.stored {
            self.projector_lag
                .set(stored.saturating_sub(views.applied_seq()?.0));
        }
        if let Some(waiting) = observed.waiting {
            for (stage, n) in [
                ("undelivered", waiting.undelivered),
                ("unacked", waiting.unacked),
            ] {
                self.assignments_waiting
                    .get_or_create(&StageLabel { stage })
                    .set(n);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| crate::Error::stopped("metrics", format!("encoding: {e}")))?;
        Ok(text)
    }
}
