//! What a run measured, and the table it prints.

use std::fmt;

use cairn_swarm::RECORD_REPLICAS;

use crate::config::{Config, YEAR_SECS};
use crate::estimate::Estimate;

/// Shards per node: the largest count and the mean.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// Nodes counted.
    pub nodes: usize,
    /// The largest count.
    pub max: u64,
    /// The mean count.
    pub mean: f64,
}

impl Spread {
    /// The spread of `counts`.
    pub fn of(counts: &[u64]) -> Self {
        let nodes = counts.len();
        let max = counts.iter().copied().max().unwrap_or(0);
        let mean = if nodes == 0 {
            0.0
        } else {
            counts.iter().sum::<u64>() as f64 / nodes as f64
        };
        Self { nodes, max, mean }
    }

    /// Largest over mean (1 is perfect balance).
    pub fn ratio(&self) -> f64 {
        if self.mean > 0.0 {
            self.max as f64 / self.mean
        } else {
            0.0
        }
    }
}

/// Everything a run measured. Two runs of the same [`Config`] give equal reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The settings of the run.
    pub config: Config,
    /// Bytes of one shard.
    pub shard_len: u64,
    /// Nodes present (online or offline) at the end.
    pub nodes_end: usize,
    /// Nodes the run ever had.
    pub total_nodes: usize,
    /// Nodes that joined.
    pub joins: u64,
    /// Nodes that left for good.
    pub leaves: u64,
    /// Nodes whose disk failed.
    pub fails: u64,
    /// Transient outages.
    pub outages: u64,
    /// Share of node time spent offline.
    pub offline_fraction: f64,
    /// Changes of the live set (joins, departures, failures, outages and returns).
    pub live_changes: u64,
    /// Chunks that lost more than `m` shards for good.
    pub chunks_lost: u64,
    /// Audits of a chunk by its caretaker.
    pub audits: u64,
    /// Audits that did not happen: every holder of the chunk was offline.
    pub unattended: u64,
    /// Audits that found fewer than `k` kept shards reachable (the chunk could not be read).
    pub unreadable: u64,
    /// Repairs that had to wait for the next audit (fewer than `k` shards reachable).
    pub deferred: u64,
    /// Chunks found in need of repair with repair off.
    pub unrepaired: u64,
    /// Chunk repairs.
    pub repairs: u64,
    /// Shards re-created for holders that were offline and came back.
    pub recreated_transient: u64,
    /// Shards re-created for holders lost for good.
    pub recreated_permanent: u64,
    /// Repair bytes fetched by caretakers.
    pub bytes_fetched: u64,
    /// Repair bytes sent to new holders.
    pub bytes_placed: u64,
    /// The durability estimate.
    pub estimate: Estimate,
    /// Shards per node after publishing.
    pub load_start: Spread,
    /// Shards per node at the end.
    pub load_end: Spread,
    /// Shards per node had they been thrown uniformly at random at the start.
    pub load_uniform: Spread,
    /// Record lookups.
    pub lookups: u64,
    /// Requests per lookup: mean.
    pub asks_mean: f64,
    /// Requests per lookup: most.
    pub asks_max: u64,
    /// Lookups that found no holder among the nodes they asked.
    pub lookups_failed: u64,
    /// Records (one per artifact).
    pub records: usize,
    /// Record copies made by re-placement after membership changes.
    pub record_copies: u64,
    /// Re-placements that found no holder online to copy from.
    pub record_unreachable: u64,
    /// Records whose every holder was lost for good.
    pub records_lost: u64,
    /// Rankings computed again, deeper, because churn exhausted their top.
    pub rankings_deepened: u64,
}

impl Report {
    /// Bytes stored at the start (every shard of every chunk).
    pub fn stored_bytes(&self) -> u64 {
        self.config.chunks as u64 * self.config.params.n() as u64 * self.shard_len
    }

    /// Repair bytes moved over the network.
    pub fn repair_bytes(&self) -> u64 {
        self.bytes_fetched + self.bytes_placed
    }

    /// Repair bytes per simulated day.
    pub fn repair_bytes_per_day(&self) -> f64 {
        self.repair_bytes() as f64 / self.config.days as f64
    }
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = b;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn prob(p: f64) -> String {
    if p == 0.0 {
        "0".to_string()
    } else if p >= 0.01 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let (k, m) = (c.params.k(), c.params.m());
        let years = c.days as f64 * 86_400.0 / YEAR_SECS as f64;
        let e = &self.estimate;
        writeln!(
            f,
            "Cairn network simulation: seed {}, {} nodes at the start, {} chunks of 1 MiB \
             (RS {k}+{m}, shards of {}, {} stored), {} days, audit period {:.1} h, repair {}",
            c.seed,
            c.nodes,
            c.chunks,
            bytes(self.shard_len as f64),
            bytes(self.stored_bytes() as f64),
            c.days,
            c.period_secs as f64 / 3600.0,
            if c.repair { "on" } else { "off" },
        )?;
        writeln!(
            f,
            "Churn: disks lost {} and departures {} per node-year, joins {} of the starting \
             nodes a year, {:.2} outages per node-month of {:.1} h on average",
            pct(c.fail_rate),
            pct(c.leave_rate),
            pct(c.join_rate),
            c.outages_per_month,
            c.outage_secs / 3600.0,
        )?;
        writeln!(f)?;
        writeln!(f, "| measure | value |")?;
        writeln!(f, "|---|---|")?;
        let mut row = |name: &str, value: String| writeln!(f, "| {name} | {value} |");
        row("**churn**", String::new())?;
        row(
            "nodes at the start / at the end / ever",
            format!("{} / {} / {}", c.nodes, self.nodes_end, self.total_nodes),
        )?;
        row(
            "joins / departures / disks lost",
            format!("{} / {} / {}", self.joins, self.leaves, self.fails),
        )?;
        row(
            "transient outages (node time offline)",
            format!("{} ({})", self.outages, pct(self.offline_fraction)),
        )?;
        row("**durability**", String::new())?;
        row(
            "chunks lost (counted)",
            format!("{} of {}", self.chunks_lost, c.chunks),
        )?;
        row(
            "audits / with fewer than k shards reachable / unattended",
            format!(
                "{} / {} / {}",
                self.audits, self.unreadable, self.unattended
            ),
        )?;
        row(
            "holders lost for good per node-year (95 % interval)",
            format!(
                "{:.4} ({:.4} to {:.4}), {} in {:.0} node-years",
                e.lambda, e.lambda_low, e.lambda_high, e.losses, e.node_years
            ),
        )?;
        if c.repair {
            row(
                "repair window after a permanent loss: mean / p99 / max",
                format!(
                    "{:.1} h / {:.1} h / {:.1} h ({} windows{})",
                    e.window_mean_h,
                    e.window_p99_h,
                    e.window_max_h,
                    e.windows,
                    if e.windows == 0 {
                        ", one period assumed"
                    } else {
                        ""
                    }
                ),
            )?;
            row(
                &format!(
                    "P(≥ {m} more of the other {} holders lost in a window)",
                    k + m - 1
                ),
                prob(e.p_window),
            )?;
            row(
                "estimated loss probability per chunk-year (95 % upper)",
                format!("{} ({})", prob(e.p_chunk_year), prob(e.p_chunk_year_high)),
            )?;
            row(
                &format!(
                    "expected chunks lost in {:.2} years, this network (95 % upper)",
                    years
                ),
                format!(
                    "{} ({}); P(any) {}",
                    prob(e.expected_losses),
                    prob(e.expected_losses_high),
                    prob(1.0 - (-e.expected_losses).exp())
                ),
            )?;
        } else {
            row(
                "repair window, loss estimate",
                "not estimated: repair is off (count the losses above)".to_string(),
            )?;
        }
        row("**repair**", String::new())?;
        row(
            "chunk repairs / deferred (fewer than k reachable)",
            if c.repair {
                format!("{} / {}", self.repairs, self.deferred)
            } else {
                format!("off ({} chunks found in need)", self.unrepaired)
            },
        )?;
        row(
            "shards re-created: holder came back later / lost for good",
            format!(
                "{} / {}",
                self.recreated_transient, self.recreated_permanent
            ),
        )?;
        row(
            "repair traffic: fetched + placed",
            format!(
                "{} + {} = {}",
                bytes(self.bytes_fetched as f64),
                bytes(self.bytes_placed as f64),
                bytes(self.repair_bytes() as f64)
            ),
        )?;
        let stored = self.stored_bytes() as f64;
        row(
            "repair traffic per day (share of stored bytes)",
            format!(
                "{} ({})",
                bytes(self.repair_bytes_per_day()),
                pct(self.repair_bytes_per_day() / stored)
            ),
        )?;
        row(
            "repair traffic per year / stored bytes",
            format!(
                "{:.2}",
                self.repair_bytes() as f64 / years.max(1e-9) / stored
            ),
        )?;
        row("**load balance** (shards per node)", String::new())?;
        row(
            "after publishing: max / mean (max/mean)",
            format!(
                "{} / {:.1} ({:.2})",
                self.load_start.max,
                self.load_start.mean,
                self.load_start.ratio()
            ),
        )?;
        row(
            "uniform random placement, same shards: max / mean (max/mean)",
            format!(
                "{} / {:.1} ({:.2})",
                self.load_uniform.max,
                self.load_uniform.mean,
                self.load_uniform.ratio()
            ),
        )?;
        row(
            "at the end, nodes present: max / mean (max/mean)",
            format!(
                "{} / {:.1} ({:.2})",
                self.load_end.max,
                self.load_end.mean,
                self.load_end.ratio()
            ),
        )?;
        row("**records and lookups**", String::new())?;
        row(
            "lookups: requests per lookup mean / max; found nothing",
            format!(
                "{}: {:.4} / {}; {}",
                self.lookups, self.asks_mean, self.asks_max, self.lookups_failed
            ),
        )?;
        row(
            &format!(
                "record copies made on membership changes ({} records, {RECORD_REPLICAS} replicas)",
                self.records
            ),
            format!(
                "{} ({:.1} per record-year; {:.3} per live-set change)",
                self.record_copies,
                self.record_copies as f64 / self.records.max(1) as f64 / years.max(1e-9),
                self.record_copies as f64 / self.live_changes.max(1) as f64
            ),
        )?;
        row(
            "re-placements with no holder online / records lost",
            format!("{} / {}", self.record_unreachable, self.records_lost),
        )?;
        row(
            "rankings recomputed deeper (cache exhausted)",
            self.rankings_deepened.to_string(),
        )?;
        Ok(())
    }
}
