//! The local store through the `cairn` command line: round trips at boundary sizes, dedup, no
//! plaintext at rest, tampering, a publisher killed mid-add, quota, and bad input.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_artifact::{CHUNK_MAX, CHUNK_MIN};

use crate::util::*;

/// Sizes that exercise the chunker's edges.
const INTERESTING_SIZES: &[(usize, &str)] = &[
    (0, "empty file: no chunks at all"),
    (1, "one byte: one tiny chunk, one-byte shards"),
    (CHUNK_MIN - 1, "below the smallest cut: one chunk"),
    (CHUNK_MIN, "exactly the smallest chunk"),
    (CHUNK_MIN + 1, "one byte past it"),
    (CHUNK_MAX, "exactly the largest chunk"),
    (CHUNK_MAX + 1, "one past the CDC maximum: a forced cut"),
];

#[test]
fn round_trip_boundary_sizes_and_single_files() {
    let n = Node::new("10GiB");
    let src = n.tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for (i, (len, _why)) in INTERESTING_SIZES.iter().enumerate() {
        fs::write(
            src.join(format!("f{i:02}-{len}.bin")),
            pseudo_random(i as u64, *len),
        )
        .unwrap();
    }
    let cap = n.add(&src);
    let out = n.tmp.path().join("out");
    n.ok(&["get", &cap.to_string(), "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);

    // One file by path, to a file and to stdout.
    let name = format!("f05-{CHUNK_MAX}.bin");
    let one = n.tmp.path().join("one.bin");
    n.ok(&["get", &cap.to_string(), &name, "-o", one.to_str().unwrap()]);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join(&name)).unwrap());
    let o = n
        .cmd(&["get", &cap.to_string(), "f01-1.bin", "-o", "-"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, fs::read(src.join("f01-1.bin")).unwrap());

    // ls shows every file with its size.
    let ls = n.ok(&["ls", &cap.to_string()]);
    for (i, (len, _)) in INTERESTING_SIZES.iter().enumerate() {
        assert!(ls.contains(&format!("{len} f{i:02}-{len}.bin")), "{ls}");
    }
    let e = n.fails(&[
        "get",
        &cap.to_string(),
        "nope.bin",
        "-o",
        one.to_str().unwrap(),
    ]);
    assert!(e.contains("has no file nope.bin"), "{e}");
}

#[test]
fn round_trip_100_mib_and_a_nested_folder_of_small_files() {
    let n = Node::new("10GiB");
    let src = n.tmp.path().join("model");
    for d in 0..6 {
        let dir = src.join(format!("shard-{d}/nested/deeper"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            fs::write(
                dir.join(format!("file-{f}.json")),
                pseudo_random(d * 100 + f, (f * 37 + d * 11) as usize),
            )
            .unwrap();
        }
    }
    fs::write(src.join("model.safetensors"), pseudo_random(7, 100 << 20)).unwrap();
    let cap = n.add(&src);
    let out = n.tmp.path().join("out");
    n.ok(&["get", &cap.to_string(), "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    assert!(n.ok(&["verify"]).contains("verified"));
}

#[test]
fn changing_one_mib_in_the_middle_adds_at_most_three_chunks() {
    let n = Node::new("10GiB");
    let f = n.tmp.path().join("weights.bin");
    let mut data = pseudo_random(42, 256 << 20);
    fs::write(&f, &data).unwrap();
    n.add(&f);
    let before = n.stat("shards");
    let mid = data.len() / 2;
    data[mid..mid + (1 << 20)].copy_from_slice(&pseudo_random(43, 1 << 20));
    fs::write(&f, &data).unwrap();
    let cap2 = n.add(&f);
    let new_shards = n.stat("shards") - before;
    let n_per_chunk = 5;
    assert!(new_shards > 0, "the change must produce new chunks");
    assert!(
        new_shards <= 3 * n_per_chunk,
        "{new_shards} new shards = more than 3 new chunks"
    );
    // Both versions read back.
    let out = n.tmp.path().join("v2");
    n.ok(&[
        "get",
        &cap2.to_string(),
        "weights.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(fs::read(&out).unwrap() == data);
}

#[test]
fn no_plaintext_at_rest() {
    let n = Node::new("10GiB");
    let marker = b"CAIRN-PLAINTEXT-MARKER-5d1e0c9b7a";
    let src = n.tmp.path().join("secret-folder");
    fs::create_dir_all(&src).unwrap();
    let mut body = pseudo_random(1, 3 << 20);
    for i in (0..body.len() - marker.len()).step_by(100_003) {
        body[i..i + marker.len()].copy_from_slice(marker);
    }
    fs::write(src.join("CAIRN-PLAINTEXT-MARKER-5d1e0c9b7a.txt"), &body).unwrap();
    fs::write(src.join("small.txt"), marker).unwrap();
    let cap = n.add(&src);
    let mut checked = 0;
    for f in files_under(&n.dir) {
        let bytes = fs::read(&f).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "plaintext marker found in {}",
            f.display()
        );
        checked += 1;
    }
    assert!(checked > 10, "only {checked} files looked at");
    // And the data is still there for whoever holds the capability.
    let out = n.tmp.path().join("out");
    n.ok(&["get", &cap.to_string(), "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
}

#[test]
fn tampered_shards_are_survived_or_named_never_served() {
    let n = Node::new("10GiB");
    let f = n.tmp.path().join("data.bin");
    let data = pseudo_random(9, 12 << 20);
    fs::write(&f, &data).unwrap();
    let cap = n.add(&f);
    let m = n.manifest(&cap);
    assert!(
        m.chunks().len() >= 4,
        "need several chunks, got {}",
        m.chunks().len()
    );
    // Chunk 0: flip a byte in data shard 0 and truncate data shard 1 (2 of 5 bad).
    let c0 = &m.chunks()[0].shards;
    let p = n.shard_file(&c0[0]);
    let mut b = fs::read(&p).unwrap();
    b[200] ^= 0x01;
    fs::write(&p, &b).unwrap();
    let p = n.shard_file(&c0[1]);
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() / 2]).unwrap();
    // Chunk 1: delete a data shard file.
    fs::remove_file(n.shard_file(&m.chunks()[1].shards[2])).unwrap();
    let out = n.tmp.path().join("out.bin");
    n.ok(&[
        "get",
        &cap.to_string(),
        "data.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        fs::read(&out).unwrap() == data,
        "reconstructed bytes differ"
    );
    let v = n.fails(&["verify"]);
    assert!(v.contains("3 of"), "{v}");

    // Chunk 2: three of five shards bad is one more than the code can bear: a clear error naming
    // the shards, and no output file.
    let c2 = &m.chunks()[2].shards;
    for cid in &c2[..3] {
        let p = n.shard_file(cid);
        let mut b = fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last / 2] ^= 0x80;
        fs::write(&p, &b).unwrap();
    }
    let out2 = n.tmp.path().join("out2.bin");
    let e = n.fails(&[
        "get",
        &cap.to_string(),
        "data.bin",
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(e.contains(&cap.cid.to_string()), "{e}");
    assert!(e.contains("chunk 2"), "{e}");
    for cid in &c2[..3] {
        assert!(
            e.contains(&cid.to_string()),
            "error does not name {cid}: {e}"
        );
    }
    assert!(
        !out2.exists(),
        "a failed get left a file that looks complete"
    );
    // What was written before chunk 2 (chunks opened together with it may not be) stays in the
    // partial file, owner-only, for a later run to resume from: a prefix of the file, nothing
    // past chunk 1. An empty one is removed.
    let leftovers: Vec<_> = fs::read_dir(n.tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(
        leftovers.is_empty() || leftovers == [".out2.bin.cairn-partial"],
        "{leftovers:?}"
    );
    for name in leftovers {
        use std::os::unix::fs::PermissionsExt;
        let partial = n.tmp.path().join(name);
        let kept = fs::read(&partial).unwrap();
        // A chunk's plaintext is its sealed length less the 16-byte GCM tag.
        let before_chunk_2: u64 = m.chunks()[..2].iter().map(|c| c.sealed_len - 16).sum();
        assert!(!kept.is_empty() && kept.len() as u64 <= before_chunk_2);
        assert!(kept == data[..kept.len()]);
        assert_eq!(
            fs::metadata(&partial).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn publisher_killed_mid_add_leaves_a_consistent_store() {
    let n = Node::new("10GiB");
    let f = n.tmp.path().join("big.bin");
    {
        let mut w = std::io::BufWriter::new(fs::File::create(&f).unwrap());
        for i in 0..48 {
            w.write_all(&pseudo_random(100 + i, 16 << 20)).unwrap();
        }
    }
    let mut child = n
        .cmd(&["add", f.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shards_dir = n.dir.join("store/shards");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = files_under(&shards_dir).len();
        if written >= 40 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "add finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "add wrote no shards in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "add finished before it could be killed"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();

    // Nothing visible, everything readable that is recorded.
    assert_eq!(n.ok(&["pins"]).trim(), "");
    assert_eq!(n.stat("manifests"), 0);
    assert!(n.ok(&["verify"]).contains("verified"));
    let gc = n.ok(&["gc"]);
    assert!(
        !gc.starts_with("removed 0 shards, 0 manifests, 0 leftover"),
        "gc reclaimed nothing: {gc}"
    );
    assert_eq!(n.stat("shards"), 0);
    assert_eq!(n.stat("used"), 0);
    assert!(files_under(&shards_dir).is_empty());

    let cap = n.add(&f);
    let out = n.tmp.path().join("out.bin");
    n.ok(&[
        "get",
        &cap.to_string(),
        "big.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    let o = std::process::Command::new("cmp")
        .arg(&f)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "fetched file differs");
}

#[test]
fn quota_reached_is_a_clear_error_and_leaves_nothing() {
    let n = Node::new("8MiB");
    let small = n.tmp.path().join("small.bin");
    fs::write(&small, pseudo_random(3, 1 << 20)).unwrap();
    let cap = n.add(&small);
    let used = n.stat("used");
    let shards = n.stat("shards");
    let big = n.tmp.path().join("big.bin");
    fs::write(&big, pseudo_random(4, 20 << 20)).unwrap();
    let e = n.fails(&["add", big.to_str().unwrap()]);
    assert!(e.contains("quota exceeded"), "{e}");
    assert!(e.contains("nothing was published"), "{e}");
    assert_eq!(n.stat("used"), used);
    assert_eq!(n.stat("shards"), shards);
    assert_eq!(n.stat("manifests"), 1);
    // The earlier artifact is untouched.
    let out = n.tmp.path().join("out.bin");
    n.ok(&[
        "get",
        &cap.to_string(),
        "small.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&small).unwrap());
}

#[test]
fn pins_unpin_and_gc() {
    let n = Node::new("1GiB");
    let f = n.tmp.path().join("a.bin");
    fs::write(&f, pseudo_random(5, 2 << 20)).unwrap();
    let cap = n.add(&f);
    let pins = n.ok(&["pins"]);
    assert!(
        pins.contains(&cap.cid.to_string()) && pins.contains("forever"),
        "{pins}"
    );
    assert!(n.ok(&["gc"]).starts_with("removed 0 shards"));
    n.ok(&["unpin", &cap.cid.to_string()]);
    let e = n.fails(&["unpin", &cap.cid.to_string()]);
    assert!(e.contains("is not pinned"), "{e}");
    assert!(n.ok(&["gc"]).contains("1 manifests"));
    assert_eq!(n.stat("shards"), 0);
    let e = n.fails(&[
        "get",
        &cap.to_string(),
        "-o",
        n.tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("is not in the store"), "{e}");
    let e = n.fails(&["pin", &cap.cid.to_string()]);
    assert!(e.contains("is not in the store"), "{e}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let n = Node::new("1GiB");
    let f = n.tmp.path().join("a.bin");
    fs::write(&f, b"hello").unwrap();
    let cap = n.add(&f).to_string();
    let out = n.tmp.path().join("o");
    let o = out.to_str().unwrap();
    for bad in [
        "",
        "cairn-read1:",
        "garbage",
        &cap[..cap.len() - 3],
        &cap.replace("cairn-read1:", "cairn-read2:"),
    ] {
        let e = n.fails(&["get", bad, "-o", o]);
        assert!(e.contains("invalid read capability"), "{bad:?}: {e}");
    }
    // A well-formed capability with the wrong key: authentication fails, nothing is written.
    let (head, _) = cap.rsplit_once(':').unwrap();
    let wrong = format!("{head}:{}", "a".repeat(52));
    let e = n.fails(&["get", &wrong, "-o", o]);
    assert!(e.contains("failed authentication"), "{e}");
    assert!(!out.exists());

    let e = n.fails(&["add", n.tmp.path().join("missing").to_str().unwrap()]);
    assert!(e.contains("cannot add") && e.contains("missing"), "{e}");
    // A file that cannot be read (reading /proc/self/mem at offset 0 fails with EIO).
    let e = n.fails(&["add", "/proc/self/mem"]);
    assert!(e.contains("cannot add /proc/self/mem"), "{e}");
    let e = n.fails(&["add", f.to_str().unwrap(), "--name", "../evil"]);
    assert!(e.contains("org/name"), "{e}");
    let e = n.fails(&["add", f.to_str().unwrap(), "-k", "0"]);
    assert!(e.contains("invalid erasure parameters"), "{e}");
    // A symlink inside a folder is refused rather than followed.
    let d = n.tmp.path().join("withlink");
    fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
    let e = n.fails(&["add", d.to_str().unwrap()]);
    assert!(e.contains("symbolic links"), "{e}");
    assert_eq!(n.stat("manifests"), 1);

    let other = tempfile::tempdir().unwrap();
    let o2 = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(other.path().join("none"))
        .arg("stat")
        .output()
        .unwrap();
    assert_eq!(o2.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o2.stderr).contains("cairn init"));
}

#[test]
fn secrets_are_owner_only_and_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new("1GiB");
    for f in ["node.key", "convergence.secret"] {
        let mode = fs::metadata(n.dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} has mode {mode:o}");
    }
    let secret = fs::read(n.dir.join("convergence.secret")).unwrap();
    let f = n.tmp.path().join("a.bin");
    fs::write(&f, b"x").unwrap();
    let o = n.run(&["add", f.to_str().unwrap()]);
    for stream in [&o.stdout, &o.stderr] {
        let text = String::from_utf8_lossy(stream);
        for enc in [
            data_encoding::HEXLOWER.encode(&secret),
            data_encoding::BASE32_NOPAD.encode(&secret).to_lowercase(),
        ] {
            assert!(!text.contains(&enc), "secret printed");
        }
    }
    // A secret file readable by others is refused.
    fs::set_permissions(
        n.dir.join("convergence.secret"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = n.fails(&["add", f.to_str().unwrap()]);
    assert!(e.contains("readable by other users"), "{e}");
}

/// Two artifacts that share a file (convergent keys: the same chunks, the same shards) and are
/// pinned for different times: when one pin lapses, gc removes that artifact's manifest and the
/// shards only it needed, and keeps every shard the other still needs, which reads back intact.
/// A gc that counted shards per artifact wrongly would delete live data here. `--pin-for 1s`
/// lapses on its own: the test waits for `cairn pins` to say so (bounded), not for a guessed
/// time.
#[test]
fn gc_keeps_shared_chunks_when_a_timed_pin_lapses() {
    let n = Node::new("1GiB");
    let shared = pseudo_random(31, (3 << 20) + 5);
    let (a, b) = (n.tmp.path().join("a"), n.tmp.path().join("b"));
    for (dir, own) in [(&a, 32), (&b, 33)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("shared.bin"), &shared).unwrap();
        fs::write(dir.join("own.bin"), pseudo_random(own, 700_000)).unwrap();
    }
    let cap_a = cap_of(&n.ok(&["add", a.to_str().unwrap(), "--pin-for", "1s"]));
    let cap_b = cap_of(&n.ok(&["add", b.to_str().unwrap(), "--pin-for", "1h"]));
    let shards = |cap: &cairn_artifact::ReadCap| -> HashSet<cairn_artifact::Cid> {
        n.manifest(cap).shard_cids().copied().collect()
    };
    let (of_a, of_b) = (shards(&cap_a), shards(&cap_b));
    let common = of_a.intersection(&of_b).count();
    assert!(
        common >= 5,
        "the shared file's chunks are shared: {common} shards"
    );
    let only_a = of_a.difference(&of_b).count();
    assert!(only_a >= 5, "{only_a} shards only A needs");
    assert_eq!(n.stat("shards"), of_a.union(&of_b).count() as u64);

    // Wait for A's pin to lapse (whole seconds: at most 2 s), as `cairn pins` reports it.
    let cid_a = cap_a.cid.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pins = n.ok(&["pins"]);
        let line = pins
            .lines()
            .find(|l| l.starts_with(&cid_a))
            .unwrap()
            .to_string();
        if line.ends_with("lapsed") {
            break;
        }
        assert!(line.contains("expires in"), "{line}");
        assert!(
            Instant::now() < deadline,
            "a 1 s pin has not lapsed in 30 s: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gc = n.ok(&["gc"]);
    assert!(
        gc.starts_with(&format!("removed {only_a} shards, 1 manifests")),
        "{gc}"
    );
    assert_eq!(n.stat("shards"), of_b.len() as u64);
    assert_eq!(n.stat("manifests"), 1);
    let store = n.store();
    for c in &of_b {
        store
            .get_shard(c)
            .unwrap_or_else(|e| panic!("a shard B needs is gone: {e}"));
    }
    for c in of_a.difference(&of_b) {
        assert!(
            !store.has_shard(c).unwrap(),
            "{c} only A needed and survived gc"
        );
    }
    drop(store);
    let out = n.tmp.path().join("out");
    n.ok(&["get", &cap_b.to_string(), "-o", out.to_str().unwrap()]);
    assert_same_tree(&b, &out);
    let e = n.fails(&[
        "get",
        &cap_a.to_string(),
        "-o",
        n.tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("is not in the store"), "{e}");
    // B's pin has not lapsed: a second gc removes nothing.
    assert!(n.ok(&["gc"]).starts_with("removed 0 shards, 0 manifests"));
}

/// `cairn gateway` refuses, before it serves anything, plain HTTP on an address that is not
/// loopback (saying how to fix it) and a private key other users can read (with the `chmod`
/// that fixes it); `--insecure-http` and `--tls-cert` cannot be combined.
#[test]
fn gateway_refuses_clear_credentials_on_a_network_and_an_open_key() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new("1GiB");
    let e = n.fails(&["gateway", "--listen", "0.0.0.0:0"]);
    assert!(
        e.contains("not a loopback address")
            && e.contains("--tls-cert")
            && e.contains("--insecure-http"),
        "{e}"
    );
    let tls = cairn_gateway::write_local_tls(&n.tmp.path().join("tls"), Duration::from_secs(3600))
        .unwrap();
    fs::set_permissions(&tls.files.key, fs::Permissions::from_mode(0o644)).unwrap();
    let (cert, key) = (
        tls.files.cert.to_str().unwrap(),
        tls.files.key.to_str().unwrap(),
    );
    let e = n.fails(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert!(e.contains(&format!("chmod 600 {key}")), "{e}");
    assert!(
        !n.tmp.path().join("data/gateway/gateway.addr").exists(),
        "a refused gateway announced an address"
    );
    let e = n.fails(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--insecure-http",
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
}
