//! Client certificates (mutual TLS) as backend credentials: what is read from a certificate,
//! how a certificate maps to an API key, and revocation by serial number or fingerprint.
//!
//! # Participants
//! - The TLS listener (`--client-ca ca.pem`) verifies the chain of a client's certificate in the
//!   handshake: a certificate from another CA, or expired, never gets a connection. A client
//!   without a certificate still connects (and may use a bearer key). The verified end-entity
//!   certificate rides in every request's extensions ([`crate::tls::PeerCertificate`]).
//! - This module reads it into a [`ClientIdentity`] and the key store decides, per request, what
//!   it may do: the same check as for a bearer key (`access::keycheck` module docs), reached
//!   another way.
//!
//! # Goals
//! - A certificate acts exactly as the API key it is bound to: same scopes, IP allow-list, rate
//!   limit bucket, expiry, revocation of the key, same audit entries (marked as coming by
//!   certificate, with its fingerprint, never the certificate itself).
//! - Fail closed: a certificate that cannot be read, that is revoked, or that two live keys
//!   claim is refused, never treated as absent.
//! - Hostile input: the certificate is parsed with bounds ([`CERT_DER_LEN_MAX`],
//!   [`CERT_NAMES_MAX`], [`CERT_NAME_LEN_MAX`], [`CERT_SERIAL_LEN_MAX`]) and never panics (fuzz
//!   target `client_cert`); the CA is the operator's, but a certificate is still bytes from a
//!   client.
//!
//! # What is read from a certificate
//! - `serial`: the serial number as lowercase hex of its magnitude, without leading zero bytes
//!   (`openssl x509 -serial` prints the same digits in uppercase); at most 20 bytes (RFC 5280
//!   §4.1.2.2).
//! - `sha256`: the SHA-256 of the certificate's DER, 64 lowercase hex digits (`openssl x509
//!   -fingerprint -sha256` prints the same bytes, uppercase with colons).
//! - names: every subject common name (`cn:`) and every DNS (`dns:`), URI (`uri:`) and e-mail
//!   (`email:`) subject alternative name. Other kinds of names (IP addresses, directory names,
//!   other names) are ignored: no key can be bound to them. A name must be 1 to
//!   [`CERT_NAME_LEN_MAX`] bytes of text without control characters (DNS, URI and e-mail names
//!   ASCII); DNS names are compared in lowercase, the others exactly, and a wildcard DNS name
//!   is only ever the literal string `*.example.com`.
//!
//! A certificate that breaks any of these rules (not DER, bytes after its end, a serial number
//! over 20 bytes, a common name in a string type other than UTF-8, printable or IA5, a name
//! with control characters, more than [`CERT_NAMES_MAX`] names, a duplicated or malformed
//! subject alternative name extension) is refused (`401`) on every route: it cannot be checked
//! against the revocation list, so it is not let through as if absent.
//!
//! # Binding a key to a certificate
//! `cairn apikey create --scope read:repo:org/m --client-cert cn:backend-1` makes a key record
//! bound to that name ([`CertName`], also `dns:`, `uri:`, `email:`). It has no bearer secret:
//! the key cannot be presented in an `Authorization` header, and it cannot be rotated (bind a
//! new key, then revoke the old one). A request whose verified certificate carries the name acts
//! as that key. Bindings live in `gateway-apikey-certnames-1` (name → key ids, a multimap),
//! beside the key records; a key is never deleted, so neither is its binding.
//!
//! # The decision, in order
//! | case | answer |
//! |---|---|
//! | no client certificate | the bearer key decides, as without mutual TLS |
//! | a certificate that cannot be read (see above) | 401 |
//! | a certificate revoked by serial number or fingerprint | 401 |
//! | names bound to two or more live keys (neither revoked nor expired) | 403: fail closed, the operator must bind it to one |
//! | names bound to exactly one live key | that key, checked as a bearer key is (IP, scope, rate) |
//! | names bound only to keys that are revoked or expired | 401, as that key would be |
//! | names bound to no key | the bearer key decides; without one, anonymous |
//!
//! **A certificate and an `Authorization: Bearer` header**: when the certificate maps to a key,
//! the certificate wins and the header is not looked at (nor audited). The certificate was proven
//! in this connection's handshake (its private key never travels, so it cannot be replayed
//! from a log or a proxy), and a backend's HTTP client often sends a stored token of its own
//! (`huggingface_hub` sends `HF_TOKEN` or its cached token to any endpoint): a stale token must
//! not break a working certificate, nor widen it. When the certificate maps to no key, the
//! bearer key is checked as usual. A revoked or unreadable certificate is refused whatever
//! header comes with it: revocation cuts the connection's identity, not one credential of it.
//!
//! Revocation is looked up on every request, not at the handshake, so revoking a certificate
//! (or its key) also refuses the next request on connections that are already open.
//!
//! # Revocation list
//! `gateway-cert-revocations-1`: `serial:<hex>` or `sha256:<hex>` → JSON [`RevokedCert`]
//! (`{serial|sha256, time, label}`); at most [`CERT_REVOCATIONS_MAX`] entries. Revoking twice
//! keeps the first entry. `cairn apikey revoke-cert --serial HEX | --fingerprint HEX`, listed by
//! `cairn apikey certs`. Hex may be given in either case, with `:` between bytes and, for a
//! serial, leading zeros.

use std::fmt;
use std::str::FromStr;

use redb::{
    MultimapTableDefinition, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::hook::DenialKind;
use crate::access::keycheck::Refusal;
use crate::access::keystore::KeyInfo;
use crate::registry::now;
use crate::{ApiKeyStore, Error, LABEL_LEN_MAX};

/// Certificate name → ids of the keys bound to it.
pub(crate) const CERT_NAMES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("gateway-apikey-certnames-1");
/// `serial:<hex>` or `sha256:<hex>` → JSON [`RevokedCert`].
pub(crate) const CERT_REVOKED: TableDefinition<&str, &[u8]> =
    TableDefinition::new("gateway-cert-revocations-1");

/// Longest client certificate read, in DER bytes.
pub const CERT_DER_LEN_MAX: usize = 16 * 1024;
/// Most names (common names and DNS, URI, e-mail SANs) one certificate may carry.
pub const CERT_NAMES_MAX: usize = 64;
/// Longest certificate name, in bytes.
pub const CERT_NAME_LEN_MAX: usize = 512;
/// Longest serial number, in bytes (RFC 5280 §4.1.2.2).
pub const CERT_SERIAL_LEN_MAX: usize = 20;
/// Most revoked certificates kept.
pub const CERT_REVOCATIONS_MAX: u64 = 100_000;
/// Most keys looked at for one certificate: past this many bound keys it is ambiguous anyway.
const BOUND_KEYS_READ_MAX: usize = 16;

/// The kind of a certificate name a key can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CertNameKind {
    /// A subject common name (`cn:`).
    Cn,
    /// A DNS subject alternative name (`dns:`), compared in lowercase.
    Dns,
    /// A URI subject alternative name (`uri:`).
    Uri,
    /// An e-mail (RFC 822) subject alternative name (`email:`).
    Email,
}

impl CertNameKind {
    fn as_str(self) -> &'static str {
        match self {
            CertNameKind::Cn => "cn",
            CertNameKind::Dns => "dns",
            CertNameKind::Uri => "uri",
            CertNameKind::Email => "email",
        }
    }
}

/// A certificate name, written `cn:backend-1`, `dns:backend.example`, `uri:spiffe://x/y` or
/// `email:ops@example.com` (see the module docs for what a name may hold).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertName {
    kind: CertNameKind,
    value: String,
}

impl CertName {
    /// A name of `kind`, normalized (DNS names in lowercase), or why it cannot be one.
    pub fn new(kind: CertNameKind, value: &str) -> Result<Self, &'static str> {
        if value.is_empty() || value.len() > CERT_NAME_LEN_MAX {
            return Err("a certificate name is 1 to 512 bytes");
        }
        if value.chars().any(char::is_control) {
            return Err("a certificate name has no control characters");
        }
        if kind != CertNameKind::Cn && !value.is_ascii() {
            return Err("a DNS, URI or e-mail name is ASCII");
        }
        let value = if kind == CertNameKind::Dns {
            value.to_ascii_lowercase()
        } else {
            value.to_string()
        };
        Ok(Self { kind, value })
    }

    /// The kind of name.
    pub fn kind(&self) -> CertNameKind {
        self.kind
    }

    /// The name itself.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

impl FromStr for CertName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::BadRequest(format!(
                "invalid certificate name {:?}: {why}; expected cn:<common name>, dns:<name>, \
                 uri:<uri> or email:<address>",
                s.chars().take(80).collect::<String>()
            ))
        };
        let (kind, value) = s.split_once(':').ok_or_else(|| bad("no kind"))?;
        let kind = match kind {
            "cn" => CertNameKind::Cn,
            "dns" => CertNameKind::Dns,
            "uri" => CertNameKind::Uri,
            "email" => CertNameKind::Email,
            _ => return Err(bad("the kind is cn, dns, uri or email")),
        };
        CertName::new(kind, value).map_err(bad)
    }
}

impl Serialize for CertName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a client certificate could not be read. Never holds the certificate's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Longer than [`CERT_DER_LEN_MAX`].
    #[error("the client certificate is longer than {CERT_DER_LEN_MAX} bytes")]
    TooLong,
    /// Not a DER X.509 certificate, or one with a malformed or duplicated extension this
    /// module reads.
    #[error("the client certificate is not a readable X.509 certificate: {0}")]
    Malformed(String),
    /// Bytes after the certificate's end.
    #[error("the client certificate has bytes after its end")]
    Trailing,
    /// A serial number over [`CERT_SERIAL_LEN_MAX`] bytes.
    #[error("the client certificate's serial number is longer than {CERT_SERIAL_LEN_MAX} bytes")]
    Serial,
    /// More than [`CERT_NAMES_MAX`] names.
    #[error("the client certificate has more than {CERT_NAMES_MAX} names")]
    TooManyNames,
    /// A name that is not usable text.
    #[error("a {kind} name of the client certificate is not usable: {why}")]
    Name {
        /// `cn`, `dns`, `uri` or `email`.
        kind: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Lowercase hex of the SHA-256 of `der`.
pub fn cert_sha256(der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(der))
}

/// What a client certificate says about its holder (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    serial: String,
    sha256: String,
    names: Vec<CertName>,
}

impl ClientIdentity {
    /// Reads a DER certificate (see the module docs for the rules). Does not verify the chain
    /// or the validity period: the TLS handshake did.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        if der.len() > CERT_DER_LEN_MAX {
            return Err(CertError::TooLong);
        }
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::Malformed(e.to_string().chars().take(200).collect()))?;
        if !rest.is_empty() {
            return Err(CertError::Trailing);
        }
        let raw = cert.raw_serial();
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        let magnitude = &raw[start..];
        if magnitude.len() > CERT_SERIAL_LEN_MAX {
            return Err(CertError::Serial);
        }
        let serial = if magnitude.is_empty() {
            "00".to_string()
        } else {
            data_encoding::HEXLOWER.encode(magnitude)
        };
        let mut names = Vec::new();
        let mut push = |kind: CertNameKind, value: &str| {
            if names.len() >= CERT_NAMES_MAX {
                return Err(CertError::TooManyNames);
            }
            let n = CertName::new(kind, value).map_err(|why| CertError::Name {
                kind: kind.as_str(),
                why,
            })?;
            names.push(n);
            Ok(())
        };
        for cn in cert.subject().iter_common_name() {
            let v = cn.as_str().map_err(|_| CertError::Name {
                kind: "cn",
                why: "not a UTF-8, printable or IA5 string",
            })?;
            push(CertNameKind::Cn, v)?;
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertError::Malformed(format!("subject alternative names: {e}")))?;
        if let Some(san) = san {
            use x509_parser::extensions::GeneralName;
            for g in &san.value.general_names {
                match g {
                    GeneralName::DNSName(v) => push(CertNameKind::Dns, v)?,
                    GeneralName::URI(v) => push(CertNameKind::Uri, v)?,
                    GeneralName::RFC822Name(v) => push(CertNameKind::Email, v)?,
                    GeneralName::Invalid(..) => {
                        return Err(CertError::Malformed(
                            "a subject alternative name does not parse".into(),
                        ));
                    }
                    // No key can be bound to these: they match nothing.
                    _ => {}
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(Self {
            serial,
            sha256: cert_sha256(der),
            names,
        })
    }

    /// The serial number, lowercase hex without leading zero bytes.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The SHA-256 of the DER, 64 lowercase hex digits.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The names keys can be bound to, sorted, without duplicates.
    pub fn names(&self) -> &[CertName] {
        &self.names
    }
}

/// A verified client certificate as a request presents it: its fingerprint, and what could be
/// read from it. `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct ClientCert {
    sha256: String,
    identity: Result<ClientIdentity, CertError>,
}

impl ClientCert {
    /// Reads the certificate the TLS handshake verified.
    pub fn from_der(der: &[u8]) -> Self {
        Self {
            sha256: cert_sha256(der),
            identity: ClientIdentity::from_der(der),
        }
    }

    /// The SHA-256 of the DER, 64 lowercase hex digits (known even when the rest is not).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What could be read from it.
    pub fn identity(&self) -> Result<&ClientIdentity, &CertError> {
        self.identity.as_ref()
    }

    /// How the audit log names it.
    pub(crate) fn audit(&self) -> AuditCert {
        AuditCert {
            sha256: self.sha256.clone(),
            serial: self.identity.as_ref().ok().map(|i| i.serial.clone()),
        }
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientCert(sha256 {})", self.sha256)
    }
}

/// The certificate a request came by, as an audit entry records it: never the certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCert {
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// The serial number, lowercase hex; absent when the certificate could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// What to revoke: a serial number or a fingerprint, each as canonical lowercase hex.
/// Serialized as `{"serial": "<hex>"}` or `{"sha256": "<hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CertRevocation {
    /// Every certificate with this serial number (lowercase hex, no leading zero bytes).
    Serial(String),
    /// The certificate whose DER has this SHA-256 (64 lowercase hex digits).
    Sha256(String),
}

/// `s` as bytes: hex in either case, optionally with `:` between bytes (as openssl prints).
fn hex_bytes(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    let bad = || {
        Error::BadRequest(format!(
            "invalid {what} {:?}: expected hex digits, optionally with `:` between bytes",
            s.chars().take(100).collect::<String>()
        ))
    };
    if s.len() > 200 {
        return Err(bad());
    }
    let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
    let digits = digits
        .strip_prefix("0x")
        .unwrap_or(&digits)
        .to_ascii_lowercase();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let digits = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    data_encoding::HEXLOWER
        .decode(digits.as_bytes())
        .map_err(|_| bad())
}

impl CertRevocation {
    /// A serial number, hex (any case, `:` between bytes and leading zeros allowed).
    pub fn serial(hex: &str) -> Result<Self, Error> {
        let b = hex_bytes(hex, "serial number")?;
        let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        let m = &b[start..];
        if m.len() > CERT_SERIAL_LEN_MAX {
            return Err(Error::BadRequest(format!(
                "a serial number is at most {CERT_SERIAL_LEN_MAX} bytes, got {}",
                m.len()
            )));
        }
        Ok(CertRevocation::Serial(if m.is_empty() {
            "00".into()
        } else {
            data_encoding::HEXLOWER.encode(m)
        }))
    }

    /// A SHA-256 fingerprint, 32 bytes of hex (any case, `:` between bytes allowed).
    pub fn fingerprint(hex: &str) -> Result<Self, Error> {
        let b = hex_bytes(hex, "SHA-256 fingerprint")?;
        if b.len() != 32 {
            return Err(Error::BadRequest(format!(
                "a SHA-256 fingerprint is 32 bytes (64 hex digits), got {}",
                b.len()
            )));
        }
        Ok(CertRevocation::Sha256(data_encoding::HEXLOWER.encode(&b)))
    }

    /// The same value brought to its canonical form (a value from the network or disk).
    fn canonical(&self) -> Result<Self, Error> {
        match self {
            CertRevocation::Serial(s) => Self::serial(s),
            CertRevocation::Sha256(s) => Self::fingerprint(s),
        }
    }

    fn table_key(&self) -> String {
        match self {
            CertRevocation::Serial(s) => format!("serial:{s}"),
            CertRevocation::Sha256(s) => format!("sha256:{s}"),
        }
    }
}

impl fmt::Display for CertRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRevocation::Serial(s) => write!(f, "serial number {s}"),
            CertRevocation::Sha256(s) => write!(f, "SHA-256 fingerprint {s}"),
        }
    }
}

/// A revoked certificate, as listed (`GET /admin/certs/revoked`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    /// What was revoked.
    #[serde(flatten)]
    pub what: CertRevocation,
    /// Unix seconds of the revocation.
    pub time: u64,
    /// A note for people (at most 128 bytes).
    #[serde(default)]
    pub label: String,
}

/// `POST /admin/certs/revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeCert {
    /// What to revoke.
    #[serde(flatten)]
    pub what: CertRevocation,
    /// A note for people (at most 128 bytes, no control characters).
    #[serde(default)]
    pub label: String,
}

/// Creates the certificate tables (at store opening, in its write transaction).
pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_multimap_table(CERT_NAMES)?;
    tx.open_table(CERT_REVOKED)?;
    Ok(())
}

/// Binds key `id` to `name` (in the key's creating transaction).
pub(crate) fn bind(
    tx: &redb::WriteTransaction,
    name: &CertName,
    id: &str,
) -> Result<(), redb::Error> {
    let mut t = tx.open_multimap_table(CERT_NAMES)?;
    t.insert(name.to_string().as_str(), id)?;
    Ok(())
}

impl ApiKeyStore {
    /// Revokes every certificate matching `r.what` from the next request on (open connections
    /// included). Revoking twice keeps the first entry and is not an error.
    pub fn revoke_cert(&self, r: RevokeCert) -> Result<RevokedCert, Error> {
        if r.label.len() > LABEL_LEN_MAX || r.label.chars().any(char::is_control) {
            return Err(Error::BadRequest(format!(
                "a revocation label is at most {LABEL_LEN_MAX} bytes without control characters"
            )));
        }
        let what = r.what.canonical()?;
        let db = self.db();
        let e = |x: &dyn fmt::Display| db.err(x);
        let key = what.table_key();
        let tx = db.redb().begin_write().map_err(|x| e(&x))?;
        let entry = {
            let mut t = tx.open_table(CERT_REVOKED).map_err(|x| e(&x))?;
            if let Some(v) = t.get(key.as_str()).map_err(|x| e(&x))? {
                return serde_json::from_slice(v.value())
                    .map_err(|x| e(&format!("revoked certificate {key}: {x}")));
            }
            if t.len().map_err(|x| e(&x))? >= CERT_REVOCATIONS_MAX {
                return Err(Error::BadRequest(format!(
                    "the gateway keeps at most {CERT_REVOCATIONS_MAX} revoked certificates; \
                     revoke the keys bound to them instead, or move their holders to a new CA"
                )));
            }
            let entry = RevokedCert {
                what: what.clone(),
                time: now(),
                label: r.label,
            };
            let bytes = serde_json::to_vec(&entry).map_err(|x| e(&x))?;
            t.insert(key.as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
            entry
        };
        tx.commit().map_err(|x| e(&x))?;
        tracing::info!(revoked = %what, "client certificate revoked");
        Ok(entry)
    }

    /// Every revoked certificate, fingerprints first, each kind in order.
    pub fn revoked_certs(&self) -> Result<Vec<RevokedCert>, Error> {
        let db = self.db();
        let e = |x: &dyn fmt::Display| db.err(x);
        let rtx = db.redb().begin_read().map_err(|x| e(&x))?;
        let t = rtx.open_table(CERT_REVOKED).map_err(|x| e(&x))?;
        let mut out: Vec<RevokedCert> = Vec::new();
        for r in t.iter().map_err(|x| e(&x))? {
            let (k, v) = r.map_err(|x| e(&x))?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|x| e(&format!("revoked certificate {}: {x}", k.value())))?,
            );
        }
        out.sort_by_key(|r| matches!(r.what, CertRevocation::Serial(_)));
        Ok(out)
    }

    /// The key a presented certificate acts as (see the table in the module docs): `Ok(None)`
    /// when it is bound to no key, a refusal when it is unreadable, revoked or ambiguous.
    /// The key returned still goes through the key's own checks (revoked, expired, IP, scope).
    pub(crate) fn key_of_certificate(
        &self,
        rtx: &ReadTransaction,
        cert: &ClientCert,
        time: u64,
    ) -> Result<Option<KeyInfo>, Refusal> {
        let refuse = |kind, reason: String, key_id: &str| Refusal {
            kind,
            reason,
            key_id: key_id.to_string(),
            keyed: true,
            cert: Some(cert.audit()),
        };
        let unreadable = || {
            refuse(
                DenialKind::Forbidden,
                "the key store could not be read".into(),
                "unknown",
            )
        };
        let id = cert
            .identity()
            .map_err(|e| refuse(DenialKind::Unauthenticated, e.to_string(), "unknown"))?;
        let names = rtx
            .open_multimap_table(CERT_NAMES)
            .map_err(|_| unreadable())?;
        let mut ids: Vec<String> = Vec::new();
        'names: for n in id.names() {
            for v in names
                .get(n.to_string().as_str())
                .map_err(|_| unreadable())?
            {
                let v = v.map_err(|_| unreadable())?.value().to_string();
                if !ids.contains(&v) {
                    ids.push(v);
                }
                if ids.len() >= BOUND_KEYS_READ_MAX {
                    break 'names;
                }
            }
        }
        let keys = rtx
            .open_table(crate::access::keystore::APIKEYS)
            .map_err(|_| unreadable())?;
        let mut bound = Vec::new();
        for i in &ids {
            if let Some(rec) = self.record(&keys, i).map_err(|_| unreadable())? {
                bound.push(rec.info);
            }
        }
        let revoked = rtx.open_table(CERT_REVOKED).map_err(|_| unreadable())?;
        for what in [
            CertRevocation::Sha256(id.sha256().to_string()),
            CertRevocation::Serial(id.serial().to_string()),
        ] {
            if revoked
                .get(what.table_key().as_str())
                .map_err(|_| unreadable())?
                .is_some()
            {
                let key_id = bound.first().map_or("unknown", |k| k.id.as_str());
                return Err(refuse(
                    DenialKind::Unauthenticated,
                    "the client certificate was revoked".into(),
                    key_id,
                ));
            }
        }
        let live: Vec<&KeyInfo> = bound
            .iter()
            .filter(|k| !k.revoked && k.expires.is_none_or(|e| time < e))
            .collect();
        match live.as_slice() {
            [] => Ok(bound.into_iter().next()),
            [one] => Ok(Some((*one).clone())),
            many => {
                let ids: Vec<&str> = many.iter().map(|k| k.id.as_str()).collect();
                Err(refuse(
                    DenialKind::Forbidden,
                    format!(
                        "the client certificate's names are bound to more than one API key ({}); \
                         the gateway refuses it until one is revoked",
                        ids.join(", ")
                    ),
                    &ids.join(","),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::{BmpString, Ia5String};
    use rcgen::{CertificateParams, DnType, DnValue, IsCa, Issuer, KeyPair, SanType, SerialNumber};

    /// A CA and a leaf signed by it, with the names and serial given.
    fn leaf(cn: &[&str], sans: Vec<SanType>, serial: &[u8]) -> Vec<u8> {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for c in cn {
            p.distinguished_name.push(DnType::CommonName, *c);
        }
        p.subject_alt_names = sans;
        p.serial_number = Some(SerialNumber::from_slice(serial));
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn ia5(s: &str) -> Ia5String {
        s.try_into().unwrap()
    }

    #[test]
    fn identity_of_a_certificate() {
        let der = leaf(
            &["backend-1"],
            vec![
                SanType::DnsName(ia5("Backend.Example")),
                SanType::URI(ia5("spiffe://cairn/backend")),
                SanType::Rfc822Name(ia5("ops@example.com")),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
            ],
            &[0x00, 0x8f, 0x01],
        );
        let id = ClientIdentity::from_der(&der).unwrap();
        assert_eq!(id.serial(), "8f01");
        assert_eq!(
            id.sha256(),
            data_encoding::HEXLOWER.encode(&Sha256::digest(&der))
        );
        let names: Vec<String> = id.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "cn:backend-1",
                "dns:backend.example",
                "uri:spiffe://cairn/backend",
                "email:ops@example.com"
            ]
        );
        // Matches the string a key is bound with, DNS in any case.
        assert!(id.names().contains(&"dns:BACKEND.example".parse().unwrap()));
        assert!(!id.names().contains(&"cn:Backend-1".parse().unwrap()));
    }

    /// Certificates made by openssl (the fuzz seeds): the serial number and fingerprint read
    /// are what `openssl x509 -serial -fingerprint -sha256` prints, typed into a revocation.
    #[test]
    fn openssl_certificates_match_what_openssl_prints() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/client_cert/");
        let read =
            |f: &str| ClientIdentity::from_der(&std::fs::read(format!("{seeds}{f}")).unwrap());
        let sans = read("sans").unwrap();
        assert_eq!(
            CertRevocation::Serial(sans.serial().into()),
            CertRevocation::serial("112233445566778899AABBCCDDEEFF00112233").unwrap()
        );
        assert_eq!(
            CertRevocation::Sha256(sans.sha256().into()),
            CertRevocation::fingerprint(
                "70:7A:C1:03:86:03:3D:8A:1E:49:E9:BD:52:08:17:92:65:05:99:27:A5:AC:0A:66:C7:88:\
                 B0:B3:5B:A8:3E:9C"
            )
            .unwrap()
        );
        let names: Vec<String> = sans.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [
                "cn:backend-2",
                "dns:backend.example",
                "uri:spiffe://cairn/backend",
                "email:ops@example.com"
            ]
        );
        assert_eq!(read("cn_only").unwrap().serial(), "8f01");
        // Two common names, two spellings of one wildcard name (literal, not expanded).
        let two = read("two_cns").unwrap();
        let names: Vec<String> = two.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["cn:a", "cn:b", "dns:*.example.com"]);
        assert_eq!(two.serial(), "01");
    }

    /// Hostile certificates are refused with the reason, never panic and never come out as a
    /// certificate without names.
    #[test]
    fn unreadable_certificates() {
        let good = leaf(&["a"], vec![], &[1]);
        assert!(ClientIdentity::from_der(&good).is_ok());
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            ClientIdentity::from_der(&trailing),
            Err(CertError::Trailing)
        );
        for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(
                    ClientIdentity::from_der(&good[..cut]),
                    Err(CertError::Malformed(_))
                ),
                "{cut}"
            );
        }
        assert_eq!(
            ClientIdentity::from_der(&vec![0x30; CERT_DER_LEN_MAX + 1]),
            Err(CertError::TooLong)
        );
        // 21 bytes of serial: over RFC 5280's 20.
        let long = leaf(&["a"], vec![], &[0x7f; 21]);
        assert_eq!(ClientIdentity::from_der(&long), Err(CertError::Serial));
        let twenty = leaf(&["a"], vec![], &[0x7f; 20]);
        assert_eq!(
            ClientIdentity::from_der(&twenty).unwrap().serial(),
            "7f".repeat(20)
        );
        let many: Vec<SanType> = (0..CERT_NAMES_MAX)
            .map(|i| SanType::DnsName(ia5(&format!("h{i}.example"))))
            .collect();
        assert_eq!(
            ClientIdentity::from_der(&leaf(&["a"], many, &[1])),
            Err(CertError::TooManyNames)
        );
        let ctl = leaf(&["a\u{7}b"], vec![], &[1]);
        assert!(matches!(
            ClientIdentity::from_der(&ctl),
            Err(CertError::Name { kind: "cn", .. })
        ));
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            DnValue::BmpString(BmpString::try_from("x").unwrap()),
        );
        let k = KeyPair::generate().unwrap();
        let bmp = p.self_signed(&k).unwrap().der().to_vec();
        assert!(matches!(
            ClientIdentity::from_der(&bmp),
            Err(CertError::Name { kind: "cn", .. })
        ));
        // The fingerprint is known even when nothing else is.
        let c = ClientCert::from_der(&trailing);
        assert_eq!(c.sha256(), cert_sha256(&trailing));
        assert!(c.identity().is_err());
        // Debug shows the fingerprint and nothing of the DER (any 8 bytes of it, in hex or as
        // numbers, would be a sign; the fingerprint's own hex may contain any short pair).
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            format!("ClientCert(sha256 {})", cert_sha256(&trailing))
        );
        let der_hex = data_encoding::HEXLOWER.encode(&trailing[20..28]);
        assert!(!shown.contains(&der_hex), "Debug shows the DER");
    }

    use std::sync::Arc;
    use std::time::Duration;

    use crate::access::hook::{AccessRequest, Authorizer, Credential, Operation};
    use crate::{
        AccessPolicy, ApiKeyAuthorizer, AuditDecision, Decision, NewKey, Registry, RevokeCert,
    };

    struct Fixture {
        _tmp: tempfile::TempDir,
        store: Arc<ApiKeyStore>,
        auth: ApiKeyAuthorizer,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Arc::new(Registry::open(tmp.path()).unwrap());
        let store = Arc::new(ApiKeyStore::open(reg).unwrap());
        let auth = ApiKeyAuthorizer::new(store.clone());
        Fixture {
            _tmp: tmp,
            store,
            auth,
        }
    }

    fn new_key(scope: &str, cert: Option<&str>) -> NewKey {
        NewKey {
            label: "backend".into(),
            scopes: vec![scope.parse().unwrap()],
            expires_in_secs: None,
            allow_ips: vec![],
            rate_per_minute: None,
            client_cert: cert.map(|c| c.parse().unwrap()),
        }
    }

    fn cert(cn: &str, sans: Vec<SanType>, serial: &[u8]) -> Arc<ClientCert> {
        Arc::new(ClientCert::from_der(&leaf(&[cn], sans, serial)))
    }

    /// Asks the authorizer about `models/<repo>` (restricted unless `public`) from `ip`.
    async fn ask(
        f: &Fixture,
        repo: &str,
        public: bool,
        cert: Option<&Arc<ClientCert>>,
        bearer: Option<&str>,
        ip: &str,
    ) -> Decision {
        let policy = if public {
            AccessPolicy::Public
        } else {
            AccessPolicy::ApiKeyScopes(vec![])
        };
        let cred = bearer.map(|b| Credential::Bearer(b.to_string()));
        let repo = format!("models/{repo}");
        let req = AccessRequest {
            repo: Some(&repo),
            artifact: cairn_artifact::manifest_cid(b"x"),
            operation: Operation::Read,
            client_ip: Some(ip.parse().unwrap()),
            route: "GET /x",
            credential: cred.as_ref(),
            client_cert: cert,
        };
        f.auth.authorize(&policy, &req).await
    }

    fn kind(d: &Decision) -> Option<DenialKind> {
        match d {
            Decision::Allow => None,
            Decision::Deny { kind, .. } => Some(*kind),
        }
    }

    /// A certificate acts as the key bound to one of its names: the key's scopes, and nothing
    /// else; it wins over a bearer header; a certificate bound to no key falls back to the
    /// bearer key, else is anonymous; the audit log says which came by certificate.
    #[tokio::test]
    async fn certificate_acts_as_its_key() {
        use DenialKind::*;
        let f = fixture();
        let k = f
            .store
            .create(new_key("read:repo:org/m", Some("cn:backend-1")))
            .unwrap();
        assert!(k.key.is_empty(), "a certificate key has no secret");
        let bearer = f.store.create(new_key("read:repo:org/b", None)).unwrap();
        let c = cert("backend-1", vec![], &[7]);
        let ip = "10.0.0.1";
        assert_eq!(
            ask(&f, "org/m", false, Some(&c), None, ip).await,
            Decision::Allow
        );
        assert_eq!(
            kind(&ask(&f, "org/x", false, Some(&c), None, ip).await),
            Some(Hidden)
        );
        // The certificate wins: a stale or foreign token beside it changes nothing.
        assert_eq!(
            ask(&f, "org/m", false, Some(&c), Some("hf_stale"), ip).await,
            Decision::Allow
        );
        assert_eq!(
            kind(&ask(&f, "org/b", false, Some(&c), Some(&bearer.key), ip).await),
            Some(Hidden)
        );
        // A public artifact: allowed, and not a use of the key's rights (not audited).
        assert_eq!(
            ask(&f, "org/p", true, Some(&c), None, ip).await,
            Decision::Allow
        );
        // A certificate bound to no key: the bearer key decides, else anonymous.
        let other = cert("somebody-else", vec![], &[8]);
        assert_eq!(
            ask(&f, "org/b", false, Some(&other), Some(&bearer.key), ip).await,
            Decision::Allow
        );
        assert_eq!(
            kind(&ask(&f, "org/m", false, Some(&other), None, ip).await),
            Some(Hidden)
        );
        assert_eq!(
            ask(&f, "org/p", true, Some(&other), None, ip).await,
            Decision::Allow
        );
        // The key's id as a bearer key, with any secret: unknown.
        let forged = format!("{}{}_{}", crate::KEY_PREFIX, k.id, "A".repeat(43));
        assert_eq!(
            kind(&ask(&f, "org/m", false, None, Some(&forged), ip).await),
            Some(Unauthenticated)
        );
        let audit = f.store.audit(100).unwrap();
        let got: Vec<(&str, AuditDecision, Option<&str>)> = audit
            .iter()
            .map(|e| {
                (
                    e.key_id.as_str(),
                    e.decision,
                    e.client_cert.as_ref().map(|c| c.sha256.as_str()),
                )
            })
            .collect();
        let (kid, bid, fp) = (k.id.as_str(), bearer.id.as_str(), Some(c.sha256()));
        assert_eq!(
            got,
            [
                (kid, AuditDecision::Allow, fp),
                (kid, AuditDecision::Deny, fp),
                (kid, AuditDecision::Allow, fp),
                (kid, AuditDecision::Deny, fp),
                (bid, AuditDecision::Allow, None),
            ]
        );
        assert_eq!(
            audit[0].client_cert.as_ref().unwrap().serial.as_deref(),
            Some("07")
        );
        // The key cannot be rotated: it has no secret.
        assert!(matches!(
            f.store.rotate(&k.id, Duration::from_secs(1)),
            Err(Error::BadRequest(_))
        ));
    }

    /// The key's own rules hold for its certificate: IP allow-list, rate bucket, revocation
    /// and expiry of the key; two live keys claiming one certificate refuse it.
    #[tokio::test]
    async fn key_rules_and_ambiguity() {
        use DenialKind::*;
        let f = fixture();
        let mut nk = new_key("read:prefix:org/", Some("dns:Backend.Example"));
        nk.allow_ips = vec!["10.0.0.0/8".parse().unwrap()];
        nk.rate_per_minute = Some(2);
        let k = f.store.create(nk).unwrap();
        let c = cert(
            "cn-not-bound",
            vec![SanType::DnsName(ia5("backend.example"))],
            &[1],
        );
        assert_eq!(
            kind(&ask(&f, "org/m", false, Some(&c), None, "192.0.2.1").await),
            Some(Forbidden)
        );
        assert_eq!(
            ask(&f, "org/m", false, Some(&c), None, "10.1.1.1").await,
            Decision::Allow
        );
        assert_eq!(
            ask(&f, "org/m", false, Some(&c), None, "10.1.1.1").await,
            Decision::Allow
        );
        assert_eq!(
            kind(&ask(&f, "org/m", false, Some(&c), None, "10.1.1.1").await),
            Some(RateLimited)
        );
        // A second live key bound to another name of the same certificate: refused, closed.
        let k2 = f
            .store
            .create(new_key("read:repo:org/m", Some("cn:cn-not-bound")))
            .unwrap();
        let d = ask(&f, "org/m", false, Some(&c), None, "10.1.1.1").await;
        match &d {
            Decision::Deny {
                kind: Forbidden,
                reason,
            } => {
                assert!(
                    reason.contains(&k.id) && reason.contains(&k2.id),
                    "{reason}"
                )
            }
            other => panic!("an ambiguous certificate: {other:?}"),
        }
        // Revoking one leaves the other in charge.
        f.store.revoke(&k.id).unwrap();
        assert_eq!(
            ask(&f, "org/m", false, Some(&c), None, "192.0.2.1").await,
            Decision::Allow
        );
        // Revoking both: the certificate is refused as its key is, even on a public artifact.
        f.store.revoke(&k2.id).unwrap();
        assert_eq!(
            kind(&ask(&f, "org/m", false, Some(&c), None, "10.1.1.1").await),
            Some(Unauthenticated)
        );
        assert_eq!(
            kind(&ask(&f, "org/p", true, Some(&c), None, "10.1.1.1").await),
            Some(Unauthenticated)
        );
        // An expired key: refused the same way.
        let mut nk = new_key("read:repo:org/m", Some("email:ops@example.com"));
        nk.expires_in_secs = Some(2);
        f.store.create(nk).unwrap();
        let e = cert("x", vec![SanType::Rfc822Name(ia5("ops@example.com"))], &[2]);
        assert_eq!(
            ask(&f, "org/m", false, Some(&e), None, "10.1.1.1").await,
            Decision::Allow
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let d = ask(&f, "org/m", false, Some(&e), None, "10.1.1.1").await;
            if kind(&d) == Some(Unauthenticated) {
                break;
            }
            assert_eq!(d, Decision::Allow, "until it expires");
            assert!(
                std::time::Instant::now() < deadline,
                "the key never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Revocation by serial number or fingerprint refuses the certificate at the next request,
    /// whatever comes with it, on every route; an unreadable certificate is refused too.
    #[tokio::test]
    async fn revoked_and_unreadable_certificates_are_refused() {
        use DenialKind::*;
        let f = fixture();
        f.store
            .create(new_key("read:repo:org/m", Some("uri:spiffe://cairn/b")))
            .unwrap();
        let bearer = f.store.create(new_key("read:repo:org/m", None)).unwrap();
        let sans = || vec![SanType::URI(ia5("spiffe://cairn/b"))];
        let (a, b) = (cert("a", sans(), &[0x8f, 1]), cert("b", sans(), &[0x22]));
        let ip = "10.0.0.1";
        assert_eq!(
            ask(&f, "org/m", false, Some(&a), None, ip).await,
            Decision::Allow
        );
        assert_eq!(
            ask(&f, "org/m", false, Some(&b), None, ip).await,
            Decision::Allow
        );
        let r = f
            .store
            .revoke_cert(RevokeCert {
                what: CertRevocation::serial("00:8F:01").unwrap(),
                label: "lost".into(),
            })
            .unwrap();
        f.store
            .revoke_cert(RevokeCert {
                what: CertRevocation::fingerprint(&b.sha256().to_uppercase()).unwrap(),
                label: String::new(),
            })
            .unwrap();
        for c in [&a, &b] {
            for (repo, public, bearer) in [
                ("org/m", false, None),
                ("org/m", false, Some(bearer.key.as_str())),
                ("org/p", true, None),
            ] {
                assert_eq!(
                    kind(&ask(&f, repo, public, Some(c), bearer, ip).await),
                    Some(Unauthenticated),
                    "{c:?} {repo}"
                );
            }
        }
        // Revoking again keeps the first entry; the list holds both.
        let again = f
            .store
            .revoke_cert(RevokeCert {
                what: CertRevocation::Serial("8f01".into()),
                label: "again".into(),
            })
            .unwrap();
        assert_eq!(again, r);
        let list = f.store.revoked_certs().unwrap();
        assert_eq!(
            list.iter().map(|r| r.what.clone()).collect::<Vec<_>>(),
            [
                CertRevocation::Sha256(b.sha256().to_string()),
                CertRevocation::Serial("8f01".into())
            ]
        );
        // A value that is not canonical from the admin API is made so, or refused.
        assert!(
            f.store
                .revoke_cert(RevokeCert {
                    what: CertRevocation::Sha256("zz".into()),
                    label: String::new(),
                })
                .is_err()
        );
        // A certificate that cannot be read: refused, whatever comes with it.
        let mut der = leaf(&["a"], sans(), &[3]);
        der.push(0);
        let bad = Arc::new(ClientCert::from_der(&der));
        for (repo, public, bearer) in [
            ("org/m", false, Some(bearer.key.as_str())),
            ("org/p", true, None),
        ] {
            assert_eq!(
                kind(&ask(&f, repo, public, Some(&bad), bearer, ip).await),
                Some(Unauthenticated)
            );
        }
        // The refusals are in the keys' log, with the fingerprint.
        let audit = f.store.audit(100).unwrap();
        let last = audit.last().unwrap();
        assert_eq!(
            (
                last.status,
                last.client_cert.as_ref().map(|c| c.sha256.as_str())
            ),
            (401, Some(bad.sha256()))
        );
        assert!(audit.iter().any(|e| {
            e.reason == "the client certificate was revoked"
                && e.client_cert
                    .as_ref()
                    .is_some_and(|c| c.sha256 == a.sha256())
        }));
    }

    #[test]
    fn names_and_revocations_parse() {
        for (s, want) in [
            ("cn:backend-1", "cn:backend-1"),
            ("dns:A.Example", "dns:a.example"),
            ("uri:spiffe://x/y", "uri:spiffe://x/y"),
            ("email:Ops@Example.com", "email:Ops@Example.com"),
            ("cn:with: colon", "cn:with: colon"),
        ] {
            assert_eq!(s.parse::<CertName>().unwrap().to_string(), want);
        }
        for bad in [
            "",
            "cn",
            "cn:",
            "ip:10.0.0.1",
            "CN:x",
            "dns:é.example",
            "cn:a\nb",
        ] {
            assert!(bad.parse::<CertName>().is_err(), "{bad:?}");
        }
        assert!(
            format!("cn:{}", "x".repeat(513))
                .parse::<CertName>()
                .is_err()
        );
        assert_eq!(
            CertRevocation::serial("00:8F:01").unwrap(),
            CertRevocation::Serial("8f01".into())
        );
        assert_eq!(
            CertRevocation::serial("0x08f01").unwrap(),
            CertRevocation::Serial("8f01".into())
        );
        assert_eq!(
            CertRevocation::serial("0").unwrap(),
            CertRevocation::Serial("00".into())
        );
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(
            CertRevocation::fingerprint(&fp).unwrap(),
            CertRevocation::Sha256("ab".repeat(32))
        );
        for bad in ["", "xyz", "ab cd", &"ab".repeat(21)] {
            assert!(CertRevocation::serial(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            &"ab".repeat(31),
            &"ab".repeat(33),
            "g".repeat(64).as_str(),
        ] {
            assert!(CertRevocation::fingerprint(bad).is_err(), "{bad:?}");
        }
        let r = RevokedCert {
            what: CertRevocation::Serial("8f01".into()),
            time: 5,
            label: "lost laptop".into(),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"serial":"8f01","time":5,"label":"lost laptop"}"#);
        assert_eq!(serde_json::from_str::<RevokedCert>(&j).unwrap(), r);
    }
}
