//! The benchmark's output: a table for people on stdout and a JSON document for tools.

use anyhow::Result;
use serde::Serialize;

use crate::stack::Nats;

/// One measured figure, with its ratio to the raw baseline of the same run where it has one.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_baseline: Option<f64>,
}

impl Figure {
    pub fn rate(name: &str, per_second: f64, baseline: Option<f64>) -> Self {
        Self::rate_of("msg/s", name, per_second, baseline)
    }

    /// A rate of something other than messages (`exec/s`), against a baseline in msg/s.
    pub fn rate_of(unit: &str, name: &str, per_second: f64, baseline: Option<f64>) -> Self {
        Self {
            name: name.to_owned(),
            value: per_second,
            unit: unit.to_owned(),
            ratio_to_baseline: baseline.map(|b| per_second / b),
        }
    }

    /// Any other quantity (seconds, megabytes), with no baseline.
    pub fn value(name: &str, value: f64, unit: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            ratio_to_baseline: None,
        }
    }

    /// A latency; its ratio is baseline / value would flatter, so it is value / baseline
    /// ("times the raw latency").
    pub fn latency(name: &str, millis: f64, baseline: Option<f64>) -> Self {
        Self {
            name: name.to_owned(),
            value: millis,
            unit: "ms".into(),
            ratio_to_baseline: baseline.map(|b| millis / b),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub notes: String,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub cairn_version: String,
    pub nats_server_version: String,
    pub machine: Machine,
    /// The nats-servers the run started and ran on: 1, or 3 clustered on loopback; null
    /// for a server named with `--nats`, which the run neither started nor counted.
    pub servers: Option<usize>,
    /// Replicas of every stream the run created, cairn's and the raw baselines' alike.
    pub replicas: usize,
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
}

impl Report {
    pub async fn new(nats: &Nats, quick: bool, scenarios: Vec<Scenario>) -> Result<Self> {
        let client = cairn_streams::connect(&nats.url, None, "cairn-bench").await?;
        // The first INFO arrives with the connection; a round trip makes sure it has.
        client.flush().await?;
        Ok(Self {
            cairn_version: env!("CARGO_PKG_VERSION").into(),
            nats_server_version: client.server_info().version,
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                memory_bytes: total_memory(),
                os: std::env::consts::OS.into(),
            },
            servers: (!nats.server_pids.is_empty()).then_some(nats.server_pids.len()),
            replicas: nats.replicas,
            quick,
            scenarios,
        })
    }

    pub fn table(&self) -> String {
        // A single server goes unsaid, as it did before clusters could be measured.
        let cluster = match self.servers {
            Some(servers) if servers > 1 => {
                format!(" · {servers}-server cluster, {} replicas", self.replicas)
            }
            _ => String::new(),
        };
        let mut out = format!(
            "cairn {} · nats-server {}{cluster} · {} cores{}\n",
            self.cairn_version,
            self.nats_server_version,
            self.machine.cores,
            if self.quick {
                " · QUICK RUN: speeds are not meaningful"
            } else {
                ""
            }
        );
        for scenario in &self.scenarios {
            out += &format!("\n{} — {}\n", scenario.name, scenario.notes);
            let width = scenario
                .figures
                .iter()
                .map(|f| f.name.len())
                .max()
                .unwrap_or(0);
            for f in &scenario.figures {
                // Rates are shown as a share of the raw rate, latencies as a multiple of it.
                let ratio = match (f.ratio_to_baseline, f.unit.as_str()) {
                    (Some(r), "ms") => format!("  ({r:.1}x raw)"),
                    (Some(r), _) => format!("  ({:.0}% of raw)", r * 100.0),
                    (None, _) => String::new(),
                };
                let value = if f.unit == "ms" || f.unit == "s" {
                    format!("{:.2}", f.value)
                } else {
                    format!("{:.0}", f.value)
                };
                out += &format!("  {:<width$}  {value:>12} {}{ratio}\n", f.name, f.unit);
            }
        }
        out
    }
}

fn total_memory() -> Option<u64> {
    crate::stack::proc_kilobytes("/proc/meminfo", "MemTotal:").map(|kb| kb * 1024)
}
