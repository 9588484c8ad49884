//! The repository registry: which `org/name` revisions this gateway serves, and the read
//! capabilities it holds for them.
//!
//! Kept in the gateway's redb database (`gateway.redb`, see the `db` module, which the API-key
//! store, the sign-in tables and the usage totals share) rather than a JSON file: registering a
//! revision and moving `main` is one atomic transaction (a crash leaves the old state or the new
//! one), and table names carry a format version like the store's tables.
//!
//! Tables (keys are UTF-8; values are the bytes described):
//! - `gateway-artifacts-1`: manifest CID bytes → JSON `ArtifactRecord` (capability string, access
//!   policy for requests by CID, registration time). The capability is a secret: it never leaves
//!   this module except to open the artifact, and no `Debug` or endpoint shows it.
//! - `gateway-revisions-1`: `"{kind}/{org}/{name}@{commit}"` → JSON `RevisionRecord` (manifest
//!   CID, access policy of this repository's revision).
//!
//! Policies: a request by name is checked against the policy given when that repository
//! revision was registered; the same artifact may be public in one repository and restricted in
//! another. A request by CID is checked against the strictest policy the artifact was ever
//! registered with (a restricted registration is never widened by a later public one), so a CID
//! cannot be used to get around a repository's restriction.
//! - `gateway-refs-1`: `"{kind}/{org}/{name}#{ref}"` → commit id (40 hex); `main` is the ref
//!   every registration moves.
//!
//! The database's other tables belong to the API-key store (`access::keystore`), client
//! certificates, wallet sign-ins and usage (the table is in the `db` module docs).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_artifact::{Cid, ReadCap};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::db::GatewayDb;
use crate::{AccessPolicy, Error};

const ARTIFACTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gateway-artifacts-1");
const REVISIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway-revisions-1");
const REFS: TableDefinition<&str, &str> = TableDefinition::new("gateway-refs-1");

/// Longest `org` or `name` part of a repository id, as on the Hugging Face Hub.
pub const REPO_PART_LEN_MAX: usize = cairn_swarm::NAME_PART_LEN_MAX;

/// Organisation names that would collide with the gateway's own routes.
const RESERVED_ORGS: &[&str] = &[
    "api",
    "datasets",
    "artifacts",
    "healthz",
    "metrics",
    "models",
];

/// Whether a repository holds a model or a dataset (the Hugging Face `repo_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RepoKind {
    /// `/api/models/...`, `/{org}/{name}/resolve/...`.
    Model,
    /// `/api/datasets/...`, `/datasets/{org}/{name}/resolve/...`.
    Dataset,
}

impl RepoKind {
    /// The plural used in URLs and keys: `models` or `datasets`.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A repository id, `org/name`: each part 1 to [`REPO_PART_LEN_MAX`] characters of ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoId {
    org: String,
    name: String,
}

impl RepoId {
    /// Checks and builds a repository id from its two parts.
    pub fn new(org: &str, name: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadRepoId {
            id: format!("{org}/{name}"),
            reason: reason.to_string(),
        };
        // The rules of a name part on the network (name records), so that every repository a
        // gateway serves can also be named there.
        for part in [org, name] {
            match cairn_swarm::check_name_part(part) {
                Ok(()) => {}
                Err(cairn_swarm::Error::Name { reason }) => return Err(bad(&reason)),
                Err(e) => return Err(bad(&e.to_string())),
            }
        }
        if RESERVED_ORGS.contains(&org) {
            return Err(bad(
                "this organisation name is reserved by the gateway's routes",
            ));
        }
        Ok(Self {
            org: org.to_string(),
            name: name.to_string(),
        })
    }

    /// The organisation part.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The name part.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

impl FromStr for RepoId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (org, name) = s.split_once('/').ok_or_else(|| Error::BadRepoId {
            id: s.to_string(),
            reason: "expected `org/name`".into(),
        })?;
        Self::new(org, name)
    }
}

/// A revision's commit id: the first 20 bytes of BLAKE3 over the manifest CID's bytes, shown as
/// 40 lowercase hex digits (the form Hugging Face clients expect of a commit hash). The same
/// artifact always gets the same commit id, in every repository and on every gateway.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitId([u8; 20]);

impl CommitId {
    /// The commit id of an artifact.
    pub fn of(cid: &Cid) -> Self {
        let h = blake3::hash(&cid.to_bytes());
        let mut b = [0u8; 20];
        b.copy_from_slice(&h.as_bytes()[..20]);
        Self(b)
    }

    /// Parses 40 hex digits (either case); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 40 {
            return None;
        }
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({self})")
    }
}

/// What the registry stores per artifact (JSON in `gateway-artifacts-1`).
#[derive(Serialize, Deserialize)]
struct ArtifactRecord {
    /// The read capability string. Secret.
    cap: String,
    policy: AccessPolicy,
    /// Unix seconds of the first registration.
    registered_at: u64,
}

/// What the registry stores per repository revision (JSON in `gateway-revisions-1`).
#[derive(Serialize, Deserialize)]
struct RevisionRecord {
    cid: String,
    policy: AccessPolicy,
}

/// An artifact the gateway can serve: its capability (kept private to the crate), the access
/// policy that applies to the request (the revision's, or the strictest for requests by CID)
/// and when it was first registered. `Debug` never shows the key.
#[derive(Clone, Debug)]
pub struct ArtifactEntry {
    pub(crate) cap: ReadCap,
    /// Who may read it.
    pub policy: AccessPolicy,
    /// Unix seconds of the first registration.
    pub registered_at: u64,
}

impl ArtifactEntry {
    /// The manifest CID (public; the key stays inside the gateway).
    pub fn cid(&self) -> Cid {
        self.cap.cid
    }
}

/// A repository revision resolved to an artifact.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The revision's commit id.
    pub commit: CommitId,
    /// The artifact it names.
    pub entry: ArtifactEntry,
}

/// The gateway's registry of repositories and capabilities (see the module docs).
pub struct Registry {
    /// The database the registry's tables live in; the key store, the sign-in tables and the
    /// usage totals borrow it from here (see [`Registry::db`]).
    db: Arc<GatewayDb>,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn repo_key(kind: RepoKind, repo: &RepoId) -> String {
    format!("{}/{repo}", kind.plural())
}

impl Registry {
    /// Opens (creating if needed) `gateway.redb` in `dir`. The folder (and any missing parent)
    /// is created 0700 and the database 0600: it holds every read capability the gateway serves
    /// with, private repositories' included.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_in(Arc::new(GatewayDb::open(dir)?))
    }

    /// Opens the registry's tables (creating them) in `db`.
    pub(crate) fn open_in(db: Arc<GatewayDb>) -> Result<Self, Error> {
        let reg = Self { db };
        let tx = reg.db.redb().begin_write().map_err(|e| reg.err(e))?;
        {
            tx.open_table(ARTIFACTS).map_err(|e| reg.err(e))?;
            tx.open_table(REVISIONS).map_err(|e| reg.err(e))?;
            tx.open_table(REFS).map_err(|e| reg.err(e))?;
        }
        tx.commit().map_err(|e| reg.err(e))?;
        Ok(reg)
    }

    /// The database the registry lives in, for the parts of the gateway that keep their tables
    /// beside it (redb allows one open per file): the API-key store, the sign-in tables and the
    /// usage totals open theirs in it when given this registry.
    pub(crate) fn db(&self) -> &Arc<GatewayDb> {
        &self.db
    }

    pub(crate) fn err(&self, e: impl fmt::Display) -> Error {
        self.db.err(e)
    }

    /// Registers `cap` as a revision of `repo` with access `policy` and points `main` at it, in
    /// one transaction. Registering the same revision again only moves `main` and replaces the
    /// revision's policy (see the module docs for requests by CID).
    /// Returns the revision's commit id.
    pub fn register(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        cap: &ReadCap,
        policy: AccessPolicy,
    ) -> Result<CommitId, Error> {
        self.register_keeping(kind, repo, cap, Some(policy))
            .map(|(c, _)| c)
    }

    /// Like [`Registry::register`], but with `policy` `None` the new revision gets the policy
    /// of the repository's current `main` (public for a new repository): re-registering a
    /// private repository never makes it public unless asked to. Returns the commit id and the
    /// policy the revision got.
    pub fn register_keeping(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        cap: &ReadCap,
        policy: Option<AccessPolicy>,
    ) -> Result<(CommitId, AccessPolicy), Error> {
        let commit = CommitId::of(&cap.cid);
        let key = cap.cid.to_bytes();
        let rk = repo_key(kind, repo);
        let tx = self.db.redb().begin_write().map_err(|e| self.err(e))?;
        let policy = match policy {
            Some(p) => p,
            None => self.main_policy(&tx, &rk)?.unwrap_or_default(),
        };
        {
            let mut arts = tx.open_table(ARTIFACTS).map_err(|e| self.err(e))?;
            let (registered_at, by_cid) = match arts.get(key.as_slice()).map_err(|e| self.err(e))? {
                Some(v) => {
                    let old = self.decode(v.value())?;
                    let strictest = if old.policy.strictness() > policy.strictness() {
                        old.policy
                    } else {
                        policy.clone()
                    };
                    (old.registered_at, strictest)
                }
                None => (now(), policy.clone()),
            };
            let rec = ArtifactRecord {
                cap: cap.to_string(),
                policy: by_cid,
                registered_at,
            };
            let bytes = serde_json::to_vec(&rec).map_err(|e| self.err(e))?;
            arts.insert(key.as_slice(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
            let rev = serde_json::to_vec(&RevisionRecord {
                cid: cap.cid.to_string(),
                policy: policy.clone(),
            })
            .map_err(|e| self.err(e))?;
            tx.open_table(REVISIONS)
                .map_err(|e| self.err(e))?
                .insert(format!("{rk}@{commit}").as_str(), rev.as_slice())
                .map_err(|e| self.err(e))?;
            tx.open_table(REFS)
                .map_err(|e| self.err(e))?
                .insert(format!("{rk}#main").as_str(), commit.to_string().as_str())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        tracing::info!(repo = %rk, %commit, cid = %cap.cid, restricted = policy.is_restricted(), "registered revision");
        Ok((commit, policy))
    }

    /// The policy of `main` of repository key `rk`, if it has one.
    fn main_policy(
        &self,
        tx: &redb::WriteTransaction,
        rk: &str,
    ) -> Result<Option<AccessPolicy>, Error> {
        let refs = tx.open_table(REFS).map_err(|e| self.err(e))?;
        let Some(main) = refs
            .get(format!("{rk}#main").as_str())
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string())
        else {
            return Ok(None);
        };
        let revs = tx.open_table(REVISIONS).map_err(|e| self.err(e))?;
        let Some(v) = revs
            .get(format!("{rk}@{main}").as_str())
            .map_err(|e| self.err(e))?
        else {
            return Err(self.err(format!("ref main of {rk} names unknown revision {main}")));
        };
        let rec: RevisionRecord = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
        Ok(Some(rec.policy))
    }

    fn decode(&self, bytes: &[u8]) -> Result<ArtifactEntry, Error> {
        let rec: ArtifactRecord = serde_json::from_slice(bytes).map_err(|e| self.err(e))?;
        // The parse error never echoes the string (it is a secret).
        let cap = rec
            .cap
            .parse::<ReadCap>()
            .map_err(|_| self.err("a stored read capability does not parse"))?;
        Ok(ArtifactEntry {
            cap,
            policy: rec.policy,
            registered_at: rec.registered_at,
        })
    }

    /// The artifact with manifest `cid`, if this gateway holds its capability.
    pub fn artifact(&self, cid: &Cid) -> Result<Option<ArtifactEntry>, Error> {
        let rtx = self.db.redb().begin_read().map_err(|e| self.err(e))?;
        let t = rtx.open_table(ARTIFACTS).map_err(|e| self.err(e))?;
        match t.get(cid.to_bytes().as_slice()).map_err(|e| self.err(e))? {
            Some(v) => self.decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves `rev` (`main` or a commit id) of `repo`: [`Error::RepoNotFound`] when the
    /// repository has no `main`, [`Error::RevisionNotFound`] when it has no such revision.
    /// Says nothing of access: see [`Registry::lookup`] for what a gateway answers.
    pub fn resolve(&self, kind: RepoKind, repo: &RepoId, rev: &str) -> Result<Resolved, Error> {
        let rk = repo_key(kind, repo);
        match self.lookup(kind, repo, rev)? {
            Lookup { main: None, .. } => Err(Error::RepoNotFound { repo: rk }),
            Lookup { revision: None, .. } => Err(Error::RevisionNotFound {
                repo: rk,
                revision: rev.chars().take(100).collect(),
            }),
            Lookup {
                revision: Some(r), ..
            } => Ok(r),
        }
    }

    /// The repository's `main` and revision `rev` (`main`, a commit id or another ref), either
    /// of which may be missing. The caller decides what a missing or a forbidden one looks like.
    pub fn lookup(&self, kind: RepoKind, repo: &RepoId, rev: &str) -> Result<Lookup, Error> {
        let rk = repo_key(kind, repo);
        let rtx = self.db.redb().begin_read().map_err(|e| self.err(e))?;
        let refs = rtx.open_table(REFS).map_err(|e| self.err(e))?;
        let Some(main_commit) = refs
            .get(format!("{rk}#main").as_str())
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string())
        else {
            return Ok(Lookup {
                main: None,
                revision: None,
            });
        };
        let main_commit = CommitId::parse(&main_commit)
            .ok_or_else(|| self.err("ref main holds a bad commit id"))?;
        let main = self.revision_at(&rtx, &rk, main_commit)?.ok_or_else(|| {
            self.err(format!(
                "ref main of {rk} names unknown revision {main_commit}"
            ))
        })?;
        let commit = if rev == "main" {
            Some(main_commit)
        } else if let Some(c) = CommitId::parse(rev) {
            Some(c)
        } else {
            match refs
                .get(format!("{rk}#{rev}").as_str())
                .map_err(|e| self.err(e))?
            {
                Some(r) => Some(
                    CommitId::parse(r.value())
                        .ok_or_else(|| self.err("a ref holds a bad commit id"))?,
                ),
                None => None,
            }
        };
        let revision = match commit {
            Some(c) if c == main_commit => Some(main.clone()),
            Some(c) => self.revision_at(&rtx, &rk, c)?,
            None => None,
        };
        Ok(Lookup {
            main: Some(main),
            revision,
        })
    }

    /// Revision `commit` of repository key `rk`, with the revision's own policy.
    fn revision_at(
        &self,
        rtx: &redb::ReadTransaction,
        rk: &str,
        commit: CommitId,
    ) -> Result<Option<Resolved>, Error> {
        let revs = rtx.open_table(REVISIONS).map_err(|e| self.err(e))?;
        let Some(v) = revs
            .get(format!("{rk}@{commit}").as_str())
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let rec: RevisionRecord = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
        let cid = Cid::try_from(rec.cid.as_str()).map_err(|e| self.err(e))?;
        let arts = rtx.open_table(ARTIFACTS).map_err(|e| self.err(e))?;
        let mut entry = match arts
            .get(cid.to_bytes().as_slice())
            .map_err(|e| self.err(e))?
        {
            Some(v) => self.decode(v.value())?,
            None => return Err(self.err(format!("revision {commit} names unknown artifact {cid}"))),
        };
        entry.policy = rec.policy;
        Ok(Some(Resolved { commit, entry }))
    }
}

/// What [`Registry::lookup`] found.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The repository's `main`; `None` when the repository is not registered.
    pub main: Option<Resolved>,
    /// The revision asked for; `None` when the repository has no such revision.
    pub revision: Option<Resolved>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(RepoId::new("org", "name-1.0_x").is_ok());
        for (o, n) in [
            ("", "x"),
            ("a", "b/c"),
            ("api", "x"),
            (".a", "b"),
            ("a", "b..c"),
        ] {
            assert!(
                matches!(RepoId::new(o, n), Err(Error::BadRepoId { .. })),
                "{o}/{n}"
            );
        }
        assert_eq!("a/b".parse::<RepoId>().unwrap().to_string(), "a/b");
    }

    #[test]
    fn commit_ids_round_trip() {
        let cid = cairn_artifact::manifest_cid(b"x");
        let c = CommitId::of(&cid);
        let s = c.to_string();
        assert_eq!(s.len(), 40);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(CommitId::parse(&s.to_uppercase()), Some(c));
        assert_eq!(CommitId::parse("main"), None);
    }
}
