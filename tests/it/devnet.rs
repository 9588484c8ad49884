//! A test network: real `cairn node` processes on 127.0.0.1, one data directory each.
//!
//! Every node picks a free port itself at its first start (a port chosen here and bound later
//! by the node could be taken in between) and keeps it, so a node killed and started again
//! (same data directory, same key) comes back at the same address; node 0 is everyone's
//! bootstrap. Every
//! wait is bounded. Dropping the [`Devnet`] SIGKILLs and reaps every child, so a failing test
//! leaks no process; on a panic it prints the tail of each node's log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Time allowed for a node to write its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for node 0 to see every node. A node's first announcement is broadcast before
/// its gossip neighbours are up and is lost, so the others hear of it only at its next one,
/// `ANNOUNCE_INTERVAL` (30 s) later; the wait must cover that.
pub const PEERS_TIMEOUT: Duration = Duration::from_secs(45);
/// Time allowed for a node to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for one `cairn add`/`get`/`ls`/`peers` run.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DevNode {
    pub dir: PathBuf,
    /// The node's UDP port: 0 until its first start, then the one it bound.
    pub port: u16,
    child: Option<Child>,
}

pub struct Devnet {
    pub tmp: tempfile::TempDir,
    pub nodes: Vec<DevNode>,
    /// Arguments every `cairn node` of this devnet gets (e.g. a short audit period).
    pub node_args: Vec<String>,
}

/// A `cairn` command with no data directory or peer from the environment.
pub fn cairn() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("CAIRN_DIR")
        .env_remove("CAIRN_PEER")
        .env_remove("CAIRN_NETWORK")
        .env_remove("CAIRN_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion within `limit` (killed and a panic past it).
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Runs and asserts success; returns (stdout, stderr).
pub fn ok(cmd: Command) -> (String, String) {
    let what = format!("{cmd:?}");
    let o = run_bounded(cmd, CMD_TIMEOUT);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{what} failed ({}): {err}", o.status);
    (out, err)
}

/// Runs and asserts exit code 2; returns stderr.
pub fn fails(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let o = run_bounded(cmd, CMD_TIMEOUT);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{what} should exit 2: {}{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// Initializes a data directory at `dir` with `quota`.
pub fn init(dir: &Path, quota: &str) {
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(dir)
        .args(["init", "--quota", quota]);
    ok(c);
}

impl Devnet {
    /// Starts one node per quota and waits until node 0 sees them all.
    pub fn start(quotas: &[&str]) -> Devnet {
        Devnet::start_with_args(quotas, &[])
    }

    /// [`Devnet::start`] with `args` given to every `cairn node`.
    pub fn start_with_args(quotas: &[&str], args: &[&str]) -> Devnet {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let dir = tmp.path().join(format!("node-{i}"));
                init(&dir, q);
                DevNode {
                    dir,
                    port: 0,
                    child: None,
                }
            })
            .collect();
        let mut net = Devnet {
            tmp,
            nodes,
            node_args: args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..net.nodes.len() {
            net.spawn(i);
        }
        net.wait_peers(0, net.nodes.len());
        net
    }

    /// Starts `n` nodes of 1 GiB each.
    pub fn with_nodes(n: usize) -> Devnet {
        Devnet::start(&vec!["1GiB"; n])
    }

    /// Adds a node of `quota` to the devnet, not started (see [`Devnet::spawn`]); returns its
    /// index.
    pub fn add_node(&mut self, quota: &str) -> usize {
        let i = self.nodes.len();
        let dir = self.tmp.path().join(format!("node-{i}"));
        init(&dir, quota);
        self.nodes.push(DevNode {
            dir,
            port: 0,
            child: None,
        });
        i
    }

    /// `<id>@<ip:port>` of node `i` (from its `node.addr`; the node must be up).
    pub fn addr(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("node.addr"))
            .unwrap_or_else(|e| panic!("node {i} has no node.addr: {e}"))
            .trim()
            .to_string()
    }

    /// Starts node `i`'s process and waits for its `node.addr`.
    pub fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is already running");
        let bootstrap = (i != 0).then(|| self.addr(0));
        let node_args = self.node_args.clone();
        let node = &mut self.nodes[i];
        let addr_file = node.dir.join("node.addr");
        // A node killed with SIGKILL leaves its address file behind.
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("node.log"))
            .unwrap();
        let mut c = cairn();
        c.arg("--data-dir")
            .arg(&node.dir)
            .args(["node", "--listen", &format!("127.0.0.1:{}", node.port)])
            .args(&node_args)
            .env("CAIRN_LOG", "info,iroh=warn,noq=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = bootstrap {
            c.args(["--bootstrap", &b]);
        }
        node.child = Some(c.spawn().unwrap());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let bound = std::fs::read_to_string(&addr_file).ok().and_then(|s| {
                let (_, port) = s.trim().rsplit_once("127.0.0.1:")?;
                port.parse::<u16>().ok()
            });
            if let Some(port) = bound {
                assert!(
                    node.port == 0 || port == node.port,
                    "node {i} came back on port {port}, not {}",
                    node.port
                );
                node.port = port;
                return;
            }
            if let Some(st) = node.child.as_mut().unwrap().try_wait().unwrap() {
                node.child = None;
                panic!("node {i} exited ({st}) before it was up: {}", self.log(i));
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not come up in {START_TIMEOUT:?}: {}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The live-node count `cairn peers` reports through node `via`.
    pub fn peers_seen(&self, via: usize) -> Option<usize> {
        let mut c = cairn();
        c.args(["--peer", &self.addr(via), "peers"]);
        let o = run_bounded(c, CMD_TIMEOUT);
        let s = String::from_utf8_lossy(&o.stdout);
        s.trim().strip_suffix(" live nodes")?.parse().ok()
    }

    /// Waits (bounded) until node `via` reports `want` live nodes.
    pub fn wait_peers(&self, via: usize, want: usize) {
        let deadline = Instant::now() + PEERS_TIMEOUT;
        loop {
            let seen = self.peers_seen(via);
            if seen == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {PEERS_TIMEOUT:?} node {via} sees {seen:?} of {want} nodes"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut c = self.nodes[i].child.take().expect("node is running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERMs node `i` and waits (bounded) for a clean exit.
    pub fn stop(&mut self, i: usize) {
        let mut c = self.nodes[i].child.take().expect("node is running");
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let st = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node {i} did not stop in {STOP_TIMEOUT:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(st.success(), "node {i} exited with {st}: {}", self.log(i));
        assert!(
            !self.nodes[i].dir.join("node.addr").exists(),
            "node {i} left node.addr after a clean stop"
        );
    }

    /// Shard files in node `i`'s store.
    pub fn shard_files(&self, i: usize) -> Vec<PathBuf> {
        let d = self.nodes[i].dir.join("store/shards");
        if d.exists() {
            files_under(&d)
        } else {
            Vec::new()
        }
    }

    /// A `cairn` command talking to the network through node 0.
    pub fn cli(&self) -> Command {
        let mut c = cairn();
        c.args(["--peer", &self.addr(0)]);
        c
    }

    /// `cairn add` with the publisher data directory `publisher`.
    pub fn add_cmd(&self, publisher: &Path, path: &Path, extra: &[&str]) -> Command {
        let mut c = self.cli();
        c.arg("--data-dir")
            .arg(publisher)
            .arg("add")
            .arg(path)
            .args(extra);
        c
    }

    /// `cairn get <cap> -o out`.
    pub fn get_cmd(&self, cap: &str, out: &Path) -> Command {
        let mut c = self.cli();
        c.args(["get", cap, "-o"]).arg(out);
        c
    }

    fn log(&self, i: usize) -> String {
        let s = std::fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("--- node {i} log (tail) ---\n{}", self.log(i));
            }
        }
    }
}

/// The capability a successful `cairn add` printed.
pub fn cap_line(stdout: &str) -> String {
    cap_of(stdout).to_string()
}

/// `N` from "..., S shards sent, N already there" in `cairn add`'s stderr.
pub fn already_there(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" already there"))
        .unwrap_or_else(|| panic!("no publish summary in {stderr}"));
    let before = line.rsplit_once(" already there").unwrap().0;
    before.rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// `S` from "S shards sent".
pub fn shards_sent(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" shards sent"))
        .unwrap_or_else(|| panic!("no publish summary in {stderr}"));
    let before = line.split_once(" shards sent").unwrap().0;
    before.rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// The chunk count `cairn ls` reports ("# N chunks, ...").
pub fn chunks_of(ls: &str) -> usize {
    ls.lines()
        .find_map(|l| l.strip_prefix("# ")?.split_once(" chunks,"))
        .unwrap_or_else(|| panic!("no chunk count in {ls}"))
        .0
        .parse()
        .unwrap()
}

/// Time allowed for the gateway to write its URL.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `cairn gateway` process reading from the network through node 0. Dropping it SIGKILLs and
/// reaps the process; on a panic it prints the tail of the gateway's log.
pub struct DevGateway {
    /// The gateway's data directory (`cairn --data-dir` for `register` and `apikey`).
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), from `gateway.addr`.
    pub url: String,
    child: Option<Child>,
}

impl Devnet {
    /// Starts a gateway on an ephemeral port, peered with node 0, and waits (bounded) for its
    /// `gateway.addr`.
    pub fn start_gateway(&self) -> DevGateway {
        self.start_gateway_with("gateway-node", &[])
    }

    /// As [`Devnet::start_gateway`], with its data in `name` and `args` added to
    /// `cairn gateway` (e.g. `--tls-cert`).
    pub fn start_gateway_with(&self, name: &str, args: &[&str]) -> DevGateway {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = ["--peer".to_string(), self.addr(0)];
        DevGateway::start(dir, &peer, args)
    }
}

impl DevGateway {
    /// A gateway over the local store of the data directory `dir` (no network).
    pub fn start_local(dir: &Path) -> DevGateway {
        DevGateway::start(dir.to_path_buf(), &[], &[])
    }

    /// A gateway over the local store of `dir`, with `args` added to `cairn gateway`.
    pub fn start_local_with(dir: &Path, args: &[&str]) -> DevGateway {
        DevGateway::start(dir.to_path_buf(), &[], args)
    }

    /// Starts `cairn --data-dir dir [peer] gateway --listen 127.0.0.1:0 [args]` and waits
    /// (bounded) for its `gateway.addr`.
    fn start(dir: PathBuf, peer: &[String], args: &[&str]) -> DevGateway {
        let addr_file = dir.join("gateway/gateway.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .unwrap();
        let mut c = cairn();
        c.arg("--data-dir")
            .arg(&dir)
            .args(peer)
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("CAIRN_LOG", "info,iroh=warn,noq=warn")
            .stdout(Stdio::null())
            .stderr(log);
        let mut gw = DevGateway {
            dir,
            url: String::new(),
            child: Some(c.spawn().unwrap()),
        };
        let deadline = Instant::now() + GATEWAY_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file)
                && (s.trim().starts_with("http://") || s.trim().starts_with("https://"))
            {
                gw.url = s.trim().to_string();
                return gw;
            }
            if let Some(st) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                gw.child = None;
                panic!("the gateway exited ({st}) before it was up: {}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not come up in {GATEWAY_TIMEOUT:?}: {}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops this gateway (SIGKILL) and starts a new one on the same local data directory with
    /// `args`; waits (bounded) for its new address.
    pub fn restart_local(&mut self, args: &[&str]) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        *self = DevGateway::start(self.dir.clone(), &[], args);
    }

    /// A gateway started by someone else (a `cairn devnet`): its data directory and URL.
    pub fn attach(dir: PathBuf, url: String) -> DevGateway {
        DevGateway {
            dir,
            url,
            child: None,
        }
    }

    /// `cairn register org/name <cap> [extra]` on this gateway; returns the 40-hex revision.
    pub fn register(&self, repo: &str, cap: &str, extra: &[&str]) -> String {
        let mut c = cairn();
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(["register", repo, cap])
            .args(extra);
        let (out, _) = ok(c);
        let rev = out
            .split_whitespace()
            .skip_while(|w| *w != "revision")
            .nth(1)
            .unwrap_or_else(|| panic!("no revision in {out}"))
            .to_string();
        assert!(
            rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
            "{out}"
        );
        rev
    }

    /// `cairn apikey create --scope <scope>`; returns the key.
    pub fn apikey(&self, scope: &str) -> String {
        let mut c = cairn();
        c.arg("--data-dir")
            .arg(&self.dir)
            .args(["apikey", "create", "--scope", scope]);
        let (out, _) = ok(c);
        out.lines()
            .find_map(|l| l.strip_prefix("key: "))
            .unwrap_or_else(|| panic!("no key in {out}"))
            .trim()
            .to_string()
    }

    /// Whether the gateway process is still running (not exited, not a zombie waiting to be
    /// reaped).
    pub fn is_running(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|state| !state.starts_with(['Z', 'X']))
    }

    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for DevGateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- gateway log (tail) ---\n{}", self.log());
        }
    }
}
