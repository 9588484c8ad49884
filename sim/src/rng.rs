//! A small seeded generator (xoshiro256**, seeded through SplitMix64), written out so that a
//! seed gives the same run on every platform and with every version of the `rand` crate.

/// SplitMix64: spreads a seed (and derives independent streams from a seed and a label).
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` pseudo-random bytes determined by `seed`, `label` and `index` alone (node keys, shard
/// contents, record names): independent of the order in which they are asked for.
pub(crate) fn derived_bytes(seed: u64, label: u64, index: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ label.wrapping_mul(0xA24B_AED4_963E_E407) ^ index.rotate_left(32);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// xoshiro256** (Blackman and Vigna).
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Self { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1]: never 0, so that its logarithm is finite.
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0); the modulo bias is below 2^-40 for any `n` used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// An exponentially distributed delay in whole seconds for events at `per_second`, at
    /// least 1 s; `u64::MAX` when the rate is 0 (the event never happens).
    pub(crate) fn exp_secs(&mut self, per_second: f64) -> u64 {
        if per_second <= 0.0 {
            return u64::MAX;
        }
        let secs = -self.unit().ln() / per_second;
        if secs >= u64::MAX as f64 {
            u64::MAX
        } else {
            (secs as u64).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mut r = Rng::new(1);
        let count = 100_000;
        let mean: f64 = (0..count).map(|_| r.unit()).sum::<f64>() / count as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        // Exponential with rate 1/1000 s: mean 1000 s.
        let mean: f64 = (0..count).map(|_| r.exp_secs(1e-3) as f64).sum::<f64>() / count as f64;
        assert!((mean - 1000.0).abs() < 20.0, "{mean}");
        assert_eq!(r.exp_secs(0.0), u64::MAX);
        assert_eq!(derived_bytes(1, 2, 3, 32), derived_bytes(1, 2, 3, 32));
        assert_ne!(derived_bytes(1, 2, 3, 32), derived_bytes(1, 2, 4, 32));
        assert_eq!(derived_bytes(1, 2, 3, 13).len(), 13);
    }
}
