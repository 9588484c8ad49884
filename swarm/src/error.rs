//! The crate's error type.

use std::time::Duration;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the peer layer.
///
/// Peers are named by their short endpoint id and shards by their CID string, so that a message
/// alone says which node and which data to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local endpoint could not be bound.
    #[error("binding endpoint on {bind}: {reason}")]
    Bind {
        /// The requested socket address.
        bind: String,
        /// Why binding failed.
        reason: String,
    },
    /// A node secret key had the wrong length.
    #[error("secret key is {len} bytes, expected {expected}")]
    SecretKeyLength {
        /// Length of the bytes given.
        len: usize,
        /// The only accepted length.
        expected: usize,
    },
    /// Connecting to a peer failed before any request was sent.
    #[error("connecting to peer {peer}: {reason}")]
    Connect {
        /// The peer dialled.
        peer: String,
        /// Why the connection failed.
        reason: String,
    },
    /// A peer did not answer within the time limit.
    #[error("peer {peer} did not finish {operation} within {limit:?}")]
    Timeout {
        /// The peer waited for.
        peer: String,
        /// The step that ran out of time (`connect`, `PUT`, `GET`…).
        operation: &'static str,
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// The peer timed out recently and is skipped for a while.
    #[error("peer {peer} is skipped for {left:?} more: it timed out recently")]
    PeerDown {
        /// The peer skipped.
        peer: String,
        /// Time until it is tried again.
        left: Duration,
    },
    /// A stream to a peer broke in the middle of a request.
    #[error("stream to peer {peer} failed during {operation}: {reason}")]
    Stream {
        /// The peer on the other end.
        peer: String,
        /// The request in flight.
        operation: &'static str,
        /// What the transport reported.
        reason: String,
    },
    /// A peer's reply did not follow the shard protocol.
    #[error("malformed reply from peer {peer}: {reason}")]
    MalformedReply {
        /// The peer that sent it.
        peer: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A peer returned bytes whose BLAKE3 hash is not the digest in the CID asked for.
    #[error("peer {peer} returned bytes that do not match shard {cid}")]
    Corrupt {
        /// The peer that sent the bytes.
        peer: String,
        /// The shard asked for.
        cid: String,
    },
    /// A CID is not one the shard protocol carries (CIDv1, codec raw or dag-cbor, BLAKE3
    /// multihash with a 32-byte digest), or not a manifest CID where one is required.
    #[error("CID {cid} is not a Cairn content CID: {reason}")]
    InvalidCid {
        /// The CID as given.
        cid: String,
        /// Which part is wrong.
        reason: String,
    },
    /// A request would exceed a protocol limit; nothing was sent.
    #[error("{what} is {len}, over the limit of {max}")]
    TooLarge {
        /// What is too large (`shard length`, `HAS batch`…).
        what: &'static str,
        /// The size asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A byte range ends before it starts; nothing was sent.
    #[error("range {start}..{end} ends before it starts")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// The peer refused a PUT because its quota cannot hold the shard.
    #[error("peer {peer} has no room for {needed} bytes ({free} bytes free)")]
    QuotaFull {
        /// The refusing peer.
        peer: String,
        /// Bytes the shard needs.
        needed: u64,
        /// Bytes the peer has free.
        free: u64,
    },
    /// The peer refused a DELETE because this endpoint did not PUT the shard.
    #[error("peer {peer} refused to delete shard {cid}: this endpoint is not its owner")]
    NotOwner {
        /// The refusing peer.
        peer: String,
        /// The shard.
        cid: String,
    },
    /// The peer rejected the request with an error status.
    #[error("peer {peer} rejected {operation} with status {status}: {message}")]
    Rejected {
        /// The rejecting peer.
        peer: String,
        /// The request rejected.
        operation: &'static str,
        /// Name of the wire status (`CID_MISMATCH`, `TOO_LARGE`…; see the protocol spec).
        status: &'static str,
        /// The peer's explanation, at most `MESSAGE_LEN_MAX` bytes.
        message: String,
    },
    /// A membership announcement was refused.
    #[error("announcement rejected: {reason}")]
    Announcement {
        /// Why (bad signature, stale, oversized, wrong network…).
        reason: String,
    },
    /// A holder record does not decode, breaks a limit or rule, or its signature does not verify.
    #[error("holder record rejected: {reason}")]
    Record {
        /// What was wrong with it.
        reason: String,
    },
    /// A name record does not decode, breaks a limit or rule, or a signature in it does not
    /// verify.
    #[error("name record rejected: {reason}")]
    Name {
        /// What was wrong with it.
        reason: String,
    },
    /// An audit receipt does not decode, breaks a limit or rule, or its signature does not
    /// verify.
    #[error("audit receipt rejected: {reason}")]
    Receipt {
        /// What was wrong with it.
        reason: String,
    },
    /// A lease does not decode, breaks a limit or rule, its signature does not verify, or its
    /// times are not ones the node judging it accepts.
    #[error("lease rejected: {reason}")]
    Lease {
        /// What was wrong with it.
        reason: String,
    },
    /// Serialized peer table bytes could not be read.
    #[error("peer table bytes unreadable: {reason}")]
    PeerTable {
        /// What was wrong.
        reason: String,
    },
    /// The gossip layer failed.
    #[error("gossip on topic {topic}: {reason}")]
    Gossip {
        /// The topic.
        topic: String,
        /// What iroh-gossip reported.
        reason: String,
    },
}

impl Error {
    /// Whether a peer that was reached ran out of time: it did not start its reply (or finish
    /// its request) within the limit ([`Error::Timeout`] of any step but `connect`). An audit
    /// batch not answered within `audit_timeout` is one. Disjoint from
    /// [`is_unreachable`](Self::is_unreachable).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { operation, .. } if *operation != CONNECT)
    }

    /// Whether the peer could not be reached at all: connecting failed or timed out, or it is
    /// skipped because it timed out recently ([`Error::PeerDown`]). Nothing was asked of it, so
    /// this says nothing about what it holds. A stream that broke mid-request is neither this
    /// nor a timeout.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::PeerDown { .. } => true,
            Error::Timeout { operation, .. } => *operation == CONNECT,
            _ => false,
        }
    }
}

/// The `operation` of a connect timeout.
pub(crate) const CONNECT: &str = "connect";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_unreachable_peers_are_told_apart() {
        let timeout = |operation| Error::Timeout {
            peer: "p".into(),
            operation,
            limit: Duration::from_secs(1),
        };
        assert!(timeout("AUDIT").is_timeout());
        assert!(!timeout("AUDIT").is_unreachable());
        assert!(timeout(CONNECT).is_unreachable());
        assert!(!timeout(CONNECT).is_timeout());
        let down = Error::PeerDown {
            peer: "p".into(),
            left: Duration::from_secs(1),
        };
        assert!(down.is_unreachable() && !down.is_timeout());
        let connect = Error::Connect {
            peer: "p".into(),
            reason: "refused".into(),
        };
        assert!(connect.is_unreachable() && !connect.is_timeout());
        let stream = Error::Stream {
            peer: "p".into(),
            operation: "AUDIT",
            reason: "reset".into(),
        };
        assert!(!stream.is_unreachable() && !stream.is_timeout());
    }
}
