//! Cairn's disk store: where a node keeps shards, manifests and holder records.
//!
//! - [`Store`] owns a data directory: shard files (with BLAKE3/bao outboards) written atomically,
//!   redb metadata, pins, garbage collection and a quota that is never exceeded. It is a
//!   [`ShardSink`](cairn_artifact::ShardSink) and a [`ShardSource`](cairn_artifact::ShardSource),
//!   so the artifact pipelines publish into it and read from it.
//! - [`create_dir_private`], [`create_private`], [`create_private_db`]: folders (0700) and files
//!   (0600) only their owner can open, from the system call that creates them.
//!
//! This crate knows the disk, not the network and not the artifact format beyond CIDs and
//! manifests (`cairn-artifact`).

mod db;
mod owner_only;
mod shardfile;
mod store;

pub use owner_only::{
    DIR_MODE, FILE_MODE, create_dir_private, create_private, create_private_db, private_options,
    write_private_replace,
};
pub use shardfile::{HEADER_LEN, ShardHeader};
pub use store::{GcReport, Pin, PutOutcome, Stat, Store, StoreConfig};
