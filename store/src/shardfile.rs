//! The shard file: a fixed 64-byte header, the shard bytes, then the bao outboard.
//!
//! ```text
//! offset size field
//!      0    8 magic "CAIRNSHD"
//!      8    2 format version, u16 little-endian (1)
//!     10    1 bao block log (4: 16 KiB chunk groups)
//!     11    5 reserved, zero
//!     16    8 data length, u64 little-endian (<= SHARD_LEN_MAX)
//!     24    8 outboard length, u64 little-endian (must equal the bao tree's outboard size)
//!     32   32 BLAKE3 root of the data (equals the digest in the shard's CID)
//!     64    . data, then outboard; the file is exactly 64 + data + outboard bytes
//! ```
//! Every field is checked on parse; a file that fails any check is reported as corrupted.

use bao_tree::BaoTree;

use cairn_artifact::{BLOCK_SIZE, SHARD_LEN_MAX};

/// Length of the header.
pub const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"CAIRNSHD";
const VERSION: u16 = 1;

/// A parsed shard file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// Length of the shard bytes.
    pub data_len: u64,
    /// Length of the outboard that follows them.
    pub outboard_len: u64,
    /// BLAKE3 root of the data.
    pub hash: [u8; 32],
}

impl ShardHeader {
    /// The header for `data_len` bytes hashing to `hash`.
    pub fn new(data_len: u64, hash: [u8; 32]) -> Self {
        let outboard_len = BaoTree::new(data_len, BLOCK_SIZE).outboard_size();
        Self {
            data_len,
            outboard_len,
            hash,
        }
    }

    /// Total file length this header describes.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.data_len + self.outboard_len
    }

    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[10] = BLOCK_SIZE.chunk_log();
        h[16..24].copy_from_slice(&self.data_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.outboard_len.to_le_bytes());
        h[32..64].copy_from_slice(&self.hash);
        h
    }

    /// Parses and checks a header. Any byte out of place is an error naming the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("file is shorter than the {HEADER_LEN}-byte header"))?;
        if &h[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            return Err(format!("unsupported shard file version {version}"));
        }
        if h[10] != BLOCK_SIZE.chunk_log() {
            return Err(format!("unsupported bao block log {}", h[10]));
        }
        if h[11..16].iter().any(|b| *b != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        let data_len = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        if data_len > SHARD_LEN_MAX {
            return Err(format!(
                "data length {data_len} exceeds the limit {SHARD_LEN_MAX}"
            ));
        }
        let outboard_len = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
        let want = BaoTree::new(data_len, BLOCK_SIZE).outboard_size();
        if outboard_len != want {
            return Err(format!("outboard length {outboard_len} should be {want}"));
        }
        let hash = h[32..64].try_into().expect("32 bytes");
        Ok(Self {
            data_len,
            outboard_len,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_fields() {
        let h = ShardHeader::new(123_456, [9; 32]);
        let bytes = h.encode();
        assert_eq!(ShardHeader::parse(&bytes).unwrap(), h);
        assert!(
            ShardHeader::parse(&bytes[..63])
                .unwrap_err()
                .contains("shorter")
        );
        for (i, needle) in [
            (0, "magic"),
            (8, "version"),
            (10, "block log"),
            (12, "reserved"),
            (24, "outboard"),
        ] {
            let mut b = bytes;
            b[i] ^= 0x40;
            let e = ShardHeader::parse(&b).unwrap_err();
            assert!(e.contains(needle), "byte {i}: {e}");
        }
        let mut b = bytes;
        b[16..24].copy_from_slice(&(SHARD_LEN_MAX + 1).to_le_bytes());
        assert!(ShardHeader::parse(&b).unwrap_err().contains("limit"));
    }
}
