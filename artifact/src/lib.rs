//! Cairn's artifact format: how a folder becomes content-addressed shards and back, with no disk
//! store and no network.
//!
//! - [`Chunker`] cuts files into content-defined chunks (FastCDC, about 1 MiB on average), so a
//!   new version of a model re-uses the chunks that did not change.
//! - [`shard_cid`] / [`manifest_cid`] / [`verify_shard`]: CIDv1 with a BLAKE3 multihash; the bao
//!   helpers ([`outboard`], [`prove_range`], [`verify_range`]) prove ranges of a shard against its
//!   CID alone; [`challenge_ranges`], [`audit_answer`] and [`check_audit_answer`] turn them into
//!   storage-proof challenges keyed by a nonce.
//! - [`Manifest`] is the artifact's DAG-CBOR document: a public part (per chunk: shard CIDs and
//!   lengths, the erasure parameters) that is enough to audit and repair, and a sealed
//!   [`PrivatePart`] (file tree, chunk keys, plaintext hashes).
//! - [`ReadCap`] is what a reader needs: the manifest CID and the artifact key.
//! - [`encode_artifact`] runs the publish pipeline (chunk, seal, erasure-code, address) and
//!   hands shards to a [`ShardSink`]; [`read_file_pieces`] / [`read_file`] / [`read_artifact`]
//!   run it backwards from any `k` shards per chunk taken from a [`ShardSource`], verifying every
//!   byte; [`read_stream`] is the async read core (a stream of verified pieces from an
//!   [`AsyncShardSource`], with only the CPU work on the rayon pool); [`ChunkCache`] keeps opened chunks for readers of many ranges;
//!   [`read_file_resume`] continues a read from the verified chunks of a partial file.
//! - [`OpenedArtifact`]: a capability and manifest bytes, checked and opened: what every reader
//!   reads from.
//! - [`read_safetensors_header`] and [`SafetensorsHeader::select`] turn a safetensors file's
//!   header and name patterns into the header and source ranges of a file of only those
//!   tensors, so a reader fetches their chunks and not the whole file's.
//!
//! Where shards live is someone else's business: `cairn-store` keeps them on a disk, the peer
//! layer on other nodes; both plug in through the sink and source traits.

mod audit;
mod bao;
mod capability;
mod chunker;
mod error;
mod ids;
mod manifest;
mod mem;
mod opened;
mod owner_only;
mod pipeline;
mod safetensors;
mod stream;

pub use audit::{
    AUDIT_GROUP_LEN, AUDIT_GROUPS, answer as audit_answer, answer_at as audit_answer_at,
    challenge_ranges, check_answer as check_audit_answer,
};
pub use bao::{BLOCK_SIZE, ReadAt, outboard, prove_range, prove_range_at, verify_range};
pub use capability::ReadCap;
pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_SPARE, Chunker};
pub use cid::Cid;
pub use error::Error;
pub use ids::{
    CODEC_DAG_CBOR, CODEC_RAW, MULTIHASH_BLAKE3, blake3_digest, manifest_cid, shard_cid,
    shard_cid_from_hash, verify_shard,
};
pub use manifest::{
    ChunkEntry, ChunkSecret, FileEntry, MANIFEST_LEN_MAX, Manifest, PrivatePart,
    RECORD_SIGNERS_MAX, SHARD_LEN_MAX, validate_path,
};
pub use mem::MemShards;
pub use opened::OpenedArtifact;
pub use owner_only::{
    DIR_MODE, FILE_MODE, create_dir_private, create_private, private_options, write_private_replace,
};
pub use pipeline::{
    AddOptions, Artifact, ChunkCache, Claim, EncodedChunk, KeyMode, NoCache, READ_IN_FLIGHT,
    READ_QUEUED, Resumed, SINK_QUEUED, ShardSink, ShardSlots, ShardSource, WINDOW_CHUNKS,
    encode_artifact, fetch_data_first, partial_path, read_artifact, read_file, read_file_pieces,
    read_file_resume,
};
pub use safetensors::{
    RecentChunks, SAFETENSORS_HEADER_LEN_MAX, SAFETENSORS_HEADER_PROBE, SAFETENSORS_LEN_PREFIX,
    SafetensorsHeader, TENSOR_PATTERN_LEN_MAX, TENSOR_PATTERNS_MAX, TensorError, TensorSelection,
    check_tensor_patterns, read_safetensors_header, safetensors_header_len, tensor_pattern_matches,
};
pub use stream::{AsyncShardSource, BoxFuture, OnCpuPool, on_cpu, read_stream};
