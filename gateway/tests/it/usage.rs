//! Usage per key over real HTTP: the Prometheus counters, the first use of a key from each
//! client address, and the bound on the label set.
//!
//! Method: a gateway started as the binary starts it (`Keyed`, over `run_gateway`), keys made
//! through the admin API, requests made with reqwest from 127.0.0.1 and 127.0.0.2 (both
//! loopback on Linux). The counters are read from `/metrics` and parsed, never searched for, and
//! compared with what the test sent and received, byte for byte; the first-use notes are read
//! from the audit log before and after a restart of the gateway on the same directory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cairn_gateway::{AuditDecision, FIRST_USE_REASON};
use reqwest::header::RANGE;

use crate::auth::Keyed;
use crate::{Fixture, PRIVATE, client};

/// The value of `name{principal="<principal>"}` in a scrape, if the series exists.
fn sample(text: &str, name: &str, principal: &str) -> Option<u64> {
    let prefix = format!("{name}{{principal=\"{principal}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

/// The principals labelled in `name`'s series.
fn principals(text: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}{{principal=\"");
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|l| l.split('"').next().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn scrape(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn client_from(ip: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

/// Sends GET (or HEAD) with `key`, reads the whole body; returns status and body length.
async fn fetch(
    c: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    range: Option<&str>,
    head: bool,
) -> (u16, u64) {
    let mut r = if head { c.head(url) } else { c.get(url) };
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(v) = range {
        r = r.header(RANGE, v);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap().len() as u64)
}

/// The requests, bytes and denials counted per key are those the test made: full GETs (a
/// small body read first, a large one streamed), a range, a HEAD, a denial by a key without
/// the scope, one by an unknown key (anonymous); a download cut off by its client counts what
/// was sent before, not the length it announced; a flood of made-up keys adds no series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_requests_and_bytes_per_key() {
    let big = 32 << 20;
    let fx = Fixture::start(big).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    let a = kg.key(&["read:repo:cairn-test/private"]).await;
    let b = kg.key(&["read:repo:acme/one"]).await;
    let cut = kg.key(&["read:repo:cairn-test/private"]).await;
    let url = |p: &str| format!("{}/{PRIVATE}/resolve/main/{p}", kg.url);
    let config_len = fx.files["config.json"].len() as u64;

    assert_eq!(
        fetch(&c, &url("config.json"), Some(&a.key), None, false).await,
        (200, config_len)
    );
    assert_eq!(
        fetch(&c, &url("model.safetensors"), Some(&a.key), None, false).await,
        (200, big as u64)
    );
    assert_eq!(
        fetch(
            &c,
            &url("model.safetensors"),
            Some(&a.key),
            Some("bytes=1000-1099"),
            false
        )
        .await,
        (206, 100)
    );
    assert_eq!(
        fetch(&c, &url("model.safetensors"), Some(&a.key), None, true).await,
        (200, 0)
    );
    let (status, b_bytes) = fetch(&c, &url("config.json"), Some(&b.key), None, false).await;
    assert_eq!(
        status, 404,
        "a key without the scope sees a missing repository"
    );
    let unknown = format!("cairn_0123456789abcdef_{}", &a.key[23..]);
    let (status, anon_bytes) = fetch(&c, &url("config.json"), Some(&unknown), None, false).await;
    assert_eq!(status, 401);

    // A download its client gives up after a mebibyte.
    let mut r = c
        .get(url("model.safetensors"))
        .bearer_auth(&cut.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    while got < 1 << 20 {
        got += r.chunk().await.unwrap().unwrap().len() as u64;
    }
    drop(r);
    // Its stream ends when the gateway's write fails: wait for that (bounded), then read.
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = scrape(&c, &kg.url).await;
        let open = m
            .lines()
            .find_map(|l| l.strip_prefix("cairn_gateway_streams "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no cairn_gateway_streams in:\n{m}"));
        if open == 0 {
            break m;
        }
        assert!(Instant::now() < deadline, "the cut stream did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let req = "cairn_gateway_usage_requests_total";
    let bytes = "cairn_gateway_usage_body_bytes_sent_total";
    let den = "cairn_gateway_usage_denials_total";
    let (ka, kb, kc) = (
        format!("key:{}", a.id),
        format!("key:{}", b.id),
        format!("key:{}", cut.id),
    );
    assert_eq!(sample(&m, req, &ka), Some(4), "{m}");
    assert_eq!(
        sample(&m, bytes, &ka),
        Some(config_len + big as u64 + 100),
        "{m}"
    );
    assert_eq!(sample(&m, den, &ka), None, "no denial of key a: {m}");
    assert_eq!(sample(&m, req, &kb), Some(1));
    assert_eq!(sample(&m, bytes, &kb), Some(b_bytes), "the 404's body");
    assert_eq!(sample(&m, den, &kb), Some(1));
    assert_eq!(sample(&m, den, "anonymous"), Some(1), "the unknown key");
    assert!(sample(&m, bytes, "anonymous").unwrap() >= anon_bytes);
    let cut_bytes = sample(&m, bytes, &kc).unwrap();
    assert!(
        cut_bytes >= got && cut_bytes < big as u64,
        "the cut download counted {cut_bytes} bytes; the client took {got} of {big}"
    );
    assert_eq!(
        sample(&m, "cairn_gateway_usage_new_addresses_total", &ka),
        Some(1)
    );

    // Made-up keys (unknown ids, a known id with a wrong secret, garbage) on private and public
    // repositories: all anonymous, key a's counts untouched.
    let series = principals(&m, req);
    assert_eq!(series.len(), 4, "{series:?}");
    let public = format!("{}/cairn-test/tiny/resolve/main/config.json", kg.url);
    for i in 0..150u32 {
        let made_up = if i % 3 == 0 {
            format!("cairn_{i:016x}_{}", &a.key[23..])
        } else if i % 3 == 1 {
            // Key a's id with another key's secret.
            format!("cairn_{}_{}", &a.id, &b.key[23..])
        } else {
            format!("x{i}")
        };
        let u = if i % 2 == 0 {
            url("config.json")
        } else {
            public.clone()
        };
        assert_eq!(fetch(&c, &u, Some(&made_up), None, false).await.0, 401);
    }
    let m = scrape(&c, &kg.url).await;
    for name in [req, bytes, den, "cairn_gateway_usage_new_addresses_total"] {
        let now = principals(&m, name);
        assert!(
            now.iter()
                .all(|p| p == "anonymous" || p == &ka || p == &kb || p == &kc),
            "{name}: {now:?}"
        );
    }
    assert_eq!(principals(&m, req), series);
    assert_eq!(sample(&m, den, "anonymous"), Some(151));
    assert_eq!(sample(&m, req, &ka), Some(4));
    assert_eq!(sample(&m, den, &ka), None);
    kg.shutdown().await;
    fx.shutdown().await;
}

/// A key's first use from each client address is one audit note and one count, and a restart
/// does not announce the addresses again; a third address after it is announced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_from_each_address_is_audited_once_across_a_restart() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start(&fx).await;
    let k = kg.key(&["read:repo:cairn-test/private"]).await;
    let other = kg.key(&["read:repo:acme/one"]).await;
    let file = format!("{}/{PRIVATE}/resolve/main/config.json", kg.url);
    let (one, two, three) = (
        client_from("127.0.0.1"),
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
    );
    for c in [&one, &one, &two, &two] {
        assert_eq!(fetch(c, &file, Some(&k.key), None, false).await.0, 200);
    }
    // A denied use of a key is a use from that address too.
    assert_eq!(
        fetch(&two, &file, Some(&other.key), None, false).await.0,
        404
    );
    let notes = |audit: &[cairn_gateway::AuditEntry], id: &str| -> Vec<String> {
        let mut v: Vec<String> = audit
            .iter()
            .filter(|e| e.key_id == id && e.decision == AuditDecision::Note)
            .map(|e| {
                assert_eq!(e.reason, FIRST_USE_REASON);
                e.client_ip.clone().unwrap()
            })
            .collect();
        v.sort();
        v
    };
    let audit = kg.admin.audit(10_000).await.unwrap();
    assert_eq!(notes(&audit, &k.id), ["127.0.0.1", "127.0.0.2"]);
    assert_eq!(notes(&audit, &other.id), ["127.0.0.2"]);
    let e = audit
        .iter()
        .find(|e| e.key_id == other.id && e.decision == AuditDecision::Note)
        .unwrap();
    assert_eq!(
        (e.status, e.repo.as_str()),
        (404, "models/cairn-test/private")
    );
    let m = scrape(&one, &kg.url).await;
    let new = "cairn_gateway_usage_new_addresses_total";
    assert_eq!(sample(&m, new, &format!("key:{}", k.id)), Some(2), "{m}");

    let kg = Keyed::restart(&fx, kg.shutdown().await).await;
    // A new port.
    let file = format!("{}/{PRIVATE}/resolve/main/config.json", kg.url);
    for c in [&one, &two, &three, &three] {
        assert_eq!(fetch(c, &file, Some(&k.key), None, false).await.0, 200);
    }
    let audit = kg.admin.audit(10_000).await.unwrap();
    assert_eq!(
        notes(&audit, &k.id),
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    );
    let m = scrape(&one, &kg.url).await;
    assert_eq!(sample(&m, new, &format!("key:{}", k.id)), Some(1), "{m}");
    kg.shutdown().await;
    fx.shutdown().await;
}
