// Shared by the targets that look things up in a gateway registry: a real `Registry` (redb) in
// a temporary folder, made once per process, with known repositories and revisions.

use std::sync::OnceLock;

use cairn_artifact::{Cid, ReadCap, manifest_cid};
use cairn_encryption::ArtifactKey;
use cairn_gateway::{AccessPolicy, CommitId, Registry, RepoKind};

pub struct Known {
    pub registry: Registry,
    /// `acme/model` (a model) was registered with `a`, then `b`: `main` is `b`.
    pub a: Cid,
    pub b: Cid,
    /// `acme/data` (a dataset) was registered with `c`.
    pub c: Cid,
}

pub fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cairn-fuzz-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = Registry::open(&dir).expect("a registry opens in a fresh folder");
        let cap = |seed: &[u8]| ReadCap {
            cid: manifest_cid(seed),
            key: ArtifactKey::from_bytes([seed[0]; 32]),
        };
        let (a, b, c) = (cap(b"a"), cap(b"b"), cap(b"c"));
        let model: cairn_gateway::RepoId = "acme/model".parse().expect("a valid repo id");
        let data: cairn_gateway::RepoId = "acme/data".parse().expect("a valid repo id");
        for (kind, repo, cap) in [
            (RepoKind::Model, &model, &a),
            (RepoKind::Model, &model, &b),
            (RepoKind::Dataset, &data, &c),
        ] {
            registry
                .register(kind, repo, cap, AccessPolicy::Public)
                .expect("registering in a fresh registry works");
        }
        Known {
            registry,
            a: a.cid,
            b: b.cid,
            c: c.cid,
        }
    })
}

/// The commit id text of `cid`.
pub fn commit(cid: &Cid) -> String {
    CommitId::of(cid).to_string()
}
