//! Throughput of each stage of the publish and read pipelines over 64 MiB of random bytes,
//! beside a memcpy baseline measured in the same run, then the real pipelines
//! (`encode_artifact` into memory, `read_file` back out) on one thread and on two.
//!
//! Each stage is called as the pipeline calls it: chunks come with the spare capacity the
//! chunker gives them (sealing appends its tag there without reallocating), shards are
//! addressed with their bao outboard (one BLAKE3 pass gives CID and outboard), and opening is
//! checked against the plaintext hash. `../shared/notes/kernels.md`-style kernel rates for this
//! CPU are what a stage can reach; `docs/performance.md` puts the two side by side.
//!
//! Random bytes are the worst case for FastCDC (no early cut points repeat) and representative of
//! model weights, which compress and dedup poorly. The buffer comes from a seeded RNG, so cut
//! points, and so the chunk sizes every stage sees, are the same from run to run.

use std::hint::black_box;
use std::time::Duration;

use cairn_artifact::{
    AddOptions, Artifact, CHUNK_SPARE, Chunker, Cid, KeyMode, MemShards, NoCache, OnCpuPool,
    WINDOW_CHUNKS, encode_artifact, outboard, read_file, read_stream, shard_cid_from_hash,
};
use cairn_encryption::{ChunkKey, ConvergenceSecret, open_chunk_in_place, seal_chunk_in_place};
use cairn_erasure::{Codec, Params};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Bytes pushed through every bench.
const INPUT_LEN: usize = 64 * 1024 * 1024;

fn input() -> Vec<u8> {
    let mut buf = vec![0u8; INPUT_LEN];
    rand::rngs::StdRng::seed_from_u64(0xCA1B).fill_bytes(&mut buf);
    buf
}

fn chunks(buf: &[u8]) -> Vec<Vec<u8>> {
    Chunker::new(buf)
        .collect::<std::io::Result<_>>()
        .expect("reading a slice cannot fail")
}

fn secret() -> ConvergenceSecret {
    ConvergenceSecret::from_bytes([7; 32])
}

/// What the pipeline does to one chunk: hash, derive the convergent key, seal, erasure-code and
/// address every shard. Returns the shard CIDs and shards so nothing is optimised away.
fn process(chunk: Vec<u8>, secret: &ConvergenceSecret, codec: &Codec) -> Vec<(Cid, Vec<u8>)> {
    let hash = *blake3::hash(&chunk).as_bytes();
    let key = ChunkKey::convergent(secret, &hash);
    let mut buf = chunk;
    seal_chunk_in_place(&key, &mut buf);
    codec
        .encode(&buf)
        .into_iter()
        .map(|s| {
            let (root, _outboard) = outboard(&s);
            (shard_cid_from_hash(&root), s)
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let buf = input();
    let plain = chunks(&buf);
    let secret = secret();
    let codec = Codec::new(Params::DEFAULT);
    let key = ChunkKey::from_bytes([9; 32]);
    let sealed: Vec<Vec<u8>> = plain
        .iter()
        .map(|p| {
            let mut b = p.clone();
            seal_chunk_in_place(&key, &mut b);
            b
        })
        .collect();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(INPUT_LEN as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    // Baseline: the cost of touching every byte once more.
    g.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; INPUT_LEN];
        b.iter(|| {
            dst.copy_from_slice(black_box(&buf));
            black_box(&dst);
        })
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&buf))));
    g.bench_function("chunk", |b| {
        b.iter(|| {
            Chunker::new(black_box(&buf[..]))
                .map(|c| c.unwrap().len())
                .sum::<usize>()
        })
    });
    // Sealing works in place, so each iteration gets a fresh copy of the chunks, made untimed,
    // with the spare capacity the chunker gives (a plain `clone` has none: the tag would
    // reallocate and copy every chunk, which is what an earlier version of this bench measured).
    let with_spare = |chunks: &[Vec<u8>]| -> Vec<Vec<u8>> {
        chunks
            .iter()
            .map(|c| {
                let mut v = Vec::with_capacity(c.len() + CHUNK_SPARE);
                v.extend_from_slice(c);
                v
            })
            .collect()
    };
    g.bench_function("seal", |b| {
        b.iter_batched_ref(
            || with_spare(&plain),
            |chunks| {
                for c in chunks.iter_mut() {
                    seal_chunk_in_place(&key, c);
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            || with_spare(&sealed),
            |chunks| {
                for c in chunks.iter_mut() {
                    open_chunk_in_place(&key, c).expect("sealed above");
                }
            },
            BatchSize::PerIteration,
        )
    });
    // The shards of every chunk, made once: what `outboard` hashes (5/3 of the input).
    let shards: Vec<Vec<u8>> = sealed.iter().flat_map(|s| codec.encode(s)).collect();
    g.bench_function("outboard_of_shards", |b| {
        b.iter(|| {
            shards
                .iter()
                .map(|s| outboard(black_box(s)).0)
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("erasure_encode_3+2", |b| {
        b.iter(|| {
            sealed
                .iter()
                .map(|s| codec.encode(black_box(s)))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("pipeline", |b| {
        b.iter(|| {
            Chunker::new(black_box(&buf[..]))
                .map(|c| process(c.unwrap(), &secret, &codec))
                .collect::<Vec<_>>()
        })
    });
    // As `encode_artifact` does: a window of chunks is processed on the pool while the next
    // window is cut.
    g.bench_function("pipeline_parallel", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(black_box(&buf[..]));
            let mut next_window = || -> Vec<Vec<u8>> {
                chunker
                    .by_ref()
                    .take(WINDOW_CHUNKS)
                    .map(|c| c.unwrap())
                    .collect()
            };
            let mut out = Vec::new();
            let mut window = next_window();
            while !window.is_empty() {
                let (done, next) = rayon::join(
                    || {
                        window
                            .into_par_iter()
                            .map(|c| process(c, &secret, &codec))
                            .collect::<Vec<_>>()
                    },
                    &mut next_window,
                );
                out.extend(done);
                window = next;
            }
            out
        })
    });
    g.finish();
}

/// The real pipelines on a pool of `threads`: `encode_artifact` of a 64 MiB file (read from the
/// page cache) into memory, and `read_file` of it back out of memory.
fn whole(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("model.bin");
    std::fs::write(&path, input()).expect("write the input");
    let opts = AddOptions {
        params: Params::DEFAULT,
        key_mode: KeyMode::Convergent(secret()),
        name: None,
        record_signers: Vec::new(),
    };
    let mut g = c.benchmark_group("whole");
    g.throughput(Throughput::Bytes(INPUT_LEN as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("memcpy", |b| {
        let src = input();
        let mut dst = vec![0u8; INPUT_LEN];
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("build a thread pool");
        g.bench_function(format!("encode_artifact_{threads}t"), |b| {
            b.iter(|| {
                pool.install(|| {
                    let mem = MemShards::new();
                    encode_artifact(&path, &opts, &mem, &|_| {}).expect("encode");
                    mem
                })
            })
        });
        let mem = MemShards::new();
        let (manifest, cap) = encode_artifact(&path, &opts, &mem, &|_| {}).expect("encode");
        let private = manifest.open(&cap.cid, &cap.key).expect("open");
        let art = Artifact {
            cid: cap.cid,
            manifest: &manifest,
            private: &private,
        };
        let file = &private.files[0];
        g.bench_function(format!("read_file_{threads}t"), |b| {
            let mut out = Vec::with_capacity(INPUT_LEN);
            b.iter(|| {
                out.clear();
                pool.install(|| {
                    read_file(&art, &mem, file, 0..file.size, &mut out, &|_| {}).expect("read")
                });
                black_box(&out);
            })
        });
    }
    // The async read core (what the gateway reads through), on the global pool (one thread per
    // core), the stream pulled from this thread: against read_file_2t it is the cost of the
    // futures, the oneshots and a local source's fetches going through the CPU pool.
    let mem = std::sync::Arc::new(MemShards::new());
    let (manifest, cap) = encode_artifact(&path, &opts, &*mem, &|_| {}).expect("encode");
    let private = manifest.open(&cap.cid, &cap.key).expect("open");
    let art = Artifact {
        cid: cap.cid,
        manifest: &manifest,
        private: &private,
    };
    let file = &private.files[0];
    let source = OnCpuPool(mem.clone());
    g.bench_function("read_stream", |b| {
        let mut out = Vec::with_capacity(INPUT_LEN);
        b.iter(|| {
            out.clear();
            let mut pieces = Box::pin(read_stream(art, &source, &NoCache, file, 0..file.size));
            futures_executor::block_on(async {
                while let Some(piece) = pieces.next().await {
                    out.extend_from_slice(&piece.expect("read"));
                }
            });
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, stages, whole);
criterion_main!(benches);
