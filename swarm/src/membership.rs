//! Membership over iroh-gossip: signed node announcements and the table of known peers.
//!
//! Each node periodically broadcasts an [`Announcement`] on the gossip topic of its network:
//! its endpoint id, socket addresses, free quota and shard protocol version, with a timestamp and
//! a sequence number, signed with the node's ed25519 key. Receivers verify the signature, the
//! network, the size and the freshness before the [`PeerTable`] takes it. A peer is alive while it
//! has been heard from within [`PEER_SILENCE_MAX`] and has failed fewer than
//! [`PEER_FAILURES_MAX`] requests in a row.
//!
//! The signed bytes are what travels: a node hands the announcements it knows (its own first) to
//! anyone who asks with the shard protocol's PEERS request, and a process without gossip builds
//! its own [`PeerTable`] from them with [`PeerTable::observe_all`]; the signatures make the
//! answering node unable to forge or alter them.
//!
//! Announcement byte layout (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version = 1 |
//! | 1 | 32 | topic id (binds the announcement to one network) |
//! | 33 | 32 | endpoint id (ed25519 public key) |
//! | 65 | 1 | shard protocol version |
//! | 66 | 8 | free quota bytes |
//! | 74 | 8 | timestamp, Unix milliseconds |
//! | 82 | 8 | sequence number |
//! | 90 | 1 | address count (≤ [`ADDRS_MAX`]) |
//! | 91 | … | per address: `u8` family (4 or 6), 4 or 16 address bytes, `u16` port |
//! | end−64 | 64 | ed25519 signature over every byte before it |
//!
//! Peer table byte layout: magic `CAIRNPT\0`, `u8` version 1, 32-byte topic id, `u32` count
//! (≤ [`PEER_TABLE_PEERS_MAX`]), then per peer `u16` length, the signed announcement, `u64` last
//! seen (Unix ms), `u32` consecutive failures. Announcements are re-verified when loaded.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use iroh::{EndpointAddr, EndpointId, SecretKey, Signature};
use iroh_gossip::api::{Event, GossipReceiver, GossipSender};
use iroh_gossip::{Gossip, TopicId};
use n0_future::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::endpoint::BoundEndpoint;
use crate::error::{Error, Result};
use crate::protocol::PROTOCOL_VERSION;

/// Most socket addresses in one announcement.
pub const ADDRS_MAX: usize = 16;
/// Largest announcement accepted, in bytes.
pub const ANNOUNCEMENT_LEN_MAX: usize = 512;
/// How often a node announces itself by default.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);
/// A peer silent for this long is dead (three missed announcements).
pub const PEER_SILENCE_MAX: Duration = Duration::from_secs(90);
/// A peer that failed this many requests in a row is dead until it announces again.
pub const PEER_FAILURES_MAX: u32 = 3;
/// Most peers a table remembers (about 20 MB of table at the limit).
pub const PEER_TABLE_PEERS_MAX: usize = 65_536;
/// The announcement rate the whole network aims for: each node's interval grows with the
/// number of peers it knows so that, network-wide, about this many announcements per second
/// are sent, and every node receives about this many whatever the network's size (see
/// [`announce_interval_for`]).
pub const ANNOUNCEMENTS_PER_SEC: u64 = 20;
/// Announcements dated further ahead than this are refused (clock skew allowance).
const CLOCK_SKEW_MAX: Duration = Duration::from_secs(300);
/// Announcements older than this are refused as stale (or replayed).
const ANNOUNCEMENT_AGE_MAX: Duration = Duration::from_secs(600);
/// Time between attempts to rejoin the topic after the subscription ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

const ANNOUNCEMENT_VERSION: u8 = 1;
const HEADER_LEN: usize = 91;
const SIGNATURE_LEN: usize = 64;
const TABLE_MAGIC: &[u8; 8] = b"CAIRNPT\0";
const TABLE_VERSION: u8 = 1;
const TOPIC_CONTEXT: &str = "cairn 2025 membership topic v1";

const _: () = assert!(HEADER_LEN + ADDRS_MAX * 19 + SIGNATURE_LEN <= ANNOUNCEMENT_LEN_MAX);
const _: () = assert!(ANNOUNCEMENT_LEN_MAX <= u16::MAX as usize);
// Leave room for iroh-gossip's own framing inside its default message limit.
const _: () = assert!(ANNOUNCEMENT_LEN_MAX * 2 <= iroh_gossip::proto::DEFAULT_MAX_MESSAGE_SIZE);
const _: () = assert!(PEER_SILENCE_MAX.as_secs() >= 2 * ANNOUNCE_INTERVAL.as_secs());

/// The gossip topic of the network called `network`: nodes on different networks never mix.
pub fn topic_id(network: &str) -> TopicId {
    TopicId::from_bytes(blake3::derive_key(TOPIC_CONTEXT, network.as_bytes()))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rejected(reason: impl Into<String>) -> Error {
    Error::Announcement {
        reason: reason.into(),
    }
}

/// What a node says about itself. Built with [`Announcement::new`], carried signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    endpoint_id: EndpointId,
    addrs: Vec<SocketAddr>,
    free_bytes: u64,
    protocol_version: u8,
    timestamp_ms: u64,
    seq: u64,
}

impl Announcement {
    /// An announcement of `endpoint_id` at `timestamp_ms` (Unix ms). Only the first
    /// [`ADDRS_MAX`] addresses are kept.
    pub fn new(
        endpoint_id: EndpointId,
        addrs: &[SocketAddr],
        free_bytes: u64,
        timestamp_ms: u64,
        seq: u64,
    ) -> Self {
        Self {
            endpoint_id,
            addrs: addrs.iter().take(ADDRS_MAX).copied().collect(),
            free_bytes,
            protocol_version: PROTOCOL_VERSION,
            timestamp_ms,
            seq,
        }
    }

    /// The announcing node.
    pub fn endpoint_id(&self) -> EndpointId {
        self.endpoint_id
    }
    /// Where it listens.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
    /// Its free quota in bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
    /// The shard protocol version it speaks.
    pub fn protocol_version(&self) -> u8 {
        self.protocol_version
    }
    /// When it was made, Unix milliseconds.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }
    /// Its sequence number; with the timestamp it orders a node's announcements.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The signed bytes for `topic`. `key` must be the key of the announced endpoint.
    pub fn sign(&self, key: &SecretKey, topic: &TopicId) -> Vec<u8> {
        assert_eq!(
            key.public(),
            self.endpoint_id,
            "announcements are signed by their own node"
        );
        let mut out = Vec::with_capacity(ANNOUNCEMENT_LEN_MAX);
        out.push(ANNOUNCEMENT_VERSION);
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(self.endpoint_id.as_bytes());
        out.push(self.protocol_version);
        out.extend_from_slice(&self.free_bytes.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(self.addrs.len() as u8);
        for addr in &self.addrs {
            put_socket_addr(&mut out, addr);
        }
        let signature = key.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        out
    }

    /// Decodes signed bytes, checking size, format, network and signature (not freshness: see
    /// [`PeerTable::observe`]).
    pub fn verify(bytes: &[u8], topic: &TopicId) -> Result<Self> {
        if bytes.len() > ANNOUNCEMENT_LEN_MAX {
            return Err(rejected(format!(
                "{} bytes is over the limit of {ANNOUNCEMENT_LEN_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(rejected(format!("{} bytes is too short", bytes.len())));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut reader = Reader(body);
        let version = reader.u8()?;
        if version != ANNOUNCEMENT_VERSION {
            return Err(rejected(format!(
                "format version {version} is not supported"
            )));
        }
        if reader.array::<32>()? != *topic.as_bytes() {
            return Err(rejected("it belongs to another network"));
        }
        let endpoint_id = EndpointId::from_bytes(&reader.array::<32>()?)
            .map_err(|_| rejected("endpoint id is not a valid public key"))?;
        let protocol_version = reader.u8()?;
        let free_bytes = reader.u64()?;
        let timestamp_ms = reader.u64()?;
        let seq = reader.u64()?;
        let count = reader.u8()? as usize;
        if count > ADDRS_MAX {
            return Err(rejected(format!(
                "{count} addresses is over the limit of {ADDRS_MAX}"
            )));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match reader.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>()?)),
                family => return Err(rejected(format!("address family {family} is not 4 or 6"))),
            };
            addrs.push(SocketAddr::new(ip, reader.u16()?));
        }
        if !reader.0.is_empty() {
            return Err(rejected("bytes follow the last address"));
        }
        let signature: &[u8; SIGNATURE_LEN] = signature.try_into().expect("split at SIGNATURE_LEN");
        endpoint_id
            .verify(body, &Signature::from_bytes(signature))
            .map_err(|_| {
                rejected(format!(
                    "signature of {} does not verify",
                    endpoint_id.fmt_short()
                ))
            })?;
        Ok(Self {
            endpoint_id,
            addrs,
            free_bytes,
            protocol_version,
            timestamp_ms,
            seq,
        })
    }
}

/// A cursor over bytes whose every read fails cleanly at the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.0.len() < N {
            return Err(rejected("bytes end early"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// A known peer as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's endpoint id.
    pub id: EndpointId,
    /// Its announced addresses.
    pub addrs: Vec<SocketAddr>,
    /// Its announced free quota, in bytes.
    pub free_bytes: u64,
    /// When it was last heard from (announcement or successful request), Unix ms.
    pub last_seen_ms: u64,
    /// Requests that failed in a row since then.
    pub failures: u32,
    /// Whether it counts as alive at the time asked.
    pub alive: bool,
}

impl PeerInfo {
    /// The address to dial it at.
    pub fn addr(&self) -> EndpointAddr {
        self.addrs
            .iter()
            .fold(EndpointAddr::new(self.id), |addr, ip| {
                addr.with_ip_addr(*ip)
            })
    }
}

#[derive(Debug, Clone)]
struct Entry {
    announcement: Announcement,
    signed: Vec<u8>,
    last_seen_ms: u64,
    failures: u32,
}

impl Entry {
    fn is_alive(&self, now_ms: u64, silence: Duration) -> bool {
        self.failures < PEER_FAILURES_MAX
            && now_ms.saturating_sub(self.last_seen_ms) <= silence.as_millis() as u64
    }
}

/// How often a node that knows `peers` peers announces itself: `base` ([`ANNOUNCE_INTERVAL`] by
/// default) up to `ANNOUNCEMENTS_PER_SEC × base` peers (600), then `peers /
/// ANNOUNCEMENTS_PER_SEC` seconds (8 min 20 s at 10 000 peers, 55 min at 65 536), so that a
/// node receives about [`ANNOUNCEMENTS_PER_SEC`] announcements a second however large the
/// network grows.
pub fn announce_interval_for(peers: usize, base: Duration) -> Duration {
    base.max(Duration::from_millis(
        peers as u64 * 1000 / ANNOUNCEMENTS_PER_SEC,
    ))
}

/// How long a peer may stay silent before it counts as dead, in a table of `peers` peers:
/// [`PEER_SILENCE_MAX`], or three announcement intervals when the network is large enough for
/// the interval to have grown.
pub fn silence_for(peers: usize) -> Duration {
    PEER_SILENCE_MAX.max(3 * announce_interval_for(peers, ANNOUNCE_INTERVAL))
}

/// The endpoint id a signed announcement names, read from its bytes without checking them
/// (what a node pages its own table by; readers verify every announcement they take).
pub(crate) fn announced_id(signed: &[u8]) -> Option<[u8; 32]> {
    signed.get(1 + 32..1 + 32 + 32)?.try_into().ok()
}

/// The peers of one network, with liveness, persistable as bytes.
#[derive(Debug, Clone)]
pub struct PeerTable {
    topic: TopicId,
    peers: BTreeMap<EndpointId, Entry>,
}

impl PeerTable {
    /// An empty table for the network with gossip topic `topic`.
    pub fn new(topic: TopicId) -> Self {
        Self {
            topic,
            peers: BTreeMap::new(),
        }
    }

    /// The network's topic.
    pub fn topic(&self) -> TopicId {
        self.topic
    }

    /// Takes a signed announcement received at `now_ms`. Refuses it if it does not verify, is
    /// dated more than 5 minutes ahead or 10 minutes back, or is not newer than the last one
    /// from the same peer (a replay). Returns the announcement; the peer is alive again.
    pub fn observe(&mut self, signed: &[u8], now_ms: u64) -> Result<Announcement> {
        let announcement = Announcement::verify(signed, &self.topic)?;
        let ts = announcement.timestamp_ms;
        if ts > now_ms.saturating_add(CLOCK_SKEW_MAX.as_millis() as u64) {
            return Err(rejected(format!(
                "timestamp {ts} is ahead of now ({now_ms}) by more than {CLOCK_SKEW_MAX:?}"
            )));
        }
        // A large network announces less often, so what a PEERS reply hands on may be older.
        let age_max = ANNOUNCEMENT_AGE_MAX.max(2 * silence_for(self.peers.len()));
        if ts.saturating_add(age_max.as_millis() as u64) < now_ms {
            return Err(rejected(format!(
                "timestamp {ts} is older than {age_max:?} (now {now_ms})"
            )));
        }
        let id = announcement.endpoint_id;
        if let Some(known) = self.peers.get(&id) {
            let old = (known.announcement.timestamp_ms, known.announcement.seq);
            if (ts, announcement.seq) <= old {
                return Err(rejected(format!(
                    "announcement of {} is not newer than the one held",
                    id.fmt_short()
                )));
            }
        } else if self.peers.len() >= PEER_TABLE_PEERS_MAX {
            // Make room by forgetting the peer heard from least recently.
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        self.peers.insert(
            id,
            Entry {
                announcement: announcement.clone(),
                signed: signed.to_vec(),
                last_seen_ms: now_ms,
                failures: 0,
            },
        );
        Ok(announcement)
    }

    /// Takes every announcement of `signed` that [`observe`](Self::observe) accepts at `now_ms`
    /// (for example a PEERS reply from [`ShardClient::peer_announcements`]) and returns the
    /// accepted ones; the others are dropped with a debug log, since one bad entry should not
    /// hide the rest.
    ///
    /// [`ShardClient::peer_announcements`]: crate::ShardClient::peer_announcements
    pub fn observe_all<B: AsRef<[u8]>>(
        &mut self,
        signed: impl IntoIterator<Item = B>,
        now_ms: u64,
    ) -> Vec<Announcement> {
        signed
            .into_iter()
            .filter_map(|bytes| match self.observe(bytes.as_ref(), now_ms) {
                Ok(announcement) => Some(announcement),
                Err(err) => {
                    debug!(%err, "announcement dropped");
                    None
                }
            })
            .collect()
    }

    /// The signed announcements of the peers alive at `now_ms`, most recently heard first (what
    /// a PEERS reply carries). A peer silent for [`PEER_SILENCE_MAX`] or failing is left out:
    /// handing it on would make every asker believe a dead node alive.
    pub fn signed_announcements(&self, now_ms: u64) -> Vec<Vec<u8>> {
        self.signed_except(None, now_ms)
    }

    fn signed_except(&self, skip: Option<EndpointId>, now_ms: u64) -> Vec<Vec<u8>> {
        let silence = silence_for(self.peers.len());
        let mut entries: Vec<(&EndpointId, &Entry)> = self
            .peers
            .iter()
            .filter(|(id, e)| Some(**id) != skip && e.is_alive(now_ms, silence))
            .collect();
        entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_seen_ms));
        entries.into_iter().map(|(_, e)| e.signed.clone()).collect()
    }

    /// Peers in the table, alive or not.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table holds no peer.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Notes a successful exchange with `id` at `now_ms`.
    pub fn record_success(&mut self, id: &EndpointId, now_ms: u64) {
        if let Some(entry) = self.peers.get_mut(id) {
            entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
            entry.failures = 0;
        }
    }

    /// Notes a failed request to `id` (timeout, refused connection, wrong bytes).
    pub fn record_failure(&mut self, id: &EndpointId) {
        if let Some(entry) = self.peers.get_mut(id) {
            entry.failures = entry.failures.saturating_add(1);
        }
    }

    /// Forgets peers not heard from since `before_ms`.
    pub fn forget_silent(&mut self, before_ms: u64) {
        self.peers
            .retain(|_, entry| entry.last_seen_ms >= before_ms);
    }

    /// Every known peer, alive or not, as of `now_ms`.
    pub fn peers(&self, now_ms: u64) -> Vec<PeerInfo> {
        let silence = silence_for(self.peers.len());
        self.peers
            .iter()
            .map(|(id, entry)| PeerInfo {
                id: *id,
                addrs: entry.announcement.addrs.clone(),
                free_bytes: entry.announcement.free_bytes,
                last_seen_ms: entry.last_seen_ms,
                failures: entry.failures,
                alive: entry.is_alive(now_ms, silence),
            })
            .collect()
    }

    /// The peers alive at `now_ms`.
    pub fn live_peers(&self, now_ms: u64) -> Vec<PeerInfo> {
        self.peers(now_ms).into_iter().filter(|p| p.alive).collect()
    }

    /// Live peers weighted by free quota, ready for [`place`](crate::place).
    pub fn placement_weights(&self, now_ms: u64) -> Vec<(EndpointId, u64)> {
        self.live_peers(now_ms)
            .into_iter()
            .map(|p| (p.id, p.free_bytes))
            .collect()
    }

    /// The table as bytes for the binary to write to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(TABLE_MAGIC);
        out.push(TABLE_VERSION);
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&(self.peers.len() as u32).to_be_bytes());
        for entry in self.peers.values() {
            out.extend_from_slice(&(entry.signed.len() as u16).to_be_bytes());
            out.extend_from_slice(&entry.signed);
            out.extend_from_slice(&entry.last_seen_ms.to_be_bytes());
            out.extend_from_slice(&entry.failures.to_be_bytes());
        }
        out
    }

    /// A table from [`to_bytes`](Self::to_bytes) output. Every announcement is verified again;
    /// a table of another network is refused.
    pub fn from_bytes(bytes: &[u8], topic: TopicId) -> Result<Self> {
        let table_error = |reason: String| Error::PeerTable { reason };
        let mut reader = Reader(bytes);
        if read(reader.array::<8>())? != *TABLE_MAGIC {
            return Err(table_error("magic bytes are not CAIRNPT".into()));
        }
        let version = read(reader.u8())?;
        if version != TABLE_VERSION {
            return Err(table_error(format!("version {version} is not supported")));
        }
        if read(reader.array::<32>())? != *topic.as_bytes() {
            return Err(table_error("the table belongs to another network".into()));
        }
        let count = read(reader.u32())? as usize;
        if count > PEER_TABLE_PEERS_MAX {
            return Err(table_error(format!(
                "{count} peers is over the limit of {PEER_TABLE_PEERS_MAX}"
            )));
        }
        let mut table = Self::new(topic);
        // A last-seen time in the future (a clock that went back, or a table edited by hand)
        // would keep a silent peer "live" until then: no time read from disk is later than now.
        let now_ms = unix_ms(SystemTime::now());
        for _ in 0..count {
            let len = read(reader.u16())? as usize;
            if len > ANNOUNCEMENT_LEN_MAX || reader.0.len() < len {
                return Err(table_error(format!("announcement length {len} is invalid")));
            }
            let (signed, rest) = reader.0.split_at(len);
            reader.0 = rest;
            let announcement =
                Announcement::verify(signed, &topic).map_err(|err| table_error(err.to_string()))?;
            let last_seen_ms = read(reader.u64())?.min(now_ms);
            let failures = read(reader.u32())?;
            table.peers.insert(
                announcement.endpoint_id,
                Entry {
                    announcement,
                    signed: signed.to_vec(),
                    last_seen_ms,
                    failures,
                },
            );
        }
        if !reader.0.is_empty() {
            return Err(table_error("bytes follow the last peer".into()));
        }
        Ok(table)
    }
}

/// Maps a short read of peer table bytes to [`Error::PeerTable`].
fn read<T>(value: Result<T>) -> Result<T> {
    value.map_err(|_| Error::PeerTable {
        reason: "bytes end early".into(),
    })
}

/// Settings of [`Membership`].
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Name of the network; its topic is [`topic_id`] of it.
    pub network: String,
    /// Peers to join through, with their addresses.
    pub bootstrap: Vec<EndpointAddr>,
    /// Time between announcements ([`ANNOUNCE_INTERVAL`] by default).
    pub announce_interval: Duration,
}

impl MembershipConfig {
    /// Default settings for `network` joined through `bootstrap`.
    pub fn new(network: impl Into<String>, bootstrap: Vec<EndpointAddr>) -> Self {
        Self {
            network: network.into(),
            bootstrap,
            announce_interval: ANNOUNCE_INTERVAL,
        }
    }
}

/// This node's part in the membership of its network: announces it and keeps the peer table.
///
/// Dropping it stops announcing and listening.
#[derive(Debug)]
pub struct Membership {
    topic: TopicId,
    me: EndpointId,
    table: Arc<Mutex<PeerTable>>,
    /// This node's latest signed announcement; there is one from the moment `join` returns.
    own: Arc<Mutex<Vec<u8>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update of the table or the own announcement is a single map operation or
    // assignment, so a poisoned value is consistent.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Membership {
    /// Joins the network's topic on `gossip` (which must be registered on the endpoint's router)
    /// starting from `table` (empty, or loaded from disk), and starts announcing with the free
    /// quota `free_bytes` reports. Returns without waiting for a neighbour.
    pub async fn join(
        bound: &BoundEndpoint,
        gossip: &Gossip,
        config: MembershipConfig,
        table: PeerTable,
        free_bytes: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<Self> {
        let topic = topic_id(&config.network);
        if table.topic() != topic {
            return Err(Error::PeerTable {
                reason: format!(
                    "the table belongs to another network than {:?}",
                    config.network
                ),
            });
        }
        let me = bound.endpoint.id();
        let mut bootstrap = Vec::new();
        for addr in &config.bootstrap {
            bound.lookup.add_endpoint_info(addr.clone());
            bootstrap.push(addr.id);
        }
        for peer in table.peers(unix_ms(SystemTime::now())) {
            bound.lookup.add_endpoint_info(peer.addr());
            bootstrap.push(peer.id);
        }
        bootstrap.retain(|id| *id != me);
        bootstrap.sort();
        bootstrap.dedup();
        let (sender, receiver) = subscribe(gossip, topic, bootstrap).await?;
        let sender = Arc::new(Mutex::new(sender));
        let table = Arc::new(Mutex::new(table));
        // The first announcement exists before join returns, so that PEERS can hand it out at
        // once; the announce task broadcasts it on its first tick.
        let own = Arc::new(Mutex::new(make_announcement(
            &bound.endpoint,
            &topic,
            FIRST_SEQ,
            &free_bytes,
        )));

        // A new neighbour gets a fresh announcement at once: the one made at join was broadcast
        // before anybody was connected, and waiting for the next tick would leave this node
        // unknown to the network for a whole interval.
        let neighbour_up = Arc::new(Notify::new());
        let listen = tokio::spawn(listen(
            gossip.clone(),
            topic,
            bound.clone(),
            table.clone(),
            sender.clone(),
            receiver,
            neighbour_up.clone(),
        ));
        let announce = tokio::spawn(announce(
            (bound.endpoint.clone(), topic),
            table.clone(),
            sender,
            own.clone(),
            config.announce_interval,
            free_bytes,
            neighbour_up,
        ));
        Ok(Self {
            topic,
            me,
            table,
            own,
            tasks: vec![listen, announce],
        })
    }

    /// The signed announcements this node knows: its own latest first, then those of its live
    /// peers, most recently heard first. What a [`ShardServer`](crate::ShardServer) answers
    /// PEERS with, see [`ShardServer::with_peer_source`](crate::ShardServer::with_peer_source).
    pub fn signed_announcements(&self) -> Vec<Vec<u8>> {
        let mut out = vec![lock(&self.own).clone()];
        out.extend(lock(&self.table).signed_except(Some(self.me), unix_ms(SystemTime::now())));
        out
    }

    /// The network's gossip topic.
    pub fn topic(&self) -> TopicId {
        self.topic
    }

    /// Every known peer, alive or not.
    pub fn peers(&self) -> Vec<PeerInfo> {
        lock(&self.table).peers(unix_ms(SystemTime::now()))
    }

    /// The peers alive now.
    pub fn live_peers(&self) -> Vec<PeerInfo> {
        lock(&self.table).live_peers(unix_ms(SystemTime::now()))
    }

    /// Notes a failed request to `id`; enough of them in a row mark it dead.
    pub fn record_failure(&self, id: &EndpointId) {
        lock(&self.table).record_failure(id);
    }

    /// Notes a successful request to `id`.
    pub fn record_success(&self, id: &EndpointId) {
        lock(&self.table).record_success(id, unix_ms(SystemTime::now()));
    }

    /// Takes the signed announcements `signed` (a PEERS_AFTER walk of a bootstrap node, so
    /// that a node joining a large network knows it at once instead of after an announcement
    /// interval) as the table takes gossip; returns how many it accepted.
    pub fn learn<B: AsRef<[u8]>>(&self, signed: impl IntoIterator<Item = B>) -> usize {
        let me = *self.me.as_bytes();
        let others = signed
            .into_iter()
            .filter(|b| announced_id(b.as_ref()) != Some(me));
        lock(&self.table)
            .observe_all(others, unix_ms(SystemTime::now()))
            .len()
    }

    /// The peer table as bytes, for the binary to persist.
    pub fn table_bytes(&self) -> Vec<u8> {
        lock(&self.table).to_bytes()
    }
}

async fn subscribe(
    gossip: &Gossip,
    topic: TopicId,
    bootstrap: Vec<EndpointId>,
) -> Result<(GossipSender, GossipReceiver)> {
    let joined = gossip
        .subscribe(topic, bootstrap)
        .await
        .map_err(|err| Error::Gossip {
            topic: topic.fmt_short(),
            reason: err.to_string(),
        })?;
    Ok(joined.split())
}

/// Feeds received announcements into the table and the address book; rejoins when the
/// subscription ends (for example after lagging), until the task is aborted.
async fn listen(
    gossip: Gossip,
    topic: TopicId,
    bound: BoundEndpoint,
    table: Arc<Mutex<PeerTable>>,
    sender: Arc<Mutex<GossipSender>>,
    receiver: GossipReceiver,
    neighbour_up: Arc<Notify>,
) {
    let me = bound.endpoint.id();
    // None once a receiver has ended and no new one could be had: an ended stream must not be
    // polled again.
    let mut receiver = Some(receiver);
    loop {
        while let Some(event) = match receiver.as_mut() {
            Some(r) => r.next().await,
            None => None,
        } {
            let Ok(event) = event else { break };
            match event {
                Event::Received(message) => {
                    let now = unix_ms(SystemTime::now());
                    let observed = lock(&table).observe(&message.content, now);
                    match observed {
                        Ok(announcement) if announcement.endpoint_id() != me => {
                            let addr =
                                announcement.addrs().iter().fold(
                                    EndpointAddr::new(announcement.endpoint_id()),
                                    |a, ip| a.with_ip_addr(*ip),
                                );
                            bound.lookup.add_endpoint_info(addr);
                        }
                        Ok(_) => {}
                        Err(err) => {
                            debug!(%err, from = %message.delivered_from.fmt_short(), "announcement dropped")
                        }
                    }
                }
                Event::NeighborUp(id) => {
                    lock(&table).record_success(&id, unix_ms(SystemTime::now()));
                    neighbour_up.notify_one();
                }
                Event::NeighborDown(_) | Event::Lagged => {}
            }
        }
        receiver = None;
        if bound.endpoint.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        let known: Vec<EndpointId> = lock(&table)
            .peers(0)
            .into_iter()
            .map(|p| p.id)
            .filter(|id| *id != me)
            .collect();
        match subscribe(&gossip, topic, known).await {
            Ok((new_sender, new_receiver)) => {
                *sender.lock().unwrap_or_else(|p| p.into_inner()) = new_sender;
                receiver = Some(new_receiver);
            }
            Err(err) => debug!(%err, "rejoining the membership topic failed"),
        }
    }
}

/// Appends a socket address as announcements and holder records carry it: `u8` family (4 or 6),
/// the 4 or 16 address bytes, `u16` big-endian port.
pub(crate) fn put_socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Sequence number of the announcement made at join.
const FIRST_SEQ: u64 = 1;

/// This node's signed announcement with sequence number `seq`, dated now.
fn make_announcement(
    endpoint: &iroh::Endpoint,
    topic: &TopicId,
    seq: u64,
    free_bytes: &impl Fn() -> u64,
) -> Vec<u8> {
    let addrs: Vec<SocketAddr> = endpoint.addr().ip_addrs().copied().collect();
    Announcement::new(
        endpoint.id(),
        &addrs,
        free_bytes(),
        unix_ms(SystemTime::now()),
        seq,
    )
    .sign(endpoint.secret_key(), topic)
}

/// Broadcasts the announcement made at join at once, then a fresh one every `interval` and
/// whenever a neighbour comes up (kept in `own` for PEERS), until the task is aborted.
async fn announce(
    (endpoint, topic): (iroh::Endpoint, TopicId),
    table: Arc<Mutex<PeerTable>>,
    sender: Arc<Mutex<GossipSender>>,
    own: Arc<Mutex<Vec<u8>>>,
    interval: Duration,
    free_bytes: impl Fn() -> u64 + Send + Sync + 'static,
    neighbour_up: Arc<Notify>,
) {
    let mut seq = FIRST_SEQ;
    let mut first = true;
    loop {
        // The interval grows with the network (see `announce_interval_for`); the first
        // announcement goes at once.
        let known = lock(&table).len();
        let every = announce_interval_for(known, interval);
        if !first {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = neighbour_up.notified() => {}
            }
        }
        first = false;
        let interval = every;
        let signed = if seq == FIRST_SEQ {
            seq += 1;
            lock(&own).clone()
        } else {
            let signed = make_announcement(&endpoint, &topic, seq, &free_bytes);
            seq += 1;
            *lock(&own) = signed.clone();
            signed
        };
        let sender = sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Gossip's queue is bounded; a slow broadcast must not delay the next tick forever.
        match tokio::time::timeout(interval, sender.broadcast(Bytes::from(signed))).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(%err, "announcement broadcast failed"),
            Err(_) => debug!(?interval, "announcement broadcast timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &SecretKey, topic: &TopicId, free: u64, ts: u64, seq: u64) -> Vec<u8> {
        let addrs = [
            "127.0.0.1:4000".parse().unwrap(),
            "[::1]:4001".parse().unwrap(),
        ];
        Announcement::new(key.public(), &addrs, free, ts, seq).sign(key, topic)
    }

    #[test]
    fn announcements_verify_and_reject_tampering() {
        let key = SecretKey::from_bytes(&[7; 32]);
        let topic = topic_id("test");
        let bytes = signed(&key, &topic, 1000, 5, 1);
        let back = Announcement::verify(&bytes, &topic).unwrap();
        assert_eq!(back.endpoint_id(), key.public());
        assert_eq!(back.free_bytes(), 1000);
        assert_eq!(back.addrs().len(), 2);
        assert_eq!(back.protocol_version(), PROTOCOL_VERSION);

        let mut tampered = bytes.clone();
        tampered[70] ^= 1; // inside the free quota
        assert!(
            matches!(Announcement::verify(&tampered, &topic), Err(Error::Announcement { reason }) if reason.contains("signature"))
        );
        assert!(
            matches!(Announcement::verify(&bytes, &topic_id("other")), Err(Error::Announcement { reason }) if reason.contains("network"))
        );
        let oversized = vec![0u8; ANNOUNCEMENT_LEN_MAX + 1];
        assert!(
            matches!(Announcement::verify(&oversized, &topic), Err(Error::Announcement { reason }) if reason.contains("over the limit"))
        );
        assert!(Announcement::verify(&bytes[..40], &topic).is_err());
    }

    #[test]
    fn table_refuses_stale_replayed_and_future_announcements() {
        let key = SecretKey::from_bytes(&[8; 32]);
        let topic = topic_id("test");
        let mut table = PeerTable::new(topic);
        let now = 1_000_000_000;
        table
            .observe(&signed(&key, &topic, 1, now, 2), now)
            .unwrap();
        let replay = table.observe(&signed(&key, &topic, 1, now, 2), now);
        assert!(
            matches!(replay, Err(Error::Announcement { reason }) if reason.contains("not newer"))
        );
        let stale = table.observe(&signed(&key, &topic, 1, now - 3_600_000, 9), now);
        assert!(matches!(stale, Err(Error::Announcement { reason }) if reason.contains("older")));
        let future = table.observe(&signed(&key, &topic, 1, now + 3_600_000, 9), now);
        assert!(matches!(future, Err(Error::Announcement { reason }) if reason.contains("ahead")));
        table
            .observe(&signed(&key, &topic, 2, now, 3), now)
            .unwrap();
        assert_eq!(table.live_peers(now)[0].free_bytes, 2);
    }

    #[test]
    fn liveness_follows_failures_and_silence() {
        let key = SecretKey::from_bytes(&[9; 32]);
        let topic = topic_id("test");
        let mut table = PeerTable::new(topic);
        let now = 1_000_000_000;
        table
            .observe(&signed(&key, &topic, 1, now, 1), now)
            .unwrap();
        assert_eq!(table.live_peers(now).len(), 1);
        let silent = now + PEER_SILENCE_MAX.as_millis() as u64 + 1;
        assert!(table.live_peers(silent).is_empty(), "silent too long");
        for _ in 0..PEER_FAILURES_MAX {
            table.record_failure(&key.public());
        }
        assert!(table.live_peers(now).is_empty(), "failed too often");
        assert!(!table.peers(now)[0].alive);
        assert_eq!(table.placement_weights(now), vec![]);
        table.record_success(&key.public(), now);
        assert_eq!(table.placement_weights(now), vec![(key.public(), 1)]);
    }

    #[test]
    fn silent_and_failing_peers_are_not_handed_on() {
        let topic = topic_id("test");
        let mut table = PeerTable::new(topic);
        let now = 1_000_000_000;
        let keys: Vec<SecretKey> = (1..=3u8).map(|i| SecretKey::from_bytes(&[i; 32])).collect();
        for key in &keys {
            table.observe(&signed(key, &topic, 1, now, 1), now).unwrap();
        }
        assert_eq!(table.signed_announcements(now).len(), 3);
        // Peer 1 keeps announcing, peer 2 fails requests, peer 3 goes silent (killed).
        let later = now + PEER_SILENCE_MAX.as_millis() as u64 + 1;
        let fresh = signed(&keys[0], &topic, 1, later, 2);
        table.observe(&fresh, later).unwrap();
        table
            .observe(&signed(&keys[1], &topic, 1, later, 2), later)
            .unwrap();
        for _ in 0..PEER_FAILURES_MAX {
            table.record_failure(&keys[1].public());
        }
        assert_eq!(table.signed_announcements(later), vec![fresh]);
        assert_eq!(table.live_peers(later).len(), 1);
        assert_eq!(
            table.peers(later).len(),
            3,
            "still known, to be asked again"
        );
    }

    #[test]
    fn peer_table_round_trips_through_bytes() {
        let topic = topic_id("test");
        let mut table = PeerTable::new(topic);
        let now = 1_000_000_000;
        for i in 1..=3u8 {
            let key = SecretKey::from_bytes(&[i; 32]);
            table
                .observe(&signed(&key, &topic, u64::from(i) * 10, now, 1), now)
                .unwrap();
        }
        table.record_failure(&SecretKey::from_bytes(&[2; 32]).public());
        let bytes = table.to_bytes();
        let back = PeerTable::from_bytes(&bytes, topic).unwrap();
        assert_eq!(back.peers(now), table.peers(now));
        assert_eq!(back.to_bytes(), bytes);

        assert!(
            matches!(PeerTable::from_bytes(&bytes, topic_id("other")), Err(Error::PeerTable { reason }) if reason.contains("another network"))
        );
        assert!(matches!(
            PeerTable::from_bytes(&bytes[..bytes.len() - 1], topic),
            Err(Error::PeerTable { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[60] ^= 1; // inside the first announcement
        assert!(matches!(
            PeerTable::from_bytes(&flipped, topic),
            Err(Error::PeerTable { .. })
        ));
    }

    #[test]
    fn a_last_seen_time_from_the_future_is_not_kept() {
        let topic = topic_id("test");
        let key = SecretKey::from_bytes(&[4; 32]);
        let now = unix_ms(SystemTime::now());
        let mut table = PeerTable::new(topic);
        table
            .observe(&signed(&key, &topic, 1, now, 1), now)
            .unwrap();
        table.peers.get_mut(&key.public()).unwrap().last_seen_ms = u64::MAX;
        let back = PeerTable::from_bytes(&table.to_bytes(), topic).unwrap();
        let after_load = unix_ms(SystemTime::now());
        // Read back, the peer was last seen no later than the load: silent past the limit, it
        // is not live, where the stored u64::MAX would have kept it live for good.
        let silent = after_load + PEER_SILENCE_MAX.as_millis() as u64 + 1;
        assert!(back.live_peers(silent).is_empty());
        assert_eq!(back.live_peers(now).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_announcement_verify(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let topic = topic_id("test");
            let _ = Announcement::verify(&bytes, &topic);
            // Behind a valid version and topic, to reach the fields.
            let mut framed = vec![ANNOUNCEMENT_VERSION];
            framed.extend_from_slice(topic.as_bytes());
            framed.extend_from_slice(&bytes);
            let _ = Announcement::verify(&framed, &topic);
        }
    }

    #[test]
    fn announcements_slow_down_as_the_network_grows_so_each_node_receives_a_bounded_rate() {
        let base = ANNOUNCE_INTERVAL;
        // Small networks: the base interval, the base silence, unchanged behaviour.
        for n in [0, 1, 5, 100, 600] {
            assert_eq!(announce_interval_for(n, base), base, "{n}");
            assert_eq!(silence_for(n), PEER_SILENCE_MAX, "{n}");
        }
        // Large ones: n peers announcing every interval send at most ANNOUNCEMENTS_PER_SEC a
        // second in all (what every node receives), and a peer is dead after 3 intervals.
        for n in [601, 1_000, 10_000, PEER_TABLE_PEERS_MAX] {
            let every = announce_interval_for(n, base);
            let per_sec = n as f64 / every.as_secs_f64();
            assert!(
                per_sec <= ANNOUNCEMENTS_PER_SEC as f64 + 1e-9,
                "{n}: {per_sec}/s"
            );
            assert!(
                per_sec >= ANNOUNCEMENTS_PER_SEC as f64 * 0.99,
                "{n}: {per_sec}/s"
            );
            assert_eq!(silence_for(n), 3 * every, "{n}");
        }
        assert_eq!(
            announce_interval_for(10_000, base),
            Duration::from_secs(500)
        );
        assert!(announce_interval_for(PEER_TABLE_PEERS_MAX, base) < Duration::from_secs(3600));
    }

    #[test]
    fn observe_all_keeps_the_good_and_drops_the_bad() {
        let topic = topic_id("test");
        let now = 1_000_000_000;
        let good: Vec<Vec<u8>> = (1..=3u8)
            .map(|i| signed(&SecretKey::from_bytes(&[i; 32]), &topic, 5, now, 1))
            .collect();
        let mut batch = good.clone();
        batch.push(signed(
            &SecretKey::from_bytes(&[4; 32]),
            &topic_id("other"),
            5,
            now,
            1,
        ));
        batch.push(vec![1, 2, 3]);
        let mut table = PeerTable::new(topic);
        assert_eq!(table.observe_all(&batch, now).len(), 3);
        assert_eq!(table.live_peers(now).len(), 3);
        let mut held = table.signed_announcements(now);
        held.sort();
        let mut expected = good;
        expected.sort();
        assert_eq!(held, expected);
    }
}
