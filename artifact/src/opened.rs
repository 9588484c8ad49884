//! An artifact opened with its read capability: the one way every reader (the command line, the
//! gateway, a node) turns a capability and manifest bytes into something it can read from.

use crate::{Artifact, Cid, Error, FileEntry, Manifest, PrivatePart, ReadCap, manifest_cid};

/// The manifest, checked against the capability's CID, and the private part its key opened.
/// Owned, so it can live behind an `Arc` for as long as a reader needs it; pipelines borrow it as
/// an [`Artifact`]. `Debug` shows the CID and the file count, never the chunk keys.
#[derive(Clone)]
pub struct OpenedArtifact {
    /// The manifest CID.
    pub cid: Cid,
    /// The decoded manifest.
    pub manifest: Manifest,
    /// The opened private part.
    pub private: PrivatePart,
}

impl OpenedArtifact {
    /// Opens `manifest_bytes` with `cap`: the bytes must hash to the capability's CID (wherever
    /// they came from: a disk, a peer), decode as a manifest, and open with its key.
    pub fn open(cap: &ReadCap, manifest_bytes: &[u8]) -> Result<Self, Error> {
        if manifest_cid(manifest_bytes) != cap.cid {
            return Err(Error::BadManifest {
                what: cap.cid.to_string(),
                reason: "its bytes do not match the CID".into(),
            });
        }
        let manifest = Manifest::decode(manifest_bytes, &cap.cid.to_string())?;
        Self::from_manifest(cap, manifest)
    }

    /// Opens a manifest already decoded from bytes checked against `cap`'s CID.
    pub fn from_manifest(cap: &ReadCap, manifest: Manifest) -> Result<Self, Error> {
        let private = manifest.open(&cap.cid, &cap.key)?;
        Ok(Self {
            cid: cap.cid,
            manifest,
            private,
        })
    }

    /// The view the read pipelines take.
    pub fn artifact(&self) -> Artifact<'_> {
        Artifact {
            cid: self.cid,
            manifest: &self.manifest,
            private: &self.private,
        }
    }

    /// The file at `path`, or [`Error::FileNotFound`].
    pub fn file(&self, path: &str) -> Result<&FileEntry, Error> {
        self.private
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| Error::FileNotFound {
                artifact: self.cid,
                path: path.to_string(),
            })
    }

    /// Bytes in all files.
    pub fn size(&self) -> u64 {
        self.private.files.iter().map(|f| f.size).sum()
    }
}

impl std::fmt::Debug for OpenedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedArtifact")
            .field("cid", &self.cid)
            .field("files", &self.private.files.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn opens_only_bytes_of_its_cid_with_its_key() {
        let (manifest, private, key) = sample(2);
        let (cid, bytes) = manifest.encode();
        let cap = ReadCap {
            cid,
            key: key.clone(),
        };
        let o = OpenedArtifact::open(&cap, &bytes).unwrap();
        assert_eq!(o.private.files, private.files);
        assert_eq!(o.size(), private.files[0].size);
        assert_eq!(o.file("dir/model.safetensors").unwrap().chunk_count, 2);
        assert!(matches!(o.file("nope"), Err(Error::FileNotFound { .. })));
        let shown = format!("{o:?}");
        assert!(
            shown.contains(&cid.to_string()) && !shown.contains("key"),
            "{shown}"
        );

        let (other, _, _) = sample(3);
        let (_, other_bytes) = other.encode();
        assert!(matches!(
            OpenedArtifact::open(&cap, &other_bytes),
            Err(Error::BadManifest { .. })
        ));
        let wrong_key = ReadCap {
            cid,
            key: cairn_encryption::ArtifactKey::random(),
        };
        assert!(matches!(
            OpenedArtifact::open(&wrong_key, &bytes),
            Err(Error::Crypto { .. })
        ));
    }
}
