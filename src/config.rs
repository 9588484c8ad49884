//! The data directory: where a node keeps its keys, its configuration and its store.
//!
//! ```text
//! <data dir>/config.toml          quota and erasure defaults (plain settings, no secrets)
//! <data dir>/node.key             32 raw bytes, the node's ed25519 secret key (mode 0600)
//! <data dir>/convergence.secret   32 raw bytes, the publisher's convergence secret (mode 0600)
//! <data dir>/publisher.key        32 raw bytes, the publisher's ed25519 secret key (mode 0600)
//! <data dir>/node.addr            `<endpoint id>@<ip:port>` of the running node (written by it)
//! <data dir>/peers.bin            the node's peer table, kept across restarts
//! <data dir>/leases.json          artifacts this publisher keeps alive on the network (`cairn
//!                                 pin --peer`), renewed by a `cairn node` on this directory
//! <data dir>/store/               the shard store (see cairn-store)
//! ```
//!
//! Every folder here is created 0700 and every file 0600 by the call that creates it (see
//! `cairn_store::create_dir_private`), so no other local user can read a key, and none can
//! open a file in the window between its creation and a later `chmod`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_encryption::ConvergenceSecret;
use cairn_store::{Store, StoreConfig};
use serde::{Deserialize, Serialize};

/// Settings kept in `config.toml`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Config {
    /// Quota of the store in bytes.
    pub quota: u64,
}

/// An opened data directory.
pub struct DataDir {
    pub path: PathBuf,
    pub config: Config,
}

/// The data directory to use: `--data-dir`, `$CAIRN_DIR`, or `~/.cairn`.
pub fn resolve(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let home =
        std::env::var_os("HOME").context("HOME is not set; pass --data-dir or set CAIRN_DIR")?;
    Ok(PathBuf::from(home).join(".cairn"))
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = cairn_store::private_options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let meta = fs::metadata(path)
        .with_context(|| format!("cannot read {}; run `cairn init` first", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{} is {} bytes, expected 32; it is damaged",
            path.display(),
            bytes.len()
        )
    })
}

/// The grant secret of the data directory at `path` (`grant.key`): what grants to this data
/// directory (its gateway, or its `cairn get` by name) are wrapped to. Created (0600, in a 0700
/// folder) on first use, so a gateway on a folder never `cairn init`-ed has one too.
pub fn grant_secret(path: &Path) -> anyhow::Result<cairn_encryption::GatewaySecret> {
    let file = path.join("grant.key");
    if !file.exists() {
        cairn_store::create_dir_private(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        match write_secret(&file, cairn_encryption::GatewaySecret::random().as_bytes()) {
            Ok(()) => {}
            // Another process created it first: use theirs.
            Err(_) if file.exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(cairn_encryption::GatewaySecret::from_bytes(read_secret(
        &file,
    )?))
}

impl DataDir {
    /// Creates a new data directory. Refuses to overwrite an existing one.
    pub fn init(path: &Path, quota: u64) -> anyhow::Result<Self> {
        if path.join("config.toml").exists() {
            bail!("{} is already a Cairn data directory", path.display());
        }
        cairn_store::create_dir_private(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        for secret in ["node.key", "convergence.secret", "publisher.key"] {
            write_secret(&path.join(secret), ConvergenceSecret::random().as_bytes())?;
        }
        let config = Config { quota };
        let text = toml::to_string(&config)?;
        cairn_store::create_private(&path.join("config.toml"))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.join("config.toml").display()))?;
        let dd = Self {
            path: path.to_path_buf(),
            config,
        };
        dd.open_store()?;
        Ok(dd)
    }

    /// Opens an existing data directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let cfg_path = path.join("config.toml");
        let text = fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "no Cairn data directory at {}; run `cairn init` (or pass --data-dir)",
                path.display()
            )
        })?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("{} is not valid", cfg_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The publisher's convergence secret.
    pub fn convergence_secret(&self) -> anyhow::Result<ConvergenceSecret> {
        Ok(ConvergenceSecret::from_bytes(read_secret(
            &self.path.join("convergence.secret"),
        )?))
    }

    /// The node's secret key bytes (the `cairn node` identity).
    pub fn node_key(&self) -> anyhow::Result<[u8; 32]> {
        read_secret(&self.path.join("node.key"))
    }

    /// The publisher's secret key bytes: signs holder records and owns the shards `cairn add`
    /// stores on other nodes. Separate from the node key so a publisher's CLI and its own node
    /// can be online at once.
    pub fn publisher_key(&self) -> anyhow::Result<[u8; 32]> {
        read_secret(&self.path.join("publisher.key"))
    }

    /// Opens the store.
    pub fn open_store(&self) -> anyhow::Result<Store> {
        self.open_store_with(cairn_store::LEASE_GRACE)
    }

    /// Opens the store, keeping leased artifacts for `lease_grace` past the end of their lease
    /// (`cairn node --lease-grace`).
    pub fn open_store_with(&self, lease_grace: std::time::Duration) -> anyhow::Result<Store> {
        let dir = self.path.join("store");
        Store::open(
            &dir,
            StoreConfig {
                quota: self.config.quota,
                lease_grace,
            },
        )
        .with_context(|| format!("cannot open the store in {}", dir.display()))
    }
}
