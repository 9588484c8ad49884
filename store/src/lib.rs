//! Cairn's local store: how an artifact becomes content-addressed shards, and where a node keeps
//! them.
//!
//! - [`Chunker`] cuts files into content-defined chunks (FastCDC, about 1 MiB on average), so a
//!   new version of a model re-uses the chunks that did not change.
//! - [`encode_artifact`] runs the publish pipeline (chunk, seal, erasure-code, address) and
//!   hands shards to a [`ShardSink`]; [`read_artifact`] runs it backwards from any `k` shards
//!   per chunk taken from a [`ShardSource`], verifying every byte.
//! - [`Manifest`] is the artifact's DAG-CBOR document: a public part (per chunk: shard CIDs and
//!   lengths, the erasure parameters) that is enough to audit and repair, and a sealed
//!   [`PrivatePart`] (file tree, chunk keys, plaintext hashes).
//! - [`ReadCap`] is what a reader needs: the manifest CID and the artifact key.
//! - [`Store`] owns a data directory: shard files (with BLAKE3/bao outboards) written atomically,
//!   redb metadata, pins, garbage collection and a quota that is never exceeded.
//! - [`read_safetensors_header`] and [`SafetensorsHeader::select`] turn a safetensors file's
//!   header and name patterns into the header and source ranges of a file of only those
//!   tensors, so a reader fetches their chunks and not the whole file's.
//! - [`create_dir_private`], [`create_private`], [`create_private_db`]: folders (0700) and files
//!   (0600) only their owner can open, from the system call that creates them.
//!
//! This crate knows the disk, not the network: peers reach it through the sink/source traits.

mod bao;
mod capability;
mod chunker;
mod error;
mod ids;
mod manifest;
mod owner_only;
mod pipeline;
mod safetensors;
mod shardfile;
mod store;

pub use bao::{BLOCK_SIZE, outboard, prove_range, verify_range};
pub use capability::ReadCap;
pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, Chunker};
pub use cid::Cid;
pub use error::Error;
pub use ids::{
    CODEC_DAG_CBOR, CODEC_RAW, MULTIHASH_BLAKE3, blake3_digest, manifest_cid, shard_cid,
    verify_shard,
};
pub use manifest::{
    ChunkEntry, ChunkSecret, FileEntry, MANIFEST_LEN_MAX, Manifest, PrivatePart,
    RECORD_SIGNERS_MAX, validate_path,
};
pub use owner_only::{
    DIR_MODE, FILE_MODE, create_dir_private, create_private, create_private_db, private_options,
    write_private_replace,
};
pub use pipeline::{
    AddOptions, Artifact, ChunkCache, Claim, EncodedChunk, KeyMode, NoCache, ShardSink, ShardSlots,
    ShardSource, WINDOW_CHUNKS, encode_artifact, fetch_data_first, read_artifact, read_file,
    read_file_pieces,
};
pub use safetensors::{
    RecentChunks, SAFETENSORS_HEADER_LEN_MAX, SAFETENSORS_HEADER_PROBE, SAFETENSORS_LEN_PREFIX,
    SafetensorsHeader, TENSOR_PATTERN_LEN_MAX, TENSOR_PATTERNS_MAX, TensorError, TensorSelection,
    check_tensor_patterns, read_safetensors_header, safetensors_header_len, tensor_pattern_matches,
};
pub use shardfile::{HEADER_LEN, SHARD_LEN_MAX, ShardHeader};
pub use store::{GcReport, Pin, PutOutcome, Stat, Store, StoreConfig};
