//! Names on the network: publishing a name record to the nodes ranked for its org, resolving a
//! name from them, and moving records when membership changes.
//!
//! The records of an org live on the first [`RECORD_REPLICAS`] nodes of `record_ranking` of the
//! org's key over the live membership. A publish sends the record to those nodes, going down
//! the ranking past nodes that do not answer, and asks at most `2 × RECORD_REPLICAS` nodes in
//! all; it succeeds once a majority of the replicas stored it. A lookup asks the first
//! `RECORD_REPLICAS` at once and, for each that fails, the next one down the ranking, again at
//! most `2 × RECORD_REPLICAS` in all, whatever the size of the network; the answers are merged
//! by `merge_answers` (the org key most answering nodes hold, then the newest revision).
//!
//! When membership changes, the ranked nodes change for some orgs. Every node that keeps an
//! org's records checks, once per period and per name, that the nodes now ranked first hold
//! the name's newest revision, and hands them the revisions they lack, oldest first, the org's
//! claim travelling with the records themselves: so records survive the loss of
//! `RECORD_REPLICAS - 1` of their holders and are re-placed (what the caretaker does for
//! shards, applied to records).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::Store;
use cairn_swarm::{
    EndpointAddr, EndpointId, NAME_REVISIONS_MAX, NameKind, RECORD_REPLICAS, ShardClient,
    SignedName, merge_answers, org_record_key, record_ranking, record_version_now,
};
use futures_util::future::join_all;
use tracing::{debug, warn};

use crate::Error;

/// Most nodes one publish or lookup asks: the replicas and as many stand-ins for those that
/// fail.
pub const NAME_ASKS_MAX: usize = 2 * RECORD_REPLICAS;
/// How long a lookup or publish waits for one node.
const NAME_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a name publish did.
#[derive(Clone, Debug)]
pub struct NamePublished {
    /// Nodes that stored the record (or held it already).
    pub stored: Vec<EndpointId>,
    /// Nodes asked, in all.
    pub asked: usize,
}

/// What a name lookup found.
#[derive(Clone, Debug)]
pub struct NameLookup {
    /// The name's revisions under its org's key, newest first.
    pub revisions: Vec<SignedName>,
    /// Nodes asked, in all.
    pub asked: usize,
    /// Nodes that answered (with records or with none).
    pub answered: usize,
}

fn kind_code(kind: NameKind) -> u8 {
    match kind {
        NameKind::Model => 0,
        NameKind::Dataset => 1,
    }
}

fn kind_of(code: u8) -> Option<NameKind> {
    match code {
        0 => Some(NameKind::Model),
        1 => Some(NameKind::Dataset),
        _ => None,
    }
}

/// The store's code of a name kind (as kept in its tables).
pub fn store_kind(kind: NameKind) -> u8 {
    kind_code(kind)
}

/// `peers` in the order of the org's record ranking.
fn ranked(org: &str, peers: &[EndpointAddr]) -> Vec<EndpointAddr> {
    let ids: Vec<EndpointId> = peers.iter().map(|p| p.id).collect();
    let by_id: HashMap<EndpointId, &EndpointAddr> = peers.iter().map(|p| (p.id, p)).collect();
    record_ranking(&org_record_key(org), &ids)
        .into_iter()
        .filter_map(|id| by_id.get(&id).map(|a| (*a).clone()))
        .collect()
}

/// Sends the signed name record `signed` to the nodes ranked first for its org among `peers`
/// (see the module docs). Fails when fewer than a majority of the replicas stored it, naming
/// why; a node that holds the org under another key (`ORG_CLAIMED`) or a newer revision
/// (`STALE_RECORD`) makes the publish fail at once with its answer.
pub async fn publish_name(
    client: &ShardClient,
    peers: &[EndpointAddr],
    signed: &SignedName,
) -> Result<NamePublished, Error> {
    let ranking = ranked(&signed.record.org, peers);
    let replicas = RECORD_REPLICAS.min(ranking.len());
    if replicas == 0 {
        return Err(Error::Node("no live node to publish the name to".into()));
    }
    let need = replicas / 2 + 1;
    let mut next = 0usize;
    let mut stored = Vec::new();
    let mut why: Vec<String> = Vec::new();
    let mut asked = 0usize;
    while stored.len() < replicas && next < ranking.len() && asked < NAME_ASKS_MAX {
        let batch: Vec<EndpointAddr> = ranking[next..]
            .iter()
            .take((replicas - stored.len()).min(NAME_ASKS_MAX - asked))
            .cloned()
            .collect();
        next += batch.len();
        asked += batch.len();
        let results = join_all(batch.iter().map(|a| async move {
            match tokio::time::timeout(NAME_REQUEST_TIMEOUT, client.put_name(a, &signed.bytes))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(cairn_swarm::Error::Timeout {
                    peer: a.id.fmt_short().to_string(),
                    operation: "PUT_NAME",
                    limit: NAME_REQUEST_TIMEOUT,
                }),
            }
        }))
        .await;
        for (a, r) in batch.iter().zip(results) {
            match r {
                Ok(()) => stored.push(a.id),
                Err(cairn_swarm::Error::Rejected {
                    status, message, ..
                }) if status == "ORG_CLAIMED" || status == "STALE_RECORD" => {
                    return Err(Error::Node(format!(
                        "node {} refused the name record of {}/{} ({status}): {message}",
                        a.id.fmt_short(),
                        signed.record.org,
                        signed.record.name
                    )));
                }
                Err(e) => why.push(format!("{}: {e}", a.id.fmt_short())),
            }
        }
    }
    if stored.len() < need {
        return Err(Error::Node(format!(
            "the name record of {}/{} reached only {} of the {replicas} nodes ranked for it, \
             {need} needed: {}",
            signed.record.org,
            signed.record.name,
            stored.len(),
            why.join("; ")
        )));
    }
    Ok(NamePublished { stored, asked })
}

/// The newest `count` revisions of `org/name` of `kind`, from the nodes ranked first for the
/// org among `peers` (see the module docs). Empty revisions when no node holds any.
pub async fn resolve_name(
    client: &ShardClient,
    peers: &[EndpointAddr],
    kind: NameKind,
    org: &str,
    name: &str,
    count: usize,
) -> Result<NameLookup, Error> {
    cairn_swarm::check_name_part(org).map_err(|e| Error::Node(e.to_string()))?;
    cairn_swarm::check_name_part(name).map_err(|e| Error::Node(e.to_string()))?;
    let count = count.clamp(1, NAME_REVISIONS_MAX) as u8;
    let ranking = ranked(org, peers);
    let replicas = RECORD_REPLICAS.min(ranking.len());
    let mut answers: Vec<Vec<SignedName>> = Vec::new();
    let (mut next, mut asked, mut answered) = (0usize, 0usize, 0usize);
    let mut want = replicas;
    while want > 0 && next < ranking.len() && asked < NAME_ASKS_MAX {
        let batch: Vec<EndpointAddr> = ranking[next..]
            .iter()
            .take(want.min(NAME_ASKS_MAX - asked))
            .cloned()
            .collect();
        next += batch.len();
        asked += batch.len();
        let results = join_all(batch.iter().map(|a| {
            tokio::time::timeout(
                NAME_REQUEST_TIMEOUT,
                client.get_names(a, kind, org, name, count),
            )
        }))
        .await;
        want = 0;
        for (a, r) in batch.iter().zip(results) {
            match r {
                Ok(Ok(records)) => {
                    answered += 1;
                    answers.push(records);
                }
                Ok(Err(e)) => {
                    debug!(
                        "names: {} did not answer for {org}/{name}: {e}",
                        a.id.fmt_short()
                    );
                    want += 1;
                }
                Err(_) => {
                    debug!("names: {} timed out for {org}/{name}", a.id.fmt_short());
                    want += 1;
                }
            }
        }
    }
    let mut revisions = merge_answers(&answers, kind, org, name, record_version_now());
    revisions.truncate(usize::from(count));
    Ok(NameLookup {
        revisions,
        asked,
        answered,
    })
}

/// One pass of record re-placement (see the module docs): for every name this node keeps,
/// the nodes among `peers` ranked first for its org that lack its newest revision get the
/// revisions they lack, oldest first. Returns the records handed over.
pub(crate) async fn replace_names(
    store: &Arc<Store>,
    client: &ShardClient,
    me: EndpointId,
    peers: &[EndpointAddr],
) -> usize {
    let s = store.clone();
    let keys = match tokio::task::spawn_blocking(move || s.net_name_keys()).await {
        Ok(Ok(keys)) => keys,
        Ok(Err(e)) => {
            warn!("names: listing the names kept: {e}");
            return 0;
        }
        Err(_) => return 0,
    };
    let mut handed = 0;
    for (org, code, name) in keys {
        let Some(kind) = kind_of(code) else { continue };
        let s = store.clone();
        let (o, n) = (org.clone(), name.clone());
        let mine: Vec<SignedName> =
            match tokio::task::spawn_blocking(move || s.net_names(&o, code, &n)).await {
                Ok(Ok(b)) => b
                    .iter()
                    .filter_map(|b| SignedName::decode(b).ok())
                    .collect(),
                _ => continue,
            };
        let Some(newest) = mine.first() else { continue };
        let targets: Vec<EndpointAddr> = ranked(&org, peers)
            .into_iter()
            .take(RECORD_REPLICAS)
            .filter(|a| a.id != me)
            .collect();
        for t in &targets {
            let theirs = match tokio::time::timeout(
                NAME_REQUEST_TIMEOUT,
                client.get_names(t, kind, &org, &name, 1),
            )
            .await
            {
                Ok(Ok(r)) => r,
                _ => continue,
            };
            let their_version = theirs.first().map(|s| s.record.version);
            if their_version.is_some_and(|v| v >= newest.record.version) {
                continue;
            }
            for r in mine.iter().rev() {
                if their_version.is_some_and(|v| r.record.version <= v) {
                    continue;
                }
                match client.put_name(t, &r.bytes).await {
                    Ok(()) => handed += 1,
                    Err(e) => {
                        debug!("names: handing {org}/{name} to {}: {e}", t.id.fmt_short());
                        break;
                    }
                }
            }
        }
    }
    handed
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use cairn_store::StoreConfig;
    use cairn_swarm::{
        NameRecord, Router, SHARD_ALPN, SecretKey, ShardConfig, ShardServer, endpoint_offline,
        generate_secret_key, manifest_cid,
    };

    use super::*;
    use crate::StoreBackend;

    const NODES: usize = 32;
    const STEP: Duration = Duration::from_secs(60);

    struct Node {
        addr: EndpointAddr,
        store: Arc<Store>,
        router: Router,
        _dir: tempfile::TempDir,
    }

    async fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreConfig::new(1 << 24)).unwrap());
        let bound = endpoint_offline(generate_secret_key(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr =
            EndpointAddr::new(bound.endpoint.id()).with_ip_addr(bound.endpoint.bound_sockets()[0]);
        let backend = Arc::new(StoreBackend::new(store.clone()));
        let router = Router::builder(bound.endpoint.clone())
            .accept(
                SHARD_ALPN,
                ShardServer::new(backend, ShardConfig::default()),
            )
            .spawn();
        Node {
            addr,
            store,
            router,
            _dir: dir,
        }
    }

    async fn client() -> ShardClient {
        let bound = endpoint_offline(generate_secret_key(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        ShardClient::new(bound.endpoint.clone(), ShardConfig::default())
    }

    fn holds(n: &Node) -> bool {
        !n.store.net_names("acme", 0, "model").unwrap().is_empty()
    }

    /// 32 nodes on real endpoints: a publish and a lookup each ask at most `NAME_ASKS_MAX`
    /// nodes (the requests each node got are counted), the record lands on exactly the
    /// `RECORD_REPLICAS` nodes ranked first for its org; after 4 of those 5 are shut down,
    /// the survivor hands the record to the nodes now ranked first, and a lookup over the
    /// remaining membership finds it, again asking a bounded number of nodes.
    #[tokio::test]
    async fn thirty_two_nodes_publish_and_read_a_name_with_bounded_requests_and_survive_losing_four_holders()
     {
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(node().await);
        }
        let peers: Vec<EndpointAddr> = nodes.iter().map(|n| n.addr.clone()).collect();
        let owner = SecretKey::from_bytes(&[7; 32]);
        let record = NameRecord {
            org_key: owner.public(),
            signer: owner.public(),
            delegation: None,
            kind: NameKind::Model,
            org: "acme".into(),
            name: "model".into(),
            version: record_version_now(),
            artifact: manifest_cid(b"revision 1"),
            parent: None,
            policy: "public".into(),
            grants: Vec::new(),
        };
        let signed = SignedName::decode(&record.try_sign(&owner).unwrap()).unwrap();

        let publisher = client().await;
        let published = tokio::time::timeout(STEP, publish_name(&publisher, &peers, &signed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.stored.len(), RECORD_REPLICAS);
        assert!(published.asked <= NAME_ASKS_MAX);
        let asked: usize = peers
            .iter()
            .map(|p| publisher.requests_to(&p.id) as usize)
            .sum();
        assert_eq!(
            asked, RECORD_REPLICAS,
            "one request per replica, none elsewhere"
        );
        let ranked_first: Vec<EndpointId> = ranked("acme", &peers)
            .iter()
            .take(RECORD_REPLICAS)
            .map(|a| a.id)
            .collect();
        let holders: Vec<usize> = (0..NODES).filter(|&i| holds(&nodes[i])).collect();
        assert_eq!(holders.len(), RECORD_REPLICAS);
        assert!(
            holders
                .iter()
                .all(|&i| ranked_first.contains(&nodes[i].addr.id)),
            "the record is on the nodes ranked first for its org"
        );

        let reader = client().await;
        let found = tokio::time::timeout(
            STEP,
            resolve_name(&reader, &peers, NameKind::Model, "ACME", "model", 8),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(found.revisions, vec![signed.clone()]);
        let asked: usize = peers
            .iter()
            .map(|p| reader.requests_to(&p.id) as usize)
            .sum();
        assert_eq!(asked, RECORD_REPLICAS);
        assert_eq!(found.answered, RECORD_REPLICAS);

        // Four of the five holders go away for good.
        let survivor = holders[4];
        for &i in &holders[..4] {
            nodes[i].router.shutdown().await.unwrap();
        }
        let gone: HashSet<usize> = holders[..4].iter().copied().collect();
        let live: Vec<EndpointAddr> = (0..NODES)
            .filter(|i| !gone.contains(i))
            .map(|i| nodes[i].addr.clone())
            .collect();
        let carer = client().await;
        let handed = tokio::time::timeout(
            STEP,
            replace_names(
                &nodes[survivor].store,
                &carer,
                nodes[survivor].addr.id,
                &live,
            ),
        )
        .await
        .unwrap();
        assert_eq!(handed, RECORD_REPLICAS - 1, "the four new replicas got it");
        let now_first: Vec<EndpointId> = ranked("acme", &live)
            .iter()
            .take(RECORD_REPLICAS)
            .map(|a| a.id)
            .collect();
        for i in (0..NODES).filter(|i| !gone.contains(i)) {
            assert_eq!(
                holds(&nodes[i]),
                now_first.contains(&nodes[i].addr.id) || i == survivor,
                "node {i}"
            );
        }
        // A second pass has nothing to do.
        let again = tokio::time::timeout(
            STEP,
            replace_names(
                &nodes[survivor].store,
                &carer,
                nodes[survivor].addr.id,
                &live,
            ),
        )
        .await
        .unwrap();
        assert_eq!(again, 0);

        // A reader that still lists the dead nodes (its membership lags) finds the record too,
        // asking at most NAME_ASKS_MAX nodes.
        let late = client().await;
        let found = tokio::time::timeout(
            STEP,
            resolve_name(&late, &peers, NameKind::Model, "acme", "model", 8),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(found.revisions, vec![signed]);
        assert!(found.asked <= NAME_ASKS_MAX, "{found:?}");
        for n in nodes {
            n.router.shutdown().await.unwrap();
        }
    }
}
