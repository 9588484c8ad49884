//! The gateway over real HTTP on 127.0.0.1, serving a real local store.
//!
//! Method: publish a sample folder with the store's own pipeline (`encode_artifact` +
//! `commit_artifact`), register it under model and dataset repositories, start the gateway on
//! an ephemeral port and talk to it with reqwest (and, in `hf`, with the real
//! `huggingface_hub`). Every byte received is compared with the source files.

mod auth;
mod hf;
mod hidden;
mod limits;
mod mtls;
mod tls;
mod usage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_artifact::{AddOptions, Cid, KeyMode, Manifest, PrivatePart, ReadCap, encode_artifact};
use cairn_erasure::Params;
use cairn_gateway::{
    AccessPolicy, CommitId, Gateway, GatewayConfig, LocalSource, Registry, RepoId, RepoKind,
};
use cairn_store::{Store, StoreConfig};
use rand::RngCore;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, IF_NONE_MATCH, RANGE};
use tokio::sync::oneshot;

const MODEL: &str = "cairn-test/tiny";
const DATASET: &str = "cairn-test/tiny-data";
const PRIVATE: &str = "cairn-test/private";

/// A published artifact served by a running gateway.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub store: Arc<Store>,
    pub url: String,
    pub files: BTreeMap<String, Vec<u8>>,
    pub cid: Cid,
    pub manifest: Manifest,
    pub private: PrivatePart,
    pub commit: CommitId,
    registry: Arc<Registry>,
    cap: ReadCap,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    /// Publishes a folder whose `model.safetensors` is `big` random bytes.
    pub async fn start(big: usize) -> Fixture {
        Self::start_with(big, GatewayConfig::default()).await
    }

    /// As [`Fixture::start`], with the gateway's limits in `config`.
    pub async fn start_with(big: usize, config: GatewayConfig) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let mut files = BTreeMap::new();
        let mut big_bytes = vec![0u8; big];
        rand::rng().fill_bytes(&mut big_bytes);
        files.insert("model.safetensors".to_string(), big_bytes);
        files.insert(
            "config.json".to_string(),
            br#"{"architectures": ["Tiny"], "hidden_size": 8}"#.to_vec(),
        );
        files.insert(
            "sub/dir/README.md".to_string(),
            b"# tiny\nA test model.\n".to_vec(),
        );
        files.insert("empty.txt".to_string(), Vec::new());
        for (p, b) in &files {
            let path = src.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b).unwrap();
        }
        let store =
            Arc::new(Store::open(&tmp.path().join("store"), StoreConfig::new(1 << 32)).unwrap());
        let opts = AddOptions {
            params: Params::new(2, 1).unwrap(),
            key_mode: KeyMode::Random,
            name: Some("tiny".into()),
            record_signers: Vec::new(),
        };
        let (manifest, cap) = {
            let (store, src) = (store.clone(), src.clone());
            tokio::task::spawn_blocking(move || encode_artifact(&src, &opts, &*store, &|_| {}))
                .await
                .unwrap()
                .unwrap()
        };
        let (cid, bytes) = manifest.encode();
        let private = manifest.open(&cid, &cap.key).unwrap();
        store.commit_artifact(&cid, &bytes, None, None).unwrap();
        let registry = Arc::new(Registry::open(&tmp.path().join("gateway")).unwrap());
        let commit = registry
            .register(
                RepoKind::Model,
                &MODEL.parse().unwrap(),
                &cap,
                AccessPolicy::Public,
            )
            .unwrap();
        registry
            .register(
                RepoKind::Dataset,
                &DATASET.parse().unwrap(),
                &cap,
                AccessPolicy::Public,
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let gw = Gateway::new(
            config,
            registry.clone(),
            Arc::new(LocalSource::new(store.clone())),
        );
        let (stop, rx) = oneshot::channel();
        let server = tokio::spawn(async move {
            gw.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Fixture {
            _tmp: tmp,
            src,
            store,
            url,
            files,
            cid,
            manifest,
            private,
            commit,
            registry,
            cap,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Registers the same artifact as `PRIVATE`, restricted to API keys. From then on the
    /// artifact is restricted by CID too (the strictest registration wins there).
    pub fn add_private(&self) {
        self.registry
            .register(
                RepoKind::Model,
                &RepoId::new("cairn-test", "private").unwrap(),
                &self.cap,
                AccessPolicy::ApiKeyScopes(vec!["team".into()]),
            )
            .unwrap();
    }

    pub fn resolve_url(&self, rev: &str, path: &str) -> String {
        format!("{}/{MODEL}/resolve/{rev}/{path}", self.url)
    }

    /// Stops the gateway and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(
            std::time::Duration::from_secs(15),
            self.server.take().unwrap(),
        )
        .await
        .expect("serve returns after the shutdown future completes")
        .unwrap();
    }

    /// Flips one byte in the data part of the shard file of `shard` (the store's layout:
    /// `shards/<last two chars>/<cid>`, a header, then the data).
    pub fn corrupt_shard(&self, shard: &Cid) {
        let s = shard.to_string();
        let path = self
            .store
            .dir()
            .join("shards")
            .join(&s[s.len() - 2..])
            .join(&s);
        let mut b = std::fs::read(&path).unwrap();
        b[cairn_store::HEADER_LEN + 10] ^= 0x55;
        std::fs::write(&path, b).unwrap();
    }
}

fn client() -> reqwest::Client {
    // The workspace builds reqwest without a default TLS provider (plain HTTP is all we use).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get_range(c: &reqwest::Client, url: &str, range: &str) -> reqwest::Response {
    c.get(url).header(RANGE, range).send().await.unwrap()
}

fn hdr(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_matrix() {
    let fx = Fixture::start(3 * 1024 * 1024 + 12_345).await;
    let data = &fx.files["model.safetensors"];
    let len = data.len() as u64;
    let c = client();
    let url = fx.resolve_url("main", "model.safetensors");
    let boundary = 1_048_576u64; // within the file either way; crosses a chunk edge when chunks are ~1 MiB
    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 1),                               // first byte
        (format!("bytes={}-{}", len - 1, len - 1), len - 1, len), // last byte
        (
            format!("bytes={}-{}", boundary - 100, boundary + 100),
            boundary - 100,
            boundary + 101,
        ),
        ("bytes=-500".into(), len - 500, len), // suffix
        (format!("bytes={}-", len - 1000), len - 1000, len), // open-ended
        ("bytes=0-".into(), 0, len),           // whole file as a range
        (format!("bytes=100-{}", len + 50), 100, len), // end past the end: clamped
    ];
    for (h, a, b) in cases {
        let r = get_range(&c, &url, &h).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{h}");
        assert_eq!(
            hdr(&r, "content-range").unwrap(),
            format!("bytes {a}-{}/{len}", b - 1),
            "{h}"
        );
        assert_eq!(
            hdr(&r, "content-length").unwrap(),
            (b - a).to_string(),
            "{h}"
        );
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..], &data[a as usize..b as usize], "{h}");
    }
    // Every chunk boundary, from the manifest, crossed by a 64-byte range.
    let mut off = 0u64;
    for l in chunk_lens(&fx, "model.safetensors") {
        off += l;
        if off >= len {
            break;
        }
        let r = get_range(&c, &url, &format!("bytes={}-{}", off - 32, off + 31)).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &data[off as usize - 32..off as usize + 32]
        );
    }
    for h in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 10, len + 20),
    ] {
        let r = get_range(&c, &url, &h).await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{h}");
        assert_eq!(hdr(&r, "content-range").unwrap(), format!("bytes */{len}"));
    }
    // Multi-range: the whole body with 200.
    let r = get_range(&c, &url, "bytes=0-1,5-6").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(CONTENT_RANGE).is_none());
    assert_eq!(&r.bytes().await.unwrap()[..], &data[..]);
    // Full GETs of every file, including the empty one.
    for (p, b) in &fx.files {
        let r = c.get(fx.resolve_url("main", p)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
        assert_eq!(&r.bytes().await.unwrap()[..], &b[..], "{p}");
    }
    fx.shutdown().await;
}

/// Plaintext lengths of the chunks of file `path`.
pub fn chunk_lens(fx: &Fixture, path: &str) -> Vec<u64> {
    let f = fx.private.files.iter().find(|f| f.path == path).unwrap();
    let first = f.first_chunk as usize;
    fx.private.chunks[first..first + f.chunk_count as usize]
        .iter()
        .map(|c| c.len)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_validators_and_errors() {
    let fx = Fixture::start(1_500_000).await;
    let c = client();
    let commit = fx.commit.to_string();
    for url in [
        fx.resolve_url("main", "model.safetensors"),
        fx.resolve_url(&commit, "config.json"),
        format!(
            "{}/datasets/{DATASET}/resolve/main/sub/dir/README.md",
            fx.url
        ),
        format!("{}/artifacts/{}/config.json", fx.url, fx.cid),
    ] {
        let g = c.get(&url).send().await.unwrap();
        let h = c.head(&url).send().await.unwrap();
        assert_eq!(g.status(), StatusCode::OK, "{url}");
        assert_eq!(h.status(), StatusCode::OK, "{url}");
        for name in [
            "etag",
            "x-linked-etag",
            "x-linked-size",
            "x-repo-commit",
            "content-length",
            "content-type",
            "cache-control",
            "accept-ranges",
        ] {
            assert!(g.headers().get(name).is_some(), "{url}: GET lacks {name}");
            assert_eq!(
                g.headers().get(name),
                h.headers().get(name),
                "{url}: {name}"
            );
        }
        assert!(g.headers().keys().all(|k| !k.as_str().starts_with("x-xet")));
        assert_eq!(hdr(&g, "x-repo-commit").unwrap(), commit);
        let etag = hdr(&g, "etag").unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 66,
            "{etag}"
        );
        let immutable = !url.contains("/main/");
        assert_eq!(
            hdr(&g, "cache-control").unwrap().contains("immutable"),
            immutable,
            "{url}"
        );
        // ETag round trip.
        let r = c
            .get(&url)
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hdr(&r, "etag").unwrap(), etag);
        assert!(r.bytes().await.unwrap().is_empty());
        let r = c
            .get(&url)
            .header(IF_NONE_MATCH, "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let _ = g.bytes().await.unwrap();
    }
    // Content types.
    let ct = |p: &str| {
        let (c, u) = (c.clone(), fx.resolve_url("main", p));
        async move { hdr(&c.head(u).send().await.unwrap(), "content-type").unwrap() }
    };
    assert_eq!(ct("config.json").await, "application/json");
    assert_eq!(ct("model.safetensors").await, "application/octet-stream");
    assert!(ct("empty.txt").await.starts_with("text/plain"));
    assert!(ct("sub/dir/README.md").await.starts_with("text/markdown"));

    // Errors, with the Hugging Face codes, for GET and HEAD alike.
    fx.add_private();
    let zero = "0".repeat(40);
    let cases = [
        (
            format!("{}/cairn-test/nope/resolve/main/config.json", fx.url),
            404,
            "RepoNotFound",
        ),
        (
            fx.resolve_url(&zero, "config.json"),
            404,
            "RevisionNotFound",
        ),
        (
            fx.resolve_url("v1.0", "config.json"),
            404,
            "RevisionNotFound",
        ),
        (fx.resolve_url("main", "nope.bin"), 404, "EntryNotFound"),
        // A private repository is answered as a missing one (hardening item 11).
        (
            format!("{}/{PRIVATE}/resolve/main/config.json", fx.url),
            404,
            "RepoNotFound",
        ),
        (
            format!("{}/api/models/cairn-test/nope", fx.url),
            404,
            "RepoNotFound",
        ),
        (
            format!("{}/api/models/{MODEL}/revision/{zero}", fx.url),
            404,
            "RevisionNotFound",
        ),
        (
            format!("{}/api/models/{PRIVATE}", fx.url),
            404,
            "RepoNotFound",
        ),
        (
            format!("{}/api/datasets/{MODEL}", fx.url),
            404,
            "RepoNotFound",
        ),
        (
            format!("{}/api/artifacts/bafkqaaa", fx.url),
            404,
            "RepoNotFound",
        ),
    ];
    for (url, status, code) in cases {
        for head in [false, true] {
            let r = if head { c.head(&url) } else { c.get(&url) }
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "{url}");
            assert_eq!(hdr(&r, "x-error-code").as_deref(), Some(code), "{url}");
            assert!(hdr(&r, "x-error-message").is_some(), "{url}");
            if !head {
                let body = r.bytes().await.unwrap();
                assert!(body.len() < 1024, "an error body, not file bytes");
            }
        }
    }
    // A missing file still names the commit, so clients can cache its absence.
    let r = c
        .head(fx.resolve_url("main", "nope.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(hdr(&r, "x-repo-commit").unwrap(), commit);
    // The private repo with a key: this gateway has no key store, so it stays hidden.
    let r = c
        .get(format!("{}/{PRIVATE}/resolve/main/config.json", fx.url))
        .bearer_auth("some-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(hdr(&r, "x-error-code").as_deref(), Some("RepoNotFound"));
    // The artifact is now registered as restricted somewhere: by CID it is hidden too, while
    // the public repositories that hold it stay public.
    for u in [
        format!("{}/artifacts/{}/config.json", fx.url, fx.cid),
        format!("{}/api/artifacts/{}", fx.url, fx.cid),
    ] {
        let r = c.get(&u).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{u}");
        assert_eq!(hdr(&r, "x-error-code").as_deref(), Some("RepoNotFound"));
    }
    let r = c
        .get(fx.resolve_url("main", "config.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_operability() {
    let fx = Fixture::start(300_000).await;
    let c = client();
    let j: serde_json::Value = c
        .get(format!("{}/api/models/{MODEL}", fx.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["id"], MODEL);
    assert_eq!(j["modelId"], MODEL);
    assert_eq!(j["sha"], fx.commit.to_string());
    assert_eq!(j["private"], false);
    assert_eq!(j["gated"], false);
    assert!(j["lastModified"].as_str().unwrap().ends_with(".000Z"));
    let sib: BTreeMap<String, u64> = j["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["rfilename"].as_str().unwrap().to_string(),
                s["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, u64> = fx
        .files
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    assert_eq!(sib, want);
    let j: serde_json::Value = c
        .get(format!(
            "{}/api/datasets/{DATASET}/revision/{}",
            fx.url, fx.commit
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["id"], DATASET);
    assert!(j.get("modelId").is_none());

    // Tree: top level, recursive, a sub-directory, a missing directory.
    let tree = |q: String| {
        let c = c.clone();
        async move {
            let r = c.get(q).send().await.unwrap();
            let s = r.status();
            (s, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (_, t) = tree(format!("{}/api/models/{MODEL}/tree/main", fx.url)).await;
    let paths: Vec<(&str, &str)> = t
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("directory", "sub"),
            ("file", "config.json"),
            ("file", "empty.txt"),
            ("file", "model.safetensors")
        ]
    );
    let (_, t) = tree(format!(
        "{}/api/models/{MODEL}/tree/main?recursive=True",
        fx.url
    ))
    .await;
    assert_eq!(t.as_array().unwrap().len(), 6, "{t}");
    let (_, t) = tree(format!("{}/api/models/{MODEL}/tree/main/sub", fx.url)).await;
    assert_eq!(t[0]["path"], "sub/dir");
    let (s, _) = tree(format!("{}/api/models/{MODEL}/tree/main/nope", fx.url)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // paths-info, as a form (what huggingface_hub sends) and as JSON.
    let r: serde_json::Value = c
        .post(format!("{}/api/models/{MODEL}/paths-info/main", fx.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("paths=config.json&paths=sub&paths=missing&expand=False")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r[0]["size"], fx.files["config.json"].len() as u64);
    assert_eq!(r[1]["type"], "directory");
    let r: serde_json::Value = c
        .post(format!("{}/api/datasets/{DATASET}/paths-info/main", fx.url))
        .header("content-type", "application/json")
        .body(r#"{"paths": ["empty.txt"]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r[0]["size"], 0);
    // A body over the limit is refused.
    let r = c
        .post(format!("{}/api/models/{MODEL}/paths-info/main", fx.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Native listing by CID: no capability in it.
    let r = c
        .get(format!("{}/api/artifacts/{}", fx.url, fx.cid))
        .send()
        .await
        .unwrap();
    assert!(hdr(&r, "cache-control").unwrap().contains("immutable"));
    let text = r.text().await.unwrap();
    assert!(!text.contains("cairn-read1"), "{text}");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["files"].as_array().unwrap().len(), fx.files.len());
    assert_eq!(j["commit"], fx.commit.to_string());

    // Limits: a URI over the limit gets 414.
    let r = c
        .get(format!("{}/{}", fx.url, "a".repeat(9000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);

    // Health and metrics.
    assert_eq!(
        c.get(format!("{}/healthz", fx.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let m = c
        .get(format!("{}/metrics", fx.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("cairn_gateway_requests_total{route=\"/api/models/{org}/{name}\",method=\"GET\",status=\"200\"}"), "{m}");
    assert!(
        m.contains("cairn_gateway_request_duration_seconds_bucket"),
        "{m}"
    );
    assert!(m.contains("cairn_gateway_body_bytes_sent_total"), "{m}");
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_ranges() {
    let fx = Fixture::start(3 * 1024 * 1024).await;
    let data = Arc::new(fx.files["model.safetensors"].clone());
    let len = data.len() as u64;
    let c = client();
    let url = fx.resolve_url(&fx.commit.to_string(), "model.safetensors");
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let (c, url, data) = (c.clone(), url.clone(), data.clone());
        // Spread over the file, some crossing chunk edges, sizes from 1 byte to ~600 KiB.
        let a = (i * 7_919_993) % len;
        let b = (a + 1 + (i * i * 257) % 600_000).min(len);
        tasks.push(tokio::spawn(async move {
            let r = get_range(&c, &url, &format!("bytes={a}-{}", b - 1)).await;
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            let body = r.bytes().await.unwrap();
            assert_eq!(&body[..], &data[a as usize..b as usize], "range {a}-{b}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    fx.shutdown().await;
}

/// A corrupted shard is never served: with one bad shard of a chunk the read goes around it
/// (k = 2 of n = 3); with two, the response is aborted mid-stream, never wrong bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_shards_are_never_served() {
    // About 12 chunks: more than one read window, so the failure comes after bytes were sent.
    let fx = Fixture::start(12 * 1024 * 1024).await;
    let data = fx.files["model.safetensors"].clone();
    let c = client();
    let url = fx.resolve_url("main", "model.safetensors");
    let f = fx
        .private
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .unwrap();
    let bad_chunk = f.first_chunk as usize + f.chunk_count as usize - 2;
    let shards = fx.manifest.chunks()[bad_chunk].shards.clone();

    fx.corrupt_shard(&shards[0]);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        &data[..],
        "read around one bad shard"
    );

    fx.corrupt_shard(&shards[1]);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "headers go out before the bad chunk is reached"
    );
    let got = r.bytes().await;
    assert!(
        got.is_err(),
        "the body must end with an error, got {} bytes",
        got.map(|b| b.len()).unwrap_or(0)
    );
    // A range inside the bad chunk: an error, never bytes.
    let off: u64 = chunk_lens(&fx, "model.safetensors")[..bad_chunk - f.first_chunk as usize]
        .iter()
        .sum();
    // The failure may come before hyper has flushed the headers (the connection then closes
    // with no response at all) or after (the body ends with an error).
    let r = c
        .get(&url)
        .header(RANGE, format!("bytes={}-{}", off + 5, off + 100))
        .send()
        .await;
    match r {
        Ok(r) => match r.status() {
            StatusCode::PARTIAL_CONTENT => assert!(r.bytes().await.is_err()),
            s => assert!(s.is_server_error(), "{s}"),
        },
        // No response at all is the expected failure, and a crashed server gives the same:
        // the server must still be running and answering.
        Err(_) => {
            assert!(
                !fx.server.as_ref().unwrap().is_finished(),
                "the gateway's server task ended"
            );
            let h = c.get(format!("{}/healthz", fx.url)).send().await.unwrap();
            assert_eq!(h.status(), StatusCode::OK);
        }
    }
    // Other chunks still read fine.
    let r = get_range(&c, &url, "bytes=0-999").await;
    assert_eq!(&r.bytes().await.unwrap()[..], &data[..1000]);
    let read_errors = metric(&c, &fx.url, "cairn_gateway_read_errors_total").await;
    assert!(read_errors > 0.0);
    fx.shutdown().await;
}

/// The value of the unlabelled sample `name` at `{url}/metrics`. Parsed, not searched for: a
/// missing sample fails the test, it does not pass as "not 0".
pub async fn metric(c: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = c
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// `src` is where the fixture's files are, for the Python client.
pub fn fixture_dir(fx: &Fixture) -> &Path {
    &fx.src
}
