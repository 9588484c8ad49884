//! Holder records: which node holds which shard of an artifact, signed by its publisher.
//!
//! Placement decides holders from the membership of the moment; a reader later may see another
//! membership. So the publisher writes down where each shard went in a [`HolderRecord`], signs
//! it and stores it on nodes (PUT_RECORD); readers fetch it (GET_RECORD) and dial the holders it
//! names, with the addresses known at publish time. Repair writes a new version.
//!
//! # Whose records count
//!
//! A record is worth only the trust in its signer, and anyone can sign one. The artifact's
//! manifest names the keys allowed to sign its records (`record_signers`: the publisher's, and
//! later the repairers it delegates to); the manifest is checked against the CID in the read
//! capability, so the binding cannot be forged. A node stores a record only beside the manifest
//! it describes and only from an allowed signer; a reader checks the same before it uses one
//! ([`choose_record`]), so a record signed by anyone else costs it nothing but the bytes.
//!
//! A version is the signer's clock when it signed, in Unix milliseconds. Nodes and readers
//! refuse versions dated more than [`RECORD_AHEAD_MAX`] past their own clock, so no record, not
//! even one its publisher signed by mistake with `u64::MAX`, can stand in the way of a later one
//! for longer than that.
//!
//! Byte layout (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CAIRNHR\0` |
//! | 8 | 1 | format version = 1 |
//! | 9 | 32 | publisher endpoint id (ed25519 public key) |
//! | 41 | 1 | artifact CID length `L` (1..=[`CID_LEN_MAX`]) |
//! | 42 | `L` | artifact CID: CIDv1, dag-cbor, BLAKE3-256 (the manifest's CID) |
//! | 42+L | 8 | record version (≥ 1): Unix milliseconds when signed; a later record has a higher one |
//! | 50+L | 1 | k, data shards per chunk (≥ 1) |
//! | 51+L | 1 | m, parity shards per chunk (k + m ≤ [`RECORD_SHARDS_MAX`]) |
//! | 52+L | 1 | flags: bit 0 = reduced durability (fewer than k + m distinct nodes); other bits 0 |
//! | 53+L | 2 | node count `N` (≤ [`RECORD_NODES_MAX`]) |
//! | 55+L | … | `N` nodes: 32-byte endpoint id, `u8` address count (≤ [`ADDRS_MAX`]), per address `u8` family (4 or 6), 4 or 16 address bytes, `u16` port. Endpoint ids are distinct. |
//! | … | 4 | chunk count `C` (≤ [`RECORD_CHUNKS_MAX`]) |
//! | … | 2·C·(k+m) | per chunk, per shard index j in 0..k+m: `u16` index into the nodes of shard j's holder (< `N`) |
//! | end−64 | 64 | ed25519 signature by the publisher over the context `cairn holder record v1\0` (23 bytes) followed by every byte before it |
//!
//! The whole record is at most [`RECORD_LEN_MAX`] bytes. Every count is checked against what
//! the remaining bytes can hold before anything is allocated, so a short record claiming four
//! million chunks costs nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use iroh::{EndpointId, SecretKey, Signature};

use crate::cids::manifest_digest;
use crate::error::{Error, Result};
use crate::membership::{ADDRS_MAX, put_socket_addr};
use crate::protocol::{CID_LEN_MAX, RECORD_LEN_MAX};
use crate::signed::Cursor;

/// Most distinct nodes in one holder record.
pub const RECORD_NODES_MAX: usize = u16::MAX as usize;
/// Most chunks in one holder record.
pub const RECORD_CHUNKS_MAX: usize = 4_000_000;
/// Most shards per chunk (k + m) in one holder record.
pub const RECORD_SHARDS_MAX: usize = 64;

/// How far past the clock of the node or reader judging it a record's version (Unix ms) may
/// be; beyond it the record is refused. It is also the longest a record can keep a later one
/// from replacing it.
pub const RECORD_AHEAD_MAX: Duration = Duration::from_secs(300);

const MAGIC: &[u8; 8] = b"CAIRNHR\0";
const FORMAT_VERSION: u8 = 1;
/// Prepended to the signed bytes so that a record signature can never pass for a signature of
/// anything else the same key signs (announcements, TLS).
const SIGN_CONTEXT: &[u8] = b"cairn holder record v1\0";
const SIGNATURE_LEN: usize = 64;
const FLAG_REDUCED_DURABILITY: u8 = 1;
/// Smallest encoding of a node: id and an address count of zero.
const NODE_LEN_MIN: usize = 33;

const _: () = assert!(RECORD_NODES_MAX <= u16::MAX as usize);
const _: () = assert!(RECORD_CHUNKS_MAX <= u32::MAX as usize);
const _: () = assert!(RECORD_SHARDS_MAX <= u8::MAX as usize);
const _: () = assert!(ADDRS_MAX <= u8::MAX as usize);

fn invalid(reason: impl Into<String>) -> Error {
    Error::Record {
        reason: reason.into(),
    }
}

/// Which node holds which shard of an artifact. Build it, check it with
/// [`validate`](Self::validate), then [`sign`](Self::sign) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRecord {
    /// The artifact's manifest CID (dag-cbor).
    pub artifact: Cid,
    /// Unix milliseconds when signed ([`record_version_now`]); a record replaces another of
    /// its artifact only with a higher one.
    pub version: u64,
    /// Data shards per chunk.
    pub k: u8,
    /// Parity shards per chunk.
    pub m: u8,
    /// The publisher accepted fewer than k + m distinct nodes.
    pub reduced_durability: bool,
    /// Distinct holders with the addresses known at publish time (at most [`ADDRS_MAX`] each).
    pub nodes: Vec<(EndpointId, Vec<SocketAddr>)>,
    /// Per chunk, k + m entries: entry j is the index into `nodes` of the holder of shard j.
    pub holders: Vec<Vec<u16>>,
}

/// A holder record whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The decoded record.
    pub record: HolderRecord,
    /// The endpoint that signed it.
    pub publisher: EndpointId,
    /// The signed bytes, as stored and sent.
    pub bytes: Vec<u8>,
}

impl HolderRecord {
    /// Says that shard `index` of chunk `chunk` is now on node `id` (reachable at `addrs`),
    /// adding the node if the record does not name it yet: what a repair changes.
    ///
    /// # Panics
    /// If `chunk` or `index` is out of the record's range, or the node list is full.
    pub fn move_shard(
        &mut self,
        chunk: usize,
        index: usize,
        id: EndpointId,
        addrs: Vec<SocketAddr>,
    ) {
        let at = match self.nodes.iter().position(|(n, _)| *n == id) {
            Some(at) => at,
            None => {
                assert!(
                    self.nodes.len() < RECORD_NODES_MAX,
                    "the record names too many nodes"
                );
                self.nodes.push((id, addrs));
                self.nodes.len() - 1
            }
        };
        self.holders[chunk][index] = at as u16;
    }

    /// Checks every rule [`verify`](Self::verify) applies to a decoded record: a dag-cbor
    /// artifact CID, version ≥ 1, k ≥ 1, k + m ≤ [`RECORD_SHARDS_MAX`], distinct nodes within
    /// [`RECORD_NODES_MAX`] with at most [`ADDRS_MAX`] addresses each, at most
    /// [`RECORD_CHUNKS_MAX`] chunks of exactly k + m holder indices each below the node count,
    /// and an encoding within [`RECORD_LEN_MAX`]. Fails with [`Error::Record`] or
    /// [`Error::InvalidCid`].
    pub fn validate(&self) -> Result<()> {
        manifest_digest(&self.artifact)?;
        if self.artifact.encoded_len() > CID_LEN_MAX {
            return Err(invalid(format!(
                "artifact CID is {} bytes, over {CID_LEN_MAX}",
                self.artifact.encoded_len()
            )));
        }
        if self.version == 0 {
            return Err(invalid("version 0 is not allowed; the first version is 1"));
        }
        let shards = self.shards_per_chunk()?;
        if self.nodes.len() > RECORD_NODES_MAX {
            return Err(invalid(format!(
                "{} nodes is over the limit of {RECORD_NODES_MAX}",
                self.nodes.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for (id, addrs) in &self.nodes {
            if addrs.len() > ADDRS_MAX {
                return Err(invalid(format!(
                    "node {} has {} addresses, over the limit of {ADDRS_MAX}",
                    id.fmt_short(),
                    addrs.len()
                )));
            }
            if !seen.insert(*id) {
                return Err(invalid(format!("node {} is listed twice", id.fmt_short())));
            }
        }
        if self.holders.len() > RECORD_CHUNKS_MAX {
            return Err(invalid(format!(
                "{} chunks is over the limit of {RECORD_CHUNKS_MAX}",
                self.holders.len()
            )));
        }
        for (chunk, holders) in self.holders.iter().enumerate() {
            if holders.len() != shards {
                return Err(invalid(format!(
                    "chunk {chunk} has {} holders, expected k + m = {shards}",
                    holders.len()
                )));
            }
            if let Some(index) = holders
                .iter()
                .find(|i| usize::from(**i) >= self.nodes.len())
            {
                return Err(invalid(format!(
                    "chunk {chunk} names node {index}, but there are {} nodes",
                    self.nodes.len()
                )));
            }
        }
        let len = self.encoded_len();
        if len > RECORD_LEN_MAX as usize {
            return Err(invalid(format!(
                "record would be {len} bytes, over the limit of {RECORD_LEN_MAX}"
            )));
        }
        Ok(())
    }

    fn shards_per_chunk(&self) -> Result<usize> {
        let shards = usize::from(self.k) + usize::from(self.m);
        if self.k == 0 || shards > RECORD_SHARDS_MAX {
            return Err(invalid(format!(
                "k = {} and m = {} break 1 <= k, k + m <= {RECORD_SHARDS_MAX}",
                self.k, self.m
            )));
        }
        Ok(shards)
    }

    fn encoded_len(&self) -> usize {
        let nodes: usize = self
            .nodes
            .iter()
            .map(|(_, addrs)| {
                NODE_LEN_MIN
                    + addrs
                        .iter()
                        .map(|a| if a.is_ipv4() { 7 } else { 19 })
                        .sum::<usize>()
            })
            .sum();
        let holders: usize = self.holders.iter().map(|h| 2 * h.len()).sum();
        8 + 1
            + 32
            + 1
            + self.artifact.encoded_len()
            + 8
            + 3
            + 2
            + nodes
            + 4
            + holders
            + SIGNATURE_LEN
    }

    /// The signed bytes, or the reason the record is invalid (see [`validate`](Self::validate)).
    pub fn try_sign(&self, key: &SecretKey) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(key.public().as_bytes());
        let cid = self.artifact.to_bytes();
        out.push(cid.len() as u8);
        out.extend_from_slice(&cid);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.k);
        out.push(self.m);
        out.push(if self.reduced_durability {
            FLAG_REDUCED_DURABILITY
        } else {
            0
        });
        out.extend_from_slice(&(self.nodes.len() as u16).to_be_bytes());
        for (id, addrs) in &self.nodes {
            out.extend_from_slice(id.as_bytes());
            out.push(addrs.len() as u8);
            for addr in addrs {
                put_socket_addr(&mut out, addr);
            }
        }
        out.extend_from_slice(&(self.holders.len() as u32).to_be_bytes());
        for holders in &self.holders {
            for index in holders {
                out.extend_from_slice(&index.to_be_bytes());
            }
        }
        let signature = key.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        debug_assert_eq!(out.len(), self.encoded_len());
        Ok(out)
    }

    /// The signed bytes: the layout in the module docs, signed by `key`, whose endpoint becomes
    /// the record's publisher.
    ///
    /// # Panics
    ///
    /// If the record breaks a rule of [`validate`](Self::validate); call it first, or use
    /// [`try_sign`](Self::try_sign), when the record is built from outside input.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        match self.try_sign(key) {
            Ok(bytes) => bytes,
            Err(err) => panic!("signing an invalid holder record: {err}"),
        }
    }

    /// Decodes signed bytes, checking size, format, every rule of [`validate`](Self::validate)
    /// and the publisher's signature. Fails with [`Error::Record`] or [`Error::InvalidCid`];
    /// never panics.
    pub fn verify(bytes: &[u8]) -> Result<SignedRecord> {
        if bytes.len() > RECORD_LEN_MAX as usize {
            return Err(invalid(format!(
                "{} bytes is over the limit of {RECORD_LEN_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < MAGIC.len() + 1 + 32 + SIGNATURE_LEN {
            return Err(invalid(format!("{} bytes is too short", bytes.len())));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut reader = Cursor::new(body, invalid);
        if reader.array::<8>()? != *MAGIC {
            return Err(invalid("magic bytes are not CAIRNHR"));
        }
        let format = reader.u8()?;
        if format != FORMAT_VERSION {
            return Err(invalid(format!("format version {format} is not supported")));
        }
        let publisher = EndpointId::from_bytes(&reader.array::<32>()?)
            .map_err(|_| invalid("publisher is not a valid public key"))?;
        let cid_len = usize::from(reader.u8()?);
        if cid_len == 0 || cid_len > CID_LEN_MAX {
            return Err(invalid(format!(
                "artifact CID length {cid_len} is outside 1..={CID_LEN_MAX}"
            )));
        }
        let cid_bytes = reader.take(cid_len)?;
        let artifact = Cid::read_bytes(cid_bytes)
            .map_err(|err| invalid(format!("artifact CID does not parse: {err}")))?;
        if artifact.encoded_len() != cid_len {
            return Err(invalid("artifact CID length does not match the CID"));
        }
        manifest_digest(&artifact)?;
        let version = reader.u64()?;
        let k = reader.u8()?;
        let m = reader.u8()?;
        let flags = reader.u8()?;
        if flags & !FLAG_REDUCED_DURABILITY != 0 {
            return Err(invalid(format!("flags {flags:#04x} set reserved bits")));
        }
        let shards = usize::from(k) + usize::from(m);
        if k == 0 || shards > RECORD_SHARDS_MAX {
            return Err(invalid(format!(
                "k = {k} and m = {m} break 1 <= k, k + m <= {RECORD_SHARDS_MAX}"
            )));
        }
        let node_count = usize::from(reader.u16()?);
        if node_count * NODE_LEN_MIN > reader.rest().len() {
            return Err(invalid(format!(
                "{node_count} nodes cannot fit in the {} bytes left",
                reader.rest().len()
            )));
        }
        let mut nodes = Vec::with_capacity(node_count);
        for _ in 0..node_count {
            let id = EndpointId::from_bytes(&reader.array::<32>()?)
                .map_err(|_| invalid("a node id is not a valid public key"))?;
            let addr_count = usize::from(reader.u8()?);
            if addr_count > ADDRS_MAX {
                return Err(invalid(format!(
                    "node {} has {addr_count} addresses, over the limit of {ADDRS_MAX}",
                    id.fmt_short()
                )));
            }
            let mut addrs = Vec::with_capacity(addr_count);
            for _ in 0..addr_count {
                let ip = match reader.u8()? {
                    4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>()?)),
                    family => {
                        return Err(invalid(format!("address family {family} is not 4 or 6")));
                    }
                };
                addrs.push(SocketAddr::new(ip, reader.u16()?));
            }
            nodes.push((id, addrs));
        }
        let chunk_count = reader.u32()? as usize;
        if chunk_count > RECORD_CHUNKS_MAX {
            return Err(invalid(format!(
                "{chunk_count} chunks is over the limit of {RECORD_CHUNKS_MAX}"
            )));
        }
        // At most 4e6 · 64 · 2 bytes, so the product cannot overflow.
        if chunk_count * shards * 2 != reader.rest().len() {
            return Err(invalid(format!(
                "{chunk_count} chunks of {shards} holders need {} bytes, {} are left",
                chunk_count * shards * 2,
                reader.rest().len()
            )));
        }
        let mut holders = Vec::with_capacity(chunk_count);
        for _ in 0..chunk_count {
            let mut chunk = Vec::with_capacity(shards);
            for _ in 0..shards {
                chunk.push(reader.u16()?);
            }
            holders.push(chunk);
        }
        let record = HolderRecord {
            artifact,
            version,
            k,
            m,
            reduced_durability: flags & FLAG_REDUCED_DURABILITY != 0,
            nodes,
            holders,
        };
        record.validate()?;
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        publisher
            .verify(&signed_message(body), &Signature::from_bytes(signature))
            .map_err(|_| {
                invalid(format!(
                    "signature of publisher {} does not verify",
                    publisher.fmt_short()
                ))
            })?;
        Ok(SignedRecord {
            record,
            publisher,
            bytes: bytes.to_vec(),
        })
    }
}

/// The version a record signed now gets: the clock in Unix milliseconds.
pub fn record_version_now() -> u64 {
    unix_ms_now()
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `version` is dated more than [`RECORD_AHEAD_MAX`] past `now_ms`.
pub(crate) fn too_far_ahead(version: u64, now_ms: u64) -> bool {
    version > now_ms.saturating_add(RECORD_AHEAD_MAX.as_millis() as u64)
}

/// The record a reader should use among `candidates` (as different peers sent them): only
/// records of `artifact` signed by one of `signers` (the keys the artifact's verified manifest
/// allows) and dated at most [`RECORD_AHEAD_MAX`] past `now_ms` count, and of those the highest
/// version wins (equal versions: the greater bytes, so every reader picks the same). None if
/// no candidate counts: a forged, foreign or future-dated record is never chosen, whatever its
/// version.
pub fn choose_record<'a>(
    candidates: impl IntoIterator<Item = &'a SignedRecord>,
    artifact: &Cid,
    signers: &[[u8; 32]],
    now_ms: u64,
) -> Option<&'a SignedRecord> {
    candidates
        .into_iter()
        .filter(|r| {
            r.record.artifact == *artifact
                && signers.contains(r.publisher.as_bytes())
                && !too_far_ahead(r.record.version, now_ms)
        })
        .max_by(|a, b| (a.record.version, &a.bytes).cmp(&(b.record.version, &b.bytes)))
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    crate::signed::signed_message(SIGN_CONTEXT, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::{manifest_cid, shard_cid};
    use proptest::prelude::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    fn sample() -> HolderRecord {
        HolderRecord {
            artifact: manifest_cid(b"manifest"),
            version: 1,
            k: 2,
            m: 1,
            reduced_durability: true,
            nodes: vec![
                (key(1).public(), vec!["127.0.0.1:4000".parse().unwrap()]),
                (
                    key(2).public(),
                    vec![
                        "[::1]:4001".parse().unwrap(),
                        "10.0.0.2:4002".parse().unwrap(),
                    ],
                ),
                (key(3).public(), vec![]),
            ],
            holders: vec![vec![0, 1, 2], vec![2, 2, 0]],
        }
    }

    /// Where the chunk count sits in `sample()` signed bytes.
    fn chunk_count_at(bytes: &[u8], record: &HolderRecord) -> usize {
        bytes.len()
            - SIGNATURE_LEN
            - 4
            - 2 * record.holders.len() * usize::from(record.k + record.m)
    }

    #[test]
    fn records_round_trip_and_name_their_publisher() {
        let record = sample();
        let bytes = record.sign(&key(9));
        assert_eq!(bytes.len(), record.encoded_len());
        let signed = HolderRecord::verify(&bytes).unwrap();
        assert_eq!(signed.record, record);
        assert_eq!(signed.publisher, key(9).public());
        assert_eq!(signed.bytes, bytes);
        assert_eq!(&bytes[..8], b"CAIRNHR\0");
        // Signing is deterministic: the same record signs to the same bytes.
        assert_eq!(record.sign(&key(9)), bytes);
    }

    /// Breaks one rule of a valid record.
    type Breaker = Box<dyn Fn(&mut HolderRecord)>;

    #[test]
    fn invalid_records_are_refused_before_signing() {
        let cases: Vec<(&str, Breaker)> = vec![
            ("k = 0", Box::new(|r| r.k = 0)),
            ("k + m <= 64", Box::new(|r| r.m = 63)),
            ("version 0", Box::new(|r| r.version = 0)),
            (
                "holders, expected",
                Box::new(|r| r.holders[1].pop().map_or((), drop)),
            ),
            ("names node 3", Box::new(|r| r.holders[0][1] = 3)),
            ("listed twice", Box::new(|r| r.nodes[2].0 = r.nodes[0].0)),
            (
                "addresses, over",
                Box::new(|r| r.nodes[0].1 = vec!["127.0.0.1:1".parse().unwrap(); ADDRS_MAX + 1]),
            ),
            ("dag-cbor", Box::new(|r| r.artifact = shard_cid(b"shard"))),
        ];
        for (expected, break_it) in cases {
            let mut record = sample();
            break_it(&mut record);
            let err = record.try_sign(&key(9)).unwrap_err();
            assert!(err.to_string().contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn counts_are_checked_against_the_bytes_before_allocation() {
        let record = sample();
        let bytes = record.sign(&key(9));
        // Four million chunks claimed in a record of a few hundred bytes.
        let at = chunk_count_at(&bytes, &record);
        let mut many = bytes.clone();
        many[at..at + 4].copy_from_slice(&(RECORD_CHUNKS_MAX as u32).to_be_bytes());
        let err = HolderRecord::verify(&many).unwrap_err().to_string();
        assert!(err.contains("chunks of 3 holders need"), "{err}");
        many[at..at + 4].copy_from_slice(&(RECORD_CHUNKS_MAX as u32 + 1).to_be_bytes());
        let err = HolderRecord::verify(&many).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        // 65535 nodes claimed.
        let nodes_at = 53 + record.artifact.encoded_len();
        let mut nodes = bytes.clone();
        nodes[nodes_at..nodes_at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        let err = HolderRecord::verify(&nodes).unwrap_err().to_string();
        assert!(err.contains("cannot fit"), "{err}");
        // Over the total cap, and reserved flag bits.
        let huge = vec![0u8; RECORD_LEN_MAX as usize + 1];
        let err = HolderRecord::verify(&huge).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        let mut flags = bytes.clone();
        flags[52 + record.artifact.encoded_len()] |= 0x80;
        let err = HolderRecord::verify(&flags).unwrap_err().to_string();
        assert!(err.contains("reserved bits"), "{err}");
        // A record signed without the domain prefix does not verify.
        let (body, _) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut bare = body.to_vec();
        bare.extend_from_slice(&key(9).sign(body).to_bytes());
        let err = HolderRecord::verify(&bare).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
    }

    #[test]
    fn readers_choose_the_newest_record_of_an_allowed_signer_only() {
        let artifact = manifest_cid(b"manifest");
        let now = 1_700_000_000_000u64;
        let publisher = key(9);
        let repairer = key(10);
        let forger = key(11);
        let signers = [
            *publisher.public().as_bytes(),
            *repairer.public().as_bytes(),
        ];
        let signed = |version: u64, by: &SecretKey, artifact: Cid| {
            let mut r = sample();
            r.artifact = artifact;
            r.version = version;
            HolderRecord::verify(&r.sign(by)).unwrap()
        };
        let old = signed(now - 60_000, &publisher, artifact);
        let repaired = signed(now - 1_000, &repairer, artifact);
        let frozen = signed(u64::MAX, &forger, artifact);
        let forged_recent = signed(now, &forger, artifact);
        let publisher_future = signed(now + 3_600_000, &publisher, artifact);
        let other_artifact = signed(now, &publisher, manifest_cid(b"other"));
        let all = [
            &frozen,
            &old,
            &forged_recent,
            &repaired,
            &publisher_future,
            &other_artifact,
        ];
        let chosen = choose_record(all.iter().copied(), &artifact, &signers, now);
        assert_eq!(chosen, Some(&repaired), "the newest allowed record wins");
        // Order does not matter.
        let chosen = choose_record(all.iter().rev().copied(), &artifact, &signers, now);
        assert_eq!(chosen, Some(&repaired));
        // Without the repairer's key only the publisher's old record counts.
        let only_publisher = [*publisher.public().as_bytes()];
        assert_eq!(
            choose_record(all.iter().copied(), &artifact, &only_publisher, now),
            Some(&old)
        );
        // A record up to RECORD_AHEAD_MAX ahead counts, one beyond does not.
        let ahead = now + RECORD_AHEAD_MAX.as_millis() as u64;
        let skewed = signed(ahead, &publisher, artifact);
        let beyond = signed(ahead + 1, &publisher, artifact);
        assert_eq!(
            choose_record([&old, &skewed, &beyond], &artifact, &only_publisher, now),
            Some(&skewed)
        );
        // Forged, foreign and future-dated records alone give nothing to use.
        assert_eq!(
            choose_record(
                [&frozen, &forged_recent, &publisher_future, &other_artifact],
                &artifact,
                &signers,
                now
            ),
            None
        );
        assert_eq!(
            choose_record(all.iter().copied(), &artifact, &[], now),
            None
        );
        // Two allowed records of the same version: every reader takes the same one.
        let a = signed(now, &publisher, artifact);
        let b = signed(now, &repairer, artifact);
        let first = choose_record([&a, &b], &artifact, &signers, now);
        assert_eq!(first, choose_record([&b, &a], &artifact, &signers, now));
    }

    fn arb_record() -> impl Strategy<Value = HolderRecord> {
        (
            1u8..=8,
            0u8..=8,
            1usize..=5,
            0usize..=6,
            any::<u64>(),
            any::<bool>(),
        )
            .prop_flat_map(|(k, m, node_count, chunks, version, reduced)| {
                let shards = usize::from(k + m);
                let addrs = prop::collection::vec(
                    (any::<[u8; 4]>(), any::<u16>())
                        .prop_map(|(ip, port)| SocketAddr::from((ip, port))),
                    0..=3,
                );
                (
                    prop::collection::vec(addrs, node_count),
                    prop::collection::vec(
                        prop::collection::vec(0..node_count as u16, shards),
                        chunks,
                    ),
                    any::<[u8; 8]>(),
                )
                    .prop_map(move |(addrs, holders, manifest)| HolderRecord {
                        artifact: manifest_cid(&manifest),
                        version: version.max(1),
                        k,
                        m,
                        reduced_durability: reduced,
                        nodes: addrs
                            .into_iter()
                            .enumerate()
                            .map(|(i, a)| (key(i as u8 + 1).public(), a))
                            .collect(),
                        holders,
                    })
            })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = HolderRecord::verify(&bytes);
            let mut framed = b"CAIRNHR\0\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = HolderRecord::verify(&framed);
        }

        #[test]
        fn valid_records_round_trip(record in arb_record()) {
            let bytes = record.sign(&key(7));
            let signed = HolderRecord::verify(&bytes).unwrap();
            prop_assert_eq!(signed.record, record);
        }

        #[test]
        fn any_flipped_bit_is_refused(record in arb_record(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = record.sign(&key(7));
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(HolderRecord::verify(&bytes).is_err());
        }
    }
}
