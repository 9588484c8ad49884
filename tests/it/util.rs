//! Helpers: run the `cairn` binary, make deterministic pseudo-random files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_artifact::{Manifest, ReadCap};
use cairn_store::{Store, StoreConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// A data directory with `cairn init` done.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Node {
    pub fn new(quota: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let n = Node { tmp, dir };
        n.ok(&["init", "--quota", quota]);
        n
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env_remove("CAIRN_DIR");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and asserts exit code 2; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "cairn {args:?} should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    /// `cairn add`, returning the read capability.
    pub fn add(&self, path: &Path) -> ReadCap {
        let out = self.ok(&["add", path.to_str().unwrap()]);
        cap_of(&out)
    }

    pub fn stat(&self, field: &str) -> u64 {
        let out = self.ok(&["stat"]);
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap();
        let v = line.split_once(": ").unwrap().1;
        // "used: 1.0 MiB (1048576 bytes)" -> the exact count in parentheses.
        let v = v
            .rsplit_once('(')
            .map(|(_, b)| b.trim_end_matches(" bytes)"))
            .unwrap_or(v);
        v.trim().parse().unwrap()
    }

    /// Opens the store directly (the CLI must not be running).
    pub fn store(&self) -> Store {
        Store::open(&self.dir.join("store"), StoreConfig::new(u64::MAX)).unwrap()
    }

    pub fn manifest(&self, cap: &ReadCap) -> Manifest {
        let bytes = self.store().get_manifest(&cap.cid).unwrap();
        Manifest::decode(&bytes, "test").unwrap()
    }

    pub fn shard_file(&self, cid: &cairn_artifact::Cid) -> PathBuf {
        let s = cid.to_string();
        self.dir
            .join("store/shards")
            .join(&s[s.len() - 2..])
            .join(s)
    }
}

pub fn cap_of(stdout: &str) -> ReadCap {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("read capability: "))
        .unwrap_or_else(|| panic!("no capability in {stdout}"));
    line.parse().unwrap()
}

/// Deterministic incompressible bytes (xorshift), fast enough for hundreds of MiB.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts two directory trees hold the same files with the same bytes (`diff -r`).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diff -r {} {}: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

/// All files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A two-worker runtime for tests that speak async HTTP.
pub fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP client for loopback gateways: no proxy, a bounded connect.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `done` every 500 ms until it holds, failing the test after `within`; returns the time
/// it took.
pub fn wait_until(
    what: &str,
    within: std::time::Duration,
    mut done: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    start.elapsed()
}
