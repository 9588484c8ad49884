//! Leases on the network: a publisher keeps its artifacts alive on the nodes that hold them by
//! signing leases ([`Lease`]) and sending them to every holder (PUT_LEASE), before the lease
//! they hold ends. Once it has ended (and the nodes' grace after it), the nodes let the
//! artifact go (cairn-store's gc): data nobody renews does not fill disks forever.
//!
//! - [`LeaseFile`] (`leases.json` in a data directory) lists what a publisher keeps alive:
//!   `cairn pin --peer` adds an artifact, `cairn unpin --peer` removes it.
//! - A `cairn node` running on that data directory renews them ([`RenewConfig`]): each care
//!   round, every pin whose lease ends within half its term gets a new lease until the earlier
//!   of the pin's end and now + the term, sent to every holder the artifact's holder records
//!   name.
//! - [`LeaseClient`] is the command line's side: the same search for holders from a bootstrap
//!   node, without running a node.
//!
//! Where an artifact is, a node that does not hold it learns as readers do: it asks live peers
//! for the artifact's holder records (GET_RECORD, GET_REPAIR_RECORD). It trusts the records the
//! lease's signer signed and the repair records chained from them (see the shard protocol's
//! *Repair records*), and counts every peer that answered with a record as a holder too (a node
//! keeps records only beside the manifest). A wrong target costs one refused PUT_LEASE: every
//! node checks the lease against its own copy of the manifest.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_artifact::{Cid, Manifest};
use cairn_store::{Store, now_ms};
use cairn_swarm::{
    BoundEndpoint, EndpointAddr, EndpointId, LEASE_AHEAD_MAX, Lease, SecretKey, ShardClient,
    ShardConfig, SignedRecord, endpoint_offline, endpoint_online, generate_secret_key,
    secret_key_from_bytes, topic_id,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::{Error, PeerAddr};

/// The file in a data directory that lists the artifacts its publisher keeps alive.
pub const LEASES_FILE: &str = "leases.json";
/// Longest lease signed at once: a pin is renewed in terms of at most this.
pub const LEASE_TERM_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Peers asked for an artifact's holder records when looking for its holders.
pub const LEASE_ASK_MAX: usize = 64;
/// Most holders one lease is sent to.
pub const LEASE_TARGETS_MAX: usize = 256;
/// Time allowed to ask peers for records, and to send a lease to every holder.
pub const LEASE_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `leases.json` read.
const LEASE_FILE_MAX: u64 = 64 << 20;

const _: () = assert!(LEASE_TERM_MAX.as_secs() <= LEASE_AHEAD_MAX.as_secs());

/// One artifact a publisher keeps alive (an entry of [`LeaseFile`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePin {
    /// The artifact's manifest CID.
    pub cid: String,
    /// Unix ms when the pin ends: no lease goes past it. None: until unpinned.
    pub until_ms: Option<u64>,
    /// Length of each lease signed, in ms (at most [`LEASE_TERM_MAX`]).
    pub term_ms: u64,
    /// End of the latest lease sent for it from the command line (Unix ms), so that a node
    /// starting later knows when the next one is due.
    #[serde(default)]
    pub lease_until_ms: u64,
}

/// `leases.json`: the artifacts a publisher keeps alive on the network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseFile {
    /// One entry per artifact.
    pub pins: Vec<LeasePin>,
}

impl LeaseFile {
    /// Reads the file at `path`; a missing file is an empty list.
    pub fn read(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::Node(format!("reading {}: {e}", path.display()))),
        };
        let mut text = String::new();
        file.take(LEASE_FILE_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::Node(format!("reading {}: {e}", path.display())))?;
        if text.len() as u64 > LEASE_FILE_MAX {
            return Err(Error::Node(format!(
                "{} is over {LEASE_FILE_MAX} bytes",
                path.display()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::Node(format!("{} is not a lease list: {e}", path.display())))
    }

    /// Writes the list to `path`, owner-only, replacing the file at once.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Node(format!("encoding {}: {e}", path.display())))?;
        cairn_store::write_private_replace(path, text.as_bytes())
            .map_err(|e| Error::Node(format!("writing {}: {e}", path.display())))
    }

    /// Adds `pin`, replacing an entry of the same artifact.
    pub fn upsert(&mut self, pin: LeasePin) {
        self.pins.retain(|p| p.cid != pin.cid);
        self.pins.push(pin);
    }

    /// Removes the entry of artifact `cid`, returning it.
    pub fn remove(&mut self, cid: &str) -> Option<LeasePin> {
        let at = self.pins.iter().position(|p| p.cid == cid)?;
        Some(self.pins.remove(at))
    }
}

/// A lease of `artifact` until `until_ms`, signed now by `key`.
pub fn sign_lease(key: &SecretKey, artifact: Cid, until_ms: u64) -> Result<Vec<u8>, Error> {
    Ok(Lease {
        signer: key.public(),
        artifact,
        until_ms,
        issued_ms: now_ms(),
    }
    .try_sign(key)?)
}

/// Where a lease went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Holders it was sent to.
    pub holders: usize,
    /// Holders that accepted it.
    pub accepted: usize,
    /// Why the others did not, one line each.
    pub refusals: Vec<String>,
}

/// The holders of `artifact` that records found through `peers` name (see the module docs),
/// with addresses: those `peers` gives first, else the recorded ones. At most
/// [`LEASE_ASK_MAX`] peers are asked and [`LEASE_TARGETS_MAX`] holders returned; `skip` (this
/// node) is left out.
pub async fn find_holders(
    client: &ShardClient,
    peers: &[EndpointAddr],
    artifact: &Cid,
    signer: &EndpointId,
    skip: Option<EndpointId>,
) -> Vec<EndpointAddr> {
    // The artifact's record nodes first (the `records` module), then the peers further down
    // its ranking.
    let others: Vec<EndpointAddr> = peers
        .iter()
        .filter(|a| Some(a.id) != skip)
        .cloned()
        .collect();
    let ranked = crate::records::record_nodes(artifact, &others);
    let asked: Vec<&EndpointAddr> = ranked.iter().take(LEASE_ASK_MAX).collect();
    let answers = tokio::time::timeout(
        LEASE_STEP_TIMEOUT,
        join_all(asked.iter().map(|a| async move {
            let primary = client.get_record(a, artifact).await;
            let repair = match &primary {
                Ok(Some(_)) => client.get_repair_record(a, artifact).await.ok().flatten(),
                _ => None,
            };
            (a.id, primary, repair)
        })),
    )
    .await
    .unwrap_or_default();
    let mut answered: Vec<EndpointId> = Vec::new();
    let mut primaries: Vec<SignedRecord> = Vec::new();
    let mut repairs: Vec<SignedRecord> = Vec::new();
    for (id, primary, repair) in answers {
        match primary {
            Ok(Some(r)) => {
                answered.push(id);
                primaries.push(r);
            }
            Ok(None) => {}
            Err(e) => debug!("leases: records of {artifact} from {}: {e}", id.fmt_short()),
        }
        repairs.extend(repair);
    }
    // Trust: the signer's own records, then repair records signed by a node they name.
    let mut trusted: Vec<SignedRecord> = primaries
        .into_iter()
        .filter(|r| r.publisher == *signer)
        .collect();
    let mut named: HashSet<EndpointId> = trusted
        .iter()
        .flat_map(|r| r.record.nodes.iter().map(|(id, _)| *id))
        .collect();
    while let Some(at) = repairs.iter().position(|r| named.contains(&r.publisher)) {
        let r = repairs.swap_remove(at);
        named.extend(r.record.nodes.iter().map(|(id, _)| *id));
        trusted.push(r);
    }
    let mut recorded: HashMap<EndpointId, Vec<std::net::SocketAddr>> = HashMap::new();
    for r in &trusted {
        for (id, addrs) in &r.record.nodes {
            recorded
                .entry(*id)
                .or_default()
                .extend(addrs.iter().copied());
        }
    }
    let mut ids: Vec<EndpointId> = answered;
    ids.extend(recorded.keys().copied());
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter(|id| Some(*id) != skip)
        .take(LEASE_TARGETS_MAX)
        .map(|id| match peers.iter().find(|p| p.id == id) {
            Some(live) => live.clone(),
            None => PeerAddr {
                id,
                addrs: recorded.get(&id).cloned().unwrap_or_default(),
            }
            .endpoint_addr(),
        })
        .collect()
}

/// Sends the signed lease to every one of `holders` at once (bounded by the client's
/// timeouts and [`LEASE_STEP_TIMEOUT`]).
pub async fn send_lease(client: &ShardClient, holders: &[EndpointAddr], signed: &[u8]) -> Spread {
    let results = tokio::time::timeout(
        LEASE_STEP_TIMEOUT,
        join_all(holders.iter().map(|h| client.put_lease(h, signed))),
    )
    .await;
    let mut spread = Spread {
        holders: holders.len(),
        ..Spread::default()
    };
    match results {
        Ok(results) => {
            for (h, r) in holders.iter().zip(results) {
                match r {
                    Ok(()) => spread.accepted += 1,
                    Err(e) => spread.refusals.push(format!("{}: {e}", h.id.fmt_short())),
                }
            }
        }
        Err(_) => spread.refusals.push(format!(
            "not all holders answered within {LEASE_STEP_TIMEOUT:?}"
        )),
    }
    spread
}

/// How a node renews its publisher's leases (`cairn node` on a publisher's data directory).
#[derive(Clone, Debug)]
pub struct RenewConfig {
    /// The lease list (`leases.json`); read every round, never written by the node.
    pub file: PathBuf,
    /// The publisher's secret key (32 bytes), which signs the leases.
    pub publisher_key: [u8; 32],
}

/// Renews the leases of a [`LeaseFile`] from a node's care rounds.
pub(crate) struct Renewer {
    file: PathBuf,
    key: SecretKey,
    /// The end of the latest lease this node sent per artifact.
    sent: Mutex<HashMap<Cid, u64>>,
}

impl Renewer {
    pub(crate) fn new(config: &RenewConfig) -> Result<Self, Error> {
        Ok(Self {
            file: config.file.clone(),
            key: secret_key_from_bytes(&config.publisher_key)?,
            sent: Mutex::new(HashMap::new()),
        })
    }

    /// One pass over the list: every pin whose lease ends within half its term gets a new one,
    /// sent to every holder found through `peers` and kept in `store` if it holds the
    /// artifact. Returns how many artifacts got a new lease.
    pub(crate) async fn round(
        &self,
        store: &Arc<Store>,
        client: &ShardClient,
        me: EndpointId,
        peers: &[EndpointAddr],
    ) -> usize {
        let file = match LeaseFile::read(&self.file) {
            Ok(f) => f,
            Err(e) => {
                warn!("leases: {e}");
                return 0;
            }
        };
        let mut renewed = 0;
        for pin in &file.pins {
            let Ok(artifact) = Cid::try_from(pin.cid.as_str()) else {
                warn!(
                    "leases: {} in {} is not a CID",
                    pin.cid,
                    self.file.display()
                );
                continue;
            };
            let now = now_ms();
            let term = pin.term_ms.clamp(1, LEASE_TERM_MAX.as_millis() as u64);
            let end = pin.until_ms.unwrap_or(u64::MAX);
            let sent = self
                .sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&artifact)
                .copied()
                .unwrap_or(0);
            let held = store.lease_until(&artifact).ok().flatten().unwrap_or(0);
            let current = pin.lease_until_ms.max(sent).max(held);
            if current >= end || current > now.saturating_add(term / 2) {
                continue;
            }
            let until = end.min(now.saturating_add(term));
            if until <= current {
                continue;
            }
            let signed = match sign_lease(&self.key, artifact, until) {
                Ok(s) => s,
                Err(e) => {
                    warn!("leases: signing a lease of {artifact}: {e}");
                    continue;
                }
            };
            let kept_here = self.keep_here(store, &artifact, until, &signed);
            let holders =
                find_holders(client, peers, &artifact, &self.key.public(), Some(me)).await;
            let spread = send_lease(client, &holders, &signed).await;
            for why in &spread.refusals {
                debug!("leases: lease of {artifact} refused by {why}");
            }
            if spread.accepted == 0 && !kept_here {
                warn!(
                    "leases: no holder of {artifact} took its renewed lease ({} found); \
                     trying again next round",
                    holders.len()
                );
                continue;
            }
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(artifact, until);
            renewed += 1;
            info!(
                "leases: renewed the lease of {artifact} until {until} ms on {} of {} holders{}",
                spread.accepted,
                spread.holders,
                if kept_here { " and here" } else { "" }
            );
        }
        if renewed > 0 {
            let _ = store.count("leases_renewed", renewed as u64);
        }
        renewed
    }

    /// Keeps the lease in this node's own store when it holds the artifact and the manifest
    /// allows the key, as its server would for a peer; returns whether it did.
    fn keep_here(&self, store: &Store, artifact: &Cid, until: u64, signed: &[u8]) -> bool {
        let Ok(bytes) = store.get_manifest(artifact) else {
            return false;
        };
        let allowed = Manifest::decode(&bytes, &artifact.to_string())
            .is_ok_and(|m| m.record_signers().contains(self.key.public().as_bytes()));
        allowed && store.put_lease(artifact, until, signed).is_ok()
    }
}

/// The command line's view of leases on a network: an endpoint, a client and the live peers a
/// bootstrap node lists.
pub struct LeaseClient {
    bound: BoundEndpoint,
    client: ShardClient,
    peers: Vec<EndpointAddr>,
}

impl LeaseClient {
    /// Binds an endpoint (offline when every bootstrap address is a loopback one) and learns
    /// the live peers from the first bootstrap node that answers.
    pub async fn connect(network: &str, bootstrap: &[PeerAddr]) -> Result<Self, Error> {
        let offline = !bootstrap.is_empty()
            && bootstrap
                .iter()
                .all(|p| p.addrs.iter().all(|a| a.ip().is_loopback()));
        let key = generate_secret_key();
        let bound = if offline {
            endpoint_offline(key, "127.0.0.1:0".parse().expect("literal")).await?
        } else {
            endpoint_online(key).await?
        };
        let client = ShardClient::new(bound.endpoint.clone(), ShardConfig::default());
        let topic = topic_id(network);
        let mut reasons = Vec::new();
        let mut peers: Vec<EndpointAddr> = Vec::new();
        for b in bootstrap {
            bound.lookup.add_endpoint_info(b.endpoint_addr());
            match client.all_peers(&b.endpoint_addr(), &topic).await {
                Ok(anns) if !anns.is_empty() => {
                    for a in anns {
                        let addr = PeerAddr {
                            id: a.endpoint_id(),
                            addrs: a.addrs().to_vec(),
                        }
                        .endpoint_addr();
                        bound.lookup.add_endpoint_info(addr.clone());
                        peers.push(addr);
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
        peers.sort_by_key(|p| p.id);
        peers.dedup_by_key(|p| p.id);
        Ok(Self {
            bound,
            client,
            peers,
        })
    }

    /// The holders of `artifact` named by records `signer` signed (see [`find_holders`]).
    pub async fn holders(&self, artifact: &Cid, signer: &EndpointId) -> Vec<EndpointAddr> {
        let found = find_holders(&self.client, &self.peers, artifact, signer, None).await;
        for h in &found {
            self.bound.lookup.add_endpoint_info(h.clone());
        }
        found
    }

    /// Sends the signed lease to every one of `holders`.
    pub async fn send(&self, holders: &[EndpointAddr], signed: &[u8]) -> Spread {
        send_lease(&self.client, holders, signed).await
    }

    /// The latest end of a lease of `artifact` that one of `holders` keeps (Unix ms), if any
    /// keeps one; leases that do not verify or are not `signer`'s are ignored.
    pub async fn current(
        &self,
        holders: &[EndpointAddr],
        artifact: &Cid,
        signer: &EndpointId,
    ) -> Option<u64> {
        let answers = tokio::time::timeout(
            LEASE_STEP_TIMEOUT,
            join_all(holders.iter().map(|h| self.client.get_lease(h, artifact))),
        )
        .await
        .unwrap_or_default();
        answers
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .filter(|l| l.lease.signer == *signer)
            .map(|l| l.lease.until_ms)
            .max()
    }

    /// Closes the endpoint.
    pub async fn close(&self) {
        self.client.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.bound.endpoint.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_file_round_trips_and_replaces_entries() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(LEASES_FILE);
        assert_eq!(LeaseFile::read(&path).unwrap(), LeaseFile::default());
        let mut file = LeaseFile::default();
        let pin = |cid: &str, until_ms| LeasePin {
            cid: cid.into(),
            until_ms,
            term_ms: 1000,
            lease_until_ms: 5,
        };
        file.upsert(pin("a", None));
        file.upsert(pin("b", Some(9)));
        file.upsert(pin("a", Some(7)));
        assert_eq!(file.pins, vec![pin("b", Some(9)), pin("a", Some(7))]);
        file.write(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner reads it");
        assert_eq!(LeaseFile::read(&path).unwrap(), file);
        assert_eq!(file.remove("b"), Some(pin("b", Some(9))));
        assert_eq!(file.remove("b"), None);
        std::fs::write(&path, "not json").unwrap();
        assert!(LeaseFile::read(&path).is_err());
    }
}
