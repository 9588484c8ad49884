//! The durability estimate for losses too rare to count in one simulated year.
//!
//! A chunk is lost when more than `m` of its `n` holders are gone for good (disk lost, node
//! left) before the caretaker re-creates their shards. Each permanent loss of a holder opens a
//! *window*: the time until the audit that notices it and the repair that follows (longer when
//! the repair has to wait for enough reachable shards). The simulation measures the windows of
//! its repairs and the rate `λ` at which nodes are lost for good; the chunk is lost when `m` or
//! more of the other `n - 1` holders are lost within the window, each with probability
//! `q = 1 - e^(-λ W)`, independently (the model's assumption: no correlated failures). Windows
//! open at `n λ` per chunk and year, so
//!
//! ```text
//! P(loss per chunk-year) ≈ n λ · mean over windows W of P(Binomial(n - 1, q(W)) ≥ m)
//! ```
//!
//! and the network loses a Poisson number of chunks a year with mean `chunks · P`. `λ` comes
//! with a 95 % Poisson interval from the number of losses observed, and the upper estimate uses
//! its upper end (the loss probability grows as `λ^(m+1)`). The same estimate is checked
//! against counted losses at churn high enough to count them (the tests, and
//! docs/simulation.md).

/// Windows and rates, per year.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Holders lost for good, counted.
    pub losses: u64,
    /// Node-years of exposure.
    pub node_years: f64,
    /// Permanent losses per node-year, and its 95 % interval.
    pub lambda: f64,
    /// Lower end of the 95 % interval of `lambda`.
    pub lambda_low: f64,
    /// Upper end of the 95 % interval of `lambda`.
    pub lambda_high: f64,
    /// Windows measured (0: none; one audit period is assumed instead).
    pub windows: usize,
    /// Mean, 99th percentile and largest window, in hours.
    pub window_mean_h: f64,
    /// See `window_mean_h`.
    pub window_p99_h: f64,
    /// See `window_mean_h`.
    pub window_max_h: f64,
    /// Probability that a window ends in a loss.
    pub p_window: f64,
    /// Probability that a chunk is lost in a year.
    pub p_chunk_year: f64,
    /// The same at the upper end of `lambda`.
    pub p_chunk_year_high: f64,
    /// Expected chunks lost in the simulated time, over the whole network.
    pub expected_losses: f64,
    /// The same at the upper end of `lambda`.
    pub expected_losses_high: f64,
}

/// 95 % two-sided interval of a Poisson mean from `count` events (Byar's approximation,
/// within a few percent of the exact interval even for small counts).
pub fn poisson_interval(count: u64) -> (f64, f64) {
    const Z: f64 = 1.959_964;
    let x = count as f64;
    let low = if count == 0 {
        0.0
    } else {
        x * (1.0 - 1.0 / (9.0 * x) - Z / (3.0 * x.sqrt())).powi(3)
    };
    let y = x + 1.0;
    let high = y * (1.0 - 1.0 / (9.0 * y) + Z / (3.0 * y.sqrt())).powi(3);
    (low, high)
}

/// P(X ≥ at_least) for X ~ Binomial(trials, q).
pub fn binomial_tail(trials: usize, q: f64, at_least: usize) -> f64 {
    if at_least == 0 {
        return 1.0;
    }
    let mut total = 0.0;
    for i in at_least..=trials {
        total += choose(trials, i) * q.powi(i as i32) * (1.0 - q).powi((trials - i) as i32);
    }
    total.min(1.0)
}

fn choose(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Probability that a window of `window_years` ends in a loss, for a chunk of `n` shards that
/// survives `m` losses, when holders are lost at `lambda` per year.
fn p_window(lambda: f64, windows_years: &[f64], n: usize, m: usize) -> f64 {
    if windows_years.is_empty() {
        return 0.0;
    }
    let sum: f64 = windows_years
        .iter()
        .map(|w| binomial_tail(n - 1, 1.0 - (-lambda * w).exp(), m))
        .sum();
    sum / windows_years.len() as f64
}

/// What the estimate is made from.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Holders lost for good.
    pub losses: u64,
    /// Node-years over which they were counted.
    pub node_years: f64,
    /// Measured windows, in seconds (one audit period is assumed when there are none).
    pub windows_secs: &'a [u64],
    /// The audit period, in seconds.
    pub period_secs: u64,
    /// Shards per chunk.
    pub n: usize,
    /// Shards a chunk survives losing.
    pub m: usize,
    /// Chunks in the network.
    pub chunks: usize,
    /// Years the expectation is for.
    pub years: f64,
}

/// The estimate from what a run observed.
pub fn estimate(o: &Observed) -> Estimate {
    let Observed {
        losses,
        node_years,
        windows_secs,
        period_secs,
        n,
        m,
        chunks,
        years,
    } = *o;
    let per_year = |x: f64| {
        if node_years > 0.0 {
            x / node_years
        } else {
            0.0
        }
    };
    let (low, high) = poisson_interval(losses);
    let lambda = per_year(losses as f64);
    let (lambda_low, lambda_high) = (per_year(low), per_year(high));
    let year = crate::YEAR_SECS as f64;
    let mut sorted: Vec<u64> = windows_secs.to_vec();
    sorted.sort_unstable();
    let used: Vec<f64> = if sorted.is_empty() {
        vec![period_secs as f64 / year]
    } else {
        sorted.iter().map(|w| *w as f64 / year).collect()
    };
    let hours = |s: u64| s as f64 / 3600.0;
    let (mean_h, p99_h, max_h) = if sorted.is_empty() {
        let p = hours(period_secs);
        (p, p, p)
    } else {
        let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 3600.0;
        let p99 = sorted[(sorted.len() - 1) * 99 / 100];
        (mean, hours(p99), hours(*sorted.last().unwrap_or(&0)))
    };
    let pw = p_window(lambda, &used, n, m);
    let p_chunk_year = (n as f64 * lambda * pw).min(1.0);
    let p_chunk_year_high = (n as f64 * lambda_high * p_window(lambda_high, &used, n, m)).min(1.0);
    Estimate {
        losses,
        node_years,
        lambda,
        lambda_low,
        lambda_high,
        windows: sorted.len(),
        window_mean_h: mean_h,
        window_p99_h: p99_h,
        window_max_h: max_h,
        p_window: pw,
        p_chunk_year,
        p_chunk_year_high,
        expected_losses: chunks as f64 * p_chunk_year * years,
        expected_losses_high: chunks as f64 * p_chunk_year_high * years,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_interval_matches_exact_values() {
        // Exact 95 % intervals: 0 -> (0, 3.689), 10 -> (4.795, 18.39), 100 -> (81.36, 121.63).
        for (count, low, high) in [(0, 0.0, 3.689), (10, 4.795, 18.39), (100, 81.36, 121.63)] {
            let (l, h) = poisson_interval(count);
            assert!((l - low).abs() <= 0.02 * low.max(1.0), "{count}: {l}");
            assert!((h - high).abs() <= 0.02 * high, "{count}: {h}");
        }
    }

    #[test]
    fn binomial_tail_small_cases() {
        assert!((binomial_tail(4, 0.5, 2) - 11.0 / 16.0).abs() < 1e-12);
        assert_eq!(binomial_tail(4, 0.0, 1), 0.0);
        assert_eq!(binomial_tail(4, 0.3, 0), 1.0);
        // For small q the tail is about C(4, 2) q^2.
        let q = 1e-4;
        assert!((binomial_tail(4, q, 2) / (6.0 * q * q) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn estimate_matches_the_closed_form_for_uniform_windows() {
        // Windows uniform over one day, lambda 0.1/year, RS 3+2: about n λ C(4,2) λ² E[W²]
        // = 5 · 0.1 · 6 · 0.01 · (1/365)² / 3.
        let day = 86_400u64;
        let windows: Vec<u64> = (0..1000).map(|i| (i * day + day / 2) / 1000).collect();
        let e = estimate(&Observed {
            losses: 1000,
            node_years: 10_000.0,
            windows_secs: &windows,
            period_secs: day,
            n: 5,
            m: 2,
            chunks: 1,
            years: 1.0,
        });
        assert!((e.lambda - 0.1).abs() < 1e-12);
        let closed = 5.0 * 0.1 * 6.0 * 0.01 * (1.0f64 / 365.0).powi(2) / 3.0;
        assert!(
            (e.p_chunk_year / closed - 1.0).abs() < 0.01,
            "{} vs {closed}",
            e.p_chunk_year
        );
        assert!(e.p_chunk_year_high > e.p_chunk_year);
        assert!((e.window_mean_h - 12.0).abs() < 0.1);
    }
}
