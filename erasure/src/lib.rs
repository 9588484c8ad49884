//! Cairn erasure coding: a sealed chunk becomes `k` data shards and `m` parity shards
//! (Reed-Solomon over GF(2^8)); any `k` of the `n = k + m` shards bring it back.
//!
//! Pure: bytes in, bytes out, no I/O.
//!
//! # Layout
//! A sealed chunk of `len` bytes is cut into `k` data shards of `shard_len = ceil(len / k)`
//! bytes each (the last one zero-padded); the padding is dropped on reconstruction because the
//! caller passes `len` back in. A zero-length input still yields shards of one byte so that every
//! shard has a content address of its own.
//!
//! When all `k` data shards are present, [`Codec::decode`] concatenates them and skips the
//! Reed-Solomon arithmetic entirely.

use reed_solomon_erasure::galois_8::ReedSolomon;

/// The most shards a chunk may be cut into. GF(2^8) allows 256; Cairn spreads shards over
/// distinct peers, and more than 64 per chunk would only add per-shard overhead.
pub const SHARDS_MAX: usize = 64;

/// Errors of erasure coding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `k` or `m` is outside what Cairn accepts.
    #[error("invalid erasure parameters k={k} m={m}: need 1 <= k, 0 <= m, k + m <= {SHARDS_MAX}")]
    BadParams {
        /// Data shards asked for.
        k: usize,
        /// Parity shards asked for.
        m: usize,
    },
    /// Fewer than `k` shards were given to [`Codec::decode`].
    #[error("only {present} of the {k} shards needed are present")]
    TooFewShards {
        /// Shards present.
        present: usize,
        /// Shards needed.
        k: usize,
    },
    /// A shard given to [`Codec::decode`] has the wrong length, or the shard list has the wrong
    /// number of slots.
    #[error("shard {index} has {got} bytes, expected {expected}")]
    BadShard {
        /// Index of the offending shard (or the slot count when the list itself is wrong).
        index: usize,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Erasure parameters: `k` data shards and `m` parity shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    k: u8,
    m: u8,
}

impl Params {
    /// Cairn's default, 3-of-5: survives the loss of any two holders at 1.67x storage.
    pub const DEFAULT: Params = Params { k: 3, m: 2 };

    /// Validates `k` and `m`.
    pub fn new(k: usize, m: usize) -> Result<Self, Error> {
        if k == 0 || k + m > SHARDS_MAX {
            return Err(Error::BadParams { k, m });
        }
        Ok(Self {
            k: k as u8,
            m: m as u8,
        })
    }

    /// Data shards.
    pub fn k(&self) -> usize {
        self.k as usize
    }

    /// Parity shards.
    pub fn m(&self) -> usize {
        self.m as usize
    }

    /// All shards, `k + m`.
    pub fn n(&self) -> usize {
        self.k() + self.m()
    }

    /// Length of each shard for a sealed chunk of `len` bytes.
    pub fn shard_len(&self, len: usize) -> usize {
        len.div_ceil(self.k()).max(1)
    }
}

const _: () = assert!(
    SHARDS_MAX <= 256,
    "GF(2^8) Reed-Solomon supports at most 256 shards"
);

/// An encoder/decoder for one set of parameters. Cheap to clone; build once, use for every chunk.
#[derive(Clone, Debug)]
pub struct Codec {
    params: Params,
    /// `None` when `m == 0`: there is nothing to compute.
    rs: Option<ReedSolomon>,
}

impl Codec {
    /// A codec for `params`.
    pub fn new(params: Params) -> Self {
        let rs = (params.m() > 0).then(|| {
            ReedSolomon::new(params.k(), params.m()).expect("Params::new checked k and m")
        });
        Self { params, rs }
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Cuts `sealed` into `n` shards: `k` data shards (padded with zeros) then `m` parity shards.
    pub fn encode(&self, sealed: &[u8]) -> Vec<Vec<u8>> {
        let shard_len = self.params.shard_len(sealed.len());
        let mut shards: Vec<Vec<u8>> = (0..self.params.n())
            .map(|i| {
                let start = (i * shard_len).min(sealed.len());
                let end = ((i + 1) * shard_len).min(sealed.len());
                let mut s = Vec::with_capacity(shard_len);
                if i < self.params.k() {
                    s.extend_from_slice(&sealed[start..end]);
                }
                s.resize(shard_len, 0);
                s
            })
            .collect();
        if let Some(rs) = &self.rs {
            rs.encode(&mut shards)
                .expect("shards are equal-length and counted by Params");
        }
        shards
    }

    /// Rebuilds the sealed chunk of `len` bytes from any `k` present shards (`None` marks a
    /// missing one). `shards` must have exactly `n` slots, all present ones `shard_len` long.
    pub fn decode(&self, shards: Vec<Option<Vec<u8>>>, len: usize) -> Result<Vec<u8>, Error> {
        let (k, n) = (self.params.k(), self.params.n());
        let shard_len = self.params.shard_len(len);
        if shards.len() != n {
            return Err(Error::BadShard {
                index: shards.len(),
                expected: n,
                got: shards.len(),
            });
        }
        let mut present = 0;
        for (index, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if s.len() != shard_len {
                    return Err(Error::BadShard {
                        index,
                        expected: shard_len,
                        got: s.len(),
                    });
                }
                present += 1;
            }
        }
        if present < k {
            return Err(Error::TooFewShards { present, k });
        }
        let mut shards = shards;
        if shards[..k].iter().any(Option::is_none) {
            let rs = self
                .rs
                .as_ref()
                .expect("m == 0 means every present set includes all data shards");
            rs.reconstruct_data(&mut shards)
                .map_err(|_| Error::TooFewShards { present, k })?;
        }
        let mut out = Vec::with_capacity(shard_len * k);
        for s in shards.into_iter().take(k) {
            out.extend_from_slice(&s.expect("data shards are present or reconstructed"));
        }
        out.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn params_are_validated() {
        assert_eq!(
            Params::new(0, 2).unwrap_err(),
            Error::BadParams { k: 0, m: 2 }
        );
        assert_eq!(
            Params::new(60, 5).unwrap_err(),
            Error::BadParams { k: 60, m: 5 }
        );
        assert!(Params::new(1, 0).is_ok());
        assert!(Params::new(3, 2).is_ok());
    }

    #[test]
    fn empty_input_gives_one_byte_shards() {
        let c = Codec::new(Params::DEFAULT);
        let shards = c.encode(b"");
        assert_eq!(shards.len(), 5);
        assert!(shards.iter().all(|s| s.len() == 1));
        let got = c.decode(shards.into_iter().map(Some).collect(), 0).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn too_few_shards_is_an_error() {
        let c = Codec::new(Params::DEFAULT);
        let data = vec![9u8; 1000];
        let mut shards: Vec<Option<Vec<u8>>> = c.encode(&data).into_iter().map(Some).collect();
        shards[0] = None;
        shards[3] = None;
        shards[4] = None;
        assert_eq!(
            c.decode(shards, 1000).unwrap_err(),
            Error::TooFewShards { present: 2, k: 3 }
        );
    }

    #[test]
    fn wrong_shard_length_is_an_error() {
        let c = Codec::new(Params::DEFAULT);
        let mut shards: Vec<Option<Vec<u8>>> = c.encode(&[1u8; 30]).into_iter().map(Some).collect();
        shards[1].as_mut().unwrap().pop();
        assert_eq!(
            c.decode(shards, 30).unwrap_err(),
            Error::BadShard {
                index: 1,
                expected: 10,
                got: 9
            }
        );
    }

    #[test]
    fn declared_length_is_checked() {
        let c = Codec::new(Params::DEFAULT);
        let shards: Vec<Option<Vec<u8>>> = c.encode(&[1u8; 30]).into_iter().map(Some).collect();
        // A declared length that implies another shard length shows up as a shard mismatch.
        assert_eq!(
            c.decode(shards, 31).unwrap_err(),
            Error::BadShard {
                index: 0,
                expected: 11,
                got: 10
            }
        );
    }

    #[test]
    fn no_parity_works() {
        let c = Codec::new(Params::new(4, 0).unwrap());
        let data: Vec<u8> = (0..101u8).collect();
        let shards = c.encode(&data);
        assert_eq!(
            c.decode(shards.into_iter().map(Some).collect(), 101)
                .unwrap(),
            data
        );
    }

    proptest! {
        /// Every loss pattern of up to m shards reconstructs, for several shapes.
        #[test]
        fn reconstructs_from_every_loss_pattern(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            k in 1usize..6,
            m in 0usize..4,
        ) {
            let c = Codec::new(Params::new(k, m).unwrap());
            let shards = c.encode(&data);
            let n = k + m;
            prop_assert_eq!(shards.len(), n);
            for mask in 0u32..(1 << n) {
                if mask.count_ones() as usize > m { continue; }
                let given: Vec<Option<Vec<u8>>> = shards.iter().enumerate()
                    .map(|(i, s)| if mask & (1 << i) != 0 { None } else { Some(s.clone()) })
                    .collect();
                prop_assert_eq!(c.decode(given, data.len()).unwrap(), data.clone(), "mask {:b}", mask);
            }
        }
    }
}
