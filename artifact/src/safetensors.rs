//! Tensor-level reads of safetensors files: the header read and checked, tensors selected by
//! name patterns, and what a reader must emit to produce a safetensors file of only those
//! tensors, so that the chunks fetched are the selected tensors' (and the header's), not the
//! whole file's.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON (per
//! tensor: `dtype`, `shape`, `data_offsets` `[begin, end)` relative to the data section; an
//! optional `__metadata__` map of strings; trailing spaces allowed), then the data section.
//!
//! Parsing and validation are the reference implementation's (the `safetensors` crate, which the
//! Python package is built on): [`SafetensorsHeader::parse`] hands the header bytes to its `Metadata`
//! deserializer, which checks that every dtype is known, that each tensor's shape and dtype
//! give exactly its byte length (without overflow), and that the offsets, sorted, run from 0
//! without gap or overlap; what the crate checks only against a whole file in memory (the last
//! offset is the end of the file) is checked here against the file's size, so no byte of the
//! data section is needed. The header length is bounded by [`SAFETENSORS_HEADER_LEN_MAX`], the reference's
//! own limit, before anything is read or allocated.
//!
//! Patterns ([`tensor_pattern_matches`]): `*` matches any run of characters (dots included, so
//! `layers.0.*` selects every tensor whose name starts with `layers.0.`), `?` any one
//! character, anything else itself; a name without `*` or `?` selects that tensor exactly.
//! Every pattern must select at least one tensor. The selection keeps the file's order.
//!
//! Everything here is pure; [`RecentChunks`] is the small cache a tensor read keeps so that a
//! chunk shared by the header and the first tensor, or by two tensors, is fetched once.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;

use ::safetensors::tensor::{Metadata, TensorInfo};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::{ChunkCache, Cid};

/// Bytes of the little-endian header length that opens a safetensors file.
pub const SAFETENSORS_LEN_PREFIX: u64 = 8;
/// Longest JSON header accepted: 100 MB, the reference implementation's limit (a header that
/// long describes millions of tensors; real ones are kilobytes to a few megabytes).
pub const SAFETENSORS_HEADER_LEN_MAX: u64 = 100_000_000;
/// Bytes read at first to find the header: its length and, for most files, all of it. A
/// chunk is at least 256 KiB, so this costs one chunk.
pub const SAFETENSORS_HEADER_PROBE: u64 = 64 * 1024;
/// Most patterns one selection may give.
pub const TENSOR_PATTERNS_MAX: usize = 256;
/// Longest pattern, in bytes.
pub const TENSOR_PATTERN_LEN_MAX: usize = 1024;

/// Why a file's header or a selection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// The file cannot hold the 8-byte header length.
    #[error(
        "not a safetensors file: {size} bytes, shorter than the {SAFETENSORS_LEN_PREFIX}-byte header length"
    )]
    TooShort {
        /// The file's size.
        size: u64,
    },
    /// The header length is over [`SAFETENSORS_HEADER_LEN_MAX`].
    #[error(
        "safetensors header length {len} is over the limit of {SAFETENSORS_HEADER_LEN_MAX} bytes (100 MB, the reference implementation's)"
    )]
    HeaderTooLarge {
        /// The length the file claims.
        len: u64,
    },
    /// The header would run past the end of the file.
    #[error("safetensors header of {len} bytes runs past the end of the {size}-byte file")]
    HeaderPastEnd {
        /// The length the file claims.
        len: u64,
        /// The file's size.
        size: u64,
    },
    /// The header is not valid JSON, or the reference implementation refuses its contents
    /// (unknown dtype, shape and dtype that do not give the tensor's byte length, offsets out of
    /// order, overlapping or leaving a gap, `__metadata__` not a map of strings).
    #[error("safetensors header is invalid: {0}")]
    BadHeader(String),
    /// The tensors do not cover the data section exactly (they end before it does, or past the
    /// end of the file).
    #[error(
        "safetensors tensors cover {covered} bytes but the data section after the header is {data} bytes"
    )]
    DataMismatch {
        /// Bytes the tensors' offsets cover.
        covered: u64,
        /// Bytes from the end of the header to the end of the file.
        data: u64,
    },
    /// No pattern was given.
    #[error("no tensor pattern given: name tensors or patterns such as `layers.0.*`")]
    NoPatterns,
    /// More patterns than [`TENSOR_PATTERNS_MAX`].
    #[error("{count} tensor patterns given, over the limit of {TENSOR_PATTERNS_MAX}")]
    TooManyPatterns {
        /// How many were given.
        count: usize,
    },
    /// A pattern is empty or longer than [`TENSOR_PATTERN_LEN_MAX`].
    #[error("tensor pattern {pattern:?} is {reason}")]
    BadPattern {
        /// The pattern (clipped).
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pattern selects no tensor of the file.
    #[error("tensor pattern {0:?} selects no tensor of the file")]
    NoMatch(String),
}

/// The header length `n` from the first bytes of a file of `size` bytes (`prefix` holds at
/// least [`SAFETENSORS_LEN_PREFIX`] bytes, or the whole file when it is shorter), checked against
/// [`SAFETENSORS_HEADER_LEN_MAX`] and the file's size.
pub fn safetensors_header_len(prefix: &[u8], size: u64) -> Result<u64, TensorError> {
    let Some(bytes) = prefix.get(..SAFETENSORS_LEN_PREFIX as usize) else {
        return Err(TensorError::TooShort { size });
    };
    let len = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
    if len > SAFETENSORS_HEADER_LEN_MAX {
        return Err(TensorError::HeaderTooLarge { len });
    }
    if SAFETENSORS_LEN_PREFIX + len > size {
        return Err(TensorError::HeaderPastEnd { len, size });
    }
    Ok(len)
}

/// Reads and parses the header of a safetensors file of `size` bytes through `read`, which
/// returns exactly the bytes of the range it is given: first [`SAFETENSORS_HEADER_PROBE`] bytes (or the
/// whole file when shorter), then, for a longer header, the rest of it. Never asks for more
/// than the header's bytes, so never more than [`SAFETENSORS_HEADER_LEN_MAX`] + [`SAFETENSORS_LEN_PREFIX`].
pub fn read_safetensors_header<E: From<TensorError>>(
    size: u64,
    read: &mut dyn FnMut(Range<u64>) -> Result<Vec<u8>, E>,
) -> Result<SafetensorsHeader, E> {
    if size < SAFETENSORS_LEN_PREFIX {
        return Err(TensorError::TooShort { size }.into());
    }
    let probe = size.min(SAFETENSORS_HEADER_PROBE.max(SAFETENSORS_LEN_PREFIX));
    let mut head = read(0..probe)?;
    assert_eq!(head.len() as u64, probe, "read returns the range asked");
    let len = safetensors_header_len(&head, size)?;
    let end = SAFETENSORS_LEN_PREFIX + len;
    if end > probe {
        let rest = read(probe..end)?;
        assert_eq!(
            rest.len() as u64,
            end - probe,
            "read returns the range asked"
        );
        head.extend_from_slice(&rest);
    }
    Ok(SafetensorsHeader::parse(
        &head[SAFETENSORS_LEN_PREFIX as usize..end as usize],
        size,
    )?)
}

/// A parsed and validated safetensors header, with the size of its file.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    metadata: Metadata,
    /// The JSON header's length.
    len: u64,
}

impl SafetensorsHeader {
    /// Parses the JSON header `json` (the `n` bytes after the length) of a file of `size`
    /// bytes, and checks that its tensors cover the data section exactly.
    pub fn parse(json: &[u8], size: u64) -> Result<SafetensorsHeader, TensorError> {
        let len = json.len() as u64;
        if len > SAFETENSORS_HEADER_LEN_MAX {
            return Err(TensorError::HeaderTooLarge { len });
        }
        if SAFETENSORS_LEN_PREFIX + len > size {
            return Err(TensorError::HeaderPastEnd { len, size });
        }
        let metadata: Metadata =
            serde_json::from_slice(json).map_err(|e| TensorError::BadHeader(e.to_string()))?;
        let covered = metadata.data_len() as u64;
        let data = size - SAFETENSORS_LEN_PREFIX - len;
        if covered != data {
            return Err(TensorError::DataMismatch { covered, data });
        }
        Ok(SafetensorsHeader { metadata, len })
    }

    /// Where the data section starts in the file.
    pub fn data_start(&self) -> u64 {
        SAFETENSORS_LEN_PREFIX + self.len
    }

    /// The tensors' names, in the order of their data in the file.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The tensors `patterns` select (each must select one at least), and what a file of
    /// only those holds: its header (offsets rebased, `__metadata__` kept, padded with spaces to
    /// a multiple of 8 bytes) and the ranges of this file to copy after it, in order.
    pub fn select<S: AsRef<str>>(&self, patterns: &[S]) -> Result<TensorSelection, TensorError> {
        check_tensor_patterns(patterns)?;
        let pats: Vec<Vec<char>> = patterns
            .iter()
            .map(|p| p.as_ref().chars().collect())
            .collect();
        let mut used = vec![false; pats.len()];
        let mut tensors = Vec::new();
        let mut name_chars = Vec::new();
        for name in self.metadata.offset_keys() {
            name_chars.clear();
            name_chars.extend(name.chars());
            let mut hit = false;
            for (p, u) in pats.iter().zip(used.iter_mut()) {
                if glob_chars(p, &name_chars) {
                    *u = true;
                    hit = true;
                }
            }
            if hit {
                tensors.push(name);
            }
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(TensorError::NoMatch(clip(patterns[i].as_ref())));
        }
        let mut out = Map::new();
        if let Some(meta) = self.metadata.metadata() {
            // Sorted, so the same selection always gives the same bytes.
            let sorted: BTreeMap<&String, &String> = meta.iter().collect();
            out.insert(
                "__metadata__".into(),
                serde_json::to_value(sorted).expect("a map of strings is JSON"),
            );
        }
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut at = 0u64;
        let base = self.data_start();
        for name in &tensors {
            let info = self.metadata.info(name).expect("a name of this header");
            let (b, e) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
            let rebased = TensorInfo {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data_offsets: (at as usize, (at + e - b) as usize),
            };
            out.insert(
                name.clone(),
                serde_json::to_value(&rebased).expect("tensor info is JSON"),
            );
            at += e - b;
            if b == e {
                continue;
            }
            match ranges.last_mut() {
                // Neighbours in the file are one read.
                Some(last) if last.end == base + b => last.end = base + e,
                _ => ranges.push(base + b..base + e),
            }
        }
        let mut json = serde_json::to_vec(&Value::Object(out)).expect("a JSON value serializes");
        json.resize(
            json.len().next_multiple_of(SAFETENSORS_LEN_PREFIX as usize),
            b' ',
        );
        let mut header = Vec::with_capacity(SAFETENSORS_LEN_PREFIX as usize + json.len());
        header.extend_from_slice(&(json.len() as u64).to_le_bytes());
        header.extend_from_slice(&json);
        Ok(TensorSelection {
            header,
            ranges,
            tensors,
        })
    }
}

/// What a reader emits to write a safetensors file of the selected tensors: [`header`] then,
/// in order, the bytes of each of [`ranges`] of the source file.
///
/// [`header`]: TensorSelection::header
/// [`ranges`]: TensorSelection::ranges
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSelection {
    /// The new file's header: its length (8 bytes, little-endian) and the JSON.
    pub header: Vec<u8>,
    /// Ranges of the source file to copy after the header, ascending and disjoint.
    pub ranges: Vec<Range<u64>>,
    /// The selected tensors' names, in the file's order.
    pub tensors: Vec<String>,
}

impl TensorSelection {
    /// The new file's size.
    pub fn len(&self) -> u64 {
        self.header.len() as u64 + self.ranges.iter().map(|r| r.end - r.start).sum::<u64>()
    }

    /// Whether the new file is empty (never: it has a header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks a list of patterns before anything is fetched: one at least, at most
/// [`TENSOR_PATTERNS_MAX`], none empty or longer than [`TENSOR_PATTERN_LEN_MAX`].
pub fn check_tensor_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<(), TensorError> {
    if patterns.is_empty() {
        return Err(TensorError::NoPatterns);
    }
    if patterns.len() > TENSOR_PATTERNS_MAX {
        return Err(TensorError::TooManyPatterns {
            count: patterns.len(),
        });
    }
    for p in patterns {
        let p = p.as_ref();
        if p.is_empty() {
            return Err(TensorError::BadPattern {
                pattern: String::new(),
                reason: "empty".into(),
            });
        }
        if p.len() > TENSOR_PATTERN_LEN_MAX {
            return Err(TensorError::BadPattern {
                pattern: clip(p),
                reason: format!("longer than {TENSOR_PATTERN_LEN_MAX} bytes"),
            });
        }
    }
    Ok(())
}

/// The first 100 characters of a pattern, for an error message.
fn clip(p: &str) -> String {
    p.chars().take(100).collect()
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` any one, anything else
/// itself. Linear in the name for patterns with one `*`, and at worst the product of the two
/// lengths (the last `*` is the only one ever retried).
pub fn tensor_pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    glob_chars(&p, &s)
}

fn glob_chars(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // The last `*` seen and where in the name its match started.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            // Let the last `*` take one more character and try again after it.
            star = Some((sp, ss + 1));
            pi = sp + 1;
            si = ss + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Opened chunks a tensor read keeps: the [`RecentChunks::KEPT`] furthest into the file of
/// those it opened. A tensor read goes forward through one file, and each range starts where
/// or after the previous one ended, so a chunk two ranges share is the furthest one opened for
/// the first and is taken from memory instead of being fetched again (the furthest, not the
/// last: a window's chunks are opened in parallel and offered in any order). Looks into
/// `inner` (a view of a gateway's shared cache, or [`NoCache`](crate::NoCache)) for the
/// others and offers it every chunk opened.
pub struct RecentChunks<C> {
    inner: C,
    kept: Mutex<VecDeque<(Cid, usize, Bytes)>>,
}

impl<C: ChunkCache> RecentChunks<C> {
    /// Chunks kept: at most 2 × [`CHUNK_MAX`](crate::CHUNK_MAX) bytes of memory.
    pub const KEPT: usize = 2;

    /// A cache in front of `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            kept: Mutex::new(VecDeque::with_capacity(Self::KEPT + 1)),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<(Cid, usize, Bytes)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C: ChunkCache> ChunkCache for RecentChunks<C> {
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes> {
        let kept = self
            .kept()
            .iter()
            .find(|(c, i, _)| c == artifact && *i == index)
            .map(|(_, _, b)| b.clone());
        kept.or_else(|| self.inner.get(artifact, index))
    }

    fn insert(&self, artifact: &Cid, index: usize, plain: Bytes) {
        {
            let mut kept = self.kept();
            kept.retain(|(c, i, _)| !(c == artifact && *i == index));
            kept.push_back((*artifact, index, plain.clone()));
            if kept.len() > Self::KEPT {
                let nearest = (0..kept.len())
                    .min_by_key(|&j| kept[j].1)
                    .expect("more than KEPT entries");
                kept.remove(nearest);
            }
        }
        self.inner.insert(artifact, index, plain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A safetensors file: header from `json` (as given, unpadded) and `data`.
    fn file(json: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (json.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(json.as_bytes());
        f.extend_from_slice(data);
        f
    }

    fn parse_file(f: &[u8]) -> Result<SafetensorsHeader, TensorError> {
        read_safetensors_header::<TensorError>(f.len() as u64, &mut |r: Range<u64>| {
            Ok(f[r.start as usize..r.end as usize].to_vec())
        })
    }

    /// Builds the selected file from `f` the way a reader does.
    fn assemble(f: &[u8], sel: &TensorSelection) -> Vec<u8> {
        let mut out = sel.header.clone();
        for r in &sel.ranges {
            out.extend_from_slice(&f[r.start as usize..r.end as usize]);
        }
        assert_eq!(out.len() as u64, sel.len());
        out
    }

    /// Four tensors, out of order in the JSON, with metadata.
    fn sample() -> Vec<u8> {
        let json = r#"{"layers.1.w":{"dtype":"F32","shape":[2,2],"data_offsets":[24,40]},
            "__metadata__":{"format":"pt","b":"2"},
            "layers.0.w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
            "layers.0.b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]},
            "embed":{"dtype":"U8","shape":[3],"data_offsets":[40,43]}}"#;
        let data: Vec<u8> = (0..43u8).collect();
        file(json, &data)
    }

    #[test]
    fn selects_by_pattern_in_file_order_and_rebases() {
        let f = sample();
        let h = parse_file(&f).unwrap();
        assert_eq!(
            h.names(),
            ["layers.0.w", "layers.0.b", "layers.1.w", "embed"]
        );
        let sel = h.select(&["layers.0.*"]).unwrap();
        assert_eq!(sel.tensors, ["layers.0.w", "layers.0.b"]);
        // Neighbours are one range.
        let base = h.data_start();
        assert_eq!(sel.ranges, vec![base..base + 24]);
        assert_eq!(sel.header.len() % 8, 0);
        let out = assemble(&f, &sel);
        // The result is a valid file by the reference's own check of a whole file.
        let st = ::safetensors::SafeTensors::deserialize(&out).unwrap();
        assert_eq!(
            st.tensor("layers.0.b").unwrap().data(),
            &f[(base + 16) as usize..(base + 24) as usize]
        );
        assert_eq!(
            ::safetensors::SafeTensors::read_metadata(&out)
                .unwrap()
                .1
                .metadata()
                .as_ref()
                .unwrap()
                .get("format")
                .map(String::as_str),
            Some("pt")
        );

        // Exact names and `?`, not adjacent: two ranges, rebased offsets.
        let sel = h.select(&["embed", "layers.?.w"]).unwrap();
        assert_eq!(sel.tensors, ["layers.0.w", "layers.1.w", "embed"]);
        assert_eq!(sel.ranges, [base..base + 16, base + 24..base + 43]);
        let out = assemble(&f, &sel);
        let st = ::safetensors::SafeTensors::deserialize(&out).unwrap();
        assert_eq!(st.tensor("embed").unwrap().data(), &[40, 41, 42]);
        assert_eq!(
            ::safetensors::SafeTensors::read_metadata(&out)
                .unwrap()
                .1
                .info("layers.1.w")
                .unwrap()
                .data_offsets,
            (16, 32)
        );
        // The same selection gives the same bytes.
        assert_eq!(h.select(&["embed", "layers.?.w"]).unwrap(), sel);
        // `*` selects everything: the file's data section, whole.
        let all = h.select(&["*"]).unwrap();
        assert_eq!(all.ranges, vec![base..f.len() as u64]);
    }

    #[test]
    fn a_pattern_that_selects_nothing_is_named() {
        let h = parse_file(&sample()).unwrap();
        assert_eq!(
            h.select(&["embed", "layers.9.*"]).unwrap_err(),
            TensorError::NoMatch("layers.9.*".into())
        );
        // Exact names are exact.
        assert!(matches!(
            h.select(&["layers.0"]),
            Err(TensorError::NoMatch(_))
        ));
        assert_eq!(h.select::<&str>(&[]).unwrap_err(), TensorError::NoPatterns);
        assert!(matches!(
            h.select(&[""]),
            Err(TensorError::BadPattern { .. })
        ));
        let long = "x".repeat(TENSOR_PATTERN_LEN_MAX + 1);
        let e = h.select(&[long.as_str()]).unwrap_err();
        assert!(e.to_string().contains("longer than 1024 bytes"), "{e}");
        let many = vec!["*"; TENSOR_PATTERNS_MAX + 1];
        assert!(matches!(
            h.select(&many),
            Err(TensorError::TooManyPatterns { count: 257 })
        ));
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        let t = r#""t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "shorter than the 8-byte"),
            (vec![1, 0, 0], "shorter than the 8-byte"),
            // Over the limit (the reference implementation's), before any allocation.
            (
                (SAFETENSORS_HEADER_LEN_MAX + 1).to_le_bytes().to_vec(),
                "over the limit of 100000000 bytes",
            ),
            (u64::MAX.to_le_bytes().to_vec(), "over the limit"),
            // Longer than the file.
            (
                {
                    let mut f = 100u64.to_le_bytes().to_vec();
                    f.extend_from_slice(b"{}");
                    f
                },
                "runs past the end of the 10-byte file",
            ),
            (file("{not json", &[]), "key must be a string"),
            (file("[]", &[]), "invalid type: sequence"),
            (
                file(&format!("{{{t}}}\u{0}"), &[0; 8]),
                "trailing characters",
            ),
            // Unknown dtype.
            (
                file(
                    r#"{"t":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
                    &[0; 16],
                ),
                "invalid",
            ),
            // Shape × dtype size differs from end - begin.
            (
                file(
                    r#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "invalid",
            ),
            // Shape product overflows.
            (
                file(
                    r#"{"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "overflow",
            ),
            // Overlapping offsets.
            (
                file(
                    &format!(r#"{{{t},"u":{{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}}}"#),
                    &[0; 12],
                ),
                "invalid offset",
            ),
            // A gap between tensors.
            (
                file(
                    &format!(r#"{{{t},"u":{{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}}}"#),
                    &[0; 16],
                ),
                "invalid offset",
            ),
            // Offsets past the end of the file.
            (
                file(&format!("{{{t}}}"), &[0; 4]),
                "cover 8 bytes but the data section after the header is 4",
            ),
            // Data past the last tensor.
            (
                file(&format!("{{{t}}}"), &[0; 9]),
                "cover 8 bytes but the data section after the header is 9",
            ),
            // Begin after end.
            (
                file(
                    r#"{"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
                    &[],
                ),
                "invalid offset",
            ),
            // `__metadata__` must be a map of strings.
            (
                file(&format!(r#"{{"__metadata__":{{"a":1}},{t}}}"#), &[0; 8]),
                "invalid",
            ),
            (
                file(&format!(r#"{{"__metadata__":"x",{t}}}"#), &[0; 8]),
                "invalid",
            ),
            // Deep nesting is an error, not a stack overflow.
            (
                file(
                    &format!(
                        r#"{{"__metadata__":{}{}}}"#,
                        "[".repeat(100_000),
                        "]".repeat(100_000)
                    ),
                    &[],
                ),
                "invalid",
            ),
        ];
        for (f, want) in cases {
            let e = parse_file(&f).unwrap_err();
            assert!(
                e.to_string().contains(want),
                "{:?}: {e} (wanted {want:?})",
                String::from_utf8_lossy(&f[..f.len().min(80)])
            );
        }
        // The same checks hold when the header is handed over as bytes.
        let big = vec![b' '; (SAFETENSORS_HEADER_LEN_MAX + 1) as usize];
        assert!(matches!(
            SafetensorsHeader::parse(&big, u64::MAX),
            Err(TensorError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn a_header_longer_than_the_probe_is_read_in_two_steps_and_never_past_its_end() {
        // Many tensors, so the header is longer than the first read.
        let mut entries = Vec::new();
        let n = 3000;
        for i in 0..n {
            entries.push(format!(
                r#""layers.{i}.w":{{"dtype":"U8","shape":[2],"data_offsets":[{},{}]}}"#,
                2 * i,
                2 * i + 2
            ));
        }
        let json = format!("{{{}}}", entries.join(","));
        assert!(json.len() as u64 > SAFETENSORS_HEADER_PROBE);
        let data: Vec<u8> = (0..2 * n).map(|i| i as u8).collect();
        let f = file(&json, &data);
        let mut asked = Vec::new();
        let h = read_safetensors_header::<TensorError>(f.len() as u64, &mut |r: Range<u64>| {
            asked.push(r.clone());
            Ok(f[r.start as usize..r.end as usize].to_vec())
        })
        .unwrap();
        let end = 8 + json.len() as u64;
        assert_eq!(
            asked,
            [0..SAFETENSORS_HEADER_PROBE, SAFETENSORS_HEADER_PROBE..end]
        );
        let sel = h.select(&["layers.2999.w", "layers.7.w"]).unwrap();
        let out = assemble(&f, &sel);
        let st = ::safetensors::SafeTensors::deserialize(&out).unwrap();
        assert_eq!(
            st.tensor("layers.2999.w").unwrap().data(),
            &[(5998 % 256) as u8, (5999 % 256) as u8]
        );
        // A file shorter than the probe is read once, whole.
        let f = sample();
        let mut asked = Vec::new();
        read_safetensors_header::<TensorError>(f.len() as u64, &mut |r: Range<u64>| {
            asked.push(r.clone());
            Ok(f[r.start as usize..r.end as usize].to_vec())
        })
        .unwrap();
        assert_eq!(asked, vec![0..f.len() as u64]);
    }

    #[test]
    fn empty_and_zero_sized_tensors() {
        // A file with no tensor and one whose only selected tensor holds no byte.
        let f = file("{}", &[]);
        let h = parse_file(&f).unwrap();
        assert!(matches!(h.select(&["*"]), Err(TensorError::NoMatch(_))));
        let f = file(
            r#"{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            &[9],
        );
        let h = parse_file(&f).unwrap();
        let sel = h.select(&["z"]).unwrap();
        assert!(sel.ranges.is_empty());
        let out = assemble(&f, &sel);
        let st = ::safetensors::SafeTensors::deserialize(&out).unwrap();
        assert_eq!(st.tensor("z").unwrap().shape(), &[0]);
    }

    #[test]
    fn recent_chunks_keep_the_two_furthest_and_offer_everything_inward() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl ChunkCache for Count {
            fn get(&self, _: &Cid, _: usize) -> Option<Bytes> {
                None
            }
            fn insert(&self, _: &Cid, _: usize, _: Bytes) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let c = RecentChunks::new(Count(Default::default()));
        let cid = crate::manifest_cid(b"x");
        // A window opened in parallel offers its chunks in any order.
        for i in [2, 3, 0, 1] {
            c.insert(&cid, i, Bytes::from(vec![i as u8]));
        }
        assert_eq!(c.inner.0.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert!(c.get(&cid, 0).is_none() && c.get(&cid, 1).is_none());
        assert_eq!(c.get(&cid, 3).unwrap()[..], [3]);
        assert_eq!(c.get(&cid, 2).unwrap()[..], [2]);
        assert!(c.get(&crate::manifest_cid(b"y"), 1).is_none());
    }

    /// The naive matcher: `*` tries every split.
    fn naive(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| naive(rest, &s[i..])),
            Some((&c, rest)) => !s.is_empty() && (c == '?' || c == s[0]) && naive(rest, &s[1..]),
        }
    }

    #[test]
    fn glob_examples() {
        assert!(tensor_pattern_matches(
            "layers.0.*",
            "layers.0.attn.q.weight"
        ));
        assert!(!tensor_pattern_matches("layers.0.*", "layers.10.attn"));
        assert!(tensor_pattern_matches("*", ""));
        assert!(tensor_pattern_matches("*.bias", "layers.3.mlp.bias"));
        assert!(tensor_pattern_matches("l?yers.*.w", "layers.12.w"));
        assert!(!tensor_pattern_matches("embed", "embed_tokens"));
        assert!(tensor_pattern_matches("ü*ß", "üxyzß"));
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_naive_matcher(p in "[ab*?.]{0,8}", s in "[ab.]{0,10}") {
            let (pc, sc): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
            prop_assert_eq!(tensor_pattern_matches(&p, &s), naive(&pc, &sc));
        }
    }
}
