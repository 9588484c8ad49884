//! An artifact's manifest and holder records, placed for scale.
//!
//! Besides the holders of its shards (which keep the records of what they hold: their
//! caretaking reads them every round, and that costs a node in proportion to what it stores,
//! not to the size of the network), an artifact's manifest, holder record, repair record and
//! lease live on the first [`RECORD_REPLICAS`] nodes of `record_ranking` of
//! [`artifact_record_key`] over the live membership: the *record nodes*, which any reader can
//! compute from the membership alone.
//!
//! - A publish sends the manifest and the record to the holders and to the record nodes.
//! - A reader ([`Network::locate`](crate::Network::locate)) asks the record nodes first, then
//!   the holders the chosen record names (the answers tell it who is up); only when none of the
//!   record nodes has a usable record (an artifact published before records were placed, or a
//!   reader whose membership is far from the publisher's) does it ask further peers, at most
//!   `RECORD_ASK_MAX` of them. A read costs `RECORD_REPLICAS` + the artifact's holders record
//!   requests, whatever the size of the network.
//! - A caretaker that repairs sends the repair record to the record nodes too.
//! - When membership changes, the record nodes of some artifacts change: [`replace_records`]
//!   hands the records to the nodes now ranked first that lack them. The nodes that do this for
//!   an artifact are the record nodes themselves and the artifact's *steward* (the live holder
//!   ranked first for its record key, one node per artifact): at most `RECORD_REPLICAS + 1`
//!   nodes check each artifact, once a period and whenever its record nodes change, however
//!   many nodes hold its shards. An artifact whose lease has ended is not handed on: it is
//!   being let go, and handing it would bring it back on nodes that already collected it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_artifact::Cid;
use cairn_store::{Store, now_ms};
use cairn_swarm::{
    EndpointAddr, EndpointId, HolderRecord, RECORD_REPLICAS, ShardClient, artifact_record_key,
    record_ranking,
};
use tracing::debug;

/// How long re-placement waits for one node's answer.
const REPLACE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `peers` ranked for the records of `artifact`, best first (the first
/// [`RECORD_REPLICAS`] are its record nodes).
pub fn record_nodes(artifact: &Cid, peers: &[EndpointAddr]) -> Vec<EndpointAddr> {
    let ids: Vec<EndpointId> = peers.iter().map(|p| p.id).collect();
    let by_id: HashMap<EndpointId, &EndpointAddr> = peers.iter().map(|p| (p.id, p)).collect();
    record_ranking(&artifact_record_key(artifact), &ids)
        .into_iter()
        .filter_map(|id| by_id.get(&id).map(|a| (*a).clone()))
        .collect()
}

/// When each artifact's record nodes were last checked, and which they were then.
#[derive(Debug, Default)]
pub(crate) struct Checked(Mutex<HashMap<Cid, (u64, u64)>>);

impl Checked {
    /// Whether `artifact` is due a check (its record nodes are not `digest`, or it was last
    /// checked a `period_ms` or more ago); marks it checked now if so.
    fn due(&self, artifact: Cid, digest: u64, now: u64, period_ms: u64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let due = map
            .get(&artifact)
            .is_none_or(|&(t, d)| d != digest || now.saturating_sub(t) >= period_ms);
        if due {
            map.insert(artifact, (now, digest));
        }
        due
    }

    /// Forgets artifacts not in `kept` (so the map stays as small as the store's records).
    fn retain(&self, kept: &std::collections::HashSet<Cid>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c, _| kept.contains(c));
    }
}

fn digest(ids: &[EndpointId]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ids.hash(&mut h);
    h.finish()
}

/// One pass of record re-placement (see the module docs): for every artifact whose holder
/// record this node keeps and for which it is a record node or the steward, the record nodes
/// among `peers` (this node counts too) that lack its newest holder record get the manifest,
/// the lease, the holder record and the repair record. Returns the record nodes handed them.
pub(crate) async fn replace_records(
    store: &Arc<Store>,
    client: &ShardClient,
    me: EndpointId,
    peers: &[EndpointAddr],
    checked: &Checked,
    period: Duration,
) -> usize {
    let s = store.clone();
    let records = match tokio::task::spawn_blocking(move || s.records()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!("records: listing the holder records kept: {e}");
            return 0;
        }
        Err(_) => return 0,
    };
    checked.retain(&records.iter().map(|(c, _)| *c).collect());
    let mut everyone: Vec<EndpointAddr> = peers.iter().filter(|p| p.id != me).cloned().collect();
    everyone.push(EndpointAddr::new(me));
    let now = now_ms();
    let period_ms = period.as_millis() as u64;
    let mut handed = 0;
    for (artifact, primary_bytes) in records {
        let Ok(primary) = HolderRecord::verify(&primary_bytes) else {
            continue;
        };
        let ranking = record_nodes(&artifact, &everyone);
        let top: Vec<EndpointId> = ranking.iter().take(RECORD_REPLICAS).map(|a| a.id).collect();
        let s = store.clone();
        let (repair, lease, lease_until, manifest) = match tokio::task::spawn_blocking(move || {
            (
                s.get_repair_record(&artifact).ok().flatten(),
                s.get_lease(&artifact).ok().flatten(),
                s.lease_until(&artifact).ok().flatten(),
                s.get_manifest(&artifact).ok(),
            )
        })
        .await
        {
            Ok(found) => found,
            Err(_) => continue,
        };
        let Some(manifest) = manifest else { continue };
        // An artifact whose lease has ended is being let go (gc collects it after the grace):
        // handing it on would bring it back on nodes that already let it go.
        if lease_until.is_some_and(|until| until < now) {
            continue;
        }
        let repair = repair.and_then(|b| HolderRecord::verify(&b).ok().map(|r| (b, r)));
        let mut holders: Vec<EndpointId> = primary.record.nodes.iter().map(|(id, _)| *id).collect();
        if let Some((_, r)) = &repair {
            holders.extend(r.record.nodes.iter().map(|(id, _)| *id));
        }
        let steward = ranking
            .iter()
            .find(|a| holders.contains(&a.id))
            .map(|a| a.id);
        if !top.contains(&me) && steward != Some(me) {
            continue;
        }
        if !checked.due(artifact, digest(&top), now, period_ms) {
            continue;
        }
        for target in ranking.iter().take(RECORD_REPLICAS).filter(|a| a.id != me) {
            let theirs = tokio::time::timeout(
                REPLACE_REQUEST_TIMEOUT,
                client.get_record(target, &artifact),
            )
            .await;
            match theirs {
                Ok(Ok(Some(r)))
                    if r.record.artifact == artifact
                        && r.record.version >= primary.record.version =>
                {
                    continue;
                }
                Ok(Ok(_)) => {}
                // Down or slow: the next pass tries again (its record nodes then changed, or a
                // period went by).
                _ => continue,
            }
            let hand = async {
                client.put(target, &artifact, &manifest).await?;
                if let Some(lease) = &lease {
                    client.put_lease(target, lease).await?;
                }
                client.put_record(target, &primary_bytes).await?;
                if let Some((bytes, _)) = &repair {
                    client.put_record(target, bytes).await?;
                }
                Ok::<(), cairn_swarm::Error>(())
            };
            match tokio::time::timeout(REPLACE_REQUEST_TIMEOUT * 4, hand).await {
                Ok(Ok(())) => handed += 1,
                Ok(Err(e)) => debug!(
                    "records: handing those of {artifact} to {}: {e}",
                    target.id.fmt_short()
                ),
                Err(_) => debug!(
                    "records: handing those of {artifact} to {} timed out",
                    target.id.fmt_short()
                ),
            }
        }
    }
    handed
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use cairn_artifact::{AddOptions, KeyMode};
    use cairn_erasure::Params;
    use cairn_store::StoreConfig;
    use cairn_swarm::{ShardConfig, endpoint_offline, generate_secret_key};

    use super::*;
    use crate::{CareConfig, Network, NetworkConfig, NodeConfig, NodeHandle, PublishOptions};

    const NODES: usize = 32;
    const STEP: Duration = Duration::from_secs(120);

    struct Node {
        handle: Option<NodeHandle>,
        store: Arc<Store>,
        addr: EndpointAddr,
        _dir: tempfile::TempDir,
    }

    async fn start(bootstrap: Vec<crate::PeerAddr>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreConfig::new(1 << 28)).unwrap());
        let handle = crate::run_node(NodeConfig {
            store: store.clone(),
            secret_key: rand::random(),
            listen: "127.0.0.1:0".parse().unwrap(),
            offline: true,
            network: "records".into(),
            bootstrap,
            peer_table: None,
            // No round runs by itself during the test: it calls re-placement itself.
            care: CareConfig {
                period: Duration::from_secs(30 * 24 * 3600),
                repair: false,
            },
            metrics: None,
            control_socket: None,
            renew: None,
        })
        .await
        .unwrap();
        let addr = handle.peer_addr().endpoint_addr();
        Node {
            handle: Some(handle),
            store,
            addr,
            _dir: dir,
        }
    }

    async fn reader(boot: &Node) -> Network {
        connect(boot, crate::PROBE_PEERS_MAX).await
    }

    async fn connect(boot: &Node, probe_peers_max: usize) -> Network {
        let mut config =
            NetworkConfig::new("records", vec![boot.handle.as_ref().unwrap().peer_addr()]);
        config.offline = true;
        config.probe_peers_max = probe_peers_max;
        Network::connect(config).await.unwrap()
    }

    fn keeps(n: &Node, cid: &Cid) -> bool {
        n.store.get_record(cid).unwrap().is_some() && n.store.has_manifest(cid).unwrap()
    }

    /// Requests a client sent each node so far.
    fn sent(net: &Network, nodes: &[Node]) -> HashMap<EndpointId, u64> {
        nodes
            .iter()
            .map(|n| (n.addr.id, net.requests_to(&n.addr.id)))
            .collect()
    }

    /// Nodes a client sent requests to since `before` (its connect asked the first for peers).
    fn asked(
        net: &Network,
        nodes: &[Node],
        before: &HashMap<EndpointId, u64>,
    ) -> HashSet<EndpointId> {
        nodes
            .iter()
            .filter(|n| net.requests_to(&n.addr.id) > before[&n.addr.id])
            .map(|n| n.addr.id)
            .collect()
    }

    /// 32 real nodes (endpoints, gossip membership, stores): a published artifact's manifest
    /// and holder record are on its holders and its `RECORD_REPLICAS` record nodes and nowhere
    /// else; a reader asks only those nodes; with 4 of the 5 record nodes gone the artifact is
    /// still found, re-placement hands the records to the nodes now ranked first (and only to
    /// those), and a reader over the new membership again asks only record nodes and holders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thirty_two_nodes_place_read_and_replace_artifact_records_with_bounded_requests() {
        let first = start(Vec::new()).await;
        let boot = first.handle.as_ref().unwrap().peer_addr();
        let mut nodes = vec![first];
        for _ in 1..NODES {
            nodes.push(start(vec![boot.clone()]).await);
        }
        tokio::time::timeout(STEP, async {
            while nodes[0].handle.as_ref().unwrap().live_peers() < NODES - 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the first node learns every other within the step");
        let all: Vec<EndpointAddr> = nodes.iter().map(|n| n.addr.clone()).collect();

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.bin");
        std::fs::write(
            &file,
            (0..3u32 << 20)
                .map(|i| (i * 7 + i / 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        // The publisher acts as in a network too large to probe every peer first.
        let publisher = Arc::new(connect(&nodes[0], NODES / 4).await);
        assert_eq!(publisher.peer_count(), NODES);
        let before_publish = sent(&publisher, &nodes);
        let p = publisher.clone();
        let report = tokio::task::spawn_blocking(move || {
            p.publish(
                &file,
                &PublishOptions {
                    add: AddOptions {
                        params: Params::new(3, 2).unwrap(),
                        key_mode: KeyMode::Random,
                        name: None,
                        record_signers: Vec::new(),
                    },
                    allow_reduced_durability: false,
                },
                &|_| {},
            )
        })
        .await
        .unwrap()
        .unwrap();
        let cid = report.cap.cid;
        let record = HolderRecord::verify(
            &nodes[0..]
                .iter()
                .find_map(|n| n.store.get_record(&cid).unwrap())
                .unwrap(),
        )
        .unwrap()
        .record;
        let holders: HashSet<EndpointId> = record.nodes.iter().map(|(id, _)| *id).collect();
        let top: HashSet<EndpointId> = record_nodes(&cid, &all)
            .iter()
            .take(RECORD_REPLICAS)
            .map(|a| a.id)
            .collect();
        let expected: HashSet<EndpointId> = holders.union(&top).copied().collect();
        let keeping: HashSet<EndpointId> = nodes
            .iter()
            .filter(|n| keeps(n, &cid))
            .map(|n| n.addr.id)
            .collect();
        assert_eq!(
            keeping, expected,
            "holders and record nodes keep the records"
        );
        assert!(keeping.len() < NODES, "not everyone: {}", keeping.len());

        // The publish asked the top 2n of each chunk's ranking (HAS), the holders (PUT) and the
        // record nodes: a number that grows with the artifact, not with the network.
        let chunks = record.holders.len();
        let publish_asked = asked(&publisher, &nodes, &before_publish);
        assert!(
            publish_asked.len() <= chunks * 2 * 5 + RECORD_REPLICAS && publish_asked.len() < NODES,
            "a publish of {chunks} chunks asked {} of {NODES} nodes",
            publish_asked.len()
        );

        let fresh = reader(&nodes[0]).await;
        let before = sent(&fresh, &nodes);
        let found = tokio::time::timeout(STEP, fresh.locate(&cid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.record.artifact, cid);
        assert!(found.unreachable.is_empty(), "{:?}", found.unreachable);
        let was_asked = asked(&fresh, &nodes, &before);
        assert!(
            was_asked.is_subset(&expected),
            "a reader asks only record nodes and holders: {} asked, {} expected",
            was_asked.len(),
            expected.len()
        );
        assert!(top.is_subset(&was_asked), "the record nodes are asked");

        // Four of the five record nodes go for good; holders last, so that the data stays.
        let mut order: Vec<EndpointId> = record_nodes(&cid, &all)
            .iter()
            .take(RECORD_REPLICAS)
            .map(|a| a.id)
            .collect();
        order.sort_by_key(|id| holders.contains(id));
        let gone: HashSet<EndpointId> = order[..RECORD_REPLICAS - 1].iter().copied().collect();
        for n in nodes.iter_mut().filter(|n| gone.contains(&n.addr.id)) {
            n.handle.take().unwrap().shutdown().await;
        }
        let live: Vec<EndpointAddr> = all
            .iter()
            .filter(|a| !gone.contains(&a.id))
            .cloned()
            .collect();

        // Node 0 may be among them: later clients join through the first node still up.
        let up = nodes.iter().position(|n| n.handle.is_some()).unwrap();
        // A reader whose membership still lists them finds the artifact.
        let late = reader(&nodes[up]).await;
        let found = tokio::time::timeout(STEP, late.locate(&cid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.record.artifact, cid);

        // Re-placement over the live membership, by every node that keeps the records.
        let now_top: HashSet<EndpointId> = record_nodes(&cid, &live)
            .iter()
            .take(RECORD_REPLICAS)
            .map(|a| a.id)
            .collect();
        let lacking = now_top.iter().filter(|id| !keeping.contains(*id)).count();
        assert!(lacking > 0, "new record nodes are ranked");
        let bound = endpoint_offline(generate_secret_key(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = ShardClient::new(bound.endpoint.clone(), ShardConfig::default());
        let mut handed = 0;
        let mut checks = Vec::new();
        for n in nodes
            .iter()
            .filter(|n| n.handle.is_some() && keeps(n, &cid))
        {
            let checked = Checked::default();
            let got = tokio::time::timeout(
                STEP,
                replace_records(&n.store, &client, n.addr.id, &live, &checked, STEP),
            )
            .await
            .unwrap();
            handed += got;
            checks.push((n, checked));
        }
        assert!(handed >= lacking, "{handed} handed, {lacking} lacked them");
        for n in nodes.iter().filter(|n| n.handle.is_some()) {
            assert_eq!(
                keeps(n, &cid),
                now_top.contains(&n.addr.id) || keeping.contains(&n.addr.id),
                "only the new record nodes got the records"
            );
        }
        // At most the record nodes and the steward checked (the others skip it), and a second
        // pass within the period has nothing to do.
        let checkers = checks
            .iter()
            .filter(|(_, c)| !c.0.lock().unwrap().is_empty())
            .count();
        assert!(checkers <= RECORD_REPLICAS + 1, "{checkers} nodes checked");
        for (n, checked) in &checks {
            let again = replace_records(&n.store, &client, n.addr.id, &live, checked, STEP).await;
            assert_eq!(again, 0);
        }

        // A reader over the new membership asks only the new record nodes and holders.
        let after = reader(&nodes[up]).await;
        let before = sent(&after, &nodes);
        let found = tokio::time::timeout(STEP, after.locate(&cid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.record.artifact, cid);
        let was_asked = asked(&after, &nodes, &before);
        let allowed: HashSet<EndpointId> = holders.union(&now_top).copied().collect();
        assert!(
            was_asked
                .iter()
                .all(|id| allowed.contains(id) || gone.contains(id)),
            "{} asked",
            was_asked.len()
        );
        // A node joining now knows every live node within seconds: its table is seeded from
        // the bootstrap node's live set (PEERS_AFTER), where gossip alone would wait for each
        // node's next announcement (every 30 s at this size).
        let joiner = start(vec![nodes[up].handle.as_ref().unwrap().peer_addr()]).await;
        let others = NODES - RECORD_REPLICAS + 1;
        tokio::time::timeout(Duration::from_secs(10), async {
            while joiner.handle.as_ref().unwrap().live_peers() < others {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a joining node learns the live set from its bootstrap node");
        nodes.push(joiner);
        for net in [&*publisher, &fresh, &late, &after] {
            net.close().await;
        }
        bound.endpoint.close().await;
        futures_util::future::join_all(
            nodes
                .into_iter()
                .filter_map(|n| n.handle)
                .map(NodeHandle::shutdown),
        )
        .await;
    }
}
