//! A Cairn node and the network client.
//!
//! - [`StoreBackend`] serves a [`cairn_store::Store`] to the peer layer, committing concurrent
//!   PUTs from all peers in groups (one sync and one metadata commit per group).
//! - [`run_node`] is the daemon: an iroh endpoint with the shard protocol and gossip membership,
//!   a persisted peer table, periodic gc, graceful shutdown.
//! - The caretaker (`care`): every node audits the holders of the chunks it shares, keeps
//!   their reputation and the receipts it earns, and repairs lost shards without the read key.
//!   Its decisions (when a shard is lost, who cares for a chunk, where repairs go) are pure
//!   functions in [`policy`], which the network simulator calls too.
//! - Leases (`leases`): a publisher keeps its artifacts alive on their holders with signed
//!   leases ([`LeaseFile`], [`LeaseClient`]), which a node running on its data directory renews
//!   ([`RenewConfig`]); what nobody renews is let go.
//! - [`Network`] is the client side used by `cairn add/get` and the gateway: it learns the live
//!   peers from a bootstrap node, publishes an artifact (placement, parallel PUTs with a bounded
//!   number in flight, resume, holder record) and reads one back from any k shards per chunk.
//!
//! This crate knows the store and the peer layer; it knows neither HTTP nor the command line.

mod backend;
mod care;
mod client;
mod daemon;
mod error;
mod leases;
mod names;
pub mod policy;
mod receipts;
mod records;
mod status;

pub use backend::{LiveCounters, StoreBackend};
pub use cairn_swarm::ClientStats;
pub use care::{
    AUDITS_IN_FLIGHT, CareConfig, MISSES_TO_LOST, ROUNDS_PER_PERIOD, RoundReport, SAMPLE_SLOWER,
    chunk_key, repair_ranking,
};
pub use client::{
    ArtifactHealth, HolderHealth, Located, NetShards, Network, NetworkConfig, PROBE_PEERS_MAX,
    PeerAddr, PublishOptions, PublishReport, RemoteArtifact, RepairReport,
};
pub use daemon::{NodeConfig, NodeHandle, run_node, run_node_with_housekeeping};
pub use error::Error;
pub use leases::{
    LEASE_ASK_MAX, LEASE_STEP_TIMEOUT, LEASE_TARGETS_MAX, LEASE_TERM_MAX, LEASES_FILE, LeaseClient,
    LeaseFile, LeasePin, RenewConfig, Spread, find_holders, send_lease, sign_lease,
};
pub use names::{NAME_ASKS_MAX, NameLookup, NamePublished, store_kind};
pub use receipts::{RECEIPTS_EXPORT_MAX, ReceiptJson, VerifyReport, verify_receipts};
pub use records::record_nodes;
pub use status::{NodeStatus, PeerReputation};
