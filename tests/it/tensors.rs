//! Tensor-level reads of safetensors files, through the gateway and the command line, from the
//! network and from the local store.
//!
//! Goal: a reader that wants some tensors of a large safetensors file gets a valid safetensors
//! file of exactly those tensors and fetches only their chunks and the header's, not the
//! file's; a file that is not safetensors, a hostile header (a length over the limit, offsets
//! past the end) or a pattern that selects nothing gets a clear error and no crash. Method: the
//! file is written by the Python `safetensors` package (95 tensors, 63 MiB) and every result
//! is loaded by it and compared tensor by tensor with the original; the chunks fetched are
//! counted (the chunk count `cairn get --tensor` prints, the gateway's metric of shard
//! requests) and compared with the chunks the header and the selected tensors cover, computed
//! here from the file's bytes with the store's chunker.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_artifact::Chunker;

use crate::devnet::*;
use crate::util::*;

/// Bound on every HTTP phase and Python run.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Writes the test model with the Python package: 31 layers of a 2 MiB F32 weight, an F16 bias
/// and three I64 steps, a 1 MiB U8 embedding and an empty F32 norm, metadata kept; and a file
/// of 4000 tiny tensors.
const WRITE: &str = r#"
import sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(7)
t = {}
for i in range(31):
    t[f"model.layers.{i}.mlp.weight"] = rng.standard_normal((512, 1024), dtype=np.float32)
    t[f"model.layers.{i}.mlp.bias"] = rng.standard_normal(1024).astype(np.float16)
    t[f"model.layers.{i}.steps"] = np.arange(i, i + 3, dtype=np.int64)
t["model.embed_tokens.weight"] = rng.integers(0, 255, (1024, 1024), dtype=np.uint8)
t["model.norm.weight"] = np.zeros((0,), dtype=np.float32)
save_file(t, sys.argv[1], metadata={"format": "np", "source": "cairn test"})
# A header longer than the first read (4000 small tensors, some 250 KB of JSON).
save_file({f"t.{i}": np.full((2,), i % 251, dtype=np.uint8) for i in range(4000)}, sys.argv[2])
"#;

/// Loads the original and the part with the Python package: the part holds exactly the
/// tensors the patterns select (by `fnmatch`, an oracle of its own), each equal in dtype,
/// shape and values, and the same metadata. Prints `ok N`.
const CHECK: &str = r#"
import sys, json, fnmatch
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
src, part, pats = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
a, b = load_file(src), load_file(part)
want = sorted(n for n in a if any(fnmatch.fnmatchcase(n, p) for p in pats))
assert sorted(b) == want, (sorted(b), want)
for n in want:
    assert b[n].dtype == a[n].dtype and b[n].shape == a[n].shape, n
    assert np.array_equal(a[n], b[n]), n
with safe_open(src, "np") as f, safe_open(part, "np") as g:
    assert f.metadata() == g.metadata(), (f.metadata(), g.metadata())
print("ok", len(want))
"#;

/// Runs a Python script with `safetensors` importable; returns stdout.
fn python(script: &str, args: &[&str]) -> String {
    let guarded = format!(
        "import sys\ntry:\n    import safetensors, numpy\nexcept ImportError as e:\n    \
         print(f'cannot import safetensors: {{e}}', file=sys.stderr)\n    sys.exit(3)\n{script}"
    );
    let mut py = std::process::Command::new("python3");
    py.args(["-c", &guarded]).args(args);
    let o = run_bounded(py, TIMEOUT);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_ne!(
        o.status.code(),
        Some(3),
        "python3 cannot import safetensors: run the tests with scripts/test.sh, which installs it\n{err}"
    );
    assert!(
        o.status.success(),
        "python failed ({}):\n{out}\n{err}",
        o.status
    );
    out
}

/// Checks `part` against `src` for `patterns` with the Python package; returns the number of
/// tensors it holds.
fn check_part(src: &Path, part: &Path, patterns: &[&str]) -> usize {
    let pats = serde_json::to_string(patterns).unwrap();
    let out = python(
        CHECK,
        &[src.to_str().unwrap(), part.to_str().unwrap(), &pats],
    );
    out.trim()
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("the check printed {out}"))
        .parse()
        .unwrap()
}

/// A folder with the model, a config that is not safetensors and two hostile files: a header
/// length over the limit, and a valid header whose tensor runs past the end of the file.
fn model_folder(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("bad")).unwrap();
    let model = dir.join("model.safetensors");
    let many = dir.join("many.safetensors");
    python(WRITE, &[model.to_str().unwrap(), many.to_str().unwrap()]);
    fs::write(dir.join("config.json"), br#"{"model_type": "test"}"#).unwrap();
    let mut huge = (cairn_artifact::SAFETENSORS_HEADER_LEN_MAX + 1)
        .to_le_bytes()
        .to_vec();
    huge.extend_from_slice(&[b' '; 4096]);
    fs::write(dir.join("bad/huge-header.safetensors"), huge).unwrap();
    let json = br#"{"t":{"dtype":"F32","shape":[256],"data_offsets":[0,1024]}}"#;
    let mut past = (json.len() as u64).to_le_bytes().to_vec();
    past.extend_from_slice(json);
    past.extend_from_slice(&[0; 16]);
    fs::write(dir.join("bad/past-end.safetensors"), past).unwrap();
    model
}

/// The test's own reading of the file: the header's end and each tensor's absolute range.
fn layout(file: &[u8]) -> (u64, Vec<(String, std::ops::Range<u64>)>) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap());
    let end = 8 + n;
    let v: serde_json::Value = serde_json::from_slice(&file[8..end as usize]).unwrap();
    let tensors = v
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| {
            let o = &t["data_offsets"];
            let (b, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            (k.clone(), end + b..end + e)
        })
        .collect();
    (end, tensors)
}

/// The chunks (indices) a reader of `patterns` needs: the header's and the selected tensors'.
/// Patterns here are exact names or a prefix and `*`.
fn chunks_needed(file: &[u8], patterns: &[&str]) -> BTreeSet<usize> {
    let mut at = 0u64;
    let bounds: Vec<(u64, u64)> = Chunker::new(file)
        .map(|c| {
            let s = at;
            at += c.unwrap().len() as u64;
            (s, at)
        })
        .collect();
    let (header_end, tensors) = layout(file);
    let selects = |name: &str| {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *p,
        })
    };
    let mut ranges = Vec::new();
    ranges.push(0..header_end);
    ranges.extend(
        tensors
            .into_iter()
            .filter(|(n, r)| selects(n) && !r.is_empty())
            .map(|(_, r)| r),
    );
    let mut out = BTreeSet::new();
    for r in ranges {
        for (i, &(s, e)) in bounds.iter().enumerate() {
            if s < r.end && e > r.start {
                out.insert(i);
            }
        }
    }
    out
}

/// `fetched` from the summary `cairn get --tensor` prints ("chunks fetched: N of M").
fn chunks_fetched(stderr: &str) -> (usize, usize) {
    let rest = stderr
        .lines()
        .find_map(|l| l.split_once("chunks fetched: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no chunk count in {stderr}"));
    let (a, b) = rest.trim().split_once(" of ").unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// GET `url`: (status, `x-error-message`, body).
fn get(url: &str) -> (u16, String, Vec<u8>) {
    test_runtime().block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let r = http_client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let msg = r
                .headers()
                .get("x-error-message")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, msg, r.bytes().await.unwrap().to_vec())
        })
        .await
        .unwrap_or_else(|_| panic!("GET {url} did not finish in {TIMEOUT:?}"))
    })
}

/// The value of the unlabelled sample `name` in the gateway's metrics.
fn metric(gw: &DevGateway, name: &str) -> u64 {
    let (_, _, body) = get(&format!("{}/metrics", gw.url));
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in the metrics:\n{text}"))
}

#[test]
fn tensors_through_the_gateway_and_the_cli_fetch_only_their_chunks() {
    let net = Devnet::with_nodes(5);
    let src = net.tmp.path().join("model");
    let model = model_folder(&src);
    let bytes = fs::read(&model).unwrap();
    assert!(bytes.len() > 60 << 20, "{} bytes", bytes.len());
    let file_chunks = Chunker::new(&bytes[..]).count();
    let publisher = net.tmp.path().join("publisher");
    init(&publisher, "1GiB");
    let (out, _) = ok(net.add_cmd(&publisher, &src, &[]));
    let cap = cap_line(&out);
    let gw = net.start_gateway();
    gw.register("org/m", &cap, &[]);
    let url = |path: &str, query: &str| format!("{}/org/m/tensors/main/{path}?{query}", gw.url);

    // One layer through the gateway: a valid file of its three tensors, and the shard requests
    // are those of its chunks and the header's (at most one per shard of each), not the file's.
    let (status, _, _) = get(&format!("{}/api/models/org/m", gw.url));
    assert_eq!(status, 200, "the artifact is opened before counting");
    let before = metric(&gw, "cairn_gateway_shard_requests_total");
    let (status, msg, body) = get(&url("model.safetensors", "select=model.layers.7.*"));
    assert_eq!(status, 200, "{msg}");
    let after = metric(&gw, "cairn_gateway_shard_requests_total");
    let part = net.tmp.path().join("gw-part.safetensors");
    fs::write(&part, &body).unwrap();
    assert_eq!(check_part(&model, &part, &["model.layers.7.*"]), 3);
    let needed = chunks_needed(&bytes, &["model.layers.7.*"]);
    let requests = after - before;
    assert!(
        requests as usize <= needed.len() * 5 && needed.len() * 5 < file_chunks * 3,
        "{requests} shard requests for {} chunks needed of {file_chunks}",
        needed.len()
    );

    // Several patterns and exact names, `?` included; repeated `select`.
    let pats = [
        "model.layers.1?.mlp.bias",
        "model.embed_tokens.weight",
        "model.norm.weight",
    ];
    let query: Vec<String> = pats.iter().map(|p| format!("select={p}")).collect();
    let (status, msg, body) = get(&url("model.safetensors", &query.join("&")));
    assert_eq!(status, 200, "{msg}");
    fs::write(&part, &body).unwrap();
    assert_eq!(check_part(&model, &part, &pats), 12);

    // HEAD answers the length of the same body (from the header: reqwest's `content_length`
    // is the empty body's).
    let head = test_runtime().block_on(async {
        let r = http_client()
            .head(url("model.safetensors", &query.join("&")))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.headers()[reqwest::header::CONTENT_LENGTH]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .ok(),
        )
    });
    assert_eq!(head, (200, Some(body.len() as u64)));

    // A header longer than the first read is read in two steps.
    let many = src.join("many.safetensors");
    let many_bytes = fs::read(&many).unwrap();
    assert!(layout(&many_bytes).0 > cairn_artifact::SAFETENSORS_HEADER_PROBE);
    let (status, msg, body) = get(&url("many.safetensors", "select=t.3999&select=t.7"));
    assert_eq!(status, 200, "{msg}");
    fs::write(&part, &body).unwrap();
    assert_eq!(check_part(&many, &part, &["t.3999", "t.7"]), 2);

    // Refusals: a clear 400 naming the reason, and the gateway keeps serving.
    for (path, query, want) in [
        (
            "model.safetensors",
            "select=model.layers.99.*",
            "model.layers.99.*\" selects no tensor",
        ),
        ("model.safetensors", "x=1", "no tensor pattern given"),
        (
            "config.json",
            "select=*",
            "over the limit of 100000000 bytes",
        ),
        (
            "bad/huge-header.safetensors",
            "select=*",
            "over the limit of 100000000 bytes",
        ),
        (
            "bad/past-end.safetensors",
            "select=*",
            "cover 1024 bytes but the data section after the header is 16 bytes",
        ),
    ] {
        let (status, msg, body) = get(&url(path, query));
        assert_eq!(status, 400, "{path}?{query}: {msg}");
        assert!(
            msg.contains(want) && msg.contains(path),
            "{path}?{query}: {msg}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let (status, _, _) = get(&url("missing.safetensors", "select=*"));
    assert_eq!(status, 404);
    let (status, _, body) = get(&format!("{}/healthz", gw.url));
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));

    // The command line over the network: the chunks it fetched are exactly those needed.
    let pats = ["model.layers.3.*", "model.embed_tokens.weight"];
    let part = net.tmp.path().join("cli-part.safetensors");
    let mut c = net.cli();
    c.args(["get", &cap, "model.safetensors", "-o"]).arg(&part);
    for p in pats {
        c.args(["--tensor", p]);
    }
    let (_, err) = ok(c);
    assert_eq!(check_part(&model, &part, &pats), 4);
    let (fetched, of) = chunks_fetched(&err);
    assert_eq!(of, file_chunks, "{err}");
    assert_eq!(fetched, chunks_needed(&bytes, &pats).len(), "{err}");
    assert!(fetched * 4 < file_chunks, "{err}");

    // Hostile and wrong files: exit 2 with the reason, no output file, no panic.
    for (path, want) in [
        (
            "bad/huge-header.safetensors",
            "over the limit of 100000000 bytes",
        ),
        (
            "bad/past-end.safetensors",
            "cover 1024 bytes but the data section after the header is 16 bytes",
        ),
        ("config.json", "over the limit"),
    ] {
        let out = net.tmp.path().join("refused.safetensors");
        let mut c = net.cli();
        c.args(["get", &cap, path, "--tensor", "*", "-o"]).arg(&out);
        let err = fails(c);
        assert!(err.contains(want) && err.contains(path), "{path}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
    let mut c = net.cli();
    c.args([
        "get",
        &cap,
        "model.safetensors",
        "--tensor",
        "nothing.*",
        "-o",
    ])
    .arg(net.tmp.path().join("none.safetensors"));
    let err = fails(c);
    assert!(err.contains("\"nothing.*\" selects no tensor"), "{err}");
}

#[test]
fn tensors_from_the_local_store() {
    let node = Node::new("1GiB");
    let src = node.tmp.path().join("model");
    let model = model_folder(&src);
    let bytes = fs::read(&model).unwrap();
    let cap = node.add(&src).to_string();
    let part = node.tmp.path().join("part.safetensors");
    let o = node.run(&[
        "get",
        &cap,
        "model.safetensors",
        "--tensor",
        "model.layers.30.*",
        "-o",
        part.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(check_part(&model, &part, &["model.layers.30.*"]), 3);
    let (fetched, _) = chunks_fetched(&err);
    assert_eq!(
        fetched,
        chunks_needed(&bytes, &["model.layers.30.*"]).len(),
        "{err}"
    );
    // The same to standard output.
    let o = node.run(&[
        "get",
        &cap,
        "model.safetensors",
        "--tensor",
        "model.layers.30.*",
        "-o",
        "-",
    ]);
    assert!(o.status.success());
    assert_eq!(o.stdout, fs::read(&part).unwrap());
    // --tensor needs the file to read.
    let err = node.fails(&["get", &cap, "--tensor", "*", "-o", "x"]);
    assert!(err.contains("--tensor reads one safetensors file"), "{err}");
}
