//! The serving side of the shard protocol: a [`ProtocolHandler`] over a [`ShardBackend`].

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cid::Cid;
use iroh::EndpointId;
use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

use crate::audit::AuditReply;
use crate::backend::{BackendError, ShardBackend};
use crate::cids::{content_digest, manifest_digest, matches};
use crate::client::ShardConfig;
use crate::lease::SignedLease;
use crate::name::{NameKind, SignedName};
use crate::protocol::{
    AUDIT_ANSWER_LEN_MAX, FrameError, Head, PEER_INFLIGHT_MAX, SHARD_LEN_MAX, Status,
    encode_audit_reply, encode_data_head, encode_error, encode_names, encode_not_found, encode_ok,
    encode_peers, read_end, read_head, read_lease_payload, read_name_payload, read_payload,
    read_receipt_payload, read_record_payload,
};
use crate::receipt::{RECEIPT_SKEW_MAX, SignedReceipt};
use crate::record::{HolderRecord, RECORD_AHEAD_MAX, SignedRecord, too_far_ahead, unix_ms_now};
use cairn_artifact::Manifest;

/// Where a server finds the signed announcements it answers PEERS with.
pub type PeerSource = Arc<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// QUIC application error code sent when a stream is abandoned (timeout or broken frame).
const STREAM_ABANDONED: VarInt = VarInt::from_u32(1);

/// Serves shards from a [`ShardBackend`] to peers speaking the shard protocol.
///
/// Register it on a [`Router`](iroh::protocol::Router) under
/// [`SHARD_ALPN`](crate::SHARD_ALPN). Each connection handles at most
/// `config.peer_inflight_max` requests at once, and never fewer than [`PEER_INFLIGHT_MAX`], the
/// number of streams the endpoint lets a peer open: every stream a peer can open is read.
#[derive(Clone)]
pub struct ShardServer {
    backend: Arc<dyn ShardBackend>,
    config: ShardConfig,
    peer_source: Option<PeerSource>,
    /// This node's own endpoint id, which a receipt must name as its holder.
    endpoint_id: Option<EndpointId>,
    /// Held from reading the stored holder record to storing its replacement, so that two
    /// PUT_RECORDs cannot both pass the version check against the same old record.
    record_lock: Arc<Mutex<()>>,
    /// Held from reading the stored lease to storing a later one.
    lease_lock: Arc<Mutex<()>>,
    /// Held from reading a name's claim and newest record to storing a new one.
    name_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for ShardServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardServer")
            .field("config", &self.config)
            .field("peer_source", &self.peer_source.is_some())
            .field("endpoint_id", &self.endpoint_id)
            .finish_non_exhaustive()
    }
}

impl ShardServer {
    /// A server over `backend` with the limits and timeouts of `config`.
    pub fn new(backend: Arc<dyn ShardBackend>, config: ShardConfig) -> Self {
        Self {
            backend,
            config,
            peer_source: None,
            endpoint_id: None,
            record_lock: Arc::new(Mutex::new(())),
            lease_lock: Arc::new(Mutex::new(())),
            name_lock: Arc::new(Mutex::new(())),
        }
    }

    /// Answers PEERS with the signed announcements `source` returns (typically
    /// [`Membership::signed_announcements`](crate::Membership::signed_announcements)); the
    /// first [`PEERS_REPLY_MAX`](crate::PEERS_REPLY_MAX) within the size limit are sent. Without
    /// a source the server answers PEERS with none.
    ///
    /// The server is registered on the router before membership joins (gossip needs the
    /// router), so a source usually reads membership through a slot filled later, such as a
    /// `OnceLock`. The source runs on the async runtime: it should only copy what it holds.
    pub fn with_peer_source(mut self, source: PeerSource) -> Self {
        self.peer_source = Some(source);
        self
    }

    /// Tells the server its own endpoint id (that of the endpoint whose router it is registered
    /// on), so that it accepts audit receipts naming this node as their holder (RECEIPT). iroh
    /// does not say which local endpoint accepted a connection; without this the server answers
    /// RECEIPT with UNSUPPORTED_REQUEST.
    pub fn with_endpoint_id(mut self, id: EndpointId) -> Self {
        self.endpoint_id = Some(id);
        self
    }
}

impl ProtocolHandler for ShardServer {
    /// Handles the connection's streams until the peer closes it; dropping the task set on return
    /// aborts requests still running.
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let permits = Arc::new(Semaphore::new(
            self.config.peer_inflight_max.max(PEER_INFLIGHT_MAX),
        ));
        let mut tasks = JoinSet::new();
        loop {
            // Waiting for a permit before accepting bounds what one peer can make us hold; the
            // endpoint's stream limit (also PEER_INFLIGHT_MAX) keeps it from opening streams
            // that would wait here unread.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let Ok((send, recv)) = conn.accept_bi().await else {
                break;
            };
            while tasks.try_join_next().is_some() {}
            let server = self.clone();
            tasks.spawn(async move {
                let _permit = permit;
                handle_stream(server, *peer.as_bytes(), send, recv).await;
            });
        }
        Ok(())
    }
}

async fn handle_stream(
    server: ShardServer,
    peer: [u8; 32],
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let timeout = server.config.request_timeout;
    match tokio::time::timeout(timeout, serve(&server, peer, &mut send, &mut recv)).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            debug!(%reason, "shard request stream failed");
            let _ = send.reset(STREAM_ABANDONED);
            let _ = recv.stop(STREAM_ABANDONED);
        }
        Err(_) => {
            debug!(?timeout, "shard request timed out");
            let _ = send.reset(STREAM_ABANDONED);
            let _ = recv.stop(STREAM_ABANDONED);
        }
    }
}

/// What the server sends back: a reply frame, possibly followed by shard bytes.
struct Answer {
    frame: Vec<u8>,
    data: Option<Vec<u8>>,
}

impl Answer {
    fn frame(frame: Vec<u8>) -> Self {
        Self { frame, data: None }
    }

    fn error(status: Status, message: impl AsRef<str>) -> Self {
        Self::frame(encode_error(status, None, message.as_ref()))
    }
}

/// Reads one request, handles it and writes the reply. Returns Err only when the stream itself
/// failed, so that no reply can be sent.
async fn serve(
    server: &ShardServer,
    peer: [u8; 32],
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), String> {
    let answer = match answer(server, peer, recv).await {
        Ok(answer) => answer,
        Err(FrameError::Io(err)) => return Err(err.to_string()),
        Err(FrameError::Bad(status, message)) => {
            // Refuse whatever else the peer is still sending; the reply still goes out.
            let _ = recv.stop(STREAM_ABANDONED);
            Answer::error(status, message)
        }
    };
    send.write_all(&answer.frame)
        .await
        .map_err(|err| err.to_string())?;
    if let Some(data) = answer.data {
        // Handed over whole: the stream keeps the buffer instead of copying it.
        send.write_chunk(bytes::Bytes::from(data))
            .await
            .map_err(|err| err.to_string())?;
    }
    send.finish().map_err(|err| err.to_string())?;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    backend: &Arc<dyn ShardBackend>,
    op: impl FnOnce(&dyn ShardBackend) -> T + Send + 'static,
) -> Result<T, FrameError> {
    let backend = backend.clone();
    tokio::task::spawn_blocking(move || op(backend.as_ref()))
        .await
        .map_err(|err| FrameError::Bad(Status::Internal, format!("backend task failed: {err}")))
}

/// The refusal for a backend failure on `cid` (or whatever else failed).
fn backend_error(cid: &dyn std::fmt::Display, err: BackendError) -> Answer {
    match err {
        BackendError::QuotaFull { needed, free } => Answer::frame(encode_error(
            Status::QuotaFull,
            Some((needed, free)),
            &format!("no room for {cid}"),
        )),
        BackendError::NotOwner => Answer::error(
            Status::NotOwner,
            format!("requester is not an owner of {cid}"),
        ),
        BackendError::Corrupted(reason) => Answer::error(
            Status::Corrupted,
            format!("stored copy of {cid} is corrupted: {reason}"),
        ),
        BackendError::Io(reason) => Answer::error(
            Status::Internal,
            format!("storage failed for {cid}: {reason}"),
        ),
        BackendError::UnknownArtifact => Answer::error(
            Status::UnknownArtifact,
            format!("this node holds no manifest of {cid}, so it keeps no record of it"),
        ),
    }
}

async fn answer(
    server: &ShardServer,
    peer: [u8; 32],
    recv: &mut RecvStream,
) -> Result<Answer, FrameError> {
    let backend = &server.backend;
    let head = read_head(recv).await?;
    match head {
        Head::Put { cid, len } => {
            if let Err(err) = content_digest(&cid) {
                return Ok(Answer::error(Status::InvalidCid, err.to_string()));
            }
            // Refuse an over-quota PUT before receiving its bytes. The backend checks again when
            // it commits, since other PUTs may land in between.
            let (free, held) = blocking(backend, move |b| (b.free_bytes(), b.has(&cid))).await?;
            if !held && u64::from(len) > free {
                let _ = recv.stop(STREAM_ABANDONED);
                return Ok(backend_error(
                    &cid,
                    BackendError::QuotaFull {
                        needed: len.into(),
                        free,
                    },
                ));
            }
            let data = read_payload(recv, len).await?;
            read_end(recv).await?;
            if !matches(&cid, &data) {
                return Ok(Answer::error(
                    Status::CidMismatch,
                    format!("bytes do not hash to shard {cid}"),
                ));
            }
            Ok(
                match blocking(backend, move |b| b.put(&cid, &data, peer)).await? {
                    Ok(()) => Answer::frame(encode_ok(&[])),
                    Err(err) => backend_error(&cid, err),
                },
            )
        }
        Head::Get { cid, range } => {
            read_end(recv).await?;
            if let Err(err) = content_digest(&cid) {
                return Ok(Answer::error(Status::InvalidCid, err.to_string()));
            }
            let asked = range.clone();
            let (data, checked) = match blocking(backend, move |b| {
                b.get(&cid, range).map(|d| (d, b.verifies_reads()))
            })
            .await?
            {
                Ok((Some(data), checked)) => (data, checked),
                Ok((None, _)) => return Ok(Answer::frame(encode_not_found())),
                Err(err) => return Ok(backend_error(&cid, err)),
            };
            // Never pass on bytes we cannot vouch for: a whole shard is checked against its CID
            // (here, unless the backend's read already did), a range at least against the
            // length asked for.
            let fits = match &asked {
                None => data.len() <= SHARD_LEN_MAX as usize && (checked || matches(&cid, &data)),
                Some(range) => data.len() as u64 <= range.end - range.start,
            };
            if !fits {
                return Ok(Answer::error(
                    Status::Corrupted,
                    format!("stored shard {cid} failed verification"),
                ));
            }
            Ok(Answer {
                frame: encode_data_head(data.len() as u32),
                data: Some(data),
            })
        }
        Head::Has { cids } => {
            read_end(recv).await?;
            let held = blocking(backend, move |b| {
                cids.iter()
                    .map(|cid| u8::from(b.has(cid)))
                    .collect::<Vec<u8>>()
            })
            .await?;
            let mut body = (held.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(&held);
            Ok(Answer::frame(encode_ok(&body)))
        }
        Head::Delete { cid } => {
            read_end(recv).await?;
            Ok(
                match blocking(backend, move |b| b.delete(&cid, peer)).await? {
                    Ok(deleted) => Answer::frame(encode_ok(&[u8::from(deleted)])),
                    Err(err) => backend_error(&cid, err),
                },
            )
        }
        Head::Peers => {
            read_end(recv).await?;
            let announcements = server
                .peer_source
                .as_ref()
                .map(|source| source())
                .unwrap_or_default();
            Ok(Answer::frame(encode_peers(&announcements)))
        }
        Head::PeersAfter { after } => {
            read_end(recv).await?;
            let mut page: Vec<([u8; 32], Vec<u8>)> = server
                .peer_source
                .as_ref()
                .map(|source| source())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| Some((crate::membership::announced_id(&a)?, a)))
                .filter(|(id, _)| *id > after)
                .collect();
            // The lowest ids above `after`: selected, then only those sorted.
            if page.len() > crate::PEERS_REPLY_MAX {
                page.select_nth_unstable_by_key(crate::PEERS_REPLY_MAX, |a| a.0);
                page.truncate(crate::PEERS_REPLY_MAX);
            }
            page.sort_unstable_by_key(|a| a.0);
            page.dedup_by(|a, b| a.0 == b.0);
            let page: Vec<Vec<u8>> = page.into_iter().map(|(_, a)| a).collect();
            Ok(Answer::frame(encode_peers(&page)))
        }
        Head::PutRecord { len } => {
            let signed = read_record_payload(recv, len).await?;
            read_end(recv).await?;
            let lock = server.record_lock.clone();
            // Verifying a signature over up to 32 MiB and the backend's disk I/O both block.
            blocking(backend, move |b| put_record(b, &lock, signed)).await
        }
        Head::Audit {
            nonce,
            lease_until_ms,
            cids,
        } => {
            read_end(recv).await?;
            let count = cids.len();
            // Tells the blocking task to stop between shards once nobody waits for its answer
            // (this future dropped: the deadline below, the request timeout, a broken stream).
            let cancel = CancelOnDrop::default();
            let cancelled = cancel.0.clone();
            let work = blocking(backend, move |b| {
                audit_batch(b, &nonce, &cids, lease_until_ms, peer, &cancelled)
            });
            let limit = server.config.audit_timeout;
            let answers = match tokio::time::timeout(limit, work).await {
                Ok(answers) => answers?,
                Err(_) => {
                    // The auditor gave up by now; a late answer is worth nothing to it.
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("AUDIT of {count} shards not answered within {limit:?}"),
                    )));
                }
            };
            drop(cancel);
            Ok(match answers {
                Ok(answers) => Answer::frame(encode_audit_reply(&answers)),
                Err((cid, err)) => backend_error(&cid, err),
            })
        }
        Head::Receipt { len } => {
            let bytes = read_receipt_payload(recv, len).await?;
            read_end(recv).await?;
            let Some(own) = server.endpoint_id else {
                return Ok(Answer::error(
                    Status::UnsupportedRequest,
                    "this node takes no audit receipts: it does not know its own endpoint id",
                ));
            };
            blocking(backend, move |b| put_receipt(b, own, peer, &bytes)).await
        }
        Head::PutLease { len } => {
            let bytes = read_lease_payload(recv, len).await?;
            read_end(recv).await?;
            let lock = server.lease_lock.clone();
            blocking(backend, move |b| put_lease(b, &lock, &bytes)).await
        }
        Head::PutName { len } => {
            let bytes = read_name_payload(recv, len).await?;
            read_end(recv).await?;
            let lock = server.name_lock.clone();
            blocking(backend, move |b| put_name(b, &lock, &bytes)).await
        }
        Head::GetName {
            kind,
            org,
            name,
            count,
        } => {
            read_end(recv).await?;
            let org = org.to_ascii_lowercase();
            blocking(backend, move |b| get_names(b, kind, &org, &name, count)).await
        }
        Head::GetLease { artifact } => {
            read_end(recv).await?;
            if let Err(err) = manifest_digest(&artifact) {
                return Ok(Answer::error(Status::InvalidCid, err.to_string()));
            }
            let stored = match blocking(backend, move |b| b.get_lease(&artifact)).await? {
                Ok(Some(stored)) => stored,
                Ok(None) => return Ok(Answer::frame(encode_not_found())),
                Err(err) => return Ok(backend_error(&artifact, err)),
            };
            // Never pass on a lease we cannot vouch for.
            Ok(match SignedLease::decode(&stored) {
                Ok(signed) if signed.lease.artifact == artifact => Answer {
                    frame: encode_data_head(signed.bytes.len() as u32),
                    data: Some(signed.bytes),
                },
                Ok(_) => Answer::error(
                    Status::Corrupted,
                    format!("stored lease of {artifact} names another artifact"),
                ),
                Err(err) => Answer::error(
                    Status::Corrupted,
                    format!("stored lease of {artifact} failed verification: {err}"),
                ),
            })
        }
        Head::GetRecord { artifact, repair } => {
            read_end(recv).await?;
            if let Err(err) = manifest_digest(&artifact) {
                return Ok(Answer::error(Status::InvalidCid, err.to_string()));
            }
            let stored = match blocking(backend, move |b| {
                if repair {
                    b.get_repair_record(&artifact)
                } else {
                    b.get_record(&artifact)
                }
            })
            .await?
            {
                Ok(Some(stored)) => stored,
                Ok(None) => return Ok(Answer::frame(encode_not_found())),
                Err(err) => return Ok(backend_error(&artifact, err)),
            };
            // Never pass on a record we cannot vouch for.
            let verified = tokio::task::spawn_blocking(move || {
                HolderRecord::verify(&stored).map_err(|err| err.to_string())
            })
            .await
            .map_err(|err| {
                FrameError::Bad(Status::Internal, format!("verify task failed: {err}"))
            })?;
            Ok(match verified {
                Ok(signed) if signed.record.artifact == artifact => Answer {
                    frame: encode_data_head(signed.bytes.len() as u32),
                    data: Some(signed.bytes),
                },
                Ok(_) => Answer::error(
                    Status::Corrupted,
                    format!("stored holder record of {artifact} names another artifact"),
                ),
                Err(reason) => Answer::error(
                    Status::Corrupted,
                    format!("stored holder record of {artifact} failed verification: {reason}"),
                ),
            })
        }
    }
}

/// Checks a received holder record against the artifact's manifest and the record stored for
/// it, and stores it if it may replace it. Runs on a blocking thread, holding `lock` across the
/// check against the stored record and the store.
///
/// A record is kept only where it has a reason to be: the node must hold the artifact's
/// manifest (UNKNOWN_ARTIFACT otherwise), the manifest must allow the record's signer
/// (NOT_PUBLISHER), and the record must fit the manifest (INVALID_RECORD). Its version may be
/// dated at most [`RECORD_AHEAD_MAX`](crate::RECORD_AHEAD_MAX) past this node's clock
/// (INVALID_RECORD), so that nobody can freeze an artifact at a version no later record passes.
fn put_record(backend: &dyn ShardBackend, lock: &Mutex<()>, signed: Vec<u8>) -> Answer {
    let new = match HolderRecord::verify(&signed) {
        Ok(new) => new,
        Err(err) => return Answer::error(Status::InvalidRecord, err.to_string()),
    };
    let artifact = new.record.artifact;
    let (signers, (chunks, k, m)) = match allowed_signers(backend, &artifact) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let allowed = |signer: &iroh::EndpointId| signers.contains(signer.as_bytes());
    if !allowed(&new.publisher) {
        return put_repair_record(backend, lock, new, (chunks, k, m), &allowed);
    }
    if let Some(refusal) = refuse_unfit(&new, (chunks, k, m), "holder record") {
        return refusal;
    }
    // The guarded data is (), so a poisoned lock has nothing inconsistent in it.
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stored = match backend.get_record(&artifact) {
        Ok(stored) => stored,
        Err(err) => return backend_error(&artifact, err),
    };
    // A stored record that no longer verifies, or whose signer the manifest does not allow (as
    // older builds stored from anyone), stands in nobody's way: the new one replaces it.
    if let Some(old) = stored
        .and_then(|bytes| HolderRecord::verify(&bytes).ok())
        .filter(|old| old.record.artifact == artifact && allowed(&old.publisher))
        && let Some(answer) = refuse_stale(&new, &old, "holder record")
    {
        return answer;
    }
    match backend.put_record(&artifact, &new.bytes) {
        Ok(()) => Answer::frame(encode_ok(&[])),
        Err(err) => backend_error(&artifact, err),
    }
}

/// The checks of [`put_record`] for a record from a signer the manifest does not name: it may
/// go to the repair slot if its signer is a node of the stored publisher's record or of the
/// stored repair record (see the protocol's *Repair records*).
fn put_repair_record(
    backend: &dyn ShardBackend,
    lock: &Mutex<()>,
    new: SignedRecord,
    (chunks, k, m): Shape,
    allowed: &dyn Fn(&iroh::EndpointId) -> bool,
) -> Answer {
    let artifact = new.record.artifact;
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stored = |repair: bool| -> Result<Option<SignedRecord>, Answer> {
        let bytes = if repair {
            backend.get_repair_record(&artifact)
        } else {
            backend.get_record(&artifact)
        }
        .map_err(|err| backend_error(&artifact, err))?;
        Ok(bytes
            .and_then(|b| HolderRecord::verify(&b).ok())
            .filter(|r| r.record.artifact == artifact))
    };
    let primary = match stored(false) {
        Ok(p) => p.filter(|p| allowed(&p.publisher)),
        Err(answer) => return answer,
    };
    let repair = match stored(true) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let names = |r: &Option<SignedRecord>| {
        r.as_ref()
            .is_some_and(|r| r.record.nodes.iter().any(|(id, _)| *id == new.publisher))
    };
    if !names(&primary) && !names(&repair) {
        return Answer::error(
            Status::NotPublisher,
            format!(
                "holder record of {artifact} is signed by {}, which its manifest does not allow \
                 and no stored record names as a holder",
                new.publisher.fmt_short()
            ),
        );
    }
    if let Some(refusal) = refuse_unfit(&new, (chunks, k, m), "repair record") {
        return refusal;
    }
    if let Some(old) = &repair
        && let Some(answer) = refuse_stale(&new, old, "repair record")
    {
        return answer;
    }
    match backend.put_repair_record(&artifact, &new.bytes) {
        Ok(()) => Answer::frame(encode_ok(&[])),
        Err(err) => backend_error(&artifact, err),
    }
}

/// Checks a received lease against the artifact's manifest and the server's clock, and stores
/// it if it ends later than the lease stored (see the protocol's *Leases*). Runs on a blocking
/// thread, holding `lock` across the comparison with the stored lease and the store.
fn put_lease(backend: &dyn ShardBackend, lock: &Mutex<()>, bytes: &[u8]) -> Answer {
    let new = match SignedLease::decode(bytes) {
        Ok(new) => new,
        Err(err) => return Answer::error(Status::InvalidLease, err.to_string()),
    };
    let lease = &new.lease;
    let artifact = lease.artifact;
    let signers = match allowed_signers(backend, &artifact) {
        Ok((signers, _)) => signers,
        Err(answer) => return answer,
    };
    if !signers.contains(lease.signer.as_bytes()) {
        return Answer::error(
            Status::NotPublisher,
            format!(
                "the lease of {artifact} is signed by {}, which its manifest does not allow",
                lease.signer.fmt_short()
            ),
        );
    }
    if let Err(err) = lease.check_time(unix_ms_now()) {
        return Answer::error(Status::InvalidLease, err.to_string());
    }
    // The guarded data is (), so a poisoned lock has nothing inconsistent in it.
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let stored = match backend.get_lease(&artifact) {
        Ok(stored) => stored,
        Err(err) => return backend_error(&artifact, err),
    };
    // A stored lease that no longer verifies stands in nobody's way.
    if let Some(old) = stored
        .and_then(|bytes| SignedLease::decode(&bytes).ok())
        .filter(|old| old.lease.artifact == artifact)
        && old.lease.until_ms >= lease.until_ms
    {
        return Answer::frame(encode_ok(&[]));
    }
    match backend.put_lease(&artifact, &new) {
        Ok(()) => Answer::frame(encode_ok(&[])),
        Err(err) => backend_error(&artifact, err),
    }
}

/// Checks a received name record (see the protocol's *Names*) and stores it. Runs on a
/// blocking thread, holding `lock` across the checks against what is stored and the store.
fn put_name(backend: &dyn ShardBackend, lock: &Mutex<()>, bytes: &[u8]) -> Answer {
    let new = match SignedName::decode(bytes) {
        Ok(new) => new,
        Err(err) => return Answer::error(Status::InvalidName, err.to_string()),
    };
    let r = &new.record;
    if let Err(err) = r.check_time(unix_ms_now()) {
        return Answer::error(Status::InvalidName, err.to_string());
    }
    let org = r.org_lowercase();
    let what = format!("{}/{}", r.org, r.name);
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match backend.org_claim(&org) {
        Ok(Some(claim)) if claim != *r.org_key.as_bytes() => {
            return Answer::error(
                Status::OrgClaimed,
                format!(
                    "org {org} is held here under another key than {}",
                    r.org_key.fmt_short()
                ),
            );
        }
        Ok(_) => {}
        Err(err) => return backend_error(&format!("the records of {what}"), err),
    }
    let stored = match backend.get_names(&org, r.kind, &r.name) {
        Ok(stored) => stored,
        Err(err) => return backend_error(&format!("the records of {what}"), err),
    };
    if stored.iter().any(|s| s.as_slice() == bytes) {
        return Answer::frame(encode_ok(&[]));
    }
    // A stored record that no longer verifies stands in nobody's way.
    if let Some(newest) = stored
        .iter()
        .filter_map(|b| SignedName::decode(b).ok())
        .find(|s| !new.wins_over(s))
    {
        return Answer::error(
            Status::StaleRecord,
            format!(
                "version {} of {what} is not above version {} held here",
                r.version, newest.record.version
            ),
        );
    }
    match backend.put_name(&new) {
        Ok(()) => Answer::frame(encode_ok(&[])),
        Err(err) => backend_error(&format!("the records of {what}"), err),
    }
}

/// The newest `count` stored records of a name, each verified again, or NOT_FOUND.
fn get_names(
    backend: &dyn ShardBackend,
    kind: NameKind,
    org: &str,
    name: &str,
    count: u8,
) -> Answer {
    let stored = match backend.get_names(org, kind, name) {
        Ok(stored) => stored,
        Err(err) => return backend_error(&format!("the records of {org}/{name}"), err),
    };
    // Never pass on a record we cannot vouch for.
    let mut records: Vec<SignedName> = stored
        .iter()
        .filter_map(|b| SignedName::decode(b).ok())
        .filter(|s| {
            s.record.kind == kind && s.record.org_lowercase() == org && s.record.name == name
        })
        .collect();
    if records.is_empty() {
        return Answer::frame(encode_not_found());
    }
    records.sort_by(|a, b| (b.record.version, &b.bytes).cmp(&(a.record.version, &a.bytes)));
    records.truncate(usize::from(count));
    let bytes: Vec<Vec<u8>> = records.into_iter().map(|s| s.bytes).collect();
    Answer::frame(encode_names(&bytes))
}

/// The refusal of a record that does not fit its manifest's shape (chunks, k, m) or is dated
/// more than [`RECORD_AHEAD_MAX`] past this node's clock (INVALID_RECORD), if it is one.
fn refuse_unfit(new: &SignedRecord, (chunks, k, m): Shape, what: &str) -> Option<Answer> {
    let artifact = new.record.artifact;
    if new.record.holders.len() != chunks
        || usize::from(new.record.k) != k
        || usize::from(new.record.m) != m
    {
        return Some(Answer::error(
            Status::InvalidRecord,
            format!(
                "{what} of {artifact} ({} chunks, k = {}, m = {}) does not match its manifest \
                 ({chunks} chunks, k = {k}, m = {m})",
                new.record.holders.len(),
                new.record.k,
                new.record.m
            ),
        ));
    }
    let now = unix_ms_now();
    too_far_ahead(new.record.version, now).then(|| {
        Answer::error(
            Status::InvalidRecord,
            format!(
                "{what} of {artifact} version {} is dated more than {:?} past this node's clock \
                 ({now} ms)",
                new.record.version, RECORD_AHEAD_MAX
            ),
        )
    })
}

/// What to answer instead of storing `new` over `old`: OK for the same bytes again,
/// STALE_RECORD for a version not above the stored one; None when `new` replaces it.
fn refuse_stale(new: &SignedRecord, old: &SignedRecord, what: &str) -> Option<Answer> {
    if new.record.version == old.record.version && new.bytes == old.bytes {
        return Some(Answer::frame(encode_ok(&[])));
    }
    (new.record.version <= old.record.version).then(|| {
        Answer::error(
            Status::StaleRecord,
            format!(
                "{what} of {} version {} does not replace stored version {}",
                new.record.artifact, new.record.version, old.record.version
            ),
        )
    })
}

/// Sets its flag when dropped.
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Answers each shard of an AUDIT batch in order, then renews the requester's leases on those
/// answered when `lease_until_ms` is not 0. Runs on a blocking thread; stops between shards
/// once `cancelled` is set (the answer will not be sent). A backend failure other than a
/// corrupted copy fails the batch, naming the shard.
fn audit_batch(
    backend: &dyn ShardBackend,
    nonce: &[u8; 32],
    cids: &[Cid],
    lease_until_ms: u64,
    peer: [u8; 32],
    cancelled: &AtomicBool,
) -> Result<Vec<AuditReply>, (Cid, BackendError)> {
    let mut answers = Vec::with_capacity(cids.len());
    for cid in cids {
        if cancelled.load(Ordering::Relaxed) {
            return Ok(answers);
        }
        answers.push(match backend.audit(cid, nonce) {
            Ok(Some(answer)) if answer.len() <= AUDIT_ANSWER_LEN_MAX as usize => {
                AuditReply::Answer(answer)
            }
            Ok(Some(answer)) => {
                // No shard this node accepted can need more: what it holds is not the shard.
                debug!(%cid, len = answer.len(), "audit answer over AUDIT_ANSWER_LEN_MAX");
                AuditReply::Corrupted
            }
            Ok(None) => AuditReply::NotHeld,
            Err(BackendError::Corrupted(reason)) => {
                debug!(%cid, %reason, "audited shard is corrupted");
                AuditReply::Corrupted
            }
            Err(err) => return Err((*cid, err)),
        });
    }
    if lease_until_ms != 0 {
        for (cid, answer) in cids.iter().zip(&answers) {
            if !matches!(answer, AuditReply::Answer(_)) {
                continue;
            }
            // Best effort: neither an error nor a panic of the renewal touches the answer.
            match catch_unwind(AssertUnwindSafe(|| {
                backend.renew_lease(cid, peer, lease_until_ms)
            })) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!(%cid, %err, "lease renewal on audit failed"),
                Err(_) => debug!(%cid, "lease renewal on audit panicked"),
            }
        }
    }
    Ok(answers)
}

/// Checks a received audit receipt and hands it to the backend. Runs on a blocking thread.
///
/// The receipt must decode and verify, name the sending endpoint (`peer`, authenticated by the
/// connection) as auditor and this node (`own`) as holder, and be dated within
/// [`RECEIPT_SKEW_MAX`] of this node's clock; INVALID_RECEIPT otherwise.
fn put_receipt(
    backend: &dyn ShardBackend,
    own: EndpointId,
    peer: [u8; 32],
    bytes: &[u8],
) -> Answer {
    let refuse = |reason: String| Answer::error(Status::InvalidReceipt, reason);
    let signed = match SignedReceipt::decode(bytes) {
        Ok(signed) => signed,
        Err(err) => return refuse(err.to_string()),
    };
    let receipt = &signed.receipt;
    if *receipt.auditor.as_bytes() != peer {
        return refuse(format!(
            "the receipt's auditor {} is not the endpoint that sent it",
            receipt.auditor.fmt_short()
        ));
    }
    if receipt.holder != own {
        return refuse(format!(
            "the receipt's holder {} is not this node ({})",
            receipt.holder.fmt_short(),
            own.fmt_short()
        ));
    }
    let now = unix_ms_now();
    let skew = RECEIPT_SKEW_MAX.as_millis() as u64;
    if receipt.time_ms.abs_diff(now) > skew {
        return refuse(format!(
            "the receipt's time {} ms is more than {RECEIPT_SKEW_MAX:?} from this node's clock \
             ({now} ms)",
            receipt.time_ms
        ));
    }
    match backend.put_receipt(&signed) {
        Ok(()) => Answer::frame(encode_ok(&[])),
        Err(err) => backend_error(
            &format!("the receipt of auditor {}", receipt.auditor.fmt_short()),
            err,
        ),
    }
}

/// The shape of a manifest a record must fit: chunk count, k, m.
type Shape = (usize, usize, usize);

/// The keys the held manifest of `artifact` allows to sign its records, with the manifest's
/// shape; the refusal to send when the manifest is not held or cannot be read.
fn allowed_signers(
    backend: &dyn ShardBackend,
    artifact: &Cid,
) -> Result<(Vec<[u8; 32]>, Shape), Answer> {
    let bytes = match backend.get(artifact, None) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Err(Answer::error(
                Status::UnknownArtifact,
                format!("this node holds no manifest of {artifact}, so it keeps no record of it"),
            ));
        }
        Err(err) => return Err(backend_error(artifact, err)),
    };
    if !backend.verifies_reads() && !matches(artifact, &bytes) {
        return Err(Answer::error(
            Status::Corrupted,
            format!("stored manifest {artifact} failed verification"),
        ));
    }
    let manifest = Manifest::decode(&bytes, &artifact.to_string()).map_err(|err| {
        Answer::error(
            Status::Corrupted,
            format!("stored manifest {artifact} does not decode: {err}"),
        )
    })?;
    let shape = (
        manifest.chunks().len(),
        manifest.params().k(),
        manifest.params().m(),
    );
    Ok((manifest.record_signers().to_vec(), shape))
}
