//! Cairn's disk store: where a node keeps shards, manifests, holder records and leases.
//!
//! - [`Store`] owns a data directory: shard files (with BLAKE3/bao outboards) written atomically,
//!   redb metadata, pins, publishers' leases, garbage collection and a quota that is never
//!   exceeded. It is a [`ShardSink`](cairn_artifact::ShardSink) and a
//!   [`ShardSource`](cairn_artifact::ShardSource), so the artifact pipelines publish into it and
//!   read from it.
//! - [`create_dir_private`], [`create_private`], [`create_private_db`]: folders (0700) and files
//!   (0600) only their owner can open, from the system call that creates them.
//!
//! This crate knows the disk, not the network and not the artifact format beyond CIDs and
//! manifests (`cairn-artifact`).

mod care;
mod db;
mod leases;
mod net_names;
mod private_db;
mod shardfile;
mod store;

/// The owner-only file helpers live with the format crate (its reads write output files too);
/// they are re-exported here, beside the data directory they are mostly used for.
pub use cairn_artifact::{
    DIR_MODE, FILE_MODE, create_dir_private, create_private, private_options, write_private_replace,
};
pub use care::{
    AUDIT_SCORE_MIN, AuditVerdict, Counters, FORGET, ONLINE_SCORE_MIN, Outcome, RECEIPTS_MAX,
    Reputation, now_ms,
};
pub use net_names::{NET_NAME_BYTES_MAX, NetNameKey};
pub use private_db::create_private_db;
pub use shardfile::{HEADER_LEN, ShardHeader};
pub use store::{GcReport, LEASE_GRACE, Pin, PutOutcome, Stat, Store, StoreConfig};
