//! What a node tells its operator: a status snapshot (`cairn node status`, written to the data
//! directory every few seconds) and Prometheus metrics over HTTP (`cairn node --metrics`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{Outcome, Store};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Connections the metrics endpoint serves at once; more wait for a slot.
const METRICS_CONNECTIONS_MAX: usize = 16;
/// Time a metrics client has to send its request headers.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers listed with their reputation in a status snapshot, worst first.
const STATUS_PEERS_MAX: usize = 256;

/// A peer's reputation as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerReputation {
    /// Endpoint id (hex).
    pub peer: String,
    /// Audit score in [0, 1].
    pub audit_score: f64,
    /// Online score in [0, 1].
    pub online_score: f64,
    /// Whether placement and repair avoid it.
    pub avoided: bool,
    /// Audits by class.
    pub success: u64,
    /// Failed audits (wrong answer, not held, corrupted).
    pub failure: u64,
    /// Audits it could not be reached for.
    pub offline: u64,
    /// Audits it did not answer in time.
    pub timeout: u64,
    /// Audits that ended in a protocol error.
    pub unknown: u64,
    /// Unix ms of the last audit.
    pub last_ms: u64,
}

/// A node's status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Endpoint id.
    pub id: String,
    /// Unix ms when taken.
    pub at_ms: u64,
    /// Bytes stored (shards, manifests, records).
    pub stored_bytes: u64,
    /// Quota in bytes.
    pub quota: u64,
    /// Shards held.
    pub shards: u64,
    /// Manifests held.
    pub manifests: u64,
    /// Shards proved in audits this node answered.
    pub audits_answered: u64,
    /// Shards it could not prove when audited.
    pub audits_failed: u64,
    /// Shard audits it performed on others (and checks of its own disk).
    pub audits_done: u64,
    /// Shards it re-created and placed.
    pub repairs_done: u64,
    /// Bytes of those shards.
    pub repair_bytes: u64,
    /// Shard bytes served to readers.
    pub bytes_served: u64,
    /// Leases of this node's publisher renewed on the network.
    #[serde(default)]
    pub leases_renewed: u64,
    /// Receipts earned and kept.
    pub receipts: u64,
    /// Peers known (alive or not).
    pub peers_known: usize,
    /// Peers alive.
    pub peers_live: usize,
    /// Reputation of the peers it audited, lowest audit score first.
    pub reputation: Vec<PeerReputation>,
}

impl NodeStatus {
    /// Reads what the store keeps (counters, usage, reputations); `live` adds the counts not
    /// yet written to the store, `peers` the membership.
    pub fn collect(
        id: String,
        store: &Store,
        pending: &[(&'static str, u64)],
        receipts: u64,
        peers: (usize, usize),
    ) -> Self {
        let stat = store.stat().ok();
        let c = store.counters().unwrap_or_default();
        let add = |name: &str, v: u64| {
            v + pending
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, x)| x)
                .sum::<u64>()
        };
        let mut reputation: Vec<PeerReputation> = store
            .reputations()
            .unwrap_or_default()
            .into_iter()
            // Its own shards' disk checks are recorded under its own id; that is not a peer.
            .filter(|(peer, _)| hex(peer) != id)
            .map(|(peer, r)| PeerReputation {
                peer: hex(&peer),
                audit_score: r.audit_score(),
                online_score: r.online_score(),
                avoided: r.avoided(),
                success: r.counts[0],
                failure: r.counts[1],
                offline: r.counts[2],
                timeout: r.counts[3],
                unknown: r.counts[4],
                last_ms: r.last_ms,
            })
            .collect();
        reputation.sort_by(|a, b| a.audit_score.total_cmp(&b.audit_score));
        reputation.truncate(STATUS_PEERS_MAX);
        Self {
            id,
            at_ms: cairn_store::now_ms(),
            stored_bytes: stat.as_ref().map_or(0, |s| s.used),
            quota: stat.as_ref().map_or(0, |s| s.quota),
            shards: stat.as_ref().map_or(0, |s| s.shards),
            manifests: stat.as_ref().map_or(0, |s| s.manifests),
            audits_answered: add("audits_answered", c.audits_answered),
            audits_failed: add("audits_failed", c.audits_failed),
            audits_done: c.audits_done,
            repairs_done: c.repairs_done,
            repair_bytes: c.repair_bytes,
            bytes_served: add("bytes_served", c.bytes_served),
            leases_renewed: c.leases_renewed,
            receipts,
            peers_known: peers.0,
            peers_live: peers.1,
            reputation,
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP cairn_node_{name} {help}\n# TYPE cairn_node_{name} {kind}\ncairn_node_{name} {value}\n"
            ));
        };
        metric(
            "stored_bytes",
            "gauge",
            "Bytes stored.",
            self.stored_bytes.to_string(),
        );
        metric(
            "quota_bytes",
            "gauge",
            "Quota in bytes.",
            self.quota.to_string(),
        );
        metric("shards", "gauge", "Shards held.", self.shards.to_string());
        metric(
            "manifests",
            "gauge",
            "Manifests held.",
            self.manifests.to_string(),
        );
        metric(
            "audits_answered_total",
            "counter",
            "Shards proved in audits answered.",
            self.audits_answered.to_string(),
        );
        metric(
            "audits_failed_total",
            "counter",
            "Shards asked in audits and not proved.",
            self.audits_failed.to_string(),
        );
        metric(
            "audits_done_total",
            "counter",
            "Shard audits performed.",
            self.audits_done.to_string(),
        );
        metric(
            "repairs_total",
            "counter",
            "Shards re-created and placed.",
            self.repairs_done.to_string(),
        );
        metric(
            "repair_bytes_total",
            "counter",
            "Bytes of shards re-created and placed.",
            self.repair_bytes.to_string(),
        );
        metric(
            "served_bytes_total",
            "counter",
            "Shard bytes served.",
            self.bytes_served.to_string(),
        );
        metric(
            "leases_renewed_total",
            "counter",
            "Leases of this node's publisher renewed.",
            self.leases_renewed.to_string(),
        );
        metric(
            "receipts_total",
            "counter",
            "Audit receipts earned since start.",
            self.receipts.to_string(),
        );
        metric(
            "peers_known",
            "gauge",
            "Peers known.",
            self.peers_known.to_string(),
        );
        metric(
            "peers_live",
            "gauge",
            "Peers alive.",
            self.peers_live.to_string(),
        );
        out.push_str("# HELP cairn_node_peer_audit_score Audit score of a peer.\n");
        out.push_str("# TYPE cairn_node_peer_audit_score gauge\n");
        for r in &self.reputation {
            out.push_str(&format!(
                "cairn_node_peer_audit_score{{peer=\"{}\"}} {}\n",
                r.peer, r.audit_score
            ));
        }
        out.push_str("# HELP cairn_node_peer_audits_total Audits of a peer by outcome.\n");
        out.push_str("# TYPE cairn_node_peer_audits_total counter\n");
        for r in &self.reputation {
            for (o, v) in Outcome::ALL
                .iter()
                .zip([r.success, r.failure, r.offline, r.timeout, r.unknown])
            {
                out.push_str(&format!(
                    "cairn_node_peer_audits_total{{peer=\"{}\",outcome=\"{}\"}} {v}\n",
                    r.peer,
                    o.name()
                ));
            }
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers a GET: the path and query in, `(content type, body)` out, or None for 404.
pub(crate) type Handler =
    Arc<dyn Fn(&str, Option<&str>) -> Option<(&'static str, String)> + Send + Sync>;

/// Serves `handler` on a TCP listener (the metrics endpoint) until the task is aborted.
pub(crate) async fn serve_tcp(listener: TcpListener, handler: Handler) {
    serve("metrics", handler, || async {
        listener.accept().await.map(|(io, _)| io)
    })
    .await
}

/// Serves `handler` on the node's control socket (a Unix socket only its owner can open)
/// until the task is aborted.
pub(crate) async fn serve_unix(listener: UnixListener, handler: Handler) {
    serve("control socket", handler, || async {
        listener.accept().await.map(|(io, _)| io)
    })
    .await
}

/// Accepts connections with `accept`, at most [`METRICS_CONNECTIONS_MAX`] served at once.
async fn serve<IO, F, Fut>(what: &str, handler: Handler, mut accept: F)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<IO>>,
{
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match accept().await {
            Ok(io) => {
                tokio::spawn(serve_conn(io, handler.clone(), permit));
            }
            Err(e) => {
                warn!("{what}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_conn<IO>(io: IO, handler: Handler, permit: tokio::sync::OwnedSemaphorePermit)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move {
                // Building the answer reads redb: off the async workers.
                let answer = tokio::task::spawn_blocking(move || answer(&req, &handler)).await;
                Ok::<_, Infallible>(answer.unwrap_or_else(|_| {
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
                }))
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(METRICS_HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service);
    // A whole exchange is small; a client that keeps the connection idle goes.
    match tokio::time::timeout(Duration::from_secs(60), conn).await {
        Ok(Err(e)) => debug!("status endpoint: {e}"),
        Err(_) => debug!("status endpoint: connection closed after 60 s"),
        Ok(Ok(())) => {}
    }
    drop(permit);
}

fn plain(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static response is valid")
}

fn answer(req: &Request<Incoming>, handler: &Handler) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match handler(req.uri().path(), req.uri().query()) {
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
        Some((kind, body)) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response"),
    }
}

/// Where the metrics endpoint listens, checked: loopback only unless `allow_public`.
pub fn check_metrics_addr(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--metrics {addr} is not a loopback address: node metrics list peers and their \
             scores, so they are served on loopback only (put a proxy with access control in \
             front to expose them)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_counter_and_peer() {
        let s = NodeStatus {
            id: "n".into(),
            audits_done: 7,
            reputation: vec![PeerReputation {
                peer: "ab".into(),
                audit_score: 0.5,
                online_score: 1.0,
                avoided: true,
                success: 1,
                failure: 2,
                offline: 0,
                timeout: 0,
                unknown: 0,
                last_ms: 1,
            }],
            ..NodeStatus::default()
        };
        let text = s.prometheus();
        assert!(text.contains("cairn_node_audits_done_total 7\n"));
        assert!(text.contains("cairn_node_peer_audit_score{peer=\"ab\"} 0.5\n"));
        assert!(text.contains("cairn_node_peer_audits_total{peer=\"ab\",outcome=\"failure\"} 2\n"));
        assert!(check_metrics_addr("0.0.0.0:9000".parse().unwrap()).is_err());
        assert!(check_metrics_addr("127.0.0.1:9000".parse().unwrap()).is_ok());
    }
}
