//! The API-key store: keys (hashed), their rotation, and the audit logs of their uses.
//!
//! # Goals
//! - Never keep a key's secret: the store keeps a hash of it (see the `keys` module); the
//!   secret exists only in the answer that creates the key.
//! - Record every use of a key, allowed or denied, in a bounded audit log that requests without
//!   a key cannot wash out.
//!
//! # Storage (tables in `gateway.redb`, beside the registry)
//! - `gateway-apikeys-1`: key id (16 hex) → JSON `{info: KeyInfo, hash}` where `hash` is the hex
//!   BLAKE3 hash, in derive-key mode with context `"cairn-gateway 2025 api key secret v1"`, of
//!   the id's 8 bytes followed by the secret's 32 bytes. The secret has 256 bits of entropy, so a
//!   fast hash is enough: there is nothing to brute-force. Hashes are compared in constant time
//!   (`subtle`). The secret itself is never stored.
//! - `gateway-audit-1`: sequence number (u64) → JSON [`AuditEntry`], the uses of real keys
//!   (requests whose key's secret matched: allowed, or denied as revoked, expired, out of
//!   scope, from the wrong address, over the rate). **Retention**: the latest
//!   [`AUDIT_ENTRIES_MAX`] = 100 000 entries are kept; each append beyond that deletes the oldest.
//!   It also holds notes (decision `note`): a key's first use from a client address, written
//!   by the `usage` module.
//!   Appends are committed without fsync except every [`AUDIT_SYNC_EVERY`]th one (and every key
//!   or registry change, which syncs everything before it): a crash can lose at most the last
//!   63 entries, and auditing does not cost an fsync per request.
//! - `gateway-audit-anon-1`: sequence number → JSON [`AuditEntry`], the denials of requests
//!   without a valid key (none, malformed, unknown id, wrong secret). Anyone can send those, so
//!   they never go to the keys' log: they are aggregated, one entry per client address (an
//!   IPv6 client counts by its /64) per [`AUDIT_ANON_WINDOW_SECS`] = 60 s, whose `count` says
//!   how many denials it stands for (route, repository and reason are the first one's). The
//!   latest [`AUDIT_ANON_ENTRIES_MAX`] = 10 000 entries are kept. Counts are kept in memory and
//!   written at most once a second per entry (and whenever the log is read), never synced: a
//!   crash can lose the last second of counts. A flood of anonymous requests, from one address
//!   or many, therefore costs at most one entry per address and minute in its own table, and
//!   pushes out no entry about a key.
//!
//! The checks a presented key goes through, and what each failure answers, are in the
//! `keycheck` module.
//!
//! # Rotation
//! A key rotates once: [`ApiKeyStore::rotate`] makes a successor and puts the key in its grace
//! period; rotating it again is refused (rotate the successor instead), so there is never more
//! than one live successor.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::keys::ApiKey;
use super::scopes::{ALLOW_IPS_PER_KEY_MAX, IpNet, SCOPES_PER_KEY_MAX, Scope};
use crate::clientcert::{AuditCert, CertName};
use crate::db::GatewayDb;
use crate::registry::now;
use crate::{Error, Registry};

pub(crate) const APIKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway-apikeys-1");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("gateway-audit-1");
const AUDIT_ANON: TableDefinition<u64, &[u8]> = TableDefinition::new("gateway-audit-anon-1");

/// Longest key label, in bytes.
pub const LABEL_LEN_MAX: usize = 128;
/// Longest key lifetime: 100 years.
pub const KEY_LIFETIME_MAX_SECS: u64 = 100 * 365 * 86_400;
/// Audit entries kept (the oldest are deleted past this).
pub const AUDIT_ENTRIES_MAX: u64 = 100_000;
/// Every this many audit appends one is committed durably.
pub const AUDIT_SYNC_EVERY: u64 = 64;
/// Aggregated entries of anonymous denials kept (the oldest are deleted past this).
pub const AUDIT_ANON_ENTRIES_MAX: u64 = 10_000;
/// One anonymous-denial entry covers one client address for this long.
pub const AUDIT_ANON_WINDOW_SECS: u64 = 60;
/// Anonymous-denial entries whose counts are kept in memory; when more addresses are denied
/// within one window, the oldest entry is written and closed early.
const AUDIT_ANON_OPEN_MAX: usize = 4096;
/// An open anonymous-denial entry's count is written at most this often.
const AUDIT_ANON_REWRITE_EVERY: Duration = Duration::from_secs(1);
/// Longest route or repository recorded in an audit entry.
const AUDIT_FIELD_LEN_MAX: usize = 256;

/// What a new key may do (`POST /admin/keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewKey {
    /// A name for people, at most [`LABEL_LEN_MAX`] bytes.
    pub label: String,
    /// 1 to [`SCOPES_PER_KEY_MAX`] scopes.
    pub scopes: Vec<Scope>,
    /// Lifetime from now, 1 s to [`KEY_LIFETIME_MAX_SECS`]; `None` never expires.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Client networks allowed; empty allows every address.
    #[serde(default)]
    pub allow_ips: Vec<IpNet>,
    /// Requests per minute (at least 1); `None` is unlimited.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Bind the key to this client certificate name instead of a bearer secret (see the
    /// `clientcert` module docs): the key then has no secret.
    #[serde(default)]
    pub client_cert: Option<CertName>,
}

/// A key just created or rotated. `key` is the secret, shown this once; `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key's public id (16 hex).
    pub id: String,
    /// The whole key, `cairn_<id>_<secret>`; empty for a key bound to a client certificate,
    /// which has no secret.
    pub key: String,
    /// Unix seconds after which the key no longer works.
    pub expires: Option<u64>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A stored key as listed (`GET /admin/keys`): no secret, no hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's public id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Unix seconds of creation.
    pub created: u64,
    /// Unix seconds after which it no longer works.
    pub expires: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Client networks allowed; empty allows every address.
    pub allow_ips: Vec<IpNet>,
    /// Requests per minute; `None` is unlimited.
    pub rate_per_minute: Option<u32>,
    /// The id of the key that replaced it, if it was rotated.
    pub rotated_to: Option<String>,
    /// The rate-limit bucket the key draws from: for a key made by rotation, the first key of
    /// its line (so a rotation does not refill the bucket); `None` for the key's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bucket: Option<String>,
    /// The client certificate name the key is bound to; such a key has no bearer secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<CertName>,
}

impl KeyInfo {
    /// The rate-limit bucket the key draws from (see [`KeyInfo::rate_bucket`]).
    pub(crate) fn bucket(&self) -> &str {
        self.rate_bucket.as_deref().unwrap_or(&self.id)
    }
}

/// What `gateway-apikeys-1` holds per key.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) info: KeyInfo,
    /// Hex BLAKE3 (derive-key mode) of id and secret; empty for a key bound to a client
    /// certificate, which no secret matches.
    pub(crate) hash: String,
}

/// Allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// The request was served.
    Allow,
    /// The request was refused.
    Deny,
    /// Not a decision: a note about a key's use, such as its first use from a client address
    /// (see the `usage` module); `status` is what that request got.
    Note,
}

/// One use of a key (or an attempt without one) on a restricted artifact. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, increasing.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// The key id, or `unknown` when no key or no parseable key was presented.
    pub key_id: String,
    /// The peer address.
    pub client_ip: Option<String>,
    /// `METHOD /path`, without the query string.
    pub route: String,
    /// `models/org/name`, `datasets/org/name` or `artifact:<cid>`.
    pub repo: String,
    /// Allowed or denied.
    pub decision: AuditDecision,
    /// The HTTP status the decision leads to (200 for allowed uses).
    pub status: u16,
    /// Why, in words safe to show.
    pub reason: String,
    /// How many requests the entry stands for: 1 for a key's use; for an anonymous denial,
    /// every denial from the same client address in the [`AUDIT_ANON_WINDOW_SECS`] from
    /// `time`.
    #[serde(default = "one")]
    pub count: u64,
    /// The client certificate the request came by (its fingerprint and serial number, never
    /// the certificate); absent when it came by bearer key or without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<AuditCert>,
}

fn one() -> u64 {
    1
}

/// API keys and the audit log, in the gateway's redb database (see the module docs).
pub struct ApiKeyStore {
    db: Arc<GatewayDb>,
    audit_max: u64,
    /// The next audit sequence number; the lock also orders audit appends.
    audit_next: Mutex<u64>,
    anon_max: u64,
    anon: Mutex<AnonLog>,
}

/// The anonymous-denial log's state in memory: the entries still counting.
struct AnonLog {
    /// The next sequence number of `gateway-audit-anon-1`.
    next: u64,
    /// Open entries by client address (see [`client_key`]).
    open: HashMap<String, OpenAnon>,
}

/// An anonymous-denial entry still counting.
struct OpenAnon {
    entry: AuditEntry,
    /// The count last written to the table.
    written: u64,
    /// When it was last written.
    written_at: Instant,
}

/// How anonymous denials are grouped: the IPv4 address, or the /64 of an IPv6 address (one
/// host usually holds a whole /64, and could otherwise make a new entry per request).
pub(crate) fn client_key(ip: Option<IpAddr>) -> String {
    match ip.map(|i| i.to_canonical()) {
        None => "unknown".into(),
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) => {
            let net = u128::from(a) & !(u128::from(u64::MAX));
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

/// `s` cut to what an audit entry records of a route or repository.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(AUDIT_FIELD_LEN_MAX).collect()
}

impl ApiKeyStore {
    /// Opens the key store in `registry`'s database, keeping [`AUDIT_ENTRIES_MAX`] audit entries.
    pub fn open(registry: Arc<Registry>) -> Result<Self, Error> {
        Self::open_with_retention(registry, AUDIT_ENTRIES_MAX)
    }

    /// Opens the key store keeping the latest `audit_entries_max` (at least 1) audit entries
    /// of keys and [`AUDIT_ANON_ENTRIES_MAX`] of anonymous denials; older ones are deleted now
    /// and on every append.
    pub fn open_with_retention(
        registry: Arc<Registry>,
        audit_entries_max: u64,
    ) -> Result<Self, Error> {
        Self::open_with_limits(registry, audit_entries_max, AUDIT_ANON_ENTRIES_MAX)
    }

    /// Opens the key store keeping the latest `audit_entries_max` entries of keys and
    /// `anon_entries_max` of anonymous denials (both at least 1).
    pub fn open_with_limits(
        registry: Arc<Registry>,
        audit_entries_max: u64,
        anon_entries_max: u64,
    ) -> Result<Self, Error> {
        Self::open_in(registry.db().clone(), audit_entries_max, anon_entries_max)
    }

    /// Opens the key store's tables (and the client certificates') in `db`, creating them,
    /// with the limits of [`ApiKeyStore::open_with_limits`].
    pub(crate) fn open_in(
        db: Arc<GatewayDb>,
        audit_entries_max: u64,
        anon_entries_max: u64,
    ) -> Result<Self, Error> {
        assert!(audit_entries_max > 0 && anon_entries_max > 0);
        let e = |x: &dyn fmt::Display| db.err(x);
        let tx = db.redb().begin_write().map_err(|x| e(&x))?;
        let trim = |def: TableDefinition<u64, &[u8]>, max: u64| {
            let mut t = tx.open_table(def).map_err(|x| e(&x))?;
            let next = match t.last().map_err(|x| e(&x))? {
                Some((k, _)) => k.value() + 1,
                None => 0,
            };
            let keep_from = next.saturating_sub(max);
            t.retain_in(..keep_from, |_, _| false).map_err(|x| e(&x))?;
            Ok::<_, Error>(next)
        };
        tx.open_table(APIKEYS).map_err(|x| e(&x))?;
        crate::clientcert::create_tables(&tx).map_err(|x| e(&x))?;
        let next = trim(AUDIT, audit_entries_max)?;
        let anon_next = trim(AUDIT_ANON, anon_entries_max)?;
        tx.commit().map_err(|x| e(&x))?;
        Ok(Self {
            db,
            audit_max: audit_entries_max,
            audit_next: Mutex::new(next),
            anon_max: anon_entries_max,
            anon: Mutex::new(AnonLog {
                next: anon_next,
                open: HashMap::new(),
            }),
        })
    }

    fn err(&self, e: impl fmt::Display) -> Error {
        self.db.err(e)
    }

    /// The database the key store lives in (client certificates keep their tables there too).
    pub(crate) fn db(&self) -> &GatewayDb {
        &self.db
    }

    fn check_new(new: &NewKey) -> Result<(), Error> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if new.label.len() > LABEL_LEN_MAX || new.label.chars().any(char::is_control) {
            return bad(format!(
                "a key label is at most {LABEL_LEN_MAX} bytes without control characters"
            ));
        }
        if new.scopes.is_empty() || new.scopes.len() > SCOPES_PER_KEY_MAX {
            return bad(format!(
                "a key needs 1 to {SCOPES_PER_KEY_MAX} scopes, got {}",
                new.scopes.len()
            ));
        }
        if new.allow_ips.len() > ALLOW_IPS_PER_KEY_MAX {
            return bad(format!(
                "a key's IP allow-list holds at most {ALLOW_IPS_PER_KEY_MAX} networks, got {}",
                new.allow_ips.len()
            ));
        }
        if new
            .expires_in_secs
            .is_some_and(|s| s == 0 || s > KEY_LIFETIME_MAX_SECS)
        {
            return bad(format!(
                "expires_in_secs must be 1 to {KEY_LIFETIME_MAX_SECS}"
            ));
        }
        if new.rate_per_minute == Some(0) {
            return bad("rate_per_minute must be at least 1 (leave it out for no limit)".into());
        }
        Ok(())
    }

    fn insert(
        &self,
        tx: &redb::WriteTransaction,
        key: &ApiKey,
        info: KeyInfo,
    ) -> Result<(), Error> {
        let rec = KeyRecord {
            hash: if info.client_cert.is_some() {
                String::new()
            } else {
                data_encoding::HEXLOWER.encode(&key.hash())
            },
            info,
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| self.err(e))?;
        let mut t = tx.open_table(APIKEYS).map_err(|e| self.err(e))?;
        let id = key.id().to_string();
        if t.get(id.as_str()).map_err(|e| self.err(e))?.is_some() {
            // 64 random bits colliding: a broken random source, not bad luck.
            return Err(self.err("a freshly generated key id is already taken"));
        }
        t.insert(id.as_str(), bytes.as_slice())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Creates a key. The answer holds the secret; it is not kept anywhere.
    pub fn create(&self, new: NewKey) -> Result<CreatedKey, Error> {
        Self::check_new(&new)?;
        let key = ApiKey::generate();
        let created = now();
        let expires = new.expires_in_secs.map(|s| created + s);
        let info = KeyInfo {
            id: key.id().to_string(),
            label: new.label,
            scopes: new.scopes,
            created,
            expires,
            revoked: false,
            allow_ips: new.allow_ips,
            rate_per_minute: new.rate_per_minute,
            rotated_to: None,
            rate_bucket: None,
            client_cert: new.client_cert,
        };
        let cert = info.client_cert.clone();
        let tx = self.db.redb().begin_write().map_err(|e| self.err(e))?;
        if let Some(name) = &cert {
            crate::clientcert::bind(&tx, name, &key.id().to_string()).map_err(|e| self.err(e))?;
        }
        self.insert(&tx, &key, info)?;
        tx.commit().map_err(|e| self.err(e))?;
        tracing::info!(key_id = %key.id(), "API key created");
        Ok(CreatedKey {
            id: key.id().to_string(),
            // The secret of a key bound to a certificate is never stored nor shown.
            key: if cert.is_some() {
                String::new()
            } else {
                key.expose()
            },
            expires,
        })
    }

    pub(crate) fn record(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<KeyRecord>, Error> {
        match t.get(id).map_err(|e| self.err(e))? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| self.err(format!("API key record {id}: {e}"))),
            None => Ok(None),
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut KeyInfo)) -> Result<(), Error> {
        let tx = self.db.redb().begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(APIKEYS).map_err(|e| self.err(e))?;
            let mut rec = self
                .record(&t, id)?
                .ok_or_else(|| Error::KeyNotFound { id: clip(id) })?;
            f(&mut rec.info);
            let bytes = serde_json::to_vec(&rec).map_err(|e| self.err(e))?;
            t.insert(id, bytes.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every key, without secrets or hashes, ordered by id.
    pub fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        let rtx = self.db.redb().begin_read().map_err(|e| self.err(e))?;
        let t = rtx.open_table(APIKEYS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = r.map_err(|e| self.err(e))?;
            let rec: KeyRecord = serde_json::from_slice(v.value())
                .map_err(|e| self.err(format!("API key record {}: {e}", k.value())))?;
            out.push(rec.info);
        }
        Ok(out)
    }

    /// Revokes key `id` at once. Revoking twice is not an error.
    pub fn revoke(&self, id: &str) -> Result<(), Error> {
        self.update(id, |i| i.revoked = true)?;
        tracing::info!(key_id = %clip(id), "API key revoked");
        Ok(())
    }

    /// Replaces key `id` by a new key (new id and secret, same label, scopes, allow-list, rate
    /// bucket and lifetime length) and makes the old one expire `grace` from now (or earlier,
    /// if it already would). Both keys work during the grace period, drawing on one rate
    /// bucket. A revoked or expired key cannot be rotated, nor a key rotated before (rotate its
    /// successor): a key has at most one successor.
    pub fn rotate(&self, id: &str, grace: Duration) -> Result<CreatedKey, Error> {
        let t0 = now();
        let key = ApiKey::generate();
        let tx = self.db.redb().begin_write().map_err(|e| self.err(e))?;
        let created = {
            let mut t = tx.open_table(APIKEYS).map_err(|e| self.err(e))?;
            let mut old = self
                .record(&t, id)?
                .ok_or_else(|| Error::KeyNotFound { id: clip(id) })?;
            if old.info.revoked || old.info.expires.is_some_and(|e| t0 >= e) {
                return Err(Error::BadRequest(format!(
                    "API key {id} is revoked or expired; create a new key instead"
                )));
            }
            if let Some(name) = &old.info.client_cert {
                return Err(Error::BadRequest(format!(
                    "API key {id} is bound to the client certificate name {name} and has no \
                     secret to rotate; create a new key with --client-cert, then revoke this one"
                )));
            }
            if let Some(next) = &old.info.rotated_to {
                return Err(Error::BadRequest(format!(
                    "API key {id} was already rotated to {next}; rotate {next} instead"
                )));
            }
            // The new key lives as long as the old one was meant to, counted from now.
            let lifetime = old.info.expires.map(|e| e.saturating_sub(old.info.created));
            let grace_end = t0.saturating_add(grace.as_secs());
            old.info.expires = Some(old.info.expires.map_or(grace_end, |e| e.min(grace_end)));
            old.info.rotated_to = Some(key.id().to_string());
            let bytes = serde_json::to_vec(&old).map_err(|e| self.err(e))?;
            t.insert(id, bytes.as_slice()).map_err(|e| self.err(e))?;
            (old.info, lifetime)
        };
        let (old, lifetime) = created;
        let bucket = old.bucket().to_string();
        let info = KeyInfo {
            id: key.id().to_string(),
            label: old.label,
            scopes: old.scopes,
            created: t0,
            expires: lifetime.map(|l| t0 + l.max(1)),
            revoked: false,
            rate_bucket: Some(bucket),
            allow_ips: old.allow_ips,
            rate_per_minute: old.rate_per_minute,
            rotated_to: None,
            client_cert: None,
        };
        let expires = info.expires;
        self.insert(&tx, &key, info)?;
        tx.commit().map_err(|e| self.err(e))?;
        tracing::info!(old = %clip(id), new = %key.id(), grace_secs = grace.as_secs(), "API key rotated");
        Ok(CreatedKey {
            id: key.id().to_string(),
            key: key.expose(),
            expires,
        })
    }

    /// The latest `limit` audit entries, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let rtx = self.db.redb().begin_read().map_err(|e| self.err(e))?;
        let t = rtx.open_table(AUDIT).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))?.rev().take(limit) {
            let (_, v) = r.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.err(e))?);
        }
        out.reverse();
        Ok(out)
    }

    pub(crate) fn append_audit(&self, mut entry: AuditEntry) -> Result<(), Error> {
        let mut next = self.audit_next.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = *next;
        let bytes = serde_json::to_vec(&entry).map_err(|e| self.err(e))?;
        let mut tx = self.db.redb().begin_write().map_err(|e| self.err(e))?;
        if !next.is_multiple_of(AUDIT_SYNC_EVERY) {
            tx.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
        }
        {
            let mut t = tx.open_table(AUDIT).map_err(|e| self.err(e))?;
            t.insert(*next, bytes.as_slice()).map_err(|e| self.err(e))?;
            if *next >= self.audit_max {
                t.remove(*next - self.audit_max).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        *next += 1;
        Ok(())
    }

    /// Appends a note (decision [`AuditDecision::Note`]) to the keys' log.
    pub(crate) fn append_note(&self, entry: AuditEntry) -> Result<(), Error> {
        self.append_audit(entry)
    }

    /// The latest `limit` entries of anonymous denials, oldest first, with their counts up to
    /// date.
    pub fn audit_anonymous(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        {
            let mut log = self.anon.lock().unwrap_or_else(|p| p.into_inner());
            let next = log.next;
            for o in log.open.values_mut() {
                if o.entry.count != o.written {
                    self.write_anon(&o.entry, next, false)?;
                    o.written = o.entry.count;
                    o.written_at = Instant::now();
                }
            }
        }
        let rtx = self.db.redb().begin_read().map_err(|e| self.err(e))?;
        let t = rtx.open_table(AUDIT_ANON).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))?.rev().take(limit) {
            let (_, v) = r.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.err(e))?);
        }
        out.reverse();
        Ok(out)
    }

    /// Writes anonymous entry `e` (row `e.seq`), never synced. A new row pushes out the oldest
    /// past the limit; an update of a row already pushed out (`next` being the next sequence
    /// number) is dropped rather than bringing it back.
    fn write_anon(&self, e: &AuditEntry, next: u64, new: bool) -> Result<(), Error> {
        if !new && e.seq < next.saturating_sub(self.anon_max) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(e).map_err(|x| self.err(x))?;
        let mut tx = self.db.redb().begin_write().map_err(|x| self.err(x))?;
        tx.set_durability(Durability::None)
            .map_err(|x| self.err(x))?;
        {
            let mut t = tx.open_table(AUDIT_ANON).map_err(|x| self.err(x))?;
            t.insert(e.seq, bytes.as_slice()).map_err(|x| self.err(x))?;
            if new && e.seq >= self.anon_max {
                t.remove(e.seq - self.anon_max).map_err(|x| self.err(x))?;
            }
        }
        tx.commit().map_err(|x| self.err(x))
    }

    /// Counts an anonymous denial into its client address's open entry, or opens one (see the
    /// module docs).
    pub(crate) fn append_anonymous(&self, mut entry: AuditEntry) -> Result<(), Error> {
        let mut log = self.anon.lock().unwrap_or_else(|p| p.into_inner());
        let log = &mut *log;
        let key = entry.client_ip.clone().unwrap_or_else(|| "unknown".into());
        let now = Instant::now();
        if let Some(o) = log.open.get_mut(&key) {
            if entry.time >= o.entry.time
                && entry.time < o.entry.time.saturating_add(AUDIT_ANON_WINDOW_SECS)
            {
                o.entry.count += 1;
                if now.duration_since(o.written_at) >= AUDIT_ANON_REWRITE_EVERY {
                    self.write_anon(&o.entry, log.next, false)?;
                    o.written = o.entry.count;
                    o.written_at = now;
                }
                return Ok(());
            }
            // The window is over: its final count, then a new entry.
            let o = log.open.remove(&key).expect("just found");
            if o.entry.count != o.written {
                self.write_anon(&o.entry, log.next, false)?;
            }
        }
        // Bound the open entries: close those whose window is over, else the oldest. An open
        // entry is then always among the newest `open_max` rows, never one already pushed out.
        let open_max =
            AUDIT_ANON_OPEN_MAX.min(usize::try_from(self.anon_max).unwrap_or(usize::MAX));
        if log.open.len() >= open_max {
            let mut closing: Vec<String> = log
                .open
                .iter()
                .filter(|(_, o)| entry.time >= o.entry.time.saturating_add(AUDIT_ANON_WINDOW_SECS))
                .map(|(k, _)| k.clone())
                .collect();
            if closing.is_empty()
                && let Some(k) = log
                    .open
                    .iter()
                    .min_by_key(|(_, o)| o.entry.seq)
                    .map(|(k, _)| k.clone())
            {
                closing.push(k);
            }
            for k in closing {
                let o = log.open.remove(&k).expect("listed from the map");
                if o.entry.count != o.written {
                    self.write_anon(&o.entry, log.next, false)?;
                }
            }
        }
        entry.seq = log.next;
        entry.count = 1;
        self.write_anon(&entry, log.next, true)?;
        log.next += 1;
        log.open.insert(
            key,
            OpenAnon {
                entry,
                written: 1,
                written_at: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::keycheck::{Query, decide, query};
    use crate::access::ratelimit::RateLimiter;
    use crate::{Decision, DenialKind};

    /// Retention: only the latest N audit entries stay, across appends and reopening with a
    /// smaller N; sequence numbers keep increasing.
    #[test]
    fn audit_retention_and_store() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let store = ApiKeyStore::open_with_retention(reg.clone(), 10).unwrap();
        let limiter = RateLimiter::new(10);
        let k = store
            .create(NewKey {
                label: "l".into(),
                scopes: vec!["read:repo:a/b".parse().unwrap()],
                expires_in_secs: None,
                allow_ips: vec![],
                rate_per_minute: None,
                client_cert: None,
            })
            .unwrap();
        for i in 0..25 {
            let q = query(Some(k.key.clone()), if i % 2 == 0 { "a/b" } else { "a/c" });
            let d = decide(&store, &limiter, &q);
            assert_eq!(d == Decision::Allow, i % 2 == 0, "{i}");
        }
        let a = store.audit(1000).unwrap();
        assert_eq!(a.len(), 10);
        assert_eq!(a.first().unwrap().seq, 15);
        assert_eq!(a.last().unwrap().seq, 24);
        assert_eq!(store.audit(3).unwrap()[0].seq, 22);
        drop(store);
        let store = ApiKeyStore::open_with_retention(reg, 4).unwrap();
        let a = store.audit(1000).unwrap();
        assert_eq!(
            a.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [21, 22, 23, 24]
        );
        // A request without a key goes to the anonymous log, not the keys' one.
        assert_eq!(
            decide(&store, &limiter, &query(None, "a/b")),
            Decision::Deny {
                kind: DenialKind::Hidden,
                reason: "no API key (Authorization: Bearer cairn_...)".into()
            }
        );
        let a = store.audit(1000).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a.last().unwrap().seq, 24);
        let anon = store.audit_anonymous(10).unwrap();
        assert_eq!(anon.len(), 1);
        assert_eq!(
            (anon[0].key_id.as_str(), anon[0].count, anon[0].status),
            ("unknown", 1, 404)
        );
        // Listing never holds the hash; unknown ids are KeyNotFound.
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(matches!(
            store.revoke("0000000000000000"),
            Err(Error::KeyNotFound { .. })
        ));
        assert!(matches!(
            store.rotate("0000000000000000", Duration::ZERO),
            Err(Error::KeyNotFound { .. })
        ));
        // Rotation keeps the lifetime length and the scopes.
        let n = store.rotate(&k.id, Duration::from_secs(5)).unwrap();
        let list = store.list().unwrap();
        let old = list.iter().find(|i| i.id == k.id).unwrap();
        let new = list.iter().find(|i| i.id == n.id).unwrap();
        assert!(old.expires.unwrap() <= now() + 5);
        assert_eq!(new.expires, None);
        assert_eq!(new.scopes, old.scopes);
    }

    /// A key rotates once, and its successor draws on the same rate bucket.
    #[test]
    fn rotation_once_bucket_inherited() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let store = ApiKeyStore::open(reg).unwrap();
        let limiter = RateLimiter::new(10);
        let k = store
            .create(NewKey {
                label: "l".into(),
                scopes: vec!["read:repo:a/b".parse().unwrap()],
                expires_in_secs: None,
                allow_ips: vec![],
                rate_per_minute: Some(2),
                client_cert: None,
            })
            .unwrap();
        let ok = |key: &str| decide(&store, &limiter, &query(Some(key.into()), "a/b"));
        assert_eq!(ok(&k.key), Decision::Allow);
        assert_eq!(ok(&k.key), Decision::Allow);
        let n = store.rotate(&k.id, Duration::from_secs(600)).unwrap();
        // The bucket the old key emptied is the new key's too.
        assert!(matches!(
            ok(&n.key),
            Decision::Deny {
                kind: DenialKind::RateLimited,
                ..
            }
        ));
        // Rotating the old key again is refused: it has a live successor.
        match store.rotate(&k.id, Duration::from_secs(600)) {
            Err(Error::BadRequest(m)) => assert!(m.contains(&n.id), "{m}"),
            other => panic!("a second rotation of one key: {other:?}"),
        }
        // The successor rotates, and its own successor keeps the line's bucket.
        let m = store.rotate(&n.id, Duration::from_secs(600)).unwrap();
        let list = store.list().unwrap();
        let of = |id: &str| {
            list.iter()
                .find(|i| i.id == id)
                .unwrap()
                .bucket()
                .to_string()
        };
        assert_eq!(of(&m.id), k.id);
        assert_eq!(of(&n.id), k.id);
        assert_eq!(
            list.iter().filter(|i| i.rotated_to.is_none()).count(),
            1,
            "one live successor"
        );
    }

    /// Anonymous denials from one address within a window are one entry with a count; other
    /// addresses get their own; the keys' log is untouched; the anonymous table stays bounded.
    #[test]
    fn anonymous_denials_aggregate() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let store = ApiKeyStore::open_with_limits(reg, 100, 3).unwrap();
        let limiter = RateLimiter::new(10);
        let at = |ip: &str, time: u64| Query {
            client_ip: Some(ip.parse().unwrap()),
            time,
            ..query(None, "a/b")
        };
        let t0 = now();
        for _ in 0..500 {
            decide(&store, &limiter, &at("10.0.0.1", t0));
        }
        for i in 0..5u16 {
            // One IPv6 host, many addresses in its /64.
            decide(&store, &limiter, &at(&format!("2001:db8::{i:x}"), t0));
        }
        let a = store.audit_anonymous(100).unwrap();
        let counts: Vec<(String, u64)> = a
            .iter()
            .map(|e| (e.client_ip.clone().unwrap(), e.count))
            .collect();
        assert_eq!(
            counts,
            [("10.0.0.1".into(), 500), ("2001:db8::/64".into(), 5)]
        );
        // The next window from the same address is a new entry.
        decide(
            &store,
            &limiter,
            &at("10.0.0.1", t0 + AUDIT_ANON_WINDOW_SECS),
        );
        // Many addresses: the table keeps the newest 3 entries.
        for i in 0..20 {
            decide(&store, &limiter, &at(&format!("10.0.1.{i}"), t0));
        }
        let a = store.audit_anonymous(100).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.last().unwrap().client_ip.as_deref(), Some("10.0.1.19"));
        assert!(store.audit(100).unwrap().is_empty(), "no key was used");
    }
}
