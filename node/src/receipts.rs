//! Audit receipts as operators export and check them.
//!
//! `cairn node receipts --json` writes a JSON array of [`ReceiptJson`]: the signed bytes (hex)
//! and, for people and tools, what they say. `cairn receipts verify` trusts only the signed
//! bytes: it decodes and verifies each (signature by the auditor named in it), checks that the
//! readable fields say the same, and that no auditor's nonce appears twice (a receipt copied to
//! count twice). A file is valid only if every receipt in it is.

use std::collections::HashSet;

use cairn_swarm::{Cid, SignedReceipt};
use serde::{Deserialize, Serialize};

/// Most receipts one export or one verification handles.
pub const RECEIPTS_EXPORT_MAX: usize = 1_000_000;

/// One receipt in an export.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    /// The signed receipt, hex: the only part verification trusts.
    pub receipt: String,
    /// The auditor's endpoint id (hex), which signed it.
    pub auditor: String,
    /// The holder's endpoint id (hex), which earned it.
    pub holder: String,
    /// The challenge nonce (hex).
    pub nonce: String,
    /// Unix ms when signed.
    pub time_ms: u64,
    /// Bytes of the shards proved.
    pub bytes: u64,
    /// The shards proved (CIDs).
    pub shards: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

impl ReceiptJson {
    /// The export form of a verified receipt.
    pub fn from_signed(s: &SignedReceipt) -> Self {
        let r = &s.receipt;
        Self {
            receipt: hex(&s.bytes),
            auditor: hex(r.auditor.as_bytes()),
            holder: hex(r.holder.as_bytes()),
            nonce: hex(&r.nonce),
            time_ms: r.time_ms,
            bytes: r.bytes,
            shards: r.shards.iter().map(Cid::to_string).collect(),
        }
    }
}

/// What verifying a file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Receipts that verified.
    pub valid: usize,
    /// Bytes they prove, summed.
    pub bytes: u64,
    /// One line per receipt that did not, with its position (0-based) and why.
    pub invalid: Vec<String>,
}

/// Checks every receipt of a JSON export (see the module documentation).
pub fn verify_receipts(json: &[u8]) -> Result<VerifyReport, String> {
    let rows: Vec<ReceiptJson> =
        serde_json::from_slice(json).map_err(|e| format!("not a receipts export: {e}"))?;
    if rows.len() > RECEIPTS_EXPORT_MAX {
        return Err(format!(
            "{} receipts is over the limit of {RECEIPTS_EXPORT_MAX}",
            rows.len()
        ));
    }
    let mut report = VerifyReport::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        match check(row) {
            Err(why) => report.invalid.push(format!("receipt {i}: {why}")),
            Ok(signed) => {
                let key = (row.auditor.clone(), row.nonce.clone());
                if !seen.insert(key) {
                    report.invalid.push(format!(
                        "receipt {i}: nonce {} of auditor {} was already used by an earlier \
                         receipt (a replay)",
                        row.nonce, row.auditor
                    ));
                    continue;
                }
                report.valid += 1;
                report.bytes += signed.receipt.bytes;
            }
        }
    }
    Ok(report)
}

fn check(row: &ReceiptJson) -> Result<SignedReceipt, String> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(row.receipt.as_bytes())
        .map_err(|e| format!("receipt is not hex: {e}"))?;
    let signed = SignedReceipt::decode(&bytes).map_err(|e| e.to_string())?;
    if ReceiptJson::from_signed(&signed) != *row {
        return Err("its readable fields differ from what the signed bytes say".into());
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_swarm::{Receipt, SecretKey, shard_cid};

    fn signed(key: &SecretKey, holder: &SecretKey, nonce: u8) -> ReceiptJson {
        let r = Receipt {
            auditor: key.public(),
            holder: holder.public(),
            nonce: [nonce; 32],
            time_ms: 1_700_000_000_000,
            bytes: 1000,
            shards: vec![shard_cid(b"one")],
        };
        ReceiptJson::from_signed(&SignedReceipt::decode(&r.sign(key)).unwrap())
    }

    #[test]
    fn a_valid_file_verifies_and_tampering_replays_and_forgeries_do_not() {
        let (a, h, other) = (
            SecretKey::from_bytes(&[1; 32]),
            SecretKey::from_bytes(&[2; 32]),
            SecretKey::from_bytes(&[3; 32]),
        );
        let good = vec![signed(&a, &h, 1), signed(&a, &h, 2)];
        let r = verify_receipts(&serde_json::to_vec(&good).unwrap()).unwrap();
        assert_eq!((r.valid, r.bytes, r.invalid.len()), (2, 2000, 0));

        // One byte of the signed receipt changed.
        let mut flipped = good.clone();
        let mut b = data_encoding::HEXLOWER
            .decode(flipped[0].receipt.as_bytes())
            .unwrap();
        b[60] ^= 1;
        flipped[0].receipt = hex(&b);
        let r = verify_receipts(&serde_json::to_vec(&flipped).unwrap()).unwrap();
        assert_eq!((r.valid, r.invalid.len()), (1, 1), "{:?}", r.invalid);

        // A readable field edited (more bytes claimed than signed).
        let mut inflated = good.clone();
        inflated[1].bytes = 10_000;
        let r = verify_receipts(&serde_json::to_vec(&inflated).unwrap()).unwrap();
        assert_eq!(r.valid, 1);
        assert!(r.invalid[0].contains("differ"), "{:?}", r.invalid);

        // Signed by another key than the auditor it names: the auditor field is the key's.
        let mut forged = signed(&other, &h, 3);
        forged.auditor = hex(a.public().as_bytes());
        let r = verify_receipts(&serde_json::to_vec(&vec![forged]).unwrap()).unwrap();
        assert_eq!(r.valid, 0);

        // The same receipt twice: the second is a replay.
        let twice = vec![good[0].clone(), good[0].clone()];
        let r = verify_receipts(&serde_json::to_vec(&twice).unwrap()).unwrap();
        assert_eq!((r.valid, r.invalid.len()), (1, 1));
        assert!(r.invalid[0].contains("replay"), "{:?}", r.invalid);

        assert!(verify_receipts(b"{not json").is_err());
    }
}
