//! Name records: a publisher's signed statement that repository `org/name`, at a version, is an
//! artifact, with who may read it and the gateways its key is wrapped to.
//!
//! # Who owns a name
//!
//! An org is owned by a key, the *org key*. Every name record carries the org key, and is
//! signed either by the org key itself or by a *member key* the org key delegated to: a
//! [`Delegation`] (the org key's signature over the org, the member key and an end time)
//! travels inside the record, so any node can check a record with nothing but its bytes. A
//! member key is rotated by delegating to a new key; a delegation ends at its `until_ms` (a
//! record whose version is past it is refused), so a leaked member key is good only until
//! then. Which key owns an org is first come, first served, per node: a node that keeps
//! records of an org keeps its claim (the org key of the first record it accepted) and refuses
//! records of the org under any other key (ORG_CLAIMED); records of an org live on the same
//! `r` nodes (they are placed by the org, see `record_ranking`), which pass the claim on when
//! they hand the org's records to a new node. Readers take the org key that most of the nodes
//! asked hold, and only records under it. Orgs are compared in ASCII lowercase: `Meta` and
//! `meta` are one org, so a look-alike claim cannot split it.
//!
//! # Which record wins
//!
//! Versions are Unix milliseconds and a record dated more than [`RECORD_AHEAD_MAX`] past the
//! judge's clock is refused, so no record can freeze a name. Of the records of a name under the
//! org's key, the highest version is the name's current revision; two different records of
//! the same version (a publisher that signed twice in one millisecond, or a member key and the
//! org key racing) are ordered by their bytes, so every node and reader picks the same one. A
//! node stores a record only if it is newer than the newest it holds of the name, or identical
//! to one it holds (a replay of an older version is refused with STALE_RECORD and never
//! becomes current), and keeps the last [`NAME_REVISIONS_MAX`] revisions of each name: the log
//! that `cairn log` lists and that old commits resolve through.
//!
//! # Grants
//!
//! Each grant is the artifact key wrapped to one gateway's X25519 key with HPKE
//! (`cairn_encryption::wrap_key`), bound to the record's org, name and manifest CID
//! ([`grant_context`]). A gateway serves a revision only if the revision's record holds a grant
//! for it. Revocation is the next revision without the gateway's grant: the gateway stops
//! serving the name's current revision, but what it could already unwrap (the older revisions'
//! keys) it keeps; keys cannot be taken back, only not given again.
//!
//! Byte layout (integers big-endian):
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `CAIRNNR\0` |
//! | 1 | format version = 1 |
//! | 32 | org key (ed25519 public key) |
//! | 32 | signer (ed25519 public key): the org key, or a member key |
//! | 1 | delegation present: 0 when the signer is the org key, 1 otherwise |
//! | 8 + 64 | if present: the delegation's `until_ms` and the org key's signature over the context `cairn org delegation v1\0`, `u8` org length, the org (lowercase), the member key, `until_ms` |
//! | 1 | kind: 0 model, 1 dataset |
//! | 1 + L | org: length (1..=96) and ASCII bytes |
//! | 1 + L | name: length (1..=96) and ASCII bytes |
//! | 8 | version: Unix milliseconds when signed |
//! | 1 + L | artifact: the manifest's CID (dag-cbor, BLAKE3-256), minimally encoded |
//! | 1 + L | parent: the previous revision's manifest CID, or length 0 for none |
//! | 2 + L | access policy: length (≤ [`POLICY_LEN_MAX`]) and UTF-8 text (`public`, `keys`, or `gate:` and a gate in the gateway's policy syntax); its meaning is the gateway's |
//! | 1 | grant count (≤ [`GRANTS_MAX`]), then per grant 32 bytes gateway id, 32 bytes `enc`, 48 bytes wrapped key |
//! | 64 | ed25519 signature by the signer over the context `cairn name record v1\0` followed by every byte before it |
//!
//! Parts are 1 to 96 ASCII letters, digits, `-`, `_` or `.`, not starting with `.` or `-` and
//! without `..` (the gateway's repository ids). Nothing may follow the signature; a record is
//! at most [`NAME_RECORD_LEN_MAX`] bytes.

use cairn_encryption::{GRANT_ENC_LEN, GRANT_SEALED_LEN, GatewayId, WrappedKey};
use cid::Cid;
use iroh::{EndpointId, SecretKey, Signature};

use crate::cids::manifest_digest;
use crate::error::{Error, Result};
use crate::protocol::CID_LEN_MAX;
use crate::record::{RECORD_AHEAD_MAX, too_far_ahead};
use crate::signed::{Cursor, signed_message};

const MAGIC: &[u8; 8] = b"CAIRNNR\0";
const FORMAT_VERSION: u8 = 1;
const SIGN_CONTEXT: &[u8] = b"cairn name record v1\0";
const DELEGATION_CONTEXT: &[u8] = b"cairn org delegation v1\0";
const SIGNATURE_LEN: usize = 64;
const GRANT_LEN: usize = 32 + GRANT_ENC_LEN + GRANT_SEALED_LEN;

/// Longest org or name part.
pub const NAME_PART_LEN_MAX: usize = 96;
/// Longest access policy text.
pub const POLICY_LEN_MAX: usize = 4096;
/// Most gateways one revision is granted to.
pub const GRANTS_MAX: usize = 64;
/// Revisions of one name a node keeps (the newest).
pub const NAME_REVISIONS_MAX: usize = 64;
/// Largest name record: every field at its maximum.
pub const NAME_RECORD_LEN_MAX: usize = 8
    + 1
    + 32
    + 32
    + 1
    + 8
    + SIGNATURE_LEN
    + 1
    + 2 * (1 + NAME_PART_LEN_MAX)
    + 8
    + 2 * (1 + CID_LEN_MAX)
    + 2
    + POLICY_LEN_MAX
    + 1
    + GRANTS_MAX * GRANT_LEN
    + SIGNATURE_LEN;

const _: () = assert!(NAME_RECORD_LEN_MAX == 11_810);
const _: () = assert!(GRANTS_MAX <= u8::MAX as usize);
const _: () = assert!(POLICY_LEN_MAX <= u16::MAX as usize);

fn invalid(reason: impl Into<String>) -> Error {
    Error::Name {
        reason: reason.into(),
    }
}

/// What a repository holds, as the gateway's routes tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A model (`/models/...`, and the default of the Hugging Face endpoints).
    Model,
    /// A dataset.
    Dataset,
}

/// The org key's permission for a member key to sign the org's name records until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Unix milliseconds after which records signed by the member are refused.
    pub until_ms: u64,
    /// The org key's signature (see the module docs for what it covers).
    pub signature: [u8; SIGNATURE_LEN],
}

impl Delegation {
    /// The org key `org_key` lets `member` sign records of `org` until `until_ms`.
    pub fn sign(org_key: &SecretKey, org: &str, member: &EndpointId, until_ms: u64) -> Self {
        let signature = org_key.sign(&delegation_message(org, member, until_ms));
        Self {
            until_ms,
            signature: signature.to_bytes(),
        }
    }

    /// Checks that `org_key` signed this delegation of `org` to `member` (not its end time).
    pub fn verify(&self, org_key: &EndpointId, org: &str, member: &EndpointId) -> Result<()> {
        org_key
            .verify(
                &delegation_message(org, member, self.until_ms),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| {
                invalid(format!(
                    "the delegation to {} is not signed by the org key {}",
                    member.fmt_short(),
                    org_key.fmt_short()
                ))
            })
    }
}

fn delegation_message(org: &str, member: &EndpointId, until_ms: u64) -> Vec<u8> {
    let org = org.to_ascii_lowercase();
    let mut body = Vec::with_capacity(1 + org.len() + 32 + 8);
    body.push(org.len() as u8);
    body.extend_from_slice(org.as_bytes());
    body.extend_from_slice(member.as_bytes());
    body.extend_from_slice(&until_ms.to_be_bytes());
    signed_message(DELEGATION_CONTEXT, &body)
}

/// One revision of a repository name. Build it, then [`try_sign`](Self::try_sign) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    /// The key that owns the org.
    pub org_key: EndpointId,
    /// The key that signs: the org key, or a member key with a delegation.
    pub signer: EndpointId,
    /// The org key's delegation to the signer; `None` exactly when the signer is the org key.
    pub delegation: Option<Delegation>,
    /// Model or dataset.
    pub kind: NameKind,
    /// The org part of the name.
    pub org: String,
    /// The name part.
    pub name: String,
    /// Unix milliseconds when signed; a later revision has a higher one.
    pub version: u64,
    /// The revision's artifact: its manifest CID.
    pub artifact: Cid,
    /// The previous revision's artifact, if any.
    pub parent: Option<Cid>,
    /// Who may read the revision through a gateway (the gateway's policy text).
    pub policy: String,
    /// The artifact key wrapped to each gateway that may serve it.
    pub grants: Vec<WrappedKey>,
}

/// A name record whose format, rules and signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedName {
    /// The decoded record.
    pub record: NameRecord,
    /// The signed bytes, as sent and stored.
    pub bytes: Vec<u8>,
}

/// Checks one part of a name (see the module docs).
pub fn check_name_part(part: &str) -> Result<()> {
    if part.is_empty() || part.len() > NAME_PART_LEN_MAX {
        return Err(invalid(format!(
            "a name part must be 1 to {NAME_PART_LEN_MAX} characters"
        )));
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(
            "a name part may hold only ASCII letters, digits, `-`, `_` and `.`",
        ));
    }
    if part.starts_with(['.', '-']) || part.contains("..") {
        return Err(invalid(
            "a name part may not start with `.` or `-` or contain `..`",
        ));
    }
    Ok(())
}

/// The key records of `org` are placed and claimed by (the org in ASCII lowercase).
pub fn org_record_key(org: &str) -> Vec<u8> {
    let mut key = b"org\0".to_vec();
    key.extend_from_slice(org.to_ascii_lowercase().as_bytes());
    key
}

/// What a grant of this revision is bound to: the kind, org, name and manifest CID, so that a
/// wrapped key moved into another record does not open.
pub fn grant_context(kind: NameKind, org: &str, name: &str, artifact: &Cid) -> Vec<u8> {
    let mut c = Vec::new();
    c.push(kind_byte(kind));
    c.push(org.len() as u8);
    c.extend_from_slice(org.to_ascii_lowercase().as_bytes());
    c.push(name.len() as u8);
    c.extend_from_slice(name.as_bytes());
    c.extend_from_slice(&artifact.to_bytes());
    c
}

pub(crate) fn kind_byte(kind: NameKind) -> u8 {
    match kind {
        NameKind::Model => 0,
        NameKind::Dataset => 1,
    }
}

pub(crate) fn kind_from_byte(byte: u8) -> Option<NameKind> {
    match byte {
        0 => Some(NameKind::Model),
        1 => Some(NameKind::Dataset),
        _ => None,
    }
}

impl NameRecord {
    /// Checks every rule [`SignedName::decode`] applies to a decoded record except the
    /// signatures. Fails with [`Error::Name`] or [`Error::InvalidCid`].
    pub fn validate(&self) -> Result<()> {
        check_name_part(&self.org)?;
        check_name_part(&self.name)?;
        for cid in std::iter::once(&self.artifact).chain(self.parent.as_ref()) {
            manifest_digest(cid)?;
            if cid.encoded_len() > CID_LEN_MAX {
                return Err(invalid(format!("CID {cid} is over {CID_LEN_MAX} bytes")));
            }
        }
        if self.policy.len() > POLICY_LEN_MAX {
            return Err(invalid(format!(
                "the access policy is {} bytes, over {POLICY_LEN_MAX}",
                self.policy.len()
            )));
        }
        if self.grants.len() > GRANTS_MAX {
            return Err(invalid(format!(
                "{} grants is over {GRANTS_MAX}",
                self.grants.len()
            )));
        }
        for (i, g) in self.grants.iter().enumerate() {
            if self.grants[..i].iter().any(|o| o.gateway == g.gateway) {
                return Err(invalid(format!("gateway {} is granted twice", g.gateway)));
            }
        }
        match (&self.delegation, self.signer == self.org_key) {
            (None, true) => Ok(()),
            (Some(_), true) => Err(invalid("the org key signs without a delegation")),
            (None, false) => Err(invalid(format!(
                "signer {} is not the org key and holds no delegation",
                self.signer.fmt_short()
            ))),
            (Some(d), false) if self.version > d.until_ms => Err(invalid(format!(
                "the delegation to {} ended at {} ms, before this version ({})",
                self.signer.fmt_short(),
                d.until_ms,
                self.version
            ))),
            (Some(_), false) => Ok(()),
        }
    }

    /// Whether a node or reader whose clock reads `now_ms` accepts the record's version: at
    /// most [`RECORD_AHEAD_MAX`] past it.
    pub fn check_time(&self, now_ms: u64) -> Result<()> {
        if too_far_ahead(self.version, now_ms) {
            return Err(invalid(format!(
                "version {} of {}/{} is dated more than {RECORD_AHEAD_MAX:?} past this clock \
                 ({now_ms} ms)",
                self.version, self.org, self.name
            )));
        }
        Ok(())
    }

    /// The org in the form claims compare.
    pub fn org_lowercase(&self) -> String {
        self.org.to_ascii_lowercase()
    }

    /// The grant for `gateway`, if this revision has one.
    pub fn grant_for(&self, gateway: &GatewayId) -> Option<&WrappedKey> {
        self.grants.iter().find(|g| g.gateway == *gateway)
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.policy.len() + self.grants.len() * GRANT_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.org_key.as_bytes());
        out.extend_from_slice(self.signer.as_bytes());
        match &self.delegation {
            None => out.push(0),
            Some(d) => {
                out.push(1);
                out.extend_from_slice(&d.until_ms.to_be_bytes());
                out.extend_from_slice(&d.signature);
            }
        }
        out.push(kind_byte(self.kind));
        for part in [&self.org, &self.name] {
            out.push(part.len() as u8);
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        let cid = self.artifact.to_bytes();
        out.push(cid.len() as u8);
        out.extend_from_slice(&cid);
        match &self.parent {
            None => out.push(0),
            Some(p) => {
                let p = p.to_bytes();
                out.push(p.len() as u8);
                out.extend_from_slice(&p);
            }
        }
        out.extend_from_slice(&(self.policy.len() as u16).to_be_bytes());
        out.extend_from_slice(self.policy.as_bytes());
        out.push(self.grants.len() as u8);
        for g in &self.grants {
            out.extend_from_slice(&g.gateway.0);
            out.extend_from_slice(&g.enc);
            out.extend_from_slice(&g.sealed);
        }
        out
    }

    /// The signed bytes, or why the record cannot be signed: it breaks a rule of
    /// [`validate`](Self::validate), or `key` is not the signer's.
    pub fn try_sign(&self, key: &SecretKey) -> Result<Vec<u8>> {
        self.validate()?;
        if key.public() != self.signer {
            return Err(invalid(format!(
                "the record names signer {}, the key is {}'s",
                self.signer.fmt_short(),
                key.public().fmt_short()
            )));
        }
        if let Some(d) = &self.delegation {
            d.verify(&self.org_key, &self.org, &self.signer)?;
        }
        let mut out = self.encode_body();
        let signature = key.sign(&signed_message(SIGN_CONTEXT, &out));
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

fn part(reader: &mut Cursor<'_>, what: &str) -> Result<String> {
    let len = usize::from(reader.u8()?);
    let bytes = reader.take(len)?;
    let s = std::str::from_utf8(bytes).map_err(|_| invalid(format!("the {what} is not text")))?;
    check_name_part(s)?;
    Ok(s.to_string())
}

fn cid(reader: &mut Cursor<'_>, what: &str, optional: bool) -> Result<Option<Cid>> {
    let len = usize::from(reader.u8()?);
    if len == 0 && optional {
        return Ok(None);
    }
    if len == 0 || len > CID_LEN_MAX {
        return Err(invalid(format!(
            "{what} CID length {len} is outside 1..={CID_LEN_MAX}"
        )));
    }
    let bytes = reader.take(len)?;
    let cid =
        Cid::read_bytes(bytes).map_err(|e| invalid(format!("{what} CID does not parse: {e}")))?;
    if cid.to_bytes() != bytes {
        return Err(invalid(format!("{what} CID is not minimally encoded")));
    }
    Ok(Some(cid))
}

impl SignedName {
    /// Decodes signed name record bytes, checking size, format, every rule of
    /// [`NameRecord::validate`], the delegation's signature by the org key, and the record's by
    /// its signer. Says nothing about which key owns the org (the nodes holding the org's
    /// records do) or about the time (see [`NameRecord::check_time`]). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<SignedName> {
        if bytes.len() > NAME_RECORD_LEN_MAX {
            return Err(invalid(format!(
                "{} bytes is over the limit of {NAME_RECORD_LEN_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < 8 + 1 + 64 + 1 + SIGNATURE_LEN {
            return Err(invalid(format!("{} bytes is too short", bytes.len())));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Cursor::new(body, invalid);
        if r.array::<8>()? != *MAGIC {
            return Err(invalid("magic bytes are not CAIRNNR"));
        }
        let format = r.u8()?;
        if format != FORMAT_VERSION {
            return Err(invalid(format!("format version {format} is not supported")));
        }
        let key = |b: [u8; 32], what: &str| {
            EndpointId::from_bytes(&b).map_err(|_| invalid(format!("{what} is not a valid key")))
        };
        let org_key = key(r.array()?, "the org key")?;
        let signer = key(r.array()?, "the signer")?;
        let delegation = match r.u8()? {
            0 => None,
            1 => Some(Delegation {
                until_ms: r.u64()?,
                signature: r.array()?,
            }),
            x => return Err(invalid(format!("delegation flag {x} is not 0 or 1"))),
        };
        let kind = r.u8()?;
        let kind =
            kind_from_byte(kind).ok_or_else(|| invalid(format!("kind {kind} is reserved")))?;
        let org = part(&mut r, "org")?;
        let name = part(&mut r, "name")?;
        let version = r.u64()?;
        let artifact = cid(&mut r, "artifact", false)?.expect("required CID");
        let parent = cid(&mut r, "parent", true)?;
        let policy_len = usize::from(r.u16()?);
        if policy_len > POLICY_LEN_MAX {
            return Err(invalid(format!(
                "the access policy is {policy_len} bytes, over {POLICY_LEN_MAX}"
            )));
        }
        let policy = std::str::from_utf8(r.take(policy_len)?)
            .map_err(|_| invalid("the access policy is not UTF-8"))?
            .to_string();
        let count = usize::from(r.u8()?);
        if count > GRANTS_MAX {
            return Err(invalid(format!("{count} grants is over {GRANTS_MAX}")));
        }
        let mut grants = Vec::with_capacity(count);
        for _ in 0..count {
            grants.push(WrappedKey {
                gateway: GatewayId(r.array()?),
                enc: r.array()?,
                sealed: r.array()?,
            });
        }
        if !r.rest().is_empty() {
            return Err(invalid(format!(
                "{} bytes between the grants and the signature",
                r.rest().len()
            )));
        }
        let record = NameRecord {
            org_key,
            signer,
            delegation,
            kind,
            org,
            name,
            version,
            artifact,
            parent,
            policy,
            grants,
        };
        record.validate()?;
        if let Some(d) = &record.delegation {
            d.verify(&record.org_key, &record.org, &record.signer)?;
        }
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        signer
            .verify(
                &signed_message(SIGN_CONTEXT, body),
                &Signature::from_bytes(signature),
            )
            .map_err(|_| {
                invalid(format!(
                    "the signature of {} does not verify",
                    signer.fmt_short()
                ))
            })?;
        Ok(SignedName {
            record,
            bytes: bytes.to_vec(),
        })
    }

    /// The order in which records of one name win: higher version, then greater bytes.
    pub fn wins_over(&self, other: &SignedName) -> bool {
        (self.record.version, &self.bytes) > (other.record.version, &other.bytes)
    }
}

/// What readers make of the records of one name that several nodes sent (each node's list
/// verified with [`SignedName::decode`]): the org key most nodes hold records under (ties: the
/// key whose oldest record is oldest, then the smaller key), and under it the name's
/// revisions of `kind`, newest first, each once, none dated more than [`RECORD_AHEAD_MAX`]
/// past `now_ms`. A node that answered with records of two org keys counts for none.
pub fn merge_answers(
    answers: &[Vec<SignedName>],
    kind: NameKind,
    org: &str,
    name: &str,
    now_ms: u64,
) -> Vec<SignedName> {
    let org = org.to_ascii_lowercase();
    let fits = |s: &SignedName| {
        s.record.kind == kind
            && s.record.org_lowercase() == org
            && s.record.name == name
            && s.record.check_time(now_ms).is_ok()
    };
    // Votes per org key, and the oldest version seen under each.
    let mut votes: Vec<(EndpointId, usize, u64)> = Vec::new();
    for answer in answers {
        let mut keys = answer.iter().filter(|s| fits(s)).map(|s| s.record.org_key);
        let Some(first) = keys.next() else { continue };
        if keys.any(|k| k != first) {
            continue;
        }
        let oldest = answer
            .iter()
            .filter(|s| fits(s))
            .map(|s| s.record.version)
            .min()
            .unwrap_or(u64::MAX);
        match votes.iter_mut().find(|(k, _, _)| *k == first) {
            Some(v) => {
                v.1 += 1;
                v.2 = v.2.min(oldest);
            }
            None => votes.push((first, 1, oldest)),
        }
    }
    votes.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let Some(&(owner, _, _)) = votes.first() else {
        return Vec::new();
    };
    let mut out: Vec<SignedName> = answers
        .iter()
        .flatten()
        .filter(|s| fits(s) && s.record.org_key == owner)
        .cloned()
        .collect();
    out.sort_by(|a, b| (b.record.version, &b.bytes).cmp(&(a.record.version, &a.bytes)));
    out.dedup_by(|a, b| a.bytes == b.bytes);
    // One record per version: the winner (the first after the sort).
    out.dedup_by(|a, b| a.record.version == b.record.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::manifest_cid;
    use cairn_encryption::{ArtifactKey, GatewaySecret, unwrap_key, wrap_key};

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    fn sample(org_key: &SecretKey, version: u64) -> NameRecord {
        NameRecord {
            org_key: org_key.public(),
            signer: org_key.public(),
            delegation: None,
            kind: NameKind::Model,
            org: "Acme".into(),
            name: "model-1.0".into(),
            version,
            artifact: manifest_cid(&version.to_be_bytes()),
            parent: None,
            policy: "public".into(),
            grants: Vec::new(),
        }
    }

    #[test]
    fn records_round_trip_with_grants_and_delegations() {
        let org = key(1);
        let member = key(2);
        let gw = GatewaySecret::from_bytes([3; 32]);
        let art = ArtifactKey::random();
        let mut rec = sample(&org, 1_700_000_000_000);
        rec.parent = Some(manifest_cid(b"before"));
        rec.signer = member.public();
        rec.delegation = Some(Delegation::sign(&org, "ACME", &member.public(), u64::MAX));
        let ctx = grant_context(rec.kind, &rec.org, &rec.name, &rec.artifact);
        rec.grants = vec![wrap_key(&gw.id(), &art, &ctx).unwrap()];
        let bytes = rec.try_sign(&member).unwrap();
        assert!(bytes.len() <= NAME_RECORD_LEN_MAX);
        let signed = SignedName::decode(&bytes).unwrap();
        assert_eq!(signed.record, rec);
        let g = signed.record.grant_for(&gw.id()).unwrap();
        assert_eq!(unwrap_key(&gw, g, &ctx).unwrap(), art);
        // The grant does not open as another name's.
        let other = grant_context(rec.kind, "acme", "model-2", &rec.artifact);
        assert!(unwrap_key(&gw, g, &other).is_err());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let org = key(1);
        let member = key(2);
        let mut rec = sample(&org, 5);
        rec.signer = member.public();
        rec.delegation = Some(Delegation::sign(&org, "acme", &member.public(), 10));
        let bytes = rec.try_sign(&member).unwrap();
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            assert!(SignedName::decode(&changed).is_err(), "byte {at}");
        }
        for len in 0..bytes.len() {
            assert!(SignedName::decode(&bytes[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn forged_delegations_and_signers_are_refused() {
        let org = key(1);
        let member = key(2);
        let stranger = key(3);
        // A member key that delegates to itself.
        let mut rec = sample(&org, 5);
        rec.signer = member.public();
        rec.delegation = Some(Delegation::sign(&member, "acme", &member.public(), 10));
        assert!(rec.try_sign(&member).is_err());
        // A delegation for another org.
        rec.delegation = Some(Delegation::sign(&org, "other", &member.public(), 10));
        assert!(rec.try_sign(&member).is_err());
        // An ended delegation.
        rec.delegation = Some(Delegation::sign(&org, "acme", &member.public(), 4));
        assert!(rec.try_sign(&member).is_err());
        // A stranger signing a record naming the org key as signer: the bytes do not verify.
        let rec = sample(&org, 5);
        let mut body = rec.encode_body();
        let sig = stranger.sign(&signed_message(SIGN_CONTEXT, &body));
        body.extend_from_slice(&sig.to_bytes());
        assert!(matches!(SignedName::decode(&body), Err(Error::Name { .. })));
        // Bad parts never sign.
        for bad in ["", ".x", "a/b", "a..b", &"x".repeat(97)] {
            let mut rec = sample(&org, 5);
            rec.name = bad.into();
            assert!(rec.try_sign(&org).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn readers_take_the_majority_org_key_and_the_newest_revision() {
        let owner = key(1);
        let squatter = key(9);
        let r1 = SignedName::decode(&sample(&owner, 100).try_sign(&owner).unwrap()).unwrap();
        let r2 = SignedName::decode(&sample(&owner, 200).try_sign(&owner).unwrap()).unwrap();
        let fake =
            SignedName::decode(&sample(&squatter, 900).try_sign(&squatter).unwrap()).unwrap();
        let future =
            SignedName::decode(&sample(&owner, 10_000_000).try_sign(&owner).unwrap()).unwrap();
        let answers = vec![
            vec![r1.clone(), r2.clone()],
            vec![r2.clone(), future],
            vec![fake.clone()],
            vec![r1.clone(), fake],
        ];
        let got = merge_answers(&answers, NameKind::Model, "ACME", "model-1.0", 1_000);
        assert_eq!(got, vec![r2.clone(), r1.clone()]);
        // The wrong kind or name finds nothing.
        assert!(merge_answers(&answers, NameKind::Dataset, "acme", "model-1.0", 1_000).is_empty());
        assert!(merge_answers(&answers, NameKind::Model, "acme", "model-2", 1_000).is_empty());
        assert!(r2.wins_over(&r1));
    }
}
