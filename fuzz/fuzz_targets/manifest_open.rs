//! The private part of a manifest (file tree, chunk lengths and keys) is sealed by a publisher
//! who may be hostile: it authenticates under the artifact key, and is no more trustworthy for
//! that. `Manifest::open` must never panic (overflow checks are on here), and whatever it
//! accepts must hold every rule a reader relies on, checked here against a naive oracle in
//! 128-bit arithmetic: one secret per chunk, 32-byte keys and hashes, every plaintext length
//! plus the tag equal to its sealed length, file chunk ranges inside the chunk list and file
//! sizes equal to the sum of their chunks, valid sorted unique paths, no file also a directory.
//!
//! The target seals what it is given under a fixed key, so the fuzzer needs no key. Input: a
//! first byte that is even seals the rest as the private part's plaintext (which reaches the
//! DAG-CBOR decoder), with `(byte / 2) % 4` public chunks of sealed lengths 116, 117, ... (the
//! committed seeds are real private parts of such chunks); an odd one builds a private part
//! from fields (optionally made consistent, which reaches the later checks).
#![no_main]

use cairn_artifact::{
    ChunkEntry, ChunkSecret, FileEntry, Manifest, PrivatePart, shard_cid, validate_path,
};
use cairn_encryption::{ArtifactKey, TAG_LEN};
use cairn_erasure::Params;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_bytes::ByteBuf;

/// Chunks and files per input, at most: enough for every cross-check, small enough to be fast.
const ITEMS_MAX: usize = 24;

#[derive(Arbitrary, Debug)]
struct Chunk {
    sealed_len: u32,
    /// `None`: the honest `sealed_len - TAG_LEN`.
    len: Option<u64>,
    key_len: Option<u8>,
    hash_len: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct File {
    path: String,
    /// `None`: the (wrapping) sum of its chunks' lengths.
    size: Option<u64>,
    first_chunk: u64,
    chunk_count: u64,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Fields {
        format: Option<u32>,
        name: Option<String>,
        chunks: Vec<Chunk>,
        /// One secret more or fewer than chunks, when set.
        secrets_off_by: Option<bool>,
        files: Vec<File>,
        sort_files: bool,
    },
}

/// Public chunks of the raw mode: `(selector / 2) % 4` of them, sealed lengths 116, 117, ...
fn raw_public(selector: u8) -> Vec<ChunkEntry> {
    public((0..u64::from(selector / 2 % 4)).map(|i| 116 + i))
}

fn key() -> ArtifactKey {
    ArtifactKey::from_bytes([0x5a; 32])
}

fn public(sealed_lens: impl Iterator<Item = u64>) -> Vec<ChunkEntry> {
    sealed_lens
        .enumerate()
        .map(|(i, sealed_len)| ChunkEntry {
            sealed_len,
            shards: (0..Params::DEFAULT.n() as u8)
                .map(|j| shard_cid(&[i as u8, j]))
                .collect(),
        })
        .collect()
}

fn private(
    format: Option<u32>,
    name: Option<String>,
    chunks: &[Chunk],
    secrets_off_by: Option<bool>,
    files: Vec<File>,
    sort_files: bool,
) -> PrivatePart {
    let mut secrets: Vec<ChunkSecret> = chunks
        .iter()
        .map(|c| ChunkSecret {
            key: ByteBuf::from(vec![7; usize::from(c.key_len.unwrap_or(32))]),
            hash: ByteBuf::from(vec![9; usize::from(c.hash_len.unwrap_or(32))]),
            len: c
                .len
                .unwrap_or(u64::from(c.sealed_len).wrapping_sub(TAG_LEN as u64)),
        })
        .collect();
    match secrets_off_by {
        Some(true) => secrets.push(ChunkSecret {
            key: ByteBuf::from(vec![0; 32]),
            hash: ByteBuf::from(vec![0; 32]),
            len: 0,
        }),
        Some(false) => {
            secrets.pop();
        }
        None => {}
    }
    let mut files: Vec<FileEntry> = files
        .into_iter()
        .take(ITEMS_MAX)
        .map(|f| {
            let size = f.size.unwrap_or_else(|| {
                let first = usize::try_from(f.first_chunk).unwrap_or(usize::MAX);
                let count = usize::try_from(f.chunk_count).unwrap_or(usize::MAX);
                secrets
                    .iter()
                    .skip(first)
                    .take(count)
                    .fold(0u64, |s, c| s.wrapping_add(c.len))
            });
            FileEntry {
                path: f.path,
                size,
                first_chunk: f.first_chunk,
                chunk_count: f.chunk_count,
            }
        })
        .collect();
    if sort_files {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    PrivatePart {
        format: format.unwrap_or(1),
        name,
        files,
        chunks: secrets,
    }
}

/// Every rule a reader relies on, in arithmetic that cannot overflow.
fn check(manifest: &Manifest, p: &PrivatePart) {
    let public = manifest.chunks();
    assert_eq!(p.chunks.len(), public.len(), "one secret per chunk");
    for (i, (s, c)) in p.chunks.iter().zip(public).enumerate() {
        assert!(
            s.key.len() == 32 && s.hash.len() == 32,
            "chunk {i} key or hash"
        );
        assert_eq!(
            u128::from(s.len) + TAG_LEN as u128,
            u128::from(c.sealed_len),
            "chunk {i} length accepted against its sealed length"
        );
        // The reader's later arithmetic on lengths must not overflow either.
        assert!(s.len <= u64::MAX - TAG_LEN as u64);
    }
    for (n, f) in p.files.iter().enumerate() {
        assert!(validate_path(&f.path).is_ok(), "{:?} accepted", f.path);
        let end = u128::from(f.first_chunk) + u128::from(f.chunk_count);
        assert!(
            end <= p.chunks.len() as u128,
            "{:?} chunks past the end",
            f.path
        );
        let sum: u128 = p.chunks[f.first_chunk as usize..end as usize]
            .iter()
            .map(|c| u128::from(c.len))
            .sum();
        assert_eq!(
            sum,
            u128::from(f.size),
            "{:?} size against its chunks",
            f.path
        );
        if let Some(prev) = n.checked_sub(1) {
            assert!(p.files[prev].path < f.path, "files sorted and unique");
        }
        for other in &p.files {
            let inside = other
                .path
                .strip_prefix(f.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
            assert!(
                !inside,
                "{:?} is a file and a directory of {:?}",
                f.path, other.path
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let key = key();
    if selector % 2 == 0 {
        let sealed = cairn_encryption::seal_private(&key, rest);
        let m = Manifest::from_sealed(Params::DEFAULT, raw_public(selector), sealed);
        return open_and_check(&m, &key);
    }
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let manifest = match input {
        Input::Fields {
            format,
            name,
            chunks,
            secrets_off_by,
            files,
            sort_files,
        } => {
            let chunks = &chunks[..chunks.len().min(ITEMS_MAX)];
            let public = public(chunks.iter().map(|c| u64::from(c.sealed_len)));
            let p = private(format, name, chunks, secrets_off_by, files, sort_files);
            Manifest::seal(Params::DEFAULT, public, &p, &key)
        }
    };
    open_and_check(&manifest, &key);
});

fn open_and_check(manifest: &Manifest, key: &ArtifactKey) {
    // Through the wire form, as a reader gets it: what does not decode is the decoder's
    // business (the `manifest_decode` target).
    let (cid, bytes) = manifest.encode();
    let Ok(decoded) = Manifest::decode(&bytes, "fuzz input") else {
        return;
    };
    if let Ok(p) = decoded.open(&cid, key) {
        check(&decoded, &p);
    }
}
