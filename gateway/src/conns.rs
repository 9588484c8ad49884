//! Connection slots: a limit in all and per client address, idle connections shed first, and a
//! write timeout for clients that stop reading.
//!
//! The accept loop never stops accepting. A new connection is admitted while there is room
//! (under `connections_max` in all and `connections_per_client_max` for its address); when
//! there is none, the idle connection (no request in progress: waiting for the next request on
//! keep-alive, or still sending its headers) that has been idle longest is closed to make room,
//! taken from the new connection's own address when that address is at its limit, else from
//! the address holding the most connections. With nothing idle to shed, the new connection gets
//! a plain `503` and is closed. So idle connections cannot keep `/healthz` or a legitimate
//! client out, and one address can never hold more than its share.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// The answer to a connection there is no room for, written before it is closed.
pub(crate) const BUSY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\n\
x-error-message: no connection slot is free\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 27\r\n\r\n\
no connection slot is free\n";

struct Conn {
    ip: IpAddr,
    /// Requests in progress (HTTP/1.1 serves one at a time; the count guards against overlap).
    busy: u32,
    /// When it last became idle (or was accepted).
    idle_since: Instant,
    /// Closes the connection when sent (or dropped).
    shed: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    by_ip: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.by_ip.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&c.ip);
            }
        }
        Some(c)
    }

    /// The idle connection to shed: the longest idle of `ip`, or of the busiest address.
    fn victim(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.busy == 0 && ip.is_none_or(|ip| c.ip == ip))
            .max_by_key(|(_, c)| {
                (
                    self.by_ip.get(&c.ip).copied().unwrap_or(0),
                    std::cmp::Reverse(c.idle_since),
                )
            })
            .map(|(id, _)| *id)
    }

    fn shed(&mut self, id: u64) {
        if let Some(mut c) = self.remove(id)
            && let Some(tx) = c.shed.take()
        {
            let _ = tx.send(());
        }
    }
}

/// The connection table of one listener.
pub(crate) struct Conns {
    inner: Mutex<Inner>,
    total_max: usize,
    per_client_max: usize,
}

/// A connection's slot: frees itself when dropped; `shed` resolves when the connection must be
/// closed to make room for another.
pub(crate) struct Slot {
    conns: Arc<Conns>,
    id: u64,
    pub shed: oneshot::Receiver<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id);
    }
}

/// Marks a connection busy while it lives (a request and its response body).
pub(crate) struct Busy {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = self.conns.lock().conns.get_mut(&self.id) {
            c.busy -= 1;
            if c.busy == 0 {
                c.idle_since = Instant::now();
            }
        }
    }
}

impl Conns {
    pub fn new(total_max: usize, per_client_max: usize) -> Arc<Self> {
        assert!(total_max > 0 && per_client_max > 0);
        Arc::new(Self {
            inner: Mutex::default(),
            total_max,
            per_client_max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `ip`, shedding an idle connection if that is what it
    /// takes; `None` when every connection that would have to go is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut g = self.lock();
        if g.by_ip.get(&ip).copied().unwrap_or(0) >= self.per_client_max {
            let id = g.victim(Some(ip))?;
            g.shed(id);
        }
        if g.conns.len() >= self.total_max {
            let id = g.victim(None)?;
            g.shed(id);
        }
        let id = g.next_id;
        g.next_id += 1;
        let (tx, rx) = oneshot::channel();
        g.conns.insert(
            id,
            Conn {
                ip,
                busy: 0,
                idle_since: Instant::now(),
                shed: Some(tx),
            },
        );
        *g.by_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            conns: self.clone(),
            id,
            shed: rx,
        })
    }

    /// Marks connection `id` busy until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>, id: u64) -> Busy {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            c.busy += 1;
        }
        Busy {
            conns: self.clone(),
            id,
        }
    }
}

impl Slot {
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// A socket whose writes fail with `TimedOut` once the peer has taken no byte for `timeout`:
/// a client that stops reading its response loses the connection (and its stream) instead of
/// holding them for good.
pub(crate) struct WriteTimeout<T> {
    io: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteTimeout<T> {
    pub fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }

    /// Turns a pending write into an error once the stall has lasted the timeout; any progress
    /// restarts the clock.
    fn check<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took no bytes for {timeout:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn sheds_idle_connections_of_the_address_at_its_limit_first() {
        let conns = Conns::new(4, 2);
        let mut a1 = conns.admit(ip(1)).unwrap();
        let a2 = conns.admit(ip(1)).unwrap();
        let _busy = conns.busy(a2.id());
        // ip 1 is at its limit: its idle connection goes, the busy one stays.
        let _a3 = conns.admit(ip(1)).unwrap();
        assert!(a1.shed.try_recv().is_ok());
        // With both of ip 1's connections busy, a third is refused.
        let _busy3 = conns.busy(_a3.id());
        assert!(conns.admit(ip(1)).is_none());
        // Other addresses still get in, up to the total; then the busiest address's idle
        // connection goes first.
        let mut b1 = conns.admit(ip(2)).unwrap();
        let mut c1 = conns.admit(ip(3)).unwrap();
        drop(_busy);
        let _c2 = conns.admit(ip(3)).unwrap();
        // ip 1 had the idle a2 and 2 connections, ip 2 had one: a2 was shed.
        assert!(b1.shed.try_recv().is_err());
        assert!(c1.shed.try_recv().is_err());
        assert_eq!(conns.lock().conns.len(), 4);
        drop(a2);
        assert_eq!(conns.lock().conns.len(), 4, "a shed slot was freed at once");
    }
}
