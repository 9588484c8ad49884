//! Name records arrive from any peer (PUT_NAME, GET_NAME replies) and are signed: random bytes
//! never get past the signatures, so the target signs what it builds. From fuzzer-chosen fields
//! (org and name parts, kind, version, artifact and parent CIDs, policy, grants, a delegation
//! signed by the org key or by another key) it builds a record, signs it with a fixed test key,
//! and checks that it signs exactly when it is valid, its signer's key signs and its delegation
//! is the org key's; that the signed bytes decode to exactly that record; and that its grants
//! open for their gateways under this record's context only. Then it edits, truncates or
//! extends the bytes, and any change must be refused: an accepted edit would be a forged record.
//!
//! Input: a first byte that is even feeds the rest to the decoder as raw bytes (the committed
//! seeds are signed records behind a 0); an odd one builds a record from the rest.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_encryption::{
    ArtifactKey, GRANT_ENC_LEN, GRANT_SEALED_LEN, GatewayId, GatewaySecret, WrappedKey, unwrap_key,
    wrap_key,
};
use cairn_swarm::{
    Delegation, Error, NAME_RECORD_LEN_MAX, NameKind, NameRecord, POLICY_LEN_MAX, SignedName,
    grant_context, manifest_cid, merge_answers, shard_cid,
};
use common_keys::{GATEWAYS, gateways, key, mutate};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Grants per record built, at most (each honest one costs an HPKE wrap and two opens).
const GRANTS_BUILT_MAX: usize = 3;
const EDITS_MAX: usize = 8;
/// What `Part::Clean` maps bytes onto: the characters of a name part, `.` and `-` included
/// (which may not lead), so most clean parts are valid and some are not.
const PART_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";

fn gateway(i: u8) -> &'static (GatewaySecret, GatewayId) {
    &gateways()[usize::from(i) % GATEWAYS]
}

/// The artifact key every honest grant wraps.
fn artifact_key() -> ArtifactKey {
    ArtifactKey::from_bytes([0x5a; 32])
}

#[derive(Arbitrary, Debug)]
enum Part {
    /// Any text: mostly refused.
    Raw(String),
    /// Bytes mapped onto `PART_CHARS`: mostly accepted.
    Clean(Vec<u8>),
}

impl Part {
    fn text(&self) -> String {
        match self {
            Part::Raw(s) => s.clone(),
            Part::Clean(b) => b
                .iter()
                .map(|&c| char::from(PART_CHARS[usize::from(c) % PART_CHARS.len()]))
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum GrantSpec {
    /// The fixed artifact key wrapped to fixed gateway `i`, under this record's context.
    Wrapped(u8),
    /// Fields as given: opens for no gateway.
    Raw {
        gateway: [u8; 32],
        enc: [u8; GRANT_ENC_LEN],
        sealed: [u8; GRANT_SEALED_LEN],
    },
}

#[derive(Arbitrary, Debug)]
struct DelegationSpec {
    /// The member key that signs the record.
    member: u8,
    /// Who signs the delegation: `None` the org key, `Some(i)` test key `i` (the org key too,
    /// when `i` picks it).
    by: Option<u8>,
    until_ms: u64,
    /// Sign the delegation over the org in upper case (delegations compare orgs in lowercase).
    shout: bool,
}

#[derive(Arbitrary, Debug)]
struct Built {
    org_key: u8,
    delegation: Option<DelegationSpec>,
    /// The key that signs: `None` the record's signer's, `Some(i)` test key `i`.
    sign_with: Option<u8>,
    dataset: bool,
    org: Part,
    name: Part,
    version: u64,
    /// The artifact's content, and whether to name it as a shard (refused) instead.
    artifact: (Vec<u8>, bool),
    parent: Option<(Vec<u8>, bool)>,
    policy: String,
    /// Characters added to the policy (modulo a little over the limit), to reach its bound.
    policy_pad: Option<u16>,
    grants: Vec<GrantSpec>,
    now_ms: u64,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fn cid_of((content, shard): &(Vec<u8>, bool)) -> cairn_swarm::Cid {
    if *shard {
        shard_cid(content)
    } else {
        manifest_cid(content)
    }
}

/// What readers make of this record alone: itself when its time is accepted, else nothing.
fn check_merge(signed: &SignedName, now_ms: u64) {
    let r = &signed.record;
    let merged = merge_answers(
        &[vec![signed.clone()]],
        r.kind,
        &r.org.to_ascii_uppercase(),
        &r.name,
        now_ms,
    );
    if r.check_time(now_ms).is_ok() {
        assert_eq!(
            merged,
            vec![signed.clone()],
            "a lone record did not merge to itself"
        );
    } else {
        assert!(merged.is_empty(), "a record dated too far ahead was merged");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(signed) = SignedName::decode(rest) {
            assert!(signed.record.validate().is_ok(), "decoded but invalid");
            assert_eq!(signed.bytes, rest);
            assert!(rest.len() <= NAME_RECORD_LEN_MAX);
            let version = signed.record.version;
            for now_ms in [0, version, u64::MAX] {
                let _ = signed.record.check_time(now_ms);
                check_merge(&signed, now_ms);
            }
            assert!(!signed.wins_over(&signed));
            for g in &signed.record.grants {
                assert_eq!(signed.record.grant_for(&g.gateway), Some(g));
            }
        }
        return;
    }
    let Ok(Built {
        org_key,
        delegation: delegation_spec,
        sign_with,
        dataset,
        org,
        name,
        version,
        artifact,
        parent,
        policy,
        policy_pad,
        grants: grant_specs,
        now_ms,
        edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let kind = if dataset {
        NameKind::Dataset
    } else {
        NameKind::Model
    };
    let org = org.text();
    let name = name.text();
    let artifact = cid_of(&artifact);
    let mut policy = policy;
    if let Some(pad) = policy_pad {
        let pad = usize::from(pad) % (POLICY_LEN_MAX + 4);
        policy.extend(std::iter::repeat_n('p', pad));
    }
    let (org_secret, org_id) = key(org_key);
    let (signer, delegation, delegation_by_org) = match &delegation_spec {
        None => (*org_id, None, true),
        Some(d) => {
            let member = key(d.member).1;
            let (by_secret, by_id) = d.by.map_or((org_secret, org_id), |i| {
                let (s, id) = key(i);
                (s, id)
            });
            let delegated_org = if d.shout {
                org.to_ascii_uppercase()
            } else {
                org.clone()
            };
            let delegation = Delegation::sign(by_secret, &delegated_org, &member, d.until_ms);
            (member, Some(delegation), by_id == org_id)
        }
    };
    let context = grant_context(kind, &org, &name, &artifact);
    let grants: Vec<WrappedKey> = grant_specs
        .iter()
        .take(GRANTS_BUILT_MAX)
        .map(|g| match g {
            GrantSpec::Wrapped(i) => wrap_key(&gateway(*i).1, &artifact_key(), &context)
                .expect("a gateway's own id is a valid key"),
            GrantSpec::Raw {
                gateway,
                enc,
                sealed,
            } => WrappedKey {
                gateway: GatewayId(*gateway),
                enc: *enc,
                sealed: *sealed,
            },
        })
        .collect();
    let record = NameRecord {
        org_key: *org_id,
        signer,
        delegation,
        kind,
        org,
        name,
        version,
        artifact,
        parent: parent.as_ref().map(cid_of),
        policy,
        grants,
    };
    // The clock check never panics, whatever the times.
    let _ = record.check_time(now_ms);
    let (secret, id) =
        key(sign_with.unwrap_or_else(|| delegation_spec.as_ref().map_or(org_key, |d| d.member)));
    let valid = record.validate().is_ok();
    let signs = valid && *id == record.signer && delegation_by_org;
    let honest = match record.try_sign(secret) {
        Ok(bytes) => bytes,
        Err(Error::Name { .. } | Error::InvalidCid { .. }) => {
            assert!(
                !signs,
                "a valid record did not sign with its signer's key and the org's delegation"
            );
            return;
        }
        Err(other) => panic!("signing failed with an unexpected error: {other}"),
    };
    assert!(
        signs,
        "a record signed though invalid ({valid}), by another key ({}), or with a delegation \
         not the org key's ({delegation_by_org})",
        *id != record.signer
    );
    assert!(honest.len() <= NAME_RECORD_LEN_MAX);
    let signed = SignedName::decode(&honest).expect("an honestly signed record decodes");
    assert_eq!(signed.record, record, "decode(sign(r)) differs from r");
    assert_eq!(signed.bytes, honest);
    check_merge(&signed, now_ms);

    // The honest grants open for their gateway under this record's context, and not as another
    // kind's; the others open for no gateway.
    let other_kind = match kind {
        NameKind::Model => NameKind::Dataset,
        NameKind::Dataset => NameKind::Model,
    };
    let moved = grant_context(other_kind, &record.org, &record.name, &record.artifact);
    for (spec, g) in grant_specs.iter().zip(&signed.record.grants) {
        match spec {
            GrantSpec::Wrapped(i) => {
                let secret = &gateway(*i).0;
                assert_eq!(
                    unwrap_key(secret, g, &context).ok(),
                    Some(artifact_key()),
                    "an honest grant did not open"
                );
                assert!(
                    unwrap_key(secret, g, &moved).is_err(),
                    "a grant opened under another record's context"
                );
            }
            GrantSpec::Raw { .. } => {
                assert!(
                    unwrap_key(&gateway(0).0, g, &context).is_err(),
                    "a grant of random bytes opened"
                );
            }
        }
    }

    let mut edited = honest.clone();
    mutate(&mut edited, &edits, EDITS_MAX, truncate, &extra);
    if edited != honest {
        if let Ok(forged) = SignedName::decode(&edited) {
            panic!("edited name record bytes decoded: {:?}", forged.record);
        }
    }
});
