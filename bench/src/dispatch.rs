//! The dispatch-latency scenario: work offered at a fixed rate (one single-execution batch
//! job per deploy), timed from the moment its `ExecutionAssigned` was stored (decided) to
//! the moment a simulated edge has the assignment — beside raw messages offered at the
//! same rate to the same number of per-node consumers, publish → receive, and beside the
//! raw round trip of the atomic batch that records a decision ([`crate::appends`]).

use std::time::Duration;

use anyhow::{Result, ensure};
use cairn_shared::JobType;
use cairn_streams::Publisher;
use futures::StreamExt;
use hdrhistogram::Histogram;

use crate::fleet::Fleet;
use crate::lifecycle::{quantiles, spec};
use crate::raw::RawFleet;
use crate::report::{Figure, Scenario};
use crate::stack::{Nats, OrchestratorProcess};
use crate::watch::Watch;

pub async fn run(
    nats: &Nats,
    nodes: usize,
    rate: u64,
    duration: Duration,
    append_samples: usize,
) -> Result<Scenario> {
    let url = nats.url.as_str();
    let client = cairn_streams::connect(url, None, "cairn-bench").await?;
    let js = cairn_streams::jetstream(client.clone());
    nats.fresh_streams(&js).await?;
    let offered = (rate as f64 * duration.as_secs_f64()) as u64;

    eprintln!("dispatch: raw baseline, {rate}/s to {nodes} per-node consumers for {duration:?}");
    let raw = RawFleet::start(nats, nodes).await?;
    let raw_latency = raw.latency(rate, duration).await?;
    drop(raw);
    eprintln!("dispatch: raw appends, {append_samples} atomic batches and single messages");
    let appends = crate::appends::measure(&js, &nats.topology(), append_samples).await?;

    eprintln!("dispatch: orchestrator and {nodes} simulated edges; {rate} deploys/s");
    let _orchestrator = OrchestratorProcess::start(nats).await?;
    let watch = Watch::start(&js).await?;
    let capacity = u32::try_from(offered)?.max(1);
    let fleet = Fleet::start(url, &watch, "dispatch", nodes, capacity, true).await?;

    let publisher = Publisher::new(js.clone());
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut stored = futures::stream::FuturesUnordered::new();
    for i in 0..offered {
        ticks.tick().await;
        let deploy = crate::lifecycle::deploy(
            &publisher,
            spec(&format!("dispatch-{i}"), JobType::Batch, Some(1), &["true"]),
        );
        stored.push(deploy);
        while let Some(done) = futures::FutureExt::now_or_never(stored.next()).flatten() {
            done?;
        }
    }
    while let Some(done) = stored.next().await {
        done?;
    }
    let total = usize::try_from(offered)?;
    let receipts = std::sync::Arc::clone(&fleet.receipts);
    watch
        .until("every assignment received", Duration::from_secs(120), |s| {
            s.assigned.len() >= total && receipts.lock().unwrap().len() >= total
        })
        .await?;
    let (latency, to_queue, delivery) = watch.with(|s| -> Result<_> {
        let receipts = receipts.lock().unwrap();
        let mut latency = Histogram::<u64>::new(3)?;
        let mut to_queue = Histogram::<u64>::new(3)?;
        let mut delivery = Histogram::<u64>::new(3)?;
        for (execution, decided) in &s.assigned {
            if let Some(receipt) = receipts.get(execution) {
                latency.record(receipt.received.saturating_sub(*decided) / 1_000)?;
                to_queue.record(receipt.queued.saturating_sub(*decided) / 1_000)?;
                delivery.record(receipt.received.saturating_sub(receipt.queued) / 1_000)?;
            }
        }
        Ok((latency, to_queue, delivery))
    })?;
    ensure!(
        latency.len() == offered,
        "{} of {offered} assignments timed",
        latency.len()
    );

    let mut figures = quantiles("raw publish → receive", &raw_latency, None);
    figures.extend(quantiles(
        "decided → edge has it",
        &latency,
        Some(&raw_latency),
    ));
    // Where the time goes: the dispatcher (decided → its work message stored on the
    // node's subject) and delivery (stored → the edge has it).
    figures.extend(quantiles("  of which decided → queued", &to_queue, None));
    figures.extend(quantiles(
        "  of which queued → edge has it",
        &delivery,
        Some(&raw_latency),
    ));
    // The floor under decided → queued: a decision's work can be queued only after its
    // batch is acknowledged.
    figures.extend(quantiles(
        &format!("raw atomic batch of {} → acked", crate::appends::EVENTS),
        &appends.batch,
        None,
    ));
    figures.extend(quantiles(
        "  of which batch stored → ack received",
        &appends.stored_to_ack,
        None,
    ));
    figures.extend(quantiles(
        "raw single append → acked",
        &appends.single,
        None,
    ));
    figures.push(Figure::rate("offered", rate as f64, None));
    Ok(Scenario {
        name: "dispatch".into(),
        notes: format!(
            "{offered} single-execution jobs deployed at {rate}/s over {nodes} simulated edges"
        ),
        figures,
    })
}
