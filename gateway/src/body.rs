//! Streaming a file out of an artifact with bounded read-ahead, on a bounded set of readers.
//!
//! A streamed body is read by a task on the runtime that pulls the artifact's stream of verified
//! pieces ([`OpenArtifact::stream`], the async read core) and hands them to a bounded channel of
//! [`READ_AHEAD_BLOCKS`] frames of at most [`BLOCK_LEN`] bytes (slices of the chunks, not
//! copies), so a slow client holds back the reader instead of filling memory: while the channel
//! is full the task does not pull, and the read core fetches nothing more. The HTTP body is the
//! channel's receiving end. When the read fails part-way, the body ends with an error, and hyper
//! aborts the connection: the client sees a truncated transfer (shorter than `Content-Length`),
//! never a short body that looks complete.
//!
//! No thread is held by a stream: network fetches are futures, and a chunk's rebuilding,
//! decryption and hashing (and a local store's reads) run on the CPU pool. A stream holds its
//! read-ahead: the frames in the channel plus the chunks the read core has in flight (at most
//! [`READ_IN_FLIGHT`](cairn_artifact::READ_IN_FLIGHT) beyond the frames, some 10 MiB with 1 MiB
//! chunks). So the number of streams is bounded ([`StreamLimits`]): at most `streams_max` in
//! all and `streams_per_client_max` per client address; a request that finds none free within
//! `stream_wait` gets `503`. A client that stops reading is cut off by the connection's write
//! timeout (see `server`), which ends its stream. Bodies of at most [`SMALL_BODY_MAX`] bytes
//! (configuration files, JSON, ranges of a few pages) are read before the answer and copied out
//! of their chunks, so they take no stream and a stalled client keeps only those bytes; at most
//! [`SMALL_READS_MAX`] of them are read at once.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_artifact::{ChunkCache, FileEntry};
use futures_util::StreamExt;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::Error;
use crate::metrics::Metrics;
use crate::source::OpenArtifact;

/// Bytes per body frame.
pub const BLOCK_LEN: usize = 1 << 20;
/// Frames buffered between the reader and the client.
pub const READ_AHEAD_BLOCKS: usize = 4;
/// How long the reader waits for a client that does not take bytes before giving up. The
/// connection's write timeout normally ends such a stream first.
pub const CLIENT_STALL_MAX: Duration = Duration::from_secs(120);
/// Bodies up to this many bytes are read whole, copied out of their chunks, before the answer
/// starts: they take no stream, and a client that never reads them holds only these bytes.
pub const SMALL_BODY_MAX: u64 = 64 * 1024;
/// Small bodies being read at once (each holds a blocking thread while its chunks arrive).
pub const SMALL_READS_MAX: usize = 64;

/// The bounds on body readers: streams in all, streams per client address, small reads.
pub(crate) struct StreamLimits {
    /// Streams open now (exported as a metric).
    pub open: Gauge,
    streams: Arc<Semaphore>,
    streams_max: usize,
    per_client_max: usize,
    per_client: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    small: Arc<Semaphore>,
    wait: Duration,
}

/// A client's share of the streams, removed from the map when its last holder or waiter goes.
struct ClientShare {
    limits: Arc<StreamLimits>,
    ip: IpAddr,
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut map = self.limits.clients();
        // Under the lock nobody else can clone it: the map and this share are the last two.
        if Arc::strong_count(&self.sem) == 2
            && self.sem.available_permits() == self.limits.per_client_max
        {
            map.remove(&self.ip);
        }
    }
}

/// One stream slot, held by the body and its reader until both are gone.
pub(crate) struct StreamPermit {
    _global: OwnedSemaphorePermit,
    _client: Option<ClientShare>,
    open: Gauge,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl StreamLimits {
    pub fn new(streams_max: usize, per_client_max: usize, wait: Duration) -> Self {
        assert!(streams_max > 0 && per_client_max > 0);
        Self {
            open: Gauge::default(),
            streams: Arc::new(Semaphore::new(streams_max)),
            streams_max,
            per_client_max,
            per_client: Mutex::default(),
            small: Arc::new(Semaphore::new(SMALL_READS_MAX)),
            wait,
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<Semaphore>>> {
        self.per_client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most the configured stream wait) for a stream slot for `client`: first the
    /// client's own share, then one of the gateway's.
    pub async fn stream(self: &Arc<Self>, client: Option<IpAddr>) -> Result<StreamPermit, Error> {
        let deadline = Instant::now() + self.wait;
        let share = match client {
            None => None,
            Some(ip) => {
                let sem = self
                    .clients()
                    .entry(ip)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_client_max)))
                    .clone();
                // The share holds the only clone besides the map's (and the acquiring future's,
                // gone once awaited), so a share given up on timeout removes the address again.
                let mut share = ClientShare {
                    limits: self.clone(),
                    ip,
                    sem,
                    permit: None,
                };
                let p = tokio::time::timeout_at(deadline, share.sem.clone().acquire_owned())
                    .await
                    .map_err(|_| Error::Busy {
                        what: "response streams of this client address",
                        limit: self.per_client_max,
                    })?
                    .expect("the semaphore is never closed");
                share.permit = Some(p);
                Some(share)
            }
        };
        let global = tokio::time::timeout_at(deadline, self.streams.clone().acquire_owned())
            .await
            .map_err(|_| Error::Busy {
                what: "response streams of this gateway",
                limit: self.streams_max,
            })?
            .expect("the semaphore is never closed");
        self.open.inc();
        Ok(StreamPermit {
            _global: global,
            _client: share,
            open: self.open.clone(),
        })
    }

    async fn small(&self) -> Result<OwnedSemaphorePermit, Error> {
        tokio::time::timeout(self.wait, self.small.clone().acquire_owned())
            .await
            .map_err(|_| Error::Busy {
                what: "small-body reads of this gateway",
                limit: SMALL_READS_MAX,
            })
            .map(|p| p.expect("the semaphore is never closed"))
    }
}

type Item = Result<Bytes, io::Error>;

/// The reader's end of the channel.
struct Sender {
    tx: mpsc::Sender<Item>,
}

impl Sender {
    async fn send(&self, item: Item) -> io::Result<()> {
        match tokio::time::timeout(CLIENT_STALL_MAX, self.tx.send(item)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {CLIENT_STALL_MAX:?}"),
            )),
        }
    }

    /// Sends a piece of an opened chunk as frames of at most [`BLOCK_LEN`] bytes. The frames
    /// share the chunk's memory: nothing is copied.
    async fn send_piece(&self, mut piece: Bytes) -> io::Result<()> {
        while !piece.is_empty() {
            let frame = piece.split_to(piece.len().min(BLOCK_LEN));
            self.send(Ok(frame)).await?;
        }
        Ok(())
    }
}

/// The response body: frames from the reader, checked against the promised length.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Item>,
    remaining: u64,
    metrics: Arc<Metrics>,
    /// The stream slot: the frames in the channel still count against it.
    _permit: Arc<StreamPermit>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                let n = b.len() as u64;
                if n > self.remaining {
                    return Poll::Ready(Some(Err(io::Error::other(
                        "the reader produced more bytes than the file range holds",
                    ))));
                }
                self.remaining -= n;
                self.metrics.bytes_sent.inc_by(n);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            // The reader stopped without saying why, before the end: still an error.
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before its length",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Reads `range` of `file` (at most [`SMALL_BODY_MAX`] bytes) whole, into memory of its own:
/// the opened chunks it came from are not kept alive by the answer.
pub(crate) async fn read_small(
    limits: &StreamLimits,
    art: Arc<dyn OpenArtifact>,
    file: FileEntry,
    range: Range<u64>,
    cache: Arc<dyn ChunkCache + Send>,
    metrics: &Metrics,
) -> Result<Bytes, Error> {
    let len = range.end - range.start;
    assert!(len <= SMALL_BODY_MAX);
    if len == 0 {
        return Ok(Bytes::new());
    }
    let _permit = limits.small().await?;
    let res = read_exact(&*art, &file, range, &*cache)
        .await
        .map(Bytes::from);
    match &res {
        Ok(b) => metrics.bytes_sent.inc_by(b.len() as u64),
        Err(_) => metrics.read_errors.inc(),
    };
    res
}

/// Reads exactly `range` of `file` into memory of its own (the caller bounds its length): an
/// error if the stream gives more or fewer bytes.
pub(crate) async fn read_exact(
    art: &dyn OpenArtifact,
    file: &FileEntry,
    range: Range<u64>,
    cache: &dyn ChunkCache,
) -> Result<Vec<u8>, Error> {
    let len = (range.end - range.start) as usize;
    let mut out = Vec::with_capacity(len);
    let mut pieces = art.stream(file, range, cache);
    let short = |why: &str, kind| Error::Io {
        what: format!("reading {}", file.path),
        source: io::Error::new(kind, why.to_string()),
    };
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        if out.len() + piece.len() > len {
            return Err(short(
                "the reader produced more bytes than the file range holds",
                io::ErrorKind::Other,
            ));
        }
        out.extend_from_slice(&piece);
    }
    if out.len() != len {
        return Err(short(
            "the file ended before its length",
            io::ErrorKind::UnexpectedEof,
        ));
    }
    Ok(out)
}

/// Starts reading `range` of `file` in a task and returns the body that streams it;
/// `permit` is held until both the reader and the body are done.
pub(crate) fn stream_file(
    art: Arc<dyn OpenArtifact>,
    file: FileEntry,
    range: Range<u64>,
    cache: Arc<dyn ChunkCache + Send>,
    metrics: Arc<Metrics>,
    permit: StreamPermit,
) -> ChannelBody {
    stream_parts(art, file, Bytes::new(), vec![range], cache, metrics, permit)
}

/// As [`stream_file`], for a body made of `head` (bytes held in memory, sent first) and then
/// `ranges` of `file`, in order (a safetensors file of selected tensors: its new header, then
/// the tensors' bytes).
pub(crate) fn stream_parts(
    art: Arc<dyn OpenArtifact>,
    file: FileEntry,
    head: Bytes,
    ranges: Vec<Range<u64>>,
    cache: Arc<dyn ChunkCache + Send>,
    metrics: Arc<Metrics>,
    permit: StreamPermit,
) -> ChannelBody {
    let permit = Arc::new(permit);
    let (tx, rx) = mpsc::channel(READ_AHEAD_BLOCKS);
    let len = head.len() as u64 + ranges.iter().map(|r| r.end - r.start).sum::<u64>();
    if len > 0 {
        let m = metrics.clone();
        let held = permit.clone();
        tokio::spawn(async move {
            let _permit = held;
            let sender = Sender { tx };
            let mut res = sender.send_piece(head).await;
            'ranges: for range in &ranges {
                if res.is_err() {
                    break;
                }
                let mut pieces = art.stream(&file, range.clone(), &*cache);
                while let Some(piece) = pieces.next().await {
                    res = match piece {
                        Ok(piece) => sender.send_piece(piece).await,
                        Err(e) => Err(io::Error::other(e.to_string())),
                    };
                    if res.is_err() {
                        break 'ranges;
                    }
                }
            }
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    m.read_errors.inc();
                    tracing::warn!(
                        artifact = %art.artifact().cid,
                        path = %file.path,
                        first = ?ranges.first(),
                        ranges = ranges.len(),
                        error = %e,
                        "read failed mid-stream; aborting the response"
                    );
                }
                // Tell the body why; if the client is gone this fails, which is fine.
                let _ = sender.send(Err(e)).await;
            }
        });
    }
    ChannelBody {
        rx,
        remaining: len,
        metrics,
        _permit: permit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    #[tokio::test]
    async fn streams_are_bounded_in_all_and_per_client_and_forgotten_when_done() {
        let limits = Arc::new(StreamLimits::new(3, 2, Duration::from_millis(50)));
        let a1 = limits.stream(ip(1)).await.unwrap();
        let a2 = limits.stream(ip(1)).await.unwrap();
        // Client 1 is at its share; the wait runs out with an error naming the limit.
        let e = limits.stream(ip(1)).await.err().unwrap();
        assert!(e.to_string().contains("client address: all 2"), "{e}");
        assert_eq!(e.http().status, 503);
        let b1 = limits.stream(ip(2)).await.unwrap();
        assert_eq!(limits.open.get(), 3);
        // The gateway is at its total.
        let e = limits.stream(ip(3)).await.err().unwrap();
        assert!(e.to_string().contains("gateway: all 3"), "{e}");
        // A stream that ends lets a waiter in.
        let waiter = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.stream(ip(3)).await.map(|_| ()) })
        };
        drop(b1);
        waiter.await.unwrap().unwrap();
        drop((a1, a2));
        assert_eq!(limits.open.get(), 0);
        // No client's share outlives its streams and waiters.
        assert!(limits.clients().is_empty());
    }
}
