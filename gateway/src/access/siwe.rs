//! Sign-In with Ethereum (EIP-4361): nonces, message checks, signatures, session tokens.
//!
//! # The flow
//! 1. `GET /auth/nonce` → a fresh nonce ([`NONCE_TTL`], single use), with the domain, URI and
//!    chains the message must name.
//! 2. The wallet signs an EIP-4361 message with `personal_sign`.
//! 3. `POST /auth/siwe {message, signature}` → a session token bound to the address, valid
//!    until the message's expiration or [`SESSION_TTL_MAX`], whichever comes first.
//! 4. The token is a bearer credential (`HF_TOKEN` for Hugging Face clients); `DELETE
//!    /auth/session` with it ends it, and `POST /admin/sessions/<id>/revoke` ends it from the
//!    operator's side.
//!
//! # What a message must say (every check fails closed, each with its own error)
//! - exactly the text the parser re-serializes (no second reading of the same bytes);
//! - the domain (authority) and an URI of the gateway's public origin, the scheme when given;
//! - a chain id the gateway is configured for;
//! - a nonce this gateway issued, not expired, not used: looked up before any signature work
//!   (so a made-up message never costs a chain call), and deleted, durably, by the sign-in that
//!   uses it, so a restart does not re-enable it;
//! - an `Expiration Time`, at most [`MESSAGE_TTL_MAX`] after `Issued At`, not passed; `Not
//!   Before` passed; `Issued At` not in the future; each within [`CLOCK_SKEW`];
//! - a signature by the address: an EOA's is recovered locally (secp256k1, EIP-191); a contract
//!   wallet's is accepted when its `isValidSignature` over the EIP-191 hash returns the ERC-1271
//!   magic value at the chain's latest block.
//!
//! # Storage (tables in `gateway.redb`)
//! - `gateway-siwe-nonces-1`: nonce → expiry (Unix seconds). At most [`NONCES_MAX`]
//!   outstanding; expired ones are deleted as new ones are issued. Issuing does not sync (a
//!   nonce lost in a crash only makes that sign-in fail); using one syncs.
//! - `gateway-siwe-sessions-1`: session id (16 hex) → JSON [`Session`], holding the BLAKE3 hash
//!   of the token's secret, never the secret. At most [`SESSIONS_MAX`]; expired ones are
//!   deleted as new ones are made.
//!
//! # Token format
//! `cairn_siwe_<id>_<secret>`: 16 lowercase hex digits of id, 43 characters of unpadded
//! base64url for 32 random bytes: [`SESSION_TOKEN_LEN`] characters. A stolen token is good for
//! what the address may read, until it expires or is revoked; it does not let anyone sign a new
//! message or move the address's tokens.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use rand::Rng;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use signinwithethereum::Message;
use subtle::ConstantTimeEq;

use super::chain::Chains;
use crate::Registry;
use crate::db::GatewayDb;
use crate::error::Error;

const NONCES: TableDefinition<&str, u64> = TableDefinition::new("gateway-siwe-nonces-1");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway-siwe-sessions-1");

/// How long a nonce may wait for its sign-in.
pub const NONCE_TTL: Duration = Duration::from_secs(600);
/// Nonces outstanding at once; past it `GET /auth/nonce` answers 503 until some expire.
pub const NONCES_MAX: u64 = 100_000;
/// Longest validity of a message (`Expiration Time` - `Issued At`).
pub const MESSAGE_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest life of a session token (never longer than its message either).
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Clock difference tolerated between the wallet and the gateway.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Live sessions at once; past it sign-ins get 503.
pub const SESSIONS_MAX: u64 = 100_000;
/// Largest `POST /auth/siwe` body.
pub const SIWE_BODY_BYTES_MAX: usize = 8 * 1024;
/// Largest message text.
pub const MESSAGE_BYTES_MAX: usize = 4 * 1024;
/// Largest signature (an EOA's is 65 bytes; a contract wallet's may be longer).
pub const SIGNATURE_BYTES_MAX: usize = 1024;
/// The prefix of session tokens.
pub const SESSION_PREFIX: &str = "cairn_siwe_";
/// Length of a session token.
pub const SESSION_TOKEN_LEN: usize = SESSION_PREFIX.len() + 16 + 1 + 43;

const HASH_CONTEXT: &str = "cairn-gateway 2026 siwe session secret v1";

/// Where the gateway is reached by users: what a message's domain and URI must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`, as in a URL.
    pub authority: String,
}

impl Origin {
    /// Reads `http(s)://host[:port]` (no path, query, user or fragment).
    pub fn parse(s: &str) -> Result<Origin, String> {
        let u = reqwest::Url::parse(s).map_err(|e| format!("public origin {s:?}: {e}"))?;
        if !matches!(u.scheme(), "http" | "https")
            || u.host_str().is_none()
            || !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some()
            || u.path() != "/"
        {
            return Err(format!(
                "public origin {s:?}: expected http(s)://host[:port] and nothing else"
            ));
        }
        let host = u.host_str().unwrap_or_default();
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Origin {
            scheme: u.scheme().to_string(),
            authority,
        })
    }

    /// `scheme://authority`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// A sign-in session, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The session id (public: in listings and the audit log).
    pub id: String,
    /// The signed-in address.
    pub address: Address,
    /// The chain the message named.
    pub chain_id: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the token is refused from then on.
    pub expires_at: u64,
    /// Revoked by the operator or by its holder.
    #[serde(default)]
    pub revoked: bool,
    /// Hex BLAKE3 (derive-key mode) of the id's 8 bytes and the secret's 32.
    hash: String,
}

/// A session token, as created (the only time the secret exists outside the holder's hands).
pub struct NewSession {
    /// The bearer token.
    pub token: String,
    /// Its session.
    pub session: Session,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"<redacted>")
            .field("session", &self.session)
            .finish()
    }
}

/// Why a sign-in was refused. Shown to the caller: says what is wrong, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    /// The body, message or signature does not parse.
    #[error("malformed sign-in: {0}")]
    Malformed(String),
    /// The message is for another site.
    #[error("the message's domain must be {0}")]
    Domain(String),
    /// The message's URI is not on this gateway.
    #[error("the message's URI must be on {0}")]
    Uri(String),
    /// The chain id is not one the gateway checks.
    #[error("chain {0} is not configured on this gateway")]
    Chain(u64),
    /// Unknown, expired or used nonce.
    #[error("unknown, expired or already used nonce")]
    Nonce,
    /// Outside the message's validity window.
    #[error("{0}")]
    Time(String),
    /// The signature is not the address's.
    #[error("the signature is not by {0}")]
    Signature(String),
    /// A contract wallet's signature could not be checked.
    #[error("the contract wallet's signature could not be checked: {0}")]
    Chain1271(String),
    /// Too many nonces or sessions outstanding.
    #[error("too many sign-ins in progress; try again later")]
    Busy,
    /// The store failed.
    #[error("the session store failed")]
    Store,
}

impl SiweError {
    /// The HTTP status: 400 for what the client sent, 401 for a bad signature or nonce, 503
    /// when full, 500 for the store.
    pub fn status(&self) -> u16 {
        match self {
            SiweError::Malformed(_)
            | SiweError::Domain(_)
            | SiweError::Uri(_)
            | SiweError::Chain(_)
            | SiweError::Time(_) => 400,
            SiweError::Nonce | SiweError::Signature(_) => 401,
            SiweError::Chain1271(_) => 502,
            SiweError::Busy => 503,
            SiweError::Store => 500,
        }
    }

    /// A short class for the audit log and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            SiweError::Malformed(_) => "malformed",
            SiweError::Domain(_) => "domain",
            SiweError::Uri(_) => "uri",
            SiweError::Chain(_) => "chain",
            SiweError::Nonce => "nonce",
            SiweError::Time(_) => "time",
            SiweError::Signature(_) => "signature",
            SiweError::Chain1271(_) => "erc1271",
            SiweError::Busy => "busy",
            SiweError::Store => "store",
        }
    }
}

/// What a session token check says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// A live session.
    Valid(Session),
    /// Malformed, unknown, wrong secret, expired or revoked: 401.
    Invalid(&'static str),
}

/// The SIWE side of the gateway: the nonce and session tables, the origin, the chains.
pub struct Siwe {
    db: Arc<GatewayDb>,
    origin: Origin,
    chains: Arc<Chains>,
    /// Session records by id, read from the table once (this gateway is the table's only
    /// writer: a revocation updates both). Bounded; the secret is checked on every request.
    sessions: quick_cache::sync::Cache<String, Session>,
    /// Orders a cache fill (table read, then insert) with a revocation (table write, then
    /// insert), so a fill never puts back a record older than a revocation.
    fill: std::sync::Mutex<()>,
}

/// Session records kept in memory.
pub const SESSION_CACHE_MAX: usize = 10_000;

fn now() -> u64 {
    crate::registry::now()
}

fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn secret_hash(id: &[u8; 8], secret: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    h.update(id);
    h.update(secret);
    *h.finalize().as_bytes()
}

/// Splits a session token into its id and secret; `None` unless it has exactly the format.
pub fn parse_session_token(t: &str) -> Option<([u8; 8], [u8; 32])> {
    if t.len() != SESSION_TOKEN_LEN {
        return None;
    }
    let rest = t.strip_prefix(SESSION_PREFIX)?;
    let (id, secret) = rest.split_at_checked(16)?;
    let secret = secret.strip_prefix('_')?;
    let id = data_encoding::HEXLOWER.decode(id.as_bytes()).ok()?;
    let secret = data_encoding::BASE64URL_NOPAD
        .decode(secret.as_bytes())
        .ok()?;
    // Canonical only: the encoding must give back the same text.
    if data_encoding::BASE64URL_NOPAD.encode(&secret) != t[t.len() - 43..] {
        return None;
    }
    Some((id.try_into().ok()?, secret.try_into().ok()?))
}

/// A nonce: 24 characters of `[A-Za-z0-9]` (about 143 bits), as EIP-4361 asks (at least 8
/// alphanumeric characters).
fn new_nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The answer of `GET /auth/nonce`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NonceAnswer {
    /// The nonce to put in the message.
    pub nonce: String,
    /// The message's `domain`.
    pub domain: String,
    /// An URI for the message (any URI on the origin is accepted).
    pub uri: String,
    /// The chains a message may name.
    pub chains: Vec<u64>,
    /// When the nonce expires (RFC 3339).
    pub expires_at: String,
    /// The longest validity a message may have, in seconds.
    pub message_ttl_max_secs: u64,
}

/// The body of `POST /auth/siwe`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiweRequest {
    /// The EIP-4361 message, exactly as signed.
    pub message: String,
    /// `0x` and the signature's hex.
    pub signature: String,
}

/// Reads a `POST /auth/siwe` body (bounded; fuzz target `siwe_request`): the message, parsed,
/// and the signature's bytes.
pub fn parse_request(body: &[u8]) -> Result<(Message, Vec<u8>), SiweError> {
    if body.len() > SIWE_BODY_BYTES_MAX {
        return Err(SiweError::Malformed(format!(
            "the body is over {SIWE_BODY_BYTES_MAX} bytes"
        )));
    }
    let req: SiweRequest = serde_json::from_slice(body).map_err(|e| {
        SiweError::Malformed(format!(
            "expected JSON {{\"message\": \"…\", \"signature\": \"0x…\"}}: {}",
            e.to_string().chars().take(120).collect::<String>()
        ))
    })?;
    if req.message.len() > MESSAGE_BYTES_MAX {
        return Err(SiweError::Malformed(format!(
            "the message is over {MESSAGE_BYTES_MAX} bytes"
        )));
    }
    let hex = req
        .signature
        .strip_prefix("0x")
        .ok_or_else(|| SiweError::Malformed("the signature must start with 0x".into()))?;
    if hex.len() > 2 * SIGNATURE_BYTES_MAX {
        return Err(SiweError::Malformed("the signature is too long".into()));
    }
    let sig = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| SiweError::Malformed("the signature is not hex".into()))?;
    if sig.is_empty() {
        return Err(SiweError::Malformed("the signature is empty".into()));
    }
    let msg: Message = req
        .message
        .parse()
        .map_err(|e: signinwithethereum::ParseError| {
            SiweError::Malformed(format!(
                "not an EIP-4361 message: {}",
                e.to_string().chars().take(120).collect::<String>()
            ))
        })?;
    // One reading of the bytes: the signature is checked over the re-serialized text, so the
    // two must be the same.
    if msg.to_string() != req.message {
        return Err(SiweError::Malformed(
            "the message is not in the canonical EIP-4361 layout".into(),
        ));
    }
    Ok((msg, sig))
}

impl Siwe {
    /// Opens the nonce and session tables in `registry`'s database.
    pub fn open(
        registry: Arc<Registry>,
        origin: Origin,
        chains: Arc<Chains>,
    ) -> Result<Self, Error> {
        Self::open_in(registry.db().clone(), origin, chains)
    }

    /// Opens the nonce and session tables in `db`, creating them.
    pub(crate) fn open_in(
        db: Arc<GatewayDb>,
        origin: Origin,
        chains: Arc<Chains>,
    ) -> Result<Self, Error> {
        let tx = db.redb().begin_write().map_err(|e| db.err(e))?;
        tx.open_table(NONCES).map_err(|e| db.err(e))?;
        tx.open_table(SESSIONS).map_err(|e| db.err(e))?;
        tx.commit().map_err(|e| db.err(e))?;
        Ok(Self {
            db,
            origin,
            chains,
            sessions: quick_cache::sync::Cache::new(SESSION_CACHE_MAX),
            fill: std::sync::Mutex::new(()),
        })
    }

    /// The origin messages must name.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The chains.
    pub fn chains(&self) -> &Arc<Chains> {
        &self.chains
    }

    /// Issues a nonce (blocking: call off the runtime's workers).
    pub fn issue_nonce(&self) -> Result<NonceAnswer, SiweError> {
        let t = now();
        let nonce = new_nonce();
        let store = |_e: &dyn fmt::Display| SiweError::Store;
        let mut tx = self.db.redb().begin_write().map_err(|e| store(&e))?;
        tx.set_durability(redb::Durability::None)
            .map_err(|e| store(&e))?;
        {
            let mut tab = tx.open_table(NONCES).map_err(|e| store(&e))?;
            let mut n = tab.len().map_err(|e| store(&e))?;
            if n >= NONCES_MAX / 2 {
                tab.retain(|_, exp| exp > t).map_err(|e| store(&e))?;
                n = tab.len().map_err(|e| store(&e))?;
            }
            if n >= NONCES_MAX {
                return Err(SiweError::Busy);
            }
            tab.insert(nonce.as_str(), t + NONCE_TTL.as_secs())
                .map_err(|e| store(&e))?;
        }
        tx.commit().map_err(|e| store(&e))?;
        Ok(NonceAnswer {
            nonce,
            domain: self.origin.authority.clone(),
            uri: self.origin.url(),
            chains: self.chains.ids(),
            expires_at: rfc3339(t + NONCE_TTL.as_secs()),
            message_ttl_max_secs: MESSAGE_TTL_MAX.as_secs(),
        })
    }

    /// Uses `nonce` up: true when it was outstanding and not expired. Durable before it
    /// returns, so a crash cannot bring a used nonce back.
    fn take_nonce(&self, nonce: &str) -> Result<bool, SiweError> {
        let store = |_e: &dyn fmt::Display| SiweError::Store;
        let tx = self.db.redb().begin_write().map_err(|e| store(&e))?;
        let live = {
            let mut tab = tx.open_table(NONCES).map_err(|e| store(&e))?;
            let exp = tab.remove(nonce).map_err(|e| store(&e))?.map(|v| v.value());
            exp.is_some_and(|e| e > now())
        };
        tx.commit().map_err(|e| store(&e))?;
        Ok(live)
    }

    /// Whether `nonce` is outstanding and not expired, without using it up (a read).
    fn nonce_live(&self, nonce: &str) -> Result<bool, SiweError> {
        let store = |_e: &dyn fmt::Display| SiweError::Store;
        let tx = self.db.redb().begin_read().map_err(|e| store(&e))?;
        let tab = tx.open_table(NONCES).map_err(|e| store(&e))?;
        let exp = tab.get(nonce).map_err(|e| store(&e))?.map(|v| v.value());
        Ok(exp.is_some_and(|e| e > now()))
    }

    /// The checks of the message that need neither the chain nor the nonce table.
    fn check_message(&self, msg: &Message, t: u64) -> Result<(), SiweError> {
        let o = &self.origin;
        if msg.domain.as_str() != o.authority {
            return Err(SiweError::Domain(o.authority.clone()));
        }
        if let Some(s) = &msg.scheme
            && s != &o.scheme
        {
            return Err(SiweError::Domain(o.url()));
        }
        let uri = msg.uri.as_str();
        let on_origin = uri == o.url()
            || uri
                .strip_prefix(&o.url())
                .is_some_and(|rest| rest.starts_with('/'));
        if !on_origin {
            return Err(SiweError::Uri(o.url()));
        }
        if !self.chains.has(msg.chain_id) {
            return Err(SiweError::Chain(msg.chain_id));
        }
        let secs = |ts: &signinwithethereum::TimeStamp| -> i64 {
            AsRef::<time::OffsetDateTime>::as_ref(ts).unix_timestamp()
        };
        let (t, skew) = (t as i64, CLOCK_SKEW.as_secs() as i64);
        let issued = secs(&msg.issued_at);
        if issued > t + skew {
            return Err(SiweError::Time(
                "the message is issued in the future".into(),
            ));
        }
        let Some(exp) = msg.expiration_time.as_ref().map(secs) else {
            return Err(SiweError::Time(
                "the message needs an Expiration Time".into(),
            ));
        };
        if exp <= t - skew {
            return Err(SiweError::Time("the message has expired".into()));
        }
        if exp - issued > MESSAGE_TTL_MAX.as_secs() as i64
            || exp > t + MESSAGE_TTL_MAX.as_secs() as i64 + skew
        {
            return Err(SiweError::Time(format!(
                "the message may be valid for at most {} hours",
                MESSAGE_TTL_MAX.as_secs() / 3600
            )));
        }
        if let Some(nbf) = msg.not_before.as_ref().map(secs)
            && nbf > t + skew
        {
            return Err(SiweError::Time("the message is not valid yet".into()));
        }
        Ok(())
    }

    /// Verifies a sign-in and makes its session (see the module docs for every check).
    pub async fn sign_in(self: &Arc<Self>, body: &[u8]) -> Result<NewSession, SiweError> {
        let (msg, sig) = parse_request(body)?;
        let t = now();
        self.check_message(&msg, t)?;
        // Before any signature work, and above all before a contract wallet's check costs a
        // chain call: the nonce must be one this gateway issued, so a made-up message costs
        // one table read, and chain calls are bounded by the nonces handed out.
        let me = self.clone();
        let nonce = msg.nonce.clone();
        if !tokio::task::spawn_blocking(move || me.nonce_live(&nonce))
            .await
            .map_err(|_| SiweError::Store)??
        {
            return Err(SiweError::Nonce);
        }
        let address = Address::from(msg.address);
        let shown = address.to_checksum(None);
        // An EOA's signature is recovered here; anything else is asked of the address as a
        // contract wallet (ERC-1271).
        let eoa = match <&[u8; 65]>::try_from(sig.as_slice()) {
            Ok(s) => msg.verify_eip191(s).is_ok(),
            Err(_) => false,
        };
        if !eoa {
            let hash = B256::from(
                msg.eip191_hash()
                    .map_err(|_| SiweError::Malformed("the message does not print".into()))?,
            );
            match self
                .chains
                .erc1271_valid(msg.chain_id, address, hash, &sig)
                .await
            {
                Ok(true) => {}
                // No contract there: an EOA whose signature did not recover to it.
                Ok(false) | Err(super::chain::ChainError::NoContract(_)) => {
                    return Err(SiweError::Signature(shown));
                }
                Err(super::chain::ChainError::Rpc(_)) => return Err(SiweError::Signature(shown)),
                Err(e) => return Err(SiweError::Chain1271(e.class().into())),
            }
        }
        // Last: the nonce is used up only by a sign-in that is otherwise good, and only once
        // (two racing requests with one nonce: one removes it, the other finds nothing).
        let me = self.clone();
        let nonce = msg.nonce.clone();
        let live = tokio::task::spawn_blocking(move || me.take_nonce(&nonce))
            .await
            .map_err(|_| SiweError::Store)??;
        if !live {
            return Err(SiweError::Nonce);
        }
        let exp = msg
            .expiration_time
            .as_ref()
            .map(|e| AsRef::<time::OffsetDateTime>::as_ref(e).unix_timestamp())
            .expect("check_message requires an expiration")
            .max(0) as u64;
        let expires_at = exp.min(t + SESSION_TTL_MAX.as_secs());
        let me = self.clone();
        let chain_id = msg.chain_id;
        tokio::task::spawn_blocking(move || me.create_session(address, chain_id, t, expires_at))
            .await
            .map_err(|_| SiweError::Store)?
    }

    fn create_session(
        &self,
        address: Address,
        chain_id: u64,
        t: u64,
        expires_at: u64,
    ) -> Result<NewSession, SiweError> {
        let mut rng = rand::rng();
        let id: [u8; 8] = rng.random();
        let secret: [u8; 32] = rng.random();
        let id_hex = data_encoding::HEXLOWER.encode(&id);
        let token = format!(
            "{SESSION_PREFIX}{id_hex}_{}",
            data_encoding::BASE64URL_NOPAD.encode(&secret)
        );
        let session = Session {
            id: id_hex.clone(),
            address,
            chain_id,
            created_at: t,
            expires_at,
            revoked: false,
            hash: data_encoding::HEXLOWER.encode(&secret_hash(&id, &secret)),
        };
        let bytes = serde_json::to_vec(&session).map_err(|_| SiweError::Store)?;
        let store = |_e: &dyn fmt::Display| SiweError::Store;
        let tx = self.db.redb().begin_write().map_err(|e| store(&e))?;
        {
            let mut tab = tx.open_table(SESSIONS).map_err(|e| store(&e))?;
            let mut n = tab.len().map_err(|e| store(&e))?;
            if n >= SESSIONS_MAX / 2 {
                tab.retain(|_, v| {
                    serde_json::from_slice::<Session>(v).is_ok_and(|s| s.expires_at > t)
                })
                .map_err(|e| store(&e))?;
                n = tab.len().map_err(|e| store(&e))?;
            }
            if n >= SESSIONS_MAX {
                return Err(SiweError::Busy);
            }
            if tab.get(id_hex.as_str()).map_err(|e| store(&e))?.is_some() {
                return Err(SiweError::Store);
            }
            tab.insert(id_hex.as_str(), bytes.as_slice())
                .map_err(|e| store(&e))?;
        }
        tx.commit().map_err(|e| store(&e))?;
        tracing::info!(session = %id_hex, address = %address, chain_id, expires_at, "wallet signed in");
        Ok(NewSession { token, session })
    }

    /// Checks a session token without blocking when its record is in memory; `None` when it
    /// must be read from the table ([`Siwe::check_token`]).
    pub fn check_token_cached(&self, token: &str) -> Option<SessionCheck> {
        let Some((id, secret)) = parse_session_token(token) else {
            return Some(SessionCheck::Invalid("the session token is malformed"));
        };
        let s = self.sessions.get(&data_encoding::HEXLOWER.encode(&id))?;
        Some(Self::verify(s, &id, &secret))
    }

    /// Checks a session token (blocking: a redb read when its record is not in memory).
    pub fn check_token(&self, token: &str) -> SessionCheck {
        let Some((id, secret)) = parse_session_token(token) else {
            return SessionCheck::Invalid("the session token is malformed");
        };
        let id_hex = data_encoding::HEXLOWER.encode(&id);
        let s = match self.sessions.get(&id_hex) {
            Some(s) => s,
            None => {
                let _fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
                let Some(s) = self.session(&id_hex) else {
                    return SessionCheck::Invalid("unknown session");
                };
                self.sessions.insert(id_hex, s.clone());
                s
            }
        };
        Self::verify(s, &id, &secret)
    }

    fn verify(s: Session, id: &[u8; 8], secret: &[u8; 32]) -> SessionCheck {
        let want = data_encoding::HEXLOWER
            .decode(s.hash.as_bytes())
            .unwrap_or_default();
        if !bool::from(want.as_slice().ct_eq(&secret_hash(id, secret))) {
            return SessionCheck::Invalid("unknown session");
        }
        if s.revoked {
            return SessionCheck::Invalid("the session was revoked");
        }
        if s.expires_at <= now() {
            return SessionCheck::Invalid("the session has expired");
        }
        SessionCheck::Valid(s)
    }

    fn session(&self, id: &str) -> Option<Session> {
        let tx = self.db.redb().begin_read().ok()?;
        let tab = tx.open_table(SESSIONS).ok()?;
        let v = tab.get(id).ok()??;
        serde_json::from_slice(v.value()).ok()
    }

    /// Revokes session `id` (its holder signing out, or the operator). Unknown: `Ok(false)`.
    pub fn revoke(&self, id: &str) -> Result<bool, Error> {
        let _fill = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut s) = self.session(id) else {
            return Ok(false);
        };
        s.revoked = true;
        let bytes = serde_json::to_vec(&s).map_err(|e| self.db.err(e))?;
        let tx = self.db.redb().begin_write().map_err(|e| self.db.err(e))?;
        {
            let mut tab = tx.open_table(SESSIONS).map_err(|e| self.db.err(e))?;
            tab.insert(id, bytes.as_slice())
                .map_err(|e| self.db.err(e))?;
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        self.sessions.insert(id.to_string(), s);
        tracing::info!(session = %id, "session revoked");
        Ok(true)
    }

    /// Live and revoked sessions not yet expired (for the operator), at most `limit`.
    pub fn sessions(&self, limit: usize) -> Result<Vec<Session>, Error> {
        let e = |x: &dyn fmt::Display| self.db.err(x);
        let tx = self.db.redb().begin_read().map_err(|x| e(&x))?;
        let tab = tx.open_table(SESSIONS).map_err(|x| e(&x))?;
        let t = now();
        let mut out = Vec::new();
        for row in tab.iter().map_err(|x| e(&x))? {
            let (_, v) = row.map_err(|x| e(&x))?;
            if let Ok(s) = serde_json::from_slice::<Session>(v.value())
                && s.expires_at > t
            {
                out.push(s);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_have_one_form() {
        let id = [7u8; 8];
        let secret = [9u8; 32];
        let t = format!(
            "{SESSION_PREFIX}{}_{}",
            data_encoding::HEXLOWER.encode(&id),
            data_encoding::BASE64URL_NOPAD.encode(&secret)
        );
        assert_eq!(t.len(), SESSION_TOKEN_LEN);
        assert_eq!(parse_session_token(&t), Some((id, secret)));
        assert_eq!(parse_session_token(&t.to_uppercase()), None);
        assert_eq!(parse_session_token(&t[..t.len() - 1]), None);
        assert_eq!(parse_session_token(&format!("{t}A")), None);
        assert_eq!(parse_session_token(&t.replacen('_', "-", 1)), None);
        // A non-canonical last character (spare bits set).
        let mut last = t.clone();
        let c = last.pop().unwrap();
        let other = if c == 'B' { 'C' } else { 'B' };
        last.push(other);
        assert!(parse_session_token(&last).is_none_or(|(_, s)| s != secret));
    }

    #[test]
    fn origins_are_scheme_and_authority_only() {
        let o = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.authority.as_str()),
            ("http", "127.0.0.1:8080")
        );
        assert_eq!(o.url(), "http://127.0.0.1:8080");
        assert_eq!(
            Origin::parse("https://models.example.org/")
                .unwrap()
                .authority,
            "models.example.org"
        );
        for bad in [
            "ftp://x",
            "http://x/path",
            "http://u:p@x",
            "http://x?q",
            "nope",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_strict() {
        let too_big = vec![b' '; SIWE_BODY_BYTES_MAX + 1];
        assert!(
            matches!(parse_request(&too_big), Err(SiweError::Malformed(m)) if m.contains("over"))
        );
        for (body, want) in [
            (r#"{"message": "x"}"#, "expected JSON"),
            (
                r#"{"message": "x", "signature": "0x00", "extra": 1}"#,
                "expected JSON",
            ),
            (r#"{"message": "x", "signature": "00"}"#, "0x"),
            (r#"{"message": "x", "signature": "0xzz"}"#, "hex"),
            (r#"{"message": "x", "signature": "0x"}"#, "empty"),
            (r#"{"message": "x", "signature": "0x00"}"#, "EIP-4361"),
            ("not json", "expected JSON"),
        ] {
            let e = parse_request(body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
    }
}
