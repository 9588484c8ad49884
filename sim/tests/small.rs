//! The simulator at CI's size (300 nodes, 1 500 chunks, a simulated year, about a second a
//! run): properties that must hold whatever the seed, checked on the reports of whole runs.
//!
//! Method: each test runs `cairn_sim::run` with `Config::small()` changed in one setting and
//! compares reports: the same seed twice, repair on and off, no permanent churn, and a churn
//! high enough to count losses against the Poisson estimate.

use cairn_node::NAME_ASKS_MAX;
use cairn_sim::{Config, Report, run};
use cairn_swarm::RECORD_REPLICAS;

fn small(change: impl FnOnce(&mut Config)) -> Report {
    let mut cfg = Config::small();
    change(&mut cfg);
    run(&cfg).expect("valid settings")
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let a = small(|_| {});
    let b = small(|_| {});
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    let c = small(|c| c.seed = 2);
    assert_ne!(a, c);
}

#[test]
fn repair_keeps_what_no_repair_loses() {
    let with = small(|_| {});
    let without = small(|c| c.repair = false);
    // Without repair, about 1.6 % of chunks lose 3 of their 5 holders in a year at these rates.
    assert!(without.chunks_lost > 0, "{without}");
    assert!(without.chunks_lost >= with.chunks_lost);
    assert_eq!(with.chunks_lost, 0, "{with}");
    assert_eq!(without.repairs, 0);
    assert!(without.unrepaired > 0);
    assert!(with.repairs > 0);
    // Every repair moves k - 1 fetched shards and at least one placed.
    assert_eq!(with.bytes_fetched, with.repairs * 2 * with.shard_len);
    assert!(with.bytes_placed >= with.repairs * with.shard_len);
}

#[test]
fn without_permanent_churn_nothing_is_lost() {
    for repair in [true, false] {
        let r = small(|c| {
            c.fail_rate = 0.0;
            c.leave_rate = 0.0;
            c.join_rate = 0.0;
            c.repair = repair;
        });
        assert_eq!(r.chunks_lost, 0, "{r}");
        assert_eq!(r.fails + r.leaves, 0);
        assert_eq!(r.recreated_permanent, 0);
        assert_eq!(r.records_lost, 0);
        assert_eq!(r.nodes_end, r.config.nodes);
        // Outages alone still make the caretakers repair (an offline holder that is not live
        // counts as lost at its first missed audit).
        assert!(r.outages > 0);
        if repair {
            assert!(r.recreated_transient > 0);
        }
    }
}

#[test]
fn load_is_balanced_like_uniform_placement() {
    let r = small(|_| {});
    // 25 shards per node on average: the maximum of 300 such counts is about 40.
    assert!(r.load_start.ratio() < 2.0, "{r}");
    assert!(r.load_start.ratio() <= r.load_uniform.ratio() * 1.25, "{r}");
    assert!((r.load_start.mean - 25.0).abs() < 1e-9);
    assert!(r.load_end.ratio() < 2.5, "{r}");
}

#[test]
fn lookups_ask_few_nodes_when_few_are_down() {
    let r = small(|_| {});
    assert!(r.lookups > 10_000);
    assert_eq!(r.lookups_failed, 0, "{r}");
    // The first RECORD_REPLICAS are always asked; one more for each that is offline, rarely.
    assert!(r.asks_mean >= RECORD_REPLICAS as f64, "{r}");
    assert!(r.asks_mean < RECORD_REPLICAS as f64 + 0.1, "{r}");
    assert!(r.asks_max <= NAME_ASKS_MAX as u64, "{r}");
    assert!(r.asks_max <= RECORD_REPLICAS as u64 + 3, "{r}");
    assert_eq!(r.records_lost, 0);
}

#[test]
fn estimate_matches_counted_losses_at_high_churn() {
    // Disks fail at 200 % a year and audits come weekly: enough losses to count, and the
    // estimate made from the measured windows and failure rate must agree with the count.
    let r = small(|c| {
        c.nodes = 200;
        c.chunks = 2_000;
        c.fail_rate = 2.0;
        c.leave_rate = 0.0;
        c.join_rate = 2.0;
        c.outages_per_month = 0.0;
        c.period_secs = 7 * 86_400;
    });
    let expected = r.estimate.expected_losses;
    let counted = r.chunks_lost as f64;
    assert!(counted >= 20.0, "{r}");
    assert!(
        (counted - expected).abs() <= 3.0 * expected.sqrt() + 0.35 * expected,
        "counted {counted}, estimated {expected}\n{r}"
    );
}
