//! Name records kept for the network: the revisions of the repository names whose records this
//! node is among the holders of, and the org claims they were accepted under.
//!
//! The records' format, signatures and the rules for accepting one belong to the peer layer
//! (`cairn_swarm::NameRecord`, the shard server's PUT_NAME); the store keeps bytes under
//! (org in lowercase, kind, name, version), the first org key each org was accepted under, and
//! a running total of the bytes kept, bounded by [`NET_NAME_BYTES_MAX`]. Each name keeps its
//! newest revisions only (the caller says how many). Names are not local names (`NAMES`, a
//! publisher's own `org/name` → capability) and do not count against the shard quota.

use cairn_artifact::Error;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::Store;
use crate::db::DbResult;

/// (org lowercase, kind, name, version) -> signed name record bytes.
const NET_NAMES: TableDefinition<(&str, u8, &str, u64), &[u8]> =
    TableDefinition::new("net-names-1");
/// org lowercase -> the 32-byte org key its first accepted record was under.
const ORG_CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("org-claims-1");
/// `"bytes"` -> total bytes of the records in `NET_NAMES`.
const NET_NAME_STATS: TableDefinition<&str, u64> = TableDefinition::new("net-name-stats-1");

/// Most bytes of name records one node keeps (about 100 000 revisions of typical size).
pub const NET_NAME_BYTES_MAX: u64 = 64 * 1024 * 1024;

pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), Error> {
    tx.open_table(NET_NAMES).db()?;
    tx.open_table(ORG_CLAIMS).db()?;
    tx.open_table(NET_NAME_STATS).db()?;
    Ok(())
}

/// A name as kept: (org lowercase, kind, name).
pub type NetNameKey = (String, u8, String);

impl Store {
    /// The org key `org` (lowercase) was first accepted under, if this node keeps records of it.
    pub fn org_claim(&self, org: &str) -> Result<Option<[u8; 32]>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(ORG_CLAIMS).db()?;
        Ok(t.get(org)
            .db()?
            .and_then(|v| <[u8; 32]>::try_from(v.value()).ok()))
    }

    /// The stored records of one name, newest version first.
    pub fn net_names(&self, org: &str, kind: u8, name: &str) -> Result<Vec<Vec<u8>>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(NET_NAMES).db()?;
        let mut out = Vec::new();
        for row in t
            .range((org, kind, name, 0u64)..=(org, kind, name, u64::MAX))
            .db()?
            .rev()
        {
            let (_, v) = row.db()?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Keeps record `bytes` of name (`org` lowercase, `kind`, `name`) at `version`, claiming
    /// `org` for `org_key` if nobody has, and drops the name's revisions beyond the newest
    /// `keep`. The caller (the peer layer) has checked the record, that `org_key` is the org's
    /// claim and that the version is new. Fails with [`Error::BadInput`] if the org is claimed
    /// by another key (a race the caller's lock should prevent) and [`Error::QuotaExceeded`]
    /// when the records kept would pass [`NET_NAME_BYTES_MAX`].
    pub fn put_net_name(
        &self,
        (org, kind, name): (&str, u8, &str),
        org_key: &[u8; 32],
        version: u64,
        bytes: &[u8],
        keep: usize,
    ) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write().db()?;
        {
            let mut claims = tx.open_table(ORG_CLAIMS).db()?;
            let claimed = claims.get(org).db()?.map(|v| v.value().to_vec());
            match claimed {
                Some(k) if k != org_key => {
                    return Err(Error::BadInput {
                        path: org.into(),
                        reason: "the org is claimed by another key".into(),
                    });
                }
                Some(_) => {}
                None => {
                    claims.insert(org, org_key.as_slice()).db()?;
                }
            }
            let mut stats = tx.open_table(NET_NAME_STATS).db()?;
            let mut total = stats.get("bytes").db()?.map_or(0, |v| v.value());
            let mut t = tx.open_table(NET_NAMES).db()?;
            if let Some(old) = t.insert((org, kind, name, version), bytes).db()? {
                total = total.saturating_sub(old.value().len() as u64);
            }
            total += bytes.len() as u64;
            let versions: Vec<u64> = t
                .range((org, kind, name, 0u64)..=(org, kind, name, u64::MAX))
                .db()?
                .map(|r| r.map(|(k, _)| k.value().3))
                .collect::<Result<_, _>>()
                .db()?;
            let drop = versions.len().saturating_sub(keep);
            for v in &versions[..drop] {
                if let Some(old) = t.remove((org, kind, name, *v)).db()? {
                    total = total.saturating_sub(old.value().len() as u64);
                }
            }
            if total > NET_NAME_BYTES_MAX {
                return Err(Error::QuotaExceeded {
                    needed: bytes.len() as u64,
                    free: NET_NAME_BYTES_MAX.saturating_sub(total - bytes.len() as u64),
                    quota: NET_NAME_BYTES_MAX,
                });
            }
            stats.insert("bytes", total).db()?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Every name this node keeps records of, each once, in key order.
    pub fn net_name_keys(&self) -> Result<Vec<NetNameKey>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(NET_NAMES).db()?;
        let mut out: Vec<NetNameKey> = Vec::new();
        for row in t.iter().db()? {
            let (k, _) = row.db()?;
            let (org, kind, name, _) = k.value();
            if out
                .last()
                .is_none_or(|(o, k2, n)| (o.as_str(), *k2, n.as_str()) != (org, kind, name))
            {
                out.push((org.to_string(), kind, name.to_string()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreConfig};

    #[test]
    fn names_keep_their_newest_revisions_and_their_org_claim() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::new(1 << 20)).unwrap();
        let owner = [1u8; 32];
        for v in 1..=5u64 {
            store
                .put_net_name(("acme", 0, "m"), &owner, v, &[v as u8; 10], 3)
                .unwrap();
        }
        store
            .put_net_name(("acme", 1, "m"), &owner, 9, b"dataset", 3)
            .unwrap();
        assert_eq!(
            store.net_names("acme", 0, "m").unwrap(),
            vec![vec![5u8; 10], vec![4u8; 10], vec![3u8; 10]]
        );
        assert_eq!(store.org_claim("acme").unwrap(), Some(owner));
        assert!(
            store
                .put_net_name(("acme", 0, "x"), &[2u8; 32], 7, b"squat", 3)
                .is_err()
        );
        assert!(store.net_names("acme", 0, "x").unwrap().is_empty());
        assert_eq!(
            store.net_name_keys().unwrap(),
            vec![
                ("acme".to_string(), 0, "m".to_string()),
                ("acme".to_string(), 1, "m".to_string())
            ]
        );
        drop(store);
        // Kept across a restart.
        let store = Store::open(dir.path(), StoreConfig::new(1 << 20)).unwrap();
        assert_eq!(store.net_names("acme", 0, "m").unwrap().len(), 3);
        assert_eq!(store.org_claim("acme").unwrap(), Some(owner));
    }

    #[test]
    fn name_bytes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreConfig::new(1 << 20)).unwrap();
        let big = vec![0u8; 1024 * 1024];
        let mut refused = false;
        for v in 0..80u64 {
            let name = format!("n{v}");
            if store
                .put_net_name(("o", 0, &name), &[1; 32], 1, &big, 3)
                .is_err()
            {
                refused = true;
                // Nothing of the refused write was kept.
                assert!(store.net_names("o", 0, &name).unwrap().is_empty());
                break;
            }
        }
        assert!(refused, "64 MiB of records must be the end");
    }
}
