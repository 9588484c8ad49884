//! The gateway's database: one redb file, `gateway.redb` in the gateway's data directory, and
//! its one owner, [`GatewayDb`].
//!
//! redb lets one process open a file once, and the gateway's state must change atomically
//! across tables (registering a revision moves `main` in the same transaction; creating a key
//! bound to a certificate writes the key and the binding together), so every part of the
//! gateway that stores something keeps its tables in this one file and borrows the database
//! through an `Arc<GatewayDb>`: it lives until the last of them is dropped. Each part creates
//! its own tables when it opens; table names carry a format version like the store's tables.
//!
//! | tables | owner |
//! |---|---|
//! | `gateway-artifacts-1`, `gateway-revisions-1`, `gateway-refs-1` | the repository registry (`registry`) |
//! | `gateway-apikeys-1`, `gateway-audit-1`, `gateway-audit-anon-1` | the API-key store and its audit logs (`access::keystore`) |
//! | `gateway-apikey-certnames-1`, `gateway-cert-revocations-1` | client certificates (`clientcert`) |
//! | `gateway-siwe-nonces-1`, `gateway-siwe-sessions-1` | wallet sign-ins (`access::siwe`) |
//! | `gateway-usage-1`, `gateway-usage-addrs-1` | usage totals and first uses (`usage`) |
//!
//! The file holds every read capability the gateway serves with (private repositories'
//! included) and the hashes of its keys and sessions: it is created 0600 in a 0700 folder.

use std::fmt;
use std::path::{Path, PathBuf};

use redb::Database;

use crate::Error;

/// The open `gateway.redb` (see the module docs). Errors of every table in it name the file.
pub(crate) struct GatewayDb {
    path: PathBuf,
    db: Database,
}

impl GatewayDb {
    /// Opens (creating if needed) `gateway.redb` in `dir`. The folder (and any missing parent)
    /// is created 0700 and the database 0600. A database another process holds open (another
    /// gateway on the same data directory) is an [`Error::Registry`] that says so.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        cairn_store::create_dir_private(dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let path = dir.join("gateway.redb");
        let db = cairn_store::create_private_db(&path).map_err(|e| Error::Registry {
            path: path.clone(),
            reason: format!("{e}; is another gateway using this data directory?"),
        })?;
        Ok(Self { path, db })
    }

    /// The redb database, to begin transactions on.
    pub(crate) fn redb(&self) -> &Database {
        &self.db
    }

    /// `e` as an error of this database ([`Error::Registry`], naming the file).
    pub(crate) fn err(&self, e: impl fmt::Display) -> Error {
        Error::Registry {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}
