//! API keys for backends: format, scopes, storage, verification, rate limits and the audit log.
//!
//! # Goals
//! - Let nobody read a restricted artifact without a key whose scope covers it, and fail closed:
//!   a store error, an audit write error or a panic is a denial, never a grant.
//! - Never keep, log or echo a key's secret: the gateway stores a hash; the secret exists only in
//!   the answer that creates the key and in the caller's hands.
//! - Record every use of a key, allowed or denied, in a bounded audit log that requests without
//!   a key cannot wash out.
//!
//! # Key format
//!
//! `cairn_<id>_<secret>`, exactly [`KEY_LEN`] = 66 ASCII characters:
//! - `cairn_`: a fixed prefix, so secret scanners and people recognise the key;
//! - `<id>`: 16 lowercase hex digits (8 random bytes), the key's public name; it appears in
//!   listings and the audit log;
//! - `_`;
//! - `<secret>`: 43 characters of unpadded base64url (RFC 4648 §5) encoding 32 random bytes, in
//!   canonical form (the two spare bits of the last character are zero).
//!
//! [`parse_api_key`] accepts nothing else: no whitespace, no uppercase hex, no padding, no
//! other length. It runs on untrusted input before any lookup (fuzz target `apikey_parse`).
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
//! # Scopes
//!
//! A scope is `<ops>:<target>`, e.g. `read:repo:org/name`, `read:prefix:org/`,
//! `read:artifact:<cid>`. `<ops>` is a comma-separated set of operations; today only `read`
//! (repository info, listings, `HEAD` and `GET` of files) exists, and [`Op`] leaves room for
//! `write`. Targets:
//! - `repo:org/name`: that repository, model or dataset;
//! - `prefix:<p>`: every repository under the path `<p>`, which ends at a `/`: `prefix:org/`
//!   and `prefix:org` are the organisation `org` (not `org2/x`, not `org-evil/x`),
//!   `prefix:org/name` is that repository;
//! - `artifact:<cid>`: that artifact, asked by CID or through any repository revision that
//!   resolves to it.
//!
//! Requests by CID (`/artifacts/{cid}/...`) are only covered by `artifact:` scopes.
//! A key holds at most [`SCOPES_PER_KEY_MAX`] scopes.
//!
//! # Verification, in order (the first failure decides)
//! | check | answer |
//! |---|---|
//! | no `Authorization: Bearer` (scheme in any case) on a restricted artifact | 404, as if missing |
//! | key does not parse | 401 |
//! | unknown key id | 401 |
//! | hash of the secret differs (constant time) | 401 |
//! | revoked | 401 |
//! | expired (including a rotated-out key past its grace) | 401 |
//! | client IP outside the key's allow-list (if any) | 403 |
//! | no scope covers the repository or artifact with the operation | 404, as if missing |
//! | over the key's rate (token bucket, per minute) | 429 (`X-Error-Code: GatedRepo`) |
//!
//! A verified client certificate (mutual TLS) bound to a key stands in for the bearer key (the
//! first rows; then the same checks from "revoked" on): see the `clientcert` module docs.
//!
//! The 401 and 403 refusals are about the key, not about what was asked: they are given on
//! every route, for public and missing repositories too (a key sent with a public request is
//! checked, as the Hub checks tokens). The 404s are the gateway's `RepoNotFound`,
//! `RevisionNotFound` or artifact-not-found answer, byte for byte, and the gateway runs this
//! same check for a missing repository, revision or artifact (see `handlers::open_repo`), so
//! neither the answer nor the time taken tells a hidden one from a missing one. No denial
//! carries an artifact byte. A public artifact asked without a key costs no check.
//!
//! The IP allow-list holds up to [`ALLOW_IPS_PER_KEY_MAX`] CIDRs (`10.0.0.0/8`, `fd00::/8`, or a
//! bare address) and is matched against the peer socket address the gateway sees (IPv4-mapped
//! IPv6 addresses count as IPv4). A proxy in front of the gateway hides client addresses.
//!
//! Rate limits are token buckets in memory (capacity = the per-minute rate, refilled
//! continuously), one per line of keys (a key and the keys rotated from it share one bucket, so
//! rotating refills nothing), at most [`RATE_BUCKETS_MAX`] buckets; when the map is full, idle
//! buckets are dropped, and if none is idle the request is denied. Buckets start full after a
//! restart.
//!
//! # Rotation
//! A key rotates once: [`ApiKeyStore::rotate`] makes a successor and puts the key in its grace
//! period; rotating it again is refused (rotate the successor instead), so there is never more
//! than one live successor.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_artifact::Cid;
use rand::RngCore;
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::{AccessPolicy, AccessRequest, Authorizer, BoxFuture, Decision, DenialKind};
use crate::clientcert::{AuditCert, CertName, ClientCert};
use crate::registry::{REPO_PART_LEN_MAX, RepoId, now};
use crate::usage::Principal;
use crate::{Error, Registry};

pub(crate) const APIKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway-apikeys-1");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("gateway-audit-1");
const AUDIT_ANON: TableDefinition<u64, &[u8]> = TableDefinition::new("gateway-audit-anon-1");

/// The fixed prefix of every key.
pub const KEY_PREFIX: &str = "cairn_";
/// Hex digits of a key id.
pub const KEY_ID_LEN: usize = 16;
/// Base64url characters of a key secret (32 bytes).
pub const KEY_SECRET_LEN: usize = 43;
/// Length of a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_ID_LEN + 1 + KEY_SECRET_LEN;
const _: () = assert!(KEY_LEN == 66);
/// Most scopes one key holds.
pub const SCOPES_PER_KEY_MAX: usize = 32;
/// Longest scope string.
pub const SCOPE_LEN_MAX: usize = 512;
/// Most CIDRs in one key's IP allow-list.
pub const ALLOW_IPS_PER_KEY_MAX: usize = 64;
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
/// Rate-limit buckets kept in memory.
pub const RATE_BUCKETS_MAX: usize = 100_000;
/// Longest route or repository recorded in an audit entry.
const AUDIT_FIELD_LEN_MAX: usize = 256;

const HASH_CONTEXT: &str = "cairn-gateway 2025 api key secret v1";

/// Why a string is not an API key. Never contains the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not exactly [`KEY_LEN`] bytes.
    #[error("an API key is exactly 66 characters")]
    Length,
    /// Does not start with `cairn_`, or lacks the `_` after the id.
    #[error("an API key looks like cairn_<16 hex>_<43 base64url characters>")]
    Shape,
    /// The id is not 16 lowercase hex digits.
    #[error("the API key id is not 16 lowercase hex digits")]
    Id,
    /// The secret is not 43 characters of canonical unpadded base64url.
    #[error("the API key secret is not 43 characters of base64url")]
    Secret,
}

/// A key's public id: 8 bytes, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Parses 16 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != KEY_ID_LEN {
            return None;
        }
        let b = data_encoding::HEXLOWER.decode(s.as_bytes()).ok()?;
        Some(Self(b.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A parsed API key. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: KeyId,
    secret: [u8; 32],
}

impl ApiKey {
    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn generate() -> Self {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        Self {
            id: KeyId(id),
            secret,
        }
    }

    fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        h.update(&self.id.0);
        h.update(&self.secret);
        *h.finalize().as_bytes()
    }

    /// The key as the caller presents it. This is the secret: show it once, never log it.
    pub fn expose(&self) -> String {
        format!(
            "{KEY_PREFIX}{}_{}",
            self.id,
            data_encoding::BASE64URL_NOPAD.encode(&self.secret)
        )
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, <secret redacted>)", self.id)
    }
}

/// Parses an API key strictly (see the module docs for the format).
pub fn parse_api_key(s: &str) -> Result<ApiKey, KeyParseError> {
    let b = s.as_bytes();
    if b.len() != KEY_LEN {
        return Err(KeyParseError::Length);
    }
    let sep = KEY_PREFIX.len() + KEY_ID_LEN;
    if !b.starts_with(KEY_PREFIX.as_bytes()) || b[sep] != b'_' {
        return Err(KeyParseError::Shape);
    }
    // Length and prefix are ASCII-checked byte-wise above, so these slices fall on char
    // boundaries only if the bytes are ASCII; check before slicing the str.
    if !b.is_ascii() {
        return Err(KeyParseError::Shape);
    }
    let id = KeyId::parse(&s[KEY_PREFIX.len()..sep]).ok_or(KeyParseError::Id)?;
    let enc = &b[sep + 1..];
    let secret = data_encoding::BASE64URL_NOPAD
        .decode(enc)
        .map_err(|_| KeyParseError::Secret)?;
    let secret: [u8; 32] = secret.try_into().map_err(|_| KeyParseError::Secret)?;
    // Only the canonical encoding: one key, one spelling.
    if data_encoding::BASE64URL_NOPAD.encode(&secret).as_bytes() != enc {
        return Err(KeyParseError::Secret);
    }
    Ok(ApiKey { id, secret })
}

/// An operation a scope grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// Repository info, listings, `HEAD` and `GET` of files.
    Read,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
        }
    }
}

/// What a scope covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeTarget {
    /// One repository (`repo:org/name`), model or dataset.
    Repo(RepoId),
    /// Every repository under this path, which ends at a `/` (`prefix:org/` and `prefix:org`
    /// are the organisation `org`, not `org2` or `org-evil`).
    Prefix(String),
    /// One artifact (`artifact:<cid>`).
    Artifact(Cid),
}

/// A scope: operations on a target, written `read:repo:org/name` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    ops: Vec<Op>,
    target: ScopeTarget,
}

impl Scope {
    /// A scope granting `ops` (at least one) on `target`.
    pub fn new(ops: &[Op], target: ScopeTarget) -> Result<Self, Error> {
        let mut ops = ops.to_vec();
        ops.sort();
        ops.dedup();
        if ops.is_empty() {
            return Err(Error::BadRequest(
                "a scope needs at least one operation".into(),
            ));
        }
        Ok(Self { ops, target })
    }

    /// The operations granted.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// What is covered.
    pub fn target(&self) -> &ScopeTarget {
        &self.target
    }

    /// Whether this scope lets `op` reach `repo` (`org/name`, when asked by name) or `artifact`.
    pub fn covers(&self, op: Op, repo: Option<&str>, artifact: &Cid) -> bool {
        if !self.ops.contains(&op) {
            return false;
        }
        match &self.target {
            ScopeTarget::Repo(r) => repo.is_some_and(|x| {
                x.split_once('/')
                    .is_some_and(|(o, n)| o == r.org() && n == r.name())
            }),
            ScopeTarget::Prefix(p) => repo.is_some_and(|x| {
                // A prefix ends at a path segment: `acme` is `acme/...`, never `acme-evil/...`.
                let p = p.trim_end_matches('/');
                x.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
            ScopeTarget::Artifact(c) => c == artifact,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<&str> = self.ops.iter().map(|o| o.as_str()).collect();
        write!(f, "{}:", ops.join(","))?;
        match &self.target {
            ScopeTarget::Repo(r) => write!(f, "repo:{r}"),
            ScopeTarget::Prefix(p) => write!(f, "prefix:{p}"),
            ScopeTarget::Artifact(c) => write!(f, "artifact:{c}"),
        }
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::BadRequest(format!(
                "invalid scope {:?}: {why}; expected e.g. read:repo:org/name, read:prefix:org/ \
                 or read:artifact:<cid>",
                s.chars().take(80).collect::<String>()
            ))
        };
        if s.len() > SCOPE_LEN_MAX {
            return Err(bad("too long"));
        }
        let (ops, rest) = s.split_once(':').ok_or_else(|| bad("no operations"))?;
        let ops = ops
            .split(',')
            .map(|o| match o {
                "read" => Ok(Op::Read),
                _ => Err(bad("the only operation is `read`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (kind, target) = rest.split_once(':').ok_or_else(|| bad("no target"))?;
        let target = match kind {
            "repo" => ScopeTarget::Repo(target.parse().map_err(|_| bad("not an org/name"))?),
            "prefix" => {
                let ok = !target.trim_end_matches('/').is_empty()
                    && !target.starts_with('/')
                    && target.len() <= 2 * REPO_PART_LEN_MAX + 1
                    && target.matches('/').count() <= 1
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
                if !ok {
                    return Err(bad("a prefix is 1 to 193 characters of an org/name"));
                }
                ScopeTarget::Prefix(target.to_string())
            }
            "artifact" => {
                let c = Cid::try_from(target).map_err(|_| bad("not a CID"))?;
                ScopeTarget::Artifact(c)
            }
            _ => return Err(bad("the target is repo:, prefix: or artifact:")),
        };
        Scope::new(&ops, target).map_err(|_| bad("no operations"))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IP network, `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Host bits are
/// cleared on parsing, so `10.1.2.3/8` is `10.0.0.0/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && Self::mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::BadRequest(format!(
                "invalid IP network {:?}: expected e.g. 10.0.0.0/8, fd00::/8 or an address",
                s.chars().take(60).collect::<String>()
            ))
        };
        if s.len() > 64 {
            return Err(bad());
        }
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self {
            addr: Self::mask(addr, prefix),
            prefix,
        })
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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
    fn bucket(&self) -> &str {
        self.rate_bucket.as_deref().unwrap_or(&self.id)
    }
}

/// What `gateway-apikeys-1` holds per key.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) info: KeyInfo,
    /// Hex BLAKE3 (derive-key mode) of id and secret; empty for a key bound to a client
    /// certificate, which no secret matches.
    hash: String,
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
    registry: Arc<Registry>,
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

fn clip(s: &str) -> String {
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
        assert!(audit_entries_max > 0 && anon_entries_max > 0);
        let e = |x: &dyn fmt::Display| registry.err(x);
        let tx = registry.db().begin_write().map_err(|x| e(&x))?;
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
            registry,
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
        self.registry.err(e)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
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
        let id = key.id.to_string();
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
            id: key.id.to_string(),
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
        let tx = self.registry.db().begin_write().map_err(|e| self.err(e))?;
        if let Some(name) = &cert {
            crate::clientcert::bind(&tx, name, &key.id.to_string()).map_err(|e| self.err(e))?;
        }
        self.insert(&tx, &key, info)?;
        tx.commit().map_err(|e| self.err(e))?;
        tracing::info!(key_id = %key.id, "API key created");
        Ok(CreatedKey {
            id: key.id.to_string(),
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
        let tx = self.registry.db().begin_write().map_err(|e| self.err(e))?;
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
        let rtx = self.registry.db().begin_read().map_err(|e| self.err(e))?;
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
        let tx = self.registry.db().begin_write().map_err(|e| self.err(e))?;
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
            old.info.rotated_to = Some(key.id.to_string());
            let bytes = serde_json::to_vec(&old).map_err(|e| self.err(e))?;
            t.insert(id, bytes.as_slice()).map_err(|e| self.err(e))?;
            (old.info, lifetime)
        };
        let (old, lifetime) = created;
        let bucket = old.bucket().to_string();
        let info = KeyInfo {
            id: key.id.to_string(),
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
        tracing::info!(old = %clip(id), new = %key.id, grace_secs = grace.as_secs(), "API key rotated");
        Ok(CreatedKey {
            id: key.id.to_string(),
            key: key.expose(),
            expires,
        })
    }

    /// The latest `limit` audit entries, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let rtx = self.registry.db().begin_read().map_err(|e| self.err(e))?;
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
        let mut tx = self.registry.db().begin_write().map_err(|e| self.err(e))?;
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
        let rtx = self.registry.db().begin_read().map_err(|e| self.err(e))?;
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
        let mut tx = self.registry.db().begin_write().map_err(|x| self.err(x))?;
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

    /// Checks a presented key (see the table in the module docs), without rate limiting; on a
    /// public artifact (`restricted` false) only the key itself is checked, not its scopes.
    /// Returns the key's record when it may proceed, or the denial.
    fn verify(&self, q: &Query) -> Result<(KeyInfo, Option<AuditCert>), Refusal> {
        use DenialKind::*;
        let anonymous = |kind, reason: String, key_id: Option<&KeyId>| Refusal {
            kind,
            reason,
            key_id: key_id.map_or_else(|| "unknown".into(), |k| k.to_string()),
            keyed: false,
            cert: None,
        };
        let unreadable = || anonymous(Forbidden, "the key store could not be read".into(), None);
        let rtx = self.registry.db().begin_read().map_err(|_| unreadable())?;
        // A certificate bound to a key wins over a bearer header (see the `clientcert` docs).
        let by_cert = match &q.cert {
            Some(c) => self
                .key_of_certificate(&rtx, c, q.time)?
                .map(|info| (info, c.audit())),
            None => None,
        };
        let (info, cert) = match by_cert {
            Some((info, cert)) => (info, Some(cert)),
            None => (self.bearer_key(&rtx, q, anonymous)?, None),
        };
        let id = info.id.clone();
        let denied = |kind, why: &str| Refusal {
            kind,
            reason: why.to_string(),
            key_id: id.clone(),
            keyed: true,
            cert: cert.clone(),
        };
        if info.revoked {
            return Err(denied(Unauthenticated, "the API key was revoked"));
        }
        if info.expires.is_some_and(|e| q.time >= e) {
            let why = if info.rotated_to.is_some() {
                "the API key was rotated and its grace period is over"
            } else {
                "the API key has expired"
            };
            return Err(denied(Unauthenticated, why));
        }
        if !info.allow_ips.is_empty()
            && !q
                .client_ip
                .is_some_and(|ip| info.allow_ips.iter().any(|n| n.contains(ip)))
        {
            return Err(denied(
                Forbidden,
                "the API key may not be used from this address",
            ));
        }
        if !q.restricted {
            return Ok((info, cert));
        }
        let repo = q.repo.as_deref().map(|r| {
            r.strip_prefix("models/")
                .or_else(|| r.strip_prefix("datasets/"))
                .unwrap_or(r)
        });
        if !info
            .scopes
            .iter()
            .any(|s| s.covers(Op::Read, repo, &q.artifact))
        {
            return Err(denied(
                Hidden,
                "the API key has no scope for this repository",
            ));
        }
        Ok((info, cert))
    }

    /// The key record of the request's bearer key, if its secret matches.
    fn bearer_key(
        &self,
        rtx: &redb::ReadTransaction,
        q: &Query,
        anonymous: impl Fn(DenialKind, String, Option<&KeyId>) -> Refusal,
    ) -> Result<KeyInfo, Refusal> {
        use DenialKind::*;
        let Some(token) = &q.token else {
            return Err(anonymous(
                Hidden,
                "no API key (Authorization: Bearer cairn_...)".into(),
                None,
            ));
        };
        let key = parse_api_key(token)
            .map_err(|e| anonymous(Unauthenticated, format!("malformed API key: {e}"), None))?;
        let id = key.id.to_string();
        let unreadable = || anonymous(Forbidden, "the key store could not be read".into(), None);
        let t = rtx.open_table(APIKEYS).map_err(|_| unreadable())?;
        let rec = self
            .record(&t, &id)
            .map_err(|_| unreadable())?
            .ok_or_else(|| anonymous(Unauthenticated, "unknown API key".into(), None))?;
        let stored = data_encoding::HEXLOWER
            .decode(rec.hash.as_bytes())
            .map_err(|_| unreadable())?;
        // A key bound to a certificate stores no hash, so no secret matches it.
        if rec.info.client_cert.is_some()
            || !bool::from(key.hash().as_slice().ct_eq(stored.as_slice()))
        {
            // Someone holds the id but not the secret: anonymous, like any guess.
            return Err(anonymous(
                Unauthenticated,
                "unknown API key".into(),
                Some(&key.id),
            ));
        }
        Ok(rec.info)
    }
}

/// Why [`ApiKeyStore::verify`] refused a request.
pub(crate) struct Refusal {
    pub(crate) kind: DenialKind,
    pub(crate) reason: String,
    /// The key id to audit (`unknown` when none parsed).
    pub(crate) key_id: String,
    /// Whether the key's secret matched, or a verified client certificate came with the
    /// request: the entry goes to the keys' log, else to the anonymous one.
    pub(crate) keyed: bool,
    /// The client certificate the request came by, when it decided.
    pub(crate) cert: Option<AuditCert>,
}

/// A request, owned, for the blocking check.
struct Query {
    /// Whether the artifact's policy is restricted (else only the key itself is checked).
    restricted: bool,
    token: Option<String>,
    repo: Option<String>,
    artifact: Cid,
    client_ip: Option<IpAddr>,
    route: String,
    time: u64,
    /// The verified client certificate of the connection, if any.
    cert: Option<Arc<ClientCert>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-key token buckets (see the module docs).
struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    max: usize,
}

impl RateLimiter {
    /// Takes one token from `id`'s bucket; `false` when it is empty or no bucket can be had.
    fn take(&self, id: &str, per_minute: u32) -> bool {
        let now = Instant::now();
        let cap = f64::from(per_minute);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !b.contains_key(id) && b.len() >= self.max {
            // A bucket idle for a minute is full again: dropping it changes nothing.
            b.retain(|_, x| now.duration_since(x.last) < Duration::from_secs(60));
            if b.len() >= self.max {
                return false;
            }
        }
        let e = b.entry(id.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let refill = now.duration_since(e.last).as_secs_f64() * cap / 60.0;
        e.tokens = (e.tokens + refill).min(cap);
        e.last = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The [`Authorizer`] of API keys: restricted artifacts are served to keys whose scopes cover
/// them, every decision on a restricted artifact is audited, and any failure denies.
pub struct ApiKeyAuthorizer {
    store: Arc<ApiKeyStore>,
    limiter: Arc<RateLimiter>,
}

impl ApiKeyAuthorizer {
    /// Checks requests against the keys in `store`.
    pub fn new(store: Arc<ApiKeyStore>) -> Self {
        Self {
            store,
            limiter: Arc::new(RateLimiter {
                buckets: Mutex::new(HashMap::new()),
                max: RATE_BUCKETS_MAX,
            }),
        }
    }

    /// The key store.
    pub fn store(&self) -> &Arc<ApiKeyStore> {
        &self.store
    }
}

#[cfg(test)]
fn decide(store: &ApiKeyStore, limiter: &RateLimiter, q: &Query) -> Decision {
    decide_as(store, limiter, q).0
}

/// The decision, and who it was for: the key when its secret matched, else anonymous.
fn decide_as(store: &ApiKeyStore, limiter: &RateLimiter, q: &Query) -> (Decision, Principal) {
    let (decision, key_id, keyed, reason, cert) = match store.verify(q) {
        // A key used on a public artifact: nothing to audit, it is not a use of the key's
        // rights.
        Ok((info, _)) if !q.restricted => {
            return (Decision::Allow, principal_of(&info.id, true));
        }
        // A public artifact asked with a certificate bound to no key and no bearer key: the
        // certificate was checked (readable, not revoked), there is nothing else to check.
        Err(r) if !q.restricted && r.kind == DenialKind::Hidden => {
            return (Decision::Allow, Principal::Anonymous);
        }
        Ok((info, cert)) => {
            if info
                .rate_per_minute
                .is_some_and(|r| !limiter.take(info.bucket(), r))
            {
                let reason = "the API key is over its rate limit".to_string();
                (
                    Decision::Deny {
                        kind: DenialKind::RateLimited,
                        reason: reason.clone(),
                    },
                    info.id,
                    true,
                    reason,
                    cert,
                )
            } else {
                (Decision::Allow, info.id, true, "allowed".into(), cert)
            }
        }
        Err(r) => (
            Decision::Deny {
                kind: r.kind,
                reason: r.reason.clone(),
            },
            r.key_id,
            r.keyed,
            r.reason,
            r.cert,
        ),
    };
    let status = match &decision {
        Decision::Allow => 200,
        Decision::Deny { kind, .. } => kind.status(),
    };
    let entry = AuditEntry {
        seq: 0,
        time: q.time,
        key_id,
        client_ip: if keyed {
            q.client_ip.map(|i| i.to_string())
        } else {
            Some(client_key(q.client_ip))
        },
        route: clip(&q.route),
        repo: clip(
            &q.repo
                .clone()
                .unwrap_or_else(|| format!("artifact:{}", q.artifact)),
        ),
        decision: if decision == Decision::Allow {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        },
        status,
        reason,
        count: 1,
        client_cert: cert,
    };
    let principal = principal_of(&entry.key_id, keyed);
    let res = if keyed {
        store.append_audit(entry)
    } else {
        store.append_anonymous(entry)
    };
    let decision = match (res, decision) {
        (Ok(()), d) => d,
        (Err(e), Decision::Allow) => {
            // An unaudited use is not allowed.
            tracing::warn!(error = %e, "audit log append failed; denying");
            Decision::Deny {
                kind: DenialKind::Forbidden,
                reason: "the audit log could not be written".into(),
            }
        }
        (Err(e), d) => {
            // Already a denial: it stands as it is, so that a full disk changes no answer.
            tracing::warn!(error = %e, "audit log append failed");
            d
        }
    };
    (decision, principal)
}

/// The principal of a decision on key `id`: the key when its secret matched (`keyed`).
fn principal_of(id: &str, keyed: bool) -> Principal {
    match KeyId::parse(id) {
        Some(k) if keyed => Principal::Key(k),
        _ => Principal::Anonymous,
    }
}

impl Authorizer for ApiKeyAuthorizer {
    fn authorize<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(async move { self.authorize_as(policy, request).await.0 })
    }

    fn authorize_as<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, (Decision, Principal)> {
        Box::pin(async move {
            let restricted = match policy {
                // A public artifact asked without a key costs no check.
                AccessPolicy::Public
                    if request.credential.is_none() && request.client_cert.is_none() =>
                {
                    return (Decision::Allow, Principal::Anonymous);
                }
                AccessPolicy::Public => false,
                AccessPolicy::ApiKeyScopes(_) | AccessPolicy::Gated(_) => true,
            };
            let q = Query {
                restricted,
                token: request.credential.map(|c| match c {
                    crate::Credential::Bearer(t) => t.clone(),
                }),
                repo: request.repo.map(str::to_string),
                artifact: request.artifact,
                client_ip: request.client_ip,
                route: request.route.to_string(),
                time: now(),
                cert: request.client_cert.cloned(),
            };
            let (store, limiter) = (self.store.clone(), self.limiter.clone());
            // redb reads and the audit commit block: keep them off the runtime's workers.
            tokio::task::spawn_blocking(move || decide_as(&store, &limiter, &q))
                .await
                .unwrap_or_else(|_| {
                    let d = Decision::Deny {
                        kind: DenialKind::Forbidden,
                        reason: "the key check failed".into(),
                    };
                    (d, Principal::Anonymous)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_strictness() {
        let k = ApiKey::generate();
        let s = k.expose();
        assert_eq!(s.len(), KEY_LEN);
        assert_eq!(parse_api_key(&s).unwrap(), k);
        assert!(!format!("{k:?}").contains(&s[23..]));
        let id = &s[6..22];
        let sec = &s[23..];
        let cases: Vec<(String, KeyParseError)> = vec![
            (String::new(), KeyParseError::Length),
            (format!("{s} "), KeyParseError::Length),
            (format!(" {}", &s[1..]), KeyParseError::Shape),
            (format!("cairn-{id}_{sec}"), KeyParseError::Shape),
            (format!("cairn_{id}-{sec}"), KeyParseError::Shape),
            (
                format!("cairn_{}_{sec}", id.to_uppercase()),
                KeyParseError::Id,
            ),
            (format!("cairn_{}g_{sec}", &id[1..]), KeyParseError::Id),
            (format!("cairn_{id}_{}=", &sec[1..]), KeyParseError::Secret),
            (format!("cairn_{id}_{}+", &sec[1..]), KeyParseError::Secret),
            // Non-canonical: the last character's spare bits set.
            (format!("cairn_{id}_{}B", &sec[..42]), KeyParseError::Secret),
        ];
        for (c, want) in cases {
            assert_eq!(parse_api_key(&c).err(), Some(want), "{c:?}");
        }
        // Multi-byte characters of the right byte length.
        let mut m = s.clone();
        m.replace_range(60..62, "é");
        assert!(parse_api_key(&m).is_err());
    }

    #[test]
    fn scopes_parse_print_cover() {
        let cid = cairn_artifact::manifest_cid(b"x");
        for s in [
            "read:repo:org/name".to_string(),
            "read:prefix:org/".to_string(),
            format!("read:artifact:{cid}"),
        ] {
            let p: Scope = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let other = cairn_artifact::manifest_cid(b"y");
        let repo: Scope = "read:repo:org/name".parse().unwrap();
        assert!(repo.covers(Op::Read, Some("org/name"), &cid));
        assert!(!repo.covers(Op::Read, Some("org/name2"), &cid));
        assert!(!repo.covers(Op::Read, None, &cid));
        let pre: Scope = "read:prefix:org/".parse().unwrap();
        assert!(pre.covers(Op::Read, Some("org/a"), &cid));
        assert!(!pre.covers(Op::Read, Some("org2/a"), &cid));
        // A prefix ends at a path segment, with or without its `/`.
        let acm: Scope = "read:prefix:acm".parse().unwrap();
        assert!(!acm.covers(Op::Read, Some("acme-evil/x"), &cid));
        assert!(!acm.covers(Op::Read, Some("acme/x"), &cid));
        assert!(acm.covers(Op::Read, Some("acm/x"), &cid));
        let one: Scope = "read:prefix:acme/x".parse().unwrap();
        assert!(one.covers(Op::Read, Some("acme/x"), &cid));
        assert!(!one.covers(Op::Read, Some("acme/x-evil"), &cid));
        assert!(!one.covers(Op::Read, Some("acme/xy"), &cid));
        let art: Scope = format!("read:artifact:{cid}").parse().unwrap();
        assert!(art.covers(Op::Read, None, &cid));
        assert!(art.covers(Op::Read, Some("x/y"), &cid));
        assert!(!art.covers(Op::Read, None, &other));
        for bad in [
            "",
            "read",
            "read:repo:",
            "read:repo:api/x",
            "write:repo:org/name",
            "read:prefix:",
            "read:prefix:/",
            "read:prefix:/a",
            "read:prefix:a/b/c",
            "read:prefix:a b",
            "read:artifact:nope",
            "read:team:x",
            "read,:repo:a/b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!("x".repeat(600).parse::<Scope>().is_err());
    }

    #[test]
    fn ip_nets() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!n.contains("127.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    fn query(token: Option<String>, repo: &str) -> Query {
        Query {
            restricted: true,
            token,
            repo: Some(format!("models/{repo}")),
            artifact: cairn_artifact::manifest_cid(b"x"),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            route: "GET /x".into(),
            time: now(),
            cert: None,
        }
    }

    /// Retention: only the latest N audit entries stay, across appends and reopening with a
    /// smaller N; sequence numbers keep increasing.
    #[test]
    fn audit_retention_and_store() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let store = ApiKeyStore::open_with_retention(reg.clone(), 10).unwrap();
        let limiter = RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max: 10,
        };
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
        let limiter = RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max: 10,
        };
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
        let limiter = RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max: 10,
        };
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

    #[test]
    fn token_bucket() {
        let l = RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max: 2,
        };
        assert!(l.take("a", 3) && l.take("a", 3) && l.take("a", 3));
        assert!(!l.take("a", 3));
        assert!(l.take("b", 1));
        // Full map, nothing idle: fail closed.
        assert!(!l.take("c", 1));
    }
}
