//! Format stability: fixed test vectors, committed under `tests/vectors/`, for every byte layout
//! that outlives a build (hardening item 18).
//!
//! Method: each test rebuilds a structure from fixed inputs (fixed keys, secrets and bytes) and
//! compares its bytes with the committed ones, and decodes the committed bytes back to the
//! expected values. A change that would stop this build from deduplicating against artifacts
//! published by an older one (the convergent key derivation, the chunk sealing, the erasure code,
//! the shard CIDs), from reading older shard files or manifests, or from talking to older nodes
//! (announcements, holder records) fails here. A deliberate format change bumps its version
//! field (docs/format.md) and regenerates the vectors:
//!
//! ```text
//! CAIRN_REGEN_VECTORS=1 cargo nextest run --test it vectors
//! ```
//!
//! which rewrites `tests/vectors/` and the fuzz seeds derived from them (`fuzz/seeds/`, valid
//! inputs that take the fuzz targets past magics, length prefixes and signatures), and prints
//! what it wrote. Those seeds are checked here as well, so they stay valid as formats change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_artifact::{
    AddOptions, ChunkSecret, FileEntry, KeyMode, Manifest, PrivatePart, ReadCap, encode_artifact,
    manifest_cid, shard_cid,
};
use cairn_encryption::{ChunkKey, ConvergenceSecret, seal_chunk};
use cairn_erasure::{Codec, Params};
use cairn_store::{ShardHeader, Store, StoreConfig};
use cairn_swarm::{Announcement, HolderRecord, PeerTable, SecretKey, TopicId, topic_id};

const REGEN: &str = "CAIRN_REGEN_VECTORS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn regen() -> bool {
    std::env::var_os(REGEN).is_some_and(|v| v == "1")
}

/// Compares `bytes` with the committed file `rel` (under the repository root), or writes it
/// when regenerating.
fn vector(rel: &str, bytes: &[u8]) {
    let path = root().join(rel);
    if regen() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        return;
    }
    let committed = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); {REGEN}=1 writes it", path.display()));
    assert!(
        committed == bytes,
        "{} differs from what this build makes ({} bytes committed, {} made): a format change \
         needs a version bump in docs/format.md and {REGEN}=1 to rewrite the vectors",
        path.display(),
        committed.len(),
        bytes.len()
    );
}

/// The committed bytes of `rel`, written first by `make` when regenerating (for vectors that
/// cannot be rebuilt byte for byte, such as a manifest sealed under a random nonce).
fn committed(rel: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    if regen() {
        vector(rel, &make());
    }
    read(rel)
}

fn read(rel: &str) -> Vec<u8> {
    let path = root().join(rel);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); {REGEN}=1 writes it", path.display()))
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed % 32)) as u8
        })
        .collect()
}

const CONVERGENCE_SECRET: [u8; 32] = [0x11; 32];
/// The fuzz targets' network topic (`swarm_frames`, `announcement`, `peer_table`).
const FUZZ_TOPIC: [u8; 32] = [7; 32];

fn node_key(i: u8) -> SecretKey {
    SecretKey::from_bytes(&[0x40 + i; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The convergent chain a dedup depends on: plaintext hash, chunk key (HKDF under the
/// publisher's convergence secret), sealed chunk (AES-256-GCM, fixed nonce), its 3 + 2 shards
/// and their CIDs. A change anywhere in it makes a new build store every chunk again.
#[test]
fn vectors_convergent_chunk_chain() {
    let secret = ConvergenceSecret::from_bytes(CONVERGENCE_SECRET);
    let plain = bytes(1, 1000);
    let hash = *blake3::hash(&plain).as_bytes();
    let key = ChunkKey::convergent(&secret, &hash);
    let sealed = seal_chunk(&key, &plain);
    let shards = Codec::new(Params::DEFAULT).encode(&sealed);
    let mut text = format!(
        "# Convergent chunk chain: secret = 32 bytes of 0x11, plaintext = tests/it/vectors.rs bytes(1, 1000).\n\
         plaintext-blake3 {}\nchunk-key {}\nsealed {}\n",
        hex(&hash),
        hex(key.as_bytes()),
        hex(&sealed)
    );
    for (j, s) in shards.iter().enumerate() {
        text.push_str(&format!("shard {j} {}\n", shard_cid(s)));
    }
    vector("tests/vectors/convergent-chunk.txt", text.as_bytes());
}

/// The shard file header of a 100 000-byte shard.
#[test]
fn vectors_shard_header() {
    let data = bytes(2, 100_000);
    let header = ShardHeader::new(data.len() as u64, *blake3::hash(&data).as_bytes());
    vector("tests/vectors/shard-header.bin", &header.encode());
    let committed = read("tests/vectors/shard-header.bin");
    assert_eq!(ShardHeader::parse(&committed), Ok(header.clone()));
    vector("fuzz/seeds/shard_header/vector", &header.encode());
}

fn announcement(i: u8, topic: &TopicId) -> (Announcement, Vec<u8>) {
    let key = node_key(i);
    let a = Announcement::new(
        key.public(),
        &[addr("192.0.2.7:4433"), addr("[2001:db8::7]:4433")],
        500 << 30,
        1_750_000_000_000 + u64::from(i),
        3,
    );
    let signed = a.sign(&key, topic);
    (a, signed)
}

/// A membership announcement on the default network (`cairn`): its layout, the topic
/// derivation and the signature, as older nodes send and expect them.
#[test]
fn vectors_announcement() {
    let topic = topic_id("cairn");
    let (a, signed) = announcement(0, &topic);
    vector("tests/vectors/announcement.bin", &signed);
    let committed = read("tests/vectors/announcement.bin");
    assert_eq!(Announcement::verify(&committed, &topic).unwrap(), a);

    // Seeds: the fuzz targets' topic, raw (`swarm_frames` selector 2) and as a peer table.
    let fuzz_topic = TopicId::from_bytes(FUZZ_TOPIC);
    let (_, fuzz_signed) = announcement(0, &fuzz_topic);
    vector(
        "fuzz/seeds/swarm_frames/announcement",
        &[&[2][..], &fuzz_signed].concat(),
    );
    let mut table = PeerTable::new(fuzz_topic);
    for i in 0..2 {
        table
            .observe(&announcement(i, &fuzz_topic).1, 1_750_000_000_000)
            .unwrap();
    }
    vector(
        "fuzz/seeds/peer_table/table",
        &[&[0][..], &table.to_bytes()].concat(),
    );
    let mut peers = Vec::new();
    put_u16(&mut peers, 1);
    put_u16(&mut peers, fuzz_signed.len() as u16);
    peers.extend_from_slice(&fuzz_signed);
    swarm_frame_seeds_with(&[("reply-peers", reply(4, 0, &[&[1, 0][..], &peers].concat()))]);
}

/// The committed artifact: two files published with convergent keys under the fixed secret.
fn artifact_dir(tmp: &Path) -> PathBuf {
    let src = tmp.join("artifact");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("config.json"), b"{\"model_type\": \"vector\"}\n").unwrap();
    std::fs::write(src.join("sub/weights.bin"), bytes(3, 700_000)).unwrap();
    src
}

fn publish_fresh(tmp: &Path, record_signers: Vec<[u8; 32]>) -> (Manifest, ReadCap) {
    let store = Store::open(&tmp.join("store"), StoreConfig::new(1 << 30)).unwrap();
    let opts = AddOptions {
        params: Params::DEFAULT,
        key_mode: KeyMode::Convergent(ConvergenceSecret::from_bytes(CONVERGENCE_SECRET)),
        name: Some("vectors/artifact".into()),
        record_signers,
    };
    encode_artifact(&artifact_dir(tmp), &opts, &store, &|_| {}).unwrap()
}

/// A manifest as an older build wrote it (its private part sealed under a random nonce, so
/// the bytes are committed once, not rebuilt): it must decode, open with its capability,
/// encode to the same bytes (the CID is over them) and describe exactly the shards and private
/// part that publishing the same folder with the same secret gives today.
#[test]
fn vectors_manifest() {
    let bytes = check_manifest_vector("manifest", &[]);
    vector("fuzz/seeds/manifest_decode/vector-artifact", &bytes);
    manifest_open_seeds();
}

/// The same for a manifest of public format 2, which names the keys allowed to sign its holder
/// records (readers trust no other record): the list must come back as it was signed.
#[test]
fn vectors_manifest_format_2() {
    let bytes = check_manifest_vector("manifest-2", &[[0x5a; 32], [0xa5; 32]]);
    vector("fuzz/seeds/manifest_decode/vector-artifact-2", &bytes);
}

/// Checks `tests/vectors/{name}.cbor` and `.cap` against the committed folder published today
/// with `signers`; returns the committed manifest bytes.
fn check_manifest_vector(name: &str, signers: &[[u8; 32]]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let (fresh, fresh_cap) = publish_fresh(tmp.path(), signers.to_vec());
    let bytes = committed(&format!("tests/vectors/{name}.cbor"), || fresh.encode().1);
    let cap_text = committed(&format!("tests/vectors/{name}.cap"), || {
        format!(
            "{}\n",
            ReadCap {
                cid: fresh.encode().0,
                key: fresh_cap.key.clone(),
            }
        )
        .into_bytes()
    });
    let cap: ReadCap = String::from_utf8(cap_text).unwrap().trim().parse().unwrap();
    assert_eq!(
        manifest_cid(&bytes),
        cap.cid,
        "the capability names the manifest"
    );
    let old = Manifest::decode(&bytes, "committed manifest").unwrap();
    assert_eq!(
        old.encode(),
        (cap.cid, bytes.clone()),
        "encoding is not stable"
    );
    assert_eq!(old.params(), fresh.params());
    assert_eq!(
        old.chunks(),
        fresh.chunks(),
        "the same folder and secret no longer give the same shards: nothing would dedup"
    );
    let old_private = old.open(&cap.cid, &cap.key).unwrap();
    let fresh_private = fresh.open(&fresh.encode().0, &fresh_cap.key).unwrap();
    assert_eq!(old_private, fresh_private);
    assert_eq!(
        old_private
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.size))
            .collect::<Vec<_>>(),
        [("config.json", 25), ("sub/weights.bin", 700_000)]
    );
    assert_eq!(
        old.record_signers(),
        signers,
        "the record signers are not read back as signed"
    );
    bytes
}

/// `manifest_open` seeds: a first byte `2n` and the DAG-CBOR plaintext of a private part for
/// `n` chunks of sealed lengths 116, 117, ... (the target's raw mode).
fn manifest_open_seeds() {
    for n in 0..4u8 {
        let chunks: Vec<ChunkSecret> = (0..n)
            .map(|i| ChunkSecret {
                key: serde_bytes::ByteBuf::from(vec![i; 32]),
                hash: serde_bytes::ByteBuf::from(vec![1; 32]),
                len: 100 + u64::from(i),
            })
            .collect();
        let size = chunks.iter().map(|c| c.len).sum();
        let private = PrivatePart {
            format: 1,
            name: Some("org/model".into()),
            files: vec![
                FileEntry {
                    path: "a/empty".into(),
                    size: 0,
                    first_chunk: 0,
                    chunk_count: 0,
                },
                FileEntry {
                    path: "b.bin".into(),
                    size,
                    first_chunk: 0,
                    chunk_count: u64::from(n),
                },
            ],
            chunks,
        };
        let plain = serde_ipld_dagcbor::to_vec(&private).unwrap();
        vector(
            &format!("fuzz/seeds/manifest_open/chunks-{n}"),
            &[&[2 * n][..], &plain].concat(),
        );
    }
}

fn record() -> HolderRecord {
    let nodes: Vec<_> = (1..=5u8)
        .map(|i| {
            (
                node_key(i).public(),
                vec![addr(&format!("192.0.2.{i}:4433"))],
            )
        })
        .collect();
    HolderRecord {
        artifact: manifest_cid(b"tests/it/vectors.rs holder record"),
        version: 1,
        k: 3,
        m: 2,
        reduced_durability: false,
        nodes,
        holders: vec![vec![0, 1, 2, 3, 4], vec![1, 2, 3, 4, 0]],
    }
}

/// A holder record as older nodes store and readers verify it.
#[test]
fn vectors_holder_record() {
    let publisher = node_key(0);
    let signed = record().sign(&publisher);
    vector("tests/vectors/holder-record.bin", &signed);
    let committed = read("tests/vectors/holder-record.bin");
    let verified = HolderRecord::verify(&committed).unwrap();
    assert_eq!(verified.record, record());
    assert_eq!(verified.publisher, publisher.public());

    vector(
        "fuzz/seeds/holder_record/vector",
        &[&[0][..], &signed].concat(),
    );
    vector(
        "fuzz/seeds/swarm_frames/record",
        &[&[3][..], &signed].concat(),
    );
    let mut put_record = vec![1, 5];
    put_u32(&mut put_record, signed.len() as u32);
    put_record.extend_from_slice(&signed);
    let mut get_record = vec![1, 0];
    put_u32(&mut get_record, signed.len() as u32);
    get_record.extend_from_slice(&signed);
    swarm_frame_seeds_with(&[
        ("request-put-record", [&[0][..], &put_record].concat()),
        ("reply-get-record", reply(6, 0, &get_record)),
    ]);
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_cid(out: &mut Vec<u8>, cid: &cairn_artifact::Cid) {
    let b = cid.to_bytes();
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

/// A `swarm_frames` reply seed: selector 1, the request type, the HAS count, the reply bytes.
fn reply(kind: u8, has_count: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![1, kind];
    put_u16(&mut out, has_count);
    out.extend_from_slice(body);
    out
}

/// Writes or checks `swarm_frames` seeds (request frames behind selector 0, reply frames behind
/// selector 1, as the protocol module's spec lays them out), plus `extra`.
fn swarm_frame_seeds_with(extra: &[(&str, Vec<u8>)]) {
    for (name, bytes) in extra {
        vector(&format!("fuzz/seeds/swarm_frames/{name}"), bytes);
    }
}

/// Request and reply frames of every type, as seeds for `swarm_frames`; each must decode with
/// the protocol's own decoders (through `cairn_swarm::fuzzing`), or the seed is useless.
#[test]
fn vectors_swarm_frame_seeds() {
    use cairn_swarm::fuzzing::{decode_reply_frame, decode_request_frame};
    let shard = bytes(4, 300);
    let scid = shard_cid(&shard);
    let mcid = manifest_cid(b"a manifest");
    let request = |kind: u8, body: &[u8]| [&[1, kind][..], body].concat();
    let mut put = Vec::new();
    put_cid(&mut put, &scid);
    put_u32(&mut put, shard.len() as u32);
    put.extend_from_slice(&shard);
    let mut get = Vec::new();
    put_cid(&mut get, &scid);
    get.push(0);
    let mut get_range = Vec::new();
    put_cid(&mut get_range, &scid);
    get_range.push(1);
    get_range.extend_from_slice(&10u64.to_be_bytes());
    get_range.extend_from_slice(&20u64.to_be_bytes());
    let mut has = Vec::new();
    put_u16(&mut has, 2);
    put_cid(&mut has, &scid);
    put_cid(&mut has, &mcid);
    let mut delete = Vec::new();
    put_cid(&mut delete, &scid);
    let mut get_record = Vec::new();
    put_cid(&mut get_record, &mcid);
    let requests = [
        ("request-put", request(0, &put)),
        ("request-get", request(1, &get)),
        ("request-get-range", request(1, &get_range)),
        ("request-has", request(2, &has)),
        ("request-delete", request(3, &delete)),
        ("request-peers", request(4, &[])),
        ("request-get-record", request(6, &get_record)),
    ];
    for (name, frame) in &requests {
        assert_eq!(
            decode_request_frame(frame).as_deref(),
            Ok(&frame[..]),
            "seed {name} does not decode"
        );
    }
    let mut get_ok = vec![1, 0];
    put_u32(&mut get_ok, shard.len() as u32);
    get_ok.extend_from_slice(&shard);
    let mut has_ok = vec![1, 0];
    put_u16(&mut has_ok, 2);
    has_ok.extend_from_slice(&[1, 0]);
    let message = b"no room";
    let mut error = vec![1, 2];
    put_u16(&mut error, message.len() as u16);
    error.extend_from_slice(message);
    let mut quota = vec![1, 8];
    quota.extend_from_slice(&(1u64 << 20).to_be_bytes());
    quota.extend_from_slice(&4096u64.to_be_bytes());
    put_u16(&mut quota, message.len() as u16);
    quota.extend_from_slice(message);
    let replies = [
        ("reply-put", 0u8, 0u16, vec![1, 0]),
        ("reply-get", 1, 0, get_ok),
        ("reply-get-not-found", 1, 0, vec![1, 1]),
        ("reply-has", 2, 2, has_ok),
        ("reply-delete", 3, 0, vec![1, 0, 1]),
        ("reply-error", 1, 0, error),
        ("reply-quota-full", 0, 0, quota),
    ];
    for (name, kind, count, body) in &replies {
        assert!(
            decode_reply_frame(*kind, *count, body).is_ok(),
            "seed {name} does not decode: {:?}",
            decode_reply_frame(*kind, *count, body)
        );
    }
    let seeds: Vec<(&str, Vec<u8>)> = requests
        .iter()
        .map(|(n, f)| (*n, [&[0][..], f].concat()))
        .chain(replies.iter().map(|(n, k, c, b)| (*n, reply(*k, *c, b))))
        .collect();
    swarm_frame_seeds_with(&seeds);
    // `url_cid`: the CID its registry holds first, so lookups hit.
    vector(
        "fuzz/seeds/url_cid/registered",
        manifest_cid(b"a").to_string().as_bytes(),
    );
    // The seeds of frames signed elsewhere decode too.
    let record = std::fs::read(root().join("fuzz/seeds/swarm_frames/reply-get-record"));
    if let Ok(seed) = record {
        let count = u16::from_be_bytes([seed[2], seed[3]]);
        assert!(decode_reply_frame(seed[1], count, &seed[4..]).is_ok());
    }
}
