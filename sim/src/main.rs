//! `cairn-sim`: runs one simulation and prints its table.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use cairn_erasure::Params;
use cairn_sim::{Config, DISK_AFR, LEAVE_RATE, OUTAGE_HOURS, OUTAGES_PER_MONTH, run};
use clap::Parser;

/// Simulates a Cairn network under churn for a year with Cairn's placement, caretaking and
/// record rules, and prints durability, repair traffic, load balance and lookup costs.
/// Defaults are the large run of docs/simulation.md; `--nodes 300 --chunks 1500` is CI's.
#[derive(Parser, Debug)]
#[command(name = "cairn-sim", version)]
struct Args {
    /// Seed of every random draw (the same seed prints the same table).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes at the start.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Chunks of 1 MiB published at the start.
    #[arg(long, default_value_t = 20_000)]
    chunks: usize,
    /// Chunks per artifact (one record each).
    #[arg(long, default_value_t = 20)]
    chunks_per_artifact: usize,
    /// Data shards per chunk.
    #[arg(long, default_value_t = Params::DEFAULT.k())]
    k: usize,
    /// Parity shards per chunk.
    #[arg(long, default_value_t = Params::DEFAULT.m())]
    m: usize,
    /// Days simulated.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Audit period in hours (the node's --audit-period).
    #[arg(long, default_value_t = 24.0)]
    period_hours: f64,
    /// Turn repair off (caretakers only audit).
    #[arg(long)]
    no_repair: bool,
    /// Disks lost per node-year (Backblaze's 2024 annual failure rate).
    #[arg(long, default_value_t = DISK_AFR)]
    fail_rate: f64,
    /// Nodes leaving for good per node-year (Storj's graceful exits, 2023).
    #[arg(long, default_value_t = LEAVE_RATE)]
    leave_rate: f64,
    /// Nodes joining per year, as a fraction of the starting nodes (default: as many as are
    /// lost).
    #[arg(long)]
    join_rate: Option<f64>,
    /// Transient outages per node and month.
    #[arg(long, default_value_t = OUTAGES_PER_MONTH)]
    outages_per_month: f64,
    /// Mean outage length in hours.
    #[arg(long, default_value_t = OUTAGE_HOURS)]
    outage_hours: f64,
    /// Each node's quota in GB (publishing weighs nodes by free quota).
    #[arg(long, default_value_t = 1000)]
    capacity_gb: u64,
    /// Record lookups per simulated day.
    #[arg(long, default_value_t = 192)]
    lookups_per_day: u64,
}

fn main() -> ExitCode {
    match run_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_main() -> anyhow::Result<()> {
    let a = Args::parse();
    let params = Params::new(a.k, a.m).with_context(|| {
        format!(
            "--k {} --m {}: not a valid erasure code (see cairn-erasure)",
            a.k, a.m
        )
    })?;
    let cfg = Config {
        seed: a.seed,
        nodes: a.nodes,
        chunks: a.chunks,
        chunks_per_artifact: a.chunks_per_artifact,
        params,
        days: a.days,
        period_secs: (a.period_hours * 3600.0).round() as u64,
        repair: !a.no_repair,
        fail_rate: a.fail_rate,
        leave_rate: a.leave_rate,
        join_rate: a.join_rate.unwrap_or(a.fail_rate + a.leave_rate),
        outages_per_month: a.outages_per_month,
        outage_secs: a.outage_hours * 3600.0,
        capacity_bytes: a.capacity_gb.saturating_mul(1_000_000_000),
        lookups_per_day: a.lookups_per_day,
    };
    let started = Instant::now();
    let report = run(&cfg).context("checking the settings")?;
    print!("{report}");
    println!();
    println!(
        "Ran in {:.1} s on {} threads.",
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    Ok(())
}
