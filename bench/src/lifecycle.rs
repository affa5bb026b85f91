//! The lifecycle scenario: one batch job of M executions on N simulated edges, from the
//! deploy command to every execution completed and the job's outcome in the views —
//! beside M raw messages through N per-node consumers, in the same run. Then the
//! projector rebuilds the views from this run's events, beside a raw read of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cairn_orchestrator::query::{Answer, OutcomeQuery, endpoint};
use cairn_shared::codec::Envelope;
use cairn_shared::command::DeployJob;
use cairn_shared::spec::{Engine, JobSpec, JobType, TaskSpec};
use cairn_shared::{Command, CommandId, ExecutionState, JobState, Seq, Timestamp};
use cairn_streams::{Outgoing, Publisher, Reader, StreamKind, subjects};
use hdrhistogram::Histogram;

use crate::fleet::{Fleet, now_nanos};
use crate::observer::{Observer, Watched};
use crate::raw::RawFleet;
use crate::replay;
use crate::report::{Figure, Scenario};
use crate::stack::{Nats, OrchestratorProcess};
use crate::watch::Watch;

/// A job spec for the simulated fleet; `program` decides what its edges do (see `fleet`).
pub fn spec(name: &str, job_type: JobType, count: Option<u32>, program: &[&str]) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        job_type,
        count,
        selector: BTreeMap::from([("role".to_owned(), "edge".to_owned())]),
        constraints: vec![],
        resources: None,
        task: TaskSpec {
            engine: Engine::Exec,
            command: program.iter().map(|s| (*s).to_owned()).collect(),
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

/// Stores a deploy command, as `cairn job deploy` does; returns its id.
pub async fn deploy(publisher: &Publisher, spec: JobSpec) -> Result<CommandId> {
    let envelope = Envelope::new(
        CommandId::generate(),
        None,
        Timestamp::now(),
        Command::DeployJob(DeployJob { spec }),
    );
    publisher.append(Outgoing::command(&envelope)?).await?;
    Ok(envelope.id)
}

/// Waits until the orchestrator's views have applied event `seq`. Each question waits a
/// short time for its answer, and any that went unanswered are reported, so that a slow
/// figure says whether the views or the answers were late.
pub async fn projected(client: &async_nats::Client, command: CommandId, seq: Seq) -> Result<()> {
    let started = Instant::now();
    let payload = serde_json::to_vec(&OutcomeQuery { command })?;
    let mut unanswered = 0_u32;
    loop {
        let reply = client
            .send_request(
                subjects::query(endpoint::OUTCOME),
                async_nats::Request::new()
                    .payload(payload.clone().into())
                    .timeout(Some(Duration::from_millis(500))),
            )
            .await;
        match &reply {
            Ok(reply) => {
                if let Ok(answer) =
                    serde_json::from_slice::<Answer<serde_json::Value>>(&reply.payload)
                    && answer.applied_seq >= seq
                {
                    if unanswered > 0 {
                        eprintln!(
                            "note: {unanswered} outcome queries went unanswered within 500 ms"
                        );
                    }
                    return Ok(());
                }
            }
            Err(e) => {
                unanswered += 1;
                if unanswered == 1 {
                    eprintln!("note: an outcome query went unanswered: {e}");
                }
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the views did not reach event {seq}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A duration as the microseconds the latency histograms record.
pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

pub fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// p50, p90, p99 and p99.9 of a histogram of microseconds, each beside the same quantile
/// of the baseline where there is one.
pub fn quantiles(
    what: &str,
    histogram: &Histogram<u64>,
    baseline: Option<&Histogram<u64>>,
) -> Vec<Figure> {
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)]
        .into_iter()
        .map(|(name, q)| {
            Figure::latency(
                &format!("{what}, {name}"),
                millis(histogram, q),
                baseline.map(|b| millis(b, q)),
            )
        })
        .collect()
}

/// How the orchestrator's HTTP side is used during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Http {
    Off,
    /// `--http`, `/metrics` scraped every second.
    Scraped,
    /// `--http`, scraped, and a dashboard open.
    Watched,
}

impl Http {
    const ALL: [Http; 3] = [Http::Off, Http::Scraped, Http::Watched];

    fn label(self) -> &'static str {
        match self {
            Http::Off => "HTTP off",
            Http::Scraped => "HTTP on, scraped",
            Http::Watched => "HTTP on, scraped, dashboard open",
        }
    }
}

/// One cairn run of the scenario: how long it took, and what the HTTP watcher did.
struct Measured {
    completed: Duration,
    in_views: Duration,
    to_assigned: Histogram<u64>,
    to_completed: Histogram<u64>,
    watched: Option<Watched>,
}

pub async fn run(nats: &Nats, nodes: usize, executions: u32, rounds: u32) -> Result<Scenario> {
    let url = nats.url.as_str();
    let client = cairn_streams::connect(url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client.clone());
    nats.fresh_streams(&js).await?;

    eprintln!("lifecycle: raw baseline, {executions} messages through {nodes} per-node consumers");
    let raw = RawFleet::start(nats, nodes).await?;
    let raw_time = raw.throughput(u64::from(executions)).await?;
    drop(raw);

    // The same job on fresh streams with the orchestrator's HTTP side off, on and scraped,
    // and on with a dashboard open too, `rounds` times in turn, so the three differ in that
    // alone and share the machine's drift.
    let mut runs: [Vec<Measured>; 3] = Default::default();
    let mut rebuilt = None;
    for _ in 0..rounds {
        for (http, measured) in Http::ALL.into_iter().zip(runs.iter_mut()) {
            measured.push(measure(nats, &client, &js, nodes, executions, http).await?);
            if rebuilt.is_none() {
                eprintln!("lifecycle: the projector rebuilds this run's events");
                let last = Reader::new(js.clone())
                    .bounds(StreamKind::Events)
                    .await?
                    .last;
                rebuilt = Some((
                    replay::rebuild(&js, last).await.context("rebuilding")?,
                    last,
                ));
            }
        }
    }
    let (rebuild, last) = rebuilt.context("at least one round")?;

    let per_second = |d: Duration| f64::from(executions) / d.as_secs_f64();
    let raw_rate = per_second(raw_time);
    let mut figures = vec![Figure::rate(
        "raw publish → per-node pull + ack",
        raw_rate,
        None,
    )];
    let mut each = Vec::new();
    for (http, measured) in Http::ALL.into_iter().zip(runs.iter_mut()) {
        each.push(format!(
            "{}: {}",
            http.label(),
            measured
                .iter()
                .map(|m| format!("{:.0}", per_second(m.in_views)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        // The median run by its time to all completed and in the views.
        measured.sort_by_key(|m| m.in_views);
        let median = measured.swap_remove(measured.len() / 2);
        let named = |what: &str| match http {
            Http::Off => what.to_owned(),
            _ => format!("{}: {what}", http.label()),
        };
        figures.push(Figure::rate_of(
            "exec/s",
            &named("deploy → all completed"),
            per_second(median.completed),
            Some(raw_rate),
        ));
        figures.push(Figure::rate_of(
            "exec/s",
            &named("deploy → all completed and in the views"),
            per_second(median.in_views),
            Some(raw_rate),
        ));
        if http == Http::Off {
            figures.extend(quantiles(
                "deploy → execution assigned",
                &median.to_assigned,
                None,
            ));
        }
        figures.extend(quantiles(
            &named("deploy → execution completed"),
            &median.to_completed,
            None,
        ));
        if let Some(watched) = median.watched {
            figures.extend([
                Figure::value(
                    &named("/metrics scrapes"),
                    watched.scrapes as f64,
                    "requests",
                ),
                Figure::value(
                    &named("dashboard reads (nodes, jobs, executions)"),
                    watched.dashboard_reads as f64,
                    "requests",
                ),
                Figure::value(
                    &named("events streamed to the dashboard"),
                    watched.events_streamed as f64,
                    "events",
                ),
                Figure::value(
                    &named("failed requests"),
                    watched.failures as f64,
                    "requests",
                ),
            ]);
        }
    }
    figures.extend(rebuild.figures(last.0));
    Ok(Scenario {
        name: "lifecycle".into(),
        notes: format!(
            "one batch job of {executions} no-op executions on {nodes} simulated edges (capacity {} each); {} events; {rounds} round(s) on fresh streams with the HTTP side off, on and scraped every second, and on with a dashboard open (following /v1/events, reading the views after each burst), the median of each shown; exec/s to all in the views, {}",
            executions.div_ceil(u32::try_from(nodes)?),
            last.0,
            each.join("; ")
        ),
        figures,
    })
}

/// The job on fresh streams, a fresh orchestrator and a fresh simulated fleet, the
/// orchestrator's HTTP side used as `http` says.
async fn measure(
    nats: &Nats,
    client: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    nodes: usize,
    executions: u32,
    http: Http,
) -> Result<Measured> {
    nats.fresh_streams(js).await?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let with = format!(" ({})", http.label());
    eprintln!("lifecycle: orchestrator and {nodes} simulated edges{with}");
    let listen = addr.to_string();
    let more: &[&str] = match http {
        Http::Off => &[],
        Http::Scraped | Http::Watched => &["--http", &listen],
    };
    let _orchestrator = OrchestratorProcess::start_with(nats, more).await?;
    let observer = match http {
        Http::Off => None,
        Http::Scraped => Some(Observer::start(addr, false).await?),
        Http::Watched => Some(Observer::start(addr, true).await?),
    };
    let watch = Watch::start(js).await?;
    let capacity = executions.div_ceil(u32::try_from(nodes)?);
    let fleet = Fleet::start(&nats.url, &watch, "life", nodes, capacity, false).await?;

    eprintln!("lifecycle: a batch job of {executions} executions{with}");
    let publisher = Publisher::new(js.clone());
    let started = Instant::now();
    let started_ns = now_nanos();
    let command = deploy(
        &publisher,
        spec("lifecycle", JobType::Batch, Some(executions), &["true"]),
    )
    .await?;
    let total = usize::try_from(executions)?;
    watch
        .until("every execution completed", Duration::from_secs(300), |s| {
            s.reached(ExecutionState::Completed) >= total
        })
        .await?;
    let completed = started.elapsed();
    let mut done_seq = Seq::ZERO;
    watch
        .until("the job completed", Duration::from_secs(60), |s| {
            s.jobs
                .values()
                .any(|(state, _)| *state == JobState::Completed)
        })
        .await?;
    watch.with(|s| {
        done_seq = s
            .jobs
            .values()
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(Seq::ZERO);
    });
    projected(client, command, done_seq).await?;
    let in_views = started.elapsed();
    let watched = match observer {
        Some(observer) => Some(observer.stop().await),
        None => None,
    };

    let (to_assigned, to_completed) = watch.with(|s| -> Result<_> {
        let mut assigned = Histogram::<u64>::new(3)?;
        let mut completed = Histogram::<u64>::new(3)?;
        for (execution, (state, at)) in &s.states {
            if *state == ExecutionState::Completed {
                completed.record(at.saturating_sub(started_ns) / 1_000)?;
            }
            if let Some(at) = s.assigned.get(execution) {
                assigned.record(at.saturating_sub(started_ns) / 1_000)?;
            }
        }
        Ok((assigned, completed))
    })?;
    ensure!(
        to_completed.len() == u64::from(executions),
        "{} executions completed, expected {executions}",
        to_completed.len()
    );
    drop(fleet);
    Ok(Measured {
        completed,
        in_views,
        to_assigned,
        to_completed,
        watched,
    })
}
