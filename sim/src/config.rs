//! What a run simulates: the network, the data, the churn and Cairn's settings.

use cairn_erasure::Params;

/// Seconds in the simulated year (365 days).
pub const YEAR_SECS: u64 = 365 * 86_400;

/// Time steps per audit period: chunks are audited at one of these phases, so the time between
/// a holder's failure and the audit that finds it is measured to within a step (15 min for a
/// one-day period).
pub const STEPS_PER_PERIOD: u64 = 96;

/// How deep each chunk's and record's ranking over every node of the run is kept (deepened
/// when churn exhausts it).
pub const RANKING_DEPTH: usize = 32;

/// Annual failure rate of hard drives in Backblaze's fleet for 2024 (Drive Stats 2024: 1.57 %).
pub const DISK_AFR: f64 = 0.0157;

/// Nodes leaving for good per node-year: about 0.95 % of Storj's nodes a month called graceful
/// exit in March-April 2023 (222 of 23 275 on one satellite; Storj forum, "Changes to Storj
/// node payouts", 2023), 11.6 % a year. Cairn has no graceful exit: a node that leaves takes
/// its shards with it.
pub const LEAVE_RATE: f64 = 0.116;

/// Transient outages per node and month, and their mean length: Storj's node operator terms
/// ask for 99.3 % uptime, about 5.1 hours offline a month; assumed spent in one outage a month.
pub const OUTAGES_PER_MONTH: f64 = 1.0;
/// See [`OUTAGES_PER_MONTH`].
pub const OUTAGE_HOURS: f64 = 5.1;

/// Errors of a run's settings.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of its range.
    #[error("{what} is {value}, {why}")]
    Setting {
        /// The setting, as the command line names it.
        what: &'static str,
        /// Its value.
        value: String,
        /// Its range.
        why: &'static str,
    },
}

/// A run's settings. [`Config::default`] is the large run of docs/simulation.md;
/// [`Config::small`] is the one the tests and CI run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Seed of every random draw: the same seed gives the same report.
    pub seed: u64,
    /// Nodes at the start.
    pub nodes: usize,
    /// Chunks published at the start (1 MiB each, Cairn's average chunk).
    pub chunks: usize,
    /// Chunks per artifact: free-space weights are re-read between artifacts, as `publish`
    /// reads them once per artifact; each artifact has one record.
    pub chunks_per_artifact: usize,
    /// Erasure parameters (Cairn's default 3 + 2).
    pub params: Params,
    /// Days simulated.
    pub days: u64,
    /// Audit period (`CareConfig::period`, one day by default), in seconds.
    pub period_secs: u64,
    /// Whether caretakers repair (`CareConfig::repair`).
    pub repair: bool,
    /// Disks lost per node-year (the node never comes back).
    pub fail_rate: f64,
    /// Nodes leaving for good per node-year (with their shards).
    pub leave_rate: f64,
    /// New nodes per year, as a fraction of the starting nodes.
    pub join_rate: f64,
    /// Transient outages per node and month (the node comes back with its data).
    pub outages_per_month: f64,
    /// Mean length of an outage, in seconds (exponentially distributed).
    pub outage_secs: f64,
    /// Each node's quota; publishing weighs nodes by their free quota.
    pub capacity_bytes: u64,
    /// Record lookups per simulated day, spread evenly over the time steps.
    pub lookups_per_day: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 10_000,
            chunks: 20_000,
            chunks_per_artifact: 20,
            params: Params::DEFAULT,
            days: 365,
            period_secs: 86_400,
            repair: true,
            fail_rate: DISK_AFR,
            leave_rate: LEAVE_RATE,
            join_rate: DISK_AFR + LEAVE_RATE,
            outages_per_month: OUTAGES_PER_MONTH,
            outage_secs: OUTAGE_HOURS * 3600.0,
            capacity_bytes: 1_000_000_000_000,
            lookups_per_day: 192,
        }
    }
}

impl Config {
    /// The run of the tests and CI: 300 nodes, 1 500 chunks, a year, in about a second.
    pub fn small() -> Self {
        Self {
            nodes: 300,
            chunks: 1_500,
            ..Self::default()
        }
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), Error> {
        fn bad(what: &'static str, value: impl ToString, why: &'static str) -> Error {
            Error::Setting {
                what,
                value: value.to_string(),
                why,
            }
        }
        let n = self.params.n();
        if self.nodes < n {
            return Err(bad(
                "nodes",
                self.nodes,
                "fewer than the n shards of a chunk",
            ));
        }
        if self.nodes > u32::MAX as usize / 2 {
            return Err(bad("nodes", self.nodes, "more than 2^31"));
        }
        if self.chunks == 0 || self.chunks > u32::MAX as usize {
            return Err(bad("chunks", self.chunks, "not in 1..2^32"));
        }
        if self.chunks_per_artifact == 0 {
            return Err(bad("chunks-per-artifact", 0, "must be at least 1"));
        }
        if self.days == 0 || self.days > 3650 {
            return Err(bad("days", self.days, "not in 1..=3650"));
        }
        if self.period_secs < STEPS_PER_PERIOD || self.period_secs > YEAR_SECS {
            return Err(bad(
                "period-hours",
                self.period_secs as f64 / 3600.0,
                "not between 96 seconds and a year",
            ));
        }
        for (what, rate) in [
            ("fail-rate", self.fail_rate),
            ("leave-rate", self.leave_rate),
            ("join-rate", self.join_rate),
            ("outages-per-month", self.outages_per_month),
        ] {
            if !(0.0..=1000.0).contains(&rate) {
                return Err(bad(what, rate, "not in 0..=1000"));
            }
        }
        if !(1.0..=YEAR_SECS as f64).contains(&self.outage_secs) {
            return Err(bad(
                "outage-hours",
                self.outage_secs / 3600.0,
                "not between one second and a year",
            ));
        }
        if self.lookups_per_day > 1_000_000 {
            return Err(bad(
                "lookups-per-day",
                self.lookups_per_day,
                "more than 10^6",
            ));
        }
        if self.join_rate * self.nodes as f64 * self.days as f64 / 365.0 > 1e7 {
            return Err(bad(
                "join-rate",
                self.join_rate,
                "would add over 10^7 nodes",
            ));
        }
        Ok(())
    }

    /// Seconds simulated.
    pub fn horizon_secs(&self) -> u64 {
        self.days * 86_400
    }

    /// Length of one shard of a 1 MiB chunk sealed with its 16-byte tag, as the erasure
    /// codec cuts it.
    pub fn shard_len(&self) -> u64 {
        self.params
            .shard_len(cairn_artifact::CHUNK_AVG + cairn_encryption::TAG_LEN) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        Config::default().validate().unwrap();
        Config::small().validate().unwrap();
        let bad = Config {
            nodes: 4,
            ..Config::small()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Setting { what: "nodes", .. })
        ));
        let bad = Config {
            fail_rate: -1.0,
            ..Config::small()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Setting {
                what: "fail-rate",
                ..
            })
        ));
        // 1 MiB + 16 bytes in 3 shards.
        assert_eq!(Config::default().shard_len(), 349_531);
    }
}
