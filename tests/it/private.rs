//! Secrets on the local machine: data directories only their owner can open, capabilities kept
//! off the command line, and a private repository that stays private when registered again
//! (hardening items 8 and 13).
//!
//! Method: the `cairn` processes run under `umask 000`, so any file or folder created without
//! an explicit mode would be readable (and writable) by everyone; afterwards every entry under
//! the data directory is checked: folders 0700, files without group or other bits. Capabilities
//! are handed over in files and on standard input, never as arguments.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// `cairn <args>` started by a shell that sets the umask to 000 first.
pub fn cairn_umask0(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .env_remove("CAIRN_DIR")
        .env_remove("CAIRN_PEER")
        .env_remove("CAIRN_LOG")
        .stdin(Stdio::null());
    c
}

fn run_ok(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Every entry under `root` (and `root` itself): folders 0700, files with no group or other
/// bit, except the subtrees named in `skip` (relative to `root`).
pub fn assert_private_tree(root: &Path, skip: &[&str]) {
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        if skip.iter().any(|s| p == root.join(s)) {
            continue;
        }
        let meta = fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        seen += 1;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is a folder of mode {mode:o}", p.display());
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            assert_eq!(
                mode & 0o077,
                0,
                "{} has mode {mode:o}: others can open it",
                p.display()
            );
        }
    }
    assert!(seen > 1, "nothing under {}", root.display());
}

/// A `cairn gateway` serving a data directory's local store; SIGTERMed and reaped on drop.
pub struct LocalGateway {
    child: Child,
    pub url: String,
}

impl LocalGateway {
    pub fn start(data: &Path) -> LocalGateway {
        let mut c = cairn_umask0(&[
            "--data-dir",
            data.to_str().unwrap(),
            "gateway",
            "--listen",
            "127.0.0.1:0",
        ]);
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut gw = LocalGateway {
            child,
            url: String::new(),
        };
        let addr = data.join("gateway/gateway.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = fs::read_to_string(&addr)
                && s.trim().starts_with("http://")
            {
                gw.url = s.trim().to_string();
                return gw;
            }
            assert!(
                gw.child.try_wait().unwrap().is_none(),
                "the gateway exited before it was up"
            );
            assert!(Instant::now() < deadline, "the gateway did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and a clean exit within 15 s.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the gateway did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP GET over loopback: the status code.
fn http_status(url: &str) -> u16 {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A folder with one small file; returns it.
fn sample(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("config.json"), br#"{"hidden_size": 8}"#).unwrap();
    fs::write(src.join("w.bin"), pseudo_random(8, 300_000)).unwrap();
    src
}

#[test]
fn data_directories_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    // A data directory whose parent does not exist yet: every folder created is private.
    let data = tmp.path().join("a/b/data");
    let d = data.to_str().unwrap();
    run_ok(cairn_umask0(&["--data-dir", d, "init", "--quota", "1GiB"]));
    let src = sample(tmp.path());
    let out = run_ok(cairn_umask0(&[
        "--data-dir",
        d,
        "add",
        src.to_str().unwrap(),
    ]));
    let cap = cap_of(&out).to_string();
    let cap_file = tmp.path().join("cap");
    fs::write(&cap_file, format!("{cap}\n")).unwrap();
    let gw = LocalGateway::start(&data);
    let mut c = Command::new(BIN);
    c.args([
        "--data-dir",
        d,
        "register",
        "org/m",
        "--private",
        "--cap-file",
    ])
    .arg(&cap_file);
    run_ok(c);
    assert_eq!(
        http_status(&format!("{}/org/m/resolve/main/config.json", gw.url)),
        404
    );
    gw.stop();
    for p in [
        "gateway/gateway.redb",
        "gateway/admin.token",
        "store/store.redb",
    ] {
        assert!(data.join(p).exists(), "{p}");
    }
    assert_private_tree(&data, &[]);
    for p in ["a", "a/b"] {
        let mode = fs::metadata(tmp.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{p}");
    }
}

#[test]
fn capabilities_come_from_files_or_stdin_and_a_private_repo_stays_private() {
    let n = Node::new("1GiB");
    let src = sample(n.tmp.path());
    let cap = n.add(&src).to_string();
    let cap_file = n.tmp.path().join("cap");
    fs::write(&cap_file, format!("  {cap}\n")).unwrap();
    let cf = cap_file.to_str().unwrap();
    // From a file: `ls`, and `get` of one file (the one argument is then the file).
    let ls = n.ok(&["ls", "--cap-file", cf]);
    assert!(ls.contains("config.json"), "{ls}");
    let one = n.tmp.path().join("one.json");
    n.ok(&[
        "get",
        "--cap-file",
        cf,
        "config.json",
        "-o",
        one.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(&one).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );
    // From standard input: the whole artifact.
    let out = n.tmp.path().join("out");
    let mut child = n
        .cmd(&["get", "--cap-file", "-", "-o", out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cap.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&src, &out);
    // Bad capability files say what is wrong, without echoing anything.
    let empty = n.tmp.path().join("empty");
    fs::write(&empty, "\n").unwrap();
    let e = n.fails(&["ls", "--cap-file", empty.to_str().unwrap()]);
    assert!(e.contains("is empty"), "{e}");
    let big = n.tmp.path().join("big");
    fs::write(&big, "x".repeat(10_000)).unwrap();
    let e = n.fails(&["ls", "--cap-file", big.to_str().unwrap()]);
    assert!(e.contains("longer than 4096 bytes"), "{e}");
    let e = n.fails(&["get", "--cap-file", cf, "a", "b", "-o", "x"]);
    assert!(e.contains("at most one argument"), "{e}");

    // Registering again without --private or --public keeps the repository as it is.
    let gw = LocalGateway::start(&n.dir);
    let url = format!("{}/org/m/resolve/main/config.json", gw.url);
    let reg = |extra: &[&str]| {
        let mut args = vec!["register", "org/m", "--cap-file", cf];
        args.extend_from_slice(extra);
        let o = n.run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let (out, _) = reg(&[]);
    assert!(out.contains("public"), "{out}");
    assert_eq!(http_status(&url), 200);
    let (out, _) = reg(&["--private"]);
    assert!(out.contains("private"), "{out}");
    assert_eq!(http_status(&url), 404);
    let (out, err) = reg(&[]);
    assert!(out.contains("private"), "{out}");
    assert!(err.contains("pass --public"), "{err}");
    assert_eq!(
        http_status(&url),
        404,
        "a re-registration opened the repository"
    );
    let (out, _) = reg(&["--public"]);
    assert!(out.contains("public"), "{out}");
    assert_eq!(http_status(&url), 200);
    let e = n.fails(&[
        "register",
        "org/m",
        "--cap-file",
        cf,
        "--private",
        "--public",
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
    gw.stop();
}
