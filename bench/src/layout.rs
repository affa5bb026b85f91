//! The layout scenario: which per-node consumer layout a 3-server cluster accepts, and what
//! each costs. For every candidate and fleet size it starts a fresh loopback cluster,
//! declares the 64 assignment shards with three replicas, creates the fleet's consumers
//! ([`NODE_CONSUMERS_AT_ONCE`] in flight, as the orchestrator does), reads every server's
//! memory and CPU during creation and a quiet spell after it, sends one message to each
//! node, then SIGKILLs the server leading the most shards and restarts it, measuring each
//! time how long until every node can take a newly published message again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{
    self,
    consumer::PullConsumer,
    stream::{ConsumerCreateStrictErrorKind, RetentionPolicy},
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;

use cairn_shared::NodeId;
use cairn_streams::subjects::{self, Shard};
use cairn_streams::testing::NatsCluster;
use cairn_streams::topology::{NODE_CONSUMERS_AT_ONCE, node_consumer_config};
use cairn_streams::{StreamKind, Topology};

use crate::fleet::now_nanos;
use crate::report::{Figure, Scenario};
use crate::stack::rss_bytes;

/// How long creating one fleet's consumers may take before the candidate stops there.
const CREATE_DEADLINE: Duration = Duration::from_secs(180);
/// How long every node gets to take one message, in each phase.
const REACH_DEADLINE: Duration = Duration::from_secs(120);
/// How long consumers that lived on the killed server get to answer before they are
/// taken as lost (they are expected not to).
const LOST_DEADLINE: Duration = Duration::from_secs(10);
/// Fetch requests in flight while probing the nodes.
const FETCHING_AT_ONCE: usize = 256;
/// Connections the probing spreads its fetches over.
const CLIENTS: usize = 4;

/// One way to lay out the nodes' consumers over the assignment shards.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    key: &'static str,
    what: &'static str,
    /// Work-queue retention (acked work removed by the server), else limits.
    work_queue: bool,
    /// Per-node consumers with these replicas and memory storage; `None`: one shared,
    /// file-backed R3 consumer per shard.
    per_node: Option<(usize, bool)>,
}

const CANDIDATES: [Candidate; 4] = [
    Candidate {
        key: "A",
        what: "R3 work queues, R3 file per-node consumers",
        work_queue: true,
        per_node: Some((3, false)),
    },
    Candidate {
        key: "B",
        what: "R3 work queues, R3 memory per-node consumers",
        work_queue: true,
        per_node: Some((3, true)),
    },
    Candidate {
        key: "C",
        what: "R3 limits streams, R1 memory per-node consumers",
        work_queue: false,
        per_node: Some((1, true)),
    },
    Candidate {
        key: "D",
        what: "R3 work queues, one R3 file consumer per shard",
        work_queue: true,
        per_node: None,
    },
];

/// What one candidate at one size measured; `None` where it did not get that far.
#[derive(Debug, Default)]
struct Row {
    candidate: &'static str,
    nodes: usize,
    refused: Option<String>,
    consumers: usize,
    created: usize,
    created_in: Option<Duration>,
    create_stopped: bool,
    create_retries: usize,
    create_cpu: [Option<f64>; 3],
    rss_created: [Option<f64>; 3],
    idle_cpu_percent: [Option<f64>; 3],
    rss_idle: [Option<f64>; 3],
    reach: Option<Reach>,
    killed: Option<usize>,
    lost_with_server: usize,
    after_kill: Option<Reach>,
    lost_answered: Option<usize>,
    recreated: Option<Reach>,
    recreate_failures: usize,
    after_restart: Option<Reach>,
}

/// One message to each of a set of nodes.
#[derive(Debug)]
struct Reach {
    nodes: usize,
    reached: usize,
    /// When the last node acked its message, from the phase's start.
    all_in: Option<Duration>,
    latency_us: Histogram<u64>,
}

/// Where the consumers of one run are: one receiver per node, or per shard.
struct Receiver {
    consumer: PullConsumer,
    /// Its consumer's configuration, to create it again.
    config: jetstream::consumer::pull::Config,
    shard: usize,
    /// The nodes whose work it receives.
    nodes: Vec<usize>,
    /// The server it was placed on, as its creation answered.
    placed_on: Option<String>,
}

pub async fn run(sizes: &[usize], only: Option<&[String]>, quick: bool) -> Result<Scenario> {
    let idle = Duration::from_secs(if quick { 5 } else { 20 });
    let ticks = clock_ticks();
    let mut rows = Vec::new();
    for candidate in CANDIDATES {
        if only.is_some_and(|keys| !keys.iter().any(|k| k.eq_ignore_ascii_case(candidate.key))) {
            continue;
        }
        for &n in sizes {
            eprintln!("layout: {} ({}), {n} nodes", candidate.key, candidate.what);
            let mut row = Row {
                candidate: candidate.key,
                nodes: n,
                ..Row::default()
            };
            if let Err(e) = measure(candidate, n, idle, ticks, &mut row).await {
                row.refused.get_or_insert(format!("stopped: {e:#}"));
            }
            eprintln!("{}", markdown_row(&row));
            rows.push(row);
        }
    }
    print!("{}", markdown(&rows));
    let mut notes = format!(
        "a fresh 3-server loopback cluster per candidate and size; 64 R3 file-backed shards; \
         {NODE_CONSUMERS_AT_ONCE} creations and {FETCHING_AT_ONCE} fetches in flight; idle \
         window {idle:?}; SIGKILL of the server leading the most shards, then its restart"
    );
    for c in CANDIDATES {
        notes += &format!("; {}: {}", c.key, c.what);
    }
    Ok(Scenario {
        name: "layout".into(),
        notes,
        figures: rows.iter().flat_map(figures).collect(),
    })
}

async fn measure(
    candidate: Candidate,
    n: usize,
    idle: Duration,
    ticks: f64,
    row: &mut Row,
) -> Result<()> {
    let mut cluster = NatsCluster::start().await;
    let mut contexts = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = cairn_streams::connect(&cluster.url(), None, "cairn-bench-layout").await?;
        contexts.push(cairn_streams::jetstream(client));
    }
    let js = contexts[0].clone();
    let topology = Topology {
        replicas: 3,
        ..Topology::default()
    };
    for kind in StreamKind::assignments() {
        let mut config = topology.config(kind);
        if !candidate.work_queue {
            config.retention = RetentionPolicy::Limits;
        }
        js.create_stream(config)
            .await
            .with_context(|| format!("creating {}", kind.name()))?;
    }
    let nodes: Vec<NodeId> = (0..n)
        .map(|i| NodeId::new(format!("layout-{i}")))
        .collect::<std::result::Result<_, _>>()?;
    let wanted = wanted_consumers(candidate, &nodes);
    row.consumers = wanted.len();

    // Creation, as the orchestrator registers a fleet.
    let cpu_before = cpu_of(&cluster, ticks);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + CREATE_DEADLINE;
    let mut receivers = Vec::with_capacity(wanted.len());
    let mut creating = futures::stream::iter(wanted)
        .map(|(shard, nodes, config)| {
            let js = js.clone();
            async move {
                let created = create(&js, shard, &config).await;
                (shard, nodes, config, created)
            }
        })
        .buffer_unordered(NODE_CONSUMERS_AT_ONCE);
    loop {
        match tokio::time::timeout_at(deadline, creating.next()).await {
            Ok(Some((shard, nodes, config, created))) => match created {
                Ok((consumer, retries)) => {
                    row.create_retries += retries;
                    let placed_on = consumer
                        .cached_info()
                        .cluster
                        .as_ref()
                        .and_then(|c| c.leader.clone());
                    receivers.push(Receiver {
                        consumer,
                        config,
                        shard,
                        nodes,
                        placed_on,
                    });
                }
                Err(refusal) => {
                    row.refused = Some(refusal);
                    row.created = receivers.len();
                    return Ok(());
                }
            },
            Ok(None) => {
                row.created_in = Some(started.elapsed());
                break;
            }
            Err(_) => {
                row.create_stopped = true;
                break;
            }
        }
    }
    drop(creating);
    row.created = receivers.len();
    let cpu_after = cpu_of(&cluster, ticks);
    row.create_cpu = delta(cpu_before, cpu_after);
    row.rss_created = rss_of(&cluster);

    // Raft groups heartbeat even with nothing to do: the quiet spell is deliberate.
    let cpu_before = cpu_of(&cluster, ticks);
    tokio::time::sleep(idle).await;
    let cpu_after = cpu_of(&cluster, ticks);
    row.idle_cpu_percent =
        delta(cpu_before, cpu_after).map(|d| d.map(|s| s * 100.0 / idle.as_secs_f64()));
    row.rss_idle = rss_of(&cluster);

    // Spread the fetches over several connections, as edges are.
    for (i, receiver) in receivers.iter_mut().enumerate() {
        let context = contexts[i % CLIENTS].clone();
        receiver.consumer = PullConsumer::new(
            receiver.config.clone(),
            receiver.consumer.cached_info().clone(),
            context,
        );
    }
    let all: Vec<usize> = (0..receivers.len()).collect();
    row.reach = Some(
        reach(
            &contexts,
            &nodes,
            &receivers,
            &all,
            1,
            Instant::now(),
            REACH_DEADLINE,
        )
        .await,
    );

    // The server leading the most shards dies.
    let mut leading = [0usize; NatsCluster::SIZE];
    for kind in StreamKind::assignments() {
        if let Some(i) = cluster.stream_leader(&js, kind.name()).await {
            leading[i] += 1;
        }
    }
    let victim = (0..NatsCluster::SIZE)
        .max_by_key(|&i| leading[i])
        .unwrap_or(0);
    row.killed = Some(victim);
    let victim_name = cluster.server(victim).name().map(str::to_owned);
    // Consumers with one replica live only where they were placed.
    let single = matches!(candidate.per_node, Some((1, _)));
    let (lost, kept): (Vec<usize>, Vec<usize>) = all
        .iter()
        .partition(|&&r| single && receivers[r].placed_on == victim_name);
    row.lost_with_server = lost.len();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.server_mut(victim).kill9());
    row.after_kill = Some(
        reach(
            &contexts,
            &nodes,
            &receivers,
            &kept,
            2,
            killed_at,
            REACH_DEADLINE,
        )
        .await,
    );
    if !lost.is_empty() {
        let answered = reach(
            &contexts,
            &nodes,
            &receivers,
            &lost,
            2,
            Instant::now(),
            LOST_DEADLINE,
        )
        .await;
        row.lost_answered = Some(answered.reached);
        // What the orchestrator would have to do: delete each lost consumer and create it
        // again, on a server that is up.
        let recreating = Instant::now();
        let replaced: Vec<(usize, Option<PullConsumer>)> = futures::stream::iter(lost.clone())
            .map(|r| {
                let js = js.clone();
                let receiver = &receivers[r];
                async move {
                    let name = receiver.config.durable_name.clone().unwrap_or_default();
                    let stream = StreamKind::Assignments(shard_of(receiver.shard)).name();
                    // The answer comes from the consumer's own server, which is gone: this
                    // waits out the request timeout, though the meta leader deletes it.
                    let asked = Instant::now();
                    let deleted = js
                        .delete_consumer_from_stream(&name, stream)
                        .await
                        .map(|d| d.success);
                    tracing::debug!(consumer = name, ?deleted, took = ?asked.elapsed(), "deleted");
                    (
                        r,
                        create(&js, receiver.shard, &receiver.config)
                            .await
                            .ok()
                            .map(|(c, _)| c),
                    )
                }
            })
            .buffer_unordered(NODE_CONSUMERS_AT_ONCE)
            .collect()
            .await;
        let mut back = Vec::new();
        for (r, consumer) in replaced {
            match consumer {
                Some(consumer) => {
                    receivers[r].placed_on = consumer
                        .cached_info()
                        .cluster
                        .as_ref()
                        .and_then(|c| c.leader.clone());
                    receivers[r].consumer = PullConsumer::new(
                        receivers[r].config.clone(),
                        consumer.cached_info().clone(),
                        contexts[r % CLIENTS].clone(),
                    );
                    back.push(r);
                }
                None => row.recreate_failures += 1,
            }
        }
        row.recreated = Some(
            reach(
                &contexts,
                &nodes,
                &receivers,
                &back,
                2,
                recreating,
                REACH_DEADLINE,
            )
            .await,
        );
    }

    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| cluster.server_mut(victim).restart());
    row.after_restart = Some(
        reach(
            &contexts,
            &nodes,
            &receivers,
            &all,
            3,
            restarted_at,
            REACH_DEADLINE,
        )
        .await,
    );
    Ok(())
}

fn shard_of(index: usize) -> Shard {
    Shard::all()
        .nth(index)
        .expect("a shard index below the count")
}

/// The consumers a candidate needs for `nodes`: each with its shard, the nodes it serves
/// and its configuration.
fn wanted_consumers(
    candidate: Candidate,
    nodes: &[NodeId],
) -> Vec<(usize, Vec<usize>, jetstream::consumer::pull::Config)> {
    match candidate.per_node {
        Some((replicas, memory)) => nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut config = node_consumer_config(node);
                config.num_replicas = replicas;
                config.memory_storage = memory;
                (Shard::of(node).index(), vec![i], config)
            })
            .collect(),
        None => Shard::all()
            .map(|shard| {
                let served = nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, node)| Shard::of(node) == shard)
                    .map(|(i, _)| i)
                    .collect();
                let config = jetstream::consumer::pull::Config {
                    durable_name: Some(format!("shard-{shard}")),
                    filter_subject: subjects::assignments_in(shard),
                    num_replicas: 3,
                    memory_storage: false,
                    ..node_consumer_config(&nodes[0])
                };
                (shard.index(), served, config)
            })
            .collect(),
    }
}

/// Creates one consumer, asking again after timeouts; a refusal by the server is returned
/// as its message. Also says how many times it asked again.
async fn create(
    js: &jetstream::Context,
    shard: usize,
    config: &jetstream::consumer::pull::Config,
) -> std::result::Result<(PullConsumer, usize), String> {
    let stream_name = StreamKind::Assignments(shard_of(shard)).name();
    let name = config.durable_name.clone().unwrap_or_default();
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| e.to_string())?;
    let mut retries = 0;
    loop {
        match stream.create_consumer_strict(config.clone()).await {
            Ok(consumer) => return Ok((consumer, retries)),
            // An earlier attempt timed out after the server had created it.
            Err(e) if e.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {
                if let Ok(consumer) = stream.get_consumer(&name).await {
                    return Ok((consumer, retries));
                }
            }
            Err(e) => {
                if let ConsumerCreateStrictErrorKind::JetStream(err) = e.kind() {
                    return Err(err.to_string());
                }
            }
        }
        retries += 1;
    }
}

/// Publishes one message (tagged `round`) to each node its receivers serve, retrying each
/// until stored, while fetching through the receivers until every node acked its message
/// or `deadline` after `since` passes.
async fn reach(
    contexts: &[jetstream::Context],
    nodes: &[NodeId],
    receivers: &[Receiver],
    which: &[usize],
    round: u32,
    since: Instant,
    deadline: Duration,
) -> Reach {
    let until = tokio::time::Instant::from_std(since + deadline);
    let targets: Vec<usize> = which
        .iter()
        .flat_map(|&r| receivers[r].nodes.iter().copied())
        .collect();
    let publishing = futures::stream::iter(targets.iter().copied())
        .map(|node| {
            let js = contexts[node % CLIENTS].clone();
            let subject = subjects::assignments(&nodes[node]);
            async move {
                while tokio::time::Instant::now() < until {
                    let mut payload = now_nanos().to_le_bytes().to_vec();
                    payload.extend_from_slice(&round.to_le_bytes());
                    if let Ok(ack) = js.publish(subject.clone(), payload.into()).await
                        && ack.await.is_ok()
                    {
                        return;
                    }
                }
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>();

    let receiving = async {
        let mut done = vec![false; nodes.len()];
        let mut remaining: Vec<usize> = receivers.iter().map(|r| r.nodes.len()).collect();
        let mut latency_us = Histogram::<u64>::new(3).expect("a valid histogram");
        let mut reached = 0;
        let mut last = None;
        let mut queue: VecDeque<usize> = which.iter().copied().collect();
        let mut fetching = FuturesUnordered::new();
        loop {
            while fetching.len() < FETCHING_AT_ONCE {
                let Some(r) = queue.pop_front() else { break };
                let consumer = receivers[r].consumer.clone();
                let want = remaining[r];
                fetching.push(async move { (r, fetch(consumer, want, round, until).await) });
            }
            let Ok(Some((r, got))) = tokio::time::timeout_at(until, fetching.next()).await else {
                break;
            };
            for (node, micros) in got {
                if !std::mem::replace(&mut done[node], true) {
                    reached += 1;
                    remaining[r] = remaining[r].saturating_sub(1);
                    let _ = latency_us.record(micros);
                    last = Some(since.elapsed());
                    tracing::debug!(round, node, placed_on = ?receivers[r].placed_on, at = ?since.elapsed(), "reached");
                }
            }
            if remaining[r] > 0 {
                queue.push_back(r);
            }
        }
        (reached, last, latency_us)
    };
    let (_, (reached, last, latency_us)) = tokio::join!(publishing, receiving);
    Reach {
        nodes: targets.len(),
        reached,
        all_in: last.filter(|_| reached == targets.len()),
        latency_us,
    }
}

/// One pull of up to `want` messages; returns the nodes whose message of `round` it
/// received and acked, with each one's publish → receive time. Messages of earlier rounds
/// are acked and passed over.
async fn fetch(
    consumer: PullConsumer,
    want: usize,
    round: u32,
    until: tokio::time::Instant,
) -> Vec<(usize, u64)> {
    let asked = tokio::time::Instant::now();
    let mut got = Vec::new();
    let batch = tokio::time::timeout(
        Duration::from_secs(5),
        consumer
            .fetch()
            .max_messages(want.clamp(1, 256))
            .expires(Duration::from_secs(1))
            .messages(),
    )
    .await;
    if let Ok(Ok(mut batch)) = batch {
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), batch.next()).await
        {
            let received = now_nanos();
            let payload = &message.payload;
            let sent = payload
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes);
            let tagged = payload
                .get(8..12)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            let node = subjects::node_of_assignment(&message.subject)
                .and_then(|id| id.as_str().strip_prefix("layout-")?.parse::<usize>().ok());
            let mut acked = false;
            while !acked && tokio::time::Instant::now() < until {
                acked = message.double_ack().await.is_ok();
            }
            if let (true, Some(sent), Some(true), Some(node)) =
                (acked, sent, tagged.map(|t| t == round), node)
            {
                got.push((node, received.saturating_sub(sent) / 1_000));
            }
        }
    }
    // A consumer that cannot answer (its server gone, its leader not yet elected) fails at
    // once: ask it again a little later, not in a tight loop.
    if got.is_empty() {
        tokio::time::sleep_until(asked + Duration::from_millis(200)).await;
    }
    got
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it start with the state (field 3),
    // so utime (field 14) and stime (field 15) are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn cpu_of(cluster: &NatsCluster, ticks: f64) -> [Option<(u32, f64)>; 3] {
    std::array::from_fn(|i| {
        let pid = cluster.server(i).pid()?;
        Some((pid, cpu_seconds(pid, ticks)?))
    })
}

/// CPU used between two readings, per server, where it is the same process in both.
fn delta(before: [Option<(u32, f64)>; 3], after: [Option<(u32, f64)>; 3]) -> [Option<f64>; 3] {
    std::array::from_fn(|i| match (before[i], after[i]) {
        (Some((a, x)), Some((b, y))) if a == b => Some(y - x),
        _ => None,
    })
}

fn rss_of(cluster: &NatsCluster) -> [Option<f64>; 3] {
    std::array::from_fn(|i| {
        let bytes = rss_bytes(cluster.server(i).pid()?)?;
        Some(bytes as f64 / 1_000_000.0)
    })
}

fn figures(row: &Row) -> Vec<Figure> {
    let prefix = format!("{} {} nodes", row.candidate, row.nodes);
    let mut out = vec![Figure::value(
        &format!("{prefix}: consumers created"),
        row.created as f64,
        "consumers",
    )];
    let mut value = |name: &str, v: Option<f64>, unit: &str| {
        if let Some(v) = v {
            out.push(Figure::value(&format!("{prefix}: {name}"), v, unit));
        }
    };
    value(
        "creation took",
        row.created_in.map(|d| d.as_secs_f64()),
        "s",
    );
    for i in 0..3 {
        value(
            &format!("server {i} CPU during creation"),
            row.create_cpu[i],
            "s",
        );
        value(
            &format!("server {i} RSS after creation"),
            row.rss_created[i],
            "MB",
        );
        value(
            &format!("server {i} CPU while idle"),
            row.idle_cpu_percent[i],
            "%",
        );
        value(&format!("server {i} RSS after idle"), row.rss_idle[i], "MB");
    }
    let phases = [
        ("one message to each node", &row.reach),
        ("after SIGKILL, every kept consumer usable", &row.after_kill),
        ("lost consumers recreated and usable", &row.recreated),
        ("after restart, every consumer usable", &row.after_restart),
    ];
    for (name, reach) in phases {
        if let Some(reach) = reach {
            value(
                &format!("{name}: reached"),
                Some(reach.reached as f64),
                "nodes",
            );
            value(name, reach.all_in.map(|d| d.as_secs_f64()), "s");
        }
    }
    if let Some(reach) = &row.reach
        && !reach.latency_us.is_empty()
    {
        value(
            "publish → acked p50",
            Some(reach.latency_us.value_at_quantile(0.5) as f64 / 1_000.0),
            "ms",
        );
        value(
            "publish → acked p99",
            Some(reach.latency_us.value_at_quantile(0.99) as f64 / 1_000.0),
            "ms",
        );
    }
    value(
        "consumers lost with the killed server",
        Some(row.lost_with_server as f64),
        "consumers",
    );
    out
}

const HEADER: &str = "| layout | nodes | consumers created | creation | CPU s during creation (per server) | RSS MB after idle | idle CPU % | one msg to each | after SIGKILL | lost R1 consumers: recreated | after restart |\n\
|---|---|---|---|---|---|---|---|---|---|---|\n";

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("\n");
    out += HEADER;
    for row in rows {
        out += &markdown_row(row);
        out += "\n";
    }
    for row in rows {
        if let Some(refused) = &row.refused {
            out += &format!("\n{} at {} nodes: {refused}\n", row.candidate, row.nodes);
        }
    }
    out
}

fn markdown_row(row: &Row) -> String {
    let three = |v: &[Option<f64>; 3], digits: usize| {
        v.iter()
            .map(|x| x.map_or("–".into(), |x| format!("{x:.digits$}")))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let creation = match (row.created_in, row.create_stopped, &row.refused) {
        (_, _, Some(_)) if row.created == 0 => "refused".to_owned(),
        (Some(d), _, _) => format!("{:.1} s", d.as_secs_f64()),
        (None, true, _) => format!("stopped at {} s", CREATE_DEADLINE.as_secs()),
        _ => "–".into(),
    };
    let reach = |r: &Option<Reach>, with_p99: bool| match r {
        None => "–".to_owned(),
        Some(r) => {
            let p99 = if !with_p99 || r.latency_us.is_empty() {
                String::new()
            } else {
                format!(
                    ", p99 {:.0} ms",
                    r.latency_us.value_at_quantile(0.99) as f64 / 1_000.0
                )
            };
            match r.all_in {
                Some(d) => format!("{:.1} s ({} nodes{p99})", d.as_secs_f64(), r.nodes),
                None => format!(
                    "{} of {} in {} s{p99}",
                    r.reached,
                    r.nodes,
                    REACH_DEADLINE.as_secs()
                ),
            }
        }
    };
    let lost = if row.lost_with_server == 0 {
        "none lost".to_owned()
    } else {
        format!(
            "{} lost ({} answered); {}{}",
            row.lost_with_server,
            row.lost_answered.unwrap_or(0),
            reach(&row.recreated, false),
            if row.recreate_failures > 0 {
                format!(", {} not recreated", row.recreate_failures)
            } else {
                String::new()
            }
        )
    };
    format!(
        "| {} | {} | {} of {}{} | {creation} | {} | {} | {} | {} | {} | {lost} | {} |",
        row.candidate,
        row.nodes,
        row.created,
        row.consumers,
        if row.create_retries > 0 {
            format!(" ({} retried)", row.create_retries)
        } else {
            String::new()
        },
        three(&row.create_cpu, 1),
        three(&row.rss_idle, 0),
        three(&row.idle_cpu_percent, 1),
        reach(&row.reach, true),
        reach(&row.after_kill, false),
        reach(&row.after_restart, false),
    )
}
