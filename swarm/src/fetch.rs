//! Gathering any k verified shards of an erasure-coded chunk, with hedged requests.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use cid::Cid;
use iroh::EndpointAddr;
use tokio::task::JoinSet;

use crate::client::ShardClient;
use crate::error::Error;

/// Where one shard of a chunk can be fetched.
#[derive(Debug, Clone)]
pub struct ShardLocation {
    /// The shard's index in the erasure code (data shards are `0..k`).
    pub index: usize,
    /// The shard's CID.
    pub cid: Cid,
    /// A peer recorded as holding it.
    pub holder: EndpointAddr,
}

/// Why one attempt to fetch a shard failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFailure {
    /// The shard's index.
    pub index: usize,
    /// The shard's CID.
    pub cid: String,
    /// The holder asked, as a short endpoint id.
    pub peer: String,
    /// What went wrong (timeout, wrong bytes, not held…).
    pub reason: String,
}

/// Fewer than k shards could be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fetched {got} of the {needed} shards needed; missing: {}", describe(.missing))]
pub struct FetchError {
    /// Shards needed (k).
    pub needed: usize,
    /// Distinct shards verified.
    pub got: usize,
    /// Every failed attempt, for the shards that were not obtained.
    pub missing: Vec<ShardFailure>,
}

fn describe(missing: &[ShardFailure]) -> String {
    if missing.is_empty() {
        return "no holders were given for the other shards".into();
    }
    missing
        .iter()
        .map(|f| {
            format!(
                "shard {} ({}) from {}: {}",
                f.index, f.cid, f.peer, f.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fetches k distinct verified shards out of `shards`.
///
/// Holders of data shards (index < k) are asked first, since a reader then needs no decoding.
/// k requests start at once; whenever `hedge_after` passes without a shard arriving, one more
/// holder is asked, and each failure starts the next one. Once k shards are verified the requests
/// still running are cancelled. Peers that send wrong bytes, do not hold the shard or hang (up to
/// the client's request timeout) are skipped. The result is sorted by index.
///
/// The total time is bounded by the number of locations times the client's request timeout.
///
/// Cancel safety: dropping the future aborts every request in flight.
pub async fn fetch_any_k(
    client: &ShardClient,
    mut shards: Vec<ShardLocation>,
    k: usize,
    hedge_after: Duration,
) -> Result<Vec<(usize, Vec<u8>)>, FetchError> {
    // Data shards first, then parity, each group in index order; holders that were slow to
    // answer lately after everyone else (see `ShardClient::is_slow`).
    shards.sort_by_cached_key(|s| (client.is_slow(&s.holder.id), s.index >= k, s.index));
    let mut fetch = Fetch {
        client,
        queue: shards.into(),
        running: JoinSet::new(),
        task_index: HashMap::new(),
        in_flight: BTreeSet::new(),
        got: BTreeMap::new(),
    };
    let mut failures: Vec<ShardFailure> = Vec::new();

    for _ in 0..k {
        if !fetch.launch() {
            break;
        }
    }
    while fetch.got.len() < k {
        let hedge = tokio::time::sleep(hedge_after);
        tokio::select! {
            joined = fetch.running.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (index, failure) = match joined {
                    Ok((id, (location, result))) => {
                        fetch.task_index.remove(&id);
                        let reason = match result {
                            Ok(Some(bytes)) => {
                                fetch.in_flight.remove(&location.index);
                                fetch.got.entry(location.index).or_insert(bytes);
                                continue;
                            }
                            Ok(None) => "holder does not have it".to_string(),
                            Err(err) => err.to_string(),
                        };
                        (location.index, Some(ShardFailure {
                            index: location.index,
                            cid: location.cid.to_string(),
                            peer: location.holder.id.fmt_short().to_string(),
                            reason,
                        }))
                    }
                    // A request task panicked; its holder counts as failed.
                    Err(err) => match fetch.task_index.remove(&err.id()) {
                        Some(index) => (index, None),
                        None => continue,
                    },
                };
                fetch.in_flight.remove(&index);
                failures.extend(failure);
                fetch.launch();
            }
            () = hedge => {
                fetch.launch();
            }
        }
    }
    // Cancel what is still running and wait until it is gone, so that its peers' bookkeeping
    // (slow peers) is up to date for the next chunk.
    fetch.running.shutdown().await;
    let Fetch { got, .. } = fetch;
    if got.len() >= k {
        return Ok(got.into_iter().take(k).collect());
    }
    failures.retain(|f| !got.contains_key(&f.index));
    Err(FetchError {
        needed: k,
        got: got.len(),
        missing: failures,
    })
}

type Attempt = (ShardLocation, Result<Option<Vec<u8>>, Error>);

/// The state of one [`fetch_any_k`] call.
struct Fetch<'a> {
    client: &'a ShardClient,
    /// Locations not yet asked, best first.
    queue: VecDeque<ShardLocation>,
    running: JoinSet<Attempt>,
    task_index: HashMap<tokio::task::Id, usize>,
    /// Indices being fetched: a second holder of one waits until the first fails.
    in_flight: BTreeSet<usize>,
    got: BTreeMap<usize, Vec<u8>>,
}

impl Fetch<'_> {
    /// Asks the next useful holder; false if none is left.
    fn launch(&mut self) -> bool {
        let got = &self.got;
        self.queue
            .retain(|location| !got.contains_key(&location.index));
        let Some(position) = self
            .queue
            .iter()
            .position(|location| !self.in_flight.contains(&location.index))
        else {
            return false;
        };
        let location = self
            .queue
            .remove(position)
            .expect("position is inside the queue");
        self.in_flight.insert(location.index);
        let index = location.index;
        let client = self.client.clone();
        let handle = self.running.spawn(async move {
            let result = client.get(&location.holder, &location.cid, None).await;
            (location, result)
        });
        self.task_index.insert(handle.id(), index);
        true
    }
}
