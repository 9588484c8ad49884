//! The HTTP gateway over a real devnet: `cairn node` processes on loopback, a `cairn gateway`
//! process reading from them through node 0, artifacts published with `cairn add` and named with
//! `cairn register`.
//!
//! Goal: what a backend or a Hugging Face client relies on when it reads through the gateway.
//! A thousand concurrent range requests all get exactly their bytes; a download survives losing
//! two nodes midway and completes intact; a corrupted shard never reaches a client (and when too
//! few good shards are left the download fails visibly instead of completing with wrong bytes);
//! the real `datasets` library loads a dataset and `transformers` a configuration and tokenizer;
//! a private repository serves nothing without a key and everything with one; the README's
//! `cairn devnet --demo` serves its sample model and stops every process on Ctrl-C; a devnet's
//! logs hold no secret and no colour code, its files are private and a node killed under it is
//! reaped at once. Method: every byte received is compared with the published source
//! (directly or by BLAKE3), every wait is bounded (the harness's, and a timeout around every
//! HTTP phase), and every process is killed when the test ends, pass or fail.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_artifact::Chunker;
use cairn_store::HEADER_LEN;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use crate::devnet::*;
use crate::util::*;

/// Bound on every HTTP phase of a test (setup waits are bounded by the harness).
const HTTP_TIMEOUT: Duration = Duration::from_secs(180);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `fut` on a fresh runtime, failing the test if it takes longer than `HTTP_TIMEOUT`.
pub(crate) fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    runtime()
        .block_on(async { tokio::time::timeout(HTTP_TIMEOUT, fut).await })
        .unwrap_or_else(|_| panic!("{what} did not finish in {HTTP_TIMEOUT:?}"))
}

pub(crate) fn client() -> reqwest::Client {
    client_from(None)
}

/// A client whose connections come from `source` (any address of 127/8 is loopback on Linux).
fn client_from(source: Option<std::net::IpAddr>) -> reqwest::Client {
    // reqwest is built without a default TLS provider (plain HTTP is all we use).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(source)
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .connect_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A thousand concurrent connections need more descriptors than a default soft limit of 1024
/// (in this process and in the gateway, which inherits it): raise the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid, initialized struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max.min(16_384);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Publishes folder `src` with a fresh publisher; returns the read capability.
fn publish(net: &Devnet, src: &Path) -> String {
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, src, &[]));
    cap_line(&out)
}

/// A folder holding one pseudo-random `weights.bin` of `len` bytes; returns (folder, bytes).
fn weights(net: &Devnet, seed: u64, len: usize) -> (PathBuf, Vec<u8>) {
    let src = net.tmp.path().join("model");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(seed, len);
    fs::write(src.join("weights.bin"), &data).unwrap();
    (src, data)
}

pub(crate) fn resolve(gw: &DevGateway, repo: &str, path: &str) -> String {
    format!("{}/{repo}/resolve/main/{path}", gw.url)
}

/// Reads a whole response body chunk by chunk: (bytes read, BLAKE3) or the transport error.
async fn drain(
    resp: &mut reqwest::Response,
    hasher: &mut blake3::Hasher,
) -> Result<u64, reqwest::Error> {
    let mut n = 0;
    while let Some(b) = resp.chunk().await? {
        hasher.update(&b);
        n += b.len() as u64;
    }
    Ok(n)
}

/// GET of the whole file: (status, body length, BLAKE3 of the body), or the transport error
/// (an aborted body).
async fn get_hashed(
    c: &reqwest::Client,
    url: &str,
) -> Result<(StatusCode, u64, blake3::Hash), reqwest::Error> {
    let mut resp = c.get(url).send().await?;
    let status = resp.status();
    let mut h = blake3::Hasher::new();
    let n = drain(&mut resp, &mut h).await?;
    Ok((status, n, h.finalize()))
}

/// Byte offsets where the chunks of `data` end, as the store cuts a file.
fn chunk_ends(data: &[u8]) -> Vec<u64> {
    let mut at = 0u64;
    Chunker::new(data)
        .map(|c| {
            at += c.unwrap().len() as u64;
            at
        })
        .collect()
}

#[test]
fn a_thousand_concurrent_ranges_over_a_devnet() {
    raise_fd_limit();
    let net = Devnet::with_nodes(5);
    let (src, data) = weights(&net, 11, (24 << 20) + 4321);
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("org/ranges", &cap, &[]);

    // The real cut points, checked against the chunk count the network reports.
    let ends = chunk_ends(&data);
    let mut ls = net.cli();
    ls.args(["ls", &cap]);
    assert_eq!(chunks_of(&ok(ls).0), ends.len(), "chunk cut points");
    assert!(ends.len() >= 12, "24 MiB in only {} chunks", ends.len());

    let len = data.len() as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xCA1A);
    // (Range header, first byte, end exclusive)
    let mut cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 1),
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len),
        ("bytes=-1".into(), len - 1, len),
        ("bytes=0-".into(), 0, len),
    ];
    while cases.len() < 1000 {
        let (a, b) = match cases.len() % 4 {
            // Across a chunk boundary: up to 64 KiB either side of a real cut.
            0 => {
                let cut = ends[rng.random_range(0..ends.len() - 1)];
                let a = cut - rng.random_range(1..=65_536u64.min(cut));
                (a, (cut + rng.random_range(1..=65_536)).min(len))
            }
            // Spanning several chunks (up to 3 MiB).
            1 => {
                let a = rng.random_range(0..len);
                (a, (a + rng.random_range(1..=3 << 20)).min(len))
            }
            // Small, anywhere.
            2 => {
                let a = rng.random_range(0..len);
                (a, (a + rng.random_range(1..=4096)).min(len))
            }
            // Suffix.
            _ => {
                let n = rng.random_range(1..=2 << 20);
                cases.push((format!("bytes=-{n}"), len - n, len));
                continue;
            }
        };
        cases.push((format!("bytes={a}-{}", b - 1), a, b));
    }

    let url = resolve(&gw, "org/ranges", "weights.bin");
    let data = Arc::new(data);
    let started = Instant::now();
    let failures = bounded("1000 concurrent ranges", async {
        // Twenty clients on twenty addresses: the gateway gives one address at most
        // `connections_per_client_max` (64) connections and 8 streams, so a thousand at once
        // from one address would be refused by design.
        let clients: Vec<_> = (0..20u8)
            .map(|i| client_from(Some([127, 0, 1, 1 + i].into())))
            .collect();
        let tasks: Vec<_> = cases
            .into_iter()
            .enumerate()
            .map(|(j, (range, a, b))| {
                let (c, url, data) = (clients[j % 20].clone(), url.clone(), data.clone());
                tokio::spawn(async move {
                    let r = c
                        .get(&url)
                        .header(RANGE, &range)
                        .send()
                        .await
                        .map_err(|e| format!("{range}: {e:?}"))?;
                    let status = r.status();
                    let cr = r
                        .headers()
                        .get(CONTENT_RANGE)
                        .map(|v| v.to_str().unwrap().to_string());
                    let body = r.bytes().await.map_err(|e| format!("{range}: {e:?}"))?;
                    if status != StatusCode::PARTIAL_CONTENT {
                        return Err(format!("{range}: {status}"));
                    }
                    let want_cr = format!("bytes {a}-{}/{}", b - 1, data.len());
                    if cr.as_deref() != Some(want_cr.as_str()) {
                        return Err(format!("{range}: Content-Range {cr:?}, not {want_cr}"));
                    }
                    if body[..] != data[a as usize..b as usize] {
                        return Err(format!(
                            "{range}: {} bytes, not the expected {}",
                            body.len(),
                            b - a
                        ));
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                failures.push(e);
            }
        }
        failures
    });
    eprintln!("1000 ranges in {:.2?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of 1000 ranges failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // A thousand ranges over a couple of dozen chunks: most chunks came out of the cache of
    // opened chunks (and every byte above was still compared with the source). On a healthy
    // network no shard request failed.
    let m = metrics(&gw);
    let (hits, misses) = (
        metric(&m, "cairn_gateway_chunk_cache_hits_total"),
        metric(&m, "cairn_gateway_chunk_cache_misses_total"),
    );
    eprintln!(
        "chunk cache: {hits} hits, {misses} misses ({} chunks)",
        ends.len()
    );
    assert!(hits > misses, "cache hits {hits}, misses {misses}");
    assert!(metric(&m, "cairn_gateway_shard_requests_total") > 0);
    assert_eq!(
        metric(&m, "cairn_gateway_shard_fetch_errors_total"),
        0,
        "{m}"
    );
}

/// Fails the test unless the gateway process is still running and `/healthz` answers `ok`:
/// a failed request must not hide a crashed gateway.
fn assert_serving(gw: &DevGateway) {
    assert!(gw.is_running(), "the gateway process exited:\n{}", gw.log());
    let health = bounded("a health check", async {
        let r = client().get(format!("{}/healthz", gw.url)).send().await;
        match r {
            Ok(r) => (
                r.status(),
                r.text().await.unwrap_or_default().trim().to_string(),
            ),
            Err(e) => panic!("the gateway does not answer /healthz: {e}\n{}", gw.log()),
        }
    });
    assert_eq!(health, (StatusCode::OK, "ok".to_string()));
}

/// The gateway's `/metrics` text.
pub(crate) fn metrics(gw: &DevGateway) -> String {
    bounded("a metrics scrape", async {
        client()
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// The value of the unlabelled sample `name` in a metrics text. A missing sample fails the
/// test: read as 0, a renamed or dropped counter would pass every `== 0` check.
pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in the metrics:\n{text}"))
}

#[test]
fn data_gone_fails_within_seconds_and_is_counted() {
    let mut net = Devnet::with_nodes(5);
    let (src, data) = weights(&net, 14, (12 << 20) + 99);
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("org/gone", &cap, &[]);
    let url = resolve(&gw, "org/gone", "weights.bin");
    let len = data.len();

    // The first 100 000 bytes, which must come back exactly.
    let first_range = |what: &str| {
        let got = bounded(what, async {
            let r = client()
                .get(&url)
                .header(RANGE, "bytes=0-99999")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            r.bytes().await.unwrap()
        });
        assert_eq!(got[..], data[..100_000], "{what}");
    };
    // A ranged read opens the artifact and fills the cache with the chunks it touched.
    first_range("a first range");

    // Three of five nodes die without a goodbye (node 0, the gateway's way in, stays): two
    // shards of every chunk are left, one short of the three a chunk needs.
    for n in [2, 3, 4] {
        net.kill(n);
    }
    // The download fails: the dead holders are given REPLY_START_TIMEOUT (5 s) to start
    // answering, not the 30 s a whole request may take. 20 s is far from both.
    let limit = Duration::from_secs(20);
    let outcome = bounded("a read of lost data", async {
        tokio::time::timeout(limit, get_hashed(&client(), &url)).await
    });
    match outcome {
        Err(_) => panic!("a read of lost data was still going after {limit:?}"),
        Ok(Ok((status, n, _))) => panic!("{status} with {n} bytes of {len} for lost data"),
        Ok(Err(_)) => {}
    }
    // The holders that timed out are skipped for a while: the next read fails at once.
    let outcome = bounded("a second read of lost data", async {
        tokio::time::timeout(limit, get_hashed(&client(), &url)).await
    });
    assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
    // What was already opened and cached is still served, verified.
    first_range("a cached range");

    let m = metrics(&gw);
    for name in [
        "cairn_gateway_shard_fetch_errors_total",
        "cairn_gateway_shard_fetch_timeouts_total",
        "cairn_gateway_read_errors_total",
    ] {
        assert!(metric(&m, name) > 0, "{name} is 0:\n{m}");
    }
}

#[test]
fn two_nodes_killed_mid_download_still_complete_intact() {
    let mut net = Devnet::with_nodes(5);
    let (src, data) = weights(&net, 12, (48 << 20) + 777);
    let want = blake3::hash(&data);
    let len = data.len() as u64;
    drop(data);
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("org/big", &cap, &[]);
    let url = resolve(&gw, "org/big", "weights.bin");

    let (got, n, read_at_kill) = bounded("the download", async {
        let c = client();
        let mut resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get(CONTENT_LENGTH)
                .unwrap()
                .to_str()
                .unwrap(),
            len.to_string()
        );
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        while n < 4 << 20 {
            let b = resp.chunk().await.unwrap().expect("the body ended early");
            h.update(&b);
            n += b.len() as u64;
        }
        // Node 0 is the gateway's way into the network; lose two of the others without a
        // goodbye. Three nodes are left: exactly enough for a 3-of-5 code, so every chunk still
        // to come must be rebuilt from the survivors.
        let read_at_kill = n;
        net.kill(3);
        net.kill(4);
        n += drain(&mut resp, &mut h)
            .await
            .unwrap_or_else(|e| panic!("the download broke after {n} bytes: {e:?}"));
        (h.finalize(), n, read_at_kill)
    });
    assert!(
        read_at_kill < len / 2,
        "{read_at_kill} of {len} bytes read before the kill"
    );
    assert_eq!(n, len, "body length");
    assert_eq!(got, want, "the body differs from the published file");
}

#[test]
fn corrupted_shard_is_never_served_through_the_gateway() {
    let mut net = Devnet::with_nodes(5);
    let (src, data) = weights(&net, 13, (8 << 20) + 99);
    let want = blake3::hash(&data);
    let len = data.len() as u64;
    let cap = publish(&net, &src);

    // Flip bytes past the header of every shard node 2 holds: every chunk has one bad shard.
    net.stop(2);
    let files = net.shard_files(2);
    assert!(!files.is_empty());
    for f in &files {
        let mut b = fs::read(f).unwrap();
        assert!(b.len() > HEADER_LEN + 64, "{}", f.display());
        for at in (HEADER_LEN..b.len()).step_by(4099) {
            b[at] ^= 0x5A;
        }
        let last = b.len() - 1;
        b[last] ^= 0x01;
        fs::write(f, &b).unwrap();
    }
    net.spawn(2);
    let gw = net.start_gateway();
    gw.register("org/corrupt", &cap, &[]);
    let url = resolve(&gw, "org/corrupt", "weights.bin");

    // With node 4 gone a reader of any chunk has three good shards and the bad one to choose
    // from: whatever it picks, only the right bytes may come out.
    net.kill(4);
    let started = Instant::now();
    let (status, n, got) = bounded("the download", async {
        get_hashed(&client(), &url).await.unwrap()
    });
    assert_eq!(status, StatusCode::OK);
    assert_eq!(n, len);
    assert_eq!(
        got, want,
        "the gateway served bytes that differ from the file"
    );
    let refusals = fs::read_to_string(net.nodes[2].dir.join("node.log"))
        .unwrap_or_default()
        .matches("corrupt")
        .count();
    eprintln!(
        "8 MiB with one bad shard per chunk in {:.2?}; node 2 logged {refusals} refusals",
        started.elapsed()
    );

    // With node 3 gone too only two good shards are left: the bad one does not make a third, so
    // the download must fail visibly (an error status or an aborted body), never complete.
    net.kill(3);
    let started = Instant::now();
    let res = bounded("the failing download", async {
        get_hashed(&client(), &url).await
    });
    eprintln!(
        "with two good shards per chunk, after {:.2?}: {:?}",
        started.elapsed(),
        res.as_ref()
            .map(|(s, n, _)| (s, n))
            .map_err(|e| e.to_string())
    );
    match res {
        Ok((status, n, got)) => assert!(
            !status.is_success(),
            "a {status} body of {n} bytes (blake3 {got}) with two good shards per chunk"
        ),
        // An aborted body is the expected failure; a gateway that crashed would abort it too,
        // so it must still be up and answering.
        Err(_) => assert_serving(&gw),
    }
}

#[test]
fn datasets_library_reads_a_dataset_through_the_gateway() {
    const ROWS: usize = 321;
    let net = Devnet::with_nodes(5);
    let src = net.tmp.path().join("ds");
    fs::create_dir_all(src.join("data")).unwrap();
    let mut lines = String::new();
    for i in 0..ROWS {
        lines.push_str(&format!(
            "{{\"id\": {i}, \"text\": \"row number {i}\", \"label\": {}}}\n",
            i % 3
        ));
    }
    fs::write(src.join("data/train.jsonl"), lines).unwrap();
    fs::write(
        src.join("README.md"),
        "# demo/ds\n\nA small dataset published on Cairn.\n",
    )
    .unwrap();
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("demo/ds", &cap, &["--dataset"]);

    let hf_home = net.tmp.path().join("hf-home");
    let script = r#"
from datasets import load_dataset
ds = load_dataset("demo/ds", split="train")
print(len(ds))
print(ds[7]["text"])
"#;
    let out = python_against(&gw.url, &hf_home, "datasets", script);
    let mut got = out.lines();
    assert_eq!(got.next(), Some(ROWS.to_string().as_str()), "{out}");
    assert_eq!(got.next(), Some("row number 7"), "{out}");

    // The same over HTTPS, from a second gateway on the same network with a throwaway CA the
    // client is told to trust (`SSL_CERT_FILE`, as `cairn devnet --tls` prints), into an empty
    // cache.
    let tls =
        cairn_gateway::write_local_tls(&net.tmp.path().join("tls"), Duration::from_secs(3600))
            .unwrap();
    let gws = net.start_gateway_with(
        "gateway-tls",
        &[
            "--tls-cert",
            tls.files.cert.to_str().unwrap(),
            "--tls-key",
            tls.files.key.to_str().unwrap(),
        ],
    );
    assert!(gws.url.starts_with("https://"), "{}", gws.url);
    gws.register("demo/ds", &cap, &["--dataset"]);
    let hf_home = net.tmp.path().join("hf-home-tls");
    let ca = tls.ca_cert.to_str().unwrap();
    let out = python_against_env(
        &gws.url,
        &hf_home,
        "datasets",
        script,
        &[("SSL_CERT_FILE", ca)],
    );
    let mut got = out.lines();
    assert_eq!(got.next(), Some(ROWS.to_string().as_str()), "{out}");
    assert_eq!(got.next(), Some("row number 7"), "{out}");
}

/// Runs a Python `script` with the Hugging Face libraries pointed at the gateway (`HF_ENDPOINT`),
/// its cache in `hf_home`, no token and no offline mode, bounded by `HTTP_TIMEOUT`; returns its
/// standard output. Fails the test, naming the pip package, when `package` cannot be imported
/// (the test must not be skipped), and with the script's output when it fails.
pub(crate) fn python_against(
    gateway_url: &str,
    hf_home: &Path,
    package: &str,
    script: &str,
) -> String {
    python_against_env(gateway_url, hf_home, package, script, &[])
}

/// [`python_against`] with `env` added (`SSL_CERT_FILE` for an HTTPS gateway). The trust
/// variables of the test's own environment are removed first.
pub(crate) fn python_against_env(
    gateway_url: &str,
    hf_home: &Path,
    package: &str,
    script: &str,
    env: &[(&str, &str)],
) -> String {
    let guarded = format!(
        "import sys\ntry:\n    import {package}\nexcept ImportError as e:\n    \
         print(f'cannot import {package}: {{e}}', file=sys.stderr)\n    sys.exit(3)\n{script}"
    );
    let mut py = std::process::Command::new("python3");
    py.args(["-c", &guarded])
        .env("HF_ENDPOINT", gateway_url)
        .env("HF_HOME", hf_home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_DATASETS_OFFLINE")
        .env_remove("TRANSFORMERS_OFFLINE")
        .env_remove("HF_TOKEN")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("REQUESTS_CA_BUNDLE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    let o = run_bounded(py, HTTP_TIMEOUT);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_ne!(
        o.status.code(),
        Some(3),
        "python3 cannot import {package}: run the tests with scripts/test.sh, which installs it\n{err}"
    );
    assert!(
        o.status.success(),
        "{package} against the gateway failed ({}):\n{out}\n{err}",
        o.status
    );
    out
}

/// `transformers` (no PyTorch needed) loads a model's configuration and tokenizer from the
/// gateway by name, then by the commit id the gateway gave, and `cached_file` fetches the
/// weights file byte-identical.
#[test]
fn transformers_loads_config_and_tokenizer_through_the_gateway() {
    let net = Devnet::with_nodes(5);
    let src = net.tmp.path().join("tiny-bert");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
            "vocab_size": 6}"#,
    )
    .unwrap();
    fs::write(
        src.join("tokenizer.json"),
        r#"{"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "[UNK]",
                      "vocab": {"[UNK]": 0, "cairn": 1, "stores": 2, "models": 3, "and": 4,
                                "datasets": 5}}}"#,
    )
    .unwrap();
    fs::write(
        src.join("tokenizer_config.json"),
        r#"{"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}"#,
    )
    .unwrap();
    let weights = pseudo_random(21, (3 << 20) + 17);
    fs::write(src.join("model.safetensors"), &weights).unwrap();
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("demo/tiny-bert", &cap, &[]);

    let hf_home = net.tmp.path().join("hf-home");
    let script = r#"
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import cached_file
from huggingface_hub import HfApi
cfg = AutoConfig.from_pretrained("demo/tiny-bert")
print(type(cfg).__name__, cfg.hidden_size, cfg.num_hidden_layers)
tok = AutoTokenizer.from_pretrained("demo/tiny-bert")
print(tok("cairn stores models and datasets")["input_ids"], tok("cairn stores weights")["input_ids"])
sha = HfApi().model_info("demo/tiny-bert").sha
again = AutoConfig.from_pretrained("demo/tiny-bert", revision=sha)
print(again.hidden_size)
print(cached_file("demo/tiny-bert", "model.safetensors"))
try:
    AutoConfig.from_pretrained("demo/no-such-model")
    print("missing repo loaded")
except OSError:
    print("missing repo refused")
"#;
    let out = python_against(&gw.url, &hf_home, "transformers", script);
    let lines: Vec<&str> = out.lines().collect();
    let cached = lines.get(3).copied().unwrap_or("");
    assert_eq!(
        lines,
        [
            "BertConfig 48 2",
            "[1, 2, 3, 4, 5] [1, 2, 0]",
            "48",
            cached,
            "missing repo refused",
        ],
        "{out}"
    );
    let got = fs::read(cached).unwrap();
    assert!(
        got == weights,
        "cached_file gave {} bytes, not the {} published",
        got.len(),
        weights.len()
    );
}

/// The 8-byte windows of `body` that also occur in `data`.
fn shared_windows(body: &[u8], data: &[u8]) -> usize {
    let want: HashSet<&[u8]> = body.windows(8).collect();
    if want.is_empty() {
        return 0;
    }
    data.windows(8).filter(|w| want.contains(w)).count()
}

#[test]
fn private_repo_needs_a_key_over_the_devnet() {
    let net = Devnet::with_nodes(5);
    let (src, data) = weights(&net, 14, (2 << 20) + 5);
    let cap = publish(&net, &src);
    let gw = net.start_gateway();
    gw.register("org/secret", &cap, &["--private"]);
    let key = gw.apikey("read:repo:org/secret");
    assert!(key.starts_with("cairn_"), "{key}");
    let url = resolve(&gw, "org/secret", "weights.bin");

    let (denied, allowed) = bounded("the private reads", async {
        let c = client();
        let r = c.get(&url).send().await.unwrap();
        let denied = (
            r.status(),
            r.headers()
                .get("x-error-code")
                .map(|v| v.to_str().unwrap().to_string()),
            r.bytes().await.unwrap(),
        );
        let r = c
            .get(&url)
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        let allowed = (r.status(), r.bytes().await.unwrap());
        (denied, allowed)
    });
    let (status, code, body) = denied;
    // Without a key the private repository looks missing (hardening item 11).
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code.as_deref(), Some("RepoNotFound"));
    assert!(
        body.len() < 64 * 1024,
        "a {}-byte body on a denied request",
        body.len()
    );
    assert_eq!(
        shared_windows(&body, &data),
        0,
        "the denied body holds bytes of the file: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = allowed;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), data.len());
    assert!(body[..] == data[..], "the key read different bytes");
}

/// The README's first command: `cairn devnet --demo` publishes the sample model across five node
/// processes, fetches it back identical and serves it through its gateway, where `transformers`
/// loads its configuration and tokenizer; Ctrl-C then stops every process and removes the
/// temporary data directory.
#[test]
fn the_readme_devnet_demo_serves_transformers_and_ctrl_c_stops_everything() {
    let (tmp, base, mut child) = spawn_devnet(&["--demo", "--demo-mib", "8"]);
    let child = &mut child.0;
    let (rx, out) = devnet_ready(child);
    let text = out.join("\n");
    let identical = out.iter().filter(|l| l.ends_with("identical")).count();
    assert_eq!(
        identical, 6,
        "every sample file comes back identical:\n{text}"
    );
    assert!(
        text.contains("(checked: the gateway serves config.json byte for byte)"),
        "{text}"
    );
    let url = devnet_gateway_url(&out);

    let script = r#"
from transformers import AutoConfig, AutoTokenizer
cfg = AutoConfig.from_pretrained("demo/sample-model")
print(cfg.model_type, cfg.n_layer)
print(AutoTokenizer.from_pretrained("demo/sample-model")("cairn stores models on peers")["input_ids"])
"#;
    let py_out = python_against(&url, &tmp.path().join("hf-home"), "transformers", script);
    assert_eq!(
        py_out.lines().collect::<Vec<_>>(),
        ["gpt2 4", "[1, 2, 3, 6, 7]"]
    );

    // The gated part (the test command installs anvil, so the devnet runs a local chain): the
    // devnet checked it itself, and the snippet it printed, run as printed, signs the demo
    // wallet in and downloads the gated model with the unmodified `huggingface_hub`.
    assert!(
        text.contains("(checked: 403 GatedRepo without a token; the demo wallet signs in and reads config.json)"),
        "{text}"
    );
    let start = out
        .iter()
        .position(|l| l.contains("CAIRN_DEMO_KEY_FILE=") && l.contains("python3 - <<'EOF'"))
        .unwrap_or_else(|| panic!("no gated snippet in:\n{text}"));
    let end = start
        + out[start..]
            .iter()
            .position(|l| l == "EOF")
            .expect("the snippet ends");
    let snippet = out[start..=end].join("\n");
    let mut sh = std::process::Command::new("bash");
    sh.args(["-c", &snippet])
        .env("HF_HOME", tmp.path().join("hf-home-gated"))
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .stdin(std::process::Stdio::null());
    let o = crate::devnet::run_bounded(sh, HTTP_TIMEOUT);
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the printed snippet failed: {got}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = PathBuf::from(got.trim().lines().last().unwrap_or_default());
    assert_eq!(
        fs::read(dir.join("config.json")).unwrap(),
        fs::read(base.join("sample-model/config.json")).unwrap()
    );

    // Ctrl-C: every process stops, nothing is left behind.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("the devnet did not stop within 30 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the devnet exited with {status}");
    // The rest of its output, up to the end of its stdout.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("stopping 7 processes")),
        "{rest:?}"
    );
    let base_text = base.to_string_lossy().into_owned();
    let left: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&base_text))
        .collect();
    assert!(left.is_empty(), "processes left after Ctrl-C: {left:?}");
    assert!(!base.exists(), "{} was not removed", base.display());
}

/// `cairn devnet --tls --demo`: the gateway is HTTPS with a throwaway CA, the devnet prints how
/// to trust it, and the unmodified `huggingface_hub` downloads the sample model through it
/// byte for byte with `SSL_CERT_FILE` set as printed. The CA's key is never on disk.
#[test]
fn devnet_tls_prints_how_to_trust_it_and_serves_huggingface_hub() {
    let (tmp, base, mut child) = spawn_devnet(&["--tls", "--demo", "--demo-mib", "4"]);
    let (_rx, out) = devnet_ready(&mut child.0);
    let text = out.join("\n");
    let url = devnet_gateway_url(&out);
    assert!(url.starts_with("https://127.0.0.1:"), "{text}");
    assert!(
        text.contains("(checked: the gateway serves config.json byte for byte)"),
        "{text}"
    );
    let ca = base.join("tls/ca.pem");
    let ca_text = ca.to_str().unwrap();
    assert!(
        text.contains(&format!(
            "export SSL_CERT_FILE={ca_text} REQUESTS_CA_BUNDLE={ca_text}"
        )),
        "{text}"
    );
    let key_mode = fs::metadata(base.join("tls/gateway.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        key_mode & 0o077,
        0,
        "the gateway's key is readable by others"
    );
    let names: Vec<String> = fs::read_dir(base.join("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["ca.pem", "gateway.key", "gateway.pem"],
        "{names:?}"
    );

    let script = r#"
from huggingface_hub import snapshot_download
print(snapshot_download("demo/sample-model"))
"#;
    let out = python_against_env(
        &url,
        &tmp.path().join("hf-home"),
        "huggingface_hub",
        script,
        &[("SSL_CERT_FILE", ca_text)],
    );
    let snapshot = PathBuf::from(out.trim().lines().last().unwrap());
    assert_same_tree(&base.join("sample-model"), &snapshot);
}

/// Starts `cairn devnet <args>` with its temporary folder under a new directory (`TMPDIR`);
/// returns that directory, the devnet's folder in it, and the process (stopped on drop).
fn spawn_devnet(args: &[&str]) -> (tempfile::TempDir, PathBuf, StopOnDrop) {
    let tmp = tempfile::tempdir().unwrap();
    let child = cairn()
        .arg("devnet")
        .args(args)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = tmp.path().join(format!("cairn-devnet-{}", child.id()));
    (tmp, base, StopOnDrop(child))
}

/// A `cairn devnet` process that is stopped (Ctrl-C, then killed after 10 s) when the test ends,
/// pass or fail, so that a failed assertion leaves no node running.
/// Reads a `cairn devnet` child's standard output on a thread until it says it is ready
/// ("press Ctrl-C", at most 120 s); returns the lines so far and the channel of those to come.
/// Kills the child and fails the test, with what it printed, when it does not get ready.
fn devnet_ready(
    child: &mut std::process::Child,
) -> (std::sync::mpsc::Receiver<String>, Vec<String>) {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    while !out.iter().any(|l: &String| l.contains("press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("the devnet did not get ready ({e}):\n{}", out.join("\n"));
            }
        }
    }
    (rx, out)
}

/// The gateway URL a ready devnet printed (`gateway http://...`).
fn devnet_gateway_url(out: &[String]) -> String {
    out.iter()
        .find_map(|l| l.trim().strip_prefix("gateway "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gateway URL in:\n{}", out.join("\n")))
        .to_string()
}

struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `(pid, state)` of every process whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, state));
        }
    }
    out
}

/// A devnet run under `umask 000` with keyed requests (hardening items 8, 13 and 17): after it,
/// no secret it handled (API keys, a wrong key, the admin token, the read capability or its
/// key) is in any `node.log` or `gateway.log`, which also hold no terminal colour code; the
/// devnet's folder and files are private; and a node killed with SIGKILL is reaped by the
/// devnet at once instead of staying a zombie until it exits.
#[test]
fn devnet_logs_hold_no_secret_its_files_are_private_and_dead_nodes_are_reaped() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("dev");
    let stderr_file = tmp.path().join("devnet.stderr");
    let mut cmd = crate::private::cairn_umask0(&[
        "devnet",
        "--demo",
        "--demo-mib",
        "1",
        "--dir",
        base.to_str().unwrap(),
    ]);
    // Cairn's own events down to debug, where a careless field would show first.
    cmd.env(
        "CAIRN_LOG",
        "info,iroh=warn,noq=warn,cairn=debug,cairn_gateway=debug,cairn_node=debug,\
         cairn_swarm=debug,cairn_store=debug",
    )
    .stdout(std::process::Stdio::piped())
    .stderr(fs::File::create(&stderr_file).unwrap());
    let child = cmd.spawn().unwrap();
    let mut child = StopOnDrop(child);
    let child = &mut child.0;
    // Kept until the end: the devnet keeps writing to its standard output.
    let (_rx, out) = devnet_ready(child);
    let text = out.join("\n");
    let cap = out
        .iter()
        .find_map(|l| l.trim().strip_prefix("read capability: "))
        .unwrap_or_else(|| panic!("no capability in:\n{text}"))
        .to_string();
    let url = devnet_gateway_url(&out);
    let gw = DevGateway::attach(base.join("gateway-node"), url);

    // Keyed requests: a private repository registered from a capability file, a key, a wrong
    // key, a rotation and a revocation.
    let cap_file = tmp.path().join("cap");
    fs::write(&cap_file, &cap).unwrap();
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&gw.dir)
        .args(["register", "org/secret", "--private", "--cap-file"])
        .arg(&cap_file);
    ok(c);
    let key = gw.apikey("read:repo:org/secret");
    let id = key[6..22].to_string();
    let wrong = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('A') { "E" } else { "A" }
    );
    let file = resolve(&gw, "org/secret", "config.json");
    let get = |auth: Option<String>| {
        bounded("a keyed request", async {
            let mut r = client().get(&file);
            if let Some(a) = auth {
                r = r.header(AUTHORIZATION, a);
            }
            r.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(get(Some(format!("Bearer {key}"))), 200);
    assert_eq!(get(Some(format!("bearer {key}"))), 200);
    assert_eq!(get(Some(format!("Bearer {wrong}"))), 401);
    assert_eq!(get(None), 404);
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&gw.dir)
        .args(["apikey", "rotate", &id, "--grace", "1h"]);
    let (rotated, _) = ok(c);
    let new_key = rotated
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(get(Some(format!("Bearer {new_key}"))), 200);
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&gw.dir)
        .args(["apikey", "revoke", &new_key[6..22]]);
    ok(c);
    assert_eq!(get(Some(format!("Bearer {new_key}"))), 401);
    let admin_token = fs::read_to_string(gw.dir.join("gateway/admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // A node killed under the devnet is reaped at once.
    let devnet_pid = child.id();
    let nodes: Vec<u32> = children_of(devnet_pid)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"node"))
        })
        .collect();
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    let victim = *nodes.last().unwrap();
    // SAFETY: kill(2) on a process of this test's devnet.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let reap_deadline = Instant::now() + Duration::from_secs(20);
    while children_of(devnet_pid).iter().any(|(p, _)| *p == victim) {
        assert!(
            Instant::now() < reap_deadline,
            "node {victim} is still in the process table 20 s after SIGKILL (state {:?})",
            children_of(devnet_pid).iter().find(|(p, _)| *p == victim)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Ctrl-C, and a clean exit.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < stop_deadline,
            "the devnet did not stop within 30 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the devnet exited with {status}");
    let err = fs::read_to_string(&stderr_file).unwrap();
    assert!(
        err.lines()
            .any(|l| l.starts_with("node-") && l.contains("exited (signal: 9")),
        "the devnet did not say a node died: {err}"
    );

    // No secret and no colour code in any log.
    let cap_key = cap.rsplit_once(':').unwrap().1.to_string();
    let secrets = [
        ("an API key", key.clone()),
        ("an API key's secret", key[23..].to_string()),
        ("a wrong key's secret", wrong[23..].to_string()),
        ("a rotated key's secret", new_key[23..].to_string()),
        ("the admin token", admin_token),
        ("the read capability", cap.clone()),
        ("the artifact key", cap_key),
    ];
    let mut logs = vec![base.join("gateway.log")];
    logs.extend((0..5).map(|i| base.join(format!("node-{i}/node.log"))));
    for log in &logs {
        let bytes = fs::read(log).unwrap();
        assert!(!bytes.is_empty(), "{} is empty", log.display());
        assert!(
            !bytes.contains(&0x1b),
            "{} holds terminal escape codes",
            log.display()
        );
        let text = String::from_utf8_lossy(&bytes);
        for (what, s) in &secrets {
            assert!(!text.contains(s.as_str()), "{what} in {}", log.display());
        }
    }
    // The gateway did log the requests it refused, so the check above read real traffic.
    let gw_log = fs::read_to_string(base.join("gateway.log")).unwrap();
    assert!(gw_log.contains("access denied"), "{gw_log}");

    // Private files: the devnet's folder, its logs, every data directory in it. The demo's
    // plaintext (sample-model, fetched) is the user's data, inside the private folder.
    assert_eq!(
        fs::metadata(&base).unwrap().permissions().mode() & 0o777,
        0o700
    );
    crate::private::assert_private_tree(&base, &["sample-model", "fetched"]);
    drop(gw);
}
