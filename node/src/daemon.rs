//! The node daemon: the store served over iroh, membership over gossip.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_store::Store;
use cairn_swarm::{
    BoundEndpoint, EndpointId, GOSSIP_ALPN, Gossip, Membership, MembershipConfig, PeerTable,
    Router, SHARD_ALPN, ShardClient, ShardConfig, ShardServer, SignedReceipt, endpoint_offline,
    endpoint_online, secret_key_from_bytes, topic_id,
};
use tracing::{info, warn};

use crate::care::{Care, CareConfig};
use crate::leases::{RenewConfig, Renewer};
use crate::receipts::{RECEIPTS_EXPORT_MAX, ReceiptJson};
use crate::status::{Handler, NodeStatus, check_metrics_addr, serve_tcp, serve_unix};
use crate::{Error, PeerAddr, StoreBackend};

/// How often the peer table is saved and unreferenced data collected.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// Bootstrap nodes asked, one after the other, for the live set at start.
const SEED_PEERS_MAX: usize = 3;
/// Time allowed to page through one bootstrap node's live set.
const SEED_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a node.
pub struct NodeConfig {
    /// The node's store.
    pub store: Arc<Store>,
    /// The node's ed25519 secret key (32 bytes).
    pub secret_key: [u8; 32],
    /// Where to listen. In offline mode this must be a loopback address (port 0 picks one).
    pub listen: SocketAddr,
    /// Offline mode (tests, devnet): no relays, no address lookup, loopback only.
    pub offline: bool,
    /// Name of the network (its gossip topic).
    pub network: String,
    /// Peers to join through.
    pub bootstrap: Vec<PeerAddr>,
    /// File that keeps the peer table across restarts.
    pub peer_table: Option<PathBuf>,
    /// Audits, reputation and repair.
    pub care: CareConfig,
    /// Serve Prometheus metrics on this (loopback) address.
    pub metrics: Option<SocketAddr>,
    /// Serve the control endpoints (`/status`, `/receipts?since=<unix ms>`, `/metrics`) on a
    /// Unix socket at this path, which only the node's user can open (its folder is 0700 and
    /// the socket 0600): what `cairn node status` and `cairn node receipts` ask.
    pub control_socket: Option<PathBuf>,
    /// Renew the leases of this publisher's artifacts listed in a lease file, each care round
    /// (a node on its publisher's data directory: `cairn pin --peer` writes the file).
    pub renew: Option<RenewConfig>,
}

/// A running node.
pub struct NodeHandle {
    router: Router,
    bound: BoundEndpoint,
    membership: Arc<Membership>,
    peer_table: Option<PathBuf>,
    housekeeping: tokio::task::JoinHandle<()>,
    care: Arc<Care>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
    status: Arc<dyn Fn() -> NodeStatus + Send + Sync>,
}

impl NodeHandle {
    /// The node's endpoint id.
    pub fn id(&self) -> EndpointId {
        self.bound.endpoint.id()
    }

    /// The socket addresses the node listens on.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.bound.endpoint.bound_sockets()
    }

    /// The node's address as `<id>@<ip:port>`, for bootstrap lists.
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            id: self.id(),
            addrs: self.addrs(),
        }
    }

    /// Live peers this node knows.
    pub fn live_peers(&self) -> usize {
        self.membership.live_peers().len()
    }

    /// Runs one caretaking round now (audits what is due, repairs what was lost) and says what
    /// it did. Rounds also run on their own every audit period / `ROUNDS_PER_PERIOD`.
    pub async fn care_round(&self) -> crate::RoundReport {
        self.care.round().await
    }

    /// Where the metrics endpoint listens, if it was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A status snapshot now.
    pub fn status(&self) -> NodeStatus {
        (self.status)()
    }

    /// Saves the peer table, stops accepting, closes the endpoint.
    pub async fn shutdown(self) {
        self.housekeeping.abort();
        for t in &self.tasks {
            t.abort();
        }
        save_table(&self.membership, self.peer_table.as_ref());
        if let Err(e) = self.router.shutdown().await {
            warn!("router shutdown: {e}");
        }
        self.bound.endpoint.close().await;
    }
}

fn save_table(m: &Membership, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    // Owner-only like everything in a data directory.
    if let Err(e) = cairn_store::write_private_replace(path, &m.table_bytes()) {
        warn!("saving the peer table to {}: {e}", path.display());
    }
}

/// Starts a node; it runs until [`NodeHandle::shutdown`]. Every 30 s it saves its peer table
/// and collects what no pin or owner keeps.
pub async fn run_node(config: NodeConfig) -> Result<NodeHandle, Error> {
    run_node_with_housekeeping(config, HOUSEKEEPING_INTERVAL).await
}

/// [`run_node`] with housekeeping (peer table saved, gc) every `every` instead of 30 s, so
/// that a test sees the periodic gc without waiting for it.
pub async fn run_node_with_housekeeping(
    config: NodeConfig,
    every: Duration,
) -> Result<NodeHandle, Error> {
    let secret = secret_key_from_bytes(&config.secret_key)?;
    let renewer = config.renew.as_ref().map(Renewer::new).transpose()?;
    let bound = if config.offline {
        endpoint_offline(secret.clone(), config.listen).await?
    } else {
        endpoint_online(secret.clone()).await?
    };
    let topic = topic_id(&config.network);
    let table = match config
        .peer_table
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
    {
        Some(bytes) => PeerTable::from_bytes(&bytes, topic).unwrap_or_else(|e| {
            warn!("ignoring the saved peer table: {e}");
            PeerTable::new(topic)
        }),
        None => PeerTable::new(topic),
    };
    let backend = Arc::new(StoreBackend::new(config.store.clone()));
    let counters = backend.counters().clone();
    let gossip = Gossip::builder().spawn(bound.endpoint.clone());
    let membership_slot: Arc<OnceLock<Arc<Membership>>> = Arc::new(OnceLock::new());
    let slot = membership_slot.clone();
    let server = ShardServer::new(backend.clone(), ShardConfig::default())
        .with_endpoint_id(bound.endpoint.id())
        .with_peer_source(Arc::new(move || {
            slot.get()
                .map(|m| m.signed_announcements())
                .unwrap_or_default()
        }));
    let router = Router::builder(bound.endpoint.clone())
        .accept(SHARD_ALPN, server)
        .accept(GOSSIP_ALPN, gossip.clone())
        .spawn();
    let bootstrap: Vec<_> = config
        .bootstrap
        .iter()
        .filter(|p| p.id != bound.endpoint.id())
        .map(PeerAddr::endpoint_addr)
        .collect();
    let seeds = bootstrap.clone();
    let store = config.store.clone();
    let membership = Membership::join(
        &bound,
        &gossip,
        MembershipConfig::new(config.network.clone(), bootstrap),
        table,
        move || {
            store
                .stat()
                .map(|s| s.quota.saturating_sub(s.used))
                .unwrap_or(0)
        },
    )
    .await?;
    let membership = Arc::new(membership);
    let _ = membership_slot.set(membership.clone());
    info!(id = %bound.endpoint.id(), addrs = ?bound.endpoint.bound_sockets(), "node started");

    let m = membership.clone();
    let flushed = counters.clone();
    let path = config.peer_table.clone();
    let store = config.store.clone();
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            save_table(&m, path.as_ref());
            let s = store.clone();
            let taken = flushed.take();
            let _ = tokio::task::spawn_blocking({
                let s = s.clone();
                move || s.count_many(&taken)
            })
            .await;
            match tokio::task::spawn_blocking(move || s.gc()).await {
                Ok(Ok(r)) if r.shards + r.manifests + r.records + r.leases > 0 => {
                    info!(
                        shards = r.shards,
                        manifests = r.manifests,
                        records = r.records,
                        leases = r.leases,
                        "gc"
                    )
                }
                Ok(Err(e)) => warn!("gc: {e}"),
                _ => {}
            }
        }
    });
    let care = Arc::new(
        Care::new(
            config.store.clone(),
            ShardClient::new(bound.endpoint.clone(), ShardConfig::default()),
            secret,
            membership.clone(),
            config.care.clone(),
        )
        .with_renewer(renewer),
    );
    let mut tasks = vec![tokio::spawn(care.clone().run())];
    // The whole live set from the first bootstrap node that answers (PEERS_AFTER pages), so
    // that in a large network this node ranks over everyone at once, not after an
    // announcement interval (minutes at thousands of nodes) of gossip.
    let (m, seeder) = (
        membership.clone(),
        ShardClient::new(bound.endpoint.clone(), ShardConfig::default()),
    );
    tasks.push(tokio::spawn(async move {
        for b in seeds.iter().take(SEED_PEERS_MAX) {
            match tokio::time::timeout(SEED_TIMEOUT, seeder.all_peer_announcements(b)).await {
                Ok(Ok(signed)) if !signed.is_empty() => {
                    let learnt = m.learn(&signed);
                    info!(learnt, "peer table seeded from {}", b.id.fmt_short());
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!("asking {} for its peers: {e}", b.id.fmt_short()),
                Err(_) => warn!("asking {} for its peers timed out", b.id.fmt_short()),
            }
        }
    }));
    let status: Arc<dyn Fn() -> NodeStatus + Send + Sync> = {
        let (store, counters, m) = (config.store.clone(), counters.clone(), membership.clone());
        let id = bound.endpoint.id().to_string();
        Arc::new(move || {
            let receipts = counters.receipts.load(std::sync::atomic::Ordering::Relaxed);
            let peers = (m.peers().len(), m.live_peers().len());
            NodeStatus::collect(id.clone(), &store, &counters.peek(), receipts, peers)
        })
    };
    let handler: Handler = {
        let (status, store) = (status.clone(), config.store.clone());
        Arc::new(move |path: &str, query: Option<&str>| match path {
            "/metrics" => Some(("text/plain; version=0.0.4", status().prometheus())),
            "/status" => Some((
                "application/json",
                serde_json::to_string_pretty(&status()).unwrap_or_default(),
            )),
            "/receipts" => {
                let since = query
                    .and_then(|q| q.strip_prefix("since="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let rows: Vec<ReceiptJson> = store
                    .receipts_since(since, RECEIPTS_EXPORT_MAX)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|b| SignedReceipt::decode(b).ok())
                    .map(|r| ReceiptJson::from_signed(&r))
                    .collect();
                Some((
                    "application/json",
                    serde_json::to_string(&rows).unwrap_or_default(),
                ))
            }
            _ => None,
        })
    };
    if let Some(path) = &config.control_socket {
        // A socket left by a node that was killed would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(|e| Error::Node(format!("control socket {}: {e}", path.display())))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| Error::Node(format!("control socket {}: {e}", path.display())))?;
        tasks.push(tokio::spawn(serve_unix(listener, handler.clone())));
    }
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics {
        check_metrics_addr(addr).map_err(Error::Node)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Node(format!("metrics on {addr}: {e}")))?;
        metrics_addr = listener.local_addr().ok();
        let metrics: Handler = Arc::new(move |path: &str, query: Option<&str>| {
            (path == "/metrics").then(|| handler(path, query)).flatten()
        });
        tasks.push(tokio::spawn(serve_tcp(listener, metrics)));
    }
    Ok(NodeHandle {
        router,
        bound,
        membership,
        peer_table: config.peer_table,
        housekeeping,
        care,
        tasks,
        metrics_addr,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_artifact::shard_cid;
    use cairn_store::StoreConfig;
    use cairn_swarm::{ShardClient, generate_secret_key};

    /// The periodic gc: a shard its only owner released goes at the next housekeeping round,
    /// with no call from outside; a shard still owned stays through the rounds after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn housekeeping_collects_released_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreConfig::new(1 << 30)).unwrap());
        let node = run_node_with_housekeeping(
            NodeConfig {
                store: store.clone(),
                secret_key: generate_secret_key().to_bytes(),
                listen: "127.0.0.1:0".parse().unwrap(),
                offline: true,
                network: "housekeeping-test".into(),
                bootstrap: Vec::new(),
                peer_table: None,
                care: CareConfig::default(),
                metrics: None,
                control_socket: None,
                renew: None,
            },
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        let bound = endpoint_offline(generate_secret_key(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = ShardClient::new(bound.endpoint.clone(), ShardConfig::default());
        let addr = node.peer_addr().endpoint_addr();
        let (gone, kept) = (vec![1u8; 5000], vec![2u8; 5000]);
        for bytes in [&gone, &kept] {
            client.put(&addr, &shard_cid(bytes), bytes).await.unwrap();
        }
        assert!(client.delete(&addr, &shard_cid(&gone)).await.unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while store.has_shard(&shard_cid(&gone)).unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a released shard was not collected in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Rounds after that one leave the owned shard alone.
        let after = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < after {
            assert!(store.has_shard(&shard_cid(&kept)).unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.close().await;
        bound.endpoint.close().await;
        node.shutdown().await;
    }
}
