//! The CPU of a storage-proof audit (`cairn_artifact::audit_answer` and `check_audit_answer`) per
//! shard, beside baselines measured in the same run: BLAKE3 of the whole shard (what a naive
//! "hash everything" audit costs the holder) and a memcpy of the answer's size (the least any
//! answer of that size costs to produce).
//!
//! Two shard sizes: the ~341 KiB shard a 1 MiB chunk makes at 3-of-5 (the default chunking's
//! average) and the largest shard (8 MiB, `SHARD_LEN_MAX`). Per size:
//!
//! - `answer`: the holder, given the shard and its bao outboard in memory (what a store that
//!   keeps outboards can pay);
//! - `answer_file_groups`: the holder reading only the challenged groups and the outboard hashes
//!   that prove them from the shard file (`audit_answer_at` over positional reads of a file in
//!   the page cache, header checked first), as `Store::audit_answer` does;
//! - `answer_file_whole`: the holder reading the whole shard file through
//!   `Store::get_shard_with_outboard` (the shard hashed and its outboard recomputed to check
//!   them) then `audit_answer`: what nodes paid before they read only the challenged groups;
//! - `check`: the auditor verifying one answer against the CID;
//! - `blake3_whole_shard`, `memcpy_answer`: the baselines.
//!
//! Every iteration uses the next of 64 nonces, so the groups asked move over the shard as they
//! do between audits. Criterion reports each with the shard's size as its throughput (stored
//! bytes covered per second); a closing table measures all of them again interleaved, round
//! after round (so a noisy machine moves every row together), and prints median times with
//! their ratios to the baselines.

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_artifact::{
    AUDIT_GROUP_LEN, AUDIT_GROUPS, Cid, ReadAt, SHARD_LEN_MAX, audit_answer, audit_answer_at,
    check_audit_answer, outboard, shard_cid_from_hash,
};
use cairn_erasure::Params;
use cairn_store::{HEADER_LEN, ShardHeader, Store, StoreConfig};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng};

/// Nonces cycled through.
const NONCES: usize = 64;

struct Shard {
    name: &'static str,
    cid: Cid,
    data: Vec<u8>,
    outboard: Vec<u8>,
    nonces: Vec<[u8; 32]>,
    /// One answer per nonce (what the auditor checks).
    answers: Vec<Vec<u8>>,
    /// A store holding the shard (in a temporary directory), the shard's file in it, and the
    /// directory.
    store: Store,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// `len` bytes of a file from `base` on, read positionally.
struct FileSlice<'a> {
    file: &'a File,
    base: u64,
    len: u64,
}

impl ReadAt for FileSlice<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - pos) as usize);
        FileExt::read_at(self.file, &mut buf[..n], self.base + pos)
    }
}

/// The answer to `nonce` read from a shard file: header checked against the file's length and
/// the CID, then only the challenged groups and their proof hashes read.
fn answer_from_file(path: &PathBuf, cid: &Cid, nonce: &[u8; 32]) -> Vec<u8> {
    let mut f = File::open(path).expect("open the shard file");
    let file_len = f.metadata().expect("stat the shard file").len();
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact(&mut hb).expect("read the header");
    let h = ShardHeader::parse(&hb).expect("a valid header");
    assert_eq!(h.file_len(), file_len);
    assert_eq!(Some(h.hash), cairn_artifact::blake3_digest(cid));
    let data = FileSlice {
        file: &f,
        base: HEADER_LEN as u64,
        len: h.data_len,
    };
    let outboard = FileSlice {
        file: &f,
        base: HEADER_LEN as u64 + h.data_len,
        len: h.outboard_len,
    };
    audit_answer_at(nonce, cid, h.data_len, data, outboard).expect("answer")
}

impl Shard {
    fn new(name: &'static str, len: usize, seed: u64) -> Shard {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let (root, outboard) = outboard(&data);
        let cid = shard_cid_from_hash(&root);
        let nonces: Vec<[u8; 32]> = (0..NONCES)
            .map(|_| {
                let mut n = [0u8; 32];
                rng.fill_bytes(&mut n);
                n
            })
            .collect();
        let answers: Vec<Vec<u8>> = nonces
            .iter()
            .map(|n| audit_answer(n, &cid, &data, &outboard).expect("an honest answer"))
            .collect();
        for (n, a) in nonces.iter().zip(&answers) {
            check_audit_answer(n, &cid, len as u64, a).expect("an honest answer passes");
        }
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = Store::open(dir.path(), StoreConfig::new(1 << 30)).expect("open a store");
        store.put_shards(&[(cid, &data)]).expect("store the shard");
        // Warm the page cache: the bench measures CPU, not the disk.
        store
            .get_shard_with_outboard(&cid)
            .expect("read the shard back");
        let s = cid.to_string();
        let file = dir.path().join("shards").join(&s[s.len() - 2..]).join(&s);
        assert_eq!(answer_from_file(&file, &cid, &nonces[0]), answers[0]);
        Shard {
            name,
            cid,
            data,
            outboard,
            nonces,
            answers,
            store,
            file,
            _dir: dir,
        }
    }

    fn answer_len(&self) -> usize {
        self.answers.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The shard of a 1 MiB chunk sealed (16-byte tag) and coded 3-of-5, and the largest shard.
fn shards() -> Vec<Shard> {
    let params = Params::DEFAULT;
    let one_mib = params.shard_len((1 << 20) + 16);
    vec![
        Shard::new("shard_1MiB_chunk_3of5", one_mib, 0xA0D1),
        Shard::new("shard_8MiB", SHARD_LEN_MAX as usize, 0xA0D2),
    ]
}

/// One call of an operation on shard `s` with nonce index `i` (and a scratch buffer).
type Op = fn(&Shard, usize, &mut Vec<u8>);

/// The operations measured.
fn ops() -> Vec<(&'static str, Op)> {
    vec![
        ("blake3_whole_shard", |s, _, _| {
            black_box(blake3::hash(black_box(&s.data)));
        }),
        ("memcpy_answer", |s, i, dst| {
            let src = &s.answers[i % NONCES];
            dst.clear();
            dst.extend_from_slice(black_box(src));
            black_box(&dst);
        }),
        ("answer", |s, i, _| {
            let n = &s.nonces[i % NONCES];
            black_box(audit_answer(n, &s.cid, black_box(&s.data), &s.outboard).expect("answer"));
        }),
        ("answer_file_groups", |s, i, _| {
            let n = &s.nonces[i % NONCES];
            black_box(answer_from_file(&s.file, &s.cid, n));
        }),
        ("answer_file_whole", |s, i, _| {
            let n = &s.nonces[i % NONCES];
            let (data, ob) = s.store.get_shard_with_outboard(&s.cid).expect("read");
            black_box(audit_answer(n, &s.cid, &data, &ob).expect("answer"));
        }),
        ("check", |s, i, _| {
            let n = &s.nonces[i % NONCES];
            check_audit_answer(
                n,
                &s.cid,
                s.data.len() as u64,
                black_box(&s.answers[i % NONCES]),
            )
            .expect("check");
        }),
    ]
}

fn audit(c: &mut Criterion) {
    let shards = shards();
    for s in &shards {
        let mut g = c.benchmark_group(format!("audit/{}", s.name));
        g.throughput(Throughput::Bytes(s.data.len() as u64))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (name, op) in ops() {
            g.bench_function(name, |b| {
                let mut i = 0usize;
                let mut buf = Vec::with_capacity(s.answer_len());
                b.iter(|| {
                    op(s, i, &mut buf);
                    i += 1;
                })
            });
        }
        g.finish();
    }
    summary(&shards);
}

/// Median seconds per call of each op, measured interleaved: `ROUNDS` rounds, each running every
/// op for about `SLICE`.
fn summary(shards: &[Shard]) {
    const ROUNDS: usize = 9;
    const SLICE: Duration = Duration::from_millis(60);
    println!();
    println!(
        "audit summary: {AUDIT_GROUPS} groups of {} KiB per challenge; median of {ROUNDS} interleaved rounds",
        AUDIT_GROUP_LEN / 1024
    );
    for s in shards {
        let ops = ops();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
        let mut buf = Vec::with_capacity(s.answer_len());
        for _ in 0..ROUNDS {
            for (k, (_, op)) in ops.iter().enumerate() {
                let start = Instant::now();
                let mut n = 0usize;
                while start.elapsed() < SLICE {
                    op(s, n, &mut buf);
                    n += 1;
                }
                times[k].push(start.elapsed().as_secs_f64() / n as f64);
            }
        }
        let median: Vec<f64> = times
            .into_iter()
            .map(|mut t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        let blake = median[0];
        let memcpy = median[1];
        let len = s.data.len() as f64;
        println!();
        println!(
            "{}: {} bytes ({} groups), answer {} bytes ({:.1} % of the shard)",
            s.name,
            s.data.len(),
            s.data.len().div_ceil(AUDIT_GROUP_LEN as usize),
            s.answer_len(),
            100.0 * s.answer_len() as f64 / len
        );
        println!(
            "  {:<22} {:>11} {:>13} {:>10} {:>11} {:>10}",
            "op", "µs/shard", "shards/s", "GiB/s", "× blake3", "× memcpy"
        );
        for ((name, _), t) in ops.iter().zip(&median) {
            println!(
                "  {:<22} {:>11.2} {:>13.0} {:>10.2} {:>11.3} {:>10.1}",
                name,
                t * 1e6,
                1.0 / t,
                len / t / (1u64 << 30) as f64,
                t / blake,
                t / memcpy
            );
        }
        println!(
            "  (GiB/s: shard bytes covered per second; × blake3: time over BLAKE3 of the whole \
             shard; × memcpy: time over a copy of the answer)"
        );
    }
}

criterion_group!(benches, audit);
criterion_main!(benches);
