//! Throughput of each stage of the publish pipeline over 64 MiB of random bytes, beside a memcpy
//! baseline measured in the same run, then the whole pipeline on one thread and on rayon's pool.
//!
//! Random bytes are the worst case for FastCDC (no early cut points repeat) and representative of
//! model weights, which compress and dedup poorly. The buffer comes from a seeded RNG, so cut
//! points, and so the chunk sizes every stage sees, are the same from run to run.

use std::hint::black_box;
use std::time::Duration;

use cairn_artifact::{Chunker, Cid, WINDOW_CHUNKS, shard_cid};
use cairn_encryption::{ChunkKey, ConvergenceSecret, seal_chunk_in_place};
use cairn_erasure::{Codec, Params};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
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
        .map(|s| (shard_cid(&s), s))
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
    // Sealing works in place, so each iteration gets a fresh copy of the chunks, made untimed.
    g.bench_function("seal", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |chunks| {
                for c in chunks.iter_mut() {
                    seal_chunk_in_place(&key, c);
                }
            },
            BatchSize::PerIteration,
        )
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

criterion_group!(benches, stages);
criterion_main!(benches);
