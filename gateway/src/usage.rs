//! Usage per principal: requests, response body bytes and denials, as Prometheus counters and
//! as daily totals in `gateway.redb`; and a note in the audit log on a key's first use from
//! each client address.
//!
//! # Principals
//! The "who" of a request is a [`Principal`], written as a string: `key:<16 hex>` for a request
//! whose API key was verified (its secret matched: allowed, or denied as revoked, expired,
//! out of scope, from the wrong address or over its rate), `anonymous` for every other one (no
//! key, a malformed or unknown key, a wrong secret; health checks, scrapes, public files read
//! without a key). Only the authorizer names a principal, after checking the key, so a client
//! cannot make one up: a thousand made-up keys are a thousand `anonymous` requests. Later kinds
//! (a signed-in wallet, `addr:0x...`) are further variants; a client certificate mapped to a
//! key record authenticates as that key and counts as it.
//!
//! # How a request's principal reaches its counters
//! The `observe` middleware (see `handlers`) runs each request's handler inside a task-local
//! [`RequestTag`]. `AppState::authorize` asks the authorizer through
//! [`crate::Authorizer::authorize_as`], which returns the principal beside the decision, and
//! writes both into the tag ([`report`]). When the handler has answered, `observe` counts the
//! request (and a denial, if the authorizer denied it) for the tag's principal, `anonymous` when
//! nothing was authorized, and wraps the response body in a [`CountingBody`]. That body counts
//! each frame as hyper takes it to write: an aborted download counts what was handed to the
//! connection (the bytes the socket took, plus at most the few frames hyper holds in its write
//! buffer), never the `Content-Length` it promised. No handler signature carries the tag: the
//! task-local is the one channel, and a handler that authorized on another task would count as
//! `anonymous` (none does; the tests read the counters of every kind of request).
//!
//! # Prometheus (at `/metrics`, prefix `cairn_gateway_`)
//! `usage_requests_total`, `usage_body_bytes_sent_total`, `usage_denials_total` and
//! `usage_new_addresses_total`, each with one label, `principal`. The label set is bounded:
//! `anonymous`, the first [`USAGE_LABELLED_MAX`] key principals seen since the gateway started,
//! and `other` for every principal past them.
//!
//! # Daily totals (tables in `gateway.redb`, beside the API keys)
//! - `gateway-usage-1`: key `(u32 UTC day number since 1970-01-01, principal string)` → 24
//!   bytes: requests, body bytes, denials, each a little-endian `u64`. Counts are kept in memory
//!   and added to the table every [`USAGE_FLUSH_EVERY`] (10 s), whenever the totals are read,
//!   and at shutdown, in one durable commit: no fsync per request. **A crash loses the counts of
//!   the last flush interval** (at most 10 s of traffic). Rows older than
//!   [`USAGE_RETENTION_DAYS`] days are deleted at each flush, and the table keeps at most
//!   [`USAGE_ROWS_MAX`] rows (the oldest days go first).
//! - `gateway-usage-addrs-1`: key `(principal, client address)` → `u32` the UTC day the key was
//!   last used from there. A client address is an IPv4 address or the /64 of an IPv6 one (one
//!   host usually holds a whole /64). The first use of a key from an address not in the table
//!   appends an audit entry (decision `note`, reason [`FIRST_USE_REASON`], the address and the
//!   request's route, repository and status) and counts in `usage_new_addresses_total`.
//!   Addresses are kept in memory, loaded at start and written at each flush, so a restart does
//!   not announce them again (after a crash, those first seen in the last flush interval are
//!   announced once more). **Bounds**: at most [`ADDRS_PER_KEY_MAX`] addresses per key and
//!   [`ADDRS_MAX`] in all; when a key is at its bound, the address it was used from longest ago
//!   is forgotten to make room (when the whole memory is full, that of the key holding the
//!   most): a key used from more addresses than that keeps announcing each one it had
//!   forgotten, which is what an alert on new addresses should see. Addresses unused for
//!   [`USAGE_RETENTION_DAYS`] days are forgotten at start.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::access::keys::KeyId;
use crate::access::keystore::{ApiKeyStore, AuditDecision, AuditEntry};
use crate::db::GatewayDb;
use crate::registry::now;
use crate::{Error, Registry};

const USAGE: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("gateway-usage-1");
const ADDRS: TableDefinition<(&str, &str), u32> = TableDefinition::new("gateway-usage-addrs-1");

/// Key principals given a label of their own in Prometheus; the rest count as `other`.
pub const USAGE_LABELLED_MAX: usize = 1000;
/// Days of daily totals kept.
pub const USAGE_RETENTION_DAYS: u32 = 400;
/// Rows of daily totals kept (the oldest days are deleted past this).
pub const USAGE_ROWS_MAX: u64 = 100_000;
/// How often counts in memory are added to the table.
pub const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Client addresses remembered per key.
pub const ADDRS_PER_KEY_MAX: usize = 1024;
/// Client addresses remembered in all.
pub const ADDRS_MAX: usize = 65_536;
/// The reason of the audit entry written on a key's first use from a client address.
pub const FIRST_USE_REASON: &str = "first use of this key from this address";
/// (day, principal) counts kept in memory between flushes; counts of a principal that finds
/// the map full are dropped (and a warning logged at the next flush). Principals are verified
/// keys, so this takes more keys used within one flush interval than anyone makes.
const PENDING_MAX: usize = 10_000;
const ROW_LEN: usize = 24;
const _: () = assert!(ADDRS_PER_KEY_MAX <= ADDRS_MAX);

/// Who a request was decided for (see the module docs). Written `anonymous` or `key:<16 hex>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Principal {
    /// No verified credential.
    Anonymous,
    /// An API key whose secret matched (the request may still have been denied).
    Key(KeyId),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Key(id) => write!(f, "key:{id}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "anonymous" {
            return Ok(Principal::Anonymous);
        }
        s.strip_prefix("key:")
            .and_then(KeyId::parse)
            .map(Principal::Key)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "invalid principal {:?}: expected anonymous or key:<16 hex>",
                    s.chars().take(40).collect::<String>()
                ))
            })
    }
}

/// Requests, body bytes and denials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounts {
    /// HTTP requests.
    pub requests: u64,
    /// Response body bytes handed to the connection.
    pub bytes: u64,
    /// Requests the authorizer denied (401, 403, 404 as if missing, 429).
    pub denials: u64,
}

impl UsageCounts {
    fn add(&mut self, o: &UsageCounts) {
        self.requests = self.requests.saturating_add(o.requests);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.denials = self.denials.saturating_add(o.denials);
    }

    fn encode(&self) -> [u8; ROW_LEN] {
        let mut b = [0u8; ROW_LEN];
        b[..8].copy_from_slice(&self.requests.to_le_bytes());
        b[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        b[16..].copy_from_slice(&self.denials.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; ROW_LEN] = b.try_into().ok()?;
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Self {
            requests: u(0),
            bytes: u(8),
            denials: u(16),
        })
    }
}

/// One principal's totals of one UTC day (`GET /admin/usage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Unix seconds of the day's start.
    pub day_start: u64,
    /// `anonymous` or `key:<16 hex>`.
    pub principal: String,
    /// The totals.
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// The UTC day number of Unix second `secs`.
fn day_of(secs: u64) -> u32 {
    u32::try_from(secs / 86_400).unwrap_or(u32::MAX)
}

/// How client addresses are grouped: the IPv4 address, or the /64 of an IPv6 one.
pub(crate) fn client_addr(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let net = u128::from(a) & !u128::from(u64::MAX);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabel {
    principal: String,
}

/// The Prometheus side: four families over a bounded label set.
struct UsageMetrics {
    requests: Family<PrincipalLabel, Counter>,
    bytes: Family<PrincipalLabel, Counter>,
    denials: Family<PrincipalLabel, Counter>,
    new_addresses: Family<PrincipalLabel, Counter>,
    labelled: Mutex<HashSet<Principal>>,
    labelled_max: usize,
}

impl UsageMetrics {
    /// The label of `p`: its own while there is room, else `other`.
    fn label(&self, p: &Principal) -> PrincipalLabel {
        let principal = match p {
            Principal::Anonymous => "anonymous".to_string(),
            _ => {
                let mut set = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
                if set.contains(p) || set.len() < self.labelled_max {
                    set.insert(*p);
                    p.to_string()
                } else {
                    "other".to_string()
                }
            }
        };
        PrincipalLabel { principal }
    }
}

/// Counts in memory, waiting for the next flush.
#[derive(Default)]
struct Pending {
    counts: HashMap<(u32, Principal), UsageCounts>,
    /// Counts dropped since the last flush because `counts` was full.
    dropped: u64,
}

/// Remembered client addresses per key (see the module docs).
#[derive(Default)]
struct Addrs {
    by_key: HashMap<Principal, HashMap<String, u32>>,
    total: usize,
    per_key_max: usize,
    total_max: usize,
    /// Rows to write at the next flush (with the day now in `by_key`).
    dirty: HashSet<(Principal, String)>,
    /// Rows to delete at the next flush.
    gone: HashSet<(Principal, String)>,
}

impl Addrs {
    /// Notes a use of `p` from `addr` on `day`; true when the address was not remembered.
    fn see(&mut self, p: Principal, addr: &str, day: u32) -> bool {
        if let Some(d) = self.by_key.get_mut(&p).and_then(|m| m.get_mut(addr)) {
            if *d != day {
                *d = day;
                self.dirty.insert((p, addr.to_string()));
            }
            return false;
        }
        let held = self.by_key.get(&p).map_or(0, HashMap::len);
        if held >= self.per_key_max {
            self.forget_oldest(p);
        } else if self.total >= self.total_max {
            let most = self
                .by_key
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(k, _)| *k);
            if let Some(k) = most {
                self.forget_oldest(k);
            }
        }
        self.by_key
            .entry(p)
            .or_default()
            .insert(addr.to_string(), day);
        self.total += 1;
        let row = (p, addr.to_string());
        self.gone.remove(&row);
        self.dirty.insert(row);
        true
    }

    /// Forgets the address `p` was used from longest ago.
    fn forget_oldest(&mut self, p: Principal) {
        let Some(m) = self.by_key.get_mut(&p) else {
            return;
        };
        let Some(oldest) = m
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        m.remove(&oldest);
        if m.is_empty() {
            self.by_key.remove(&p);
        }
        self.total -= 1;
        let row = (p, oldest);
        self.dirty.remove(&row);
        self.gone.insert(row);
    }
}

/// Where the totals persist, and the audit log the first-use notes go to.
struct Db {
    db: Arc<GatewayDb>,
    keys: Arc<ApiKeyStore>,
}

/// The usage counters of a gateway (see the module docs).
pub struct Usage {
    db: Option<Db>,
    metrics: UsageMetrics,
    pending: Mutex<Pending>,
    addrs: Mutex<Addrs>,
    /// Orders flushes, so two never commit the same taken counts out of order.
    flushing: Mutex<()>,
}

impl Usage {
    /// Counters without persistence (a gateway without a database: Prometheus only; the first
    /// uses are remembered in memory and written nowhere).
    pub fn in_memory() -> Self {
        Self::new(None, USAGE_LABELLED_MAX, ADDRS_PER_KEY_MAX, ADDRS_MAX)
    }

    fn new(db: Option<Db>, labelled_max: usize, per_key_max: usize, total_max: usize) -> Self {
        assert!(per_key_max > 0 && per_key_max <= total_max);
        Self {
            db,
            metrics: UsageMetrics {
                requests: Family::default(),
                bytes: Family::default(),
                denials: Family::default(),
                new_addresses: Family::default(),
                labelled: Mutex::new(HashSet::new()),
                labelled_max,
            },
            pending: Mutex::default(),
            addrs: Mutex::new(Addrs {
                per_key_max,
                total_max,
                ..Addrs::default()
            }),
            flushing: Mutex::new(()),
        }
    }

    /// Opens the usage tables in `registry`'s database (creating them), drops what is past
    /// retention and loads the remembered client addresses; first-use notes go to `keys`'
    /// audit log.
    pub fn open(registry: Arc<Registry>, keys: Arc<ApiKeyStore>) -> Result<Self, Error> {
        Self::open_with_limits(
            registry,
            keys,
            USAGE_LABELLED_MAX,
            ADDRS_PER_KEY_MAX,
            ADDRS_MAX,
        )
    }

    /// [`Usage::open`] with other bounds: labelled key principals, addresses per key and in all.
    pub fn open_with_limits(
        registry: Arc<Registry>,
        keys: Arc<ApiKeyStore>,
        labelled_max: usize,
        addrs_per_key_max: usize,
        addrs_max: usize,
    ) -> Result<Self, Error> {
        Self::open_in(
            registry.db().clone(),
            keys,
            labelled_max,
            addrs_per_key_max,
            addrs_max,
        )
    }

    /// Opens the usage tables in `db` (see [`Usage::open_with_limits`]).
    pub(crate) fn open_in(
        db: Arc<GatewayDb>,
        keys: Arc<ApiKeyStore>,
        labelled_max: usize,
        addrs_per_key_max: usize,
        addrs_max: usize,
    ) -> Result<Self, Error> {
        let e = |x: &dyn std::fmt::Display| db.err(x);
        let cutoff = day_of(now()).saturating_sub(USAGE_RETENTION_DAYS);
        let mut loaded = Vec::new();
        let tx = db.redb().begin_write().map_err(|x| e(&x))?;
        {
            trim_usage(&mut tx.open_table(USAGE).map_err(|x| e(&x))?, cutoff).map_err(|x| e(&x))?;
            let mut t = tx.open_table(ADDRS).map_err(|x| e(&x))?;
            t.retain(|_, day| day >= cutoff).map_err(|x| e(&x))?;
            for r in t.iter().map_err(|x| e(&x))? {
                let (k, v) = r.map_err(|x| e(&x))?;
                let (p, a) = k.value();
                // A row this version cannot read is skipped (and forgotten at the next write
                // of its key), not an error: it only costs one more first-use note.
                if let Ok(p) = p.parse::<Principal>() {
                    loaded.push((p, a.to_string(), v.value()));
                }
            }
        }
        tx.commit().map_err(|x| e(&x))?;
        let u = Self::new(
            Some(Db { db, keys }),
            labelled_max,
            addrs_per_key_max,
            addrs_max,
        );
        {
            let mut a = u.addrs.lock().unwrap_or_else(|p| p.into_inner());
            // Most recent first, so the bounds (if they were lowered) keep the recent ones.
            loaded.sort_by_key(|x| std::cmp::Reverse(x.2));
            for (p, addr, day) in loaded {
                let held = a.by_key.get(&p).map_or(0, HashMap::len);
                if held < a.per_key_max && a.total < a.total_max {
                    a.by_key.entry(p).or_default().insert(addr, day);
                    a.total += 1;
                } else {
                    a.gone.insert((p, addr));
                }
            }
        }
        Ok(u)
    }

    /// Registers the four counter families in `registry` (see the module docs).
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let m = &self.metrics;
        registry.register(
            "usage_requests",
            "HTTP requests by principal (anonymous, key:<id>, or other past the labelled ones)",
            m.requests.clone(),
        );
        registry.register(
            "usage_body_bytes_sent",
            "Response body bytes handed to the connection, by principal",
            m.bytes.clone(),
        );
        registry.register(
            "usage_denials",
            "Requests the authorizer denied (401, 403, 404 as if missing, 429), by principal",
            m.denials.clone(),
        );
        registry.register(
            "usage_new_addresses",
            "First uses of a key from a client address it was not remembered to have used (IPv6: a /64)",
            m.new_addresses.clone(),
        );
    }

    /// Adds `counts` to `principal`'s totals of the UTC day of Unix second `at` (they reach
    /// the table at the next flush). Prometheus counters are not touched.
    pub fn record(&self, principal: &Principal, at: u64, counts: UsageCounts) {
        if self.db.is_none() {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let k = (day_of(at), *principal);
        if !p.counts.contains_key(&k) && p.counts.len() >= PENDING_MAX {
            p.dropped += 1;
            return;
        }
        p.counts.entry(k).or_default().add(&counts);
    }

    /// Counts a request that was answered, for `principal` (a denial too when `denied`), and
    /// returns what counts its body's bytes.
    pub(crate) fn request_done(self: &Arc<Self>, principal: Principal, denied: bool) -> ByteSink {
        let label = self.metrics.label(&principal);
        self.metrics.requests.get_or_create(&label).inc();
        if denied {
            self.metrics.denials.get_or_create(&label).inc();
        }
        self.record(
            &principal,
            now(),
            UsageCounts {
                requests: 1,
                bytes: 0,
                denials: u64::from(denied),
            },
        );
        ByteSink {
            counter: self.metrics.bytes.get_or_create(&label).clone(),
            usage: self.clone(),
            principal,
        }
    }

    /// Notes a use of `principal` from `ip`. On a key's first use from that client address,
    /// counts it and appends an audit note (`route`, `repo` and `status` are the request's).
    /// A note that cannot be written is logged, never a reason to deny: the use itself was
    /// audited (or denied) by the authorizer.
    pub(crate) async fn note_use(
        &self,
        principal: Principal,
        ip: IpAddr,
        route: &str,
        repo: &str,
        status: u16,
    ) {
        let Principal::Key(id) = principal else {
            return;
        };
        let addr = client_addr(ip);
        let t = now();
        let new =
            self.addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .see(principal, &addr, day_of(t));
        if !new {
            return;
        }
        let label = self.metrics.label(&principal);
        self.metrics.new_addresses.get_or_create(&label).inc();
        tracing::info!(key = %id, client = %addr, "first use of this key from this address");
        let Some(db) = &self.db else {
            return;
        };
        let entry = AuditEntry {
            seq: 0,
            time: t,
            key_id: id.to_string(),
            client_ip: Some(addr),
            route: route.chars().take(256).collect(),
            repo: repo.chars().take(256).collect(),
            decision: AuditDecision::Note,
            status,
            reason: FIRST_USE_REASON.into(),
            count: 1,
            client_cert: None,
        };
        let keys = db.keys.clone();
        match tokio::task::spawn_blocking(move || keys.append_note(entry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the first-use audit note was not written"),
            Err(e) => tracing::warn!(error = %e, "the first-use audit note was not written"),
        }
    }

    /// Adds the counts in memory to the table, writes the remembered addresses that changed,
    /// applies retention and the row bound, in one durable commit. On an error, the counts go
    /// back to memory for the next try.
    pub fn flush(&self) -> Result<(), Error> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let _order = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, dropped) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (
                std::mem::take(&mut p.counts),
                std::mem::take(&mut p.dropped),
            )
        };
        let (write, gone) = {
            let mut a = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
            let dirty = std::mem::take(&mut a.dirty);
            let write: Vec<(Principal, String, u32)> = dirty
                .into_iter()
                .filter_map(|(p, addr)| {
                    let day = *a.by_key.get(&p)?.get(&addr)?;
                    Some((p, addr, day))
                })
                .collect();
            (write, std::mem::take(&mut a.gone))
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                limit = PENDING_MAX,
                "usage counts dropped: more principals than the limit within one flush interval"
            );
        }
        if counts.is_empty() && write.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let res = write_flush(&db.db, &counts, &write, &gone);
        if let Err(e) = &res {
            tracing::warn!(error = %e, "usage flush failed; keeping the counts for the next");
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (k, c) in counts {
                if p.counts.contains_key(&k) || p.counts.len() < PENDING_MAX {
                    p.counts.entry(k).or_default().add(&c);
                }
            }
            let mut a = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
            a.dirty
                .extend(write.into_iter().map(|(p, addr, _)| (p, addr)));
            a.gone.extend(gone);
        }
        res
    }

    /// Daily totals of every principal for the UTC days from the one holding Unix second
    /// `since` on, oldest day first, after a flush.
    pub fn totals(&self, since: u64) -> Result<Vec<UsageRow>, Error> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        self.flush()?;
        let e = |x: &dyn std::fmt::Display| db.db.err(x);
        let rtx = db.db.redb().begin_read().map_err(|x| e(&x))?;
        let t = rtx.open_table(USAGE).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        for r in t.range((day_of(since), "")..).map_err(|x| e(&x))? {
            let (k, v) = r.map_err(|x| e(&x))?;
            let (day, principal) = k.value();
            let counts = UsageCounts::decode(v.value()).ok_or_else(|| {
                e(&format!(
                    "a usage row of {} bytes, not {ROW_LEN}",
                    v.value().len()
                ))
            })?;
            let day_start = u64::from(day) * 86_400;
            out.push(UsageRow {
                day: crate::handlers::iso8601(day_start)[..10].to_string(),
                day_start,
                principal: principal.to_string(),
                counts,
            });
        }
        Ok(out)
    }

    /// Flushes every `every` until `stop` completes, then once more.
    pub(crate) async fn flush_every(
        self: Arc<Self>,
        every: Duration,
        stop: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let last = tokio::select! {
                _ = &mut stop => true,
                _ = tick.tick() => false,
            };
            let u = self.clone();
            // A failure is logged by `flush` and retried at the next tick.
            let _ = tokio::task::spawn_blocking(move || u.flush()).await;
            if last {
                return;
            }
        }
    }
}

/// Deletes usage rows of days before `cutoff`, then the oldest rows past [`USAGE_ROWS_MAX`].
fn trim_usage(
    t: &mut redb::Table<'_, (u32, &'static str), &'static [u8]>,
    cutoff: u32,
) -> Result<(), redb::Error> {
    t.retain_in(..(cutoff, ""), |_, _| false)?;
    let mut len = t.len()?;
    while len > USAGE_ROWS_MAX {
        if t.pop_first()?.is_none() {
            break;
        }
        len -= 1;
    }
    Ok(())
}

fn write_flush(
    db: &GatewayDb,
    counts: &HashMap<(u32, Principal), UsageCounts>,
    write: &[(Principal, String, u32)],
    gone: &HashSet<(Principal, String)>,
) -> Result<(), Error> {
    let e = |x: &dyn std::fmt::Display| db.err(x);
    let tx = db.redb().begin_write().map_err(|x| e(&x))?;
    {
        let mut t = tx.open_table(USAGE).map_err(|x| e(&x))?;
        for ((day, p), c) in counts {
            let name = p.to_string();
            let mut total = match t.get((*day, name.as_str())).map_err(|x| e(&x))? {
                Some(v) => UsageCounts::decode(v.value()).unwrap_or_default(),
                None => UsageCounts::default(),
            };
            total.add(c);
            t.insert((*day, name.as_str()), total.encode().as_slice())
                .map_err(|x| e(&x))?;
        }
        let cutoff = day_of(now()).saturating_sub(USAGE_RETENTION_DAYS);
        trim_usage(&mut t, cutoff).map_err(|x| e(&x))?;
        let mut a = tx.open_table(ADDRS).map_err(|x| e(&x))?;
        for (p, addr) in gone {
            a.remove((p.to_string().as_str(), addr.as_str()))
                .map_err(|x| e(&x))?;
        }
        for (p, addr, day) in write {
            a.insert((p.to_string().as_str(), addr.as_str()), *day)
                .map_err(|x| e(&x))?;
        }
    }
    tx.commit().map_err(|x| e(&x))
}

/// What counts one response body's bytes: its principal's Prometheus counter and daily total.
pub(crate) struct ByteSink {
    counter: Counter,
    usage: Arc<Usage>,
    principal: Principal,
}

impl ByteSink {
    fn add(&self, n: u64) {
        self.counter.inc_by(n);
        self.usage.record(
            &self.principal,
            now(),
            UsageCounts {
                requests: 0,
                bytes: n,
                denials: 0,
            },
        );
    }
}

/// A response body that counts each data frame as hyper takes it (see the module docs).
pub(crate) struct CountingBody<B> {
    inner: B,
    sink: ByteSink,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, sink: ByteSink) -> Self {
        Self { inner, sink }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
            && !d.is_empty()
        {
            self.sink.add(d.len() as u64);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The principal a request was authorized for, and whether it was denied; filled by
/// [`report`] while the request's handler runs inside [`tagged`].
#[derive(Default)]
pub(crate) struct RequestTag(Mutex<Option<(Principal, bool)>>);

impl RequestTag {
    /// The principal (`anonymous` when nothing was authorized) and whether any check denied.
    pub(crate) fn take(&self) -> (Principal, bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or((Principal::Anonymous, false))
    }
}

tokio::task_local! {
    static TAG: Arc<RequestTag>;
}

/// Runs `f` (a request's handler) with `tag` as its request tag.
pub(crate) async fn tagged<F: Future>(tag: Arc<RequestTag>, f: F) -> F::Output {
    TAG.scope(tag, f).await
}

/// Records, in the running request's tag, who it was authorized for and whether it was denied.
/// Outside a tagged request it does nothing.
pub(crate) fn report(principal: Principal, denied: bool) {
    let _ = TAG.try_with(|t| {
        let mut g = t.0.lock().unwrap_or_else(|e| e.into_inner());
        let was_denied = g.as_ref().is_some_and(|(_, d)| *d);
        *g = Some((principal, denied || was_denied));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Principal {
        Principal::Key(KeyId::parse(&format!("{n:016x}")).unwrap())
    }

    #[test]
    fn principals_print_and_parse() {
        for p in [Principal::Anonymous, key(7)] {
            assert_eq!(p.to_string().parse::<Principal>().unwrap(), p);
        }
        assert_eq!(key(1).to_string(), "key:0000000000000001");
        for bad in ["", "other", "key:", "key:xyz", "addr:0x00", "Anonymous"] {
            assert!(bad.parse::<Principal>().is_err(), "{bad}");
        }
        assert_eq!(client_addr("10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(client_addr("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
        assert_eq!(
            client_addr("2001:db8::1:2:3:4".parse().unwrap()),
            "2001:db8::/64"
        );
    }

    /// Past the labelled bound, key principals count as `other`; anonymous always has its own.
    #[test]
    fn labels_are_bounded() {
        let u = Arc::new(Usage::new(None, 3, 4, 8));
        for n in 0..10 {
            drop(u.request_done(key(n), n % 2 == 0));
        }
        drop(u.request_done(Principal::Anonymous, true));
        let mut r = prometheus_client::registry::Registry::default();
        u.register(&mut r);
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        let series: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("usage_requests_total{"))
            .collect();
        assert_eq!(series.len(), 5, "{s}");
        assert!(
            s.contains("usage_requests_total{principal=\"other\"} 7"),
            "{s}"
        );
        assert!(s.contains("usage_requests_total{principal=\"key:0000000000000000\"} 1"));
        assert!(
            s.contains("usage_denials_total{principal=\"anonymous\"} 1"),
            "{s}"
        );
        // A principal labelled once keeps its label.
        drop(u.request_done(key(1), false));
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        assert!(s.contains("usage_requests_total{principal=\"key:0000000000000001\"} 2"));
    }

    /// The address memory: bounded per key and in all, forgetting the least recently used.
    #[test]
    fn address_memory_is_bounded() {
        let mut a = Addrs {
            per_key_max: 2,
            total_max: 3,
            ..Addrs::default()
        };
        assert!(a.see(key(1), "10.0.0.1", 5));
        assert!(!a.see(key(1), "10.0.0.1", 6));
        assert!(a.see(key(1), "10.0.0.2", 5));
        // Key 1 is full: its least recently used (10.0.0.2, day 5) goes.
        assert!(a.see(key(1), "10.0.0.3", 7));
        assert!(a.gone.contains(&(key(1), "10.0.0.2".into())));
        assert!(!a.see(key(1), "10.0.0.1", 7));
        assert!(
            a.see(key(1), "10.0.0.2", 8),
            "a forgotten address is new again"
        );
        assert_eq!(a.total, 2);
        // The whole memory is full: the key holding the most gives one up.
        assert!(a.see(key(2), "10.0.0.9", 8));
        assert!(a.see(key(3), "10.0.0.9", 8));
        assert_eq!(a.total, 3);
        assert_eq!(a.by_key[&key(1)].len(), 1);
    }

    /// Totals persist per (day, principal), across reopening; `since` picks days; retention
    /// and first-use memory survive a restart.
    #[test]
    fn totals_persist_and_filter() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let keys = Arc::new(ApiKeyStore::open(reg.clone()).unwrap());
        let t = now();
        let u = Usage::open(reg.clone(), keys.clone()).unwrap();
        let c = |r, b, d| UsageCounts {
            requests: r,
            bytes: b,
            denials: d,
        };
        u.record(&key(1), t, c(2, 100, 1));
        u.record(&key(1), t, c(1, 5, 0));
        u.record(&key(1), t - 10 * 86_400, c(7, 0, 0));
        u.record(&Principal::Anonymous, t, c(1, 0, 1));
        // Past retention: dropped at the flush.
        u.record(
            &key(2),
            t - (u64::from(USAGE_RETENTION_DAYS) + 2) * 86_400,
            c(1, 1, 1),
        );
        assert!(u.addrs.lock().unwrap().see(key(1), "10.0.0.1", day_of(t)));
        let all = u.totals(0).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].counts, c(7, 0, 0));
        let today = u.totals(t - 3600).unwrap();
        let of = |rows: &[UsageRow], p: &str| {
            rows.iter()
                .filter(|r| r.principal == p)
                .fold(UsageCounts::default(), |mut a, r| {
                    a.add(&r.counts);
                    a
                })
        };
        assert_eq!(of(&today, "key:0000000000000001"), c(3, 105, 1));
        assert_eq!(of(&today, "anonymous"), c(1, 0, 1));
        assert_eq!(today[0].day, crate::handlers::iso8601(t)[..10]);
        drop(u);
        let u = Usage::open(reg, keys).unwrap();
        assert_eq!(u.totals(0).unwrap(), all);
        assert!(
            !u.addrs.lock().unwrap().see(key(1), "10.0.0.1", day_of(t)),
            "remembered across a restart"
        );
    }
}
