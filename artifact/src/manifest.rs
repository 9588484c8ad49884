//! The artifact manifest: a DAG-CBOR document addressed by its CID.
//!
//! The public part is what storage nodes and auditors see: per chunk, the CIDs of its `n`
//! shards and the sealed length (from which the shard length follows), plus the erasure
//! parameters. That is enough to check and repair every shard without any key. The private part
//! (file tree, chunk keys, plaintext hashes) is DAG-CBOR too, sealed under the artifact key.
//!
//! The public part also names the keys allowed to sign the artifact's holder records
//! (`record_signers`, format 2): the publisher's, and later any repairer it delegates to. The
//! manifest is checked against its CID, which the read capability carries, so a reader (and a
//! node storing records) knows whose records to trust from the capability alone.
//!
//! Decoding treats the bytes as hostile: lengths are capped before use, every cross-reference
//! (shard counts, chunk ranges, paths) is checked, and an inconsistent manifest is an error.

use cairn_encryption::{ArtifactKey, ChunkKey, SealedPrivate, open_private, seal_private};
use cairn_erasure::Params;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{CHUNK_MAX, Cid, Error, manifest_cid};

/// Largest encoded manifest accepted (public part with the sealed private part inside).
/// At ~250 bytes per chunk this allows artifacts of about 250 000 chunks (~250 GiB).
pub const MANIFEST_LEN_MAX: usize = 64 * 1024 * 1024;
/// The largest shard accepted: a sealed chunk of at most `CHUNK_MAX` plus its tag, cut into at
/// least one shard, with headroom.
pub const SHARD_LEN_MAX: u64 = 8 * 1024 * 1024;
const _: () = assert!(CHUNK_MAX as u64 + 16 <= SHARD_LEN_MAX);
/// Format version of the private part (and of public parts before record signers).
const FORMAT: u32 = 1;
/// Format version of the public part written now: format 1 plus `record_signers`. Format 1
/// still decodes (local stores keep it readable) with no signer, so no holder record of it is
/// trusted on the network.
const PUBLIC_FORMAT: u32 = 2;
/// Most keys a manifest may allow to sign its holder records.
pub const RECORD_SIGNERS_MAX: usize = 16;
/// Longest path inside an artifact.
const PATH_LEN_MAX: usize = 4096;

/// One chunk in the public part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Length of the sealed chunk (ciphertext and tag) before erasure coding.
    pub sealed_len: u64,
    /// The `n` shard CIDs: `k` data shards, then `m` parity shards.
    pub shards: Vec<Cid>,
}

#[derive(Serialize, Deserialize)]
struct PublicWire {
    format: u32,
    k: u8,
    m: u8,
    chunks: Vec<ChunkEntry>,
    private_nonce: ByteBuf,
    private: ByteBuf,
    /// Absent in format 1, present (possibly empty) in format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record_signers: Option<Vec<ByteBuf>>,
}

/// A decoded manifest (public part; the private part stays sealed until opened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    format: u32,
    params: Params,
    chunks: Vec<ChunkEntry>,
    sealed_private: SealedPrivate,
    record_signers: Vec<[u8; 32]>,
}

/// One file of the artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators, validated by [`validate_path`].
    pub path: String,
    /// Length in bytes.
    pub size: u64,
    /// Index of the file's first chunk in the manifest.
    pub first_chunk: u64,
    /// Number of chunks (0 for an empty file).
    pub chunk_count: u64,
}

/// The secret half of one chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSecret {
    /// The chunk's AES-256 key.
    pub key: ByteBuf,
    /// BLAKE3 of the plaintext, checked after decryption.
    pub hash: ByteBuf,
    /// Plaintext length.
    pub len: u64,
}

/// The sealed part of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivatePart {
    /// Format version of the private part.
    pub format: u32,
    /// Optional artifact name (`org/name`).
    pub name: Option<String>,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
    /// One secret per public chunk entry, same order.
    pub chunks: Vec<ChunkSecret>,
}

impl PrivatePart {
    /// The chunk key of chunk `i`. Only valid after [`Manifest::open`] checked the lengths.
    pub fn chunk_key(&self, i: usize) -> ChunkKey {
        ChunkKey::from_slice(&self.chunks[i].key).expect("open() checked key lengths")
    }
}

/// Checks that `path` is a safe relative path: non-empty `/`-separated components, none of them
/// empty, `.` or `..`, no backslash or NUL, not too long. A hostile manifest can therefore never
/// make `cairn get` write outside its output directory.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > PATH_LEN_MAX {
        return Err(format!(
            "path length {} is outside 1..={PATH_LEN_MAX}",
            path.len()
        ));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(format!("path {path:?} contains a backslash or NUL"));
    }
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(format!("path {path:?} has an empty, `.` or `..` component"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Builds and seals a manifest.
    pub fn seal(
        params: Params,
        chunks: Vec<ChunkEntry>,
        private: &PrivatePart,
        key: &ArtifactKey,
    ) -> Self {
        let plain = serde_ipld_dagcbor::to_vec(private).expect("private part serializes");
        Self {
            format: PUBLIC_FORMAT,
            params,
            chunks,
            sealed_private: seal_private(key, &plain),
            record_signers: Vec::new(),
        }
    }

    /// A manifest around an already sealed private part, whatever it holds: for fuzzers, which
    /// play a publisher sealing bytes of their choosing. Not a stable API.
    #[doc(hidden)]
    pub fn from_sealed(params: Params, chunks: Vec<ChunkEntry>, sealed: SealedPrivate) -> Self {
        Self {
            format: PUBLIC_FORMAT,
            params,
            chunks,
            sealed_private: sealed,
            record_signers: Vec::new(),
        }
    }

    /// The manifest with `signers` (32-byte ed25519 public keys, the publisher's first) as the
    /// only keys whose holder records readers and nodes accept. Duplicates are dropped; more
    /// than [`RECORD_SIGNERS_MAX`] is an error.
    pub fn with_record_signers(mut self, signers: &[[u8; 32]]) -> Result<Self, Error> {
        let mut distinct: Vec<[u8; 32]> = Vec::with_capacity(signers.len());
        for s in signers {
            if !distinct.contains(s) {
                distinct.push(*s);
            }
        }
        if distinct.len() > RECORD_SIGNERS_MAX {
            return Err(Error::BadManifest {
                what: "new manifest".into(),
                reason: format!(
                    "{} record signers is over the limit of {RECORD_SIGNERS_MAX}",
                    distinct.len()
                ),
            });
        }
        self.format = PUBLIC_FORMAT;
        self.record_signers = distinct;
        Ok(self)
    }

    /// The keys allowed to sign this artifact's holder records (none for a format 1 manifest,
    /// or one published only to a local store).
    pub fn record_signers(&self) -> &[[u8; 32]] {
        &self.record_signers
    }

    /// Erasure parameters of every chunk.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The public chunk list.
    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.chunks
    }

    /// Every shard CID the artifact needs.
    pub fn shard_cids(&self) -> impl Iterator<Item = &Cid> {
        self.chunks.iter().flat_map(|c| c.shards.iter())
    }

    /// The DAG-CBOR bytes and their CID.
    pub fn encode(&self) -> (Cid, Vec<u8>) {
        let wire = PublicWire {
            format: self.format,
            k: self.params.k() as u8,
            m: self.params.m() as u8,
            chunks: self.chunks.clone(),
            private_nonce: ByteBuf::from(self.sealed_private.nonce.to_vec()),
            private: ByteBuf::from(self.sealed_private.ciphertext.clone()),
            record_signers: (self.format >= PUBLIC_FORMAT).then(|| {
                self.record_signers
                    .iter()
                    .map(|s| ByteBuf::from(s.to_vec()))
                    .collect()
            }),
        };
        let bytes = serde_ipld_dagcbor::to_vec(&wire).expect("manifest serializes");
        (manifest_cid(&bytes), bytes)
    }

    /// Decodes and checks manifest bytes. `what` names them in errors (usually the CID).
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadManifest {
            what: what.to_string(),
            reason,
        };
        if bytes.len() > MANIFEST_LEN_MAX {
            return Err(bad(format!(
                "{} bytes exceeds the limit {MANIFEST_LEN_MAX}",
                bytes.len()
            )));
        }
        let wire: PublicWire = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| bad(format!("not a Cairn manifest ({e})")))?;
        let record_signers = match (wire.format, wire.record_signers) {
            (FORMAT, None) => Vec::new(),
            (FORMAT, Some(_)) => {
                return Err(bad("format 1 has no record signers".into()));
            }
            (PUBLIC_FORMAT, None) => {
                return Err(bad("format 2 lacks its record signers".into()));
            }
            (PUBLIC_FORMAT, Some(signers)) => {
                if signers.len() > RECORD_SIGNERS_MAX {
                    return Err(bad(format!(
                        "{} record signers is over the limit of {RECORD_SIGNERS_MAX}",
                        signers.len()
                    )));
                }
                let mut keys: Vec<[u8; 32]> = Vec::with_capacity(signers.len());
                for s in &signers {
                    let key: [u8; 32] = s.as_slice().try_into().map_err(|_| {
                        bad(format!("a record signer is {} bytes, not 32", s.len()))
                    })?;
                    if keys.contains(&key) {
                        return Err(bad("a record signer is listed twice".into()));
                    }
                    keys.push(key);
                }
                keys
            }
            (other, _) => {
                return Err(bad(format!(
                    "format version {other} is not supported (this build reads {FORMAT} and \
                     {PUBLIC_FORMAT})"
                )));
            }
        };
        let params =
            Params::new(wire.k as usize, wire.m as usize).map_err(|e| bad(e.to_string()))?;
        for (i, c) in wire.chunks.iter().enumerate() {
            if c.shards.len() != params.n() {
                return Err(bad(format!(
                    "chunk {i} lists {} shards, expected {}",
                    c.shards.len(),
                    params.n()
                )));
            }
            if c.sealed_len > CHUNK_MAX as u64 + cairn_encryption::TAG_LEN as u64 {
                return Err(bad(format!(
                    "chunk {i} sealed length {} exceeds the chunk limit",
                    c.sealed_len
                )));
            }
            if params.shard_len(c.sealed_len as usize) as u64 > SHARD_LEN_MAX {
                return Err(bad(format!(
                    "chunk {i} shards exceed {SHARD_LEN_MAX} bytes"
                )));
            }
            if let Some(s) = c
                .shards
                .iter()
                .find(|s| s.codec() != crate::CODEC_RAW || crate::ids::blake3_digest(s).is_none())
            {
                return Err(bad(format!(
                    "chunk {i} names {s}, which is not a raw BLAKE3 shard CID"
                )));
            }
        }
        let nonce: [u8; cairn_encryption::NONCE_LEN] = wire
            .private_nonce
            .as_slice()
            .try_into()
            .map_err(|_| bad("private part nonce has the wrong length".into()))?;
        Ok(Self {
            format: wire.format,
            params,
            chunks: wire.chunks,
            sealed_private: SealedPrivate {
                nonce,
                ciphertext: wire.private.into_vec(),
            },
            record_signers,
        })
    }

    /// Opens and checks the private part. `cid` names the artifact in errors.
    pub fn open(&self, cid: &Cid, key: &ArtifactKey) -> Result<PrivatePart, Error> {
        let plain = open_private(key, &self.sealed_private).map_err(|source| Error::Crypto {
            artifact: *cid,
            source,
        })?;
        let bad = |reason: String| Error::BadManifest {
            what: format!("{cid} private part"),
            reason,
        };
        let p: PrivatePart = serde_ipld_dagcbor::from_slice(&plain)
            .map_err(|e| bad(format!("undecodable ({e})")))?;
        if p.format != FORMAT {
            return Err(bad(format!("format version {} is not supported", p.format)));
        }
        if p.chunks.len() != self.chunks.len() {
            return Err(bad(format!(
                "{} chunk secrets for {} chunks",
                p.chunks.len(),
                self.chunks.len()
            )));
        }
        for (i, (s, c)) in p.chunks.iter().zip(&self.chunks).enumerate() {
            if s.key.len() != 32 || s.hash.len() != 32 {
                return Err(bad(format!("chunk {i} key or hash has the wrong length")));
            }
            // `len` comes from the publisher: a sum that overflows must fail, not wrap into a
            // match (hardening item 15).
            if s.len.checked_add(cairn_encryption::TAG_LEN as u64) != Some(c.sealed_len) {
                return Err(bad(format!(
                    "chunk {i} length {} does not match its sealed length {}",
                    s.len, c.sealed_len
                )));
            }
        }
        let mut prev: Option<&str> = None;
        for f in &p.files {
            validate_path(&f.path).map_err(bad)?;
            if prev.is_some_and(|p| p >= f.path.as_str()) {
                return Err(bad(format!(
                    "files are not sorted and unique at {:?}",
                    f.path
                )));
            }
            prev = Some(&f.path);
            let end = f
                .first_chunk
                .checked_add(f.chunk_count)
                .filter(|e| *e <= p.chunks.len() as u64);
            let Some(end) = end else {
                return Err(bad(format!(
                    "file {:?} refers to chunks past the end",
                    f.path
                )));
            };
            // Each length was checked against its sealed length above, so a sum that overflows
            // needs billions of chunks; it is checked all the same rather than trusted to wrap.
            let sum = p.chunks[f.first_chunk as usize..end as usize]
                .iter()
                .try_fold(0u64, |sum, c| sum.checked_add(c.len));
            let Some(sum) = sum else {
                return Err(bad(format!(
                    "file {:?} chunk lengths add up past 2^64",
                    f.path
                )));
            };
            if sum != f.size {
                return Err(bad(format!(
                    "file {:?} size {} does not match its chunks ({sum})",
                    f.path, f.size
                )));
            }
        }
        // A file path may not also be a directory of another file ("a" and "a/b"). Neighbours
        // in sorted order are not enough: "a" < "a-b" < "a/b" puts a file between the two.
        let paths: std::collections::HashSet<&str> =
            p.files.iter().map(|f| f.path.as_str()).collect();
        for f in &p.files {
            let mut dirs = f.path.match_indices('/').map(|(i, _)| &f.path[..i]);
            if let Some(dir) = dirs.find(|d| paths.contains(d)) {
                return Err(bad(format!("{dir:?} is both a file and a directory")));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shard_cid;
    use proptest::prelude::*;

    pub(crate) fn sample(nchunks: usize) -> (Manifest, PrivatePart, ArtifactKey) {
        let params = Params::DEFAULT;
        let mut chunks = Vec::new();
        let mut secrets = Vec::new();
        for i in 0..nchunks {
            chunks.push(ChunkEntry {
                sealed_len: 100 + i as u64 + 16,
                shards: (0..5).map(|j| shard_cid(&[i as u8, j])).collect(),
            });
            secrets.push(ChunkSecret {
                key: ByteBuf::from(vec![i as u8; 32]),
                hash: ByteBuf::from(vec![1; 32]),
                len: 100 + i as u64,
            });
        }
        let size = secrets.iter().map(|s| s.len).sum();
        let private = PrivatePart {
            format: FORMAT,
            name: Some("org/model".into()),
            files: vec![FileEntry {
                path: "dir/model.safetensors".into(),
                size,
                first_chunk: 0,
                chunk_count: nchunks as u64,
            }],
            chunks: secrets,
        };
        let key = ArtifactKey::random();
        (Manifest::seal(params, chunks, &private, &key), private, key)
    }

    #[test]
    fn encode_decode_open() {
        let (m, p, key) = sample(3);
        let (cid, bytes) = m.encode();
        assert_eq!(cid, manifest_cid(&bytes));
        let d = Manifest::decode(&bytes, "t").unwrap();
        assert_eq!(d, m);
        assert_eq!(d.open(&cid, &key).unwrap(), p);
        let wrong = ArtifactKey::random();
        assert!(matches!(d.open(&cid, &wrong), Err(Error::Crypto { .. })));
    }

    #[test]
    fn record_signers_are_bound_to_the_cid() {
        let (m, p, key) = sample(2);
        let m = m.with_record_signers(&[[7; 32], [8; 32], [7; 32]]).unwrap();
        assert_eq!(
            m.record_signers(),
            &[[7; 32], [8; 32]],
            "duplicates dropped"
        );
        let (cid, bytes) = m.encode();
        let d = Manifest::decode(&bytes, "t").unwrap();
        assert_eq!(d.record_signers(), m.record_signers());
        assert_eq!(d.open(&cid, &key).unwrap(), p);
        // Another signer set is another manifest: the CID in a capability pins the signers.
        let (other, _) = m.clone().with_record_signers(&[[9; 32]]).unwrap().encode();
        assert_ne!(other, cid);
        assert!(
            m.with_record_signers(
                &(0..=RECORD_SIGNERS_MAX as u8)
                    .map(|i| [i; 32])
                    .collect::<Vec<_>>()
            )
            .unwrap_err()
            .to_string()
            .contains("over the limit")
        );
    }

    #[test]
    fn format_1_manifests_still_decode_with_no_signer() {
        let (mut m, p, key) = sample(2);
        m.format = FORMAT;
        let (cid, bytes) = m.encode();
        let d = Manifest::decode(&bytes, "t").unwrap();
        assert!(d.record_signers().is_empty());
        assert_eq!(d.open(&cid, &key).unwrap(), p);
        // Re-encoding keeps the format, hence the CID.
        assert_eq!(d.encode().0, cid);
    }

    #[test]
    fn malformed_record_signers_are_refused() {
        let (m, _, _) = sample(1);
        let (_, bytes) = m.with_record_signers(&[[3; 32]]).unwrap().encode();
        let wire: PublicWire = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        let cases: Vec<(u32, Option<Vec<ByteBuf>>, &str)> = vec![
            (2, None, "lacks"),
            (1, Some(vec![]), "format 1 has no"),
            (2, Some(vec![ByteBuf::from(vec![1; 31])]), "not 32"),
            (2, Some(vec![ByteBuf::from(vec![1; 32]); 2]), "twice"),
            (
                2,
                Some(vec![ByteBuf::from(vec![1; 32]); RECORD_SIGNERS_MAX + 1]),
                "over the limit",
            ),
            (3, Some(vec![]), "not supported"),
        ];
        for (format, signers, expected) in cases {
            let bad = PublicWire {
                format,
                k: wire.k,
                m: wire.m,
                chunks: wire.chunks.clone(),
                private_nonce: wire.private_nonce.clone(),
                private: wire.private.clone(),
                record_signers: signers,
            };
            let bytes = serde_ipld_dagcbor::to_vec(&bad).unwrap();
            let err = Manifest::decode(&bytes, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn paths_are_validated() {
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a/..", "a\\b", "x\0"] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b.json", "..a", "a..b/c"] {
            assert!(validate_path(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn hostile_private_parts_are_rejected() {
        let (m, mut p, key) = sample(2);
        p.files[0].path = "../etc/passwd".into();
        let m2 = Manifest::seal(m.params(), m.chunks().to_vec(), &p, &key);
        let (cid, _) = m2.encode();
        let e = m2.open(&cid, &key).unwrap_err();
        assert!(e.to_string().contains("component"), "{e}");

        let (m, mut p, key) = sample(2);
        p.files[0].chunk_count = 3;
        let m2 = Manifest::seal(m.params(), m.chunks().to_vec(), &p, &key);
        assert!(
            m2.open(&cid, &key)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
    }

    /// Lengths chosen so that unchecked sums wrap: `len + TAG_LEN` of the first chunk is 0, its
    /// sealed length, and the file's size is what the wrapped sum of its chunks gives. With
    /// overflow checks these panicked; without them (release builds) the manifest opened.
    #[test]
    fn overflowing_lengths_are_refused_not_wrapped() {
        let tag = cairn_encryption::TAG_LEN as u64;
        let (m, mut p, key) = sample(2);
        let mut chunks = m.chunks().to_vec();
        chunks[0].sealed_len = 0;
        p.chunks[0].len = u64::MAX - (tag - 1);
        p.files[0].size = p.chunks[0].len.wrapping_add(p.chunks[1].len);
        let hostile = Manifest::seal(m.params(), chunks, &p, &key);
        let (cid, bytes) = hostile.encode();
        let decoded = Manifest::decode(&bytes, "t").unwrap();
        let e = decoded.open(&cid, &key).unwrap_err();
        assert!(
            e.to_string()
                .contains("chunk 0 length 18446744073709551600 does not match its sealed length 0"),
            "{e}"
        );
    }

    /// A file that is also a directory of another is refused even when a third path sorts
    /// between them ('-' < '/'), which a check of sorted neighbours let through.
    #[test]
    fn a_file_is_never_also_a_directory() {
        for paths in [
            &["a", "a/b"][..],
            &["a", "a-b", "a/b"],
            &["a", "a.x", "a/b/c"],
            &["d/a", "d/a-b", "d/a/b"],
        ] {
            let (m, mut p, key) = sample(0);
            p.files = paths
                .iter()
                .map(|path| FileEntry {
                    path: path.to_string(),
                    size: 0,
                    first_chunk: 0,
                    chunk_count: 0,
                })
                .collect();
            let m2 = Manifest::seal(m.params(), m.chunks().to_vec(), &p, &key);
            let (cid, _) = m2.encode();
            let e = m2.open(&cid, &key).unwrap_err();
            assert!(
                e.to_string().contains("both a file and a directory"),
                "{paths:?}: {e}"
            );
        }
    }

    /// Manifests of another format version, public or private part, are refused by name.
    #[test]
    fn unknown_manifest_formats_are_refused() {
        let (m, mut p, key) = sample(1);
        let (_, bytes) = m.encode();
        let mut wire: PublicWire = serde_ipld_dagcbor::from_slice(&bytes).unwrap();
        wire.format = PUBLIC_FORMAT + 1;
        let other = serde_ipld_dagcbor::to_vec(&wire).unwrap();
        let e = Manifest::decode(&other, "t").unwrap_err();
        assert!(
            e.to_string().contains("format version 3 is not supported"),
            "{e}"
        );

        p.format = FORMAT + 1;
        let m2 = Manifest::seal(m.params(), m.chunks().to_vec(), &p, &key);
        let (cid, _) = m2.encode();
        let e = m2.open(&cid, &key).unwrap_err();
        assert!(
            e.to_string().contains("format version 2 is not supported"),
            "{e}"
        );
    }

    #[test]
    fn garbage_and_wrong_shapes_are_rejected() {
        assert!(matches!(
            Manifest::decode(b"", "t"),
            Err(Error::BadManifest { .. })
        ));
        assert!(matches!(
            Manifest::decode(&[0xa0], "t"),
            Err(Error::BadManifest { .. })
        ));
        let (mut m, _, _) = sample(1);
        m.chunks[0].shards.pop();
        let (_, bytes) = m.encode();
        let e = Manifest::decode(&bytes, "t").unwrap_err();
        assert!(e.to_string().contains("lists 4 shards"), "{e}");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes, "fuzz");
        }

        #[test]
        fn round_trip_any_size(n in 0usize..40) {
            let (m, p, key) = sample(n);
            let (cid, bytes) = m.encode();
            let d = Manifest::decode(&bytes, "t").unwrap();
            prop_assert_eq!(d.open(&cid, &key).unwrap(), p);
        }
    }
}
