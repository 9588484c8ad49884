//! Files and folders only their owner can open.
//!
//! Cairn's data directories hold secrets (node and publisher keys, the gateway's read
//! capabilities and key hashes, the admin token) and logs. Each file and folder is created with
//! its final mode, 0600 or 0700, in the same system call that creates it: a `chmod` after
//! creating would leave a window in which another local user can open the file and keep the
//! descriptor. The process umask can only take bits away, never add them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Mode of every folder Cairn creates in a data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Cairn creates in a data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents, each with mode 0700. Folders that already exist keep
/// their mode.
pub fn create_dir_private(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b.create(path)
}

/// Options that create a file with mode 0600 (an existing file keeps its mode). Add the access
/// and creation flags the caller needs.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    o
}

/// Creates or truncates `path` (mode 0600 when created) for writing.
pub fn create_private(path: &Path) -> io::Result<File> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Writes `bytes` to `path` through a temporary file beside it (mode 0600) and a rename, so a
/// reader sees the old content or the new one. Not synced: for files that are rebuilt at start
/// (addresses, caches), not for data that must survive a crash.
pub fn write_private_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let res = create_private(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Modes come from creation, whatever the umask lets through (the test's umask is usually
    /// 022, which would give 0755 and 0644).
    #[test]
    fn created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b/c");
        create_dir_private(&d).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(p)), 0o700, "{p}");
        }
        let f = d.join("f");
        write_private_replace(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
        assert!(!d.join("f.tmp").exists());
    }
}
