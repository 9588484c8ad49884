//! Cairn's peer layer: the only crate that knows iroh.
//!
//! - [`endpoint_offline`] / [`endpoint_online`] build iroh endpoints (loopback-only for tests and
//!   the devnet, n0 relays and address lookup for production).
//! - The shard protocol (ALPN [`SHARD_ALPN`]) moves content-addressed shards and manifests
//!   between nodes, hands out the signed membership announcements a node knows (PEERS) and
//!   stores signed holder records (PUT_RECORD, GET_RECORD): [`ShardServer`] serves a
//!   [`ShardBackend`], [`ShardClient`] talks to remote servers. The wire format is specified at
//!   the top of `protocol.rs`.
//! - [`HolderRecord`] says which node holds which shard of an artifact, signed by a key the
//!   artifact's manifest allows (its publisher's); [`choose_record`] is how a reader picks among
//!   the records peers send. Its byte layout is in `record.rs`.
//! - AUDIT asks a holder for storage proofs of shards it should hold; [`judge_audit`] checks
//!   each [`AuditReply`] against the shard's CID, and an auditor whose checks passed hands the
//!   holder a signed [`Receipt`] (RECEIPT). Its byte layout is in `receipt.rs`.
//! - A [`Lease`] is an artifact publisher's signed statement that the artifact is to be kept
//!   until a time; nodes store the latest (PUT_LEASE, GET_LEASE) and let the artifact go once
//!   it has ended. Its byte layout is in `lease.rs`.
//! - CIDs are cairn-store's ([`shard_cid`], [`manifest_cid`]); [`content_digest`] is the rule of
//!   which ones the protocol carries.
//! - [`fetch_any_k`] gathers any k verified shards of an erasure-coded chunk with hedging.
//! - [`Membership`] announces this node over iroh-gossip and keeps a [`PeerTable`] of live peers.
//! - [`place`] picks n distinct holders for a key by weighted rendezvous hashing.
//!
//! Every read from a peer is length-capped before anything is allocated and every wait on a peer
//! has a timeout; the limits are the named constants exported below.

#![warn(missing_docs)]

mod audit;
mod backend;
mod cids;
mod client;
mod endpoint;
mod error;
mod fetch;
mod lease;
mod membership;
mod name;
mod placement;
mod protocol;
mod receipt;
mod record;
mod server;
mod signed;

pub use audit::{AuditReply, AuditVerdict, judge_audit};
pub use backend::{BackendError, MemoryBackend, ShardBackend};
pub use cids::{
    CODEC_DAG_CBOR, CODEC_RAW, Cid, MULTIHASH_BLAKE3, content_digest, manifest_cid, shard_cid,
};
pub use client::{ClientStats, SLOW_AFTER, ShardClient, ShardConfig};
pub use endpoint::{
    BoundEndpoint, LOOPBACK_RECEIVE_WINDOW, RECEIVE_WINDOW, SECRET_KEY_LEN, endpoint_offline,
    endpoint_online, generate_secret_key, secret_key_from_bytes, secret_key_to_bytes,
};
pub use error::{Error, Result};
pub use fetch::{FetchError, ShardFailure, ShardLocation, fetch_any_k};
pub use lease::{LEASE_AHEAD_MAX, LEASE_ISSUED_AHEAD_MAX, LEASE_LEN_MAX, Lease, SignedLease};
pub use membership::{
    ADDRS_MAX, ANNOUNCE_INTERVAL, ANNOUNCEMENT_LEN_MAX, ANNOUNCEMENTS_PER_SEC, Announcement,
    Membership, MembershipConfig, PEER_FAILURES_MAX, PEER_SILENCE_MAX, PEER_TABLE_PEERS_MAX,
    PeerInfo, PeerTable, announce_interval_for, silence_for, topic_id,
};
pub use name::{
    Delegation, GRANTS_MAX, NAME_PART_LEN_MAX, NAME_RECORD_LEN_MAX, NAME_REVISIONS_MAX, NameKind,
    NameRecord, POLICY_LEN_MAX, SignedName, check_name_part, grant_context, merge_answers,
    org_record_key,
};
pub use placement::{RECORD_REPLICAS, artifact_record_key, place, record_ranking};
#[doc(hidden)]
pub use protocol::fuzzing;
pub use protocol::{
    AUDIT_ANSWER_LEN_MAX, AUDIT_BATCH_MAX, AUDIT_REPLY_LEN_MAX, AUDIT_TIMEOUT, CID_LEN_MAX,
    CONNECT_TIMEOUT, HAS_BATCH_MAX, PEER_DOWN_FOR, PEER_INFLIGHT_MAX, PEER_PAGES_MAX,
    PEERS_REPLY_MAX, POOL_PEERS_MAX, PROTOCOL_VERSION, RECORD_LEN_MAX, REPLY_START_TIMEOUT,
    REQUEST_TIMEOUT, SHARD_ALPN, SHARD_LEN_MAX,
};
pub use receipt::{RECEIPT_LEN_MAX, RECEIPT_SKEW_MAX, Receipt, SignedReceipt};
pub use record::{
    HolderRecord, RECORD_AHEAD_MAX, RECORD_CHUNKS_MAX, RECORD_NODES_MAX, RECORD_SHARDS_MAX,
    SignedRecord, choose_record, record_version_now,
};
pub use server::{PeerSource, ShardServer};

// The iroh types that appear in this crate's API, so that callers need no iroh dependency of
// their own and always agree with us on its version.
pub use iroh::{EndpointAddr, EndpointId, SecretKey, protocol::Router};
pub use iroh_gossip::{ALPN as GOSSIP_ALPN, Gossip, TopicId};

#[cfg(test)]
mod fuzz_seeds;
#[cfg(test)]
mod net_tests;
