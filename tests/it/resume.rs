//! Resumable reads: `cairn get` killed part way and run again, and HTTP clients resuming
//! through the gateway with a `Range` request.
//!
//! Goal: a re-run continues from the verified data on disk and fetches only the rest, on the
//! network and from the local store; a partial file is never trusted blindly (a flipped byte
//! costs its chunk, another file's bytes cost everything, and the output is right either way);
//! `curl -C -` and `huggingface_hub`'s own retry after a dropped connection get exactly the rest
//! of a file from the gateway. Method: real processes (node, gateway and `cairn get` processes,
//! `curl`, the unmodified `huggingface_hub` in Python), SIGKILL when the partial file holds about
//! half the output (its size polled), the amounts a re-run reports parsed from its stderr and
//! checked against the chunk lengths of the manifest, bytes compared with the source (`diff -r`,
//! `sha256sum`), and a TCP proxy built in the test that cuts the client's connection once.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::devnet::*;
use crate::gateway::{metric, metrics, python_against, resolve};
use crate::util::*;

/// What a `cairn get` run reported: (bytes found verified on disk, bytes fetched). A run that
/// found nothing on disk prints no `resumed:` line.
fn resumed(stderr: &str) -> (u64, u64) {
    let Some(line) = stderr.lines().find_map(|l| l.strip_prefix("resumed: ")) else {
        let fetched = stderr
            .lines()
            .find(|l| l.starts_with("fetched and verified"))
            .unwrap_or_else(|| panic!("no report in {stderr}"));
        assert!(!fetched.is_empty());
        return (0, u64::MAX);
    };
    // "131.0 MiB verified on disk (137363456 bytes), fetched 125.0 MiB (131072000 bytes)"
    let exact: Vec<u64> = line
        .split('(')
        .skip(1)
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(exact.len(), 2, "{line}");
    (exact[0], exact[1])
}

/// Waits until `partial` holds at least `at` bytes, then SIGKILLs `child`. Returns the size seen
/// at the kill, or None when the child finished first (a read faster than the polling).
fn kill_at(mut child: Child, partial: &Path, at: u64) -> Option<u64> {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let len = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if len >= at {
            child.kill().unwrap();
            child.wait().unwrap();
            return Some(len);
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "cairn get failed before it was killed: {st}");
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "the partial file did not reach {at} bytes"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The plaintext length of each chunk of `m` (its sealed length less the 16-byte GCM tag).
fn chunk_lens(m: &cairn_artifact::Manifest) -> Vec<u64> {
    m.chunks().iter().map(|c| c.sealed_len - 16).collect()
}

fn sha256(path: &Path) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

/// A whole artifact fetched from a 5-node devnet, SIGKILLed when its large file's partial file
/// holds half of it, fetched again: the re-run reports the verified half and fetches about
/// the other half, and the output is byte-identical. Without resuming the re-run fetches
/// everything (and prints no `resumed:` line).
#[test]
fn network_get_killed_halfway_resumes_and_fetches_about_half() {
    let net = Devnet::with_nodes(5);
    let src = net.tmp.path().join("model");
    fs::create_dir_all(src.join("small")).unwrap();
    let size = 160 << 20;
    fs::write(src.join("weights.bin"), pseudo_random(71, size)).unwrap();
    fs::write(src.join("small/config.json"), pseudo_random(72, 4321)).unwrap();
    let total = size as u64 + 4321;
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, &src, &[]));
    let cap = cap_line(&out);

    let dst = net.tmp.path().join("out");
    let partial = dst.join(".weights.bin.cairn-partial");
    let child = net
        .get_cmd(&cap, &dst)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = kill_at(child, &partial, size as u64 / 2)
        .expect("a 160 MiB network read finished within a millisecond of reaching half");
    assert!(!dst.join("weights.bin").exists());
    // The small file was finished before the kill; it is verified, not fetched again.
    assert!(dst.join("small/config.json").exists());

    let (_, err) = ok(net.get_cmd(&cap, &dst));
    eprintln!("killed at {seen} bytes; re-run: {err}");
    let (verified, fetched) = resumed(&err);
    assert_same_tree(&src, &dst);
    assert!(!partial.exists());
    assert_eq!(verified + fetched, total, "{err}");
    assert!(verified > 0 && verified <= seen + 4321, "{err}");
    let share = fetched as f64 / total as f64;
    assert!(
        (0.25..=0.75).contains(&share),
        "the re-run fetched {fetched} of {total} bytes: {err}"
    );
}

/// The same from the local store, one file: killed at half, the re-run fetches about half.
/// A local read is fast; a run that finishes before the kill lands is tried again (bounded).
#[test]
fn local_get_killed_halfway_resumes_and_fetches_about_half() {
    let n = Node::new("10GiB");
    let f = n.tmp.path().join("weights.bin");
    let size = 192u64 << 20;
    fs::write(&f, pseudo_random(73, size as usize)).unwrap();
    let cap = n.add(&f).to_string();
    let dst = n.tmp.path().join("out.bin");
    let partial = n.tmp.path().join(".out.bin.cairn-partial");
    let mut killed = None;
    for _ in 0..5 {
        let _ = fs::remove_file(&dst);
        let child = n
            .cmd(&["get", &cap, "weights.bin", "-o", dst.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        killed = kill_at(child, &partial, size / 2);
        if killed.is_some() {
            break;
        }
    }
    let seen = killed.expect("five local reads all finished before the kill landed");
    assert!(!dst.exists());
    let o = n.run(&["get", &cap, "weights.bin", "-o", dst.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    eprintln!("killed at {seen} bytes; re-run: {err}");
    let (verified, fetched) = resumed(&err);
    assert_eq!(sha256(&dst), sha256(&f));
    assert_eq!(verified + fetched, size, "{err}");
    assert!(verified > 0 && verified <= seen, "{err}");
    let share = fetched as f64 / size as f64;
    assert!((0.25..=0.75).contains(&share), "{err}");
}

/// A partial file with a flipped byte in one chunk: that chunk is fetched again, every other
/// whole chunk in the partial file is kept, the output is right. A partial file of other bytes,
/// longer than the file: nothing is kept, it is cut to size, the output is right. A finished
/// output fetched again is verified in place and nothing is fetched. Without the hash check the
/// flipped byte would reach the output; without resuming the amounts reported would differ.
#[test]
fn a_corrupted_partial_file_costs_only_its_bad_chunk() {
    let n = Node::new("10GiB");
    let f = n.tmp.path().join("data.bin");
    let data = pseudo_random(74, 24 << 20);
    fs::write(&f, &data).unwrap();
    let cap = n.add(&f);
    let lens = chunk_lens(&n.manifest(&cap));
    assert!(lens.len() >= 8, "24 MiB in {} chunks", lens.len());
    let cap = cap.to_string();
    let dst = n.tmp.path().join("out.bin");
    let partial = n.tmp.path().join(".out.bin.cairn-partial");
    let get = || {
        let o = n.run(&["get", &cap, "data.bin", "-o", dst.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err
    };

    // 60 % of the file on disk, a byte flipped inside chunk 1.
    let cut = data.len() * 6 / 10;
    let mut bytes = data[..cut].to_vec();
    bytes[lens[0] as usize + 5] ^= 0x10;
    fs::write(&partial, &bytes).unwrap();
    let mut whole = 0;
    let mut kept = 0;
    for (i, len) in lens.iter().enumerate() {
        if whole + len > cut as u64 {
            break;
        }
        whole += len;
        if i != 1 {
            kept += len;
        }
    }
    let err = get();
    assert_eq!(
        resumed(&err),
        (kept, data.len() as u64 - kept),
        "chunk 1 and everything past the last whole chunk are fetched: {err}"
    );
    assert!(fs::read(&dst).unwrap() == data);
    assert!(!partial.exists());

    // Another file's bytes, longer than this one.
    fs::remove_file(&dst).unwrap();
    fs::write(&partial, pseudo_random(75, data.len() + 3000)).unwrap();
    let err = get();
    assert!(!err.contains("resumed:"), "{err}");
    assert!(fs::read(&dst).unwrap() == data);

    // Run again with the output in place: verified, nothing fetched.
    let err = get();
    assert_eq!(resumed(&err), (data.len() as u64, 0), "{err}");
}

/// A local-store data directory with `file` (named `weights.bin`, `len` pseudo-random bytes)
/// added and registered as `demo/resume` on a gateway over it.
fn local_gateway(len: usize) -> (Node, PathBuf, DevGateway) {
    let n = Node::new("10GiB");
    let src = n.tmp.path().join("model");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("weights.bin");
    fs::write(&f, pseudo_random(76, len)).unwrap();
    let cap = n.add(&src).to_string();
    let gw = DevGateway::start_local(&n.dir);
    gw.register("demo/resume", &cap, &[]);
    (n, f, gw)
}

/// `curl -C -` on a partial download of N bytes asks for `bytes=N-` and the gateway answers
/// 206 with exactly the rest: Content-Range and Content-Length say so, the gateway's body-byte
/// counter grows by exactly size - N, and the finished file's sha256 is the source's.
#[test]
fn curl_resumes_a_partial_download_through_the_gateway() {
    let size = (48 << 20) + 777;
    let (n, src, gw) = local_gateway(size);
    let data = fs::read(&src).unwrap();
    let have = 19 << 20;
    let out = n.tmp.path().join("curl.bin");
    fs::write(&out, &data[..have]).unwrap();
    let headers = n.tmp.path().join("headers.txt");
    let sent = "cairn_gateway_body_bytes_sent_total";
    let before = metric(&metrics(&gw), sent);
    let o = std::process::Command::new("curl")
        .args(["-sS", "-f", "--max-time", "120", "-C", "-", "-o"])
        .arg(&out)
        .arg("-D")
        .arg(&headers)
        .arg(resolve(&gw, "demo/resume", "weights.bin"))
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let h = fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert!(
        h.contains(&format!("content-range: bytes {have}-{}/{size}", size - 1)),
        "{h}"
    );
    assert!(
        h.contains(&format!("content-length: {}", size - have)),
        "{h}"
    );
    assert_eq!(sha256(&out), sha256(&src));
    let after = metric(&metrics(&gw), sent);
    assert_eq!(after - before, (size - have) as u64);
}

/// What the cutting proxy saw.
#[derive(Default)]
struct ProxyLog {
    /// Bytes sent to the client on the connection that was cut, up to the cut.
    before_cut: u64,
    /// Bytes sent to the client after the cut, on any connection.
    after_cut: u64,
    /// Whether the cut happened.
    cut: bool,
    /// The start of what the client sent after the cut (its requests; capped).
    requests_after: Vec<u8>,
}

/// Bytes of requests kept for inspection after the cut.
const REQUESTS_KEPT_MAX: usize = 64 << 10;
/// Connections the proxy accepts before it stops.
const PROXY_CONNS_MAX: usize = 32;

/// A TCP proxy to `upstream` that closes the first connection to have sent `cut_at` bytes to
/// its client, once, and counts what it forwards. Each direction of each connection is a thread;
/// every socket has a read timeout, so no thread outlives a stalled peer for long.
fn cutting_proxy(upstream: &str, cut_at: u64) -> (String, Arc<Mutex<ProxyLog>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(ProxyLog::default()));
    let upstream = upstream.trim_start_matches("http://").to_string();
    let l = log.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().take(PROXY_CONNS_MAX) {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            }
            // Client to gateway: requests, kept for inspection once the cut has happened.
            let (mut c, mut s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let lu = l.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(k) = c.read(&mut buf) {
                    if k == 0 || s.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    let mut g = lu.lock().unwrap();
                    if g.cut {
                        let room = REQUESTS_KEPT_MAX.saturating_sub(g.requests_after.len());
                        g.requests_after.extend_from_slice(&buf[..k.min(room)]);
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
            // Gateway to client: counted; the first connection past `cut_at` is cut.
            let (mut c, mut s) = (client, server);
            let ld = l.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0u64;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 || c.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    sent += k as u64;
                    let mut g = ld.lock().unwrap();
                    if g.cut {
                        g.after_cut += k as u64;
                    } else if sent >= cut_at {
                        g.cut = true;
                        g.before_cut = sent;
                        break;
                    }
                }
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
            });
        }
    });
    (url, log)
}

/// The unmodified `huggingface_hub` (2.4.0) downloads a 64 MiB file through a proxy that cuts
/// its connection after 24 MiB. Its own retry, in the same process, asks for `bytes=N-` where N
/// is what it wrote; the gateway serves the rest and only the rest (what the proxy forwards after
/// the cut is size - N plus one response head), and the file's sha256 is the source's.
///
/// The client writes its body in pieces of `DOWNLOAD_CHUNK_SIZE` (10 MiB) and counts only what
/// it wrote, so N is a multiple of 10 MiB: a cut within the first 10 MiB makes it start again
/// from 0 without a Range (seen with a cut at 4 MiB), and the bytes it had buffered are fetched
/// again. The cut is placed past two such pieces.
#[test]
fn huggingface_hub_resumes_after_a_cut_connection_through_the_gateway() {
    let size = (64 << 20) + 4099;
    let (n, src, gw) = local_gateway(size);
    let cut_at = (24u64 << 20) + 12345;
    let (proxy, log) = cutting_proxy(&gw.url, cut_at);
    let hf_home = n.tmp.path().join("hf-home");
    let script = r#"
import hashlib
from huggingface_hub import hf_hub_download
p = hf_hub_download("demo/resume", "weights.bin")
h = hashlib.sha256()
with open(p, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())
"#;
    let out = python_against(&proxy, &hf_home, "huggingface_hub", script);
    assert_eq!(out.trim(), sha256(&src), "{out}");

    let g = log.lock().unwrap();
    assert!(g.cut, "the proxy never cut the connection");
    let requests = String::from_utf8_lossy(&g.requests_after).to_ascii_lowercase();
    let from: u64 = requests
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .and_then(|r| r.trim().strip_suffix('-'))
        .unwrap_or_else(|| panic!("no resuming range request after the cut:\n{requests}"))
        .parse()
        .unwrap();
    // The client holds the whole 10 MiB pieces of what reached it before the cut.
    let piece = 10u64 << 20;
    assert!(
        from > 0
            && from.is_multiple_of(piece)
            && from <= g.before_cut
            && g.before_cut - from < piece + 4096,
        "resumed from {from} after {} bytes",
        g.before_cut
    );
    let rest = size as u64 - from;
    assert!(
        g.after_cut >= rest && g.after_cut <= rest + (16 << 10),
        "{} bytes forwarded after the cut for a rest of {rest}",
        g.after_cut
    );
}
