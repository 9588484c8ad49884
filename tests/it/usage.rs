//! `cairn apikey usage` against a running `cairn gateway` process.
//!
//! Goal: the totals per key and day that the command prints are the requests, body bytes and
//! denials the test made, and `--since` leaves out older days. Method: a data directory with
//! one artifact, a row of ten days ago written into `gateway.redb` through the library before
//! the gateway starts (no clock is faked), the gateway started as a process, a private
//! repository and two keys made with the CLI, requests sent over loopback and counted as the
//! client received them, then `cairn apikey usage --json` run with and without `--since`.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_gateway::{ApiKeyStore, Registry, Usage, UsageCounts};
use reqwest::header::RANGE;

use crate::private::LocalGateway;
use crate::util::*;

/// Sums the rows of `apikey usage --json` per principal.
fn totals(json: &str) -> BTreeMap<String, (u64, u64, u64)> {
    let rows: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut out = BTreeMap::new();
    for r in rows.as_array().unwrap() {
        let t = out
            .entry(r["principal"].as_str().unwrap().to_string())
            .or_insert((0, 0, 0));
        t.0 += r["requests"].as_u64().unwrap();
        t.1 += r["bytes"].as_u64().unwrap();
        t.2 += r["denials"].as_u64().unwrap();
        let day = r["day"].as_str().unwrap();
        assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "{r}");
    }
    out
}

#[test]
fn apikey_usage_totals_match_the_requests_and_since_filters() {
    let n = Node::new("1GiB");
    let src = n.tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let weights = pseudo_random(21, 300_000);
    fs::write(src.join("config.json"), br#"{"hidden_size": 8}"#).unwrap();
    fs::write(src.join("w.bin"), &weights).unwrap();
    let cap = n.add(&src).to_string();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = "key:00000000000000aa";
    {
        let dir = n.dir.join("gateway");
        let reg = Arc::new(Registry::open(&dir).unwrap());
        let keys = Arc::new(ApiKeyStore::open(reg.clone()).unwrap());
        let u = Usage::open(reg, keys).unwrap();
        let c = UsageCounts {
            requests: 7,
            bytes: 70,
            denials: 1,
        };
        u.record(&old.parse().unwrap(), now - 10 * 86_400, c);
        u.flush().unwrap();
    }

    let gw = LocalGateway::start(&n.dir);
    n.ok(&["register", "org/secret", "--private", &cap]);
    let key = |scope: &str| {
        let out = n.ok(&["apikey", "create", "--scope", scope]);
        out.lines()
            .find_map(|l| l.strip_prefix("key: "))
            .unwrap()
            .trim()
            .to_string()
    };
    let a = key("read:repo:org/secret");
    let b = key("read:repo:org/other");
    let url = format!("{}/org/secret/resolve/main/w.bin", gw.url);
    let unknown = format!("cairn_0123456789abcdef_{}", &a[23..]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (b_bytes, anon_bytes) = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |k: &str, range: Option<&str>, head: bool| {
            let mut r = if head { c.head(&url) } else { c.get(&url) }.bearer_auth(k);
            if let Some(v) = range {
                r = r.header(RANGE, v);
            }
            async move {
                let r = r.send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap().len() as u64)
            }
        };
        assert_eq!(get(&a, None, false).await, (200, weights.len() as u64));
        assert_eq!(get(&a, None, false).await, (200, weights.len() as u64));
        assert_eq!(get(&a, Some("bytes=10-19"), false).await, (206, 10));
        assert_eq!(get(&a, None, true).await, (200, 0));
        let (s, b_bytes) = get(&b, None, false).await;
        assert_eq!(s, 404);
        let (s, anon_bytes) = get(&unknown, None, false).await;
        assert_eq!(s, 401);
        (b_bytes, anon_bytes)
    });
    let (ka, kb) = (format!("key:{}", &a[6..22]), format!("key:{}", &b[6..22]));

    let day = n.ok(&["apikey", "usage", "--since", "24h", "--json"]);
    let t = totals(&day);
    assert_eq!(t[&ka], (4, 2 * weights.len() as u64 + 10, 0), "{day}");
    assert_eq!(t[&kb], (1, b_bytes, 1), "{day}");
    assert_eq!(t["anonymous"], (1, anon_bytes, 1), "{day}");
    assert!(
        !t.contains_key(old),
        "--since 24h shows a day ten days old: {day}"
    );
    assert_eq!(t.len(), 3, "{day}");
    for all in [
        n.ok(&["apikey", "usage", "--json"]),
        n.ok(&["apikey", "usage", "--since", "15d", "--json"]),
    ] {
        let t2 = totals(&all);
        assert_eq!(t2[old], (7, 70, 1), "{all}");
        assert_eq!(t2[&ka], t[&ka]);
    }
    // The table for people: a row per key and day, and a total per key.
    let text = n.ok(&["apikey", "usage", "--since", "1d"]);
    let total_a = text
        .lines()
        .find(|l| l.starts_with("total") && l.contains(&ka))
        .unwrap_or_else(|| panic!("no total of {ka} in:\n{text}"));
    let fields: Vec<&str> = total_a.split_whitespace().collect();
    assert_eq!(
        fields[2..],
        ["4", &(2 * weights.len() + 10).to_string(), "0"]
    );
    assert!(
        n.fails(&["apikey", "usage", "--since", "soon"])
            .contains("duration")
    );
    gw.stop();
}
