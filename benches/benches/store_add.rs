//! `encode_artifact` of a 64 MiB random file into a real `Store` on disk (shards written and
//! synced, manifest committed), as `cairn add` does, beside a baseline measured in the same run:
//! copying the file into the same directory and syncing it.
//!
//! Every iteration gets a fresh store in a fresh temporary directory (made and removed untimed),
//! so nothing dedups against an earlier iteration. The directory is under `$TMPDIR`; point it at
//! the disk you want measured.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cairn_artifact::{AddOptions, KeyMode, encode_artifact};
use cairn_encryption::ConvergenceSecret;
use cairn_erasure::Params;
use cairn_store::{Store, StoreConfig};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng};
use tempfile::TempDir;

/// Size of the file added.
const INPUT_LEN: usize = 64 * 1024 * 1024;
/// Far above what one iteration stores (64 MiB at 5/3 overhead).
const QUOTA: u64 = 64 * 1024 * 1024 * 1024;

fn write_input(dir: &Path) -> std::path::PathBuf {
    let mut buf = vec![0u8; INPUT_LEN];
    rand::rngs::StdRng::seed_from_u64(0xCA1B).fill_bytes(&mut buf);
    let path = dir.join("model.bin");
    let mut f = File::create(&path).expect("create the input file");
    f.write_all(&buf).expect("write the input file");
    f.sync_all().expect("sync the input file");
    path
}

fn store_add(c: &mut Criterion) {
    let input_dir = tempfile::tempdir().expect("create a temporary directory");
    let input = write_input(input_dir.path());
    let opts = AddOptions {
        params: Params::DEFAULT,
        key_mode: KeyMode::Convergent(ConvergenceSecret::from_bytes([7; 32])),
        name: None,
        record_signers: Vec::new(),
    };

    let mut g = c.benchmark_group("store_add");
    g.throughput(Throughput::Bytes(INPUT_LEN as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));

    // Baseline: the same bytes written once (not 5/3 times) to the same disk, synced.
    g.bench_function("copy_file+sync", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("create a temporary directory"),
            |dir| {
                let dst = dir.path().join("copy.bin");
                std::fs::copy(&input, &dst).expect("copy the input");
                File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .expect("sync the copy");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("encode_artifact", |b| {
        b.iter_batched(
            || -> (TempDir, Store) {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let store = Store::open(dir.path(), StoreConfig::new(QUOTA)).expect("open a store");
                (dir, store)
            },
            |(dir, store)| {
                let (manifest, cap) =
                    encode_artifact(&input, &opts, &store, &|_| {}).expect("add the input");
                let (cid, bytes) = manifest.encode();
                store
                    .commit_artifact(&cid, &bytes, None, None)
                    .expect("commit the manifest");
                (store, cap, dir)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, store_add);
criterion_main!(benches);
