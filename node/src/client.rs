//! The network client: publish an artifact across the nodes, read one back.
//!
//! Publishing: the live peers come from a bootstrap node (PEERS), and each is probed once; only
//! the ones that answer take shards. Each chunk's `n` shards go to the first `n` peers of a
//! weighted rendezvous ranking keyed by the chunk's first shard CID (weight = free quota), so
//! they land on `n` distinct nodes; a node that refuses (quota, timeout) is replaced by a peer
//! the chunk does not use yet. Before sending a window, the client asks the top `2n` peers of
//! each ranking which shards they already have (HAS), so a publish that was interrupted resumes
//! without resending what landed, even if free-space weights moved the ranking a little. At most [`WINDOWS_IN_FLIGHT`] windows are on the wire while
//! the next is coded. Only when every shard of every chunk is acknowledged are the manifest and
//! the signed holder record stored on the holders: before that, no reader can find the artifact.
//!
//! Publishing also names the client's key in the manifest as the one allowed to sign the
//! artifact's holder records, and dates each record by the clock (Unix ms) as its version.
//!
//! Reading: the manifest (checked against the capability's CID) says whose records to trust;
//! the newest record such a key signed, among those any peer returns, says who holds which
//! shard. Holders that did not answer the record request within a short grace are asked only when
//! the others cannot make `k`. Each chunk is fetched from any `k`
//! holders with hedging, every shard verified against its CID.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_artifact::{
    AddOptions, AsyncShardSource, ChunkEntry, Cid, EncodedChunk, Error as StoreError, Manifest,
    OpenedArtifact, ReadCap, ShardSink, ShardSlots, ShardSource, encode_artifact,
};
use cairn_erasure::Params;
use cairn_swarm::{
    BoundEndpoint, ClientStats, EndpointAddr, EndpointId, HolderRecord, RECORD_AHEAD_MAX,
    RECORD_REPLICAS, SecretKey, ShardClient, ShardConfig, ShardLocation, SignedRecord, TopicId,
    choose_record, endpoint_offline, endpoint_online, fetch_any_k, generate_secret_key, place,
    record_version_now, secret_key_from_bytes, topic_id,
};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::FuturesUnordered;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::Error;

mod inspect;
pub use inspect::{ArtifactHealth, HolderHealth, RepairReport};

/// Windows of shards being sent while the next window is coded.
pub const WINDOWS_IN_FLIGHT: usize = 4;
/// Time a reader waits for a shard before asking one more holder.
pub const HEDGE_AFTER: Duration = Duration::from_millis(300);
/// Time allowed for closing the endpoint once the work is done.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
/// Time allowed for closing the endpoint when some connection attempt never completed (see
/// [`Network::close`]): enough for the endpoint to send the queued close frames.
const CLOSE_ABANDONED_TIMEOUT: Duration = Duration::from_millis(20);
/// Fails unless at least `need` of `results` succeeded, naming why the others did not.
fn enough(
    results: Vec<Result<(), cairn_swarm::Error>>,
    need: usize,
    what: &str,
) -> Result<(), Error> {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    if ok >= need {
        return Ok(());
    }
    let why: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    Err(Error::Node(format!(
        "{what} reached only {ok} holders, {need} needed: {}",
        why.join("; ")
    )))
}

/// Time a peer has to answer the probe at connect.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Most known peers a publish probes first (see [`NetworkConfig::probe_peers_max`]).
pub const PROBE_PEERS_MAX: usize = 256;
/// Once one holder record has arrived, how long other peers may still answer with a newer one:
/// `RECORD_GRACE_FACTOR` times the time the first answer took, within `RECORD_GRACE_MIN` and
/// `RECORD_GRACE`. Peers at a similar distance answer within a few times the fastest one's time
/// (on loopback about 5 ms, across the Internet a few hundred); a fixed 250 ms was the largest
/// cost of a read on a LAN with a node gone (0.25 s of a 0.6 s fetch of 128 MiB). A peer that
/// misses the grace is only asked for shards last (see [`RemoteArtifact`]).
const RECORD_GRACE: Duration = Duration::from_millis(250);
/// See [`RECORD_GRACE`].
const RECORD_GRACE_MIN: Duration = Duration::from_millis(25);
/// See [`RECORD_GRACE`].
const RECORD_GRACE_FACTOR: u32 = 3;
/// When the peers that answered the record request hold fewer than k shards of some chunk, how
/// long (from the request) the others are waited for before they count as down for the read
/// and the read fails at once, naming them. A live peer connects and answers within one or two
/// round trips (about 1 ms on a LAN, at most a few hundred across the Internet); a node that
/// died without closing its connections never answers, and waiting for the connect timeout
/// (3 s) on each chunk is what made such a read take 3.6 s to fail.
const SILENT_DOWN_AFTER: Duration = Duration::from_millis(750);
/// Most peers asked for a holder record at once.
const RECORD_ASK_MAX: usize = 64;
/// Time the peers that sent a holder record have to send their repair records.
const REPAIR_RECORD_WAIT: Duration = Duration::from_secs(2);
/// Peers beyond `n` of a chunk's repair ranking asked for its shards when its recorded holders
/// cannot make `k` (see `repair_ranking`).
const RANKING_EXTRA: usize = 4;

/// A peer's address as given on the command line: `<endpoint id>@<ip:port>[,<ip:port>...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// The endpoint id.
    pub id: EndpointId,
    /// Its socket addresses.
    pub addrs: Vec<SocketAddr>,
}

impl PeerAddr {
    /// As an iroh address.
    pub fn endpoint_addr(&self) -> EndpointAddr {
        self.addrs
            .iter()
            .fold(EndpointAddr::new(self.id), |a, ip| a.with_ip_addr(*ip))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        write!(f, "{}@{}", self.id, addrs.join(","))
    }
}

impl FromStr for PeerAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadPeerAddr {
            given: s.chars().take(200).collect(),
            reason: reason.into(),
        };
        let (id, addrs) = s.trim().split_once('@').ok_or_else(|| bad("no `@`"))?;
        let id = EndpointId::from_str(id).map_err(|_| bad("the endpoint id is not a valid key"))?;
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| bad("an address is not ip:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() || addrs.len() > 16 {
            return Err(bad("give 1 to 16 addresses"));
        }
        Ok(PeerAddr { id, addrs })
    }
}

/// Settings of a [`Network`] client.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Name of the network (must match the nodes').
    pub network: String,
    /// Nodes to ask for the peer list.
    pub bootstrap: Vec<PeerAddr>,
    /// Offline mode: a loopback-only endpoint (tests, devnet). Chosen automatically by
    /// [`NetworkConfig::new`] when every bootstrap address is a loopback address.
    pub offline: bool,
    /// The identity that signs holder records and owns stored shards; a fresh one if `None`.
    pub secret_key: Option<[u8; 32]>,
    /// Protocol limits and timeouts.
    pub shard: ShardConfig,
    /// A publish probes every known peer first while there are at most this many
    /// ([`PROBE_PEERS_MAX`] by default); beyond, it probes none and learns who is down from
    /// the requests it sends anyway, so that its requests grow with the artifact, not with
    /// the network.
    pub probe_peers_max: usize,
}

impl NetworkConfig {
    /// Settings for `network` through `bootstrap`.
    pub fn new(network: impl Into<String>, bootstrap: Vec<PeerAddr>) -> Self {
        let offline = !bootstrap.is_empty()
            && bootstrap
                .iter()
                .all(|p| p.addrs.iter().all(|a| a.ip().is_loopback()));
        let shard = ShardConfig {
            connect_timeout: Duration::from_secs(3),
            ..ShardConfig::default()
        };
        Self {
            network: network.into(),
            bootstrap,
            offline,
            secret_key: None,
            shard,
            probe_peers_max: PROBE_PEERS_MAX,
        }
    }
}

/// A live peer as the client sees it.
#[derive(Clone, Debug)]
struct Peer {
    addr: PeerAddr,
    free: u64,
}

/// A client connected to a Cairn network.
pub struct Network {
    bound: BoundEndpoint,
    client: ShardClient,
    key: SecretKey,
    /// Peers a bootstrap node listed as alive, replaced by [`Network::refresh_peers`].
    peers: std::sync::RwLock<Vec<Peer>>,
    bootstrap: Vec<PeerAddr>,
    topic: TopicId,
    handle: Handle,
    probe_peers_max: usize,
}

/// Options of [`Network::publish`].
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Chunking, keys and erasure parameters.
    pub add: AddOptions,
    /// Accept fewer live nodes than shards per chunk (some node then holds two shards of a
    /// chunk); recorded in the holder record and reported.
    pub allow_reduced_durability: bool,
}

/// What [`Network::publish`] did.
#[derive(Clone, Debug)]
pub struct PublishReport {
    /// The read capability.
    pub cap: ReadCap,
    /// Shards sent.
    pub sent: u64,
    /// Shards a holder already had (resumed or deduplicated).
    pub skipped: u64,
    /// Distinct holders.
    pub nodes: usize,
    /// Whether durability is reduced.
    pub reduced_durability: bool,
}

/// An artifact opened for reading on the network: the opened artifact (which it derefs to) and
/// where its shards are.
pub struct RemoteArtifact {
    /// The manifest and its opened private part.
    pub opened: OpenedArtifact,
    /// The holder record used: the publisher's, or a later repair record.
    pub record: HolderRecord,
    /// The publisher's record when a repair record is used: its holders are asked for a shard
    /// when the repair record's holder fails.
    pub alternate: Option<HolderRecord>,
    /// Holders that did not answer the record request (with why): asked only if the rest
    /// cannot make `k`.
    unreachable: HashMap<EndpointId, String>,
    /// Until when a chunk that only `unreachable` holders could complete fails at once, without
    /// asking them: set when they were given [`SILENT_DOWN_AFTER`] to answer and did not, for
    /// the client's `peer_down_for` (a long-running reader that keeps the artifact asks them
    /// again after that, in case they came back).
    down_until: Option<tokio::time::Instant>,
}

/// An artifact's manifest and holder records as found on the network (see
/// [`Network::locate`]).
pub struct Located {
    /// The manifest, checked against the CID.
    pub manifest: Manifest,
    /// The record used: the publisher's, or a later repair record.
    pub record: HolderRecord,
    /// The publisher's record when a repair record is used.
    pub alternate: Option<HolderRecord>,
    pub(crate) unreachable: HashMap<EndpointId, String>,
    down_until: Option<tokio::time::Instant>,
}

impl std::ops::Deref for RemoteArtifact {
    type Target = OpenedArtifact;

    fn deref(&self) -> &OpenedArtifact {
        &self.opened
    }
}

impl Network {
    /// Binds an endpoint and learns the live peers from the first bootstrap node that answers.
    pub async fn connect(config: NetworkConfig) -> Result<Self, Error> {
        let key = match config.secret_key {
            Some(b) => secret_key_from_bytes(&b)?,
            None => generate_secret_key(),
        };
        let bound = if config.offline {
            endpoint_offline(key.clone(), "127.0.0.1:0".parse().expect("literal")).await?
        } else {
            endpoint_online(key.clone()).await?
        };
        let client = ShardClient::new(bound.endpoint.clone(), config.shard.clone());
        let topic = topic_id(&config.network);
        let peers = ask_peers(&client, &bound, &topic, &config.bootstrap).await?;
        Ok(Self {
            bound,
            client,
            key,
            peers: std::sync::RwLock::new(peers),
            bootstrap: config.bootstrap,
            topic,
            handle: Handle::current(),
            probe_peers_max: config.probe_peers_max,
        })
    }

    /// Asks the bootstrap nodes again, then the peers known now, for the live peers, and
    /// replaces the list with the first non-empty answer; returns how many peers are known. A
    /// long-running reader (a gateway) calls this now and then, so that nodes that joined
    /// after it started are asked for holder records too. On failure the old list stays.
    pub async fn refresh_peers(&self) -> Result<usize, Error> {
        let mut sources = self.bootstrap.clone();
        sources.extend(self.peers().into_iter().map(|p| p.addr));
        sources.truncate(PEERS_ASK_MAX);
        let fresh = ask_peers(&self.client, &self.bound, &self.topic, &sources).await?;
        let n = fresh.len();
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(n)
    }

    /// Calls [`Network::refresh_peers`] every `every` until the network is dropped. Failures
    /// are logged and the old list kept.
    pub fn spawn_peer_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        self.handle.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(net) = weak.upgrade() else { return };
                match tokio::time::timeout(PEERS_REFRESH_TIMEOUT, net.refresh_peers()).await {
                    Ok(Ok(n)) => tracing::debug!(peers = n, "peer list refreshed"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "peer list refresh failed; keeping the old list")
                    }
                    Err(_) => tracing::warn!("peer list refresh timed out; keeping the old list"),
                }
            }
        })
    }

    /// A snapshot of the peers known now.
    fn peers(&self) -> Vec<Peer> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Probes every peer once, in parallel: a peer table lags behind reality (a node killed a
    /// moment ago still looks alive), so a publisher places shards only on peers that answer.
    /// A dead peer costs `PROBE_TIMEOUT` here, once, instead of a connect timeout on every PUT;
    /// the probes' connections stay pooled for the work. Readers need no probe: the holder
    /// record requests tell them who answers (see [`Network::open`]).
    async fn probe(&self) -> (Vec<Peer>, HashSet<EndpointId>) {
        let probe = [cairn_artifact::shard_cid(b"cairn probe")];
        let peers = self.peers();
        let addrs: Vec<EndpointAddr> = peers.iter().map(|p| p.addr.endpoint_addr()).collect();
        let answers = join_all(
            addrs
                .iter()
                .map(|a| tokio::time::timeout(PROBE_TIMEOUT, self.client.has(a, &probe))),
        )
        .await;
        let mut unreachable = HashSet::new();
        let mut live = Vec::new();
        for (p, a) in peers.iter().zip(answers) {
            match a {
                Ok(Ok(_)) => live.push(p.clone()),
                Ok(Err(e)) => {
                    debug!("peer {} is not answering: {e}", p.addr.id.fmt_short());
                    unreachable.insert(p.addr.id);
                }
                Err(_) => {
                    debug!(
                        "peer {} did not answer within {PROBE_TIMEOUT:?}",
                        p.addr.id.fmt_short()
                    );
                    unreachable.insert(p.addr.id);
                }
            }
        }
        (live, unreachable)
    }

    /// Probes every peer the bootstrap node listed, as a publisher does before placing shards,
    /// and returns how many answered and how many did not. A node's list can lag behind reality
    /// by up to `PEER_SILENCE_MAX` (a node killed a moment ago has not been silent long enough
    /// yet); the probe does not.
    pub async fn probe_peers(&self) -> (usize, usize) {
        let (live, unreachable) = self.probe().await;
        (live.len(), unreachable.len())
    }

    /// The peers known (learnt at connect, or at the last refresh): those the bootstrap node
    /// considered alive, unprobed.
    pub fn peer_count(&self) -> usize {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Counts of shard requests and failures since this client connected.
    pub fn stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// Requests this client sent (or attempted) to the peer `id` (see
    /// [`ShardClient::requests_to`]).
    pub fn requests_to(&self, id: &EndpointId) -> u64 {
        self.client.requests_to(id)
    }

    /// The known peers' addresses (see [`Network::peer_count`]).
    pub fn peer_addrs(&self) -> Vec<EndpointAddr> {
        self.peers()
            .iter()
            .map(|p| p.addr.endpoint_addr())
            .collect()
    }

    /// Publishes a signed name record to the nodes ranked first for its org (see the `names`
    /// module: at most [`NAME_ASKS_MAX`](crate::NAME_ASKS_MAX) nodes asked).
    pub async fn publish_name(
        &self,
        signed: &cairn_swarm::SignedName,
    ) -> Result<crate::NamePublished, Error> {
        crate::names::publish_name(&self.client, &self.peer_addrs(), signed).await
    }

    /// The newest `count` revisions of a name, from the nodes ranked first for its org (see
    /// the `names` module).
    pub async fn resolve_name(
        &self,
        kind: cairn_swarm::NameKind,
        org: &str,
        name: &str,
        count: usize,
    ) -> Result<crate::NameLookup, Error> {
        crate::names::resolve_name(&self.client, &self.peer_addrs(), kind, org, name, count).await
    }

    /// This client's endpoint id (the publisher identity).
    pub fn id(&self) -> EndpointId {
        self.bound.endpoint.id()
    }

    /// Closes the endpoint.
    pub async fn close(&self) {
        self.client.close().await;
        // iroh waits about 3 s for connection attempts to peers that never answered; a client
        // that has finished its work does not need to wait for them. When there are such
        // attempts (a node died), the wait is shorter still: the live peers' close frames were
        // queued above and leave at once, and only the wait for their acknowledgements is cut
        // (a peer that misses one closes the connection at its idle timeout, as it would
        // after a crash). With a holder gone the full wait was half the cost of a 128 MiB read.
        let limit = if self.client.abandoned_connects() {
            CLOSE_ABANDONED_TIMEOUT
        } else {
            CLOSE_TIMEOUT
        };
        if tokio::time::timeout(limit, self.bound.endpoint.close())
            .await
            .is_err()
        {
            debug!("endpoint close took longer than {limit:?}; leaving it");
        }
    }

    /// Publishes `path`. Blocking: call it from a thread outside the runtime (it drives the
    /// network through the runtime's handle while the calling thread codes).
    pub fn publish(
        &self,
        path: &Path,
        opts: &PublishOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<PublishReport, Error> {
        let n = opts.add.params.n();
        // In a large network the probe would cost a request per known peer: the peers are
        // taken as listed, and a dead one costs a failed HAS or PUT, after which the client
        // counts it down (`peer_down_for`) and the shard goes to the next of its ranking.
        let (live, _) = if self.peer_count() <= self.probe_peers_max {
            self.handle.block_on(self.probe())
        } else {
            (self.peers(), HashSet::new())
        };
        let reduced = live.len() < n;
        if reduced && !opts.allow_reduced_durability {
            return Err(Error::TooFewNodes {
                live: live.len(),
                k: opts.add.params.k(),
                n,
            });
        }
        let weights: Vec<(EndpointId, u64)> =
            live.iter().map(|p| (p.addr.id, p.free.max(1))).collect();
        // The manifest names this client's key as the one allowed to sign the artifact's holder
        // records: readers and nodes trust no other.
        let mut add = opts.add.clone();
        add.record_signers.insert(0, *self.key.public().as_bytes());
        let sink = NetSink {
            net: self,
            weights: weights.clone(),
            live: live.clone(),
            n,
            holders: Mutex::new(BTreeMap::new()),
            windows: Arc::new(Semaphore::new(WINDOWS_IN_FLIGHT)),
            tasks: Mutex::new(Vec::new()),
            sent: Arc::new(Mutex::new((0, 0))),
        };
        let (manifest, cap) = encode_artifact(path, &add, &sink, progress)?;
        let holders = sink.holders.into_inner().unwrap_or_else(|p| p.into_inner());
        let known = self.peers();
        // Nodes in first-use order, holders as indices into them.
        let mut index: HashMap<EndpointId, u16> = HashMap::new();
        let mut nodes: Vec<(EndpointId, Vec<SocketAddr>)> = Vec::new();
        let per_chunk: Vec<Vec<u16>> = holders
            .into_values()
            .map(|ids| {
                ids.into_iter()
                    .map(|id| {
                        *index.entry(id).or_insert_with(|| {
                            let addrs = known
                                .iter()
                                .find(|p| p.addr.id == id)
                                .map(|p| p.addr.addrs.clone())
                                .unwrap_or_default();
                            nodes.push((id, addrs));
                            (nodes.len() - 1) as u16
                        })
                    })
                    .collect()
            })
            .collect();
        if per_chunk.len() != manifest.chunks().len() {
            return Err(Error::Node(format!(
                "{} chunks placed for {} coded; this is a bug",
                per_chunk.len(),
                manifest.chunks().len()
            )));
        }
        let record = HolderRecord {
            artifact: cap.cid,
            version: record_version_now(),
            k: opts.add.params.k() as u8,
            m: opts.add.params.m() as u8,
            reduced_durability: reduced,
            nodes: nodes.clone(),
            holders: per_chunk,
        };
        let signed = record.try_sign(&self.key)?;
        let (cid, bytes) = manifest.encode();
        // The manifest and the record go to every holder, whose caretaking needs them, and to
        // the artifact's record nodes, which readers ask first (the `records` module); the
        // record last, as it is what makes the artifact findable. An artifact with no chunk
        // (only empty files) has no holder: the record nodes alone keep it.
        let mut targets: Vec<EndpointAddr> = nodes
            .iter()
            .map(|(id, a)| {
                PeerAddr {
                    id: *id,
                    addrs: a.clone(),
                }
                .endpoint_addr()
            })
            .collect();
        let live_addrs: Vec<EndpointAddr> = live.iter().map(|p| p.addr.endpoint_addr()).collect();
        for a in crate::records::record_nodes(&cid, &live_addrs)
            .into_iter()
            .take(RECORD_REPLICAS)
        {
            if !targets.iter().any(|t| t.id == a.id) {
                targets.push(a);
            }
        }
        if targets.is_empty() {
            return Err(Error::TooFewNodes {
                live: 0,
                k: opts.add.params.k(),
                n,
            });
        }
        self.handle.block_on(async {
            // Readers need the manifest and the record from at least one holder; k copies keep
            // them available through the same losses the shards survive.
            let need = opts.add.params.k().min(targets.len());
            let puts = join_all(targets.iter().map(|t| self.client.put(t, &cid, &bytes))).await;
            enough(puts, need, "the manifest")?;
            let recs = join_all(targets.iter().map(|t| self.client.put_record(t, &signed))).await;
            enough(recs, need, "the holder record")?;
            Ok::<(), Error>(())
        })?;
        let (sent, skipped) = *sink.sent.lock().unwrap_or_else(|p| p.into_inner());
        Ok(PublishReport {
            cap,
            sent,
            skipped,
            nodes: targets.len(),
            reduced_durability: reduced,
        })
    }

    /// Finds the artifact's manifest and holder record, and opens it with the capability.
    ///
    /// A peer may send any record it likes, so none is trusted before the manifest is: the
    /// manifest is fetched from a peer that sent a record, checked against the capability's
    /// CID, and names the keys allowed to sign records; among the records peers sent, the
    /// newest such a key signed is used ([`choose_record`]). A forged or stray record costs at
    /// most one manifest request to the peer that sent it.
    pub async fn open(&self, cap: &ReadCap) -> Result<RemoteArtifact, Error> {
        let found = self.locate(&cap.cid).await?;
        Ok(RemoteArtifact {
            opened: OpenedArtifact::from_manifest(cap, found.manifest)?,
            record: found.record,
            alternate: found.alternate,
            unreachable: found.unreachable,
            down_until: found.down_until,
        })
    }

    /// Finds the manifest and holder records of `cid` as [`open`](Self::open) does, without
    /// a read capability: what auditing, `cairn status` and repair need (the manifest's public
    /// part names every shard).
    pub async fn locate(&self, cid: &Cid) -> Result<Located, Error> {
        let cid = *cid;
        // The artifact's record nodes (the `records` module) are asked first, at once. Once a
        // record is in, the others get a grace (see RECORD_GRACE) to offer theirs. If none of
        // them has a usable record, up to RECORD_ASK_MAX peers further down the ranking are
        // asked (an artifact published before records were placed, or a membership far from
        // the publisher's). Then the holders the chosen record names are asked too: who
        // answers within the grace is up; a holder that has not answered by then counts as
        // unreachable for this read, so a dead node costs one grace period here instead of a
        // connect timeout on every chunk.
        let started = tokio::time::Instant::now();
        let everyone: Vec<EndpointAddr> = self
            .peers()
            .iter()
            .map(|p| p.addr.endpoint_addr())
            .collect();
        let ranking = crate::records::record_nodes(&cid, &everyone);
        drop(everyone);
        let mut asked: Vec<EndpointAddr> = ranking.iter().take(RECORD_REPLICAS).cloned().collect();
        let mut widened = false;
        let ask = |a: EndpointAddr| -> BoxFuture<'_, _> {
            Box::pin(async move { (a.id, self.client.get_record(&a, &cid).await) })
        };
        let mut pending: FuturesUnordered<_> = asked.iter().cloned().map(ask).collect();
        let mut first_record: Option<Duration> = None;
        let mut records: Vec<(EndpointId, SignedRecord)> = Vec::new();
        let mut reasons = Vec::new();
        let mut answered = HashSet::new();
        let mut failed: HashMap<EndpointId, String> = HashMap::new();
        let mut manifest: Option<Manifest> = None;
        let mut tried = HashSet::new();
        let mut why_manifest = Vec::new();
        let mut ignored = 0usize;
        let chosen = loop {
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                        Ok(n) => n,
                        Err(_) => break,
                    },
                    None => pending.next().await,
                };
                let Some((id, answer)) = next else { break };
                match answer {
                    Ok(Some(rec)) if rec.record.artifact == cid => {
                        answered.insert(id);
                        records.push((id, rec));
                        deadline.get_or_insert_with(|| {
                            let first = *first_record.get_or_insert(started.elapsed());
                            tokio::time::Instant::now() + grace_after(first)
                        });
                    }
                    Ok(Some(_)) => {
                        answered.insert(id);
                        reasons.push(format!(
                            "{} sent a record of another artifact",
                            id.fmt_short()
                        ));
                    }
                    Ok(None) => {
                        answered.insert(id);
                        reasons.push(format!("{} has none", id.fmt_short()));
                    }
                    Err(e) => {
                        failed.insert(id, e.to_string());
                        reasons.push(e.to_string());
                    }
                }
            }
            if manifest.is_none() {
                manifest = self
                    .fetch_manifest(&cid, &asked, &records, &mut tried, &mut why_manifest)
                    .await;
            }
            if let Some(m) = &manifest {
                // Only records an allowed key signed can ever be chosen: the rest are dropped,
                // so hostile peers cannot make a reader hold their records (up to 32 MiB each).
                let before = records.len();
                records.retain(|(_, r)| m.record_signers().contains(r.publisher.as_bytes()));
                ignored += before - records.len();
            }
            if let Some(m) = &manifest
                && let Some(best) = choose_record(
                    records.iter().map(|(_, r)| r),
                    &cid,
                    m.record_signers(),
                    record_version_now(),
                )
            {
                break Some(best.clone());
            }
            if pending.is_empty() {
                if !widened {
                    widened = true;
                    let more: Vec<EndpointAddr> = ranking
                        .iter()
                        .skip(RECORD_REPLICAS)
                        .take(RECORD_ASK_MAX.saturating_sub(RECORD_REPLICAS))
                        .cloned()
                        .collect();
                    if !more.is_empty() {
                        pending.extend(more.iter().cloned().map(ask));
                        asked.extend(more);
                        continue;
                    }
                }
                break None;
            }
        };
        // Every record in hand but the one chosen went unused.
        ignored += records.len().saturating_sub(usize::from(chosen.is_some()));
        let Some(signed) = chosen else {
            let mut why = reasons;
            match &manifest {
                None if records.is_empty() => {}
                None => why.push(format!(
                    "no peer that sent a record could send the manifest ({})",
                    why_manifest.join("; ")
                )),
                Some(m) if m.record_signers().is_empty() => why.push(
                    "its manifest names no key allowed to sign holder records (an older format, \
                     or published only to a local store); publish it again"
                        .into(),
                ),
                Some(_) => why.push(format!(
                    "{ignored} holder records ignored: none is signed by a key its manifest \
                     allows and dated no later than {RECORD_AHEAD_MAX:?} from now"
                )),
            }
            return Err(Error::ArtifactUnknown {
                artifact: cid,
                reasons: why.join("; "),
            });
        };
        let manifest = manifest.expect("a record is chosen only once the manifest is in");
        if ignored > 0 {
            debug!("{ignored} other holder records of {} were not used", cid);
        }
        let mut record = signed.record;
        if !crate::care::fits(&record, &manifest) {
            return Err(Error::Node(format!(
                "the holder record of {} does not match its manifest",
                cid
            )));
        }
        // The holders of the record, then those of the repair record chosen from their answers
        // (at most RECORD_ASK_MAX of each): who answers within the grace is up.
        let grace = grace_after(first_record.unwrap_or(RECORD_GRACE));
        // Holders the peer list does not name are not asked here: a node silent for a while
        // drops out of it (see `PEER_SILENCE_MAX`), so they are likely gone; they are asked
        // below only if the others cannot make k.
        let listed: HashSet<EndpointId> = self.peers().iter().map(|p| p.addr.id).collect();
        let probed_at = tokio::time::Instant::now();
        let mut alternate = None;
        for pass in 0..2 {
            let fresh: Vec<EndpointAddr> = self
                .holder_addrs(&record)
                .into_iter()
                .filter(|a| listed.contains(&a.id) && !asked.iter().any(|b| b.id == a.id))
                .take(RECORD_ASK_MAX)
                .collect();
            pending.extend(fresh.iter().cloned().map(ask));
            asked.extend(fresh);
            let deadline = tokio::time::Instant::now() + grace;
            while let Ok(Some((id, answer))) =
                tokio::time::timeout_at(deadline, pending.next()).await
            {
                match answer {
                    Ok(Some(rec)) => {
                        answered.insert(id);
                        if rec.record.artifact == cid
                            && manifest.record_signers().contains(rec.publisher.as_bytes())
                        {
                            records.push((id, rec));
                        }
                    }
                    Ok(None) => {
                        answered.insert(id);
                    }
                    Err(e) => {
                        failed.insert(id, e.to_string());
                    }
                }
            }
            if pass > 0 {
                break;
            }
            // Repair records from the peers that sent a record: the newest one a trusted
            // holder signed becomes the map, the publisher's record the alternate locations.
            match self
                .repair_records(&cid, &records, &asked, &record, &manifest)
                .await
            {
                Some(newest) => alternate = Some(std::mem::replace(&mut record, newest)),
                None => break,
            }
        }
        let asked_ids: HashSet<EndpointId> = asked.iter().map(|a| a.id).collect();
        // Holders not asked yet: not in the peer list, or past the first RECORD_ASK_MAX.
        let unlisted: Vec<usize> = (0..record.nodes.len())
            .filter(|&i| !asked_ids.contains(&record.nodes[i].0))
            .collect();
        let silent = |answered: &HashSet<EndpointId>| -> HashSet<EndpointId> {
            record
                .nodes
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !answered.contains(id))
                .collect()
        };
        // If the peers that answered cannot make k shards of some chunk, the silent ones are
        // needed: they get until SILENT_DOWN_AFTER from the request (their requests are still
        // running; holders not asked yet are asked now), and those still silent then are down
        // for this read.
        let mut down_until = None;
        if short_chunks(&record, &silent(&answered)) {
            let mut deadline = probed_at + SILENT_DOWN_AFTER;
            if !unlisted.is_empty() {
                let addrs = self.holder_addrs(&record);
                for &i in unlisted.iter().take(RECORD_ASK_MAX) {
                    pending.push(ask(addrs[i].clone()));
                }
                deadline = tokio::time::Instant::now() + SILENT_DOWN_AFTER;
            }
            while let Ok(Some((id, answer))) =
                tokio::time::timeout_at(deadline, pending.next()).await
            {
                match answer {
                    Ok(_) => {
                        answered.insert(id);
                    }
                    Err(e) => {
                        failed.insert(id, e.to_string());
                    }
                }
                if !short_chunks(&record, &silent(&answered)) {
                    break;
                }
            }
            if short_chunks(&record, &silent(&answered)) {
                down_until = Some(tokio::time::Instant::now() + self.client.config().peer_down_for);
            }
        }
        let unreachable: HashMap<EndpointId, String> = silent(&answered)
            .into_iter()
            .map(|id| {
                let why = failed.remove(&id).unwrap_or_else(|| {
                    if down_until.is_some() {
                        format!(
                            "holder {} did not answer within {SILENT_DOWN_AFTER:?}",
                            id.fmt_short()
                        )
                    } else if asked_ids.contains(&id) {
                        format!(
                            "holder {} did not answer the holder record request in time",
                            id.fmt_short()
                        )
                    } else {
                        format!(
                            "holder {} is not among the live peers listed",
                            id.fmt_short()
                        )
                    }
                });
                (id, why)
            })
            .collect();
        Ok(Located {
            manifest,
            record,
            alternate,
            unreachable,
            down_until,
        })
    }

    /// The newest repair record the peers that sent a holder record keep for `cid`, if one is
    /// newer than `primary` and trusted: signed by a node of `primary` or of another trusted
    /// repair record (see the shard protocol's *Repair records*), and of the manifest's shape.
    /// Bounded by [`REPAIR_RECORD_WAIT`] and [`RECORD_ASK_MAX`] peers.
    async fn repair_records(
        &self,
        cid: &Cid,
        records: &[(EndpointId, SignedRecord)],
        asked: &[EndpointAddr],
        primary: &HolderRecord,
        manifest: &Manifest,
    ) -> Option<HolderRecord> {
        let from: Vec<&EndpointAddr> = asked
            .iter()
            .filter(|a| records.iter().any(|(id, _)| *id == a.id))
            .take(RECORD_ASK_MAX)
            .collect();
        let answers = tokio::time::timeout(
            REPAIR_RECORD_WAIT,
            join_all(from.iter().map(|a| self.client.get_repair_record(a, cid))),
        )
        .await
        .unwrap_or_default();
        let mut candidates: Vec<SignedRecord> = answers
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .filter(|r| {
                r.record.artifact == *cid
                    && r.record.version > primary.version
                    && r.record.version
                        <= record_version_now() + RECORD_AHEAD_MAX.as_millis() as u64
                    && crate::care::fits(&r.record, manifest)
            })
            .collect();
        let mut trusted: HashSet<EndpointId> = primary.nodes.iter().map(|(id, _)| *id).collect();
        let mut best: Option<HolderRecord> = None;
        // Trust spreads from the publisher's record one repair at a time; each pass admits at
        // least one record or ends.
        while let Some(at) = candidates
            .iter()
            .position(|r| trusted.contains(&r.publisher))
        {
            let r = candidates.swap_remove(at);
            trusted.extend(r.record.nodes.iter().map(|(id, _)| *id));
            if best.as_ref().is_none_or(|b| r.record.version > b.version) {
                best = Some(r.record);
            }
        }
        best
    }

    /// The manifest of `cid` from the first peer of those that sent a record (and were not
    /// tried yet) whose bytes match the CID and decode. Peers whose record's signer more peers
    /// agree on go first, so a lone forger is asked last. Failures are added to `why`.
    async fn fetch_manifest(
        &self,
        cid: &Cid,
        asked: &[EndpointAddr],
        records: &[(EndpointId, SignedRecord)],
        tried: &mut HashSet<EndpointId>,
        why: &mut Vec<String>,
    ) -> Option<Manifest> {
        let mut agree: HashMap<EndpointId, usize> = HashMap::new();
        for (_, r) in records {
            *agree.entry(r.publisher).or_default() += 1;
        }
        let mut order: Vec<(usize, EndpointId)> = records
            .iter()
            .filter(|(id, _)| !tried.contains(id))
            .map(|(id, r)| (agree[&r.publisher], *id))
            .collect();
        order.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        for (_, id) in order {
            if !tried.insert(id) {
                continue;
            }
            let Some(addr) = asked.iter().find(|a| a.id == id) else {
                continue;
            };
            match self.client.get(addr, cid, None).await {
                Ok(Some(bytes)) => match Manifest::decode(&bytes, &cid.to_string()) {
                    Ok(m) => return Some(m),
                    Err(e) => why.push(format!("{}: {e}", id.fmt_short())),
                },
                Ok(None) => why.push(format!("{} does not have it", id.fmt_short())),
                Err(e) => why.push(e.to_string()),
            }
        }
        None
    }

    /// The addresses of `record`'s nodes, in its order: those their announcements give now,
    /// then those recorded at publish (one map of the peer list, not a scan per node).
    fn holder_addrs(&self, record: &HolderRecord) -> Vec<EndpointAddr> {
        let peers = self.peers();
        let known: HashMap<EndpointId, &[SocketAddr]> = peers
            .iter()
            .map(|p| (p.addr.id, p.addr.addrs.as_slice()))
            .collect();
        record
            .nodes
            .iter()
            .map(|(id, addrs)| {
                // Addresses known now (announcements) first, then those recorded at publish.
                let mut all: Vec<SocketAddr> =
                    known.get(id).map(|a| a.to_vec()).unwrap_or_default();
                all.extend(addrs.iter().copied());
                all.dedup();
                let a = PeerAddr {
                    id: *id,
                    addrs: all,
                };
                self.bound.lookup.add_endpoint_info(a.endpoint_addr());
                a.endpoint_addr()
            })
            .collect()
    }

    /// A [`ShardSource`] reading `artifact` from its holders. Blocking: use it from threads
    /// outside the runtime.
    pub fn source<'a>(&'a self, artifact: &'a RemoteArtifact) -> impl ShardSource + 'a {
        NetSource {
            net: self,
            art: artifact,
            addrs: self.holder_addrs(&artifact.record),
            alt_addrs: artifact
                .alternate
                .as_ref()
                .map(|r| self.holder_addrs(r))
                .unwrap_or_default(),
        }
    }
}

/// Where each chunk of a window went: chunk index, holder of each shard.
type Placed = Vec<(usize, Vec<EndpointId>)>;

struct NetSink<'a> {
    net: &'a Network,
    /// The peers that answered the probe: the only ones shards are placed on.
    live: Vec<Peer>,
    weights: Vec<(EndpointId, u64)>,
    n: usize,
    holders: Mutex<BTreeMap<usize, Vec<EndpointId>>>,
    windows: Arc<Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Result<Placed, Error>>>>,
    sent: Arc<Mutex<(u64, u64)>>,
}

impl NetSink<'_> {
    /// Records where finished windows went (all of them when `wait_all`). The lock is not held
    /// while waiting; after the first failure the windows still in flight are aborted, since
    /// the publish has failed and nothing of it becomes visible.
    fn collect_done(&self, wait_all: bool) -> Result<(), Error> {
        let pending = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut keep = Vec::new();
        let mut result = Ok(());
        for t in pending {
            if result.is_err() {
                t.abort();
                continue;
            }
            if !wait_all && !t.is_finished() {
                keep.push(t);
                continue;
            }
            match self.net.handle.block_on(t) {
                Ok(Ok(placed)) => {
                    let mut h = self.holders.lock().unwrap_or_else(|p| p.into_inner());
                    h.extend(placed);
                }
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(Error::Node(format!("a publish task failed: {e}"))),
            }
        }
        if result.is_err() {
            keep.iter().for_each(|t| t.abort());
        } else {
            self.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(keep);
        }
        result
    }
}

impl ShardSink for NetSink<'_> {
    fn put_window(&self, chunks: Vec<EncodedChunk>) -> Result<(), StoreError> {
        let sink_err = |e: Error| StoreError::Sink {
            cid: chunks
                .first()
                .and_then(|c| c.shards.first())
                .map(|s| s.0)
                .unwrap_or_default(),
            reason: e.to_string(),
        };
        self.collect_done(false).map_err(sink_err)?;
        let permit = self
            .net
            .handle
            .block_on(self.windows.clone().acquire_owned())
            .map_err(|_| StoreError::Sink {
                cid: Cid::default(),
                reason: "publish cancelled".into(),
            })?;
        let client = self.net.client.clone();
        let weights = self.weights.clone();
        let addrs: HashMap<EndpointId, EndpointAddr> = self
            .live
            .iter()
            .map(|p| (p.addr.id, p.addr.endpoint_addr()))
            .collect();
        let n = self.n;
        let sent = self.sent.clone();
        let task = self.net.handle.spawn(async move {
            let _permit = permit;
            send_window(&client, &weights, &addrs, n, chunks, &sent).await
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(())
    }

    fn finish(&self) -> Result<(), StoreError> {
        self.collect_done(true).map_err(|e| StoreError::Sink {
            cid: Cid::default(),
            reason: e.to_string(),
        })
    }
}

/// Sends one window: ranks holders per chunk, skips what targets already hold, PUTs the rest in
/// parallel, and replaces a refusing target with the next in its chunk's ranking.
async fn send_window(
    client: &ShardClient,
    weights: &[(EndpointId, u64)],
    addrs: &HashMap<EndpointId, EndpointAddr>,
    n: usize,
    chunks: Vec<EncodedChunk>,
    sent: &Mutex<(u64, u64)>,
) -> Result<Placed, Error> {
    // Rank: shard j of a chunk goes to the j-th peer of its ranking (wrapping around when
    // durability is reduced).
    let rankings: Vec<Vec<EndpointId>> = chunks
        .iter()
        .map(|c| place(&c.shards[0].0.to_bytes(), weights, weights.len()))
        .collect();
    // Resume: the top 2n of each ranking are asked what they already hold. Asking beyond the n
    // assigned peers finds the shards an interrupted run placed when free-space weights ranked
    // the peers a little differently.
    let mut per_peer: HashMap<EndpointId, Vec<Cid>> = HashMap::new();
    for (c, ranking) in chunks.iter().zip(&rankings) {
        for id in ranking.iter().take(2 * n) {
            per_peer
                .entry(*id)
                .or_default()
                .extend(c.shards.iter().map(|(cid, _)| *cid));
        }
    }
    let has_answers = join_all(
        per_peer
            .iter()
            .map(|(id, cids)| async move { (*id, client.has(&addrs[id], cids).await) }),
    )
    .await;
    let mut held: HashSet<(EndpointId, Cid)> = HashSet::new();
    for (id, r) in has_answers {
        if let Ok(flags) = r {
            for (cid, f) in per_peer[&id].iter().zip(flags) {
                if f {
                    held.insert((id, *cid));
                }
            }
        }
    }
    let mut out: BTreeMap<usize, Vec<Option<EndpointId>>> = BTreeMap::new();
    let mut jobs = Vec::new();
    let (mut skipped, mut was_sent) = (0u64, 0u64);
    for (c, ranking) in chunks.iter().zip(&rankings) {
        let distinct = ranking.len() >= n;
        let assigned: Vec<EndpointId> = (0..n).map(|j| ranking[j % ranking.len()]).collect();
        let mut holder: Vec<Option<EndpointId>> = vec![None; n];
        let mut used: HashSet<EndpointId> = HashSet::new();
        // Shards already on their assigned peer, then on another candidate not yet used by
        // this chunk (so the chunk still spans n distinct peers).
        for j in 0..n {
            if held.contains(&(assigned[j], c.shards[j].0))
                && (!distinct || used.insert(assigned[j]))
            {
                holder[j] = Some(assigned[j]);
            }
        }
        for (slot, (cid, _)) in holder.iter_mut().zip(&c.shards) {
            if slot.is_none()
                && let Some(id) = ranking
                    .iter()
                    .take(2 * n)
                    .find(|id| held.contains(&(**id, *cid)) && (!distinct || !used.contains(*id)))
            {
                used.insert(*id);
                *slot = Some(*id);
            }
        }
        skipped += holder.iter().filter(|h| h.is_some()).count() as u64;
        // The rest are sent: to the assigned peer if free, else to the next unused one.
        let mut targets: Vec<(usize, EndpointId)> = Vec::new();
        for j in 0..n {
            if holder[j].is_some() {
                continue;
            }
            let target = if !distinct || !used.contains(&assigned[j]) {
                assigned[j]
            } else {
                *ranking
                    .iter()
                    .find(|id| !used.contains(*id))
                    .expect("n distinct peers exist when distinct")
            };
            used.insert(target);
            targets.push((j, target));
        }
        // A refused shard falls back to peers this chunk does not use, each shard starting at a
        // different one so that two refusals rarely land on the same peer.
        let spare: Vec<EndpointId> = ranking
            .iter()
            .filter(|id| !distinct || !used.contains(*id))
            .copied()
            .collect();
        for (t, (j, target)) in targets.into_iter().enumerate() {
            let mut order = vec![target];
            if !spare.is_empty() {
                order.extend((0..spare.len()).map(|x| spare[(x + t) % spare.len()]));
            }
            let (cid, data) = &c.shards[j];
            jobs.push(put_first_accepting(
                client, addrs, c.index, j, *cid, data, order,
            ));
        }
        out.insert(c.index, holder);
    }
    for r in join_all(jobs).await {
        let (chunk, j, id) = r?;
        out.get_mut(&chunk).expect("every chunk has a slot")[j] = Some(id);
        was_sent += 1;
    }
    let mut t = sent.lock().unwrap_or_else(|p| p.into_inner());
    t.0 += was_sent;
    t.1 += skipped;
    Ok(out
        .into_iter()
        .map(|(i, h)| {
            (
                i,
                h.into_iter()
                    .map(|x| x.expect("every shard placed or failed"))
                    .collect(),
            )
        })
        .collect())
}

/// PUTs a shard to the first peer of `order` that accepts it.
async fn put_first_accepting(
    client: &ShardClient,
    addrs: &HashMap<EndpointId, EndpointAddr>,
    chunk: usize,
    j: usize,
    cid: Cid,
    data: &[u8],
    order: Vec<EndpointId>,
) -> Result<(usize, usize, EndpointId), Error> {
    let mut reasons = Vec::new();
    for id in order {
        match client.put(&addrs[&id], &cid, data).await {
            Ok(()) => return Ok((chunk, j, id)),
            Err(e) => {
                debug!("shard {cid} refused by {}: {e}", id.fmt_short());
                reasons.push(e.to_string());
            }
        }
    }
    warn!("shard {cid} of chunk {chunk} could not be placed");
    Err(Error::Placement {
        cid,
        chunk,
        reasons: reasons.join("; "),
    })
}

struct NetSource<'a> {
    net: &'a Network,
    art: &'a RemoteArtifact,
    addrs: Vec<EndpointAddr>,
    alt_addrs: Vec<EndpointAddr>,
}

impl NetSource<'_> {
    async fn fetch_one(
        &self,
        artifact: &Cid,
        index: usize,
        chunk: &ChunkEntry,
        params: Params,
    ) -> Result<ShardSlots, StoreError> {
        fetch_chunk(
            self.net,
            self.art,
            (&self.addrs, &self.alt_addrs),
            artifact,
            index,
            chunk,
            params,
        )
        .await
    }
}

/// An owned reader of one artifact's shards from their holders, for the async read core
/// ([`cairn_artifact::read_stream`]): each fetch is a future on the caller's runtime, with the
/// client's timeouts and hedging; nothing blocks a thread.
pub struct NetShards {
    net: Arc<Network>,
    art: Arc<RemoteArtifact>,
    addrs: Vec<EndpointAddr>,
    alt_addrs: Vec<EndpointAddr>,
}

impl NetShards {
    /// Reads `art`'s shards through `net`.
    pub fn new(net: Arc<Network>, art: Arc<RemoteArtifact>) -> Self {
        let addrs = net.holder_addrs(&art.record);
        let alt_addrs = art
            .alternate
            .as_ref()
            .map(|r| net.holder_addrs(r))
            .unwrap_or_default();
        Self {
            net,
            art,
            addrs,
            alt_addrs,
        }
    }

    /// The artifact read.
    pub fn remote(&self) -> &RemoteArtifact {
        &self.art
    }
}

impl AsyncShardSource for NetShards {
    fn fetch<'a>(
        &'a self,
        artifact: &'a Cid,
        index: usize,
        chunk: &'a ChunkEntry,
        params: Params,
    ) -> BoxFuture<'a, Result<ShardSlots, StoreError>> {
        Box::pin(fetch_chunk(
            &self.net,
            &self.art,
            (&self.addrs, &self.alt_addrs),
            artifact,
            index,
            chunk,
            params,
        ))
    }
}

/// Fetches any `k` verified shards of chunk `index` from their holders (see [`fetch_any_k`]),
/// skipping holders known to be down while the rest can make `k`.
async fn fetch_chunk(
    net: &Network,
    art: &RemoteArtifact,
    (addrs, alt_addrs): (&[EndpointAddr], &[EndpointAddr]),
    artifact: &Cid,
    index: usize,
    chunk: &ChunkEntry,
    params: Params,
) -> Result<ShardSlots, StoreError> {
    let holders = &art.record.holders[index];
    let mut locations: Vec<ShardLocation> = chunk
        .shards
        .iter()
        .zip(holders)
        .enumerate()
        .map(|(j, (cid, h))| ShardLocation {
            index: j,
            cid: *cid,
            holder: addrs[*h as usize].clone(),
        })
        .collect();
    // Holders that did not answer the record request go only if the rest cannot make k,
    // and not even then while they count as down (they were waited for in `open`): the
    // chunk fails at once, naming them, instead of after a connect timeout.
    // The publisher's holders, where a repair record moved a shard: asked if the new holder
    // fails.
    if let Some(alt) = &art.alternate {
        for (j, cid) in chunk.shards.iter().enumerate() {
            let a = &alt_addrs[alt.holders[index][j] as usize];
            if a.id != addrs[holders[j] as usize].id && !art.unreachable.contains_key(&a.id) {
                locations.push(ShardLocation {
                    index: j,
                    cid: *cid,
                    holder: a.clone(),
                });
            }
        }
    }
    let reachable = locations
        .iter()
        .filter(|l| !art.unreachable.contains_key(&l.holder.id))
        .map(|l| l.index)
        .collect::<HashSet<_>>()
        .len();
    if reachable >= params.k() {
        locations.retain(|l| !art.unreachable.contains_key(&l.holder.id));
    } else if art
        .down_until
        .is_some_and(|until| tokio::time::Instant::now() < until)
    {
        let missing = locations
            .iter()
            .filter_map(|l| {
                let why = art.unreachable.get(&l.holder.id)?;
                Some((l.cid, why.clone()))
            })
            .collect();
        return Err(StoreError::ShardsUnavailable {
            artifact: *artifact,
            chunk: index,
            present: reachable,
            k: params.k(),
            missing,
        });
    }
    let mut result = fetch_any_k(&net.client, locations.clone(), params.k(), HEDGE_AFTER).await;
    if result.is_err() {
        // The recorded holders cannot make k: the shards may have been repaired onto peers no
        // record this reader has names. Repairs place them by the chunk's repair ranking over
        // the live peers, so its first n + RANKING_EXTRA peers are asked which they hold.
        let extra = ranking_locations(net, chunk, params.n(), &locations).await;
        if !extra.is_empty() {
            locations.extend(extra);
            result = fetch_any_k(&net.client, locations, params.k(), HEDGE_AFTER).await;
        }
    }
    match result {
        Ok(shards) => {
            let mut slots = vec![None; params.n()];
            for (j, b) in shards {
                slots[j] = Some(b);
            }
            Ok(slots)
        }
        Err(e) => {
            let mut missing: Vec<(Cid, String)> = Vec::new();
            for (j, cid) in chunk.shards.iter().enumerate() {
                let holder = addrs[holders[j] as usize].id;
                let why: Vec<String> = e
                    .missing
                    .iter()
                    .filter(|f| f.index == j)
                    .map(|f| format!("{}: {}", f.peer, f.reason))
                    .collect();
                if !why.is_empty() {
                    missing.push((*cid, why.join("; ")));
                } else if let Some(why) = art.unreachable.get(&holder) {
                    missing.push((*cid, why.clone()));
                }
            }
            Err(StoreError::ShardsUnavailable {
                artifact: *artifact,
                chunk: index,
                present: e.got,
                k: params.k(),
                missing,
            })
        }
    }
}

/// Where the chunk's shards are among the first `n + RANKING_EXTRA` live peers of its repair
/// ranking that `known` does not already list (one HAS each, at once).
async fn ranking_locations(
    net: &Network,
    chunk: &ChunkEntry,
    n: usize,
    known: &[ShardLocation],
) -> Vec<ShardLocation> {
    let peers: Vec<Peer> = net.peers();
    let ids: Vec<EndpointId> = peers.iter().map(|p| p.addr.id).collect();
    let listed: HashSet<(EndpointId, usize)> =
        known.iter().map(|l| (l.holder.id, l.index)).collect();
    let ranking = crate::care::repair_ranking(&chunk.shards, &ids);
    let asks = ranking.iter().take(n + RANKING_EXTRA).filter_map(|id| {
        let addr = peers
            .iter()
            .find(|p| p.addr.id == *id)?
            .addr
            .endpoint_addr();
        Some(async move {
            let held = net.client.has(&addr, &chunk.shards).await.ok()?;
            Some((addr, held))
        })
    });
    let mut out = Vec::new();
    for (addr, held) in join_all(asks).await.into_iter().flatten() {
        for (j, (cid, h)) in chunk.shards.iter().zip(held).enumerate() {
            if h && !listed.contains(&(addr.id, j)) {
                out.push(ShardLocation {
                    index: j,
                    cid: *cid,
                    holder: addr.clone(),
                });
            }
        }
    }
    out
}

impl ShardSource for NetSource<'_> {
    fn fetch(
        &self,
        artifact: &Cid,
        index: usize,
        chunk: &ChunkEntry,
        params: Params,
    ) -> Result<ShardSlots, StoreError> {
        self.net
            .handle
            .block_on(self.fetch_one(artifact, index, chunk, params))
    }

    /// A new chunk starts as soon as one is done, so `in_flight` chunks are always on the way;
    /// results come out in order. `deliver` may block (a full queue): the shard requests are
    /// tasks on the runtime and go on meanwhile, and at most `in_flight` chunks wait for it.
    fn fetch_ordered(
        &self,
        artifact: &Cid,
        params: Params,
        chunks: &[(usize, &ChunkEntry)],
        in_flight: usize,
        deliver: &mut dyn FnMut(Result<ShardSlots, StoreError>) -> bool,
    ) {
        self.net.handle.block_on(async {
            let mut results = futures_util::stream::iter(chunks)
                .map(|(i, c)| self.fetch_one(artifact, *i, c, params))
                .buffered(in_flight.max(1));
            while let Some(r) = results.next().await {
                if !deliver(r) {
                    return;
                }
            }
        });
    }

    /// Every chunk of the window in flight at once (bounded by the window size and the client's
    /// per-peer in-flight cap).
    fn fetch_window(
        &self,
        artifact: &Cid,
        params: Params,
        chunks: &[(usize, &ChunkEntry)],
    ) -> Vec<Result<ShardSlots, StoreError>> {
        self.net.handle.block_on(join_all(
            chunks
                .iter()
                .map(|(i, c)| self.fetch_one(artifact, *i, c, params)),
        ))
    }
}

/// Most peers asked for the peer list in one refresh.
const PEERS_ASK_MAX: usize = 8;
/// Time one refresh of the peer list may take.
const PEERS_REFRESH_TIMEOUT: Duration = Duration::from_secs(20);

/// The live peers as the first of `sources` that knows any lists them (sorted, deduplicated);
/// each source's address goes into the endpoint's address book.
async fn ask_peers(
    client: &ShardClient,
    bound: &BoundEndpoint,
    topic: &TopicId,
    sources: &[PeerAddr],
) -> Result<Vec<Peer>, Error> {
    let mut reasons = Vec::new();
    let mut peers = Vec::new();
    for b in sources {
        bound.lookup.add_endpoint_info(b.endpoint_addr());
        match client.all_peers(&b.endpoint_addr(), topic).await {
            Ok(anns) if !anns.is_empty() => {
                for a in anns {
                    let addr = PeerAddr {
                        id: a.endpoint_id(),
                        addrs: a.addrs().to_vec(),
                    };
                    bound.lookup.add_endpoint_info(addr.endpoint_addr());
                    peers.push(Peer {
                        addr,
                        free: a.free_bytes(),
                    });
                }
                break;
            }
            Ok(_) => reasons.push(format!("{} knows no peers yet", b.id.fmt_short())),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if peers.is_empty() {
        return Err(Error::NoPeers {
            reasons: reasons.join("; "),
        });
    }
    peers.sort_by_key(|p| p.addr.id);
    peers.dedup_by_key(|p| p.addr.id);
    Ok(peers)
}

/// How long other peers may still answer once the first holder record came in `first` after
/// the request (see [`RECORD_GRACE`]).
fn grace_after(first: Duration) -> Duration {
    (first * RECORD_GRACE_FACTOR).clamp(RECORD_GRACE_MIN, RECORD_GRACE)
}

/// Whether some chunk of `record` has fewer than k shards on holders outside `silent`.
fn short_chunks(record: &HolderRecord, silent: &HashSet<EndpointId>) -> bool {
    if silent.is_empty() {
        return false;
    }
    record.holders.iter().any(|shards| {
        shards
            .iter()
            .filter(|&&h| {
                record
                    .nodes
                    .get(h as usize)
                    .is_some_and(|(id, _)| !silent.contains(id))
            })
            .count()
            < record.k as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_short_when_silent_holders_leave_fewer_than_k_shards() {
        let ids: Vec<EndpointId> = (0..5).map(|_| generate_secret_key().public()).collect();
        let record = HolderRecord {
            artifact: cairn_artifact::shard_cid(b"artifact"),
            version: 1,
            k: 3,
            m: 2,
            reduced_durability: false,
            nodes: ids.iter().map(|id| (*id, Vec::new())).collect(),
            // The second chunk has two shards on node 0.
            holders: vec![vec![0, 1, 2, 3, 4], vec![0, 0, 1, 3, 4]],
        };
        let silent =
            |which: &[usize]| -> HashSet<EndpointId> { which.iter().map(|&i| ids[i]).collect() };
        assert!(!short_chunks(&record, &silent(&[])));
        assert!(!short_chunks(&record, &silent(&[3, 4])));
        // Node 0 gone costs the second chunk two shards, leaving three.
        assert!(!short_chunks(&record, &silent(&[0])));
        assert!(short_chunks(&record, &silent(&[0, 3])));
        assert!(short_chunks(&record, &silent(&[1, 3, 4])));
    }

    #[test]
    fn peer_addr_parses_and_prints() {
        let id = generate_secret_key().public();
        let s = format!("{id}@127.0.0.1:4000,[::1]:5");
        let p: PeerAddr = s.parse().unwrap();
        assert_eq!(p.addrs.len(), 2);
        assert_eq!(p.to_string().parse::<PeerAddr>().unwrap(), p);
        for bad in [
            "",
            "x@127.0.0.1:1",
            &format!("{id}"),
            &format!("{id}@nothing"),
            &format!("{id}@"),
        ] {
            assert!(
                matches!(bad.parse::<PeerAddr>(), Err(Error::BadPeerAddr { .. })),
                "{bad}"
            );
        }
    }
}
