//! The on-disk store of one node: shard files plus redb metadata.
//!
//! # Layout of a data directory
//! ```text
//! store.redb                 metadata (tables below)
//! shards/<xx>/<cid>          shard files (see `shardfile`), xx = last two characters of the CID
//! tmp/                       unused since shard files are written in place; emptied by gc
//! ```
//! # Crash safety
//! redb is the source of truth: a shard exists only once its row is committed, and a row is
//! committed only after its file was written in place and synced. A crash before the commit
//! leaves a file without a row (possibly half written), which nothing reads (every read starts
//! from the row), a later put of the same shard overwrites and `gc` removes; a crash after it
//! leaves both. An artifact becomes visible (manifest and pin
//! rows) in one transaction after all its shards are committed, so a partial artifact is never
//! visible. Deletion runs the other way: rows first, then files.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};

use cairn_artifact::{Cid, Error, Manifest, SHARD_LEN_MAX, ShardSlots, blake3_digest};

use crate::db::DbResult;
use crate::leases::{LEASES, row_until};
use crate::shardfile::{HEADER_LEN, ShardHeader};

/// Format of the data directory; bumped on any incompatible change to tables or files.
const STORE_FORMAT: u64 = 1;
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta-1");
/// Shard CID bytes -> bytes the shard file takes on disk.
const SHARDS: TableDefinition<&[u8], u64> = TableDefinition::new("shards-1");
/// Manifest CID bytes -> manifest bytes.
const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests-1");
/// Manifest CID bytes -> pin record (see `Pin::encode`).
const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins-1");
/// Artifact name -> manifest CID bytes.
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names-1");
/// Shard CID bytes -> endpoint ids of the remote publishers that stored it here. A shard with an
/// owner is kept by `gc` until every owner has released it, or until the lease of the artifact
/// its owners stored it for has ended (see `gc`). Manifest CIDs have owners too.
const OWNERS: MultimapTableDefinition<&[u8], [u8; 32]> = MultimapTableDefinition::new("owners-1");
/// Artifact (manifest) CID bytes -> signed holder record bytes, kept for readers.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records-1");
const META_FORMAT: &str = "format";
pub(crate) const META_USED: &str = "used_bytes";

/// How long past the end of its lease a leased artifact is kept by default: time for a
/// publisher whose renewal was late (a node down for a while, a clock off) to renew before its
/// data goes.
pub const LEASE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes the store may take on disk for shards and manifests.
    pub quota: u64,
    /// How long past the end of its lease `gc` keeps a leased artifact ([`LEASE_GRACE`] by
    /// default; tests shorten it).
    pub lease_grace: Duration,
}

impl StoreConfig {
    /// A store of `quota` bytes, with the default [`LEASE_GRACE`].
    pub fn new(quota: u64) -> Self {
        Self {
            quota,
            lease_grace: LEASE_GRACE,
        }
    }
}

/// What [`Store::put_shards`] did with a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard was written.
    Stored,
    /// The store already held it (content addressing dedups it).
    AlreadyHeld,
}

/// A pin keeps an artifact's manifest and shards from garbage collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The manifest CID.
    pub cid: Cid,
    /// Unix seconds after which the pin lapses, or `None` for never.
    pub expires_at: Option<u64>,
    /// Seconds since the epoch when pinned.
    pub pinned_at: u64,
}

impl Pin {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.expires_at.unwrap_or(0).to_le_bytes());
        b[8..].copy_from_slice(&self.pinned_at.to_le_bytes());
        b
    }

    fn decode(cid: Cid, b: &[u8]) -> Result<Self, Error> {
        let b: &[u8; 16] = b
            .try_into()
            .map_err(|_| Error::Db(format!("pin record of {cid} has {} bytes", b.len())))?;
        let exp = u64::from_le_bytes(b[..8].try_into().expect("8"));
        Ok(Pin {
            cid,
            expires_at: (exp != 0).then_some(exp),
            pinned_at: u64::from_le_bytes(b[8..].try_into().expect("8")),
        })
    }

    /// Whether the pin still holds at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// Usage of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Bytes used by shard files and manifests.
    pub used: u64,
    /// The quota.
    pub quota: u64,
    /// Shards held.
    pub shards: u64,
    /// Manifests held.
    pub manifests: u64,
    /// Pins (live or lapsed).
    pub pins: u64,
}

/// What [`Store::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Shards removed.
    pub shards: u64,
    /// Manifests removed.
    pub manifests: u64,
    /// Holder records removed (with their manifests).
    pub records: u64,
    /// Leases removed (with their manifests).
    pub leases: u64,
    /// Owner claims dropped because the lease of the artifact they were made for ended.
    pub released: u64,
    /// Files on disk that no row referred to (left by a crash), removed.
    pub orphan_files: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// `len` bytes of a file from `base`, read by position (for bao proofs over a shard file).
struct FileSlice<'a> {
    file: &'a File,
    base: u64,
    len: u64,
}

impl cairn_artifact::ReadAt for FileSlice<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if pos >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - pos) as usize);
        FileExt::read_at(self.file, &mut buf[..n], self.base + pos)
    }
}

/// One node's store. `Sync`: shards may be written and read from many threads.
pub struct Store {
    dir: PathBuf,
    pub(crate) db: Database,
    quota: u64,
    lease_grace: Duration,
    /// Serialises writers so the quota check and the commit see the same usage.
    pub(crate) write_lock: Mutex<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sync_filesystem(dir: &Path) -> Result<(), Error> {
    // One syncfs per batch instead of one fsync per file: the same durability for everything
    // written so far, at a fraction of the cost when a batch holds dozens of shards.
    let f = File::open(dir).map_err(Error::io(dir))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `f` is an open file descriptor for the duration of the call.
        let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
        if rc != 0 {
            return Err(Error::io(dir)(std::io::Error::last_os_error()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    f.sync_all().map_err(Error::io(dir))?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self, Error> {
        // Owner-only from creation: the store sits in a data directory beside keys.
        for sub in ["shards", "tmp"] {
            crate::create_dir_private(&dir.join(sub)).map_err(Error::io(dir.join(sub)))?;
        }
        let db_path = dir.join("store.redb");
        let db = crate::create_private_db(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Db(format!(
                "{} is in use by another cairn process; stop it or use another --data-dir",
                db_path.display()
            )),
            other => Error::Db(format!("{}: {other}", db_path.display())),
        })?;
        let tx = db.begin_write().db()?;
        {
            let mut meta = tx.open_table(META).db()?;
            let found = meta.get(META_FORMAT).db()?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(META_FORMAT, STORE_FORMAT).db()?;
                    meta.insert(META_USED, 0).db()?;
                }
                Some(v) if v == STORE_FORMAT => {}
                Some(v) => {
                    return Err(Error::FormatVersion {
                        path: dir.to_path_buf(),
                        found: v,
                        expected: STORE_FORMAT,
                    });
                }
            }
            tx.open_table(SHARDS).db()?;
            tx.open_table(MANIFESTS).db()?;
            tx.open_table(PINS).db()?;
            tx.open_table(NAMES).db()?;
            tx.open_multimap_table(OWNERS).db()?;
            tx.open_table(RECORDS).db()?;
            crate::care::create_tables(&tx)?;
            crate::leases::create_tables(&tx)?;
            crate::net_names::create_tables(&tx)?;
        }
        tx.commit().db()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            quota: config.quota,
            lease_grace: config.lease_grace,
            write_lock: Mutex::new(()),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard_path(&self, cid: &Cid) -> PathBuf {
        let s = cid.to_string();
        self.dir.join("shards").join(&s[s.len() - 2..]).join(s)
    }

    /// The quota in bytes.
    pub(crate) fn quota(&self) -> u64 {
        self.quota
    }

    pub(crate) fn used(&self, tx: &redb::WriteTransaction) -> Result<u64, Error> {
        Ok(tx
            .open_table(META)
            .db()?
            .get(META_USED)
            .db()?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Stores a batch of shards: verifies each against its CID, checks the quota for the whole
    /// batch, writes the files (in place, then one sync) and commits their rows in one
    /// transaction. On any error nothing of the batch becomes visible.
    pub fn put_shards(&self, shards: &[(Cid, &[u8])]) -> Result<Vec<PutOutcome>, Error> {
        self.put_shards_owned(shards, None)
    }

    /// [`Store::put_shards`] on behalf of a remote publisher: each shard also records `owner`,
    /// which keeps it from `gc` until the owner releases it with [`Store::release`].
    pub fn put_shards_owned(
        &self,
        shards: &[(Cid, &[u8])],
        owner: Option<[u8; 32]>,
    ) -> Result<Vec<PutOutcome>, Error> {
        self.put_shards_inner(shards, None, owner)
    }

    /// Stores shards. With `outboards` (one per shard, from this process's own publish
    /// pipeline, which computed each CID as the root of that very outboard) the shards are not
    /// hashed again; without, each is hashed here, which both checks its CID and builds its
    /// outboard.
    fn put_shards_inner(
        &self,
        shards: &[(Cid, &[u8])],
        outboards: Option<&[&[u8]]>,
        owner: Option<[u8; 32]>,
    ) -> Result<Vec<PutOutcome>, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let held: Vec<bool> = {
            let rtx = self.db.begin_read().db()?;
            let t = rtx.open_table(SHARDS).db()?;
            shards
                .iter()
                .map(|(c, _)| t.get(c.to_bytes().as_slice()).map(|v| v.is_some()))
                .collect::<Result<_, _>>()
                .db()?
        };
        // The same CID may appear twice in one batch (identical chunks); write it once.
        let mut seen = HashSet::new();
        let new: Vec<usize> = (0..shards.len())
            .filter(|&i| !held[i] && seen.insert(shards[i].0))
            .collect();
        for &i in &new {
            let (cid, data) = &shards[i];
            if data.len() as u64 > SHARD_LEN_MAX {
                return Err(Error::Corrupted {
                    cid: *cid,
                    reason: format!(
                        "{} bytes exceeds the shard limit {SHARD_LEN_MAX}",
                        data.len()
                    ),
                });
            }
            if blake3_digest(cid).is_none() || cid.codec() != cairn_artifact::CODEC_RAW {
                return Err(Error::Corrupted {
                    cid: *cid,
                    reason: "not a raw BLAKE3 shard CID".into(),
                });
            }
        }
        let needed: u64 = new
            .iter()
            .map(|&i| ShardHeader::new(shards[i].1.len() as u64, [0; 32]).file_len())
            .sum();
        {
            let tx = self.db.begin_write().db()?;
            let used = self.used(&tx)?;
            if used + needed > self.quota {
                return Err(Error::QuotaExceeded {
                    needed,
                    free: self.quota.saturating_sub(used),
                    quota: self.quota,
                });
            }
            tx.abort().db()?;
        }
        // Write the files in place, in parallel, then make them durable with one sync. No
        // temporary name and no rename: the row, committed after the sync, is what makes a
        // shard exist, and nothing reads a shard file without its row (see the crash-safety
        // notes at the top). This halved the syncs of a batch and dropped a rename per shard.
        let written: Vec<(usize, PathBuf, u64)> = new
            .par_iter()
            .map(|&i| {
                let (cid, data) = &shards[i];
                let digest = blake3_digest(cid).expect("checked above");
                let outboard: std::borrow::Cow<[u8]> = match outboards {
                    Some(o) => std::borrow::Cow::Borrowed(o[i]),
                    None => {
                        let (root, outboard) = cairn_artifact::outboard(data);
                        if root.as_bytes() != &digest {
                            return Err(Error::Corrupted {
                                cid: *cid,
                                reason: "BLAKE3 hash mismatch on write".into(),
                            });
                        }
                        std::borrow::Cow::Owned(outboard)
                    }
                };
                let header = ShardHeader::new(data.len() as u64, digest);
                if outboard.len() as u64 != header.outboard_len {
                    return Err(Error::Corrupted {
                        cid: *cid,
                        reason: "outboard has the wrong length".into(),
                    });
                }
                let path = self.shard_path(cid);
                let parent = path.parent().expect("shard paths have a parent");
                crate::create_dir_private(parent).map_err(Error::io(parent))?;
                // A file left by an interrupted put of the same shard (no row) is replaced.
                let mut f = crate::create_private(&path).map_err(Error::io(&path))?;
                f.write_all(&header.encode()).map_err(Error::io(&path))?;
                f.write_all(data).map_err(Error::io(&path))?;
                f.write_all(&outboard).map_err(Error::io(&path))?;
                Ok((i, path, header.file_len()))
            })
            .collect::<Result<_, Error>>()
            .inspect_err(|_| {
                // Files of this batch have no rows: remove them now rather than at the next gc.
                for &i in &new {
                    let _ = fs::remove_file(self.shard_path(&shards[i].0));
                }
            })?;
        if !written.is_empty() {
            sync_filesystem(&self.dir)?;
        }
        let tx = self.db.begin_write().db()?;
        {
            let used = self.used(&tx)?;
            let mut t = tx.open_table(SHARDS).db()?;
            for (i, _, len) in &written {
                t.insert(shards[*i].0.to_bytes().as_slice(), *len).db()?;
            }
            tx.open_table(META)
                .db()?
                .insert(META_USED, used + needed)
                .db()?;
            if let Some(owner) = owner {
                let mut o = tx.open_multimap_table(OWNERS).db()?;
                for (cid, _) in shards {
                    o.insert(cid.to_bytes().as_slice(), owner).db()?;
                }
            }
        }
        tx.commit().db()?;
        Ok((0..shards.len())
            .map(|i| {
                if held[i] || !new.contains(&i) {
                    PutOutcome::AlreadyHeld
                } else {
                    PutOutcome::Stored
                }
            })
            .collect())
    }

    fn clean_tmp(&self) {
        if let Ok(rd) = fs::read_dir(self.dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Whether the store holds `cid` (a row exists; the bytes are checked on read).
    pub fn has_shard(&self, cid: &Cid) -> Result<bool, Error> {
        let rtx = self.db.begin_read().db()?;
        Ok(rtx
            .open_table(SHARDS)
            .db()?
            .get(cid.to_bytes().as_slice())
            .db()?
            .is_some())
    }

    /// Reads a shard and verifies it against its CID. Corruption is an error naming the shard.
    pub fn get_shard(&self, cid: &Cid) -> Result<Vec<u8>, Error> {
        let (data, _outboard) = self.read_shard_file(cid, false)?;
        Ok(data)
    }

    /// Reads a shard with its bao outboard (for storage proofs), both verified.
    pub fn get_shard_with_outboard(&self, cid: &Cid) -> Result<(Vec<u8>, Vec<u8>), Error> {
        self.read_shard_file(cid, true)
    }

    /// Opens the file of a shard the store holds and checks its header against the file's length
    /// and the CID; the file is left positioned after the header.
    fn open_shard_file(&self, cid: &Cid) -> Result<(File, ShardHeader, PathBuf), Error> {
        if !self.has_shard(cid)? {
            return Err(Error::ShardNotFound(*cid));
        }
        let corrupted = |reason: String| Error::Corrupted { cid: *cid, reason };
        let path = self.shard_path(cid);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupted("its file is missing".into()));
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let file_len = f.metadata().map_err(Error::io(&path))?.len();
        let mut hb = [0u8; HEADER_LEN];
        f.read_exact(&mut hb)
            .map_err(|_| corrupted("file is shorter than its header".into()))?;
        let header = ShardHeader::parse(&hb).map_err(|e| corrupted(format!("bad header: {e}")))?;
        if header.file_len() != file_len {
            return Err(corrupted(format!(
                "file is {file_len} bytes, header says {}",
                header.file_len()
            )));
        }
        if Some(header.hash) != blake3_digest(cid) {
            return Err(corrupted("header hash differs from the CID".into()));
        }
        Ok((f, header, path))
    }

    fn read_shard_file(&self, cid: &Cid, with_outboard: bool) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let corrupted = |reason: String| Error::Corrupted { cid: *cid, reason };
        let (mut f, header, path) = self.open_shard_file(cid)?;
        // Read into fresh capacity (no zeroing pass over every shard served); the header's length
        // was checked against the file's above, so a short read means the file changed under us.
        let mut data = Vec::with_capacity(header.data_len as usize);
        (&mut f)
            .take(header.data_len)
            .read_to_end(&mut data)
            .map_err(Error::io(&path))?;
        if data.len() != header.data_len as usize {
            return Err(corrupted("file is shorter than its header says".into()));
        }
        if blake3::hash(&data).as_bytes() != &header.hash {
            return Err(corrupted("BLAKE3 hash mismatch".into()));
        }
        let mut outboard = Vec::new();
        if with_outboard {
            outboard.resize(header.outboard_len as usize, 0);
            f.read_exact(&mut outboard).map_err(Error::io(&path))?;
            let (_, want) = cairn_artifact::outboard(&data);
            if want != outboard {
                return Err(corrupted("bao outboard does not match the data".into()));
            }
        }
        Ok((data, outboard))
    }

    /// The answer to the storage-proof challenge `nonce` for shard `cid`
    /// (`cairn_artifact::audit_answer`), reading only the challenged groups and the outboard
    /// hashes that prove them from the shard file: an audit costs a holder about 64 KiB of
    /// reads whatever the shard's size, and proves nothing it did not read. A damaged group
    /// (or a file of the wrong length) is `Corrupted`; damage elsewhere in the shard is for
    /// other nonces and for full reads to find.
    pub fn audit_answer(&self, cid: &Cid, nonce: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let (f, header, _) = self.open_shard_file(cid)?;
        let data = FileSlice {
            file: &f,
            base: HEADER_LEN as u64,
            len: header.data_len,
        };
        let outboard = FileSlice {
            file: &f,
            base: HEADER_LEN as u64 + header.data_len,
            len: header.outboard_len,
        };
        cairn_artifact::audit_answer_at(nonce, cid, header.data_len, data, outboard)
    }

    /// Forgets a shard whose copy is damaged (its row, its file, its bytes in the quota), after
    /// checking again that it is: a node that finds its own copy bad says "not held" from then
    /// on, so that its auditors have the shard re-created elsewhere, instead of keeping bytes
    /// that can never be served. Returns whether it was dropped.
    pub fn drop_corrupted(&self, cid: &Cid) -> Result<bool, Error> {
        match self.get_shard(cid) {
            Err(Error::Corrupted { .. }) => {}
            Ok(_) | Err(Error::ShardNotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let dropped = self.remove_shard(cid)?;
        if dropped {
            tracing::warn!("dropped the damaged copy of shard {cid}");
        }
        Ok(dropped)
    }

    /// Drops a good copy of a shard that the network keeps elsewhere (an extra copy left by a
    /// repair that overlapped another, or by a node that came back after its shards were
    /// re-created): its row, its owners' claims, its file, its bytes in the quota. A shard a
    /// live local pin's manifest needs is kept. The caller (the caretaker) checked that the
    /// holder the records name for it proved it recently. Returns whether it was dropped.
    pub fn trim_shard(&self, cid: &Cid) -> Result<bool, Error> {
        let now = now();
        let key = cid.to_bytes();
        {
            let rtx = self.db.begin_read().db()?;
            let pins = rtx.open_table(PINS).db()?;
            let manifests = rtx.open_table(MANIFESTS).db()?;
            for row in pins.iter().db()? {
                let (k, v) = row.db()?;
                let pcid = Cid::try_from(k.value()).map_err(|e| Error::Db(e.to_string()))?;
                if !Pin::decode(pcid, v.value())?.is_live(now) {
                    continue;
                }
                if let Some(m) = manifests.get(k.value()).db()?
                    && let Ok(m) = Manifest::decode(m.value(), "pinned manifest")
                    && m.shard_cids().any(|c| c.to_bytes() == key)
                {
                    return Ok(false);
                }
            }
        }
        self.remove_shard(cid)
    }

    /// Removes a shard's row, its owners and its file, and gives its bytes back to the quota.
    fn remove_shard(&self, cid: &Cid) -> Result<bool, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = cid.to_bytes();
        let tx = self.db.begin_write().db()?;
        let len = {
            let mut shards = tx.open_table(SHARDS).db()?;
            let Some(len) = shards.remove(key.as_slice()).db()?.map(|v| v.value()) else {
                return Ok(false);
            };
            len
        };
        tx.open_multimap_table(OWNERS)
            .db()?
            .remove_all(key.as_slice())
            .db()?;
        {
            let mut meta = tx.open_table(META).db()?;
            let used = meta.get(META_USED).db()?.map(|v| v.value()).unwrap_or(0);
            meta.insert(META_USED, used.saturating_sub(len)).db()?;
        }
        tx.commit().db()?;
        let path = self.shard_path(cid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path)(e)),
        }
        Ok(true)
    }

    /// Releases `owner`'s claim on a shard; returns whether it had one. The bytes go at the next
    /// `gc` once no owner and no pinned manifest needs them.
    pub fn release(&self, cid: &Cid, owner: [u8; 32]) -> Result<bool, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        let had = tx
            .open_multimap_table(OWNERS)
            .db()?
            .remove(cid.to_bytes().as_slice(), owner)
            .db()?;
        tx.commit().db()?;
        Ok(had)
    }

    /// The remote owners of a shard.
    pub fn owners(&self, cid: &Cid) -> Result<Vec<[u8; 32]>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_multimap_table(OWNERS).db()?;
        let mut out = Vec::new();
        for v in t.get(cid.to_bytes().as_slice()).db()? {
            out.push(v.db()?.value());
        }
        Ok(out)
    }

    /// Stores a holder record for `artifact`, replacing any earlier one; it counts against the
    /// quota. The caller (the peer layer) has checked its signature and that it is newer. A
    /// record is kept only beside the manifest it describes (and collected with it by `gc`), so
    /// without that manifest this fails with [`Error::ManifestNotFound`]: a node that holds
    /// nothing of an artifact has no reason to keep its record.
    pub fn put_record(&self, artifact: &Cid, record: &[u8]) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        {
            let key = artifact.to_bytes();
            if tx
                .open_table(MANIFESTS)
                .db()?
                .get(key.as_slice())
                .db()?
                .is_none()
            {
                return Err(Error::ManifestNotFound(*artifact));
            }
            let used = self.used(&tx)?;
            let mut t = tx.open_table(RECORDS).db()?;
            let old = t
                .get(key.as_slice())
                .db()?
                .map(|v| v.value().len() as u64)
                .unwrap_or(0);
            let new_used = used - old.min(used) + record.len() as u64;
            if new_used > self.quota {
                return Err(Error::QuotaExceeded {
                    needed: record.len() as u64,
                    free: self.quota.saturating_sub(used),
                    quota: self.quota,
                });
            }
            t.insert(key.as_slice(), record).db()?;
            tx.open_table(META).db()?.insert(META_USED, new_used).db()?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Every artifact this store keeps a holder record of, with the record's bytes: what a
    /// node audits and repairs.
    pub fn records(&self) -> Result<Vec<(Cid, Vec<u8>)>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(RECORDS).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let cid = Cid::try_from(k.value())
                .map_err(|e| Error::Db(format!("record key is not a CID: {e}")))?;
            out.push((cid, v.value().to_vec()));
        }
        Ok(out)
    }

    /// The holder record stored for `artifact`.
    pub fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(RECORDS).db()?;
        Ok(t.get(artifact.to_bytes().as_slice())
            .db()?
            .map(|v| v.value().to_vec()))
    }

    /// Stores manifest bytes (checked against `cid`) on behalf of the remote publisher `owner`:
    /// a node keeps the manifests of artifacts whose shards it holds, for readers, until every
    /// owner has released them.
    pub fn put_manifest(&self, cid: &Cid, manifest: &[u8], owner: [u8; 32]) -> Result<(), Error> {
        if cairn_artifact::manifest_cid(manifest) != *cid {
            return Err(Error::BadManifest {
                what: cid.to_string(),
                reason: "bytes do not match the CID".into(),
            });
        }
        Manifest::decode(manifest, &cid.to_string())?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        {
            let key = cid.to_bytes();
            self.insert_manifest(&tx, &key, manifest)?;
            tx.open_multimap_table(OWNERS)
                .db()?
                .insert(key.as_slice(), owner)
                .db()?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Whether the store holds a manifest.
    pub fn has_manifest(&self, cid: &Cid) -> Result<bool, Error> {
        let rtx = self.db.begin_read().db()?;
        Ok(rtx
            .open_table(MANIFESTS)
            .db()?
            .get(cid.to_bytes().as_slice())
            .db()?
            .is_some())
    }

    /// Reads back every shard and checks it against its CID; returns the ones that fail.
    pub fn verify_all(&self) -> Result<Vec<(Cid, String)>, Error> {
        let cids: Vec<Cid> = {
            let rtx = self.db.begin_read().db()?;
            let t = rtx.open_table(SHARDS).db()?;
            let mut v = Vec::new();
            for row in t.iter().db()? {
                let (k, _) = row.db()?;
                v.push(
                    Cid::try_from(k.value())
                        .map_err(|e| Error::Db(format!("shard key is not a CID: {e}")))?,
                );
            }
            v
        };
        Ok(cids
            .par_iter()
            .filter_map(|c| match self.read_shard_file(c, true) {
                Ok(_) => None,
                Err(e) => Some((*c, e.to_string())),
            })
            .collect())
    }

    /// Inserts manifest bytes under `key` unless present, charging them to the quota.
    fn insert_manifest(
        &self,
        tx: &redb::WriteTransaction,
        key: &[u8],
        manifest: &[u8],
    ) -> Result<(), Error> {
        let used = self.used(tx)?;
        let mut mt = tx.open_table(MANIFESTS).db()?;
        if mt.get(key).db()?.is_none() {
            let needed = manifest.len() as u64;
            if used + needed > self.quota {
                return Err(Error::QuotaExceeded {
                    needed,
                    free: self.quota.saturating_sub(used),
                    quota: self.quota,
                });
            }
            mt.insert(key, manifest).db()?;
            tx.open_table(META)
                .db()?
                .insert(META_USED, used + needed)
                .db()?;
        }
        Ok(())
    }

    /// Stores a manifest and pins it (and names it) in one transaction: this is the moment an
    /// artifact becomes visible. Call it only after every shard is stored.
    pub fn commit_artifact(
        &self,
        cid: &Cid,
        manifest: &[u8],
        name: Option<&str>,
        expires_at: Option<u64>,
    ) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        {
            let key = cid.to_bytes();
            self.insert_manifest(&tx, &key, manifest)?;
            let pin = Pin {
                cid: *cid,
                expires_at,
                pinned_at: now(),
            };
            tx.open_table(PINS)
                .db()?
                .insert(key.as_slice(), pin.encode().as_slice())
                .db()?;
            if let Some(name) = name {
                tx.open_table(NAMES)
                    .db()?
                    .insert(name, key.as_slice())
                    .db()?;
            }
        }
        tx.commit().db()?;
        Ok(())
    }

    /// The manifest bytes of `cid`.
    pub fn get_manifest(&self, cid: &Cid) -> Result<Vec<u8>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(MANIFESTS).db()?;
        let v = t
            .get(cid.to_bytes().as_slice())
            .db()?
            .ok_or(Error::ManifestNotFound(*cid))?;
        let bytes = v.value().to_vec();
        if cairn_artifact::manifest_cid(&bytes) != *cid {
            return Err(Error::BadManifest {
                what: cid.to_string(),
                reason: "stored bytes do not match the CID".into(),
            });
        }
        Ok(bytes)
    }

    /// Opens the artifact `cap` names from the manifest this store holds.
    pub fn open_artifact(
        &self,
        cap: &cairn_artifact::ReadCap,
    ) -> Result<cairn_artifact::OpenedArtifact, Error> {
        cairn_artifact::OpenedArtifact::open(cap, &self.get_manifest(&cap.cid)?)
    }

    /// The manifest CID a name points to.
    pub fn resolve_name(&self, name: &str) -> Result<Option<Cid>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(NAMES).db()?;
        let Some(v) = t.get(name).db()? else {
            return Ok(None);
        };
        Cid::try_from(v.value())
            .map(Some)
            .map_err(|e| Error::Db(format!("name {name} points to a bad CID: {e}")))
    }

    /// Pins an artifact the store already holds.
    pub fn pin(&self, cid: &Cid, expires_at: Option<u64>) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        {
            let key = cid.to_bytes();
            if tx
                .open_table(MANIFESTS)
                .db()?
                .get(key.as_slice())
                .db()?
                .is_none()
            {
                return Err(Error::ManifestNotFound(*cid));
            }
            let pin = Pin {
                cid: *cid,
                expires_at,
                pinned_at: now(),
            };
            tx.open_table(PINS)
                .db()?
                .insert(key.as_slice(), pin.encode().as_slice())
                .db()?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Removes a pin; returns whether there was one. The data stays until `gc`.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        let had = tx
            .open_table(PINS)
            .db()?
            .remove(cid.to_bytes().as_slice())
            .db()?
            .is_some();
        tx.commit().db()?;
        Ok(had)
    }

    /// All pins, live or lapsed.
    pub fn pins(&self) -> Result<Vec<Pin>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(PINS).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let cid = Cid::try_from(k.value())
                .map_err(|e| Error::Db(format!("pin key is not a CID: {e}")))?;
            out.push(Pin::decode(cid, v.value())?);
        }
        Ok(out)
    }

    /// Usage against quota.
    pub fn stat(&self) -> Result<Stat, Error> {
        let rtx = self.db.begin_read().db()?;
        Ok(Stat {
            used: rtx
                .open_table(META)
                .db()?
                .get(META_USED)
                .db()?
                .map(|v| v.value())
                .unwrap_or(0),
            quota: self.quota,
            shards: rtx.open_table(SHARDS).db()?.len().db()?,
            manifests: rtx.open_table(MANIFESTS).db()?.len().db()?,
            pins: rtx.open_table(PINS).db()?.len().db()?,
        })
    }

    /// Collects what nothing keeps any more, and any file left behind by an interrupted write.
    ///
    /// A manifest is kept while a live local pin names it, whatever else holds. Otherwise, a
    /// manifest with a lease (see `leases`) is kept while its lease plus the configured
    /// `lease_grace` has not ended, whoever owns it; a manifest without a lease is kept while a
    /// remote publisher owns it (it stored it and has not released it). Every manifest not kept
    /// goes, with its holder records and its lease. A shard is kept while a kept manifest names
    /// it or a remote publisher owns it; when a leased manifest goes, the claims its owners made
    /// on its shards go with it (a publisher's claim on a shard was made for the artifact whose
    /// lease ended), so its shards go unless a kept manifest or another owner still needs them.
    pub fn gc(&self) -> Result<GcReport, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let now = now();
        let now_ms = crate::care::now_ms();
        let grace_ms = u64::try_from(self.lease_grace.as_millis()).unwrap_or(u64::MAX);
        let mut report = GcReport::default();
        let tx = self.db.begin_write().db()?;
        let mut dead_files = Vec::new();
        let held: HashSet<Vec<u8>>;
        {
            let pins = tx.open_table(PINS).db()?;
            let mut pinned = HashSet::new();
            for row in pins.iter().db()? {
                let (k, v) = row.db()?;
                let cid = Cid::try_from(k.value()).map_err(|e| Error::Db(e.to_string()))?;
                if Pin::decode(cid, v.value())?.is_live(now) {
                    pinned.insert(k.value().to_vec());
                }
            }
            let mut leased: HashMap<Vec<u8>, u64> = HashMap::new();
            for row in tx.open_table(LEASES).db()?.iter().db()? {
                let (k, v) = row.db()?;
                leased.insert(k.value().to_vec(), row_until(k.value(), v.value())?);
            }
            let mut owners = tx.open_multimap_table(OWNERS).db()?;
            let mut manifests = tx.open_table(MANIFESTS).db()?;
            let mut live_shards: HashSet<Vec<u8>> = HashSet::new();
            let mut dead_manifests = Vec::new();
            // Leased manifests that go, with the shards they name: their owners' claims go too.
            let mut lapsed: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
            for row in manifests.iter().db()? {
                let (k, v) = row.db()?;
                let key = k.value();
                let lease = leased.get(key);
                let kept = pinned.contains(key)
                    || match lease {
                        Some(until) => until.saturating_add(grace_ms) > now_ms,
                        // A manifest a remote publisher stored here (for readers) is kept
                        // while owned.
                        None => owners.get(key).db()?.next().is_some(),
                    };
                // A manifest that no longer decodes protects nothing, but must not stop gc.
                let shards = || -> Vec<Vec<u8>> {
                    match Manifest::decode(v.value(), "stored manifest") {
                        Ok(m) => m.shard_cids().map(|c| c.to_bytes()).collect(),
                        Err(e) => {
                            tracing::warn!("gc: {e}");
                            Vec::new()
                        }
                    }
                };
                if kept {
                    live_shards.extend(shards());
                } else {
                    dead_manifests.push((key.to_vec(), v.value().len() as u64));
                    if lease.is_some() {
                        lapsed.push((key.to_vec(), shards()));
                    }
                }
            }
            for (k, len) in dead_manifests {
                manifests.remove(k.as_slice()).db()?;
                report.manifests += 1;
                report.bytes += len;
            }
            for (manifest, shards) in &lapsed {
                let mut claimants = Vec::new();
                for o in owners.remove_all(manifest.as_slice()).db()? {
                    claimants.push(o.db()?.value());
                }
                for shard in shards {
                    for o in &claimants {
                        if owners.remove(shard.as_slice(), *o).db()? {
                            report.released += 1;
                        }
                    }
                }
            }
            {
                let mut leases = tx.open_table(LEASES).db()?;
                for k in leased.keys() {
                    if manifests.get(k.as_slice()).db()?.is_none() {
                        leases.remove(k.as_slice()).db()?;
                        report.leases += 1;
                    }
                }
            }
            {
                // A holder record goes with the manifest it describes (and one without any, as
                // older builds stored, goes now).
                let mut records = tx.open_table(RECORDS).db()?;
                let mut dead_records = Vec::new();
                for row in records.iter().db()? {
                    let (k, v) = row.db()?;
                    if manifests.get(k.value()).db()?.is_none() {
                        dead_records.push((k.value().to_vec(), v.value().len() as u64));
                    }
                }
                for (k, len) in dead_records {
                    records.remove(k.as_slice()).db()?;
                    report.records += 1;
                    report.bytes += len;
                }
                let mut repair = tx.open_table(crate::care::REPAIR_RECORDS).db()?;
                let mut dead_repair = Vec::new();
                for row in repair.iter().db()? {
                    let (k, v) = row.db()?;
                    if manifests.get(k.value()).db()?.is_none() {
                        dead_repair.push((k.value().to_vec(), v.value().len() as u64));
                    }
                }
                for (k, len) in dead_repair {
                    repair.remove(k.as_slice()).db()?;
                    report.records += 1;
                    report.bytes += len;
                }
            }
            for row in owners.iter().db()? {
                let (k, _) = row.db()?;
                live_shards.insert(k.value().to_vec());
            }
            let mut shards = tx.open_table(SHARDS).db()?;
            let mut dead = Vec::new();
            let mut keep = HashSet::new();
            for row in shards.iter().db()? {
                let (k, v) = row.db()?;
                if live_shards.contains(k.value()) {
                    keep.insert(k.value().to_vec());
                } else {
                    dead.push((k.value().to_vec(), v.value()));
                }
            }
            for (k, len) in dead {
                shards.remove(k.as_slice()).db()?;
                let cid = Cid::try_from(k.as_slice()).map_err(|e| Error::Db(e.to_string()))?;
                dead_files.push(self.shard_path(&cid));
                report.shards += 1;
                report.bytes += len;
            }
            held = keep;
            let mut meta = tx.open_table(META).db()?;
            let used = meta.get(META_USED).db()?.map(|v| v.value()).unwrap_or(0);
            meta.insert(META_USED, used.saturating_sub(report.bytes))
                .db()?;
        }
        tx.commit().db()?;
        // Rows are gone; now the files. A crash here leaves orphans the next gc removes.
        for p in dead_files {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p)(e)),
            }
        }
        self.clean_tmp();
        let shard_dir = self.dir.join("shards");
        for sub in fs::read_dir(&shard_dir)
            .map_err(Error::io(&shard_dir))?
            .flatten()
        {
            for f in fs::read_dir(sub.path())
                .map_err(Error::io(sub.path()))?
                .flatten()
            {
                let name = f.file_name();
                let known = name
                    .to_str()
                    .and_then(|n| Cid::try_from(n).ok())
                    .is_some_and(|c| held.contains(&c.to_bytes()));
                if !known {
                    fs::remove_file(f.path()).map_err(Error::io(f.path()))?;
                    report.orphan_files += 1;
                }
            }
        }
        Ok(report)
    }
}

impl cairn_artifact::ShardSink for Store {
    fn put_window(&self, chunks: Vec<cairn_artifact::EncodedChunk>) -> Result<(), Error> {
        let batch: Vec<(Cid, &[u8])> = chunks
            .iter()
            .flat_map(|c| c.shards.iter().map(|(cid, b)| (*cid, b.as_slice())))
            .collect();
        let outboards: Vec<&[u8]> = chunks
            .iter()
            .flat_map(|c| c.outboards.iter().map(Vec::as_slice))
            .collect();
        assert_eq!(
            batch.len(),
            outboards.len(),
            "the pipeline gives one outboard per shard"
        );
        self.put_shards_inner(&batch, Some(&outboards), None)
            .map(|_| ())
    }
}

impl cairn_artifact::ShardSource for Store {
    fn fetch(
        &self,
        artifact: &Cid,
        index: usize,
        chunk: &cairn_artifact::ChunkEntry,
        params: cairn_erasure::Params,
    ) -> Result<ShardSlots, Error> {
        cairn_artifact::fetch_data_first(artifact, index, chunk, params, |c| self.get_shard(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_artifact::shard_cid;

    fn store(quota: u64) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), StoreConfig::new(quota)).unwrap();
        (d, s)
    }

    #[test]
    fn put_get_dedup() {
        let (_d, s) = store(1 << 30);
        let a = vec![1u8; 100_000];
        let ca = shard_cid(&a);
        assert_eq!(
            s.put_shards(&[(ca, &a), (ca, &a)]).unwrap(),
            vec![PutOutcome::Stored, PutOutcome::AlreadyHeld]
        );
        assert_eq!(
            s.put_shards(&[(ca, &a)]).unwrap(),
            vec![PutOutcome::AlreadyHeld]
        );
        assert_eq!(s.get_shard(&ca).unwrap(), a);
        let (d, ob) = s.get_shard_with_outboard(&ca).unwrap();
        let proof = cairn_artifact::prove_range(&ca, &d, &ob, 10..20_000).unwrap();
        assert_eq!(
            cairn_artifact::verify_range(&ca, d.len() as u64, 10..20_000, &proof).unwrap(),
            &a[10..20_000]
        );
        assert_eq!(s.stat().unwrap().shards, 1);
    }

    /// Audits read only the challenged groups from the file: an answer verifies against the CID;
    /// damage inside a challenged group is `Corrupted`, damage elsewhere is for other nonces (and
    /// full reads); a cut file is `Corrupted` at once; a damaged copy can be dropped, which frees
    /// its bytes and makes it "not held".
    #[test]
    fn audits_read_only_the_challenged_groups_and_damage_is_dropped() {
        let (_d, s) = store(1 << 30);
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let cid = shard_cid(&data);
        s.put_shards(&[(cid, &data)]).unwrap();
        let nonce = [7u8; 32];
        let answer = s.audit_answer(&cid, &nonce).unwrap();
        cairn_artifact::check_audit_answer(&nonce, &cid, data.len() as u64, &answer).unwrap();
        let asked = cairn_artifact::challenge_ranges(&nonce, &cid, data.len() as u64);
        let group = cairn_artifact::AUDIT_GROUP_LEN;
        let outside = (0..data.len() as u64 / group)
            .map(|g| g * group + 5)
            .find(|at| !asked.iter().any(|r| r.contains(at)))
            .unwrap();
        let path = s.shard_path(&cid);
        let flip = |at: u64| {
            let mut b = fs::read(&path).unwrap();
            b[HEADER_LEN + at as usize] ^= 1;
            fs::write(&path, &b).unwrap();
        };
        flip(outside);
        let answer = s.audit_answer(&cid, &nonce).unwrap();
        cairn_artifact::check_audit_answer(&nonce, &cid, data.len() as u64, &answer).unwrap();
        flip(outside);
        flip(asked[1].start + 100);
        assert!(matches!(
            s.audit_answer(&cid, &nonce),
            Err(Error::Corrupted { .. })
        ));
        let used = s.stat().unwrap().used;
        assert!(s.drop_corrupted(&cid).unwrap());
        assert!(!s.has_shard(&cid).unwrap());
        assert!(matches!(
            s.audit_answer(&cid, &nonce),
            Err(Error::ShardNotFound(_))
        ));
        assert!(s.stat().unwrap().used < used);
        // A good copy is never dropped; a cut one is corrupted at once.
        let other = vec![3u8; 100_000];
        let oc = shard_cid(&other);
        s.put_shards(&[(oc, &other)]).unwrap();
        assert!(!s.drop_corrupted(&oc).unwrap());
        let b = fs::read(s.shard_path(&oc)).unwrap();
        fs::write(s.shard_path(&oc), &b[..b.len() - 10]).unwrap();
        assert!(matches!(
            s.audit_answer(&oc, &nonce),
            Err(Error::Corrupted { .. })
        ));
    }

    #[test]
    fn wrong_cid_is_refused_and_nothing_is_stored() {
        let (_d, s) = store(1 << 30);
        let c = shard_cid(b"x");
        assert!(matches!(
            s.put_shards(&[(c, b"y")]),
            Err(Error::Corrupted { .. })
        ));
        assert!(!s.has_shard(&c).unwrap());
        assert_eq!(s.stat().unwrap().used, 0);
    }

    #[test]
    fn quota_is_never_exceeded() {
        let (_d, s) = store(300_000);
        let a = vec![1u8; 200_000];
        let b = vec![2u8; 200_000];
        s.put_shards(&[(shard_cid(&a), &a)]).unwrap();
        let used = s.stat().unwrap().used;
        let e = s.put_shards(&[(shard_cid(&b), &b)]).unwrap_err();
        assert!(
            matches!(e, Error::QuotaExceeded { quota: 300_000, .. }),
            "{e}"
        );
        assert_eq!(s.stat().unwrap().used, used);
        assert!(!s.has_shard(&shard_cid(&b)).unwrap());
    }

    #[test]
    fn corruption_is_reported_by_cid() {
        let (_d, s) = store(1 << 30);
        let a = vec![5u8; 50_000];
        let c = shard_cid(&a);
        s.put_shards(&[(c, &a)]).unwrap();
        let p = s.shard_path(&c);
        let mut bytes = fs::read(&p).unwrap();
        bytes[HEADER_LEN + 10] ^= 1;
        fs::write(&p, &bytes).unwrap();
        let e = s.get_shard(&c).unwrap_err();
        assert!(
            matches!(&e, Error::Corrupted { cid, .. } if *cid == c),
            "{e}"
        );
        fs::write(&p, &bytes[..100]).unwrap();
        assert!(matches!(s.get_shard(&c), Err(Error::Corrupted { .. })));
        fs::remove_file(&p).unwrap();
        assert!(s.get_shard(&c).unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn gc_removes_unpinned_and_orphans() {
        let (_d, s) = store(1 << 30);
        let a = vec![1u8; 10_000];
        s.put_shards(&[(shard_cid(&a), &a)]).unwrap();
        // An orphan file, as a crash between rename and commit leaves.
        let orphan = s.shard_path(&shard_cid(b"orphan"));
        fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"junk").unwrap();
        let r = s.gc().unwrap();
        assert_eq!((r.shards, r.orphan_files), (1, 1));
        assert!(!orphan.exists());
        assert_eq!(s.stat().unwrap().used, 0);
    }

    #[test]
    fn owned_shards_survive_gc_until_released() {
        let (_d, s) = store(1 << 30);
        let a = vec![3u8; 10_000];
        let c = shard_cid(&a);
        s.put_shards_owned(&[(c, &a)], Some([1; 32])).unwrap();
        s.put_shards_owned(&[(c, &a)], Some([2; 32])).unwrap();
        assert_eq!(s.owners(&c).unwrap().len(), 2);
        assert_eq!(s.gc().unwrap().shards, 0);
        assert!(s.release(&c, [1; 32]).unwrap());
        assert!(
            !s.release(&c, [1; 32]).unwrap(),
            "a second release finds no claim"
        );
        assert_eq!(s.gc().unwrap().shards, 0, "owner 2 still holds it");
        assert!(s.release(&c, [2; 32]).unwrap());
        assert_eq!(s.gc().unwrap().shards, 1);
        assert!(!s.has_shard(&c).unwrap());
    }

    /// A manifest of `nchunks` made-up chunks (nothing stored behind them).
    fn sample_manifest(nchunks: usize) -> (Manifest, cairn_artifact::PrivatePart) {
        use cairn_artifact::{ChunkEntry, ChunkSecret, FileEntry, PrivatePart};
        use serde_bytes::ByteBuf;
        let chunks = (0..nchunks)
            .map(|i| ChunkEntry {
                sealed_len: 116 + i as u64,
                shards: (0..5).map(|j| shard_cid(&[i as u8, j])).collect(),
            })
            .collect();
        let secrets: Vec<ChunkSecret> = (0..nchunks)
            .map(|i| ChunkSecret {
                key: ByteBuf::from(vec![i as u8; 32]),
                hash: ByteBuf::from(vec![1; 32]),
                len: 100 + i as u64,
            })
            .collect();
        let private = PrivatePart {
            format: 1,
            name: None,
            files: vec![FileEntry {
                path: "model.safetensors".into(),
                size: secrets.iter().map(|s| s.len).sum(),
                first_chunk: 0,
                chunk_count: nchunks as u64,
            }],
            chunks: secrets,
        };
        let key = cairn_encryption::ArtifactKey::random();
        let params = cairn_erasure::Params::DEFAULT;
        (Manifest::seal(params, chunks, &private, &key), private)
    }

    #[test]
    fn records_and_manifests_for_readers() {
        let (_d, s) = store(1 << 30);
        let (mf, _) = sample_manifest(2);
        let (m, mbytes) = mf.encode();
        assert_eq!(s.get_record(&m).unwrap(), None);
        assert!(matches!(
            s.put_record(&m, b"v1"),
            Err(Error::ManifestNotFound(c)) if c == m
        ));
        assert_eq!(s.stat().unwrap().used, 0, "a refused record takes nothing");
        assert!(matches!(
            s.put_manifest(&m, b"other bytes", [1; 32]),
            Err(Error::BadManifest { .. })
        ));
        let junk = cairn_artifact::manifest_cid(b"junk");
        assert!(matches!(
            s.put_manifest(&junk, b"junk", [1; 32]),
            Err(Error::BadManifest { .. })
        ));
        s.put_manifest(&m, &mbytes, [1; 32]).unwrap();
        assert!(s.has_manifest(&m).unwrap());
        let manifest_len = mbytes.len() as u64;
        s.put_record(&m, b"v1").unwrap();
        s.put_record(&m, b"v2-longer").unwrap();
        assert_eq!(s.get_record(&m).unwrap().unwrap(), b"v2-longer");
        assert_eq!(
            s.stat().unwrap().used,
            manifest_len + 9,
            "records count against the quota, a replaced one no more"
        );
        let r = s.gc().unwrap();
        assert_eq!(
            (r.manifests, r.records),
            (0, 0),
            "an owned manifest is kept"
        );
        assert!(s.get_record(&m).unwrap().is_some());
        s.release(&m, [1; 32]).unwrap();
        let r = s.gc().unwrap();
        assert_eq!((r.manifests, r.records), (1, 1), "the record goes with it");
        assert_eq!(r.bytes, manifest_len + 9);
        assert_eq!(s.get_record(&m).unwrap(), None);
        assert_eq!(s.stat().unwrap().used, 0);
    }

    #[test]
    fn records_are_collected_with_pinned_artifacts_too() {
        let (_d, s) = store(1 << 30);
        let (mf, _) = sample_manifest(1);
        let (m, mbytes) = mf.encode();
        s.commit_artifact(&m, &mbytes, None, None).unwrap();
        s.put_record(&m, b"record").unwrap();
        assert_eq!(s.gc().unwrap().records, 0, "pinned: kept");
        s.unpin(&m).unwrap();
        let r = s.gc().unwrap();
        assert_eq!((r.manifests, r.records), (1, 1));
        assert_eq!(s.stat().unwrap().used, 0);
    }

    /// Adds the folder `files` (name, bytes) with convergent keys under one secret, pinned
    /// until `expires_at`; returns the artifact's CID, manifest and capability.
    fn add(
        s: &Store,
        dir: &Path,
        files: &[(&str, &[u8])],
        expires_at: Option<u64>,
    ) -> (Cid, Manifest, cairn_artifact::ReadCap) {
        for (name, bytes) in files {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join(name), bytes).unwrap();
        }
        let opts = cairn_artifact::AddOptions {
            params: cairn_erasure::Params::DEFAULT,
            key_mode: cairn_artifact::KeyMode::Convergent(
                cairn_encryption::ConvergenceSecret::from_bytes([3; 32]),
            ),
            name: None,
            record_signers: Vec::new(),
        };
        let (m, cap) = cairn_artifact::encode_artifact(dir, &opts, s, &|_| {}).unwrap();
        let (cid, bytes) = m.encode();
        s.commit_artifact(&cid, &bytes, None, expires_at).unwrap();
        (cid, m, cap)
    }

    fn noise(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| ((i ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Two pinned artifacts share a file's chunks (convergent keys): unpinning one and
    /// collecting removes its manifest and exactly the shards only it needed; every shard the
    /// other needs stays and the other reads back whole. Then a pin whose time has passed is
    /// collected like no pin, and one whose time has not is kept.
    #[test]
    fn gc_keeps_what_another_pinned_artifact_shares() {
        let (d, s) = store(1 << 32);
        let shared = noise(1, (3 << 20) + 7);
        let (a_own, b_own) = (noise(2, 600_000), noise(3, 600_000));
        let (a, ma, _) = add(
            &s,
            &d.path().join("a"),
            &[("shared", &shared), ("own", &a_own)],
            None,
        );
        let (b, mb, cap_b) = add(
            &s,
            &d.path().join("b"),
            &[("shared", &shared), ("own", &b_own)],
            None,
        );
        let of = |m: &Manifest| m.shard_cids().copied().collect::<HashSet<Cid>>();
        let (of_a, of_b) = (of(&ma), of(&mb));
        let only_a: HashSet<Cid> = of_a.difference(&of_b).copied().collect();
        assert!(
            of_a.intersection(&of_b).count() >= 5,
            "the shared file dedups"
        );
        assert!(!only_a.is_empty());
        assert_eq!(s.stat().unwrap().shards, of_a.union(&of_b).count() as u64);

        assert!(s.unpin(&a).unwrap());
        let r = s.gc().unwrap();
        assert_eq!((r.manifests, r.shards), (1, only_a.len() as u64));
        for c in &of_b {
            s.get_shard(c).unwrap();
        }
        for c in &only_a {
            assert!(!s.has_shard(c).unwrap(), "{c} only A needed");
        }
        let out = d.path().join("out");
        let private = mb.open(&b, &cap_b.key).unwrap();
        let art = cairn_artifact::Artifact {
            cid: b,
            manifest: &mb,
            private: &private,
        };
        cairn_artifact::read_artifact(&art, &s, &out, &|_| {}).unwrap();
        assert_eq!(fs::read(out.join("shared")).unwrap(), shared);
        assert_eq!(fs::read(out.join("own")).unwrap(), b_own);

        // Timed pins: lapsed (its second has come) collects, not yet lapsed keeps.
        let t = now();
        let (c, _, _) = add(
            &s,
            &d.path().join("c"),
            &[("own", &noise(4, 1000))],
            Some(t),
        );
        let (e, _, _) = add(
            &s,
            &d.path().join("e"),
            &[("own", &noise(5, 1000))],
            Some(t + 3600),
        );
        let r = s.gc().unwrap();
        assert_eq!(
            (r.manifests, r.shards),
            (1, 5),
            "the lapsed pin's artifact goes"
        );
        assert!(!s.has_manifest(&c).unwrap());
        assert!(s.has_manifest(&e).unwrap() && s.has_manifest(&b).unwrap());
    }

    /// A store in `dir` (already opened before, or new) whose leased artifacts are kept for
    /// `grace` past their lease.
    fn store_with_grace(dir: &Path, grace: Duration) -> Store {
        Store::open(
            dir,
            StoreConfig {
                quota: 1 << 30,
                lease_grace: grace,
            },
        )
        .unwrap()
    }

    /// Stores `manifest` and the made-up shards of `sample_manifest` it names (shard `[i, j]`
    /// holds the two bytes `i, j`) on behalf of the remote publisher `owner`.
    fn put_remote(s: &Store, manifest: &Manifest, owner: [u8; 32]) -> Cid {
        let shards: Vec<(Cid, Vec<u8>)> = manifest
            .chunks()
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                (0..c.shards.len()).map(move |j| (c.shards[j], vec![i as u8, j as u8]))
            })
            .collect();
        for (cid, bytes) in &shards {
            assert_eq!(shard_cid(bytes), *cid);
        }
        let batch: Vec<(Cid, &[u8])> = shards.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        s.put_shards_owned(&batch, Some(owner)).unwrap();
        let (cid, bytes) = manifest.encode();
        s.put_manifest(&cid, &bytes, owner).unwrap();
        cid
    }

    /// A leased artifact is kept through its lease and the grace after it, whoever owns it;
    /// then it goes with its lease, its records and the claims its owners made on its shards,
    /// so that the shards only it needed go too, while a shard another kept artifact names
    /// stays and an artifact without a lease keeps today's rule (owned, kept).
    #[test]
    fn a_leased_artifact_goes_once_its_lease_and_grace_have_ended() {
        let d = tempfile::tempdir().unwrap();
        let (p, q, r) = ([1; 32], [2; 32], [3; 32]);
        let (a, _) = sample_manifest(2);
        let (b, _) = sample_manifest(1);
        let shared: HashSet<Cid> = b.shard_cids().copied().collect();
        let only_a: Vec<Cid> = a
            .shard_cids()
            .filter(|c| !shared.contains(c))
            .copied()
            .collect();
        assert_eq!(
            (shared.len(), only_a.len()),
            (5, 5),
            "chunk 0's shards are shared"
        );
        let lone = b"a shard stored without any manifest".to_vec();
        let lone_cid = shard_cid(&lone);
        let (cid_a, cid_b) = {
            let s = store_with_grace(d.path(), Duration::from_secs(3600));
            let cid_a = put_remote(&s, &a, p);
            let cid_b = put_remote(&s, &b, q);
            s.put_shards_owned(&[(lone_cid, &lone)], Some(r)).unwrap();
            s.put_record(&cid_a, b"record of a").unwrap();
            s.put_repair_record(&cid_a, b"repair record of a").unwrap();
            // A lease that ended a second ago, within the hour of grace: everything stays.
            let ended = crate::care::now_ms() - 1000;
            assert!(s.put_lease(&cid_a, ended, b"lease of a").unwrap());
            assert_eq!(s.lease_until(&cid_a).unwrap(), Some(ended));
            assert_eq!(s.get_lease(&cid_a).unwrap().unwrap(), b"lease of a");
            assert_eq!(s.leases().unwrap(), vec![(cid_a, ended)]);
            assert_eq!(s.gc().unwrap(), GcReport::default());
            (cid_a, cid_b)
        };
        // The same store with no grace: A goes, with what only it needed.
        let s = store_with_grace(d.path(), Duration::ZERO);
        let before = s.stat().unwrap();
        let r1 = s.gc().unwrap();
        assert_eq!(
            (r1.manifests, r1.shards, r1.leases, r1.records, r1.released),
            (1, 5, 1, 2, 10),
            "{r1:?}"
        );
        assert!(!s.has_manifest(&cid_a).unwrap());
        assert_eq!(s.get_lease(&cid_a).unwrap(), None);
        assert_eq!(s.get_record(&cid_a).unwrap(), None);
        assert_eq!(s.get_repair_record(&cid_a).unwrap(), None);
        assert_eq!(s.owners(&cid_a).unwrap(), Vec::<[u8; 32]>::new());
        for c in &only_a {
            assert!(!s.has_shard(c).unwrap(), "{c} only A needed");
        }
        for c in &shared {
            assert!(s.has_shard(c).unwrap(), "{c} is B's too");
            assert_eq!(
                s.owners(c).unwrap(),
                vec![q],
                "P's claim went with A's lease"
            );
        }
        assert!(
            s.has_manifest(&cid_b).unwrap(),
            "B has no lease and is owned"
        );
        assert!(s.has_shard(&lone_cid).unwrap());
        assert_eq!(s.stat().unwrap().used, before.used - r1.bytes);
        assert_eq!(s.gc().unwrap(), GcReport::default(), "nothing more goes");
        // Once Q releases B, nothing of A lingers: P's claims are gone.
        s.release(&cid_b, q).unwrap();
        for c in &shared {
            s.release(c, q).unwrap();
        }
        let r2 = s.gc().unwrap();
        assert_eq!((r2.manifests, r2.shards), (1, 5));
        assert_eq!(s.stat().unwrap().shards, 1, "only R's lone shard is left");
    }

    /// A lease is never shortened and is kept only beside its manifest; a live lease keeps an
    /// artifact its owners released, and a local pin keeps one whose lease has ended.
    #[test]
    fn leases_keep_artifacts_whatever_their_owners_and_pins_keep_them_past_their_lease() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with_grace(d.path(), Duration::ZERO);
        let now = crate::care::now_ms();
        let (a, _) = sample_manifest(1);
        let (cid_a, _) = a.encode();
        assert!(matches!(
            s.put_lease(&cid_a, now + 60_000, b"lease"),
            Err(Error::ManifestNotFound(c)) if c == cid_a
        ));
        let cid_a = put_remote(&s, &a, [1; 32]);
        assert!(s.put_lease(&cid_a, now + 60_000, b"later").unwrap());
        for earlier in [now + 60_000, now + 1, 0] {
            assert!(!s.put_lease(&cid_a, earlier, b"earlier").unwrap());
        }
        assert_eq!(s.get_lease(&cid_a).unwrap().unwrap(), b"later");
        assert_eq!(s.lease_until(&cid_a).unwrap(), Some(now + 60_000));
        // The owner releases everything: the live lease keeps it all.
        s.release(&cid_a, [1; 32]).unwrap();
        for c in a.shard_cids() {
            s.release(c, [1; 32]).unwrap();
        }
        assert_eq!(s.gc().unwrap(), GcReport::default());
        assert!(s.has_manifest(&cid_a).unwrap());
        // A leased artifact pinned here stays past its lease, with its lease and shards.
        let (b, _) = sample_manifest(2);
        let cid_b = put_remote(&s, &b, [2; 32]);
        assert!(s.put_lease(&cid_b, 1, b"long over").unwrap());
        s.pin(&cid_b, None).unwrap();
        let r = s.gc().unwrap();
        assert_eq!(r, GcReport::default(), "{r:?}");
        // Unpinned, it goes (A's shared chunk stays: A's lease runs).
        assert!(s.unpin(&cid_b).unwrap());
        let r = s.gc().unwrap();
        assert_eq!((r.manifests, r.shards, r.leases), (1, 5, 1), "{r:?}");
        assert!(s.has_manifest(&cid_a).unwrap());
        for c in a.shard_cids() {
            assert!(s.has_shard(c).unwrap());
        }
    }

    /// A data directory written by another format of the store is refused by name, and left
    /// as it was, rather than read as this one.
    #[test]
    fn unknown_store_formats_are_refused() {
        let d = tempfile::tempdir().unwrap();
        drop(Store::open(d.path(), StoreConfig::new(1 << 20)).unwrap());
        // 2^32 + 1 once read as version 1 in the message (a truncating cast).
        for found in [0, STORE_FORMAT + 1, (1 << 32) + STORE_FORMAT, u64::MAX] {
            {
                let db = Database::create(d.path().join("store.redb")).unwrap();
                let tx = db.begin_write().unwrap();
                tx.open_table(META)
                    .unwrap()
                    .insert(META_FORMAT, found)
                    .unwrap();
                tx.commit().unwrap();
            }
            match Store::open(d.path(), StoreConfig::new(1 << 20)) {
                Err(Error::FormatVersion {
                    found: f, expected, ..
                }) => {
                    assert_eq!((f, expected), (found, STORE_FORMAT));
                }
                Err(e) => panic!("format {found}: {e}"),
                Ok(_) => panic!("a store of format {found} was opened"),
            }
            let db = Database::create(d.path().join("store.redb")).unwrap();
            let rtx = db.begin_read().unwrap();
            let meta = rtx.open_table(META).unwrap();
            assert_eq!(meta.get(META_FORMAT).unwrap().unwrap().value(), found);
        }
    }

    #[test]
    fn pin_lapses() {
        let p = Pin {
            cid: shard_cid(b"m"),
            expires_at: Some(100),
            pinned_at: 1,
        };
        assert!(p.is_live(99));
        assert!(!p.is_live(100));
        assert_eq!(Pin::decode(p.cid, &p.encode()).unwrap(), p);
    }
}
