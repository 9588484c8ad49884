//! The store's redb database, created owner-only.

use std::path::Path;

use cairn_artifact::private_options;

/// Opens (creating with mode 0600 if needed) a redb database at `path`. Like
/// `redb::Database::create`, which would create the file with the umask's mode.
pub fn create_private_db(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    redb::Database::builder().create_with_backend(redb::backends::FileBackend::new(file)?)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("x.redb");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(create_private_db(&db).unwrap());
        assert_eq!(mode(&db), 0o600);
        // Reopening an existing database works and keeps its mode.
        drop(create_private_db(&db).unwrap());
        assert_eq!(mode(&db), 0o600);
    }
}
