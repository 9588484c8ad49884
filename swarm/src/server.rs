//! The serving side of the shard protocol: a [`ProtocolHandler`] over a [`ShardBackend`].

use std::sync::Arc;

use cid::Cid;
use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

use crate::backend::{BackendError, ShardBackend};
use crate::cids::{matches, shard_digest};
use crate::client::ShardConfig;
use crate::protocol::{
    FrameError, Head, SHARD_LEN_MAX, Status, encode_data_head, encode_error, encode_not_found,
    encode_ok, read_end, read_head, read_payload,
};

/// QUIC application error code sent when a stream is abandoned (timeout or broken frame).
const STREAM_ABANDONED: VarInt = VarInt::from_u32(1);

/// Serves shards from a [`ShardBackend`] to peers speaking the shard protocol.
///
/// Register it on a [`Router`](iroh::protocol::Router) under
/// [`SHARD_ALPN`](crate::SHARD_ALPN). Each connection handles at most
/// `config.peer_inflight_max` requests at once; further streams wait in QUIC flow control.
#[derive(Clone)]
pub struct ShardServer {
    backend: Arc<dyn ShardBackend>,
    config: ShardConfig,
}

impl std::fmt::Debug for ShardServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ShardServer {
    /// A server over `backend` with the limits and timeouts of `config`.
    pub fn new(backend: Arc<dyn ShardBackend>, config: ShardConfig) -> Self {
        Self { backend, config }
    }
}

impl ProtocolHandler for ShardServer {
    /// Handles the connection's streams until the peer closes it; dropping the task set on return
    /// aborts requests still running.
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let permits = Arc::new(Semaphore::new(self.config.peer_inflight_max.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            // Waiting for a permit before accepting leaves further streams in QUIC flow control,
            // which bounds what one peer can make us hold.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let Ok((send, recv)) = conn.accept_bi().await else {
                break;
            };
            while tasks.try_join_next().is_some() {}
            let backend = self.backend.clone();
            let timeout = self.config.request_timeout;
            tasks.spawn(async move {
                let _permit = permit;
                handle_stream(backend, *peer.as_bytes(), send, recv, timeout).await;
            });
        }
        Ok(())
    }
}

async fn handle_stream(
    backend: Arc<dyn ShardBackend>,
    peer: [u8; 32],
    mut send: SendStream,
    mut recv: RecvStream,
    timeout: std::time::Duration,
) {
    match tokio::time::timeout(timeout, serve(&backend, peer, &mut send, &mut recv)).await {
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
    backend: &Arc<dyn ShardBackend>,
    peer: [u8; 32],
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), String> {
    let answer = match answer(backend, peer, recv).await {
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
        send.write_all(&data).await.map_err(|err| err.to_string())?;
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

fn backend_error(cid: &Cid, err: BackendError) -> Answer {
    match err {
        BackendError::QuotaFull { needed, free } => Answer::frame(encode_error(
            Status::QuotaFull,
            Some((needed, free)),
            &format!("no room for shard {cid}"),
        )),
        BackendError::NotOwner => Answer::error(
            Status::NotOwner,
            format!("requester is not an owner of shard {cid}"),
        ),
        BackendError::Corrupted(reason) => Answer::error(
            Status::Corrupted,
            format!("stored shard {cid} is corrupted: {reason}"),
        ),
        BackendError::Io(reason) => Answer::error(
            Status::Internal,
            format!("storage failed for shard {cid}: {reason}"),
        ),
    }
}

async fn answer(
    backend: &Arc<dyn ShardBackend>,
    peer: [u8; 32],
    recv: &mut RecvStream,
) -> Result<Answer, FrameError> {
    let head = read_head(recv).await?;
    match head {
        Head::Put { cid, len } => {
            if let Err(err) = shard_digest(&cid) {
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
            if let Err(err) = shard_digest(&cid) {
                return Ok(Answer::error(Status::InvalidCid, err.to_string()));
            }
            let asked = range.clone();
            let data = match blocking(backend, move |b| b.get(&cid, range)).await? {
                Ok(Some(data)) => data,
                Ok(None) => return Ok(Answer::frame(encode_not_found())),
                Err(err) => return Ok(backend_error(&cid, err)),
            };
            // Never pass on bytes we cannot vouch for: a whole shard is checked against its CID,
            // a range at least against the length asked for.
            let fits = match &asked {
                None => data.len() <= SHARD_LEN_MAX as usize && matches(&cid, &data),
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
    }
}
