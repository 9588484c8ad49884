//! Streaming a file out of an artifact with bounded read-ahead.
//!
//! The store's read pipeline runs in `spawn_blocking` and hands its pieces of opened chunks to
//! a bounded channel of [`READ_AHEAD_BLOCKS`] frames of at most [`BLOCK_LEN`] bytes (slices of
//! the chunks, not copies), so a slow client holds back the reader instead of filling memory. The HTTP body is the channel's receiving
//! end. When the read fails part-way, the body ends with an error, and hyper aborts the
//! connection: the client sees a truncated transfer (shorter than `Content-Length`), never a
//! short body that looks complete.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{ChunkCache, FileEntry};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::source::OpenArtifact;

/// Bytes per body frame.
pub const BLOCK_LEN: usize = 1 << 20;
/// Frames buffered between the reader and the client.
pub const READ_AHEAD_BLOCKS: usize = 4;
/// How long the reader waits for a client that does not take bytes before giving up.
pub const CLIENT_STALL_MAX: Duration = Duration::from_secs(120);

type Item = Result<Bytes, io::Error>;

/// The reader's end of the channel.
struct Sender {
    tx: mpsc::Sender<Item>,
    rt: tokio::runtime::Handle,
}

impl Sender {
    fn send(&self, item: Item) -> io::Result<()> {
        let tx = &self.tx;
        // The timer is created inside `block_on`, which enters the runtime: this thread may be
        // a rayon worker that has no runtime context of its own.
        match self
            .rt
            .block_on(async { tokio::time::timeout(CLIENT_STALL_MAX, tx.send(item)).await })
        {
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
    fn send_piece(&self, mut piece: Bytes) -> io::Result<()> {
        while !piece.is_empty() {
            let frame = piece.split_to(piece.len().min(BLOCK_LEN));
            self.send(Ok(frame))?;
        }
        Ok(())
    }
}

/// The response body: frames from the reader, checked against the promised length.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Item>,
    remaining: u64,
    metrics: Arc<Metrics>,
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

/// Starts reading `range` of `file` on a blocking thread and returns the body that streams it.
pub(crate) fn stream_file(
    art: Arc<dyn OpenArtifact>,
    file: FileEntry,
    range: Range<u64>,
    cache: Arc<dyn ChunkCache + Send>,
    metrics: Arc<Metrics>,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel(READ_AHEAD_BLOCKS);
    let len = range.end - range.start;
    if len > 0 {
        let rt = tokio::runtime::Handle::current();
        let m = metrics.clone();
        tokio::task::spawn_blocking(move || {
            let sender = Sender { tx, rt };
            let res = art
                .read(&file, range.clone(), &*cache, &mut |piece| {
                    sender.send_piece(piece)
                })
                .map_err(|e| {
                    // The client's going away surfaces as an I/O error of the output.
                    match e {
                        cairn_store::Error::Io { source, .. }
                            if source.kind() == io::ErrorKind::BrokenPipe =>
                        {
                            source
                        }
                        other => io::Error::other(other.to_string()),
                    }
                });
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    m.read_errors.inc();
                    tracing::warn!(
                        artifact = %art.artifact().cid,
                        path = %file.path,
                        ?range,
                        error = %e,
                        "read failed mid-stream; aborting the response"
                    );
                }
                // Tell the body why; if the client is gone this fails, which is fine.
                let _ = sender.send(Err(e));
            }
        });
    }
    ChannelBody {
        rx,
        remaining: len,
        metrics,
    }
}
