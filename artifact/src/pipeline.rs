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
use std::io::Write;
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
use crate::stream::BoxFuture;
use crate::{Chunker, Cid, Error, Manifest, ReadCap, validate_path};

/// Chunks processed together. A publish holds at most four windows: one being read, one being
/// sealed and coded, [`SINK_QUEUED`] waiting for the sink and one being stored; with 1 MiB
/// average chunks about 70 MiB (plaintext, shards and outboards), with every chunk at the 4 MiB
/// maximum about 280 MiB.
pub const WINDOW_CHUNKS: usize = 8;
/// Windows coded and waiting for the sink while it stores the one before.
pub const SINK_QUEUED: usize = 1;
// Sealing a chunk in place appends the tag into the chunker's spare capacity.
const _: () = assert!(crate::CHUNK_SPARE >= cairn_encryption::TAG_LEN);

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
    /// Keys allowed to sign the artifact's holder records (32-byte ed25519 public keys, the
    /// publisher's first; at most [`RECORD_SIGNERS_MAX`](crate::RECORD_SIGNERS_MAX)), named
    /// in the manifest's public part. Empty for an artifact kept only in a local store.
    pub record_signers: Vec<[u8; 32]>,
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

/// A chunk's `n` shard slots, at least `k` of them filled (see [`ShardSource::fetch`]).
pub type ShardSlots = Vec<Option<Vec<u8>>>;

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
    ) -> Result<ShardSlots, Error>;

    /// Fetches the shards of a window of chunks, one result per chunk in order. The default asks
    /// [`ShardSource::fetch`] for each chunk in parallel on the rayon pool; a network source
    /// overrides it to have every chunk of the window in flight at once, which a pool with one
    /// thread per core cannot do while its threads wait on the network.
    fn fetch_window(
        &self,
        artifact: &Cid,
        params: Params,
        chunks: &[(usize, &ChunkEntry)],
    ) -> Vec<Result<ShardSlots, Error>> {
        chunks
            .par_iter()
            .map(|(i, c)| self.fetch(artifact, *i, c, params))
            .collect()
    }

    /// Fetches the shards of `chunks`, keeping about `in_flight` chunks in flight, and hands
    /// each result to `deliver` in order; stops when `deliver` returns false. The default
    /// fetches [`ShardSource::fetch_window`]s of `in_flight` chunks one after the other; a
    /// network source overrides it to keep the pipe full (a new chunk starts as soon as one
    /// ends, rather than when the slowest of a window ends).
    fn fetch_ordered(
        &self,
        artifact: &Cid,
        params: Params,
        chunks: &[(usize, &ChunkEntry)],
        in_flight: usize,
        deliver: &mut dyn FnMut(Result<ShardSlots, Error>) -> bool,
    ) {
        for w in chunks.chunks(in_flight.max(1)) {
            for r in self.fetch_window(artifact, params, w) {
                if !deliver(r) {
                    return;
                }
            }
        }
    }
}

/// Fetches a chunk's shards one by one through `get`, data shards first (so no decoding is
/// needed when they are all good), then parity shards until `k` verified shards are in hand.
/// `get` must return bytes it checked against the CID, or an error: they are not hashed again here
/// (a local store hashes every shard it reads; hashing twice cost a GET a fifth of its CPU).
pub fn fetch_data_first(
    artifact: &Cid,
    index: usize,
    chunk: &ChunkEntry,
    params: Params,
    get: impl Fn(&Cid) -> Result<Vec<u8>, Error>,
) -> Result<ShardSlots, Error> {
    let mut slots: ShardSlots = vec![None; params.n()];
    let mut present = 0;
    let mut missing = Vec::new();
    for (i, cid) in chunk.shards.iter().enumerate() {
        if present == params.k() {
            break;
        }
        match get(cid) {
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
    chunker: Option<Chunker<File>>,
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
                self.chunker = Some(Chunker::new(h));
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
    // Three stages overlap: the next window is read from disk while this one is sealed and coded
    // on the rayon pool, while the one before is handed to the sink on a thread of its own (for
    // a local store: written and synced; writing used to take two thirds of a first add's time,
    // with the cores idle). At most `SINK_QUEUED` windows wait for the sink.
    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<EncodedChunk>>(SINK_QUEUED);
        let writer = std::thread::Builder::new()
            .name("cairn-sink".into())
            .spawn_scoped(scope, move || -> Result<(), Error> {
                for window in rx {
                    sink.put_window(window)?;
                }
                Ok(())
            })
            .map_err(|e| Error::Io {
                path: PathBuf::from("<sink thread>"),
                source: e,
            })?;
        let fed = (|| -> Result<(), Error> {
            let mut window = reader.next_window()?;
            while !window.is_empty() {
                let base = entries.len();
                let (sealed, next) = rayon::join(
                    || -> Vec<Sealed> {
                        window
                            .into_par_iter()
                            .enumerate()
                            .map(|(i, (_, p))| seal_and_code(base + i, p, &opts.key_mode, &codec))
                            .collect()
                    },
                    || reader.next_window(),
                );
                let mut chunks = Vec::with_capacity(sealed.len());
                for s in sealed {
                    done += s.secret.len;
                    entries.push(ChunkEntry {
                        sealed_len: s.chunk.sealed_len,
                        shards: s.chunk.shards.iter().map(|(c, _)| *c).collect(),
                    });
                    secrets.push(s.secret);
                    chunks.push(s.chunk);
                }
                if tx.send(chunks).is_err() {
                    // The sink thread stopped on an error: it is returned below.
                    return Ok(());
                }
                progress(done);
                window = next?;
            }
            Ok(())
        })();
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The sink's error first: a failed write is why feeding stopped.
        written.and(fed)
    })?;
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
    let manifest = Manifest::seal(opts.params, entries, &private, &key)
        .with_record_signers(&opts.record_signers)?;
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

/// Rebuilds, opens and checks one chunk from its shard slots.
pub(crate) fn chunk_plain(
    o: &Artifact<'_>,
    codec: &Codec,
    index: usize,
    slots: ShardSlots,
) -> Result<Vec<u8>, Error> {
    ChunkOpener::new(o, index).open(codec, slots)
}

/// What opening one chunk needs, owned, so the work can move to the CPU pool.
pub(crate) struct ChunkOpener {
    cid: Cid,
    index: usize,
    sealed_len: usize,
    key: cairn_encryption::ChunkKey,
    hash: ByteBuf,
}

impl ChunkOpener {
    pub(crate) fn new(o: &Artifact<'_>, index: usize) -> Self {
        Self {
            cid: o.cid,
            index,
            sealed_len: o.manifest.chunks()[index].sealed_len as usize,
            key: o.private.chunk_key(index),
            hash: o.private.chunks[index].hash.clone(),
        }
    }

    /// Rebuilds the sealed chunk from `slots`, opens it and checks its plaintext hash.
    pub(crate) fn open(self, codec: &Codec, slots: ShardSlots) -> Result<Vec<u8>, Error> {
        let mut sealed = codec.decode(slots, self.sealed_len)?;
        open_chunk_in_place(&self.key, &mut sealed).map_err(|source| Error::Crypto {
            artifact: self.cid,
            source,
        })?;
        if blake3::hash(&sealed).as_bytes().as_slice() != self.hash.as_slice() {
            return Err(Error::BadManifest {
                what: format!("{} chunk {}", self.cid, self.index),
                reason: "plaintext hash mismatch".into(),
            });
        }
        Ok(sealed)
    }
}

/// Opened chunks kept between reads, for a reader that serves many ranges of the same files (a
/// gateway). Keys are the artifact's CID and the chunk's index in its manifest; values are
/// plaintext that has already been rebuilt, authenticated and checked against its hash, so a hit
/// is as good as a fresh read. An implementation bounds its own size.
///
/// A cache may also let concurrent readers share the work of opening a chunk: a reader that
/// [`claim`](ChunkCache::claim)s a chunk nobody holds is expected to open it and
/// [`insert`](ChunkCache::insert) it (or [`abandon`](ChunkCache::abandon) the claim), and
/// readers that find it claimed may [`wait`](ChunkCache::wait) for it instead of fetching it a
/// second time. Only the async read core ([`read_stream`](crate::read_stream)) claims, and it
/// waits only once its own claims are settled, so two readers can never wait for each other.
pub trait ChunkCache: Sync {
    /// The opened chunk `index` of `artifact`, if held.
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes>;
    /// Offers an opened chunk (settling a claim on it); the cache may keep it or not.
    fn insert(&self, artifact: &Cid, index: usize, plain: Bytes);
    /// Looks chunk `index` up, claiming it if nobody holds or opens it. The default never
    /// shares work: a hit, or [`Claim::Mine`].
    fn claim(&self, artifact: &Cid, index: usize) -> Claim {
        match self.get(artifact, index) {
            Some(plain) => Claim::Hit(plain),
            None => Claim::Mine,
        }
    }
    /// Waits (bounded in time: the implementation's timer) for a chunk another reader claimed;
    /// None if it gave up or time ran out, and the caller then opens the chunk itself. Async:
    /// a waiter holds no thread.
    fn wait(&self, _artifact: &Cid, _index: usize) -> BoxFuture<'static, Option<Bytes>> {
        Box::pin(std::future::ready(None))
    }
    /// Gives up a claim without a chunk (the read failed or stopped): waiters stop waiting.
    fn abandon(&self, _artifact: &Cid, _index: usize) {}
}

/// What [`ChunkCache::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// The chunk, opened.
    Hit(Bytes),
    /// Nobody holds it: the caller opens it, then inserts it or abandons the claim.
    Mine,
    /// Another reader is opening it: [`ChunkCache::wait`] for it.
    Theirs,
}

/// A [`ChunkCache`] that keeps nothing (one-shot reads: `cairn get`).
pub struct NoCache;

impl ChunkCache for NoCache {
    fn get(&self, _: &Cid, _: usize) -> Option<Bytes> {
        None
    }
    fn insert(&self, _: &Cid, _: usize, _: Bytes) {}
}

/// Clamps `range` to `file` and lists the chunks that cover it: (index in the manifest, offset
/// of the chunk in the file), in file order.
pub(crate) fn chunks_of_range(
    art: &Artifact<'_>,
    file: &FileEntry,
    range: Range<u64>,
) -> (Range<u64>, Vec<(usize, u64)>) {
    let range = range.start.min(file.size)..range.end.min(file.size);
    let first = file.first_chunk as usize;
    let mut offset = 0u64;
    let mut wanted = Vec::new();
    for i in first..first + file.chunk_count as usize {
        let len = art.private.chunks[i].len;
        if offset < range.end && offset + len > range.start {
            wanted.push((i, offset));
        }
        offset += len;
    }
    (range, wanted)
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

/// Chunks a multi-window read keeps in flight at the source. On the 2-core devnet 8 and 24
/// stream at the same rate (6 is slower); each chunk in flight holds about 1 MiB of shards.
pub const READ_IN_FLIGHT: usize = 8;
/// Chunks fetched and queued for the reader of a multi-window read.
pub const READ_QUEUED: usize = 4;

/// Hands bytes `range` of `file` to `emit`, in order, as pieces that share the opened chunks'
/// memory (no copy). Chunks are taken from `cache` when it holds them; the rest are fetched and
/// offered to `cache`. Nothing reaches `emit` that was not verified; an error may come after
/// some pieces were emitted, and the caller must then not present the output as complete.
///
/// A read of one window ([`WINDOW_CHUNKS`]) fetches it, opens its chunks in parallel and emits
/// them. A longer read runs as a pipeline: a fetcher thread keeps [`READ_IN_FLIGHT`] chunks in
/// flight at the source (mostly waiting on the network) and queues what arrives, in order, while
/// this thread takes up to a window of queued chunks at a time, rebuilds and opens them on the
/// rayon pool and emits them, so neither the network nor the CPU waits for the other. Held at
/// most: the chunks in flight, [`READ_QUEUED`] queued, a window being opened.
pub fn read_file_pieces(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    cache: &dyn ChunkCache,
    file: &FileEntry,
    range: Range<u64>,
    emit: &mut (dyn FnMut(Bytes) -> std::io::Result<()> + Send),
) -> Result<(), Error> {
    let (o, manifest) = (art, art.manifest);
    let codec = Codec::new(manifest.params());
    let (range, wanted) = chunks_of_range(art, file, range);

    let io_err = |e: std::io::Error| Error::Io {
        path: PathBuf::from(&file.path),
        source: e,
    };
    // Rebuilds and opens a run of chunks in parallel (those not open yet), then emits the part
    // of each that the range covers, in order.
    let mut open_and_emit = |run: Vec<Piece>| -> Result<(), Error> {
        let opened: Vec<(Bytes, u64)> = run
            .into_par_iter()
            .map(|(i, off, f)| match f {
                Fetched::Open(plain) => Ok((plain, off)),
                Fetched::Shards(slots) => {
                    let plain = Bytes::from(chunk_plain(o, &codec, i, slots?)?);
                    cache.insert(&o.cid, i, plain.clone());
                    Ok((plain, off))
                }
            })
            .collect::<Result<_, Error>>()?;
        for (plain, off) in opened {
            let lo = range.start.max(off) - off;
            let hi = range.end.min(off + plain.len() as u64) - off;
            emit(plain.slice(lo as usize..hi as usize)).map_err(io_err)?;
        }
        Ok(())
    };
    // Hands every wanted chunk to `put` in file order: cached ones as they are, the others as
    // the source delivers them. Stops when `put` returns false.
    let produce = |put: &mut dyn FnMut(Piece) -> bool| {
        // What the cache holds now; the rest is fetched.
        let cached: Vec<Option<Bytes>> =
            wanted.iter().map(|&(i, _)| cache.get(&o.cid, i)).collect();
        let asked: Vec<(usize, &ChunkEntry)> = wanted
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&(i, _), _)| (i, &manifest.chunks()[i]))
            .collect();
        let mut slots = cached.into_iter().zip(wanted.iter().copied());
        // Puts the cached chunks up to the next missing one, which it returns.
        let mut advance = |put: &mut dyn FnMut(Piece) -> bool| -> Step {
            for (c, (i, off)) in slots.by_ref() {
                let Some(plain) = c else {
                    return Step::Missing(i, off);
                };
                if !put((i, off, Fetched::Open(plain))) {
                    return Step::Stop;
                }
            }
            Step::End
        };
        let mut pending = match advance(put) {
            Step::Missing(i, off) => (i, off),
            Step::Stop | Step::End => return,
        };
        source.fetch_ordered(
            &o.cid,
            manifest.params(),
            &asked,
            READ_IN_FLIGHT,
            &mut |shards| {
                let (i, off) = pending;
                if !put((i, off, Fetched::Shards(shards))) {
                    return false;
                }
                match advance(put) {
                    Step::Missing(i, off) => {
                        pending = (i, off);
                        true
                    }
                    Step::Stop | Step::End => false,
                }
            },
        );
    };

    let total = wanted.len();
    if total <= WINDOW_CHUNKS {
        // One window (a typical ranged read): fetched at once, opened in parallel.
        let cached: Vec<Option<Bytes>> =
            wanted.iter().map(|&(i, _)| cache.get(&o.cid, i)).collect();
        let asked: Vec<(usize, &ChunkEntry)> = wanted
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&(i, _), _)| (i, &manifest.chunks()[i]))
            .collect();
        let mut fetched = source
            .fetch_window(&o.cid, manifest.params(), &asked)
            .into_iter();
        let run = wanted
            .iter()
            .zip(cached)
            .map(|(&(i, off), c)| match c {
                Some(plain) => (i, off, Fetched::Open(plain)),
                None => (
                    i,
                    off,
                    Fetched::Shards(fetched.next().expect("one result per chunk asked")),
                ),
            })
            .collect();
        return open_and_emit(run);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(READ_QUEUED);
        std::thread::Builder::new()
            .name("cairn-fetch".into())
            .spawn_scoped(scope, move || {
                // `send` fails once the reader has gone (an error, or the client left).
                produce(&mut |piece| tx.send(piece).is_ok());
            })
            .map_err(io_err)?;
        let mut done = 0;
        while let Ok(first) = rx.recv() {
            let mut run = vec![first];
            while run.len() < WINDOW_CHUNKS
                && let Ok(more) = rx.try_recv()
            {
                run.push(more);
            }
            done += run.len();
            open_and_emit(run)?;
        }
        if done != total {
            return Err(Error::Io {
                path: PathBuf::from(&file.path),
                source: std::io::Error::other("the chunk fetcher stopped early"),
            });
        }
        Ok(())
    })
}

/// A chunk on its way from the source to the output: index, offset in the file, content.
type Piece = (usize, u64, Fetched);

/// Where [`read_file_pieces`]'s producer stopped.
enum Step {
    /// At a chunk the cache did not hold.
    Missing(usize, u64),
    /// The consumer has gone.
    Stop,
    /// Past the last chunk.
    End,
}

/// A chunk as the fetching stage of a read leaves it.
enum Fetched {
    /// Opened already (from the cache).
    Open(Bytes),
    /// Its shards, or why they could not be had.
    Shards(Result<ShardSlots, Error>),
}

/// Writes every file of the artifact under `out_dir`, each through [`read_file_resume`]: a
/// file whose earlier read was interrupted continues from the chunks verified on disk. Returns
/// the bytes found verified and the bytes fetched, over all files.
pub fn read_artifact(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Resumed, Error> {
    let mut total = Resumed::default();
    for f in &art.private.files {
        let dst = out_dir.join(&f.path);
        let parent = dst
            .parent()
            .expect("validated relative paths have a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let r = read_file_resume(art, source, f, &dst, progress)?;
        total.verified += r.verified;
        total.fetched += r.fetched;
    }
    Ok(total)
}

/// What [`read_file_resume`] found on disk and what it fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Plaintext bytes of whole chunks found in the partial file and matching their hash.
    pub verified: u64,
    /// Plaintext bytes fetched from the source.
    pub fetched: u64,
}

/// The partial file of a read into `dst`: `.<name>.cairn-partial` beside it. The name is stable
/// (not per process) so that a read run again after a kill finds it.
pub fn partial_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    dst.with_file_name(format!(".{name}.cairn-partial"))
}

/// Writes the whole of `file` to `dst`, continuing from what an interrupted earlier read left
/// in [`partial_path`]`(dst)`. Nothing on disk is trusted: each chunk whose plaintext lies
/// wholly inside the partial file is hashed (BLAKE3) and kept only if it matches the hash the
/// private part gives for it; a partial file of another artifact or file, or with a flipped
/// byte, costs the chunks it spoils and nothing else. A partial file longer than `file` is cut
/// to its size first, so the work of checking is bounded by the file's size. The chunks not
/// verified are fetched through `source` (each run of consecutive ones as one read, so the
/// usual case, a read killed part way, is one pipelined read of the rest), written at their
/// offsets, and the file is synced and renamed to `dst`. With no partial file, a `dst` of the
/// file's size whose every chunk verifies (written by an earlier read of the same artifact) is
/// kept and nothing is fetched.
///
/// This lives in the pipeline rather than in the command line so that every reader with a
/// [`ShardSource`] (a local store, the network) resumes the same way. The partial file is
/// created 0600 and opened without following a symbolic link; one owned by another user is
/// refused. It is left in place on error when it holds anything, so the next read continues
/// from it; the finished file gets the mode the process umask gives a new file.
pub fn read_file_resume(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    file: &FileEntry,
    dst: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Resumed, Error> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};

    // (index, offset, length) of every chunk of the file.
    let first = file.first_chunk as usize;
    let mut chunks = Vec::with_capacity(file.chunk_count as usize);
    let mut off = 0u64;
    for i in first..first + file.chunk_count as usize {
        let len = art.private.chunks[i].len;
        chunks.push((i, off, len));
        off += len;
    }
    // Whether `f` (`on_disk` bytes long) holds each chunk, hashed and matched.
    let verify = |f: &File, path: &Path, on_disk: u64| -> Result<Vec<bool>, Error> {
        chunks
            .par_iter()
            .map(|&(i, off, len)| {
                if off + len > on_disk {
                    return Ok(false);
                }
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, off).map_err(Error::io(path))?;
                Ok(blake3::hash(&buf).as_bytes().as_slice()
                    == art.private.chunks[i].hash.as_slice())
            })
            .collect()
    };
    let tmp = partial_path(dst);
    let no_follow = libc::O_NOFOLLOW | libc::O_CLOEXEC;

    // A whole-artifact read killed after some files were renamed into place finds them here:
    // a destination of the right size whose every chunk verifies is kept as it is.
    if !tmp.exists()
        && let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(no_follow)
            .open(dst)
        && let Ok(meta) = f.metadata()
        && owned_file(&meta)
        && meta.len() == file.size
        && verify(&f, dst, file.size)?.iter().all(|ok| *ok)
    {
        progress(file.size);
        return Ok(Resumed {
            verified: file.size,
            fetched: 0,
        });
    }

    let mut opts = crate::private_options();
    opts.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(no_follow);
    let out = opts.open(&tmp).map_err(Error::io(&tmp))?;
    let meta = out.metadata().map_err(Error::io(&tmp))?;
    if !owned_file(&meta) {
        return Err(Error::Io {
            path: tmp,
            source: std::io::Error::other(
                "the partial file is not a regular file of this user; remove it and read again",
            ),
        });
    }
    // Two reads into one destination would interleave their writes and race to the rename; the
    // lock (held until after the rename) turns the second into a clear error.
    if out.try_lock().is_err() {
        return Err(Error::Io {
            path: tmp,
            source: std::io::Error::other(
                "another read is writing this partial file; wait for it to end or stop it",
            ),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // A partial file of an older build, created with the umask's mode.
        out.set_permissions(std::fs::Permissions::from_mode(crate::FILE_MODE))
            .map_err(Error::io(&tmp))?;
    }
    let mut on_disk = meta.len();
    if on_disk > file.size {
        out.set_len(file.size).map_err(Error::io(&tmp))?;
        on_disk = file.size;
    }
    let good = verify(&out, &tmp, on_disk)?;
    let mut done = Resumed::default();
    for (c, ok) in chunks.iter().zip(&good) {
        if *ok {
            done.verified += c.2;
        }
    }
    progress(done.verified);

    // Each run of chunks not verified is read as one range, written where it belongs. Runs are
    // read in file order, so the partial file grows from its end like a fresh read.
    let fetched = (|| -> Result<u64, Error> {
        let mut fetched = 0;
        let mut j = 0;
        while j < chunks.len() {
            if good[j] {
                j += 1;
                continue;
            }
            let start = chunks[j].1;
            while j < chunks.len() && !good[j] {
                j += 1;
            }
            let end = chunks[j - 1].1 + chunks[j - 1].2;
            let mut at = start;
            read_file_pieces(
                art,
                source,
                &NoCache,
                file,
                start..end,
                &mut |piece: Bytes| {
                    out.write_all_at(&piece, at)?;
                    at += piece.len() as u64;
                    progress(piece.len() as u64);
                    Ok(())
                },
            )?;
            fetched += end - start;
        }
        Ok(fetched)
    })();
    match fetched {
        Ok(n) => done.fetched = n,
        Err(e) => {
            // Kept for the next read if it holds anything; an empty one is only clutter.
            if out.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&tmp);
            }
            return Err(e);
        }
    }
    // Verified chunks and fetched ones cover the file; anything past it (a chunk of a longer
    // file that failed its check) goes.
    if out.metadata().map_err(Error::io(&tmp))?.len() != file.size {
        out.set_len(file.size).map_err(Error::io(&tmp))?;
    }
    out.sync_all().map_err(Error::io(&tmp))?;
    out.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))
        .map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, dst).map_err(Error::io(dst))?;
    drop(out);
    Ok(done)
}

/// Whether `meta` is a regular file of this process's user: only such a file is read back as
/// earlier output (another user's could be changed under the read).
fn owned_file(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    meta.is_file() && meta.uid() == unsafe { libc::geteuid() }
}

/// The process umask, read from `/proc/self/status` (`umask(2)` can only read it by changing it,
/// which races with other threads creating files). Where it cannot be read, 077: the finished
/// file then keeps the partial file's owner-only mode.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o077)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rand::RngCore;

    use super::*;
    use crate::MemShards;

    /// A cache that keeps everything (the gateway's bounded one is tested in the gateway).
    #[derive(Default)]
    struct MapCache(Mutex<HashMap<(Cid, usize), Bytes>>);

    impl ChunkCache for MapCache {
        fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes> {
            self.0.lock().unwrap().get(&(*artifact, index)).cloned()
        }
        fn insert(&self, artifact: &Cid, index: usize, plain: Bytes) {
            self.0.lock().unwrap().insert((*artifact, index), plain);
        }
    }

    /// The shards, except that chunks in `broken` cannot be had; counts the chunks asked for.
    struct Flaky<'a> {
        store: &'a MemShards,
        broken: Vec<usize>,
        asked: AtomicUsize,
    }

    impl ShardSource for Flaky<'_> {
        fn fetch(
            &self,
            artifact: &Cid,
            index: usize,
            chunk: &ChunkEntry,
            params: Params,
        ) -> Result<ShardSlots, Error> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            if self.broken.contains(&index) {
                return Err(Error::ShardsUnavailable {
                    artifact: *artifact,
                    chunk: index,
                    present: 0,
                    k: params.k(),
                    missing: Vec::new(),
                });
            }
            self.store.fetch(artifact, index, chunk, params)
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: MemShards,
        data: Vec<u8>,
        cid: Cid,
        manifest: Manifest,
        private: PrivatePart,
    }

    impl Fixture {
        /// One file of `len` random bytes, added to a fresh store.
        fn new(len: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            std::fs::create_dir_all(&input).unwrap();
            let mut data = vec![0u8; len];
            rand::rng().fill_bytes(&mut data);
            std::fs::write(input.join("f.bin"), &data).unwrap();
            let store = MemShards::new();
            let opts = AddOptions {
                params: Params::DEFAULT,
                key_mode: KeyMode::Random,
                name: None,
                record_signers: Vec::new(),
            };
            let (manifest, cap) = encode_artifact(&input, &opts, &store, &|_| {}).unwrap();
            let private = manifest.open(&cap.cid, &cap.key).unwrap();
            Self {
                _dir: dir,
                store,
                data,
                cid: cap.cid,
                manifest,
                private,
            }
        }

        fn art(&self) -> Artifact<'_> {
            Artifact {
                cid: self.cid,
                manifest: &self.manifest,
                private: &self.private,
            }
        }

        /// Reads `range` through `source` and `cache`: the bytes emitted, and the result.
        fn read(
            &self,
            source: &dyn ShardSource,
            cache: &dyn ChunkCache,
            range: Range<u64>,
        ) -> (Vec<u8>, Result<(), Error>) {
            let file = &self.private.files[0];
            let mut out = Vec::new();
            let r = read_file_pieces(&self.art(), source, cache, file, range, &mut |p| {
                out.extend_from_slice(&p);
                Ok(())
            });
            (out, r)
        }
    }

    #[test]
    fn pieces_match_the_file_for_every_kind_of_range() {
        // About 40 chunks (at least 10: chunks are at most 4 MiB): several read windows, so the
        // pipelined path runs.
        let fx = Fixture::new(40 << 20);
        assert!(fx.manifest.chunks().len() > WINDOW_CHUNKS);
        let len = fx.data.len() as u64;
        let mut ranges = vec![
            0..len,
            0..1,
            len - 1..len,
            1..len - 1,
            len / 3..len / 3 + (1 << 20),
        ];
        // Around every chunk boundary. The data is fresh random bytes, so the cut points differ
        // from run to run: they are checked against the chunker's own, and counted, so a loop
        // that silently saw no boundary cannot pass.
        let mut off = 0;
        let before = ranges.len();
        for c in &fx.private.chunks {
            off += c.len;
            if off < len {
                ranges.push(off - 1..off + 1);
            }
        }
        let cuts: Vec<u64> = Chunker::new(&fx.data[..])
            .scan(0u64, |at, c| {
                *at += c.unwrap().len() as u64;
                Some(*at)
            })
            .filter(|at| *at < len)
            .collect();
        assert_eq!(
            ranges[before..]
                .iter()
                .map(|r| r.end - 1)
                .collect::<Vec<_>>(),
            cuts,
            "the manifest's chunk boundaries are the chunker's"
        );
        assert_eq!(ranges.len() - before, fx.private.chunks.len() - 1);
        assert!(
            ranges.len() - before >= 9,
            "40 MiB in chunks of at most 4 MiB"
        );
        for r in ranges {
            let (out, res) = fx.read(&fx.store, &NoCache, r.clone());
            res.unwrap();
            assert!(out == fx.data[r.start as usize..r.end as usize], "{r:?}");
        }
        // Past the end is clamped; an empty range emits nothing.
        let (out, res) = fx.read(&fx.store, &NoCache, len - 10..len + 100);
        res.unwrap();
        assert_eq!(out, fx.data[len as usize - 10..]);
        let (out, res) = fx.read(&fx.store, &NoCache, 5..5);
        res.unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn cached_chunks_are_not_fetched_again() {
        let fx = Fixture::new(24 << 20);
        let len = fx.data.len() as u64;
        let cache = MapCache::default();
        let source = Flaky {
            store: &fx.store,
            broken: Vec::new(),
            asked: AtomicUsize::new(0),
        };
        // A ranged read from inside chunk 2 to inside chunk 4 fills the cache with those three.
        let start: u64 = fx.private.chunks[..2].iter().map(|c| c.len).sum::<u64>() + 10;
        let end: u64 = fx.private.chunks[..5].iter().map(|c| c.len).sum::<u64>() - 10;
        let (out, res) = fx.read(&source, &cache, start..end);
        res.unwrap();
        assert!(out == fx.data[start as usize..end as usize]);
        let touched = source.asked.load(Ordering::Relaxed);
        assert_eq!(touched, 3);
        assert_eq!(cache.0.lock().unwrap().len(), touched);
        // The same range again: nothing fetched.
        let (again, res) = fx.read(&source, &cache, start..end);
        res.unwrap();
        assert_eq!(again, out);
        assert_eq!(source.asked.load(Ordering::Relaxed), touched);
        // The whole file: only the chunks not cached are fetched, and cached and fetched chunks
        // come out in order.
        let (all, res) = fx.read(&source, &cache, 0..len);
        res.unwrap();
        assert!(all == fx.data);
        assert_eq!(
            source.asked.load(Ordering::Relaxed),
            touched + fx.manifest.chunks().len() - touched
        );
    }

    /// A chunk that opens under its key (AES-GCM authenticates it) but whose plaintext does not
    /// hash to what the private part says, as a publisher's bug or a forged private part would
    /// give: the read stops at that chunk with the mismatch, after only bytes before it. Without
    /// the hash check after decryption this read would succeed.
    #[test]
    fn a_chunk_whose_plaintext_hash_differs_is_refused() {
        let fx = Fixture::new(12 << 20);
        let len = fx.data.len() as u64;
        let n = fx.manifest.chunks().len();
        assert!(n >= 3, "12 MiB in {n} chunks");
        for bad in [0, n / 2, n - 1] {
            let mut private = fx.private.clone();
            private.chunks[bad].hash[0] ^= 1;
            let art = Artifact {
                cid: fx.cid,
                manifest: &fx.manifest,
                private: &private,
            };
            let mut out = Vec::new();
            let res = read_file_pieces(
                &art,
                &fx.store,
                &NoCache,
                &private.files[0],
                0..len,
                &mut |p| {
                    out.extend_from_slice(&p);
                    Ok(())
                },
            );
            match res {
                Err(Error::BadManifest { what, reason }) => {
                    assert_eq!(reason, "plaintext hash mismatch");
                    assert_eq!(what, format!("{} chunk {bad}", fx.cid));
                }
                other => panic!("chunk {bad}: {other:?}"),
            }
            let before: u64 = private.chunks[..bad].iter().map(|c| c.len).sum();
            assert!(
                out.len() as u64 <= before,
                "chunk {bad}: bytes of the bad chunk came out"
            );
            assert!(out == fx.data[..out.len()], "chunk {bad}");
        }
    }

    /// A read resumed from a partial file: a flipped byte in one chunk costs that chunk, the
    /// chunks past the partial's end are fetched, nothing verified is fetched again. A partial
    /// of other bytes, longer than the file, is cut to size and entirely refetched. Without the
    /// hash check the flipped byte would survive; without the resume every chunk would be asked.
    #[test]
    fn a_resumed_read_fetches_only_what_the_partial_file_does_not_hold_verified() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new(24 << 20);
        let n = fx.manifest.chunks().len();
        assert!(n >= 8, "24 MiB in {n} chunks");
        let ends: Vec<u64> = fx
            .private
            .chunks
            .iter()
            .scan(0, |at, c| {
                *at += c.len;
                Some(*at)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out.bin");
        let partial = partial_path(&dst);
        assert_eq!(partial, dir.path().join(".out.bin.cairn-partial"));
        // Chunks 0..half whole, chunk `half` cut short; a byte flipped in chunk 1.
        let half = n / 2;
        let cut = ends[half - 1] as usize + 1000;
        let mut bytes = fx.data[..cut].to_vec();
        bytes[ends[0] as usize + 7] ^= 0x40;
        std::fs::write(&partial, &bytes).unwrap();
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = Flaky {
            store: &fx.store,
            broken: Vec::new(),
            asked: AtomicUsize::new(0),
        };
        let r = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {}).unwrap();
        assert!(std::fs::read(&dst).unwrap() == fx.data);
        assert!(!partial.exists());
        let chunk1 = ends[1] - ends[0];
        assert_eq!(r.verified, ends[half - 1] - chunk1);
        assert_eq!(r.fetched, fx.data.len() as u64 - r.verified);
        // Chunk 1 and the chunks from `half` on.
        assert_eq!(source.asked.load(Ordering::Relaxed), 1 + n - half);

        // A partial of another file's bytes, longer than this one: nothing matches.
        let other = {
            let mut v = vec![0u8; fx.data.len() + 5000];
            rand::rng().fill_bytes(&mut v);
            v
        };
        std::fs::write(&partial, &other).unwrap();
        let source = Flaky {
            store: &fx.store,
            broken: Vec::new(),
            asked: AtomicUsize::new(0),
        };
        let r = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {}).unwrap();
        assert_eq!(r.verified, 0);
        assert_eq!(source.asked.load(Ordering::Relaxed), n);
        assert!(std::fs::read(&dst).unwrap() == fx.data);

        // The same read again finds the finished file verified and fetches nothing; a finished
        // file with a flipped byte is not trusted and is read again whole.
        let source = Flaky {
            store: &fx.store,
            broken: Vec::new(),
            asked: AtomicUsize::new(0),
        };
        let r = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {}).unwrap();
        assert_eq!((r.verified, r.fetched), (fx.data.len() as u64, 0));
        assert_eq!(source.asked.load(Ordering::Relaxed), 0);
        let mut spoiled = fx.data.clone();
        spoiled[fx.data.len() / 2] ^= 1;
        std::fs::write(&dst, &spoiled).unwrap();
        let r = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {}).unwrap();
        assert_eq!(r.verified, 0);
        assert_eq!(source.asked.load(Ordering::Relaxed), n);
        assert!(std::fs::read(&dst).unwrap() == fx.data);

        // A second read into the same destination while one is writing is refused.
        std::fs::write(partial_path(&dst), b"").unwrap();
        let busy = File::open(partial_path(&dst)).unwrap();
        busy.lock().unwrap();
        let res = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {});
        assert!(
            matches!(&res, Err(Error::Io { source, .. }) if source.to_string().contains("another read")),
            "{res:?}"
        );
        drop(busy);
        std::fs::remove_file(partial_path(&dst)).unwrap();

        // A symbolic link planted as the partial file is not followed: the read fails and the
        // file it points to is untouched.
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, partial_path(&dst)).unwrap();
        let res = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst, &|_| {});
        assert!(matches!(res, Err(Error::Io { .. })), "{res:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::remove_file(partial_path(&dst)).unwrap();

        // A read that fails part way keeps what it verified, owner-only, for the next one.
        let source = Flaky {
            store: &fx.store,
            broken: vec![half],
            asked: AtomicUsize::new(0),
        };
        let dst2 = dir.path().join("again.bin");
        let res = read_file_resume(&fx.art(), &source, &fx.private.files[0], &dst2, &|_| {});
        assert!(matches!(res, Err(Error::ShardsUnavailable { chunk, .. }) if chunk == half));
        assert!(!dst2.exists());
        let left = std::fs::read(partial_path(&dst2)).unwrap();
        assert!(left.len() as u64 <= ends[half - 1] && left == fx.data[..left.len()]);
        let mode = std::fs::metadata(partial_path(&dst2))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_chunk_that_cannot_be_had_stops_the_read_after_only_good_bytes() {
        let fx = Fixture::new(24 << 20);
        let len = fx.data.len() as u64;
        let n = fx.manifest.chunks().len();
        for broken in [0, n / 2, n - 1] {
            let source = Flaky {
                store: &fx.store,
                broken: vec![broken],
                asked: AtomicUsize::new(0),
            };
            let (out, res) = fx.read(&source, &NoCache, 0..len);
            assert!(
                matches!(res, Err(Error::ShardsUnavailable { chunk, .. }) if chunk == broken),
                "chunk {broken}: {res:?}"
            );
            // Whatever came out is the start of the file and stops before the broken chunk.
            let before: u64 = fx.private.chunks[..broken].iter().map(|c| c.len).sum();
            assert!(out.len() as u64 <= before, "chunk {broken}");
            assert!(out == fx.data[..out.len()], "chunk {broken}");
        }
        // A consumer that fails stops the read with its error.
        let mut taken = 0usize;
        let res = read_file_pieces(
            &fx.art(),
            &fx.store,
            &NoCache,
            &fx.private.files[0],
            0..len,
            &mut |p| {
                taken += p.len();
                if taken > (4 << 20) {
                    Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"))
                } else {
                    Ok(())
                }
            },
        );
        assert!(
            matches!(&res, Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe),
            "{res:?}"
        );
    }

    /// Accepts `ok_windows` windows, then refuses every shard.
    struct FailingSink {
        ok_windows: usize,
        seen: AtomicUsize,
    }

    impl ShardSink for FailingSink {
        fn put_window(&self, chunks: Vec<EncodedChunk>) -> Result<(), Error> {
            if self.seen.fetch_add(1, Ordering::SeqCst) < self.ok_windows {
                return Ok(());
            }
            Err(Error::Sink {
                cid: chunks[0].shards[0].0,
                reason: "disk full".into(),
            })
        }
    }

    #[test]
    fn a_sink_error_stops_the_publish_and_is_the_error_returned() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 48 << 20];
        rand::rng().fill_bytes(&mut data);
        std::fs::write(dir.path().join("f.bin"), &data).unwrap();
        let opts = AddOptions {
            params: Params::DEFAULT,
            key_mode: KeyMode::Random,
            name: None,
            record_signers: Vec::new(),
        };
        let sink = FailingSink {
            ok_windows: 1,
            seen: AtomicUsize::new(0),
        };
        let err = encode_artifact(dir.path(), &opts, &sink, &|_| {}).unwrap_err();
        assert!(
            matches!(&err, Error::Sink { reason, .. } if reason == "disk full"),
            "{err}"
        );
        // About six windows of input: once the sink refused the second, it was handed no more.
        let seen = sink.seen.load(Ordering::SeqCst);
        assert_eq!(seen, 2, "the sink was handed windows after it failed");

        // The same input into memory: every shard arrives, and reads back whole.
        let mem = MemShards::new();
        let (manifest, cap) = encode_artifact(dir.path(), &opts, &mem, &|_| {}).unwrap();
        let private = manifest.open(&cap.cid, &cap.key).unwrap();
        let art = Artifact {
            cid: cap.cid,
            manifest: &manifest,
            private: &private,
        };
        let mut out = Vec::new();
        read_file(
            &art,
            &mem,
            &private.files[0],
            0..data.len() as u64,
            &mut out,
            &|_| {},
        )
        .unwrap();
        assert!(out == data, "the read differs from the input");
        assert_eq!(mem.len(), manifest.chunks().len() * 5);
    }
}
