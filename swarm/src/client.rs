//! The requesting side of the shard protocol: [`ShardClient`] with a per-peer connection pool.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cid::Cid;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use tokio::sync::Semaphore;

use iroh_gossip::TopicId;

use crate::audit::AuditReply;
use crate::cids::{content_digest, manifest_digest, matches, shard_digest};
use crate::error::{Error, Result};
use crate::lease::{LEASE_LEN_MAX, SignedLease};
use crate::membership::Announcement;
use crate::name::{NAME_RECORD_LEN_MAX, NAME_REVISIONS_MAX, NameKind, SignedName, check_name_part};
use crate::protocol::{
    AUDIT_BATCH_MAX, AUDIT_TIMEOUT, CONNECT_TIMEOUT, FrameError, HAS_BATCH_MAX, Head, Kind,
    PEER_DOWN_FOR, PEER_INFLIGHT_MAX, PEER_PAGES_MAX, POOL_PEERS_MAX, RECORD_LEN_MAX,
    REPLY_START_TIMEOUT, REQUEST_TIMEOUT, Reply, SHARD_ALPN, SHARD_LEN_MAX, Status, encode_head,
    read_reply,
};
use crate::receipt::RECEIPT_LEN_MAX;
use crate::record::{HolderRecord, SignedRecord};

/// Timeouts and concurrency limits of the shard protocol, for both [`ShardClient`] and
/// [`ShardServer`](crate::ShardServer). Tests shorten the timeouts; nodes use the default.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, from waiting for a slot to the end of the reply.
    pub request_timeout: Duration,
    /// Time a peer has to start answering a read (GET, HAS, PEERS, GET_RECORD) once it is sent.
    pub reply_start_timeout: Duration,
    /// How long a peer that timed out (connecting, or starting a reply) is skipped: requests to
    /// it fail at once with [`Error::PeerDown`]. Zero never skips.
    pub peer_down_for: Duration,
    /// Requests in flight per peer (values below 1 count as 1). A server handles at least
    /// [`PEER_INFLIGHT_MAX`] at once whatever this says: that is the number of streams a peer
    /// may open on a Cairn endpoint, and a stream opened but not handled could hold the
    /// connection's flow-control credit (see `endpoint::LOOPBACK_RECEIVE_WINDOW`).
    pub peer_inflight_max: usize,
    /// Peers whose connections the client keeps open (values below 1 count as 1).
    pub pool_peers_max: usize,
    /// Time a holder has to start its reply to a whole AUDIT batch once it is sent (client);
    /// time a server works on a batch before giving it up (server). See the protocol's
    /// *Audits*.
    pub audit_timeout: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            reply_start_timeout: REPLY_START_TIMEOUT,
            peer_down_for: PEER_DOWN_FOR,
            peer_inflight_max: PEER_INFLIGHT_MAX,
            pool_peers_max: POOL_PEERS_MAX,
            audit_timeout: AUDIT_TIMEOUT,
        }
    }
}

/// One pooled peer: its connection, opened on first use, and its request slots.
#[derive(Debug)]
struct PeerSlot {
    conn: tokio::sync::Mutex<Option<Connection>>,
    inflight: Semaphore,
    /// Requests sent (or attempted) to this peer since the slot was made.
    requests: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    config: ShardConfig,
    pool: Mutex<HashMap<EndpointId, Arc<PeerSlot>>>,
    /// Peers that timed out, with the time they are tried again.
    down: Mutex<HashMap<EndpointId, Instant>>,
    /// Peers that left a request unanswered for [`SLOW_AFTER`] until it was given up, with the
    /// time that stops counting against them (an answer clears it at once).
    slow: Mutex<HashMap<EndpointId, Instant>>,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    shard_bytes: AtomicU64,
    abandoned_connects: AtomicU64,
}

/// What a [`ShardClient`] has done since it was made (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent (or attempted).
    pub requests: u64,
    /// Requests that failed: no connection, a broken stream, a refusal, a timeout, a peer
    /// skipped, a shard that was not held or did not match its CID.
    pub failures: u64,
    /// Of the failures, those that ran out of time.
    pub timeouts: u64,
    /// Of the failures, requests not sent because their peer was skipped after a timeout.
    pub skipped: u64,
    /// Bytes of verified shards and manifests received.
    pub shard_bytes: u64,
    /// Connection attempts given up before the handshake ended (timed out, or their request
    /// cancelled): the endpoint keeps trying them for up to about 3 s, which its close waits
    /// for unless told otherwise (see [`ShardClient::abandoned_connects`]).
    pub abandoned_connects: u64,
}

/// Sends shard requests to peers, reusing one connection per peer.
///
/// Cheap to clone; clones share the pool. Every method is bounded by the configured timeouts.
///
/// Cancel safety: dropping a request future resets its stream; the connection stays pooled. See
/// the protocol's *Cancellation* section for what the server may already have done.
#[derive(Debug, Clone)]
pub struct ShardClient {
    inner: Arc<Inner>,
}

/// The announcements of `signed` that verify for network `topic` (format, network,
/// signature); the others, sent by `from`, are dropped with a debug line: one bad entry should
/// not hide the rest.
fn verified(signed: &[Vec<u8>], topic: &TopicId, from: &EndpointAddr) -> Vec<Announcement> {
    signed
        .iter()
        .filter_map(|bytes| match Announcement::verify(bytes, topic) {
            Ok(announcement) => Some(announcement),
            Err(err) => {
                tracing::debug!(%err, peer = %peer_name(&from.id), "announcement in a peer list dropped");
                None
            }
        })
        .collect()
}

fn peer_name(id: &EndpointId) -> String {
    id.fmt_short().to_string()
}

fn status_name(status: u8) -> &'static str {
    Status::from_byte(status).map_or("RESERVED", Status::name)
}

impl ShardClient {
    /// A client sending from `endpoint` with the limits of `config`.
    pub fn new(endpoint: Endpoint, config: ShardConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                pool: Mutex::new(HashMap::new()),
                down: Mutex::new(HashMap::new()),
                slow: Mutex::new(HashMap::new()),
                stats: Counters::default(),
            }),
        }
    }

    /// Whether `id` recently left a request unanswered for [`SLOW_AFTER`] until the request was
    /// given up (typically a hedged request, cancelled because other holders answered first),
    /// and has not answered anything since. Readers ask such a peer last: a holder that died
    /// without closing its connection never times out if every request to it is cancelled, so
    /// without this every chunk would wait for a hedge.
    pub fn is_slow(&self, id: &EndpointId) -> bool {
        let mut slow = self.inner.slow.lock().unwrap_or_else(|p| p.into_inner());
        match slow.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                slow.remove(id);
                false
            }
            None => false,
        }
    }

    fn set_slow(&self, id: EndpointId, slow: bool) {
        let mut map = self.inner.slow.lock().unwrap_or_else(|p| p.into_inner());
        if !slow {
            map.remove(&id);
            return;
        }
        if map.len() >= self.inner.config.pool_peers_max.max(1) {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            if let Some(oldest) = map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            id,
            Instant::now() + self.inner.config.peer_down_for.max(SLOW_FOR_MIN),
        );
    }

    /// Counts of requests and failures so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.stats;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            shard_bytes: c.shard_bytes.load(Ordering::Relaxed),
            abandoned_connects: c.abandoned_connects.load(Ordering::Relaxed),
        }
    }

    /// Requests sent (or attempted) to `id` while it has been in the pool: how often a reader
    /// asked a holder, for tests and diagnostics. Zero for a peer never asked (or evicted).
    pub fn requests_to(&self, id: &EndpointId) -> u64 {
        self.lock_pool()
            .get(id)
            .map_or(0, |slot| slot.requests.load(Ordering::Relaxed))
    }

    /// Whether a connection attempt was given up before its handshake ended. Such a peer never
    /// answered (typically a node that died without closing its connections), and the endpoint
    /// keeps retrying its handshake for up to about 3 s; waiting for that when closing serves
    /// nobody, so closers bound their wait more tightly when this is true.
    pub fn abandoned_connects(&self) -> bool {
        self.inner.stats.abandoned_connects.load(Ordering::Relaxed) > 0
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ShardConfig {
        &self.inner.config
    }

    /// Stores `data` as `cid` (a shard, codec raw, or a manifest, codec dag-cbor) on the peer at
    /// `addr`. The peer checks that the bytes hash to the CID and that its quota holds them
    /// before it commits; a refusal is [`Error::QuotaFull`] or [`Error::Rejected`] (status
    /// `CID_MISMATCH`, `INVALID_CID`…).
    pub async fn put(&self, addr: &EndpointAddr, cid: &Cid, data: &[u8]) -> Result<()> {
        content_digest(cid)?;
        if data.len() > SHARD_LEN_MAX as usize {
            return Err(Error::TooLarge {
                what: "shard length",
                len: data.len() as u64,
                max: SHARD_LEN_MAX.into(),
            });
        }
        let head = Head::Put {
            cid: *cid,
            len: data.len() as u32,
        };
        match self.request(addr, head, Some(data), 0, Some(cid)).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Fetches `cid` (a shard or a manifest; or the byte range `range` of it, clamped to its
    /// length) from the peer at `addr`; None if the peer does not hold it. Whole content is
    /// verified against its CID ([`Error::Corrupt`] on mismatch); a range is only checked for
    /// length.
    pub async fn get(
        &self,
        addr: &EndpointAddr,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<Option<Vec<u8>>> {
        content_digest(cid)?;
        if let Some(range) = &range {
            let len = range
                .end
                .checked_sub(range.start)
                .ok_or(Error::InvalidRange {
                    start: range.start,
                    end: range.end,
                })?;
            if len > u64::from(SHARD_LEN_MAX) {
                return Err(Error::TooLarge {
                    what: "range length",
                    len,
                    max: SHARD_LEN_MAX.into(),
                });
            }
        }
        let head = Head::Get {
            cid: *cid,
            range: range.clone(),
        };
        let corrupt = || Error::Corrupt {
            peer: peer_name(&addr.id),
            cid: cid.to_string(),
        };
        let result = match self.request(addr, head, None, 0, Some(cid)).await? {
            Reply::NotFound => Ok(None),
            Reply::Data(data) => {
                let ok = match &range {
                    None => matches(cid, &data),
                    Some(range) => data.len() as u64 <= range.end - range.start,
                };
                if ok { Ok(Some(data)) } else { Err(corrupt()) }
            }
            other => Err(unexpected(addr, other)),
        };
        // Transport failures were counted by `request`; these are the answers that are no use.
        let stats = &self.inner.stats;
        match &result {
            Ok(Some(data)) => {
                stats
                    .shard_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Ok(None) | Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Asks the peer at `addr` which of `cids` it holds (at most [`HAS_BATCH_MAX`]); the answer
    /// is in the same order.
    pub async fn has(&self, addr: &EndpointAddr, cids: &[Cid]) -> Result<Vec<bool>> {
        if cids.is_empty() {
            return Ok(Vec::new());
        }
        if cids.len() > HAS_BATCH_MAX {
            return Err(Error::TooLarge {
                what: "HAS batch",
                len: cids.len() as u64,
                max: HAS_BATCH_MAX as u64,
            });
        }
        for cid in cids {
            content_digest(cid)?;
        }
        let head = Head::Has {
            cids: cids.to_vec(),
        };
        match self.request(addr, head, None, cids.len(), None).await? {
            Reply::Has(held) => Ok(held),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Deletes shard `cid` from the peer at `addr`: true if this endpoint's copy was removed,
    /// false if the peer did not hold it, [`Error::NotOwner`] if this endpoint never stored it.
    pub async fn delete(&self, addr: &EndpointAddr, cid: &Cid) -> Result<bool> {
        content_digest(cid)?;
        match self
            .request(addr, Head::Delete { cid: *cid }, None, 0, Some(cid))
            .await?
        {
            Reply::Deleted(deleted) => Ok(deleted),
            other => Err(unexpected(addr, other)),
        }
    }

    /// The signed membership announcements the peer at `addr` knows, its own included, as sent:
    /// each within the size limit but not verified. Feed them to
    /// [`PeerTable::observe_all`](crate::PeerTable::observe_all) to build a peer table without
    /// gossip. A reply over [`PEERS_REPLY_MAX`](crate::PEERS_REPLY_MAX) announcements or with
    /// an oversized one is [`Error::MalformedReply`].
    pub async fn peer_announcements(&self, addr: &EndpointAddr) -> Result<Vec<Vec<u8>>> {
        match self.request(addr, Head::Peers, None, 0, None).await? {
            Reply::Peers(announcements) => Ok(announcements),
            other => Err(unexpected(addr, other)),
        }
    }

    /// A page of the announcements the peer at `addr` knows (PEERS_AFTER): those of endpoint
    /// ids above `after` (from the start when `None`), in id order, at most
    /// [`PEERS_REPLY_MAX`](crate::PEERS_REPLY_MAX), as sent (not verified).
    pub async fn peer_announcements_after(
        &self,
        addr: &EndpointAddr,
        after: Option<&EndpointId>,
    ) -> Result<Vec<Vec<u8>>> {
        let after = after.map_or([0; 32], |id| *id.as_bytes());
        match self
            .request(addr, Head::PeersAfter { after }, None, 0, None)
            .await?
        {
            Reply::Peers(announcements) => Ok(announcements),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Every announcement the peer at `addr` knows, as sent (not verified), paged through
    /// PEERS_AFTER: at most [`PEER_PAGES_MAX`] requests, each page's ids above the last page's
    /// (a peer that sends them out of order or again ends the paging, it cannot keep the
    /// client asking), one per endpoint id, in id order. A peer that does not know PEERS_AFTER
    /// is asked PEERS once instead.
    pub async fn all_peer_announcements(&self, addr: &EndpointAddr) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<([u8; 32], Vec<u8>)> = Vec::new();
        let mut after: Option<[u8; 32]> = None;
        for page in 0..PEER_PAGES_MAX {
            let cursor = after.and_then(|a| EndpointId::from_bytes(&a).ok());
            let signed = match self.peer_announcements_after(addr, cursor.as_ref()).await {
                Ok(s) => s,
                Err(_) if page == 0 => return self.peer_announcements(addr).await,
                Err(err) => {
                    tracing::debug!(%err, peer = %peer_name(&addr.id), "PEERS_AFTER page failed; keeping the pages before it");
                    break;
                }
            };
            let full = signed.len() >= crate::PEERS_REPLY_MAX;
            let mut highest = after;
            for bytes in signed {
                let Some(id) = crate::membership::announced_id(&bytes) else {
                    continue;
                };
                if after.is_some_and(|a| id <= a) {
                    continue;
                }
                highest = highest.max(Some(id));
                out.push((id, bytes));
            }
            if !full || highest == after {
                break;
            }
            after = highest;
        }
        out.sort_by_key(|(id, _)| *id);
        out.dedup_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, b)| b).collect())
    }

    /// Every announcement of network `topic` the peer at `addr` knows
    /// ([`all_peer_announcements`](Self::all_peer_announcements)), each verified as
    /// [`peers`](Self::peers) does.
    pub async fn all_peers(
        &self,
        addr: &EndpointAddr,
        topic: &TopicId,
    ) -> Result<Vec<Announcement>> {
        let signed = self.all_peer_announcements(addr).await?;
        Ok(verified(&signed, topic, addr))
    }

    /// The announcements of network `topic` the peer at `addr` knows, each verified (format,
    /// network, signature; not freshness, which [`PeerTable`](crate::PeerTable) judges).
    /// Announcements that fail are dropped, not fatal: one bad entry should not hide the rest.
    pub async fn peers(&self, addr: &EndpointAddr, topic: &TopicId) -> Result<Vec<Announcement>> {
        let signed = self.peer_announcements(addr).await?;
        Ok(verified(&signed, topic, addr))
    }

    /// Stores the signed holder record `signed` (from [`HolderRecord::sign`]) on the peer at
    /// `addr`. The peer verifies it and refuses, as [`Error::Rejected`], a record that does not
    /// verify (`INVALID_RECORD`), one whose artifact already has a record from another publisher
    /// (`NOT_PUBLISHER`) or a version not above the stored one (`STALE_RECORD`); storing the
    /// same bytes again succeeds.
    pub async fn put_record(&self, addr: &EndpointAddr, signed: &[u8]) -> Result<()> {
        if signed.is_empty() || signed.len() > RECORD_LEN_MAX as usize {
            return Err(Error::TooLarge {
                what: "holder record length",
                len: signed.len() as u64,
                max: RECORD_LEN_MAX.into(),
            });
        }
        let head = Head::PutRecord {
            len: signed.len() as u32,
        };
        match self.request(addr, head, Some(signed), 0, None).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// The holder record of `artifact` (a manifest CID) stored on the peer at `addr`, None if it
    /// has none. The record is verified (signature, limits, and that it is the record of
    /// `artifact`); a record that fails is [`Error::MalformedReply`]. Which publisher to trust
    /// is the caller's decision: see [`SignedRecord::publisher`].
    pub async fn get_record(
        &self,
        addr: &EndpointAddr,
        artifact: &Cid,
    ) -> Result<Option<SignedRecord>> {
        self.fetch_record(addr, artifact, false).await
    }

    /// The repair record of `artifact` stored on the peer at `addr` (GET_REPAIR_RECORD), None
    /// if it has none; verified like [`get_record`](Self::get_record). Whether its signer is
    /// one to believe is the caller's decision (see the protocol's *Repair records*).
    pub async fn get_repair_record(
        &self,
        addr: &EndpointAddr,
        artifact: &Cid,
    ) -> Result<Option<SignedRecord>> {
        self.fetch_record(addr, artifact, true).await
    }

    async fn fetch_record(
        &self,
        addr: &EndpointAddr,
        artifact: &Cid,
        repair: bool,
    ) -> Result<Option<SignedRecord>> {
        manifest_digest(artifact)?;
        let head = Head::GetRecord {
            artifact: *artifact,
            repair,
        };
        let bytes = match self.request(addr, head, None, 0, Some(artifact)).await? {
            Reply::NotFound => return Ok(None),
            Reply::Record(bytes) => bytes,
            other => return Err(unexpected(addr, other)),
        };
        let bad = |reason: String| Error::MalformedReply {
            peer: peer_name(&addr.id),
            reason: format!("holder record of {artifact}: {reason}"),
        };
        // Up to 32 MiB of signature check: off the async threads.
        let signed = tokio::task::spawn_blocking(move || HolderRecord::verify(&bytes))
            .await
            .map_err(|err| bad(format!("verify task failed: {err}")))?
            .map_err(|err| bad(err.to_string()))?;
        if signed.record.artifact != *artifact {
            return Err(bad(format!(
                "the record names artifact {}",
                signed.record.artifact
            )));
        }
        Ok(Some(signed))
    }

    /// Audits the peer at `addr`: asks it to prove, for each of `cids` (raw shard CIDs, at most
    /// [`AUDIT_BATCH_MAX`]), that it holds the byte ranges `nonce` picks. Returns its reply per
    /// shard, in order, length-checked but not judged: judge each with
    /// [`judge_audit`](crate::judge_audit) against the size the manifest gives. Use a fresh,
    /// unpredictable nonce per audit.
    ///
    /// With `lease_until_ms` not 0, this endpoint, if it is an owner of the shards, also asks
    /// the peer to extend its lease on each shard answered to that Unix-ms time (best effort;
    /// the reply does not say whether it did).
    ///
    /// The reply must start within the configured `audit_timeout` of sending the batch; a peer
    /// that does not is an [`Error::Timeout`] ([`Error::is_timeout`]), and a peer that cannot
    /// be reached is [`Error::is_unreachable`]: neither is a failed proof. A reply whose count
    /// differs from the request's or with an answer over
    /// [`AUDIT_ANSWER_LEN_MAX`](crate::AUDIT_ANSWER_LEN_MAX) is [`Error::MalformedReply`].
    pub async fn audit(
        &self,
        addr: &EndpointAddr,
        nonce: &[u8; 32],
        cids: &[Cid],
        lease_until_ms: u64,
    ) -> Result<Vec<AuditReply>> {
        if cids.is_empty() {
            return Ok(Vec::new());
        }
        if cids.len() > AUDIT_BATCH_MAX {
            return Err(Error::TooLarge {
                what: "AUDIT batch",
                len: cids.len() as u64,
                max: AUDIT_BATCH_MAX as u64,
            });
        }
        for cid in cids {
            shard_digest(cid)?;
        }
        let head = Head::Audit {
            nonce: *nonce,
            lease_until_ms,
            cids: cids.to_vec(),
        };
        match self.request(addr, head, None, cids.len(), None).await? {
            // `read_reply` checked the count; this keeps the promise whatever it becomes.
            Reply::Audit(answers) if answers.len() == cids.len() => Ok(answers),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Hands the signed audit receipt `signed` (from [`Receipt::sign`](crate::Receipt::sign),
    /// signed by this endpoint's key) to the holder it names, at `addr`. The peer refuses, as
    /// [`Error::Rejected`] with status `INVALID_RECEIPT`, a receipt that does not verify, whose
    /// auditor is not this endpoint, whose holder is not the peer or whose time is more than
    /// [`RECEIPT_SKEW_MAX`](crate::RECEIPT_SKEW_MAX) from its clock.
    pub async fn put_receipt(&self, addr: &EndpointAddr, signed: &[u8]) -> Result<()> {
        if signed.is_empty() || signed.len() > RECEIPT_LEN_MAX as usize {
            return Err(Error::TooLarge {
                what: "receipt length",
                len: signed.len() as u64,
                max: RECEIPT_LEN_MAX.into(),
            });
        }
        let head = Head::Receipt {
            len: signed.len() as u32,
        };
        match self.request(addr, head, Some(signed), 0, None).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Hands the signed lease `signed` (from [`Lease::try_sign`](crate::Lease::try_sign), by
    /// any key: the lease speaks for its signer, not for the sender) to the peer at `addr`,
    /// which keeps it if it ends later than the lease it holds (an earlier one is an OK that
    /// changes nothing). The peer refuses, as [`Error::Rejected`], a lease that does not verify
    /// or whose times it does not accept (`INVALID_LEASE`), one of an artifact whose manifest
    /// it does not hold (`UNKNOWN_ARTIFACT`) and one whose signer the manifest does not allow
    /// (`NOT_PUBLISHER`).
    pub async fn put_lease(&self, addr: &EndpointAddr, signed: &[u8]) -> Result<()> {
        if signed.is_empty() || signed.len() > LEASE_LEN_MAX as usize {
            return Err(Error::TooLarge {
                what: "lease length",
                len: signed.len() as u64,
                max: LEASE_LEN_MAX.into(),
            });
        }
        let head = Head::PutLease {
            len: signed.len() as u32,
        };
        match self.request(addr, head, Some(signed), 0, None).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// The lease of `artifact` (a manifest CID) stored on the peer at `addr`, None if it has
    /// none. The lease is verified (signature, limits, and that it is a lease of `artifact`);
    /// one that fails is [`Error::MalformedReply`]. Whether its signer may sign leases of the
    /// artifact is for the caller to judge against the manifest.
    pub async fn get_lease(
        &self,
        addr: &EndpointAddr,
        artifact: &Cid,
    ) -> Result<Option<SignedLease>> {
        manifest_digest(artifact)?;
        let head = Head::GetLease {
            artifact: *artifact,
        };
        let bytes = match self.request(addr, head, None, 0, Some(artifact)).await? {
            Reply::NotFound => return Ok(None),
            Reply::Lease(bytes) => bytes,
            other => return Err(unexpected(addr, other)),
        };
        let bad = |reason: String| Error::MalformedReply {
            peer: peer_name(&addr.id),
            reason: format!("lease of {artifact}: {reason}"),
        };
        let signed = SignedLease::decode(&bytes).map_err(|err| bad(err.to_string()))?;
        if signed.lease.artifact != *artifact {
            return Err(bad(format!(
                "the lease names artifact {}",
                signed.lease.artifact
            )));
        }
        Ok(Some(signed))
    }

    /// Hands the signed name record `signed` (from [`NameRecord::try_sign`](crate::NameRecord::try_sign))
    /// to the peer at `addr`. The peer refuses, as [`Error::Rejected`], a record that does not
    /// verify or is dated too far ahead (`INVALID_NAME`), one of an org it holds under another
    /// key (`ORG_CLAIMED`) and one not newer than the newest it holds of the name
    /// (`STALE_RECORD`); an identical record is an OK.
    pub async fn put_name(&self, addr: &EndpointAddr, signed: &[u8]) -> Result<()> {
        if signed.is_empty() || signed.len() > NAME_RECORD_LEN_MAX {
            return Err(Error::TooLarge {
                what: "name record length",
                len: signed.len() as u64,
                max: NAME_RECORD_LEN_MAX as u64,
            });
        }
        let head = Head::PutName {
            len: signed.len() as u32,
        };
        match self.request(addr, head, Some(signed), 0, None).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// The newest `count` (1..=[`NAME_REVISIONS_MAX`]) records of name `org/name` of `kind`
    /// the peer at `addr` holds, newest first; empty if it holds none. Each is verified
    /// (signatures, limits) and must be of the name asked for, or the reply is
    /// [`Error::MalformedReply`]. Which org key owns the org is for the caller to judge across
    /// peers (see [`merge_answers`](crate::merge_answers)).
    pub async fn get_names(
        &self,
        addr: &EndpointAddr,
        kind: NameKind,
        org: &str,
        name: &str,
        count: u8,
    ) -> Result<Vec<SignedName>> {
        check_name_part(org)?;
        check_name_part(name)?;
        let count = count.clamp(1, NAME_REVISIONS_MAX as u8);
        let head = Head::GetName {
            kind,
            org: org.to_string(),
            name: name.to_string(),
            count,
        };
        let records = match self
            .request(addr, head, None, usize::from(count), None)
            .await?
        {
            Reply::NotFound => return Ok(Vec::new()),
            Reply::Names(records) => records,
            other => return Err(unexpected(addr, other)),
        };
        let bad = |reason: String| Error::MalformedReply {
            peer: peer_name(&addr.id),
            reason: format!("name records of {org}/{name}: {reason}"),
        };
        let org = org.to_ascii_lowercase();
        records
            .iter()
            .map(|bytes| {
                let s = SignedName::decode(bytes).map_err(|e| bad(e.to_string()))?;
                if s.record.kind != kind || s.record.org_lowercase() != org || s.record.name != name
                {
                    return Err(bad(format!(
                        "a record of {}/{} was sent",
                        s.record.org, s.record.name
                    )));
                }
                Ok(s)
            })
            .collect()
    }

    /// Closes every pooled connection; later requests reconnect.
    pub async fn close(&self) {
        let slots: Vec<_> = self.lock_pool().drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            if let Some(conn) = slot.conn.lock().await.take() {
                conn.close(0u32.into(), b"client closed");
            }
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Arc<PeerSlot>>> {
        // Every update of the pool is a single insert or remove, so a poisoned map is consistent.
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Time left before a peer that timed out is tried again; None if it is not skipped.
    fn down_for(&self, id: &EndpointId) -> Option<Duration> {
        let mut down = self.inner.down.lock().unwrap_or_else(|p| p.into_inner());
        let until = *down.get(id)?;
        let left = until.checked_duration_since(Instant::now());
        if left.is_none() {
            down.remove(id);
        }
        left
    }

    /// Skips `id` for `peer_down_for` and drops its pooled connection (a peer that died without
    /// closing it leaves it looking open), so that the next try after the pause reconnects.
    async fn mark_down(&self, id: EndpointId, slot: &PeerSlot) {
        self.set_down(id);
        if let Some(conn) = slot.conn.lock().await.take() {
            conn.close(0u32.into(), b"timed out");
        }
    }

    /// Skips `id` for `peer_down_for`.
    fn set_down(&self, id: EndpointId) {
        let pause = self.inner.config.peer_down_for;
        if pause.is_zero() {
            return;
        }
        let mut down = self.inner.down.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like the pool: forget expired entries first, then the oldest.
        if down.len() >= self.inner.config.pool_peers_max.max(1) {
            let now = Instant::now();
            down.retain(|_, until| *until > now);
            if let Some(oldest) = down.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                down.remove(&oldest);
            }
        }
        down.insert(id, Instant::now() + pause);
    }

    fn slot(&self, id: EndpointId) -> Arc<PeerSlot> {
        let mut pool = self.lock_pool();
        if let Some(slot) = pool.get(&id) {
            return slot.clone();
        }
        if pool.len() >= self.inner.config.pool_peers_max.max(1) {
            // Evict an idle peer if there is one; requests in flight keep their own handle.
            let victim = pool
                .iter()
                .find(|(_, slot)| Arc::strong_count(slot) == 1)
                .or_else(|| pool.iter().next())
                .map(|(id, _)| *id);
            if let Some(victim) = victim {
                pool.remove(&victim);
            }
        }
        let slot = Arc::new(PeerSlot {
            conn: tokio::sync::Mutex::new(None),
            inflight: Semaphore::new(self.inner.config.peer_inflight_max.max(1)),
            requests: AtomicU64::new(0),
        });
        pool.insert(id, slot.clone());
        slot
    }

    /// The pooled connection to `addr`, or a new one. Requests to one peer wait for each
    /// other's connect here; when a connect times out, the peer is marked down before the next
    /// waiter gets its turn, and every waiter then fails at once with [`Error::PeerDown`]
    /// instead of trying (and timing out) in turn: with eight chunks in flight, a dead holder
    /// would otherwise cost eight connect timeouts one after another.
    async fn connection(&self, slot: &PeerSlot, addr: &EndpointAddr) -> Result<Connection> {
        let mut conn = slot.conn.lock().await;
        if let Some(open) = conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(open.clone());
        }
        if let Some(left) = self.down_for(&addr.id) {
            self.inner.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::PeerDown {
                peer: peer_name(&addr.id),
                left,
            });
        }
        let limit = self.inner.config.connect_timeout;
        // Counts the attempt as abandoned unless the handshake ends (either way) first.
        let mut attempt = Abandoned {
            count: &self.inner.stats.abandoned_connects,
            settled: false,
        };
        let fresh =
            tokio::time::timeout(limit, self.inner.endpoint.connect(addr.clone(), SHARD_ALPN))
                .await
                .inspect(|_| attempt.settled = true)
                .map_err(|_| {
                    // Still holding the slot's lock: no waiter starts a connect of its own.
                    self.set_down(addr.id);
                    Error::Timeout {
                        peer: peer_name(&addr.id),
                        operation: crate::error::CONNECT,
                        limit,
                    }
                })?
                .map_err(|err| Error::Connect {
                    peer: peer_name(&addr.id),
                    reason: err.to_string(),
                })?;
        *conn = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends one request; `cid` is the content a NOT_OWNER refusal names.
    async fn request(
        &self,
        addr: &EndpointAddr,
        head: Head,
        payload: Option<&[u8]>,
        has_count: usize,
        cid: Option<&Cid>,
    ) -> Result<Reply> {
        let kind = head.kind();
        let stats = &self.inner.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(left) = self.down_for(&addr.id) {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::PeerDown {
                peer: peer_name(&addr.id),
                left,
            });
        }
        let limit = self.inner.config.request_timeout;
        let start_limit = match kind {
            Kind::Put | Kind::PutRecord | Kind::Receipt | Kind::PutLease | Kind::PutName => None,
            // The holder answers a batch only once every shard of it is proved.
            Kind::Audit => Some(self.inner.config.audit_timeout),
            _ => Some(self.inner.config.reply_start_timeout),
        };
        let slot = self.slot(addr.id);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let _permit = slot
                .inflight
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let conn = self.connection(&slot, addr).await?;
            // From here until the peer answers (or the request fails), a cancellation counts
            // against the peer once it has waited SLOW_AFTER.
            let mut watch = SlowWatch {
                client: self,
                id: addr.id,
                sent: Instant::now(),
                settled: false,
            };
            let result = exchange(&conn, addr, kind, &head, payload, has_count, start_limit).await;
            watch.settled = true;
            // Any answer, even a refusal, shows the peer is alive.
            if !matches!(result, Err(Error::Timeout { .. } | Error::Stream { .. })) {
                self.set_slow(addr.id, false);
            }
            result
        };
        let reply = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout {
                peer: peer_name(&addr.id),
                operation: kind.name(),
                limit,
            })
            .and_then(|r| r);
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if matches!(err, Error::Timeout { .. }) {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.mark_down(addr.id, &slot).await;
                }
                return Err(err);
            }
        };
        match reply {
            Reply::Error {
                status,
                quota,
                message,
            } => Err(match (Status::from_byte(status), quota) {
                (Some(Status::QuotaFull), Some((needed, free))) => Error::QuotaFull {
                    peer: peer_name(&addr.id),
                    needed,
                    free,
                },
                (Some(Status::NotOwner), _) if cid.is_some() => Error::NotOwner {
                    peer: peer_name(&addr.id),
                    cid: cid.map(ToString::to_string).unwrap_or_default(),
                },
                _ => Error::Rejected {
                    peer: peer_name(&addr.id),
                    operation: kind.name(),
                    status: status_name(status),
                    message,
                },
            }),
            reply => Ok(reply),
        }
    }
}

/// How long a request waits for its answer before its cancellation makes the peer slow (see
/// [`ShardClient::is_slow`]): well above a healthy reply on loopback or a LAN (about 1 ms), at
/// the hedging delay of readers.
pub const SLOW_AFTER: Duration = Duration::from_millis(300);
/// Shortest time a slow peer stays slow (when `peer_down_for` is shorter).
const SLOW_FOR_MIN: Duration = Duration::from_secs(1);

/// Counts a connection attempt dropped (cancelled or timed out) before its handshake ended.
struct Abandoned<'a> {
    count: &'a AtomicU64,
    settled: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Marks the peer slow if dropped before the request settled, after `SLOW_AFTER`.
struct SlowWatch<'a> {
    client: &'a ShardClient,
    id: EndpointId,
    sent: Instant,
    settled: bool,
}

impl Drop for SlowWatch<'_> {
    fn drop(&mut self) {
        if !self.settled && self.sent.elapsed() >= SLOW_AFTER {
            self.client.set_slow(self.id, true);
        }
    }
}

async fn exchange(
    conn: &Connection,
    addr: &EndpointAddr,
    kind: Kind,
    head: &Head,
    payload: Option<&[u8]>,
    has_count: usize,
    start_limit: Option<Duration>,
) -> Result<Reply> {
    let stream_error = |reason: String| Error::Stream {
        peer: peer_name(&addr.id),
        operation: kind.name(),
        reason,
    };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|err| stream_error(err.to_string()))?;
    let written = async {
        send.write_all(&encode_head(head)).await?;
        if let Some(payload) = payload {
            send.write_all(payload).await?;
        }
        send.finish().map_err(iroh::endpoint::WriteError::from)?;
        Ok::<_, iroh::endpoint::WriteError>(())
    }
    .await;
    // The server may answer before reading everything (an over-quota or oversized PUT) and stop
    // our send side, so its reply is read even when writing failed.
    let reply = match start_limit {
        None => read_reply(&mut recv, kind, has_count).await,
        Some(limit) => {
            // The first byte (the reply's version) must come within `limit`; the rest within
            // the request timeout around this call.
            let mut first = [0u8; 1];
            let started = tokio::io::AsyncReadExt::read_exact(&mut recv, &mut first);
            match tokio::time::timeout(limit, started).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        peer: peer_name(&addr.id),
                        operation: kind.name(),
                        limit,
                    });
                }
                Ok(Err(err)) => Err(FrameError::Io(err)),
                Ok(Ok(_)) => {
                    let mut rest = tokio::io::AsyncReadExt::chain(&first[..], &mut recv);
                    read_reply(&mut rest, kind, has_count).await
                }
            }
        }
    };
    match (written, reply) {
        (_, Ok(reply)) => Ok(reply),
        (Err(err), Err(_)) => Err(stream_error(err.to_string())),
        (Ok(()), Err(FrameError::Io(err))) => Err(stream_error(err.to_string())),
        (Ok(()), Err(bad)) => Err(Error::MalformedReply {
            peer: peer_name(&addr.id),
            reason: bad.describe(),
        }),
    }
}

fn unexpected(addr: &EndpointAddr, reply: Reply) -> Error {
    Error::MalformedReply {
        peer: peer_name(&addr.id),
        reason: format!("reply {reply:?} does not answer the request"),
    }
}
