//! The simulated network and its year.
//!
//! # Model
//!
//! - **Nodes** have ed25519 identities from seeded bytes. Each is online, offline for a while
//!   (a transient outage: it comes back with its data), or gone for good (its disk failed or
//!   its operator left: its shards are gone). New nodes join with empty disks. Outages, disk
//!   failures, departures and joins are Poisson processes at the configured rates; outage
//!   lengths are exponential.
//! - **Publishing** happens at the start, one artifact after the other: shard `j` of a chunk
//!   goes to the `j`-th node of `cairn_swarm::place(chunk_key, live nodes weighted by free
//!   quota, n)`, the call `Network::publish` makes. Each artifact's record goes to the first
//!   `RECORD_REPLICAS` nodes of `cairn_swarm::record_ranking` over the live nodes.
//! - **Caretaking**: time advances in steps of 1/96 of the audit period. Every chunk is audited
//!   once a period, at a phase of its own, by its caretaker (`policy::caretaker_of` over the
//!   holders `policy::caretaker_eligible` admits; nobody audits a chunk whose holders are all
//!   offline). The caretaker audits every other holder: one that is online answers (misses
//!   reset), one that is offline or gone misses the round and is not live (the membership drops
//!   a silent node after 90 s, far less than a step). `policy::shard_lost` decides which shards
//!   are lost, `policy::needs_repair` whether the chunk is repaired, which happens at once when
//!   at least `k` kept shards are reachable (else it waits for the next audit): the lost shards
//!   go to `policy::repair_targets` over the live nodes, and the repair moves
//!   `policy::repair_fetches` shards to the caretaker and every re-created shard to its target.
//!   A holder counted lost that comes back has its copy trimmed (no credit is taken for it).
//! - **Records** are placed again every caretaking round (a quarter period) on the first
//!   `RECORD_REPLICAS` of their ranking over the live nodes, copied from any online holder;
//!   holders keep their copies (the node's `replace_names`, run in the first round after the
//!   live set changed). A **lookup** ranks the nodes of the reader's view (the live nodes at the
//!   last round) and asks as `resolve_name` does: the first `RECORD_REPLICAS` at once, one more
//!   down the ranking for each that does not answer (it is offline now), at most
//!   `NAME_ASKS_MAX`; it finds the record when an answering node holds it.
//!
//! # Cost
//!
//! `place` and the rankings hash every (key, node) pair, so each chunk's repair ranking and
//! each record's ranking is computed once over every node the run will ever have (joiners
//! included) and kept to its first [`RANKING_DEPTH`]: the ranking over any subset is that
//! ranking with the others left out, so the first targets among the top entries are the ones
//! the full computation would give; a ranking that churn exhausts is computed again deeper.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use cairn_artifact::{Cid, shard_cid};
use cairn_node::policy::{self, HolderSeen};
use cairn_node::{NAME_ASKS_MAX, ROUNDS_PER_PERIOD, chunk_key, repair_ranking};
use cairn_swarm::{EndpointId, RECORD_REPLICAS, SecretKey, place, record_ranking};
use rayon::prelude::*;

use crate::config::{Config, RANKING_DEPTH, STEPS_PER_PERIOD, YEAR_SECS};
use crate::estimate::{Observed, estimate};
use crate::report::{Report, Spread};
use crate::rng::{Rng, derived_bytes};

/// Labels of the derived byte streams.
const NODE_KEYS: u64 = 1;
const SHARDS: u64 = 2;
const RECORDS: u64 = 3;
/// Seed offset of the uniform-placement baseline's generator.
const BASELINE: u64 = 0x5EED_BA5E;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not joined yet.
    Waiting,
    Online,
    Offline,
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Join(u32),
    Down(u32),
    Up(u32),
    Fail(u32),
    Leave(u32),
}

struct Node {
    state: State,
    /// Chunks of which it holds a shard.
    chunks: Vec<u32>,
    joined_at: u64,
    gone_at: u64,
    offline_since: u64,
    offline_secs: u64,
}

struct Chunk {
    shards: Vec<Cid>,
    /// Holder of each shard (node index).
    holders: Vec<u32>,
    /// Audits in a row each holder missed.
    missed: Vec<u32>,
    lost: bool,
    /// The first entries of its repair ranking over every node of the run.
    ranking: Vec<u32>,
}

struct Record {
    key: Vec<u8>,
    ranking: Vec<u32>,
    holders: Vec<u32>,
    lost: bool,
}

#[derive(Default)]
struct Counters {
    joins: u64,
    leaves: u64,
    fails: u64,
    outages: u64,
    live_changes: u64,
    audits: u64,
    unattended: u64,
    unreadable: u64,
    deferred: u64,
    unrepaired: u64,
    repairs: u64,
    recreated_transient: u64,
    recreated_permanent: u64,
    bytes_fetched: u64,
    bytes_placed: u64,
    chunks_lost: u64,
    lookups: u64,
    asks: u64,
    asks_max: u64,
    lookups_failed: u64,
    record_copies: u64,
    record_unreachable: u64,
    records_lost: u64,
    rankings_deepened: u64,
}

struct World {
    cfg: Config,
    rng: Rng,
    horizon: u64,
    shard_len: u64,
    k: usize,
    n: usize,
    nodes: Vec<Node>,
    /// Identity of every node the run will have, by index.
    ids: Vec<EndpointId>,
    index: HashMap<EndpointId, u32>,
    chunks: Vec<Chunk>,
    /// Chunks audited at each step of the period.
    by_phase: Vec<Vec<u32>>,
    records: Vec<Record>,
    /// The readers' view: who was live at the last round.
    view: Vec<bool>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    c: Counters,
    /// Repair windows of holders lost for good, in seconds.
    windows: Vec<u64>,
}

/// Runs the simulation `cfg` describes.
pub fn run(cfg: &Config) -> Result<Report, crate::Error> {
    cfg.validate()?;
    let mut world = World::new(cfg.clone());
    let start_load = world.load();
    let baseline = world.uniform_baseline();
    world.simulate();
    Ok(world.report(start_load, baseline))
}

/// The first `depth` nodes of a ranking, as node indices.
fn top(ranked: Vec<EndpointId>, index: &HashMap<EndpointId, u32>, depth: usize) -> Vec<u32> {
    ranked
        .into_iter()
        .take(depth)
        .map(|id| index[&id])
        .collect()
}

impl World {
    fn new(cfg: Config) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let horizon = cfg.horizon_secs();
        // Join times first: every node the run will have gets its identity up front, so that
        // rankings over all of them are computed once.
        let join_per_sec = cfg.join_rate * cfg.nodes as f64 / YEAR_SECS as f64;
        let mut joins = Vec::new();
        let mut t = 0u64;
        loop {
            let dt = rng.exp_secs(join_per_sec);
            t = t.saturating_add(dt);
            if t >= horizon {
                break;
            }
            joins.push(t);
        }
        let total = cfg.nodes + joins.len();
        let ids: Vec<EndpointId> = (0..total as u64)
            .into_par_iter()
            .map(|i| {
                let bytes: [u8; 32] = derived_bytes(cfg.seed, NODE_KEYS, i, 32)
                    .try_into()
                    .expect("32 bytes");
                SecretKey::from_bytes(&bytes).public()
            })
            .collect();
        let index: HashMap<EndpointId, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, _)| Node {
                state: if i < cfg.nodes {
                    State::Online
                } else {
                    State::Waiting
                },
                chunks: Vec::new(),
                joined_at: 0,
                gone_at: u64::MAX,
                offline_since: 0,
                offline_secs: 0,
            })
            .collect();
        let (k, n) = (cfg.params.k(), cfg.params.n());
        let mut world = Self {
            shard_len: cfg.shard_len(),
            horizon,
            k,
            n,
            rng,
            nodes,
            ids,
            index,
            chunks: Vec::new(),
            by_phase: vec![Vec::new(); STEPS_PER_PERIOD as usize],
            records: Vec::new(),
            view: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            c: Counters::default(),
            windows: Vec::new(),
            cfg,
        };
        for i in 0..world.cfg.nodes {
            world.schedule_life(i as u32, 0);
        }
        for (j, t) in joins.into_iter().enumerate() {
            world.push(t, Event::Join((world.cfg.nodes + j) as u32));
        }
        world.publish();
        world
    }

    fn push(&mut self, time: u64, event: Event) {
        if time < self.horizon {
            self.seq += 1;
            self.events.push(Reverse((time, self.seq, event)));
        }
    }

    /// Draws when node `i`, present from `t0`, is lost for good and when its first outage
    /// starts.
    fn schedule_life(&mut self, i: u32, t0: u64) {
        let year = YEAR_SECS as f64;
        let fail = t0.saturating_add(self.rng.exp_secs(self.cfg.fail_rate / year));
        let leave = t0.saturating_add(self.rng.exp_secs(self.cfg.leave_rate / year));
        if fail <= leave {
            self.push(fail, Event::Fail(i));
        } else {
            self.push(leave, Event::Leave(i));
        }
        let down = t0.saturating_add(self.rng.exp_secs(self.outage_rate()));
        self.push(down, Event::Down(i));
    }

    fn outage_rate(&self) -> f64 {
        self.cfg.outages_per_month * 12.0 / YEAR_SECS as f64
    }

    /// Publishes every chunk at time 0, artifact by artifact, as `Network::publish` does.
    fn publish(&mut self) {
        let cfg = self.cfg.clone();
        let (n, seed) = (self.n, cfg.seed);
        let depth = RANKING_DEPTH.min(self.ids.len());
        let mut used = vec![0u64; cfg.nodes];
        let artifacts = cfg.chunks.div_ceil(cfg.chunks_per_artifact);
        for a in 0..artifacts {
            let first = a * cfg.chunks_per_artifact;
            let last = (first + cfg.chunks_per_artifact).min(cfg.chunks);
            // Free quota as the nodes announce it, read once per artifact.
            let weights: Vec<(EndpointId, u64)> = (0..cfg.nodes)
                .filter(|&i| self.nodes[i].state == State::Online)
                .map(|i| {
                    let free = cfg.capacity_bytes.saturating_sub(used[i]);
                    (self.ids[i], free.max(1))
                })
                .collect();
            let ids = &self.ids;
            let index = &self.index;
            let placed: Vec<(Vec<Cid>, Vec<u32>, Vec<u32>)> = (first..last)
                .into_par_iter()
                .map(|c| {
                    let shards: Vec<Cid> = (0..n)
                        .map(|j| shard_cid(&derived_bytes(seed, SHARDS, (c * n + j) as u64, 32)))
                        .collect();
                    let holders = top(place(&chunk_key(&shards), &weights, n), index, n);
                    let ranking = top(repair_ranking(&shards, ids), index, depth);
                    (shards, holders, ranking)
                })
                .collect();
            for (offset, (shards, holders, ranking)) in placed.into_iter().enumerate() {
                let c = (first + offset) as u32;
                assert_eq!(holders.len(), n, "place returns n nodes when n are live");
                for &h in &holders {
                    used[h as usize] += self.shard_len;
                    self.nodes[h as usize].chunks.push(c);
                }
                let phase = self.rng.below(STEPS_PER_PERIOD as usize);
                self.by_phase[phase].push(c);
                self.chunks.push(Chunk {
                    shards,
                    missed: vec![0; holders.len()],
                    holders,
                    lost: false,
                    ranking,
                });
            }
        }
        // One record per artifact, on the first RECORD_REPLICAS live nodes of its ranking.
        let ids = &self.ids;
        let index = &self.index;
        let records: Vec<Record> = (0..artifacts)
            .into_par_iter()
            .map(|a| {
                let key = derived_bytes(seed, RECORDS, a as u64, 36);
                let ranking = top(record_ranking(&key, ids), index, depth);
                Record {
                    key,
                    ranking,
                    holders: Vec::new(),
                    lost: false,
                }
            })
            .collect();
        self.records = records;
        self.view = self
            .nodes
            .iter()
            .map(|n| n.state == State::Online)
            .collect();
        for r in 0..self.records.len() {
            let first: Vec<u32> = self.records[r]
                .ranking
                .iter()
                .copied()
                .filter(|&i| self.view[i as usize])
                .take(RECORD_REPLICAS)
                .collect();
            self.records[r].holders = first;
        }
    }

    fn simulate(&mut self) {
        let step = self.cfg.period_secs / STEPS_PER_PERIOD;
        let steps = self.horizon / step;
        let round = (STEPS_PER_PERIOD / u64::from(ROUNDS_PER_PERIOD)).max(1);
        let mut lookups_due = 0.0f64;
        for s in 0..steps {
            let now = (s + 1) * step;
            while let Some(Reverse((t, _, _))) = self.events.peek()
                && *t <= now
            {
                let Some(Reverse((t, _, event))) = self.events.pop() else {
                    break;
                };
                self.apply(t, event);
            }
            let phase = (s % STEPS_PER_PERIOD) as usize;
            let due = std::mem::take(&mut self.by_phase[phase]);
            for &c in &due {
                self.audit(c as usize, now);
            }
            self.by_phase[phase] = due;
            if (s + 1) % round == 0 {
                self.place_records();
            }
            lookups_due += self.cfg.lookups_per_day as f64 * step as f64 / 86_400.0;
            while lookups_due >= 1.0 {
                lookups_due -= 1.0;
                self.lookup();
            }
        }
        // Close the books on nodes still offline at the end.
        let horizon = self.horizon;
        for node in &mut self.nodes {
            if node.state == State::Offline {
                node.offline_secs += horizon - node.offline_since;
            }
        }
    }

    fn apply(&mut self, t: u64, event: Event) {
        match event {
            Event::Join(i) => {
                let node = &mut self.nodes[i as usize];
                node.state = State::Online;
                node.joined_at = t;
                self.c.joins += 1;
                self.c.live_changes += 1;
                self.schedule_life(i, t);
            }
            Event::Down(i) => {
                if self.nodes[i as usize].state != State::Online {
                    return;
                }
                let node = &mut self.nodes[i as usize];
                node.state = State::Offline;
                node.offline_since = t;
                self.c.outages += 1;
                self.c.live_changes += 1;
                let length = self.rng.exp_secs(1.0 / self.cfg.outage_secs);
                self.push(t.saturating_add(length), Event::Up(i));
            }
            Event::Up(i) => {
                if self.nodes[i as usize].state != State::Offline {
                    return;
                }
                let node = &mut self.nodes[i as usize];
                node.offline_secs += t - node.offline_since;
                node.state = State::Online;
                self.c.live_changes += 1;
                let next = t.saturating_add(self.rng.exp_secs(self.outage_rate()));
                self.push(next, Event::Down(i));
            }
            Event::Fail(i) | Event::Leave(i) => {
                if matches!(event, Event::Fail(_)) {
                    self.c.fails += 1;
                } else {
                    self.c.leaves += 1;
                }
                self.gone(i, t);
            }
        }
    }

    /// Node `i` is lost for good at `t`: its shards and record copies are gone.
    fn gone(&mut self, i: u32, t: u64) {
        let node = &mut self.nodes[i as usize];
        if node.state == State::Offline {
            node.offline_secs += t - node.offline_since;
        }
        if node.state != State::Gone {
            self.c.live_changes += 1;
        }
        node.state = State::Gone;
        node.gone_at = t;
        let held = node.chunks.clone();
        for c in held {
            let chunk = &mut self.chunks[c as usize];
            if chunk.lost {
                continue;
            }
            let surviving = chunk
                .holders
                .iter()
                .filter(|&&h| self.nodes[h as usize].state != State::Gone)
                .count();
            if surviving < self.k {
                chunk.lost = true;
                self.c.chunks_lost += 1;
            }
        }
        for record in &mut self.records {
            record.holders.retain(|&h| h != i);
            if record.holders.is_empty() && !record.lost {
                record.lost = true;
                self.c.records_lost += 1;
            }
        }
    }

    fn online(&self, i: u32) -> bool {
        self.nodes[i as usize].state == State::Online
    }

    /// The audit of chunk `c` by its caretaker at `now`, and the repair that follows.
    fn audit(&mut self, c: usize, now: u64) {
        let chunk = &self.chunks[c];
        if chunk.lost {
            return;
        }
        self.c.audits += 1;
        // Every holder answers and none has missed: every rule says nothing is lost (the tests
        // check this shortcut against the policy functions).
        if chunk.holders.iter().all(|&h| self.online(h)) && chunk.missed.iter().all(|&m| m == 0) {
            return;
        }
        let seen = |j: usize| HolderSeen {
            missed: chunk.missed[j],
            live: self.online(chunk.holders[j]),
            ..HolderSeen::default()
        };
        // Holders that can act (online) and that the others count as alive.
        let alive: Vec<EndpointId> = (0..self.n)
            .filter(|&j| self.online(chunk.holders[j]) && policy::caretaker_eligible(seen(j)))
            .map(|j| self.ids[chunk.holders[j] as usize])
            .collect();
        let Some(caretaker) = policy::caretaker_of(&chunk.shards, &alive) else {
            self.c.unattended += 1;
            return;
        };
        let caretaker = self.index[&caretaker];
        // The caretaker challenges every other holder; its own shard it checks on its disk.
        let online: Vec<bool> = chunk.holders.iter().map(|&h| self.online(h)).collect();
        let chunk = &mut self.chunks[c];
        for ((holder, missed), up) in chunk.holders.iter().zip(&mut chunk.missed).zip(&online) {
            if *holder == caretaker {
                continue;
            }
            if *up {
                *missed = 0;
            } else {
                *missed += 1;
            }
        }
        let lost: Vec<usize> = (0..self.n)
            .filter(|&j| {
                policy::shard_lost(HolderSeen {
                    missed: chunk.missed[j],
                    live: online[j],
                    me: chunk.holders[j] == caretaker,
                    ..HolderSeen::default()
                })
            })
            .collect();
        let kept = self.n - lost.len();
        let reachable = (0..self.n)
            .filter(|j| !lost.contains(j) && online[*j])
            .count();
        if reachable < self.k {
            self.c.unreadable += 1;
        }
        if !policy::needs_repair(kept, self.n) {
            return;
        }
        if !self.cfg.repair {
            self.c.unrepaired += 1;
            return;
        }
        // fetch_any_k needs k shards: the caretaker's own and k - 1 from the others.
        if reachable < self.k {
            self.c.deferred += 1;
            return;
        }
        let targets = self.targets(c, lost.len());
        if targets.is_empty() {
            self.c.deferred += 1;
            return;
        }
        self.c.repairs += 1;
        let local = usize::from(!lost.iter().any(|&j| self.chunks[c].holders[j] == caretaker));
        self.c.bytes_fetched += policy::repair_fetches(self.k, local) as u64 * self.shard_len;
        let mut window = None;
        for (&j, &target) in lost.iter().zip(&targets) {
            let old = self.chunks[c].holders[j];
            self.chunks[c].holders[j] = target;
            self.chunks[c].missed[j] = 0;
            let list = &mut self.nodes[old as usize].chunks;
            if let Some(p) = list.iter().position(|&x| x as usize == c) {
                list.swap_remove(p);
            }
            self.nodes[target as usize].chunks.push(c as u32);
            self.c.bytes_placed += self.shard_len;
            let old = &self.nodes[old as usize];
            if old.state == State::Gone {
                self.c.recreated_permanent += 1;
                let w = now - old.gone_at;
                window = Some(window.map_or(w, |x: u64| x.max(w)));
            } else {
                self.c.recreated_transient += 1;
            }
        }
        if let Some(w) = window {
            self.windows.push(w);
        }
    }

    /// Up to `count` repair targets for chunk `c`: `policy::repair_targets` over the live nodes
    /// among the top of its ranking (the same first targets as over all live nodes as long as
    /// enough remain; else the ranking is computed again, deeper).
    fn targets(&mut self, c: usize, count: usize) -> Vec<u32> {
        loop {
            let chunk = &self.chunks[c];
            let candidates: Vec<EndpointId> = chunk
                .ranking
                .iter()
                .filter(|&&i| self.online(i))
                .map(|&i| self.ids[i as usize])
                .collect();
            let holders: Vec<EndpointId> = chunk
                .holders
                .iter()
                .map(|&h| self.ids[h as usize])
                .collect();
            let found = policy::repair_targets(&chunk.shards, &candidates, &holders, count);
            if found.len() == count || chunk.ranking.len() == self.ids.len() {
                return found.iter().map(|id| self.index[id]).collect();
            }
            let depth = (chunk.ranking.len() * 2).min(self.ids.len());
            let ranking = top(repair_ranking(&chunk.shards, &self.ids), &self.index, depth);
            self.chunks[c].ranking = ranking;
            self.c.rankings_deepened += 1;
        }
    }

    /// A caretaking round's record placement: every record on the first RECORD_REPLICAS live
    /// nodes of its ranking, copied from a holder that is online.
    fn place_records(&mut self) {
        for (i, node) in self.nodes.iter().enumerate() {
            self.view[i] = node.state == State::Online;
        }
        for r in 0..self.records.len() {
            if self.records[r].lost {
                continue;
            }
            let first = loop {
                let record = &self.records[r];
                let first: Vec<u32> = record
                    .ranking
                    .iter()
                    .copied()
                    .filter(|&i| self.view[i as usize])
                    .take(RECORD_REPLICAS)
                    .collect();
                // Enough live entries for the placement and for every ask of a lookup.
                let in_view = record
                    .ranking
                    .iter()
                    .filter(|&&i| self.view[i as usize])
                    .count();
                if in_view >= NAME_ASKS_MAX || record.ranking.len() == self.ids.len() {
                    break first;
                }
                let depth = (record.ranking.len() * 2).min(self.ids.len());
                let ranking = top(record_ranking(&record.key, &self.ids), &self.index, depth);
                self.records[r].ranking = ranking;
                self.c.rankings_deepened += 1;
            };
            let record = &mut self.records[r];
            if !record
                .holders
                .iter()
                .any(|&h| self.nodes[h as usize].state == State::Online)
            {
                self.c.record_unreachable += 1;
                continue;
            }
            for node in first {
                if !record.holders.contains(&node) {
                    record.holders.push(node);
                    self.c.record_copies += 1;
                }
            }
        }
    }

    /// One reader looks up a random record as `resolve_name` does: it asks the first
    /// `RECORD_REPLICAS` nodes of the ranking over its view at once and, for each that does not
    /// answer, the next one down, at most `NAME_ASKS_MAX` in all. It finds the record when a
    /// node that answers holds it.
    fn lookup(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let r = self.rng.below(self.records.len());
        let record = &self.records[r];
        let ranking: Vec<u32> = record
            .ranking
            .iter()
            .copied()
            .filter(|&i| self.view[i as usize])
            .take(NAME_ASKS_MAX)
            .collect();
        let (mut next, mut asked) = (0usize, 0usize);
        let mut want = RECORD_REPLICAS.min(ranking.len());
        let mut found = false;
        while want > 0 && next < ranking.len() && asked < NAME_ASKS_MAX {
            let batch = &ranking[next..(next + want.min(NAME_ASKS_MAX - asked)).min(ranking.len())];
            next += batch.len();
            asked += batch.len();
            want = 0;
            for &i in batch {
                if self.online(i) {
                    found |= record.holders.contains(&i);
                } else {
                    want += 1;
                }
            }
        }
        self.c.lookups += 1;
        self.c.asks += asked as u64;
        self.c.asks_max = self.c.asks_max.max(asked as u64);
        if !found {
            self.c.lookups_failed += 1;
        }
    }

    /// Shards per node that is not gone, over chunks not lost.
    fn load(&self) -> Spread {
        let mut count = vec![0u64; self.nodes.len()];
        for chunk in self.chunks.iter().filter(|c| !c.lost) {
            for &h in &chunk.holders {
                count[h as usize] += 1;
            }
        }
        let present: Vec<u64> = self
            .nodes
            .iter()
            .zip(&count)
            .filter(|(n, _)| matches!(n.state, State::Online | State::Offline))
            .map(|(_, c)| *c)
            .collect();
        Spread::of(&present)
    }

    /// The same shards thrown uniformly at random on the starting nodes, `n` distinct nodes
    /// per chunk: what perfect hashing would give.
    fn uniform_baseline(&self) -> Spread {
        let mut rng = Rng::new(self.cfg.seed ^ BASELINE);
        let mut count = vec![0u64; self.cfg.nodes];
        let mut picked = Vec::with_capacity(self.n);
        for _ in 0..self.cfg.chunks {
            picked.clear();
            while picked.len() < self.n {
                let i = rng.below(self.cfg.nodes);
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            for &i in &picked {
                count[i] += 1;
            }
        }
        Spread::of(&count)
    }

    fn report(&self, start_load: Spread, baseline: Spread) -> Report {
        let horizon = self.horizon;
        let mut alive_secs = 0u64;
        let mut offline_secs = 0u64;
        for node in &self.nodes {
            if node.state == State::Waiting {
                continue;
            }
            alive_secs += node.gone_at.min(horizon) - node.joined_at;
            offline_secs += node.offline_secs;
        }
        let node_years = alive_secs as f64 / YEAR_SECS as f64;
        let years = horizon as f64 / YEAR_SECS as f64;
        let c = &self.c;
        let estimate = estimate(&Observed {
            losses: c.fails + c.leaves,
            node_years,
            windows_secs: &self.windows,
            period_secs: self.cfg.period_secs,
            n: self.n,
            m: self.n - self.k,
            chunks: self.cfg.chunks,
            years,
        });
        let end_nodes = self
            .nodes
            .iter()
            .filter(|n| matches!(n.state, State::Online | State::Offline))
            .count();
        Report {
            config: self.cfg.clone(),
            shard_len: self.shard_len,
            nodes_end: end_nodes,
            total_nodes: self.ids.len(),
            joins: c.joins,
            leaves: c.leaves,
            fails: c.fails,
            outages: c.outages,
            offline_fraction: if alive_secs > 0 {
                offline_secs as f64 / alive_secs as f64
            } else {
                0.0
            },
            live_changes: c.live_changes,
            chunks_lost: c.chunks_lost,
            audits: c.audits,
            unattended: c.unattended,
            unreadable: c.unreadable,
            deferred: c.deferred,
            unrepaired: c.unrepaired,
            repairs: c.repairs,
            recreated_transient: c.recreated_transient,
            recreated_permanent: c.recreated_permanent,
            bytes_fetched: c.bytes_fetched,
            bytes_placed: c.bytes_placed,
            estimate,
            load_start: start_load,
            load_end: self.load(),
            load_uniform: baseline,
            lookups: c.lookups,
            asks_mean: if c.lookups > 0 {
                c.asks as f64 / c.lookups as f64
            } else {
                0.0
            },
            asks_max: c.asks_max,
            lookups_failed: c.lookups_failed,
            records: self.records.len(),
            record_copies: c.record_copies,
            record_unreachable: c.record_unreachable,
            records_lost: c.records_lost,
            rankings_deepened: c.rankings_deepened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit's shortcut (every holder online, none missed: nothing to do) agrees with the
    /// policy functions.
    #[test]
    fn shortcut_agrees_with_the_policy() {
        let cfg = Config {
            chunks: 50,
            ..Config::small()
        };
        let world = World::new(cfg);
        for chunk in &world.chunks {
            let ids: Vec<EndpointId> = chunk
                .holders
                .iter()
                .map(|&h| world.ids[h as usize])
                .collect();
            let seen = HolderSeen {
                live: true,
                ..HolderSeen::default()
            };
            assert!(policy::caretaker_eligible(seen));
            let caretaker = policy::caretaker_of(&chunk.shards, &ids).unwrap();
            let lost = ids
                .iter()
                .filter(|id| {
                    policy::shard_lost(HolderSeen {
                        me: **id == caretaker,
                        ..seen
                    })
                })
                .count();
            assert_eq!(lost, 0);
            assert!(!policy::needs_repair(world.n - lost, world.n));
        }
    }

    /// Targets taken from the top of the cached ranking are the ones the full computation over
    /// every live node gives.
    #[test]
    fn cached_targets_equal_full_targets() {
        let cfg = Config {
            chunks: 40,
            ..Config::small()
        };
        let mut world = World::new(cfg);
        // Take some nodes offline, as an outage would.
        for i in (0..world.cfg.nodes).step_by(3) {
            world.nodes[i].state = State::Offline;
        }
        for c in 0..world.chunks.len() {
            let live: Vec<EndpointId> = (0..world.ids.len() as u32)
                .filter(|&i| world.online(i))
                .map(|i| world.ids[i as usize])
                .collect();
            let chunk = &world.chunks[c];
            let holders: Vec<EndpointId> = chunk
                .holders
                .iter()
                .map(|&h| world.ids[h as usize])
                .collect();
            let full = policy::repair_targets(&chunk.shards, &live, &holders, 3);
            let cached: Vec<EndpointId> = world
                .targets(c, 3)
                .into_iter()
                .map(|i| world.ids[i as usize])
                .collect();
            assert_eq!(cached, full, "chunk {c}");
        }
    }
}
