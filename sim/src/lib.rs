//! A deterministic simulator of a Cairn network: thousands of nodes with churn over a simulated
//! year, placing, auditing, repairing and looking up with Cairn's own code.
//!
//! It calls, not copies, the rules it measures: `cairn_swarm::place` (where publishing puts
//! shards), `cairn_swarm::record_ranking` and `RECORD_REPLICAS` (where records live), and the
//! caretaker's decisions in `cairn_node::policy` with `cairn_node::repair_ranking` (when a
//! shard is lost, who repairs, where the new shards go). The model around them (churn, time,
//! what a node sees) is described in the `world` module and in docs/simulation.md.
//!
//! - [`Config`]: the network, data, churn and Cairn settings of a run; `Config::default()` is
//!   the large run, [`Config::small`] the one CI runs.
//! - [`run`]: the run, giving a [`Report`] (displayed as a markdown table).
//! - [`Estimate`]: the durability estimate for losses too rare to count (a Poisson argument
//!   over the measured repair windows).

mod config;
mod estimate;
mod report;
mod rng;
mod world;

pub use config::{
    Config, DISK_AFR, Error, LEAVE_RATE, OUTAGE_HOURS, OUTAGES_PER_MONTH, RANKING_DEPTH,
    STEPS_PER_PERIOD, YEAR_SECS,
};
pub use estimate::{Estimate, Observed, binomial_tail, estimate, poisson_interval};
pub use report::{Report, Spread};
pub use world::run;
