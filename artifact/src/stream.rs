//! The async read core: bytes of a file as a stream of verified pieces, with no thread blocked
//! on the network.
//!
//! [`read_stream`] is what a server (the gateway) reads through. Shards come from an
//! [`AsyncShardSource`]: the network source's fetches are plain futures on the caller's runtime;
//! a blocking source (a local store, whose reads are disk and hashing) runs each fetch on the CPU
//! pool through [`OnCpuPool`]. Only rebuilding, decrypting and hashing a chunk go to the CPU pool
//! (rayon), and they come back through a oneshot channel: nothing here calls `block_on`, and no
//! runtime worker runs a CPU-heavy step. The crate stays runtime-agnostic (no tokio): the timers
//! are the source's and the cache's.
//!
//! A read of at most one window ([`WINDOW_CHUNKS`]) is how ranged readers come (a parquet footer,
//! a tensor): it resolves the whole window before its first piece, sharing work with concurrent
//! readers through the cache's claims. A longer read keeps [`READ_IN_FLIGHT`] chunks on the way,
//! in order; it is pulled by its consumer, so a consumer that stops taking pieces stops the
//! fetching too (backpressure, no unbounded buffer), and holds at most the chunks in flight.
//! A long read never claims: a consumer that stalls must not make other readers wait for chunks
//! it stopped fetching.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use cairn_erasure::{Codec, Params};
use futures_util::future::{Either, join_all};
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};

use crate::pipeline::{ChunkOpener, chunks_of_range};
use crate::{
    Artifact, ChunkCache, ChunkEntry, Cid, Claim, Error, FileEntry, READ_IN_FLIGHT, ShardSlots,
    ShardSource, WINDOW_CHUNKS,
};

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the async read core gets shards: the async twin of [`ShardSource::fetch`], with the
/// same contract (`n` slots, at least `k` filled, each checked against its CID, or
/// [`Error::ShardsUnavailable`]). Every wait in an implementation has a timeout.
pub trait AsyncShardSource: Send + Sync {
    /// Fetches the shards of chunk `index`.
    fn fetch<'a>(
        &'a self,
        artifact: &'a Cid,
        index: usize,
        chunk: &'a ChunkEntry,
        params: Params,
    ) -> BoxFuture<'a, Result<ShardSlots, Error>>;
}

/// A blocking [`ShardSource`] (a local store) as an [`AsyncShardSource`]: each fetch runs on the
/// CPU pool, where a store's reads spend their time hashing what they read.
pub struct OnCpuPool<S>(pub Arc<S>);

impl<S: ShardSource + Send + 'static> AsyncShardSource for OnCpuPool<S> {
    fn fetch<'a>(
        &'a self,
        artifact: &'a Cid,
        index: usize,
        chunk: &'a ChunkEntry,
        params: Params,
    ) -> BoxFuture<'a, Result<ShardSlots, Error>> {
        let (source, artifact, chunk) = (self.0.clone(), *artifact, chunk.clone());
        Box::pin(
            async move { on_cpu(move || source.fetch(&artifact, index, &chunk, params)).await? },
        )
    }
}

/// Runs `f` on the CPU pool (rayon) and resolves to what it returned, holding no thread while
/// it waits.
pub async fn on_cpu<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    let (tx, rx) = futures_channel::oneshot::channel();
    rayon::spawn(move || {
        // The reader may have gone: then nobody wants the result.
        let _ = tx.send(f());
    });
    rx.await.map_err(|_| Error::Io {
        path: Default::default(),
        source: std::io::Error::other("a job on the CPU pool ended without a result"),
    })
}

/// The verified bytes `range` of `file`, in order, as pieces that share the opened chunks' memory
/// (no copy). Chunks are taken from `cache` when it holds them; the rest are fetched from
/// `source`, rebuilt, opened and checked on the CPU pool, and offered to `cache`. An error may
/// come after some pieces; the stream then ends, and the consumer must not present the output as
/// complete. See the module documentation for how much is in flight.
pub fn read_stream<'a>(
    art: Artifact<'a>,
    source: &'a dyn AsyncShardSource,
    cache: &'a dyn ChunkCache,
    file: &FileEntry,
    range: Range<u64>,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'a {
    let codec = Arc::new(Codec::new(art.manifest.params()));
    let (range, wanted) = chunks_of_range(&art, file, range);
    let cut = move |plain: Bytes, off: u64| {
        let lo = range.start.max(off) - off;
        let hi = range.end.min(off + plain.len() as u64) - off;
        plain.slice(lo as usize..hi as usize)
    };
    if wanted.len() <= WINDOW_CHUNKS {
        let window = async move {
            let opened = open_window_shared(art, source, cache, &codec, &wanted).await?;
            let pieces: Vec<Result<Bytes, Error>> = opened
                .into_iter()
                .zip(&wanted)
                .map(|(plain, &(_, off))| Ok(cut(plain, off)))
                .collect();
            Ok::<_, Error>(stream::iter(pieces))
        };
        return Either::Left(stream::once(window).try_flatten());
    }
    Either::Right(
        stream::iter(wanted)
            .map(move |(i, off)| {
                let codec = codec.clone();
                async move {
                    let plain = match cache.get(&art.cid, i) {
                        Some(plain) => plain,
                        None => {
                            let plain = fetch_open(art, source, &codec, i).await?;
                            cache.insert(&art.cid, i, plain.clone());
                            plain
                        }
                    };
                    Ok(cut(plain, off))
                }
            })
            .buffered(READ_IN_FLIGHT),
    )
}

/// Fetches chunk `i`'s shards, then rebuilds, opens and checks it on the CPU pool.
async fn fetch_open(
    art: Artifact<'_>,
    source: &dyn AsyncShardSource,
    codec: &Arc<Codec>,
    i: usize,
) -> Result<Bytes, Error> {
    let slots = source
        .fetch(
            &art.cid,
            i,
            &art.manifest.chunks()[i],
            art.manifest.params(),
        )
        .await?;
    let (opener, codec) = (ChunkOpener::new(&art, i), codec.clone());
    Ok(Bytes::from(
        on_cpu(move || opener.open(&codec, slots)).await??,
    ))
}

/// Opens the chunks of one window (index, offset), sharing work with concurrent readers through
/// `cache`: first the chunks this reader claimed are fetched, opened and inserted (never
/// waiting for anyone), then the chunks others claimed are waited for, and whatever a wait did
/// not deliver is fetched here after all. Claims not settled on the way out (an error, or the
/// reader dropped) are abandoned, so no reader waits for a chunk that will not come.
async fn open_window_shared(
    art: Artifact<'_>,
    source: &dyn AsyncShardSource,
    cache: &dyn ChunkCache,
    codec: &Arc<Codec>,
    w: &[(usize, u64)],
) -> Result<Vec<Bytes>, Error> {
    struct Abandon<'a> {
        cache: &'a dyn ChunkCache,
        cid: Cid,
        claimed: Vec<usize>,
    }
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            // After an insert the claim is settled and this does nothing to it.
            for &i in &self.claimed {
                self.cache.abandon(&self.cid, i);
            }
        }
    }
    let mut out: Vec<Option<Bytes>> = vec![None; w.len()];
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for (j, &(i, _)) in w.iter().enumerate() {
        match cache.claim(&art.cid, i) {
            Claim::Hit(plain) => out[j] = Some(plain),
            Claim::Mine => mine.push(j),
            Claim::Theirs => theirs.push(j),
        }
    }
    let _settle = Abandon {
        cache,
        cid: art.cid,
        claimed: mine.iter().map(|&j| w[j].0).collect(),
    };
    let fetch_and_open = |which: Vec<usize>| async move {
        join_all(which.into_iter().map(|j| async move {
            let i = w[j].0;
            let plain = fetch_open(art, source, codec, i).await?;
            cache.insert(&art.cid, i, plain.clone());
            Ok::<_, Error>((j, plain))
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()
    };
    for (j, plain) in fetch_and_open(mine).await? {
        out[j] = Some(plain);
    }
    let waited = join_all(theirs.iter().map(|&j| cache.wait(&art.cid, w[j].0))).await;
    let mut left = Vec::new();
    for (j, got) in theirs.into_iter().zip(waited) {
        match got {
            Some(plain) => out[j] = Some(plain),
            None => left.push(j),
        }
    }
    for (j, plain) in fetch_and_open(left).await? {
        out[j] = Some(plain);
    }
    Ok(out
        .into_iter()
        .map(|p| p.expect("every chunk was found, fetched or waited for"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddOptions, MemShards, NoCache, OpenedArtifact, encode_artifact, read_file};
    use futures_executor::block_on;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn publish(len: usize) -> (Arc<MemShards>, OpenedArtifact, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; len];
        let mut x = 0x9e3779b97f4a7c15u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(dir.path().join("f.bin"), &data).unwrap();
        let shards = Arc::new(MemShards::default());
        let opts = AddOptions {
            params: Params::DEFAULT,
            key_mode: crate::KeyMode::Random,
            name: None,
            record_signers: Vec::new(),
        };
        let (manifest, cap) =
            encode_artifact(&dir.path().join("f.bin"), &opts, &*shards, &|_| {}).unwrap();
        let opened = OpenedArtifact::from_manifest(&cap, manifest).unwrap();
        (shards, opened, data)
    }

    fn collect(s: impl Stream<Item = Result<Bytes, Error>>) -> Result<Vec<u8>, Error> {
        block_on(s.try_fold(Vec::new(), |mut acc, piece| async move {
            acc.extend_from_slice(&piece);
            Ok(acc)
        }))
    }

    /// A source that counts fetches and can fail one chunk.
    struct Counting {
        inner: OnCpuPool<MemShards>,
        fetched: AtomicUsize,
        fail: Option<usize>,
    }

    impl AsyncShardSource for Counting {
        fn fetch<'a>(
            &'a self,
            artifact: &'a Cid,
            index: usize,
            chunk: &'a ChunkEntry,
            params: Params,
        ) -> BoxFuture<'a, Result<ShardSlots, Error>> {
            self.fetched.fetch_add(1, Ordering::SeqCst);
            if self.fail == Some(index) {
                let e = Error::ShardsUnavailable {
                    artifact: *artifact,
                    chunk: index,
                    present: 0,
                    k: params.k(),
                    missing: Vec::new(),
                };
                return Box::pin(std::future::ready(Err(e)));
            }
            self.inner.fetch(artifact, index, chunk, params)
        }
    }

    #[test]
    fn the_stream_gives_the_same_bytes_as_the_blocking_read_for_every_kind_of_range() {
        let (shards, opened, data) = publish(24 << 20);
        let art = opened.artifact();
        let file = &opened.private.files[0];
        let source = OnCpuPool(shards.clone());
        let len = data.len() as u64;
        // Whole file (many windows), one window, inside one chunk, across a chunk edge, empty,
        // past the end.
        let edge = opened.private.chunks[0].len;
        for range in [
            0..len,
            0..(3 << 20),
            10..20,
            edge - 5..edge + 5,
            7..7,
            len - 3..len + 100,
        ] {
            let got = collect(read_stream(art, &source, &NoCache, file, range.clone())).unwrap();
            let want = &data[range.start.min(len) as usize..range.end.min(len) as usize];
            assert_eq!(got, want, "range {range:?}");
            let mut blocking = Vec::new();
            read_file(&art, &*shards, file, range, &mut blocking, &|_| {}).unwrap();
            assert_eq!(blocking, want);
        }
    }

    #[test]
    fn a_chunk_that_cannot_be_had_ends_the_stream_with_its_error_after_the_chunks_before_it() {
        let (shards, opened, data) = publish(24 << 20);
        let art = opened.artifact();
        let file = &opened.private.files[0];
        let n = opened.manifest.chunks().len();
        assert!(n > WINDOW_CHUNKS + 2, "a long read: {n} chunks");
        let bad = n / 2;
        let source = Counting {
            inner: OnCpuPool(shards),
            fetched: AtomicUsize::new(0),
            fail: Some(bad),
        };
        let mut s = Box::pin(read_stream(
            art,
            &source,
            &NoCache,
            file,
            0..data.len() as u64,
        ));
        let mut got = Vec::new();
        let err = block_on(async {
            while let Some(piece) = s.next().await {
                match piece {
                    Ok(p) => got.extend_from_slice(&p),
                    Err(e) => return e,
                }
            }
            panic!("the stream ended without the error");
        });
        assert!(
            matches!(err, Error::ShardsUnavailable { chunk, .. } if chunk == bad),
            "{err}"
        );
        // Everything before the bad chunk came, verified; nothing after it.
        let before: u64 = opened.private.chunks[..bad].iter().map(|c| c.len).sum();
        assert_eq!(got, data[..before as usize]);
        // A long read keeps a bounded number of chunks on the way past the failure.
        assert!(source.fetched.load(Ordering::SeqCst) <= bad + READ_IN_FLIGHT + 1);
    }

    #[test]
    fn a_consumer_that_stops_taking_pieces_stops_the_fetching() {
        let (shards, opened, _) = publish(32 << 20);
        let art = opened.artifact();
        let file = &opened.private.files[0];
        let source = Counting {
            inner: OnCpuPool(shards),
            fetched: AtomicUsize::new(0),
            fail: None,
        };
        let mut s = Box::pin(read_stream(art, &source, &NoCache, file, 0..file.size));
        block_on(s.next()).unwrap().unwrap();
        // One piece taken: the read-ahead is READ_IN_FLIGHT chunks, not the file.
        let fetched = source.fetched.load(Ordering::SeqCst);
        assert!(fetched <= READ_IN_FLIGHT + 1, "{fetched} chunks fetched");
        assert!(opened.manifest.chunks().len() > 2 * READ_IN_FLIGHT);
    }

    /// A cache whose claims can be seen, and whose waits resolve when told.
    #[derive(Default)]
    struct Claims {
        held: Mutex<std::collections::HashMap<usize, Bytes>>,
        abandoned: Mutex<Vec<usize>>,
        theirs: Option<usize>,
    }

    impl ChunkCache for Claims {
        fn get(&self, _: &Cid, i: usize) -> Option<Bytes> {
            self.held.lock().unwrap().get(&i).cloned()
        }
        fn insert(&self, _: &Cid, i: usize, plain: Bytes) {
            self.held.lock().unwrap().insert(i, plain);
        }
        fn claim(&self, a: &Cid, i: usize) -> Claim {
            match self.get(a, i) {
                Some(p) => Claim::Hit(p),
                None if self.theirs == Some(i) => Claim::Theirs,
                None => Claim::Mine,
            }
        }
        fn abandon(&self, _: &Cid, i: usize) {
            self.abandoned.lock().unwrap().push(i);
        }
    }

    #[test]
    fn a_window_read_fetches_a_chunk_another_reader_claimed_when_the_wait_gives_nothing() {
        let (shards, opened, data) = publish(4 << 20);
        let art = opened.artifact();
        let file = &opened.private.files[0];
        let source = Counting {
            inner: OnCpuPool(shards),
            fetched: AtomicUsize::new(0),
            fail: None,
        };
        let cache = Claims {
            theirs: Some(1),
            ..Default::default()
        };
        let got = collect(read_stream(art, &source, &cache, file, 0..file.size)).unwrap();
        assert_eq!(got, data);
        let n = opened.manifest.chunks().len();
        assert_eq!(source.fetched.load(Ordering::SeqCst), n);
        // Every chunk it opened went to the cache; its claims were all settled by inserts.
        assert_eq!(cache.held.lock().unwrap().len(), n);
        // A second read is served from the cache: nothing fetched.
        let again = collect(read_stream(art, &source, &cache, file, 0..file.size)).unwrap();
        assert_eq!(again, data);
        assert_eq!(source.fetched.load(Ordering::SeqCst), n);
    }

    #[test]
    fn a_failed_window_read_abandons_its_claims() {
        let (shards, opened, _) = publish(4 << 20);
        let art = opened.artifact();
        let file = &opened.private.files[0];
        let source = Counting {
            inner: OnCpuPool(shards),
            fetched: AtomicUsize::new(0),
            fail: Some(0),
        };
        let cache = Claims::default();
        assert!(collect(read_stream(art, &source, &cache, file, 0..file.size)).is_err());
        let abandoned = cache.abandoned.lock().unwrap().clone();
        assert!(abandoned.contains(&0), "{abandoned:?}");
    }
}
