//! The committed seeds of the `audit_frames`, `receipt_decode`, `lease_decode`,
//! `name_record_decode` and `grant_unwrap` fuzz targets, and the lease and name frames of
//! `swarm_frames` (`fuzz/seeds/<target>/`): valid inputs that take the targets past counts, CID
//! prefixes and signatures. Built here from fixed inputs and compared with the committed files, so they stay
//! valid as the formats change; `CAIRN_REGEN_VECTORS=1 cargo test -p cairn-swarm fuzz_seeds`
//! rewrites them (the same switch as the repository's test vectors).

use std::path::PathBuf;

use cairn_artifact::{audit_answer, outboard};
use cairn_encryption::{GRANT_SEALED_LEN, GatewayId, GatewaySecret, WrappedKey, unwrap_key};

use crate::audit::AuditReply;
use crate::protocol::{
    Head, Kind, Status, encode_audit_reply, encode_data_head, encode_error, encode_head,
    encode_names, encode_not_found, encode_ok, fuzzing,
};
use crate::{
    Delegation, Lease, NameKind, NameRecord, Receipt, SecretKey, SignedLease, SignedName,
    SignedReceipt, grant_context, manifest_cid, shard_cid,
};

fn check_or_write(target: &str, name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
        .join(name);
    if std::env::var_os("CAIRN_REGEN_VECTORS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); CAIRN_REGEN_VECTORS=1 writes it",
            path.display()
        )
    });
    assert!(
        committed == bytes,
        "{} differs from what this build makes: CAIRN_REGEN_VECTORS=1 rewrites it",
        path.display()
    );
}

#[test]
fn fuzz_seeds() {
    // audit_frames, selector 0: AUDIT request bodies (the target adds version and type).
    let cids: Vec<_> = (0..64u32)
        .map(|i| shard_cid(format!("seed shard {i}").as_bytes()))
        .collect();
    for (name, count, lease) in [
        ("request", 2, 1_750_000_000_000u64),
        ("request-full", 64, 0),
    ] {
        let frame = fuzzing::encode_audit_request([3; 32], lease, &cids[..count]).unwrap();
        let (again, decoded) = fuzzing::decode_audit_request(&frame).unwrap();
        assert_eq!((again.as_slice(), decoded), (frame.as_slice(), count));
        check_or_write("audit_frames", name, &[&[0][..], &frame[2..]].concat());
    }

    // Selector 1: replies to a request of `count` shards, with a real answer among them.
    let small = b"a small shard of a few bytes".repeat(100);
    let small_cid = shard_cid(&small);
    let (_, ob) = outboard(&small);
    let answer = audit_answer(&[4; 32], &small_cid, &small, &ob).unwrap();
    let answers = [
        AuditReply::Answer(answer),
        AuditReply::NotHeld,
        AuditReply::Corrupted,
    ];
    let replies = [
        ("reply", 3u16, encode_audit_reply(&answers)),
        (
            "reply-error",
            1,
            encode_error(Status::Internal, None, "storage failed"),
        ),
    ];
    for (name, count, frame) in replies {
        let (again, decoded) = fuzzing::decode_audit_reply(count, &frame).unwrap();
        if name == "reply" {
            assert_eq!(again.as_deref(), Some(frame.as_slice()));
            assert_eq!(decoded, answers);
        }
        check_or_write(
            "audit_frames",
            name,
            &[&[1][..], &count.to_be_bytes(), &frame].concat(),
        );
    }

    // Selectors 2 and 3 need no seed: 2 builds the honest answer itself, and a seed for 3 (an
    // answer of four 16 KiB groups) would raise the target's input length limit to 66 KiB.

    // receipt_decode, selector 0: signed receipts, by the first key of the targets'
    // `common_keys` (seed byte 1).
    let auditor = SecretKey::from_bytes(&[1; 32]);
    let holder = SecretKey::from_bytes(&[38; 32]);
    for (name, count) in [("receipt", 2), ("receipt-full", 64)] {
        let receipt = Receipt {
            auditor: auditor.public(),
            holder: holder.public(),
            nonce: [6; 32],
            time_ms: 1_750_000_000_000,
            bytes: 100_000 * count as u64,
            shards: cids[..count].to_vec(),
        };
        let signed = receipt.sign(&auditor);
        assert_eq!(SignedReceipt::decode(&signed).unwrap().receipt, receipt);
        check_or_write("receipt_decode", name, &[&[0][..], &signed].concat());
    }

    // lease_decode, selector 0: signed leases by the same key, one running, one ended.
    let artifact = manifest_cid(b"seed manifest");
    let mut leases = Vec::new();
    for (name, until_ms) in [("lease", 1_780_000_000_000u64), ("lease-ended", 0)] {
        let lease = Lease {
            signer: auditor.public(),
            artifact,
            until_ms,
            issued_ms: 1_750_000_000_000,
        };
        let signed = lease.try_sign(&auditor).unwrap();
        assert_eq!(SignedLease::decode(&signed).unwrap().lease, lease);
        check_or_write("lease_decode", name, &[&[0][..], &signed].concat());
        leases.push(signed);
    }

    // swarm_frames: PUT_LEASE and GET_LEASE requests (selector 0), and a GET_LEASE reply
    // (selector 1, request type 11, count 0).
    let mut put = encode_head(&Head::PutLease {
        len: leases[0].len() as u32,
    });
    put.extend_from_slice(&leases[0]);
    let get = encode_head(&Head::GetLease { artifact });
    for (name, frame) in [("request-put-lease", put), ("request-get-lease", get)] {
        assert_eq!(fuzzing::decode_request_frame(&frame).unwrap(), frame);
        check_or_write("swarm_frames", name, &[&[0][..], &frame].concat());
    }
    let mut reply = encode_data_head(leases[0].len() as u32);
    reply.extend_from_slice(&leases[0]);
    assert!(fuzzing::decode_reply_frame(Kind::GetLease as u8, 0, &reply).is_ok());
    check_or_write(
        "swarm_frames",
        "reply-get-lease",
        &[&[1, Kind::GetLease as u8, 0, 0][..], &reply].concat(),
    );

    // name_record_decode, selector 0: a record signed by its org key (the first key of the
    // targets' `common_keys`), and one signed by a member key (the second) under the org key's
    // delegation, with a parent, a policy and grants to the targets' fixed gateways (their
    // `enc` and sealed bytes are fixed, not a wrap: seeds are compared byte for byte, and a
    // wrap draws a fresh ephemeral key).
    let org = auditor;
    let member = holder;
    let gateway_ids: Vec<GatewayId> = (0..3u8)
        .map(|i| GatewaySecret::from_bytes([0xa0 + i; 32]).id())
        .collect();
    let plain = NameRecord {
        org_key: org.public(),
        signer: org.public(),
        delegation: None,
        kind: NameKind::Model,
        org: "Acme".into(),
        name: "model-1.0".into(),
        version: 1_750_000_000_000,
        artifact,
        parent: None,
        policy: "public".into(),
        grants: Vec::new(),
    };
    let delegated = NameRecord {
        signer: member.public(),
        delegation: Some(Delegation::sign(
            &org,
            "acme",
            &member.public(),
            1_780_000_000_000,
        )),
        kind: NameKind::Dataset,
        org: "acme".into(),
        name: "data_set.v2".into(),
        version: 1_750_000_000_001,
        parent: Some(manifest_cid(b"seed parent manifest")),
        policy: "keys".into(),
        grants: gateway_ids
            .iter()
            .enumerate()
            .map(|(i, id)| WrappedKey {
                gateway: *id,
                enc: [0x10 + i as u8; 32],
                sealed: [0x20 + i as u8; GRANT_SEALED_LEN],
            })
            .collect(),
        ..plain.clone()
    };
    let mut names = Vec::new();
    for (name, record, key) in [
        ("record", &plain, &org),
        ("record-delegated", &delegated, &member),
    ] {
        let signed = record.try_sign(key).unwrap();
        assert_eq!(&SignedName::decode(&signed).unwrap().record, record);
        check_or_write("name_record_decode", name, &[&[0][..], &signed].concat());
        names.push(signed);
    }

    // grant_unwrap, selector 0: a gateway id's text (as printed, and in upper case), and a
    // wrapped key with its context, not made by a wrap: it must not open.
    let id_text = gateway_ids[0].to_string();
    let upper = format!(
        "cairngw1{}",
        id_text
            .strip_prefix("cairngw1")
            .unwrap()
            .to_ascii_uppercase()
    );
    for (name, text) in [("id", &id_text), ("id-upper", &upper)] {
        assert_eq!(text.parse::<GatewayId>().unwrap(), gateway_ids[0]);
        check_or_write("grant_unwrap", name, &[&[0][..], text.as_bytes()].concat());
    }
    let context = grant_context(NameKind::Model, "acme", "model-1.0", &artifact);
    let forged = WrappedKey {
        gateway: gateway_ids[0],
        enc: gateway_ids[1].0,
        sealed: [0x33; GRANT_SEALED_LEN],
    };
    let secret = GatewaySecret::from_bytes([0xa0; 32]);
    assert!(unwrap_key(&secret, &forged, &context).is_err());
    check_or_write(
        "grant_unwrap",
        "wrapped",
        &[
            &[0][..],
            &forged.gateway.0,
            &forged.enc,
            &forged.sealed,
            &context,
        ]
        .concat(),
    );

    // swarm_frames: PUT_NAME and GET_NAME requests (selector 0), and replies to them
    // (selector 1: request type, count, reply).
    let mut put = encode_head(&Head::PutName {
        len: names[1].len() as u32,
    });
    put.extend_from_slice(&names[1]);
    assert_eq!(fuzzing::decode_request_frame(&put).unwrap(), put);
    check_or_write(
        "swarm_frames",
        "request-put-name",
        &[&[0][..], &put].concat(),
    );
    let get = encode_head(&Head::GetName {
        kind: NameKind::Model,
        org: "Acme".into(),
        name: "model-1.0".into(),
        count: 8,
    });
    assert_eq!(fuzzing::decode_request_frame(&get).unwrap(), get);
    check_or_write(
        "swarm_frames",
        "request-get-name",
        &[&[0][..], &get].concat(),
    );
    // PEERS_AFTER: a request after an id, and a page of one announcement.
    let after = encode_head(&Head::PeersAfter { after: [0x42; 32] });
    assert_eq!(fuzzing::decode_request_frame(&after).unwrap(), after);
    check_or_write(
        "swarm_frames",
        "request-peers-after",
        &[&[0][..], &after].concat(),
    );
    let page = crate::protocol::encode_peers(&[vec![0x11; 160]]);
    let replies = [
        ("reply-peers-after", Kind::PeersAfter, 0u16, page),
        ("reply-get-name", Kind::GetName, 2u16, encode_names(&names)),
        (
            "reply-get-name-not-found",
            Kind::GetName,
            8,
            encode_not_found(),
        ),
        ("reply-put-name", Kind::PutName, 0, encode_ok(&[])),
        (
            "reply-org-claimed",
            Kind::PutName,
            0,
            encode_error(
                Status::OrgClaimed,
                None,
                "org acme is claimed by another key",
            ),
        ),
    ];
    for (name, kind, count, reply) in replies {
        assert!(fuzzing::decode_reply_frame(kind as u8, count, &reply).is_ok());
        check_or_write(
            "swarm_frames",
            name,
            &[&[1, kind as u8][..], &count.to_be_bytes(), &reply].concat(),
        );
    }
}
