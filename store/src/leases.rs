//! Leases kept beside manifests: how long an artifact's publisher wants it kept.
//!
//! A lease is a signed statement by the artifact's publisher (its format and checks belong to
//! the peer layer, `cairn_swarm::Lease`); the store keeps the latest one per manifest, as
//! bytes, with the time it ends. What it changes is in [`Store::gc`]: a manifest with a lease
//! is kept while its lease plus [`StoreConfig::lease_grace`](crate::StoreConfig::lease_grace)
//! has not ended (or a local pin keeps it), whoever owns it; a manifest without a lease is kept
//! while owned, as before. Leases are small (under 200 bytes, one per manifest held) and do not
//! count against the quota.

use cairn_artifact::{Cid, Error};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::Store;
use crate::db::DbResult;

/// Artifact (manifest) CID bytes -> `u64` big-endian end of the lease (Unix ms) ++ the signed
/// lease bytes.
pub(crate) const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases-1");

pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), Error> {
    tx.open_table(LEASES).db()?;
    Ok(())
}

/// The end of a stored lease row, or an error naming the artifact.
pub(crate) fn row_until(artifact: &[u8], row: &[u8]) -> Result<u64, Error> {
    let until: [u8; 8] = row
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            let cid = Cid::try_from(artifact).map_or_else(|_| "?".into(), |c| c.to_string());
            Error::Db(format!("lease row of {cid} has {} bytes", row.len()))
        })?;
    Ok(u64::from_be_bytes(until))
}

impl Store {
    /// Keeps the signed lease `signed` of `artifact`, ending at `until_ms` (Unix ms), unless
    /// the lease stored ends no earlier: a lease is never shortened. Returns whether it was
    /// stored. The caller (the peer layer) has checked the signature, that the artifact's
    /// manifest allows its signer and that `until_ms` is the lease's. Like a holder record, a
    /// lease is kept only beside its manifest and collected with it: without the manifest this
    /// fails with [`Error::ManifestNotFound`].
    pub fn put_lease(&self, artifact: &Cid, until_ms: u64, signed: &[u8]) -> Result<bool, Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.has_manifest(artifact)? {
            return Err(Error::ManifestNotFound(*artifact));
        }
        let key = artifact.to_bytes();
        let tx = self.db.begin_write().db()?;
        let stored = {
            let mut t = tx.open_table(LEASES).db()?;
            let old = match t.get(key.as_slice()).db()? {
                Some(v) => Some(row_until(&key, v.value())?),
                None => None,
            };
            if old.is_some_and(|old| old >= until_ms) {
                false
            } else {
                let mut row = until_ms.to_be_bytes().to_vec();
                row.extend_from_slice(signed);
                t.insert(key.as_slice(), row.as_slice()).db()?;
                true
            }
        };
        tx.commit().db()?;
        Ok(stored)
    }

    /// The signed lease stored for `artifact`, if any.
    pub fn get_lease(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(LEASES).db()?;
        let key = artifact.to_bytes();
        match t.get(key.as_slice()).db()? {
            Some(v) => {
                row_until(&key, v.value())?;
                Ok(Some(v.value()[8..].to_vec()))
            }
            None => Ok(None),
        }
    }

    /// When the lease stored for `artifact` ends (Unix ms), None if it has none.
    pub fn lease_until(&self, artifact: &Cid) -> Result<Option<u64>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(LEASES).db()?;
        let key = artifact.to_bytes();
        match t.get(key.as_slice()).db()? {
            Some(v) => Ok(Some(row_until(&key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every artifact with a lease, with the time its lease ends (Unix ms).
    pub fn leases(&self) -> Result<Vec<(Cid, u64)>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(LEASES).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let cid = Cid::try_from(k.value())
                .map_err(|e| Error::Db(format!("lease key is not a CID: {e}")))?;
            out.push((cid, row_until(k.value(), v.value())?));
        }
        Ok(out)
    }
}
