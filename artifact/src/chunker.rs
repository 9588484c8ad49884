//! Content-defined chunking with FastCDC (2020 variant).

use std::io::Read;

/// Smallest chunk FastCDC emits (except a file's last one).
pub const CHUNK_MIN: usize = 256 * 1024;
/// Target average chunk size.
pub const CHUNK_AVG: usize = 1024 * 1024;
/// Largest chunk FastCDC emits: bounds the memory one chunk needs in the pipeline.
pub const CHUNK_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(CHUNK_MIN < CHUNK_AVG && CHUNK_AVG < CHUNK_MAX);

/// Cuts a byte stream into content-defined chunks. Deterministic: the same bytes always give the
/// same cut points, which is what lets versions of an artifact dedup against each other.
pub struct Chunker<R: Read> {
    inner: fastcdc::v2020::StreamCDC<R>,
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` with Cairn's sizes.
    pub fn new(reader: R) -> Self {
        Self {
            inner: fastcdc::v2020::StreamCDC::new(reader, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX),
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cuts(data: &[u8]) -> Vec<usize> {
        Chunker::new(data).map(|c| c.unwrap().len()).collect()
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(cuts(&[]).is_empty());
    }

    #[test]
    fn sizes_stay_in_bounds() {
        let data: Vec<u8> = (0..20_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let c = cuts(&data);
        assert_eq!(c.iter().sum::<usize>(), data.len());
        for (i, len) in c.iter().enumerate() {
            assert!(*len <= CHUNK_MAX);
            if i + 1 < c.len() {
                assert!(*len >= CHUNK_MIN);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn chunking_is_deterministic(seed in any::<u64>(), len in 0usize..3_000_000) {
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
            prop_assert_eq!(cuts(&data), cuts(&data));
            prop_assert_eq!(cuts(&data).iter().sum::<usize>(), len);
        }
    }
}
