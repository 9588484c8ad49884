//! The requesting side of the shard protocol: [`ShardClient`] with a per-peer connection pool.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr, EndpointId};
use tokio::sync::Semaphore;

use crate::cids::{matches, shard_digest};
use crate::error::{Error, Result};
use crate::protocol::{
    CONNECT_TIMEOUT, FrameError, HAS_BATCH_MAX, Head, Kind, PEER_INFLIGHT_MAX, POOL_PEERS_MAX,
    REQUEST_TIMEOUT, Reply, SHARD_ALPN, SHARD_LEN_MAX, Status, encode_head, read_reply,
};

/// Timeouts and concurrency limits of the shard protocol, for both [`ShardClient`] and
/// [`ShardServer`](crate::ShardServer). Tests shorten the timeouts; nodes use the default.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, from waiting for a slot to the end of the reply.
    pub request_timeout: Duration,
    /// Requests in flight per peer (values below 1 count as 1).
    pub peer_inflight_max: usize,
    /// Peers whose connections the client keeps open (values below 1 count as 1).
    pub pool_peers_max: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            peer_inflight_max: PEER_INFLIGHT_MAX,
            pool_peers_max: POOL_PEERS_MAX,
        }
    }
}

/// One pooled peer: its connection, opened on first use, and its request slots.
#[derive(Debug)]
struct PeerSlot {
    conn: tokio::sync::Mutex<Option<Connection>>,
    inflight: Semaphore,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    config: ShardConfig,
    pool: Mutex<HashMap<EndpointId, Arc<PeerSlot>>>,
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

fn peer_name(id: &EndpointId) -> String {
    id.fmt_short().to_string()
}

fn status_name(status: u8) -> &'static str {
    match Status::from_byte(status) {
        Some(Status::Malformed) => "MALFORMED",
        Some(Status::UnsupportedVersion) => "UNSUPPORTED_VERSION",
        Some(Status::UnsupportedRequest) => "UNSUPPORTED_REQUEST",
        Some(Status::TooLarge) => "TOO_LARGE",
        Some(Status::CidMismatch) => "CID_MISMATCH",
        Some(Status::InvalidCid) => "INVALID_CID",
        Some(Status::QuotaFull) => "QUOTA_FULL",
        Some(Status::NotOwner) => "NOT_OWNER",
        Some(Status::Corrupted) => "CORRUPTED",
        Some(Status::Internal) => "INTERNAL",
        Some(Status::Ok) => "OK",
        Some(Status::NotFound) => "NOT_FOUND",
        None => "RESERVED",
    }
}

impl ShardClient {
    /// A client sending from `endpoint` with the limits of `config`.
    pub fn new(endpoint: Endpoint, config: ShardConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                pool: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ShardConfig {
        &self.inner.config
    }

    /// Stores `data` as shard `cid` on the peer at `addr`. The peer checks that the bytes hash to
    /// the CID and that its quota holds them before it commits; a refusal is
    /// [`Error::QuotaFull`] or [`Error::Rejected`] (status `CID_MISMATCH`, `INVALID_CID`…).
    pub async fn put(&self, addr: &EndpointAddr, cid: &Cid, data: &[u8]) -> Result<()> {
        shard_digest(cid)?;
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
        match self
            .request(addr, Kind::Put, head, Some(data), 0, cid)
            .await?
        {
            Reply::Stored => Ok(()),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Fetches shard `cid` (or the byte range `range` of it, clamped to its length) from the peer
    /// at `addr`; None if the peer does not hold it. A whole shard is verified against its CID
    /// ([`Error::Corrupt`] on mismatch); a range is only checked for length.
    pub async fn get(
        &self,
        addr: &EndpointAddr,
        cid: &Cid,
        range: Option<Range<u64>>,
    ) -> Result<Option<Vec<u8>>> {
        shard_digest(cid)?;
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
        match self.request(addr, Kind::Get, head, None, 0, cid).await? {
            Reply::NotFound => Ok(None),
            Reply::Data(data) => {
                let ok = match &range {
                    None => matches(cid, &data),
                    Some(range) => data.len() as u64 <= range.end - range.start,
                };
                if ok { Ok(Some(data)) } else { Err(corrupt()) }
            }
            other => Err(unexpected(addr, other)),
        }
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
            shard_digest(cid)?;
        }
        let head = Head::Has {
            cids: cids.to_vec(),
        };
        match self
            .request(addr, Kind::Has, head, None, cids.len(), &cids[0])
            .await?
        {
            Reply::Has(held) => Ok(held),
            other => Err(unexpected(addr, other)),
        }
    }

    /// Deletes shard `cid` from the peer at `addr`: true if this endpoint's copy was removed,
    /// false if the peer did not hold it, [`Error::NotOwner`] if this endpoint never stored it.
    pub async fn delete(&self, addr: &EndpointAddr, cid: &Cid) -> Result<bool> {
        shard_digest(cid)?;
        match self
            .request(addr, Kind::Delete, Head::Delete { cid: *cid }, None, 0, cid)
            .await?
        {
            Reply::Deleted(deleted) => Ok(deleted),
            other => Err(unexpected(addr, other)),
        }
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
        });
        pool.insert(id, slot.clone());
        slot
    }

    async fn connection(&self, slot: &PeerSlot, addr: &EndpointAddr) -> Result<Connection> {
        let mut conn = slot.conn.lock().await;
        if let Some(open) = conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(open.clone());
        }
        let limit = self.inner.config.connect_timeout;
        let fresh =
            tokio::time::timeout(limit, self.inner.endpoint.connect(addr.clone(), SHARD_ALPN))
                .await
                .map_err(|_| Error::Timeout {
                    peer: peer_name(&addr.id),
                    operation: "connect",
                    limit,
                })?
                .map_err(|err| Error::Connect {
                    peer: peer_name(&addr.id),
                    reason: err.to_string(),
                })?;
        *conn = Some(fresh.clone());
        Ok(fresh)
    }

    async fn request(
        &self,
        addr: &EndpointAddr,
        kind: Kind,
        head: Head,
        payload: Option<&[u8]>,
        has_count: usize,
        cid: &Cid,
    ) -> Result<Reply> {
        let limit = self.inner.config.request_timeout;
        let exchange = async {
            let slot = self.slot(addr.id);
            let _permit = slot
                .inflight
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let conn = self.connection(&slot, addr).await?;
            exchange(&conn, addr, kind, &head, payload, has_count).await
        };
        let reply = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout {
                peer: peer_name(&addr.id),
                operation: kind.name(),
                limit,
            })??;
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
                (Some(Status::NotOwner), _) => Error::NotOwner {
                    peer: peer_name(&addr.id),
                    cid: cid.to_string(),
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

async fn exchange(
    conn: &Connection,
    addr: &EndpointAddr,
    kind: Kind,
    head: &Head,
    payload: Option<&[u8]>,
    has_count: usize,
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
    let reply = read_reply(&mut recv, kind, has_count).await;
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
