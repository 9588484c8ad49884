//! Read capabilities: the manifest CID plus the artifact key, as one pasteable string.
//!
//! `cairn-read1:<manifest CID, base32>:<artifact key, 52 chars base32 lowercase, no padding>`

use std::fmt;
use std::str::FromStr;

use cairn_encryption::ArtifactKey;
use data_encoding::BASE32_NOPAD;

use crate::{CODEC_DAG_CBOR, Cid, Error};

const PREFIX: &str = "cairn-read1:";
/// Longest capability string accepted; real ones are about 130 characters.
const CAP_LEN_MAX: usize = 512;

/// What a reader needs to fetch and open an artifact. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadCap {
    /// The manifest's CID.
    pub cid: Cid,
    /// The key that opens the manifest's private part.
    pub key: ArtifactKey,
}

impl fmt::Debug for ReadCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCap({}, <key redacted>)", self.cid)
    }
}

impl fmt::Display for ReadCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = BASE32_NOPAD
            .encode(self.key.as_bytes())
            .to_ascii_lowercase();
        write!(f, "{PREFIX}{}:{key}", self.cid)
    }
}

impl FromStr for ReadCap {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if s.len() > CAP_LEN_MAX {
            return Err(Error::BadCapability(format!(
                "longer than {CAP_LEN_MAX} characters"
            )));
        }
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::BadCapability("it does not start with `cairn-read1:`".into()))?;
        let (cid, key) = rest
            .split_once(':')
            .ok_or_else(|| Error::BadCapability("the key part is missing".into()))?;
        let cid = Cid::try_from(cid)
            .map_err(|e| Error::BadCapability(format!("the CID part is not a CID ({e})")))?;
        if cid.codec() != CODEC_DAG_CBOR || crate::ids::blake3_digest(&cid).is_none() {
            return Err(Error::BadCapability(
                "the CID is not a Cairn manifest address (CIDv1 dag-cbor BLAKE3)".into(),
            ));
        }
        // Messages about the key never echo it: the string may be a mistyped secret.
        let bytes = BASE32_NOPAD
            .decode(key.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::BadCapability("the key part is not base32".into()))?;
        let key = ArtifactKey::from_slice(&bytes).map_err(|_| {
            Error::BadCapability(format!("the key is {} bytes, not 32", bytes.len()))
        })?;
        Ok(ReadCap { cid, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest_cid;

    #[test]
    fn round_trips() {
        let cap = ReadCap {
            cid: manifest_cid(b"m"),
            key: ArtifactKey::random(),
        };
        let s = cap.to_string();
        assert!(s.starts_with(PREFIX));
        assert_eq!(s.parse::<ReadCap>().unwrap(), cap);
        assert!(!format!("{cap:?}").contains(&s[s.len() - 20..]));
    }

    #[test]
    fn rejects_bad_strings_without_echoing_the_key() {
        let cap = ReadCap {
            cid: manifest_cid(b"m"),
            key: ArtifactKey::from_bytes([3; 32]),
        };
        let good = cap.to_string();
        let key_part = good.rsplit(':').next().unwrap().to_string();
        let cases = [
            String::new(),
            "hello".into(),
            format!("cairn-read1:{}", cap.cid),
            format!("cairn-read1:notacid:{key_part}"),
            format!("cairn-read1:{}:{key_part}", crate::shard_cid(b"x")),
            format!("{}x", good),
            good[..good.len() - 1].to_string(),
            format!("{good}{}", "a".repeat(600)),
        ];
        for c in cases {
            let e = c.parse::<ReadCap>().unwrap_err();
            assert!(matches!(e, Error::BadCapability(_)), "{c}: {e}");
            assert!(!e.to_string().contains(&key_part), "{e}");
        }
    }
}
