//! The publish and read pipelines.
//!
//! Publish: files are read in path order and cut into chunks; a window of [`WINDOW_CHUNKS`]
//! chunks is sealed and erasure-coded in parallel and handed to the [`ShardSink`] while the next
//! window is read, so memory stays bounded by two windows whatever the artifact's size.
//!
//! Read: chunks are fetched through a [`ShardSource`], which returns at least `k` shards that
//! already match their CIDs; the chunk is rebuilt, opened (AES-GCM authenticates it) and its
//! plaintext hash checked before a single byte is written out.

use std::fs::File;
use std::io::{BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cairn_encryption::{
    ArtifactKey, ChunkKey, ConvergenceSecret, open_chunk_in_place, seal_chunk_in_place,
};
use cairn_erasure::{Codec, Params};
use rayon::prelude::*;
use serde_bytes::ByteBuf;

use crate::manifest::{ChunkEntry, ChunkSecret, FileEntry, PrivatePart};
use crate::{Chunker, Cid, Error, Manifest, ReadCap, validate_path};

/// Chunks processed together: with 1 MiB average chunks two windows in flight hold about 40 MiB
/// (plaintext, sealed copy and shards); with every chunk at the 4 MiB maximum, about 160 MiB.
pub const WINDOW_CHUNKS: usize = 8;

/// How chunk keys are made.
#[derive(Clone, Debug)]
pub enum KeyMode {
    /// Convergent keys under the publisher's secret: the publisher's versions dedup.
    Convergent(ConvergenceSecret),
    /// A fresh random key per chunk: nothing dedups, nothing can be confirmed.
    Random,
}

/// Options of [`encode_artifact`].
#[derive(Clone, Debug)]
pub struct AddOptions {
    /// Erasure parameters.
    pub params: Params,
    /// Chunk key derivation.
    pub key_mode: KeyMode,
    /// Optional artifact name, stored in the private part.
    pub name: Option<String>,
}

/// One chunk after sealing and coding.
#[derive(Debug)]
pub struct EncodedChunk {
    /// Index of the chunk in the manifest.
    pub index: usize,
    /// Length of the sealed chunk.
    pub sealed_len: u64,
    /// The `n` shards with their CIDs, data shards first.
    pub shards: Vec<(Cid, Vec<u8>)>,
    /// The bao outboard of each shard, same order. Computing it is how the CID was computed
    /// (its root is the BLAKE3 hash), so a local store can keep it without hashing again.
    pub outboards: Vec<Vec<u8>>,
}

/// Where the publish pipeline puts shards: the local store, or holders on the network.
pub trait ShardSink: Sync {
    /// Stores every shard of a window of chunks. A sink may return before they are durable (to
    /// overlap the network with coding), as long as [`ShardSink::finish`] waits for them and an
    /// error surfaces from a later call.
    fn put_window(&self, chunks: Vec<EncodedChunk>) -> Result<(), Error>;

    /// Waits until every shard handed over is durable; the first error of any window.
    fn finish(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Where the read pipeline gets shards.
pub trait ShardSource: Sync {
    /// Returns `n` slots with at least `k` shards present, each already checked against its CID,
    /// or [`Error::ShardsUnavailable`] naming the shards that could not be had.
    fn fetch(
        &self,
        artifact: &Cid,
        index: usize,
        chunk: &ChunkEntry,
        params: Params,
    ) -> Result<Vec<Option<Vec<u8>>>, Error>;

    /// Fetches the shards of a window of chunks, one result per chunk in order. The default asks
    /// [`ShardSource::fetch`] for each chunk in parallel on the rayon pool; a network source
    /// overrides it to have every chunk of the window in flight at once, which a pool with one
    /// thread per core cannot do while its threads wait on the network.
    fn fetch_window(
        &self,
        artifact: &Cid,
        params: Params,
        chunks: &[(usize, &ChunkEntry)],
    ) -> Vec<Result<Vec<Option<Vec<u8>>>, Error>> {
        chunks
            .par_iter()
            .map(|(i, c)| self.fetch(artifact, *i, c, params))
            .collect()
    }
}

/// Fetches a chunk's shards one by one through `get`, data shards first (so no decoding is
/// needed when they are all good), then parity shards until `k` verified shards are in hand.
/// `get` must return bytes matching the CID or an error; the bytes are checked again here.
pub fn fetch_data_first(
    artifact: &Cid,
    index: usize,
    chunk: &ChunkEntry,
    params: Params,
    get: impl Fn(&Cid) -> Result<Vec<u8>, Error>,
) -> Result<Vec<Option<Vec<u8>>>, Error> {
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; params.n()];
    let mut present = 0;
    let mut missing = Vec::new();
    for (i, cid) in chunk.shards.iter().enumerate() {
        if present == params.k() {
            break;
        }
        match get(cid).and_then(|b| crate::verify_shard(cid, &b).map(|_| b)) {
            Ok(b) => {
                slots[i] = Some(b);
                present += 1;
            }
            Err(e) => missing.push((*cid, short_reason(&e))),
        }
    }
    if present < params.k() {
        return Err(Error::ShardsUnavailable {
            artifact: *artifact,
            chunk: index,
            present,
            k: params.k(),
            missing,
        });
    }
    Ok(slots)
}

fn short_reason(e: &Error) -> String {
    match e {
        Error::ShardNotFound(_) => "not held".into(),
        Error::Corrupted { reason, .. } => format!("corrupted: {reason}"),
        other => other.to_string(),
    }
}

struct InputFile {
    rel: String,
    path: PathBuf,
    size: u64,
}

fn bad_input(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Lists the regular files under `root` (or `root` itself), sorted by relative path.
fn list_inputs(root: &Path) -> Result<Vec<InputFile>, Error> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| bad_input(root, e.to_string()))?;
    let mut out = Vec::new();
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad_input(root, "the file name is not UTF-8"))?;
        out.push(InputFile {
            rel: name.to_string(),
            path: root.to_path_buf(),
            size: meta.len(),
        });
        return Ok(out);
    }
    if !meta.is_dir() {
        return Err(bad_input(root, "not a regular file or directory"));
    }
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| bad_input(&dir, e.to_string()))?;
        for entry in rd {
            let entry = entry.map_err(|e| bad_input(&dir, e.to_string()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| bad_input(&path, "the file name is not UTF-8"))?;
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let ft = entry
                .file_type()
                .map_err(|e| bad_input(&path, e.to_string()))?;
            if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                let size = entry
                    .metadata()
                    .map_err(|e| bad_input(&path, e.to_string()))?
                    .len();
                validate_path(&rel).map_err(|e| bad_input(&path, e))?;
                out.push(InputFile { rel, path, size });
            } else {
                return Err(bad_input(
                    &path,
                    "symbolic links and special files are not supported; copy the target in instead",
                ));
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

struct Plain {
    data: Vec<u8>,
}

struct Sealed {
    chunk: EncodedChunk,
    secret: ChunkSecret,
}

fn seal_and_code(index: usize, plain: Plain, mode: &KeyMode, codec: &Codec) -> Sealed {
    let hash = *blake3::hash(&plain.data).as_bytes();
    let key = match mode {
        KeyMode::Convergent(s) => ChunkKey::convergent(s, &hash),
        KeyMode::Random => ChunkKey::random(),
    };
    let len = plain.data.len() as u64;
    let mut buf = plain.data;
    seal_chunk_in_place(&key, &mut buf);
    let sealed_len = buf.len() as u64;
    // One BLAKE3 pass per shard gives both its CID (the root) and its outboard.
    let (shards, outboards) = codec
        .encode(&buf)
        .into_iter()
        .map(|s| {
            let (root, outboard) = crate::bao::outboard(&s);
            ((crate::ids::shard_cid_from_hash(&root), s), outboard)
        })
        .unzip();
    Sealed {
        chunk: EncodedChunk {
            index,
            sealed_len,
            shards,
            outboards,
        },
        secret: ChunkSecret {
            key: ByteBuf::from(key.as_bytes().to_vec()),
            hash: ByteBuf::from(hash.to_vec()),
            len,
        },
    }
}

/// Reads up to `WINDOW_CHUNKS` chunks, moving to the next file as each ends.
struct Reader<'a> {
    files: &'a [InputFile],
    file: usize,
    chunker: Option<Chunker<BufReader<File>>>,
    /// Chunks produced by each file so far (its `chunk_count`).
    counts: Vec<u64>,
    /// Bytes read per file, checked against the size seen at listing time.
    read: Vec<u64>,
}

impl Reader<'_> {
    fn next_window(&mut self) -> Result<Vec<(usize, Plain)>, Error> {
        let mut out = Vec::with_capacity(WINDOW_CHUNKS);
        while out.len() < WINDOW_CHUNKS && self.file < self.files.len() {
            let f = &self.files[self.file];
            if self.chunker.is_none() {
                let h = File::open(&f.path).map_err(|e| bad_input(&f.path, e.to_string()))?;
                self.chunker = Some(Chunker::new(BufReader::with_capacity(1 << 20, h)));
            }
            match self.chunker.as_mut().expect("set above").next() {
                Some(Ok(data)) => {
                    self.counts[self.file] += 1;
                    self.read[self.file] += data.len() as u64;
                    out.push((self.file, Plain { data }));
                }
                Some(Err(e)) => return Err(bad_input(&f.path, e.to_string())),
                None => {
                    if self.read[self.file] != f.size {
                        return Err(bad_input(
                            &f.path,
                            "the file changed size while it was being added; add it again",
                        ));
                    }
                    self.chunker = None;
                    self.file += 1;
                }
            }
        }
        Ok(out)
    }
}

/// Publishes `root` (a file or a directory): chunks, seals and codes it, gives every shard to
/// `sink`, and returns the manifest (not yet stored anywhere) with the read capability.
/// `progress` is called with the plaintext bytes done after each window.
pub fn encode_artifact(
    root: &Path,
    opts: &AddOptions,
    sink: &dyn ShardSink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Manifest, ReadCap), Error> {
    let files = list_inputs(root)?;
    let codec = Codec::new(opts.params);
    let mut reader = Reader {
        files: &files,
        file: 0,
        chunker: None,
        counts: vec![0; files.len()],
        read: vec![0; files.len()],
    };
    let mut entries = Vec::new();
    let mut secrets = Vec::new();
    let mut done = 0u64;
    let mut window = reader.next_window()?;
    while !window.is_empty() {
        let base = entries.len();
        // Seal, code and store this window while the next one is read from disk.
        let (stored, next) = rayon::join(
            || -> Result<Vec<(ChunkEntry, ChunkSecret)>, Error> {
                let sealed: Vec<Sealed> = window
                    .into_par_iter()
                    .enumerate()
                    .map(|(i, (_, p))| seal_and_code(base + i, p, &opts.key_mode, &codec))
                    .collect();
                let meta = sealed
                    .iter()
                    .map(|s| {
                        let entry = ChunkEntry {
                            sealed_len: s.chunk.sealed_len,
                            shards: s.chunk.shards.iter().map(|(c, _)| *c).collect(),
                        };
                        (entry, s.secret.clone())
                    })
                    .collect();
                sink.put_window(sealed.into_iter().map(|s| s.chunk).collect())?;
                Ok(meta)
            },
            || reader.next_window(),
        );
        for (entry, secret) in stored? {
            done += secret.len;
            entries.push(entry);
            secrets.push(secret);
        }
        progress(done);
        window = next?;
    }
    let mut first = 0u64;
    let file_entries = files
        .iter()
        .zip(&reader.counts)
        .map(|(f, &count)| {
            let e = FileEntry {
                path: f.rel.clone(),
                size: f.size,
                first_chunk: first,
                chunk_count: count,
            };
            first += count;
            e
        })
        .collect();
    sink.finish()?;
    let private = PrivatePart {
        format: 1,
        name: opts.name.clone(),
        files: file_entries,
        chunks: secrets,
    };
    let key = ArtifactKey::random();
    let manifest = Manifest::seal(opts.params, entries, &private, &key);
    let (cid, _) = manifest.encode();
    Ok((manifest, ReadCap { cid, key }))
}

/// An artifact opened for reading: its manifest and the private part its key opened.
#[derive(Clone, Copy)]
pub struct Artifact<'a> {
    /// The manifest CID.
    pub cid: Cid,
    /// The decoded manifest.
    pub manifest: &'a Manifest,
    /// The opened private part.
    pub private: &'a PrivatePart,
}

/// Chunks fetched and opened, each with its offset in the file.
type Window = Vec<(Bytes, u64)>;

/// Rebuilds, opens and checks one chunk from its shard slots.
fn chunk_plain(
    o: &Artifact<'_>,
    codec: &Codec,
    index: usize,
    slots: Vec<Option<Vec<u8>>>,
) -> Result<Vec<u8>, Error> {
    let entry = &o.manifest.chunks()[index];
    let mut sealed = codec.decode(slots, entry.sealed_len as usize)?;
    open_chunk_in_place(&o.private.chunk_key(index), &mut sealed).map_err(|source| {
        Error::Crypto {
            artifact: o.cid,
            source,
        }
    })?;
    let secret = &o.private.chunks[index];
    if blake3::hash(&sealed).as_bytes().as_slice() != secret.hash.as_slice() {
        return Err(Error::BadManifest {
            what: format!("{} chunk {index}", o.cid),
            reason: "plaintext hash mismatch".into(),
        });
    }
    Ok(sealed)
}

/// Opened chunks kept between reads, for a reader that serves many ranges of the same files (a
/// gateway). Keys are the artifact's CID and the chunk's index in its manifest; values are
/// plaintext that has already been rebuilt, authenticated and checked against its hash, so a hit
/// is as good as a fresh read. An implementation bounds its own size.
pub trait ChunkCache: Sync {
    /// The opened chunk `index` of `artifact`, if held.
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes>;
    /// Offers an opened chunk; the cache may keep it or not.
    fn insert(&self, artifact: &Cid, index: usize, plain: Bytes);
}

/// A [`ChunkCache`] that keeps nothing (one-shot reads: `cairn get`).
pub struct NoCache;

impl ChunkCache for NoCache {
    fn get(&self, _: &Cid, _: usize) -> Option<Bytes> {
        None
    }
    fn insert(&self, _: &Cid, _: usize, _: Bytes) {}
}

/// Writes bytes `range` of `file` to `out`, fetching, checking and opening chunks a window at a
/// time, in parallel, while the previous window is written.
pub fn read_file(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    file: &FileEntry,
    range: Range<u64>,
    out: &mut (dyn Write + Send),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), Error> {
    read_file_pieces(art, source, &NoCache, file, range, &mut |piece: Bytes| {
        out.write_all(&piece)?;
        progress(piece.len() as u64);
        Ok(())
    })
}

/// Hands bytes `range` of `file` to `emit`, in order, as pieces that share the opened chunks'
/// memory (no copy). Chunks are taken from `cache` when it holds them; the rest are fetched a
/// window at a time, in parallel, while the previous window is emitted, and offered to `cache`.
/// Nothing reaches `emit` that was not verified; an error may come after some pieces were
/// emitted, and the caller must then not present the output as complete.
pub fn read_file_pieces(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    cache: &dyn ChunkCache,
    file: &FileEntry,
    range: Range<u64>,
    emit: &mut (dyn FnMut(Bytes) -> std::io::Result<()> + Send),
) -> Result<(), Error> {
    let (o, manifest, private) = (art, art.manifest, art.private);
    let codec = Codec::new(manifest.params());
    let range = range.start.min(file.size)..range.end.min(file.size);
    // Find the chunks that cover the range.
    let first = file.first_chunk as usize;
    let chunks = first..first + file.chunk_count as usize;
    let mut offset = 0u64;
    let mut wanted = Vec::new();
    for i in chunks {
        let len = private.chunks[i].len;
        if offset < range.end && offset + len > range.start {
            wanted.push((i, offset));
        }
        offset += len;
    }
    let io_err = |e: std::io::Error| Error::Io {
        path: PathBuf::from(&file.path),
        source: e,
    };
    let mut pending: Option<Window> = None;
    let windows: Vec<&[(usize, u64)]> = wanted.chunks(WINDOW_CHUNKS).collect();
    for w in windows.iter().map(Some).chain(std::iter::once(None)) {
        let (fetched, written) = rayon::join(
            || -> Result<Option<Window>, Error> {
                let Some(w) = w else { return Ok(None) };
                let mut window: Vec<Option<Bytes>> =
                    w.iter().map(|&(i, _)| cache.get(&o.cid, i)).collect();
                let missing: Vec<usize> = (0..w.len()).filter(|&j| window[j].is_none()).collect();
                if !missing.is_empty() {
                    let asked: Vec<(usize, &ChunkEntry)> = missing
                        .iter()
                        .map(|&j| (w[j].0, &manifest.chunks()[w[j].0]))
                        .collect();
                    let fetched = source.fetch_window(&o.cid, manifest.params(), &asked);
                    let opened = asked
                        .par_iter()
                        .zip(fetched.into_par_iter())
                        .map(|(&(i, _), slots)| chunk_plain(o, &codec, i, slots?).map(Bytes::from))
                        .collect::<Result<Vec<_>, _>>()?;
                    for (j, plain) in missing.into_iter().zip(opened) {
                        cache.insert(&o.cid, w[j].0, plain.clone());
                        window[j] = Some(plain);
                    }
                }
                Ok(Some(
                    window
                        .into_iter()
                        .zip(w.iter())
                        .map(|(plain, &(_, off))| (plain.expect("every slot filled"), off))
                        .collect(),
                ))
            },
            || -> Result<(), Error> {
                if let Some(ready) = pending.take() {
                    for (plain, off) in ready {
                        let lo = range.start.max(off) - off;
                        let hi = range.end.min(off + plain.len() as u64) - off;
                        emit(plain.slice(lo as usize..hi as usize)).map_err(io_err)?;
                    }
                }
                Ok(())
            },
        );
        written?;
        pending = fetched?;
    }
    Ok(())
}

/// Writes every file of the artifact under `out_dir`. Each file is written to a temporary name
/// and renamed when complete and verified, so a failed read never leaves a file that looks whole.
pub fn read_artifact(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), Error> {
    for f in &art.private.files {
        let dst = out_dir.join(&f.path);
        let parent = dst
            .parent()
            .expect("validated relative paths have a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let tmp = parent.join(format!(
            ".{}.cairn-partial",
            dst.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp).map_err(Error::io(&tmp))?,
        );
        let res = read_file(art, source, f, 0..f.size, &mut w, progress)
            .and_then(|_| w.flush().map_err(Error::io(&tmp)));
        drop(w);
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dst).map_err(Error::io(&dst))?;
    }
    Ok(())
}
