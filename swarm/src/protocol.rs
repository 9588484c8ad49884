//! The shard protocol, ALPN `/cairn/shard/1`: its specification, limits and frame codec.
//!
//! # Participants
//!
//! A *client* (a publisher placing shards, a reader or repairer fetching them, an owner
//! deleting them) and a *server* (a storage node that serves a [`ShardBackend`]). Both are iroh
//! endpoints, so every connection is authenticated by the ed25519 endpoint id of each side: the
//! server knows who is asking without any signature inside the protocol.
//!
//! # Goals
//!
//! - Be paranoid about data integrity. Content is named by its CID: CIDv1, multihash BLAKE3
//!   0x1e with a 32-byte digest, and codec raw 0x55 (a shard) or dag-cbor 0x71 (a manifest,
//!   which travels over the same PUT and GET as shards). The digest is checked by the server
//!   before it commits a PUT, by the server before it serves a whole blob, and by the client on
//!   every whole-blob GET reply. Bad bytes from a peer are an error naming the peer and the CID.
//! - Holders can be held to account: AUDIT asks a holder for BLAKE3/bao proofs of byte ranges
//!   that a fresh nonce picks, checked against the shard CIDs alone, and an auditor that
//!   verified them can hand the holder a signed [`Receipt`] (RECEIPT) as proof of its service.
//! - Reads do not depend on membership staying the same: a signed, versioned *holder record*
//!   ([`HolderRecord`]) says which node holds which shard of an artifact, and nodes store and
//!   serve it (PUT_RECORD, GET_RECORD). Only a key the artifact's manifest allows may sign
//!   one, so a peer can neither hide an artifact behind a forged record nor freeze it.
//! - A process without gossip (a reader, a gateway) can learn the network from any one node:
//!   PEERS returns the signed membership announcements that node knows, which the client
//!   verifies one by one.
//! - Put a limit on everything: every length on the wire is checked against a named maximum
//!   before anything is allocated, every request and connect has a timeout, the number of
//!   requests in flight per peer is bounded on both sides.
//! - Only the endpoint that PUT a shard may DELETE it.
//! - Abandoned data does not fill disks forever: the artifact's publisher keeps it alive with
//!   signed *leases* (PUT_LEASE, GET_LEASE), which any node can check against the manifest and
//!   pass on; once the latest lease has ended, nodes may let the artifact go.
//! - Never panic on input: a malformed or oversized frame gets an error reply and the stream is
//!   closed; the connection and the node keep serving.
//!
//! # Non-goals
//!
//! - Streaming shards larger than [`SHARD_LEN_MAX`]: shards are the output of erasure coding a
//!   chunk of at most a few MiB, so one frame holds one shard.
//! - Verifying byte ranges on the client: a range reply is only length-checked; the storage proof
//!   protocol (BLAKE3/bao slices) is the place for verified ranges.
//! - Confidentiality of the shard bytes: they are already sealed (AES-256-GCM) above this layer;
//!   QUIC encrypts the transport.
//!
//! # Framing
//!
//! One request per bidirectional QUIC stream. The client opens the stream, writes the request,
//! finishes its send side; the server writes one reply and finishes. All integers are
//! big-endian. A CID is encoded as `u8 len` (1..=[`CID_LEN_MAX`]) followed by its binary form.
//!
//! Request:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version, [`PROTOCOL_VERSION`] = 1 |
//! | 1 | 1 | request type: 0 PUT, 1 GET, 2 HAS, 3 DELETE, 4 PEERS, 5 PUT_RECORD, 6 GET_RECORD, 7 AUDIT, 8 RECEIPT, 9 GET_REPAIR_RECORD, 10 PUT_LEASE, 11 GET_LEASE, 12 PUT_NAME, 13 GET_NAME, 14 PEERS_AFTER; 15..=255 reserved |
//! | 2 | … | body |
//!
//! - PUT: `cid` (raw or dag-cbor), `u32 len` (≤ [`SHARD_LEN_MAX`]), `len` content bytes.
//! - GET: `cid` (raw or dag-cbor), `u8 has_range` (0 or 1), then if 1: `u64 start`, `u64 end`
//!   (exclusive, `start <= end`, `end - start <= SHARD_LEN_MAX`). A range past the end of the
//!   content is clamped to it.
//! - HAS: `u16 count` (1..=[`HAS_BATCH_MAX`]), then `count` CIDs.
//! - DELETE: `cid`.
//! - PEERS: empty body.
//! - PEERS_AFTER: 32 bytes, an endpoint id (all zeros: from the start): a page of the
//!   announcements PEERS would send, those whose endpoint id is above it, in endpoint-id order.
//!   A client pages through a membership larger than one reply by asking again after the
//!   highest id it got, until a page has fewer than [`PEERS_REPLY_MAX`].
//! - PUT_RECORD: `u32 len` (1..=[`RECORD_LEN_MAX`]), `len` bytes of a signed holder record (its
//!   layout is in the `record` module). The length is checked before anything is allocated, and
//!   the buffer grows only as bytes arrive.
//! - GET_RECORD: `cid` of the artifact's manifest (dag-cbor).
//! - GET_REPAIR_RECORD: the same body; asks for the artifact's repair record (below).
//! - AUDIT: `nonce` (32 bytes, fresh per audit), `u64 lease_until_ms`, `u16 count`
//!   (1..=[`AUDIT_BATCH_MAX`]), then `count` shard CIDs (codec raw only; any other CID is
//!   refused with INVALID_CID). `lease_until_ms` 0 asks for no lease renewal; otherwise the
//!   auditor, if it is an owner of the shards (it PUT them), asks the holder to keep each shard it
//!   answers for until that Unix-ms time (see *Audits*).
//! - RECEIPT: `u32 len` (1..=[`RECEIPT_LEN_MAX`]), `len` bytes of a signed audit receipt (its
//!   layout is in the `receipt` module).
//! - PUT_LEASE: `u32 len` (1..=[`LEASE_LEN_MAX`]), `len` bytes of a signed lease (its layout is
//!   in the `lease` module).
//! - GET_LEASE: `cid` of the artifact's manifest (dag-cbor).
//! - PUT_NAME: `u32 len` (1..=[`NAME_RECORD_LEN_MAX`]), `len` bytes of a signed name record
//!   (its layout is in the `name` module).
//! - GET_NAME: `u8 kind` (0 model, 1 dataset), `u8 len` and the org, `u8 len` and the name
//!   (each a valid name part, 1..=[`NAME_PART_LEN_MAX`] bytes), `u8 count`
//!   (1..=[`NAME_REVISIONS_MAX`]): the newest `count` revisions of the name are asked for.
//!
//! Nothing may follow the body; trailing bytes make the request malformed.
//!
//! Reply:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | protocol version |
//! | 1 | 1 | status (below) |
//! | 2 | … | body |
//!
//! Status 0 OK, body by request type:
//! - PUT: empty (the shard is committed).
//! - GET: `u32 len` (≤ [`SHARD_LEN_MAX`]), `len` bytes.
//! - HAS: `u16 count` (equal to the request's), `count` bytes each 0 (not held) or 1 (held).
//! - DELETE: `u8 deleted`: 1 if the requester's copy was removed, 0 if the shard was not held.
//! - PEERS and PEERS_AFTER: `u16 count` (≤ [`PEERS_REPLY_MAX`]), then per announcement `u16 len`
//!   (1..=[`ANNOUNCEMENT_LEN_MAX`]) and `len` bytes of a signed membership announcement (layout
//!   in the `membership` module). The node's own announcement is among them when it has
//!   membership, then those of the peers it considers alive (heard from within
//!   `PEER_SILENCE_MAX`, not failing); a node without a peer source answers count 0. The client verifies each one
//!   against its network and drops those that fail; a count or length over its cap makes the
//!   whole reply malformed.
//! - PUT_RECORD: empty (the record is stored, or an identical one already was).
//! - GET_RECORD and GET_REPAIR_RECORD: `u32 len` (1..=[`RECORD_LEN_MAX`]), `len` bytes of the
//!   signed record. The client verifies the signature and that the record names the artifact
//!   asked for.
//! - AUDIT: `u16 count` (equal to the request's), then per shard, in the request's order, `u8
//!   state`: 0 answered, followed by `u32 len` (≤ [`AUDIT_ANSWER_LEN_MAX`]) and `len` bytes of
//!   the answer (`cairn_artifact::audit_answer`: per challenged range a `u32` little-endian
//!   length and a bao proof); 1 not held; 2 held, but the holder found its copy corrupted. Any
//!   other state, a count that differs or a length over the cap makes the whole reply malformed.
//!   The whole reply is at most [`AUDIT_REPLY_LEN_MAX`] bytes.
//! - RECEIPT: empty (the receipt is stored).
//! - PUT_LEASE: empty (the lease is stored, or a lease ending no earlier already was).
//! - GET_LEASE: `u32 len` (1..=[`LEASE_LEN_MAX`]), `len` bytes of the signed lease stored. The
//!   client verifies the signature and that the lease names the artifact asked for.
//! - PUT_NAME: empty (the record is stored, or an identical one already was).
//! - GET_NAME: `u8 count` (1..=the count asked), then per record, newest first, `u16 len`
//!   (1..=[`NAME_RECORD_LEN_MAX`]) and `len` bytes of a signed name record. The client
//!   verifies each and drops those not of the name asked for.
//!
//! Status 1 NOT_FOUND (GET of content not held, GET_RECORD of an artifact without a record,
//! GET_LEASE of an artifact without a lease, GET_NAME of a name without records): empty body.
//!
//! Every other status is an error with body `u16 len` (≤ `MESSAGE_LEN_MAX` = 1024) and a UTF-8
//! message; status 8 QUOTA_FULL puts `u64 needed`, `u64 free` before the message.
//! 2 MALFORMED, 3 UNSUPPORTED_VERSION, 4 UNSUPPORTED_REQUEST, 5 TOO_LARGE, 6 CID_MISMATCH (PUT
//! bytes do not hash to the CID), 7 INVALID_CID (not a shard CID), 8 QUOTA_FULL, 9 NOT_OWNER,
//! 10 CORRUPTED (the server's stored copy failed verification), 11 INTERNAL (backend I/O),
//! 12 STALE_RECORD (PUT_RECORD whose version is not above the stored record's, or equal to it
//! with different bytes), 13 NOT_PUBLISHER (PUT_RECORD signed by a key the artifact's manifest
//! does not allow), 14 INVALID_RECORD (PUT_RECORD bytes that do not decode, whose signature
//! does not verify, whose shape differs from the manifest's or whose version is dated too far
//! ahead), 15 UNKNOWN_ARTIFACT (PUT_RECORD for an artifact whose manifest the server does not
//! hold; also PUT_LEASE), 16 INVALID_RECEIPT (RECEIPT bytes that do not decode or whose
//! signature does not verify, whose auditor is not the sending endpoint, whose holder is not
//! this node, or whose time is more than [`RECEIPT_SKEW_MAX`] away from the server's clock), 17
//! INVALID_LEASE (PUT_LEASE bytes that do not decode or whose signature does not verify, or
//! whose end is more than [`LEASE_AHEAD_MAX`] or signing time more than
//! [`LEASE_ISSUED_AHEAD_MAX`] past the server's clock). NOT_PUBLISHER also answers a PUT_LEASE
//! signed by a key the artifact's manifest does not allow. 18 INVALID_NAME (PUT_NAME bytes that
//! do not decode, whose signatures do not verify or whose version is dated more than
//! `RECORD_AHEAD_MAX` past the server's clock), 19 ORG_CLAIMED (PUT_NAME of an org whose records
//! on this node are under another org key). STALE_RECORD also answers a PUT_NAME whose version
//! is not above the newest the server holds of the name (unless it is identical to a stored
//! one). Statuses 20..=255 are reserved.
//!
//! # Holder records
//!
//! Who may sign an artifact's records is the artifact's to say: its manifest (format 2) names
//! the allowed keys (`record_signers`, the publisher's first; later, repairers it delegates
//! to), and the manifest is bound to its CID, which readers hold in their capability. So a
//! server accepts PUT_RECORD only when:
//! - it holds the artifact's manifest (UNKNOWN_ARTIFACT otherwise): a node keeps records only
//!   where it has a reason to, they count against its quota, and they are collected with the
//!   manifest;
//! - the record's signer is one of the manifest's `record_signers`, or it is a *repair record*
//!   (below) whose signer is a node of the stored records (NOT_PUBLISHER otherwise);
//! - the record fits the manifest (chunk count, k, m) and its version, the signer's clock in
//!   Unix ms, is at most [`RECORD_AHEAD_MAX`] past the server's clock (INVALID_RECORD), so that
//!   no record, even one an allowed signer got wrong, can block later ones for longer than that;
//! - its version is above the stored record's (STALE_RECORD; the same version with identical
//!   bytes is an idempotent OK). A stored record whose signer the manifest does not allow is
//!   replaced whatever its version.
//!
//! ## Repair records
//!
//! A node that re-creates lost shards (the `cairn-node` caretaker) is usually not a key the
//! manifest names, and must still say where the new shards are. Its record goes to a second
//! slot per artifact, the *repair record*, under the same checks (manifest held, shape, clock,
//! version above the stored repair record's) plus one: its signer must be a node the stored
//! publisher's record or the stored repair record names, that is, a node already entrusted
//! with the artifact's shards by the publisher or by an accepted repair. The publisher's
//! record is never replaced by a repair record, so the root of trust stays in place, and
//! GET_RECORD keeps answering it; GET_REPAIR_RECORD answers the repair record (NOT_FOUND if
//! none). Readers apply the same rule to what they receive, use a repair record newer than the
//! publisher's as their map and the publisher's holders as alternates, and verify every shard
//! by CID: a wrong or hostile repair record (from a holder gone bad) costs them requests to the
//! wrong nodes, never data, and the publisher's record plus the repair ranking still find it.
//!
//! A server stores at most one record per artifact: any allowed signer may replace it with a
//! later one. Checking and storing happen under one lock per server, so two racing PUT_RECORDs
//! cannot both replace the same version. Readers trust no server: they fetch the manifest,
//! check it against its CID and use only records its `record_signers` signed
//! ([`choose_record`]).
//!
//! # Leases
//!
//! A node holds a remote publisher's manifest and shards because the publisher PUT them; without
//! more it would hold them until the publisher DELETEs them, which a publisher that went away
//! never does. A *lease* ([`Lease`]) is the publisher's signed statement that the artifact is
//! to be kept until a time. Like holder records, it is signed by a key the artifact's manifest
//! allows (`record_signers`), so it can be checked against the manifest alone and passed on by
//! anyone: a repairer that places a shard on a new holder sends the lease along, so that the
//! new holder keeps the shard exactly as long as the others. A server accepts PUT_LEASE only
//! when:
//! - the bytes decode and the signature verifies (INVALID_LEASE);
//! - it holds the artifact's manifest (UNKNOWN_ARTIFACT): a lease is kept beside its manifest
//!   and collected with it;
//! - the signer is one of the manifest's `record_signers` (NOT_PUBLISHER);
//! - the lease ends at most [`LEASE_AHEAD_MAX`] (400 days) and was signed at most
//!   [`LEASE_ISSUED_AHEAD_MAX`] (5 minutes) past the server's clock (INVALID_LEASE), so that a
//!   leaked key cannot pin data for ever and a publisher renews at least that often.
//!
//! It stores the lease only if it ends later than the one stored; an earlier or equal one is an
//! idempotent OK and changes nothing: a lease is never shortened (a publisher that wants its
//! data gone DELETEs it). Checking and storing happen under one lock per server. GET_LEASE
//! answers the stored lease, or NOT_FOUND.
//!
//! What a lease changes on the node (cairn-store's gc): a manifest with a lease is kept while
//! its lease, plus a grace period (7 days by default), has not ended, whoever owns it; once it
//! has, the manifest, its records, its lease and the shards only it needed go, with the owner
//! claims on them. A manifest without any lease is kept while owned, as before leases.
//!
//! # Names
//!
//! Repository names live on the network as signed *name records* (the `name` module: the
//! format, who owns an org, grants to gateways). The records of an org are kept by the
//! `RECORD_REPLICAS` nodes ranked first for it (`record_ranking` of `org_record_key`), not by
//! every node, so a publish and a lookup cost a bounded number of requests whatever the size
//! of the network. A server accepts PUT_NAME only when:
//! - the bytes decode, the delegation (if any) and the signature verify, and the version is
//!   dated at most `RECORD_AHEAD_MAX` past its clock (INVALID_NAME);
//! - the org's records it holds are under the same org key, or it holds none (ORG_CLAIMED):
//!   first come, first served, per node;
//! - the version is above the newest it holds of the name (STALE_RECORD), or the bytes are
//!   identical to a record it holds (an idempotent OK). Two records of the same version and
//!   different bytes: the one a node got first stays there, and readers order them by bytes.
//!
//! Checking and storing happen under one lock per server. It keeps the newest
//! `NAME_REVISIONS_MAX` revisions per name. GET_NAME answers the newest `count` it holds,
//! verified again before they are sent, or NOT_FOUND. Any node may hold records of any org (the
//! ranking moves with membership, and nodes hand an org's records, oldest first, to the nodes
//! now ranked for it); the claim check is what keeps a squatter out, and readers trust the org
//! key most of the ranked nodes hold.
//!
//! # Audits
//!
//! Storage proofs: for each shard of an AUDIT, the nonce and the CID pick
//! `cairn_artifact::AUDIT_GROUPS` distinct 16 KiB chunk groups (`challenge_ranges`), which the
//! holder answers with bao range proofs; the auditor checks them against the CID and the shard
//! size it knows from the manifest ([`judge_audit`]). What passing proves, and with what
//! probability a holder that kept only part of a shard passes, is in `cairn_artifact`'s `audit`
//! module. A holder cannot know which groups are asked before the nonce arrives, and an answer
//! made for one nonce fails for another.
//!
//! - Deadline: the auditor expects the first byte of the reply within its `audit_timeout`
//!   (default [`AUDIT_TIMEOUT`]) of sending the batch, a limit on the whole batch. A holder that
//!   must fetch the shard from elsewhere first is too late: the timeout is a distinct error
//!   ([`Error::is_timeout`]), which the auditor counts apart from a failed proof. The server stops
//!   working on a batch it could not answer within its own `audit_timeout` and resets the stream.
//! - Cost: the answer is at most [`AUDIT_ANSWER_LEN_MAX`] (about 66 KiB) per shard whatever its
//!   size. The server computes it off the async threads, shard after shard; a backend that
//!   keeps outboards reads only the groups asked, the default (`ShardBackend::audit`) reads
//!   and hashes whole shards, up to 64 × 8 MiB per request. Like every request, at most
//!   [`PEER_INFLIGHT_MAX`] AUDITs per connection are handled at once.
//! - Leases: for each shard answered (state 0), when `lease_until_ms` is not 0, the server asks
//!   its backend to renew the requester's lease on it to that time
//!   ([`ShardBackend::renew_lease`]); the backend renews only the leases of an owner, and decides
//!   how far ahead it accepts. Renewal is best effort: its failure is logged and never changes
//!   the answer. An auditor that is not an owner sends 0.
//! - Receipts: an auditor whose checks passed may sign a [`Receipt`] and send it to the holder
//!   (RECEIPT). The server keeps it only if its signature verifies, its auditor is the endpoint
//!   sending it (the QUIC connection authenticates it), its holder is this node, and its time is
//!   within [`RECEIPT_SKEW_MAX`] of the server's clock. A server built without its own endpoint
//!   id ([`ShardServer::with_endpoint_id`]) cannot check the holder and answers RECEIPT with
//!   UNSUPPORTED_REQUEST.
//!
//! # Limits and timeouts
//!
//! The server reads, handles and answers one request within [`REQUEST_TIMEOUT`], then resets the
//! stream; the client applies [`CONNECT_TIMEOUT`] to connecting and [`REQUEST_TIMEOUT`] to each
//! request, and expects the first byte of the reply to a read (GET, HAS, PEERS, GET_RECORD)
//! within [`REPLY_START_TIMEOUT`]; a peer that times out is skipped for [`PEER_DOWN_FOR`]. At most [`PEER_INFLIGHT_MAX`] requests per connection are handled at once by the
//! server and at most as many per peer are sent by a client.
//!
//! # Cancellation
//!
//! Dropping a client request future resets its stream; the server notices at its next read or
//! write. A PUT whose bytes were fully received may still be committed after the client gave up:
//! shards are content-addressed, so a later retry of the same PUT is harmless. A DELETE likewise
//! may or may not have happened; repeating it returns `deleted = 0` or `NOT_OWNER`. A PUT_RECORD
//! likewise may have been stored; repeating it is an idempotent OK. An AUDIT given up may still
//! have renewed leases; a RECEIPT may have been kept (a backend may keep identical bytes once).
//! A PUT_LEASE or PUT_NAME may have been stored; repeating it is an idempotent OK.
//!
//! # Version history
//!
//! - `/cairn/shard/1`, version byte 1: PUT, GET, HAS, DELETE of raw shards; then, compatibly
//!   (new request types and statuses in the reserved ranges), dag-cbor manifests over PUT and
//!   GET, PEERS, PUT_RECORD and GET_RECORD. An older server answers the new requests with
//!   UNSUPPORTED_REQUEST. Then PUT_RECORD accepted only beside the manifest and from a signer
//!   it names, versions dated at most [`RECORD_AHEAD_MAX`] ahead, and status 15
//!   UNKNOWN_ARTIFACT (hardening item 1; the framing is unchanged). Then, compatibly, AUDIT
//!   (type 7) and RECEIPT (type 8) with status 16 INVALID_RECEIPT (storage proofs); an older
//!   server answers them with UNSUPPORTED_REQUEST. Then repair records: PUT_RECORD from a
//!   holder the manifest does not name goes to the repair slot, read with GET_REPAIR_RECORD
//!   (type 9); an older server refuses the first with NOT_PUBLISHER and the second with
//!   UNSUPPORTED_REQUEST. Then, compatibly, leases: PUT_LEASE (type 10) and GET_LEASE (type 11)
//!   with status 17 INVALID_LEASE; an older server answers them with UNSUPPORTED_REQUEST.
//!   Then, compatibly, names: PUT_NAME (type 12) and GET_NAME (type 13) with statuses 18
//!   INVALID_NAME and 19 ORG_CLAIMED; an older server answers them with UNSUPPORTED_REQUEST.
//!
//! [`ShardBackend`]: crate::ShardBackend
//! [`HolderRecord`]: crate::HolderRecord
//! [`RECORD_AHEAD_MAX`]: crate::RECORD_AHEAD_MAX
//! [`choose_record`]: crate::choose_record
//! [`ANNOUNCEMENT_LEN_MAX`]: crate::ANNOUNCEMENT_LEN_MAX
//! [`Receipt`]: crate::Receipt
//! [`RECEIPT_LEN_MAX`]: crate::RECEIPT_LEN_MAX
//! [`RECEIPT_SKEW_MAX`]: crate::RECEIPT_SKEW_MAX
//! [`judge_audit`]: crate::judge_audit
//! [`Error::is_timeout`]: crate::Error::is_timeout
//! [`ShardBackend::renew_lease`]: crate::ShardBackend::renew_lease
//! [`ShardServer::with_endpoint_id`]: crate::ShardServer::with_endpoint_id
//! [`Lease`]: crate::Lease
//! [`LEASE_LEN_MAX`]: crate::LEASE_LEN_MAX
//! [`LEASE_AHEAD_MAX`]: crate::LEASE_AHEAD_MAX
//! [`LEASE_ISSUED_AHEAD_MAX`]: crate::LEASE_ISSUED_AHEAD_MAX

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cairn_artifact::{AUDIT_GROUP_LEN, AUDIT_GROUPS};
use cid::Cid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::audit::AuditReply;
use crate::cids::shard_digest;
use crate::lease::LEASE_LEN_MAX;
use crate::membership::ANNOUNCEMENT_LEN_MAX;
use crate::name::{
    NAME_PART_LEN_MAX, NAME_RECORD_LEN_MAX, NAME_REVISIONS_MAX, NameKind, check_name_part,
    kind_byte, kind_from_byte,
};
use crate::receipt::RECEIPT_LEN_MAX;

/// ALPN of the shard protocol; the trailing number is its major version.
pub const SHARD_ALPN: &[u8] = b"/cairn/shard/1";
/// Version byte at the start of every request and reply.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest shard accepted on the wire, in bytes.
pub const SHARD_LEN_MAX: u32 = 8 * 1024 * 1024;
/// Largest encoded CID accepted on the wire, in bytes.
pub const CID_LEN_MAX: usize = 64;
/// Most CIDs in one HAS request.
pub const HAS_BATCH_MAX: usize = 1024;
/// Most announcements in one PEERS reply.
pub const PEERS_REPLY_MAX: usize = 256;
/// Most PEERS_AFTER pages a client asks one peer for: enough for a full peer table
/// (`PEER_TABLE_PEERS_MAX`).
pub const PEER_PAGES_MAX: usize = crate::membership::PEER_TABLE_PEERS_MAX.div_ceil(PEERS_REPLY_MAX);
/// Largest signed holder record accepted, in bytes (on the wire and by
/// [`HolderRecord::verify`](crate::HolderRecord::verify)).
pub const RECORD_LEN_MAX: u32 = 32 * 1024 * 1024;
/// Longest error message in a reply, in bytes.
pub(crate) const MESSAGE_LEN_MAX: usize = 1024;
/// Time allowed to establish a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one request, from opening its stream to the end of the reply. 8 MiB at a
/// slow 1 MB/s takes 8 s, so 30 s leaves room without letting a stalled peer hold a slot long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a peer has to start answering a request that reads (GET, HAS, PEERS, GET_RECORD), from
/// the moment it is sent. A live peer answers from its disk in milliseconds; a peer that died
/// without closing its connection never does, and without this limit a read would wait out the
/// whole [`REQUEST_TIMEOUT`] before trying elsewhere. Writes (PUT, PUT_RECORD) are answered
/// only once stored, so they get the request timeout alone.
pub const REPLY_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer that timed out is skipped (its requests fail at once), so that a dead holder
/// costs one timeout rather than one per shard.
pub const PEER_DOWN_FOR: Duration = Duration::from_secs(10);
/// Requests in flight per peer, on either side.
pub const PEER_INFLIGHT_MAX: usize = 16;
/// Peers whose connections a client keeps open at once.
pub const POOL_PEERS_MAX: usize = 256;
/// Most shards in one AUDIT request (and in one [`Receipt`](crate::Receipt)).
pub const AUDIT_BATCH_MAX: usize = 64;
/// Time a holder has to start its reply to an AUDIT batch, from the moment it is sent. Reading
/// 64 shards of a few hundred KiB from a local disk and proving 4 groups of each takes well
/// under a second; a holder that has to fetch the data from elsewhere first takes longer.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of one node of a bao tree in a proof: the hashes of its two children.
const BAO_PARENT_LEN: u64 = 64;
/// Chunk groups of the largest shard.
const AUDIT_SHARD_GROUPS_MAX: u64 = (SHARD_LEN_MAX as u64).div_ceil(AUDIT_GROUP_LEN);
/// Parents on the path from the root of the largest shard's bao tree to one of its groups:
/// ceil(log2(groups)), 9 for 8 MiB of 16 KiB groups.
const AUDIT_TREE_DEPTH_MAX: u64 = if AUDIT_SHARD_GROUPS_MAX <= 1 {
    0
} else {
    (u64::BITS - (AUDIT_SHARD_GROUPS_MAX - 1).leading_zeros()) as u64
};
/// Longest answer for one shard in an AUDIT reply: per challenged group its `u32` length, the
/// group and one parent per tree level, for a shard of [`SHARD_LEN_MAX`]: 4 × (4 + 16 384 +
/// 64 × 9) = 67 856 bytes. Smaller shards have fewer levels and no more groups.
pub const AUDIT_ANSWER_LEN_MAX: u32 =
    (AUDIT_GROUPS as u64 * (4 + AUDIT_GROUP_LEN + BAO_PARENT_LEN * AUDIT_TREE_DEPTH_MAX)) as u32;
/// Longest successful AUDIT reply: version, status, count and [`AUDIT_BATCH_MAX`] answers of
/// [`AUDIT_ANSWER_LEN_MAX`] with their state and length (about 4.1 MiB).
pub const AUDIT_REPLY_LEN_MAX: usize =
    2 + 2 + AUDIT_BATCH_MAX * (1 + 4 + AUDIT_ANSWER_LEN_MAX as usize);

// A CIDv1 raw BLAKE3 is 36 bytes; the cap leaves room for other hashes without inviting abuse.
const _: () = assert!(CID_LEN_MAX >= 36 && CID_LEN_MAX <= u8::MAX as usize);
const _: () = assert!(HAS_BATCH_MAX <= u16::MAX as usize);
const _: () = assert!(PEERS_REPLY_MAX <= u16::MAX as usize);
// A full PEERS reply stays small enough to hold in memory without thought (about 128 KiB).
const _: () = assert!(PEERS_REPLY_MAX * (ANNOUNCEMENT_LEN_MAX + 2) <= 256 * 1024);
const _: () = assert!(RECORD_LEN_MAX as usize <= usize::MAX / 2);
const _: () = assert!(MESSAGE_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(CONNECT_TIMEOUT.as_millis() < REQUEST_TIMEOUT.as_millis());
const _: () = assert!(REPLY_START_TIMEOUT.as_millis() < REQUEST_TIMEOUT.as_millis());
const _: () = assert!(AUDIT_BATCH_MAX >= 1 && AUDIT_BATCH_MAX <= u16::MAX as usize);
const _: () = assert!(AUDIT_TIMEOUT.as_millis() < REQUEST_TIMEOUT.as_millis());
const _: () = assert!(AUDIT_TREE_DEPTH_MAX == 9);
const _: () = assert!(AUDIT_ANSWER_LEN_MAX == 67_856);
// The u32 cast above did not truncate.
const _: () = assert!(
    AUDIT_GROUPS as u64 * (4 + AUDIT_GROUP_LEN + BAO_PARENT_LEN * AUDIT_TREE_DEPTH_MAX)
        <= u32::MAX as u64
);
// A full AUDIT reply is no larger than a GET reply of the largest shard.
const _: () = assert!(AUDIT_REPLY_LEN_MAX <= SHARD_LEN_MAX as usize);
const _: () = assert!(RECEIPT_LEN_MAX as usize <= 64 * 1024);
const _: () = assert!(LEASE_LEN_MAX as usize <= 1024);

/// Request type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Put = 0,
    Get = 1,
    Has = 2,
    Delete = 3,
    Peers = 4,
    PutRecord = 5,
    GetRecord = 6,
    Audit = 7,
    Receipt = 8,
    GetRepairRecord = 9,
    PutLease = 10,
    GetLease = 11,
    PutName = 12,
    GetName = 13,
    PeersAfter = 14,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Put => "PUT",
            Kind::Get => "GET",
            Kind::Has => "HAS",
            Kind::Delete => "DELETE",
            Kind::Peers => "PEERS",
            Kind::PutRecord => "PUT_RECORD",
            Kind::GetRecord => "GET_RECORD",
            Kind::Audit => "AUDIT",
            Kind::Receipt => "RECEIPT",
            Kind::GetRepairRecord => "GET_REPAIR_RECORD",
            Kind::PutLease => "PUT_LEASE",
            Kind::GetLease => "GET_LEASE",
            Kind::PutName => "PUT_NAME",
            Kind::GetName => "GET_NAME",
            Kind::PeersAfter => "PEERS_AFTER",
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Kind::Put,
            1 => Kind::Get,
            2 => Kind::Has,
            3 => Kind::Delete,
            4 => Kind::Peers,
            5 => Kind::PutRecord,
            6 => Kind::GetRecord,
            7 => Kind::Audit,
            8 => Kind::Receipt,
            9 => Kind::GetRepairRecord,
            10 => Kind::PutLease,
            11 => Kind::GetLease,
            12 => Kind::PutName,
            13 => Kind::GetName,
            14 => Kind::PeersAfter,
            _ => return None,
        })
    }
}

/// Reply status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    Malformed = 2,
    UnsupportedVersion = 3,
    UnsupportedRequest = 4,
    TooLarge = 5,
    CidMismatch = 6,
    InvalidCid = 7,
    QuotaFull = 8,
    NotOwner = 9,
    Corrupted = 10,
    Internal = 11,
    StaleRecord = 12,
    NotPublisher = 13,
    InvalidRecord = 14,
    UnknownArtifact = 15,
    InvalidReceipt = 16,
    InvalidLease = 17,
    InvalidName = 18,
    OrgClaimed = 19,
}

impl Status {
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Malformed,
            3 => Status::UnsupportedVersion,
            4 => Status::UnsupportedRequest,
            5 => Status::TooLarge,
            6 => Status::CidMismatch,
            7 => Status::InvalidCid,
            8 => Status::QuotaFull,
            9 => Status::NotOwner,
            10 => Status::Corrupted,
            11 => Status::Internal,
            12 => Status::StaleRecord,
            13 => Status::NotPublisher,
            14 => Status::InvalidRecord,
            15 => Status::UnknownArtifact,
            16 => Status::InvalidReceipt,
            17 => Status::InvalidLease,
            18 => Status::InvalidName,
            19 => Status::OrgClaimed,
            _ => return None,
        })
    }

    /// The status's name in the spec, as carried by [`Error::Rejected`](crate::Error::Rejected).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::Malformed => "MALFORMED",
            Status::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Status::UnsupportedRequest => "UNSUPPORTED_REQUEST",
            Status::TooLarge => "TOO_LARGE",
            Status::CidMismatch => "CID_MISMATCH",
            Status::InvalidCid => "INVALID_CID",
            Status::QuotaFull => "QUOTA_FULL",
            Status::NotOwner => "NOT_OWNER",
            Status::Corrupted => "CORRUPTED",
            Status::Internal => "INTERNAL",
            Status::StaleRecord => "STALE_RECORD",
            Status::NotPublisher => "NOT_PUBLISHER",
            Status::InvalidRecord => "INVALID_RECORD",
            Status::UnknownArtifact => "UNKNOWN_ARTIFACT",
            Status::InvalidReceipt => "INVALID_RECEIPT",
            Status::InvalidLease => "INVALID_LEASE",
            Status::InvalidName => "INVALID_NAME",
            Status::OrgClaimed => "ORG_CLAIMED",
        }
    }
}

/// A request up to (not including) the PUT, PUT_RECORD, RECEIPT or PUT_LEASE payload, so that the server
/// can refuse an oversized or over-quota PUT before receiving its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    Put {
        cid: Cid,
        len: u32,
    },
    Get {
        cid: Cid,
        range: Option<Range<u64>>,
    },
    Has {
        cids: Vec<Cid>,
    },
    Delete {
        cid: Cid,
    },
    Peers,
    /// A page of PEERS: the announcements of endpoint ids above `after`, in id order.
    PeersAfter {
        after: [u8; 32],
    },
    PutRecord {
        len: u32,
    },
    /// GET_RECORD, or GET_REPAIR_RECORD when `repair`.
    GetRecord {
        artifact: Cid,
        repair: bool,
    },
    Audit {
        nonce: [u8; 32],
        lease_until_ms: u64,
        /// Raw shard CIDs, 1..=AUDIT_BATCH_MAX of them.
        cids: Vec<Cid>,
    },
    Receipt {
        len: u32,
    },
    PutLease {
        len: u32,
    },
    GetLease {
        artifact: Cid,
    },
    PutName {
        len: u32,
    },
    /// The newest `count` revisions of a name; `org` as asked (the server lowercases it).
    GetName {
        kind: NameKind,
        org: String,
        name: String,
        count: u8,
    },
}

impl Head {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Head::Put { .. } => Kind::Put,
            Head::Get { .. } => Kind::Get,
            Head::Has { .. } => Kind::Has,
            Head::Delete { .. } => Kind::Delete,
            Head::Peers => Kind::Peers,
            Head::PeersAfter { .. } => Kind::PeersAfter,
            Head::PutRecord { .. } => Kind::PutRecord,
            Head::GetRecord { repair: false, .. } => Kind::GetRecord,
            Head::GetRecord { repair: true, .. } => Kind::GetRepairRecord,
            Head::Audit { .. } => Kind::Audit,
            Head::Receipt { .. } => Kind::Receipt,
            Head::PutLease { .. } => Kind::PutLease,
            Head::GetLease { .. } => Kind::GetLease,
            Head::PutName { .. } => Kind::PutName,
            Head::GetName { .. } => Kind::GetName,
        }
    }
}

/// A reply as decoded by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Stored,
    Data(Vec<u8>),
    NotFound,
    Has(Vec<bool>),
    Deleted(bool),
    /// Signed announcements, each within `1..=ANNOUNCEMENT_LEN_MAX` bytes, not yet verified.
    Peers(Vec<Vec<u8>>),
    /// A signed holder record, within `1..=RECORD_LEN_MAX` bytes, not yet verified.
    Record(Vec<u8>),
    /// One answer per shard audited, in the request's order, each within
    /// `AUDIT_ANSWER_LEN_MAX` bytes, not yet checked.
    Audit(Vec<AuditReply>),
    /// A signed lease, within `1..=LEASE_LEN_MAX` bytes, not yet verified.
    Lease(Vec<u8>),
    /// Signed name records, each within `1..=NAME_RECORD_LEN_MAX` bytes, not yet verified.
    Names(Vec<Vec<u8>>),
    Error {
        status: u8,
        quota: Option<(u64, u64)>,
        message: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream failed (reset, connection lost); nothing can be answered.
    Io(io::Error),
    /// The bytes break the protocol; answered with this status if the stream still works.
    Bad(Status, String),
}

impl FrameError {
    pub(crate) fn describe(&self) -> String {
        match self {
            FrameError::Io(err) => err.to_string(),
            FrameError::Bad(_, message) => message.clone(),
        }
    }
}

fn bad(status: Status, message: impl Into<String>) -> FrameError {
    FrameError::Bad(status, message.into())
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            bad(Status::Malformed, "frame ends early")
        } else {
            FrameError::Io(err)
        }
    }
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    // Shard CIDs are 36 bytes; callers check longer ones with `cid_fits` before encoding.
    assert!(
        bytes.len() <= CID_LEN_MAX,
        "CID longer than CID_LEN_MAX reached the encoder"
    );
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

/// Encodes a request head; a PUT's `len` shard bytes follow it on the stream.
pub(crate) fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    match head {
        Head::Put { cid, len } => {
            out.push(Kind::Put as u8);
            put_cid(&mut out, cid);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::Get { cid, range } => {
            out.push(Kind::Get as u8);
            put_cid(&mut out, cid);
            match range {
                None => out.push(0),
                Some(range) => {
                    out.push(1);
                    out.extend_from_slice(&range.start.to_be_bytes());
                    out.extend_from_slice(&range.end.to_be_bytes());
                }
            }
        }
        Head::Has { cids } => {
            out.push(Kind::Has as u8);
            assert!(
                cids.len() <= HAS_BATCH_MAX,
                "HAS batch over HAS_BATCH_MAX reached the encoder"
            );
            out.extend_from_slice(&(cids.len() as u16).to_be_bytes());
            for cid in cids {
                put_cid(&mut out, cid);
            }
        }
        Head::Delete { cid } => {
            out.push(Kind::Delete as u8);
            put_cid(&mut out, cid);
        }
        Head::Peers => out.push(Kind::Peers as u8),
        Head::PeersAfter { after } => {
            out.push(Kind::PeersAfter as u8);
            out.extend_from_slice(after);
        }
        Head::PutRecord { len } => {
            out.push(Kind::PutRecord as u8);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::GetRecord { artifact, repair } => {
            out.push(if *repair {
                Kind::GetRepairRecord
            } else {
                Kind::GetRecord
            } as u8);
            put_cid(&mut out, artifact);
        }
        Head::Audit {
            nonce,
            lease_until_ms,
            cids,
        } => {
            out.push(Kind::Audit as u8);
            assert!(
                cids.len() <= AUDIT_BATCH_MAX,
                "AUDIT batch over AUDIT_BATCH_MAX reached the encoder"
            );
            out.extend_from_slice(nonce);
            out.extend_from_slice(&lease_until_ms.to_be_bytes());
            out.extend_from_slice(&(cids.len() as u16).to_be_bytes());
            for cid in cids {
                put_cid(&mut out, cid);
            }
        }
        Head::Receipt { len } => {
            out.push(Kind::Receipt as u8);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::PutLease { len } => {
            out.push(Kind::PutLease as u8);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::GetLease { artifact } => {
            out.push(Kind::GetLease as u8);
            put_cid(&mut out, artifact);
        }
        Head::PutName { len } => {
            out.push(Kind::PutName as u8);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Head::GetName {
            kind,
            org,
            name,
            count,
        } => {
            out.push(Kind::GetName as u8);
            out.push(kind_byte(*kind));
            for part in [org, name] {
                assert!(
                    part.len() <= NAME_PART_LEN_MAX,
                    "name part over NAME_PART_LEN_MAX reached the encoder"
                );
                out.push(part.len() as u8);
                out.extend_from_slice(part.as_bytes());
            }
            out.push(*count);
        }
    }
    out
}

async fn read_cid<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Cid, FrameError> {
    let len = recv.read_u8().await? as usize;
    if len == 0 || len > CID_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("CID length {len} is outside 1..={CID_LEN_MAX}"),
        ));
    }
    let mut buf = [0u8; CID_LEN_MAX];
    recv.read_exact(&mut buf[..len]).await?;
    let cid = Cid::read_bytes(&buf[..len])
        .map_err(|err| bad(Status::InvalidCid, format!("CID bytes do not parse: {err}")))?;
    if cid.encoded_len() != len {
        return Err(bad(
            Status::Malformed,
            "CID length prefix does not match the CID",
        ));
    }
    // Varints may be padded (`0xff 0x80 ...` and `0x7f` can mean the same number); only the
    // minimal encoding is accepted, so every frame has one byte form (found by fuzzing).
    if cid.to_bytes() != buf[..len] {
        return Err(bad(Status::Malformed, "CID is not minimally encoded"));
    }
    Ok(cid)
}

/// Reads exactly `len` bytes, `len` having been checked against its limit by the caller.
async fn read_vec<R: AsyncRead + Unpin>(recv: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    // Filled from uninitialized capacity: zeroing a shard's worth first costs as much as a copy.
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let want = (len - buf.len()) as u64;
        if (&mut *recv).take(want).read_buf(&mut buf).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(buf)
}

/// Reads exactly `len` bytes into a buffer that grows as they arrive, so that a peer announcing
/// a large frame and sending nothing does not make us allocate it. `len` has been checked.
async fn read_growing<R: AsyncRead + Unpin>(recv: &mut R, len: u32) -> Result<Vec<u8>, FrameError> {
    // One 64 KiB step up front keeps small frames to one allocation.
    let mut buf = Vec::with_capacity((len as usize).min(64 * 1024));
    let read = (&mut *recv)
        .take(u64::from(len))
        .read_to_end(&mut buf)
        .await?;
    if read != len as usize {
        return Err(bad(Status::Malformed, "frame ends early"));
    }
    Ok(buf)
}

fn check_record_len(len: u32, what: &str) -> Result<(), FrameError> {
    if len == 0 || len > RECORD_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("{what} length {len} is outside 1..={RECORD_LEN_MAX}"),
        ));
    }
    Ok(())
}

fn check_receipt_len(len: u32) -> Result<(), FrameError> {
    if len == 0 || len > RECEIPT_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("receipt length {len} is outside 1..={RECEIPT_LEN_MAX}"),
        ));
    }
    Ok(())
}

fn check_lease_len(len: u32, what: &str) -> Result<(), FrameError> {
    if len == 0 || len > LEASE_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("{what} length {len} is outside 1..={LEASE_LEN_MAX}"),
        ));
    }
    Ok(())
}

fn check_shard_len(len: u32, what: &str) -> Result<(), FrameError> {
    if len > SHARD_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("{what} length {len} is over the limit of {SHARD_LEN_MAX}"),
        ));
    }
    Ok(())
}

/// Reads the version, type and body of a request, except a PUT's payload.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Head, FrameError> {
    let version = recv.read_u8().await?;
    if version != PROTOCOL_VERSION {
        return Err(bad(
            Status::UnsupportedVersion,
            format!("protocol version {version} is not supported, expected {PROTOCOL_VERSION}"),
        ));
    }
    let kind = recv.read_u8().await?;
    Ok(match kind {
        0 => {
            let cid = read_cid(recv).await?;
            let len = recv.read_u32().await?;
            check_shard_len(len, "shard")?;
            Head::Put { cid, len }
        }
        1 => {
            let cid = read_cid(recv).await?;
            let range = match recv.read_u8().await? {
                0 => None,
                1 => {
                    let start = recv.read_u64().await?;
                    let end = recv.read_u64().await?;
                    if start > end {
                        return Err(bad(
                            Status::Malformed,
                            format!("range start {start} is after end {end}"),
                        ));
                    }
                    if end - start > u64::from(SHARD_LEN_MAX) {
                        return Err(bad(
                            Status::TooLarge,
                            format!(
                                "range length {} is over the limit of {SHARD_LEN_MAX}",
                                end - start
                            ),
                        ));
                    }
                    Some(start..end)
                }
                flag => {
                    return Err(bad(
                        Status::Malformed,
                        format!("range flag {flag} is not 0 or 1"),
                    ));
                }
            };
            Head::Get { cid, range }
        }
        2 => {
            let count = recv.read_u16().await? as usize;
            if count == 0 || count > HAS_BATCH_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("HAS batch of {count} is outside 1..={HAS_BATCH_MAX}"),
                ));
            }
            let mut cids = Vec::with_capacity(count);
            for _ in 0..count {
                cids.push(read_cid(recv).await?);
            }
            Head::Has { cids }
        }
        3 => Head::Delete {
            cid: read_cid(recv).await?,
        },
        4 => Head::Peers,
        14 => {
            let mut after = [0u8; 32];
            recv.read_exact(&mut after).await?;
            Head::PeersAfter { after }
        }
        5 => {
            let len = recv.read_u32().await?;
            check_record_len(len, "holder record")?;
            Head::PutRecord { len }
        }
        6 => Head::GetRecord {
            artifact: read_cid(recv).await?,
            repair: false,
        },
        9 => Head::GetRecord {
            artifact: read_cid(recv).await?,
            repair: true,
        },
        7 => {
            let mut nonce = [0u8; 32];
            recv.read_exact(&mut nonce).await?;
            let lease_until_ms = recv.read_u64().await?;
            let count = recv.read_u16().await? as usize;
            if count == 0 || count > AUDIT_BATCH_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("AUDIT batch of {count} is outside 1..={AUDIT_BATCH_MAX}"),
                ));
            }
            let mut cids = Vec::with_capacity(count);
            for _ in 0..count {
                let cid = read_cid(recv).await?;
                shard_digest(&cid).map_err(|err| bad(Status::InvalidCid, err.to_string()))?;
                cids.push(cid);
            }
            Head::Audit {
                nonce,
                lease_until_ms,
                cids,
            }
        }
        8 => {
            let len = recv.read_u32().await?;
            check_receipt_len(len)?;
            Head::Receipt { len }
        }
        10 => {
            let len = recv.read_u32().await?;
            check_lease_len(len, "lease")?;
            Head::PutLease { len }
        }
        11 => Head::GetLease {
            artifact: read_cid(recv).await?,
        },
        12 => {
            let len = recv.read_u32().await?;
            check_name_len(len, "name record")?;
            Head::PutName { len }
        }
        13 => {
            let kind = recv.read_u8().await?;
            let kind = kind_from_byte(kind)
                .ok_or_else(|| bad(Status::Malformed, format!("name kind {kind} is reserved")))?;
            let org = read_name_part(recv).await?;
            let name = read_name_part(recv).await?;
            let count = recv.read_u8().await?;
            if count == 0 || usize::from(count) > NAME_REVISIONS_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("GET_NAME of {count} revisions is outside 1..={NAME_REVISIONS_MAX}"),
                ));
            }
            Head::GetName {
                kind,
                org,
                name,
                count,
            }
        }
        other => {
            return Err(bad(
                Status::UnsupportedRequest,
                format!("request type {other} is reserved"),
            ));
        }
    })
}

fn check_name_len(len: u32, what: &str) -> Result<(), FrameError> {
    if len == 0 || len as usize > NAME_RECORD_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("{what} length {len} is outside 1..={NAME_RECORD_LEN_MAX}"),
        ));
    }
    Ok(())
}

async fn read_name_part<R: AsyncRead + Unpin>(recv: &mut R) -> Result<String, FrameError> {
    let len = usize::from(recv.read_u8().await?);
    if len == 0 || len > NAME_PART_LEN_MAX {
        return Err(bad(
            Status::TooLarge,
            format!("name part length {len} is outside 1..={NAME_PART_LEN_MAX}"),
        ));
    }
    let mut buf = [0u8; NAME_PART_LEN_MAX];
    recv.read_exact(&mut buf[..len]).await?;
    let part = std::str::from_utf8(&buf[..len])
        .map_err(|_| bad(Status::Malformed, "name part is not text"))?;
    check_name_part(part).map_err(|e| bad(Status::Malformed, e.to_string()))?;
    Ok(part.to_string())
}

/// Reads a PUT_NAME payload of a length already checked by [`read_head`].
pub(crate) async fn read_name_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_name_len(len, "name record")?;
    read_vec(recv, len as usize).await
}

/// Encodes a GET_NAME reply: the count, then each record's `u16` length and bytes. Callers
/// pass at most [`NAME_REVISIONS_MAX`] records within [`NAME_RECORD_LEN_MAX`] bytes each.
pub(crate) fn encode_names(records: &[Vec<u8>]) -> Vec<u8> {
    assert!(
        records.len() <= NAME_REVISIONS_MAX
            && records
                .iter()
                .all(|r| !r.is_empty() && r.len() <= NAME_RECORD_LEN_MAX),
        "GET_NAME reply out of bounds reached the encoder"
    );
    let mut body = vec![records.len() as u8];
    for r in records {
        body.extend_from_slice(&(r.len() as u16).to_be_bytes());
        body.extend_from_slice(r);
    }
    encode_ok(&body)
}

/// Reads a PUT payload of a length already checked by [`read_head`].
pub(crate) async fn read_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_shard_len(len, "shard")?;
    read_vec(recv, len as usize).await
}

/// Reads a PUT_RECORD payload of a length already checked by [`read_head`].
pub(crate) async fn read_record_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_record_len(len, "holder record")?;
    read_growing(recv, len).await
}

/// Reads a RECEIPT payload of a length already checked by [`read_head`].
pub(crate) async fn read_receipt_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_receipt_len(len)?;
    read_vec(recv, len as usize).await
}

/// Reads a PUT_LEASE payload of a length already checked by [`read_head`].
pub(crate) async fn read_lease_payload<R: AsyncRead + Unpin>(
    recv: &mut R,
    len: u32,
) -> Result<Vec<u8>, FrameError> {
    check_lease_len(len, "lease")?;
    read_vec(recv, len as usize).await
}

/// Checks that the sender finished its side right after the frame.
pub(crate) async fn read_end<R: AsyncRead + Unpin>(recv: &mut R) -> Result<(), FrameError> {
    let mut probe = [0u8; 1];
    match recv.read(&mut probe).await? {
        0 => Ok(()),
        _ => Err(bad(Status::Malformed, "bytes follow the end of the frame")),
    }
}

/// Encodes a successful reply's header and body (for GET, the data follows: see
/// [`encode_data_head`]).
pub(crate) fn encode_ok(body: &[u8]) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION, Status::Ok as u8];
    out.extend_from_slice(body);
    out
}

/// Header of a GET reply carrying `len` bytes.
pub(crate) fn encode_data_head(len: u32) -> Vec<u8> {
    encode_ok(&len.to_be_bytes())
}

/// The reply to a GET of a shard not held.
pub(crate) fn encode_not_found() -> Vec<u8> {
    vec![PROTOCOL_VERSION, Status::NotFound as u8]
}

/// Encodes an error reply, truncating the message to `MESSAGE_LEN_MAX` at a char boundary.
pub(crate) fn encode_error(status: Status, quota: Option<(u64, u64)>, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MESSAGE_LEN_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message.as_bytes()[..end];
    let mut out = vec![PROTOCOL_VERSION, status as u8];
    if let Some((needed, free)) = quota {
        out.extend_from_slice(&needed.to_be_bytes());
        out.extend_from_slice(&free.to_be_bytes());
    }
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Encodes a successful AUDIT reply: the count, then each answer's state and, for an answer,
/// its length and bytes. Callers keep answers within [`AUDIT_ANSWER_LEN_MAX`] and batches
/// within [`AUDIT_BATCH_MAX`] (the server turns a longer answer into state 2).
pub(crate) fn encode_audit_reply(answers: &[AuditReply]) -> Vec<u8> {
    assert!(
        answers.len() <= AUDIT_BATCH_MAX,
        "AUDIT reply over AUDIT_BATCH_MAX reached the encoder"
    );
    let body_len = answers
        .iter()
        .map(|a| match a {
            AuditReply::Answer(bytes) => 5 + bytes.len(),
            _ => 1,
        })
        .sum::<usize>();
    let mut out = Vec::with_capacity(4 + body_len);
    out.extend_from_slice(&[PROTOCOL_VERSION, Status::Ok as u8]);
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    for answer in answers {
        match answer {
            AuditReply::Answer(bytes) => {
                assert!(
                    bytes.len() <= AUDIT_ANSWER_LEN_MAX as usize,
                    "audit answer over AUDIT_ANSWER_LEN_MAX reached the encoder"
                );
                out.push(AUDIT_ANSWERED);
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            AuditReply::NotHeld => out.push(AUDIT_NOT_HELD),
            AuditReply::Corrupted => out.push(AUDIT_CORRUPTED),
        }
    }
    out
}

/// AUDIT reply states.
const AUDIT_ANSWERED: u8 = 0;
const AUDIT_NOT_HELD: u8 = 1;
const AUDIT_CORRUPTED: u8 = 2;

/// Reads the reply to a request of type `kind`; `count` is the batch length asked for (HAS,
/// AUDIT), which the reply's count must equal.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    recv: &mut R,
    kind: Kind,
    count: usize,
) -> Result<Reply, FrameError> {
    let version = recv.read_u8().await?;
    if version != PROTOCOL_VERSION {
        return Err(bad(
            Status::UnsupportedVersion,
            format!("reply version {version}, expected {PROTOCOL_VERSION}"),
        ));
    }
    let status_byte = recv.read_u8().await?;
    let Some(status) = Status::from_byte(status_byte) else {
        return Err(bad(
            Status::Malformed,
            format!("reply status {status_byte} is reserved"),
        ));
    };
    let reply = match (status, kind) {
        (Status::Ok, Kind::Put) => Reply::Stored,
        (Status::Ok, Kind::Get) => {
            let len = recv.read_u32().await?;
            check_shard_len(len, "reply")?;
            Reply::Data(read_vec(recv, len as usize).await?)
        }
        (Status::Ok, Kind::Has) => {
            let got = recv.read_u16().await? as usize;
            if got != count {
                return Err(bad(
                    Status::Malformed,
                    format!("HAS reply has {got} answers for {count} CIDs"),
                ));
            }
            let flags = read_vec(recv, count).await?;
            let mut held = Vec::with_capacity(count);
            for flag in flags {
                match flag {
                    0 => held.push(false),
                    1 => held.push(true),
                    other => {
                        return Err(bad(
                            Status::Malformed,
                            format!("HAS answer {other} is not 0 or 1"),
                        ));
                    }
                }
            }
            Reply::Has(held)
        }
        (Status::Ok, Kind::Delete) => match recv.read_u8().await? {
            0 => Reply::Deleted(false),
            1 => Reply::Deleted(true),
            other => {
                return Err(bad(
                    Status::Malformed,
                    format!("DELETE answer {other} is not 0 or 1"),
                ));
            }
        },
        (Status::Ok, Kind::Peers | Kind::PeersAfter) => {
            let count = recv.read_u16().await? as usize;
            if count > PEERS_REPLY_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("PEERS reply of {count} announcements is over {PEERS_REPLY_MAX}"),
                ));
            }
            let mut announcements = Vec::with_capacity(count);
            for _ in 0..count {
                let len = recv.read_u16().await? as usize;
                if len == 0 || len > ANNOUNCEMENT_LEN_MAX {
                    return Err(bad(
                        Status::TooLarge,
                        format!("announcement length {len} is outside 1..={ANNOUNCEMENT_LEN_MAX}"),
                    ));
                }
                announcements.push(read_vec(recv, len).await?);
            }
            Reply::Peers(announcements)
        }
        (Status::Ok, Kind::PutRecord) => Reply::Stored,
        (Status::Ok, Kind::GetRecord | Kind::GetRepairRecord) => {
            let len = recv.read_u32().await?;
            check_record_len(len, "holder record reply")?;
            Reply::Record(read_growing(recv, len).await?)
        }
        (Status::Ok, Kind::Audit) => {
            let got = recv.read_u16().await? as usize;
            if got != count {
                return Err(bad(
                    Status::Malformed,
                    format!("AUDIT reply has {got} answers for {count} shards"),
                ));
            }
            // `count` is the caller's; the bound keeps a fuzzed one from sizing the vector.
            if count > AUDIT_BATCH_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("AUDIT reply of {count} answers is over {AUDIT_BATCH_MAX}"),
                ));
            }
            let mut answers = Vec::with_capacity(count);
            for _ in 0..count {
                answers.push(match recv.read_u8().await? {
                    AUDIT_ANSWERED => {
                        let len = recv.read_u32().await?;
                        if len > AUDIT_ANSWER_LEN_MAX {
                            return Err(bad(
                                Status::TooLarge,
                                format!(
                                    "audit answer of {len} bytes is over {AUDIT_ANSWER_LEN_MAX}"
                                ),
                            ));
                        }
                        AuditReply::Answer(read_vec(recv, len as usize).await?)
                    }
                    AUDIT_NOT_HELD => AuditReply::NotHeld,
                    AUDIT_CORRUPTED => AuditReply::Corrupted,
                    other => {
                        return Err(bad(
                            Status::Malformed,
                            format!("audit state {other} is not 0, 1 or 2"),
                        ));
                    }
                });
            }
            Reply::Audit(answers)
        }
        (Status::Ok, Kind::Receipt | Kind::PutLease | Kind::PutName) => Reply::Stored,
        (Status::Ok, Kind::GetName) => {
            let got = usize::from(recv.read_u8().await?);
            if got == 0 || got > count.min(NAME_REVISIONS_MAX) {
                return Err(bad(
                    Status::Malformed,
                    format!("GET_NAME reply of {got} records for {count} asked"),
                ));
            }
            let mut records = Vec::with_capacity(got);
            for _ in 0..got {
                let len = u32::from(recv.read_u16().await?);
                check_name_len(len, "name record reply")?;
                records.push(read_vec(recv, len as usize).await?);
            }
            Reply::Names(records)
        }
        (Status::Ok, Kind::GetLease) => {
            let len = recv.read_u32().await?;
            check_lease_len(len, "lease reply")?;
            Reply::Lease(read_vec(recv, len as usize).await?)
        }
        (
            Status::NotFound,
            Kind::Get | Kind::GetRecord | Kind::GetRepairRecord | Kind::GetLease | Kind::GetName,
        ) => Reply::NotFound,
        (Status::NotFound, _) => {
            return Err(bad(
                Status::Malformed,
                format!("NOT_FOUND is no answer to {}", kind.name()),
            ));
        }
        (status, _) => {
            let quota = if status == Status::QuotaFull {
                Some((recv.read_u64().await?, recv.read_u64().await?))
            } else {
                None
            };
            let len = recv.read_u16().await? as usize;
            if len > MESSAGE_LEN_MAX {
                return Err(bad(
                    Status::TooLarge,
                    format!("error message of {len} bytes is over {MESSAGE_LEN_MAX}"),
                ));
            }
            let message = String::from_utf8_lossy(&read_vec(recv, len).await?).into_owned();
            Reply::Error {
                status: status as u8,
                quota,
                message,
            }
        }
    };
    read_end(recv).await?;
    Ok(reply)
}

/// Encodes a PEERS reply. Announcements outside `1..=ANNOUNCEMENT_LEN_MAX` bytes are skipped
/// and at most [`PEERS_REPLY_MAX`] are sent, the first ones first.
pub(crate) fn encode_peers(announcements: &[Vec<u8>]) -> Vec<u8> {
    let kept: Vec<&Vec<u8>> = announcements
        .iter()
        .filter(|a| !a.is_empty() && a.len() <= ANNOUNCEMENT_LEN_MAX)
        .take(PEERS_REPLY_MAX)
        .collect();
    let mut body = (kept.len() as u16).to_be_bytes().to_vec();
    for announcement in kept {
        body.extend_from_slice(&(announcement.len() as u16).to_be_bytes());
        body.extend_from_slice(announcement);
    }
    encode_ok(&body)
}

/// Runs a decoder over in-memory bytes to completion. Reading a byte slice never waits, so one
/// poll finishes it; None would mean a decoder awaited something other than its input.
fn complete<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn incomplete() -> FrameError {
    bad(Status::Internal, "decoding in memory did not complete")
}

/// Decodes one whole request frame (head, PUT, PUT_RECORD, RECEIPT or PUT_LEASE payload,
/// nothing after) with the same code the server runs on a stream. Never panics.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<(Head, Option<Vec<u8>>), FrameError> {
    complete(async {
        let mut reader = bytes;
        let head = read_head(&mut reader).await?;
        let payload = match &head {
            Head::Put { len, .. } => Some(read_payload(&mut reader, *len).await?),
            Head::PutRecord { len } => Some(read_record_payload(&mut reader, *len).await?),
            Head::Receipt { len } => Some(read_receipt_payload(&mut reader, *len).await?),
            Head::PutLease { len } => Some(read_lease_payload(&mut reader, *len).await?),
            Head::PutName { len } => Some(read_name_payload(&mut reader, *len).await?),
            _ => None,
        };
        read_end(&mut reader).await?;
        Ok((head, payload))
    })
    .unwrap_or_else(|| Err(incomplete()))
}

/// Decodes one whole reply frame to a request of type `kind` (of `count` CIDs, for HAS and
/// AUDIT) with the same code the client runs on a stream. Never panics.
pub(crate) fn decode_reply(bytes: &[u8], kind: Kind, count: usize) -> Result<Reply, FrameError> {
    complete(async {
        let mut reader = bytes;
        read_reply(&mut reader, kind, count).await
    })
    .unwrap_or_else(|| Err(incomplete()))
}

/// Entry points for fuzzers: the wire decoders as pure functions on byte slices.
///
/// Each returns a description of what it decoded, or why it refused; none panics on any input.
/// Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes a request frame. On success returns the frame encoded again, which must equal
    /// the input: the encoding is canonical.
    pub fn decode_request_frame(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let (head, payload) = decode_request(bytes).map_err(|err| err.describe())?;
        let mut out = encode_head(&head);
        out.extend_from_slice(payload.as_deref().unwrap_or_default());
        Ok(out)
    }

    /// Decodes a reply frame to a request of type `request_type` (an unknown type is refused)
    /// that asked HAS or AUDIT about `has_count` CIDs.
    pub fn decode_reply_frame(
        request_type: u8,
        has_count: u16,
        bytes: &[u8],
    ) -> Result<String, String> {
        let kind = Kind::from_byte(request_type)
            .ok_or_else(|| format!("request type {request_type} is reserved"))?;
        decode_reply(bytes, kind, has_count.into())
            .map(|reply| format!("{reply:?}"))
            .map_err(|err| err.describe())
    }

    /// Decodes an AUDIT request frame (version and type included). On success returns the
    /// frame encoded again, which must equal the input, and the number of shards asked.
    pub fn decode_audit_request(bytes: &[u8]) -> Result<(Vec<u8>, usize), String> {
        let (head, _) = decode_request(bytes).map_err(|err| err.describe())?;
        match &head {
            Head::Audit { cids, .. } => Ok((encode_head(&head), cids.len())),
            other => Err(format!("a {} request, not AUDIT", other.kind().name())),
        }
    }

    /// Encodes an AUDIT request for `cids` (at most [`AUDIT_BATCH_MAX`], raw shard CIDs,
    /// else an error).
    pub fn encode_audit_request(
        nonce: [u8; 32],
        lease_until_ms: u64,
        cids: &[Cid],
    ) -> Result<Vec<u8>, String> {
        if cids.is_empty() || cids.len() > AUDIT_BATCH_MAX {
            return Err(format!(
                "{} CIDs is outside 1..={AUDIT_BATCH_MAX}",
                cids.len()
            ));
        }
        for cid in cids {
            shard_digest(cid).map_err(|err| err.to_string())?;
        }
        Ok(encode_head(&Head::Audit {
            nonce,
            lease_until_ms,
            cids: cids.to_vec(),
        }))
    }

    /// Decodes an AUDIT reply frame to a request of `count` shards. On success returns the
    /// frame encoded again (which must equal the input when it was a successful reply: the
    /// encoding is canonical) and the answers; an error reply is returned as its description.
    pub fn decode_audit_reply(
        count: u16,
        bytes: &[u8],
    ) -> Result<(Option<Vec<u8>>, Vec<crate::AuditReply>), String> {
        match decode_reply(bytes, Kind::Audit, count.into()).map_err(|err| err.describe())? {
            Reply::Audit(answers) => Ok((Some(encode_audit_reply(&answers)), answers)),
            Reply::Error { .. } => Ok((None, Vec::new())),
            other => Err(format!("reply {other:?} is no answer to AUDIT")),
        }
    }

    /// Verifies a signed membership announcement for the network with topic bytes `topic`.
    pub fn verify_announcement(bytes: &[u8], topic: [u8; 32]) -> Result<String, String> {
        crate::Announcement::verify(bytes, &iroh_gossip::TopicId::from_bytes(topic))
            .map(|a| format!("{a:?}"))
            .map_err(|err| err.to_string())
    }

    /// Verifies a signed holder record.
    pub fn verify_record(bytes: &[u8]) -> Result<String, String> {
        crate::HolderRecord::verify(bytes)
            .map(|signed| format!("{:?}", signed.record))
            .map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::{manifest_cid, shard_cid};
    use proptest::prelude::*;

    async fn decode(bytes: &[u8]) -> Result<Head, FrameError> {
        let mut reader = bytes;
        let head = read_head(&mut reader).await?;
        Ok(head)
    }

    #[tokio::test]
    async fn heads_round_trip() {
        let cid = shard_cid(b"abc");
        let heads = [
            Head::Put { cid, len: 3 },
            Head::Get { cid, range: None },
            Head::Get {
                cid,
                range: Some(1..2),
            },
            Head::Has {
                cids: vec![cid, shard_cid(b"d")],
            },
            Head::Delete { cid },
        ];
        for head in heads {
            assert_eq!(decode(&encode_head(&head)).await.unwrap(), head);
        }
    }

    #[tokio::test]
    async fn limits_are_checked_before_allocation() {
        let cid = shard_cid(b"abc");
        let mut put = encode_head(&Head::Put { cid, len: 0 });
        let n = put.len();
        put[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&put).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let has = [PROTOCOL_VERSION, Kind::Has as u8, 0xff, 0xff];
        assert!(matches!(
            decode(&has).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let long_cid = [PROTOCOL_VERSION, Kind::Delete as u8, 200];
        assert!(matches!(
            decode(&long_cid).await,
            Err(FrameError::Bad(Status::TooLarge, _))
        ));

        let reserved = [PROTOCOL_VERSION, 15];
        assert!(matches!(
            decode(&reserved).await,
            Err(FrameError::Bad(Status::UnsupportedRequest, _))
        ));

        let version = [2, 0];
        assert!(matches!(
            decode(&version).await,
            Err(FrameError::Bad(Status::UnsupportedVersion, _))
        ));

        let truncated = &encode_head(&Head::Delete { cid })[..10];
        assert!(matches!(
            decode(truncated).await,
            Err(FrameError::Bad(Status::Malformed, _))
        ));

        let mut backwards = encode_head(&Head::Get {
            cid,
            range: Some(5..6),
        });
        let n = backwards.len();
        backwards[n - 8..].copy_from_slice(&1u64.to_be_bytes());
        assert!(matches!(
            decode(&backwards).await,
            Err(FrameError::Bad(Status::Malformed, _))
        ));
    }

    #[tokio::test]
    async fn error_replies_round_trip_and_truncate() {
        let long = "é".repeat(MESSAGE_LEN_MAX);
        let bytes = encode_error(Status::QuotaFull, Some((10, 3)), &long);
        let mut reader = &bytes[..];
        let Reply::Error {
            status,
            quota,
            message,
        } = read_reply(&mut reader, Kind::Put, 0).await.unwrap()
        else {
            panic!("expected an error reply");
        };
        assert_eq!(status, Status::QuotaFull as u8);
        assert_eq!(quota, Some((10, 3)));
        assert_eq!(message.len(), MESSAGE_LEN_MAX);
    }

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (any::<bool>(), any::<[u8; 4]>()).prop_map(|(manifest, seed)| {
            if manifest {
                manifest_cid(&seed)
            } else {
                shard_cid(&seed)
            }
        })
    }

    /// Whole request frames: a head and, for PUT and PUT_RECORD, its payload.
    fn arb_request() -> impl Strategy<Value = (Head, Option<Vec<u8>>)> {
        let payload = prop::collection::vec(any::<u8>(), 1..64);
        prop_oneof![
            (arb_cid(), payload.clone()).prop_map(|(cid, data)| (
                Head::Put {
                    cid,
                    len: data.len() as u32
                },
                Some(data)
            )),
            (arb_cid(), any::<Option<(u64, u32)>>()).prop_map(|(cid, range)| (
                Head::Get {
                    cid,
                    range: range
                        .map(|(start, len)| start / 2..start / 2 + u64::from(len % SHARD_LEN_MAX))
                },
                None
            )),
            prop::collection::vec(arb_cid(), 1..5).prop_map(|cids| (Head::Has { cids }, None)),
            arb_cid().prop_map(|cid| (Head::Delete { cid }, None)),
            Just((Head::Peers, None)),
            any::<[u8; 32]>().prop_map(|after| (Head::PeersAfter { after }, None)),
            payload.prop_map(|data| (
                Head::PutRecord {
                    len: data.len() as u32
                },
                Some(data)
            )),
            (arb_cid(), any::<bool>())
                .prop_map(|(artifact, repair)| (Head::GetRecord { artifact, repair }, None)),
            (
                any::<[u8; 32]>(),
                any::<u64>(),
                prop::collection::vec(any::<[u8; 4]>(), 1..5)
            )
                .prop_map(|(nonce, lease_until_ms, seeds)| (
                    Head::Audit {
                        nonce,
                        lease_until_ms,
                        cids: seeds.iter().map(|s| shard_cid(s)).collect(),
                    },
                    None
                )),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(|data| (
                Head::Receipt {
                    len: data.len() as u32
                },
                Some(data)
            )),
            prop::collection::vec(any::<u8>(), 1..=LEASE_LEN_MAX as usize).prop_map(|data| (
                Head::PutLease {
                    len: data.len() as u32
                },
                Some(data)
            )),
            arb_cid().prop_map(|artifact| (Head::GetLease { artifact }, None)),
        ]
    }

    fn arb_audit_reply() -> impl Strategy<Value = AuditReply> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100).prop_map(AuditReply::Answer),
            Just(AuditReply::NotHeld),
            Just(AuditReply::Corrupted),
        ]
    }

    const KINDS: [Kind; 15] = [
        Kind::Put,
        Kind::Get,
        Kind::Has,
        Kind::Delete,
        Kind::Peers,
        Kind::PutRecord,
        Kind::GetRecord,
        Kind::Audit,
        Kind::Receipt,
        Kind::GetRepairRecord,
        Kind::PutLease,
        Kind::GetLease,
        Kind::PutName,
        Kind::GetName,
        Kind::PeersAfter,
    ];

    /// A frame found by fuzzing: a CID whose bytes parse but are not its canonical encoding.
    #[test]
    fn decoded_frames_are_canonical() {
        let frame = [
            0x01, 0x00, 0x10, 0x01, 0xff, 0xff, 0xff, 0xff, 0x80, 0xac, 0xab, 0xff, 0xff, 0x55,
            0xff, 0xff, 0xab, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        if let Ok(again) = fuzzing::decode_request_frame(&frame) {
            assert_eq!(again, frame, "a decoded frame must re-encode to its bytes");
        }
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in arb_request()) {
            let mut frame = encode_head(&request.0);
            frame.extend_from_slice(request.1.as_deref().unwrap_or_default());
            prop_assert_eq!(decode_request(&frame).unwrap(), request);
            prop_assert_eq!(fuzzing::decode_request_frame(&frame).unwrap(), frame);
        }

        #[test]
        fn random_requests_never_panic(kind in 0u8..15, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = fuzzing::decode_request_frame(&bytes);
            // Behind a valid version and type, to reach the body decoders.
            let mut framed = vec![PROTOCOL_VERSION, kind];
            framed.extend_from_slice(&bytes);
            if let Ok(again) = fuzzing::decode_request_frame(&framed) {
                // Whatever decodes encodes back to the same bytes: the format is canonical.
                prop_assert_eq!(again, framed);
            }
        }

        #[test]
        fn random_replies_never_panic(status in 0u8..21, has_count in 0u16..4, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            for kind in KINDS {
                let _ = decode_reply(&bytes, kind, has_count.into());
                let mut framed = vec![PROTOCOL_VERSION, status];
                framed.extend_from_slice(&bytes);
                let _ = decode_reply(&framed, kind, has_count.into());
            }
            let _ = fuzzing::decode_reply_frame(200, has_count, &bytes);
            let _ = fuzzing::decode_audit_reply(has_count, &bytes);
        }

        #[test]
        fn audit_replies_round_trip(answers in prop::collection::vec(arb_audit_reply(), 1..6)) {
            let frame = encode_audit_reply(&answers);
            prop_assert_eq!(
                decode_reply(&frame, Kind::Audit, answers.len()).unwrap(),
                Reply::Audit(answers.clone())
            );
            let (again, decoded) = fuzzing::decode_audit_reply(answers.len() as u16, &frame).unwrap();
            prop_assert_eq!(again, Some(frame));
            prop_assert_eq!(decoded, answers);
        }

        #[test]
        fn peers_replies_round_trip(announcements in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..8)) {
            let frame = encode_peers(&announcements);
            let kept: Vec<Vec<u8>> = announcements
                .into_iter()
                .filter(|a| !a.is_empty() && a.len() <= ANNOUNCEMENT_LEN_MAX)
                .collect();
            prop_assert_eq!(decode_reply(&frame, Kind::Peers, 0).unwrap(), Reply::Peers(kept));
        }
    }

    #[test]
    fn audit_frames_are_bounded() {
        let cid = shard_cid(b"abc");
        let audit = |cids: Vec<Cid>| {
            encode_head(&Head::Audit {
                nonce: [5; 32],
                lease_until_ms: 0,
                cids,
            })
        };
        // A full batch decodes; one more, or none, is refused from the count alone.
        let full: Vec<Cid> = (0..AUDIT_BATCH_MAX as u32)
            .map(|i| shard_cid(&i.to_be_bytes()))
            .collect();
        assert!(decode_request(&audit(full)).is_ok());
        let mut over = vec![PROTOCOL_VERSION, Kind::Audit as u8];
        over.extend_from_slice(&[0; 40]);
        over.extend_from_slice(&(AUDIT_BATCH_MAX as u16 + 1).to_be_bytes());
        assert!(matches!(
            decode_request(&over),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        let mut none = audit(vec![cid]);
        none[2 + 40..2 + 42].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(
            decode_request(&none[..2 + 42]),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        // A manifest CID is no shard.
        assert!(matches!(
            decode_request(&audit(vec![manifest_cid(b"m")])),
            Err(FrameError::Bad(Status::InvalidCid, _))
        ));
        // A receipt over its cap, and an empty one.
        for len in [0, RECEIPT_LEN_MAX + 1] {
            let receipt = encode_head(&Head::Receipt { len });
            assert!(matches!(
                decode_request(&receipt),
                Err(FrameError::Bad(Status::TooLarge, _))
            ));
        }

        // Replies: the count must match, states are 0..=2, answers within the cap.
        let frame = encode_audit_reply(&[AuditReply::NotHeld, AuditReply::Corrupted]);
        assert!(decode_reply(&frame, Kind::Audit, 2).is_ok());
        assert!(matches!(
            decode_reply(&frame, Kind::Audit, 3),
            Err(FrameError::Bad(Status::Malformed, _))
        ));
        let mut state = frame.clone();
        state[4] = 3;
        assert!(matches!(
            decode_reply(&state, Kind::Audit, 2),
            Err(FrameError::Bad(Status::Malformed, _))
        ));
        let mut long = vec![PROTOCOL_VERSION, Status::Ok as u8, 0, 1, 0];
        long.extend_from_slice(&(AUDIT_ANSWER_LEN_MAX + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&long, Kind::Audit, 1),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        let mut many = vec![PROTOCOL_VERSION, Status::Ok as u8];
        many.extend_from_slice(&(AUDIT_BATCH_MAX as u16 + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&many, Kind::Audit, AUDIT_BATCH_MAX + 1),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        // A full reply of full answers is exactly the bound.
        let biggest =
            vec![AuditReply::Answer(vec![0; AUDIT_ANSWER_LEN_MAX as usize]); AUDIT_BATCH_MAX];
        assert_eq!(encode_audit_reply(&biggest).len(), AUDIT_REPLY_LEN_MAX);
        // NOT_FOUND answers no AUDIT; an error reply does.
        assert!(decode_reply(&encode_not_found(), Kind::Audit, 1).is_err());
        let refused = encode_error(Status::InvalidReceipt, None, "no");
        assert!(matches!(
            decode_reply(&refused, Kind::Receipt, 0),
            Ok(Reply::Error { status: 16, .. })
        ));
    }

    #[test]
    fn lease_frames_are_bounded() {
        // A lease over its cap, and an empty one, refused from the length alone.
        for len in [0, LEASE_LEN_MAX + 1, u32::MAX] {
            let put = encode_head(&Head::PutLease { len });
            assert!(matches!(
                decode_request(&put),
                Err(FrameError::Bad(Status::TooLarge, _))
            ));
        }
        // A full one decodes; one byte short or one too many does not.
        let mut full = encode_head(&Head::PutLease { len: LEASE_LEN_MAX });
        full.extend_from_slice(&[7; LEASE_LEN_MAX as usize]);
        assert!(decode_request(&full).is_ok());
        assert!(decode_request(&full[..full.len() - 1]).is_err());
        let mut longer = full.clone();
        longer.push(0);
        assert!(decode_request(&longer).is_err());
        // Replies: a lease within the cap, NOT_FOUND, and a length over the cap.
        let mut reply = vec![PROTOCOL_VERSION, Status::Ok as u8, 0, 0, 0, 3, 1, 2, 3];
        assert_eq!(
            decode_reply(&reply, Kind::GetLease, 0).unwrap(),
            Reply::Lease(vec![1, 2, 3])
        );
        assert_eq!(
            decode_reply(&encode_not_found(), Kind::GetLease, 0).unwrap(),
            Reply::NotFound
        );
        assert!(decode_reply(&encode_not_found(), Kind::PutLease, 0).is_err());
        reply[2..6].copy_from_slice(&(LEASE_LEN_MAX + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&reply, Kind::GetLease, 0),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        assert_eq!(
            decode_reply(&encode_ok(&[]), Kind::PutLease, 0).unwrap(),
            Reply::Stored
        );
        let refused = encode_error(Status::InvalidLease, None, "too far ahead");
        assert!(matches!(
            decode_reply(&refused, Kind::PutLease, 0),
            Ok(Reply::Error { status: 17, .. })
        ));
    }

    #[test]
    fn peers_replies_are_capped() {
        let many = vec![vec![7u8; 10]; PEERS_REPLY_MAX + 5];
        let frame = encode_peers(&many);
        assert_eq!(
            decode_reply(&frame, Kind::Peers, 0).unwrap(),
            Reply::Peers(vec![vec![7u8; 10]; PEERS_REPLY_MAX])
        );
        // A reply claiming more, or an oversized entry, is refused before reading on.
        let mut over = vec![PROTOCOL_VERSION, Status::Ok as u8];
        over.extend_from_slice(&(PEERS_REPLY_MAX as u16 + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&over, Kind::Peers, 0),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        let mut long = vec![PROTOCOL_VERSION, Status::Ok as u8, 0, 1];
        long.extend_from_slice(&(ANNOUNCEMENT_LEN_MAX as u16 + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&long, Kind::Peers, 0),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        // A record reply over the cap likewise.
        let mut record = vec![PROTOCOL_VERSION, Status::Ok as u8];
        record.extend_from_slice(&(RECORD_LEN_MAX + 1).to_be_bytes());
        assert!(matches!(
            decode_reply(&record, Kind::GetRecord, 0),
            Err(FrameError::Bad(Status::TooLarge, _))
        ));
        // NOT_FOUND answers GET_RECORD but not PEERS.
        let not_found = encode_not_found();
        assert_eq!(
            decode_reply(&not_found, Kind::GetRecord, 0).unwrap(),
            Reply::NotFound
        );
        assert!(decode_reply(&not_found, Kind::Peers, 0).is_err());
    }
}
