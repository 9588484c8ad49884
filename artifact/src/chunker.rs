//! Content-defined chunking with FastCDC (2020 variant).

use std::io::Read;

/// Smallest chunk FastCDC emits (except a file's last one).
pub const CHUNK_MIN: usize = 256 * 1024;
/// Target average chunk size.
pub const CHUNK_AVG: usize = 1024 * 1024;
/// Largest chunk FastCDC emits: bounds the memory one chunk needs in the pipeline.
pub const CHUNK_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(CHUNK_MIN < CHUNK_AVG && CHUNK_AVG < CHUNK_MAX);

/// Spare capacity every chunk is allocated with: room for the AES-GCM tag, so sealing in place
/// never reallocates (and copies) the chunk.
pub const CHUNK_SPARE: usize = 16;

/// Bytes read from the input at a time. Cut points are found in this buffer, and the bytes left
/// after the last full cut (less than `CHUNK_MAX`) move to its front before the next read: about
/// one byte moved per three read, where `fastcdc`'s `StreamCDC` moved three per byte read (it
/// drains each chunk from the front of a `CHUNK_MAX` buffer) and also needed a `BufReader` in
/// front of it (one more copy of everything).
const READ_BUF_LEN: usize = 4 * CHUNK_MAX;

/// Cuts a byte stream into content-defined chunks. Deterministic: the same bytes always give the
/// same cut points, which is what lets versions of an artifact dedup against each other. The cut
/// points are `fastcdc::v2020`'s (normalization level 1, seed 0), exactly those of its
/// `StreamCDC`, which earlier versions of Cairn used: a cut is only looked for once at least
/// `CHUNK_MAX` bytes are buffered or the input has ended, as `StreamCDC` does.
pub struct Chunker<R: Read> {
    reader: R,
    buf: Box<[u8]>,
    /// Bytes of `buf` not yet cut are `start..end`.
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// Chunks `reader` with Cairn's sizes. Reads are large (`4 * CHUNK_MAX`): no `BufReader`
    /// is needed in front.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0u8; READ_BUF_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Reads until `CHUNK_MAX` bytes are buffered past `start` or the input ends.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 && self.buf.len() - self.start < CHUNK_MAX {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end - self.start < CHUNK_MAX {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return None;
        }
        let (_, cut) = fastcdc::v2020::FastCDC::new(avail, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .cut(0, avail.len());
        let mut chunk = Vec::with_capacity(cut + CHUNK_SPARE);
        chunk.extend_from_slice(&avail[..cut]);
        self.start += cut;
        Some(Ok(chunk))
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

    /// A reader that hands out at most `step` bytes per read, to cross every buffer boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn reference(data: &[u8]) -> Vec<Vec<u8>> {
        fastcdc::v2020::StreamCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .map(|c| c.unwrap().data)
            .collect()
    }

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn cuts_are_those_of_fastcdc_stream_cdc() {
        // Sizes around the buffer and chunk limits, in random and in repetitive data (where
        // chunks hit `CHUNK_MAX`), through whole and trickling reads.
        let lens = [
            1,
            CHUNK_MIN - 1,
            CHUNK_MIN,
            CHUNK_MAX,
            CHUNK_MAX + 1,
            READ_BUF_LEN - 1,
            READ_BUF_LEN,
            READ_BUF_LEN + CHUNK_MAX + 7,
            3 * READ_BUF_LEN + 12_345,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            for data in [noise(i as u64 + 1, len), vec![7u8; len]] {
                let want = reference(&data);
                let got: Vec<Vec<u8>> = Chunker::new(&data[..]).map(Result::unwrap).collect();
                assert!(got == want, "whole reads, {len} bytes: cuts differ");
                let got: Vec<Vec<u8>> = Chunker::new(Trickle {
                    data: &data,
                    step: 1_000_003,
                })
                .map(Result::unwrap)
                .collect();
                assert!(got == want, "short reads, {len} bytes: cuts differ");
            }
        }
    }

    #[test]
    fn chunks_have_room_for_the_tag() {
        let data = noise(9, 3 * CHUNK_MAX);
        for c in Chunker::new(&data[..]) {
            let c = c.unwrap();
            assert!(c.capacity() >= c.len() + CHUNK_SPARE);
        }
    }

    #[test]
    fn a_read_error_is_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let mut c = Chunker::new(Broken);
        let e = c.next().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
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
