//! What an outsider can learn from the gateway, over real HTTP on 127.0.0.1.
//!
//! Goal: a restricted repository, revision or artifact answers exactly as a missing one to
//! anyone whose credential does not cover it, and costs the same check (hardening item 11); a
//! flood of requests without a key cannot push uses of real keys out of the audit log (item 7);
//! the `Bearer` scheme is case-insensitive, a re-registration keeps a private repository
//! private, and a scope prefix ends at a path segment (item 13).
//!
//! Method: the gateway is started the way the binary starts it (`run_gateway`) or, for the
//! flood, from its parts with a small audit retention; answers for a hidden and a missing
//! target are compared header by header and byte by byte (after putting one name for the
//! other); "the same check" is read from the audit log, where both leave an entry.

use std::collections::BTreeSet;
use std::sync::Arc;

use cairn_artifact::{AddOptions, KeyMode, ReadCap, encode_artifact};
use cairn_erasure::Params;
use cairn_gateway::{
    AccessPolicy, ApiKeyAuthorizer, ApiKeyStore, CommitId, Gateway, GatewayConfig, LocalSource,
    NewKey, Registry, RepoKind,
};
use reqwest::header::AUTHORIZATION;

use crate::auth::Keyed;
use crate::{Fixture, MODEL, PRIVATE, client};

/// Publishes a second, small artifact into the fixture's store; returns its capability.
async fn publish_other(fx: &Fixture) -> ReadCap {
    let src = fx.src.parent().unwrap().join("other-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("config.json"), br#"{"other": true}"#).unwrap();
    let opts = AddOptions {
        params: Params::new(2, 1).unwrap(),
        key_mode: KeyMode::Random,
        name: Some("other".into()),
        record_signers: Vec::new(),
    };
    let store = fx.store.clone();
    let (manifest, cap) =
        tokio::task::spawn_blocking(move || encode_artifact(&src, &opts, &*store, &|_| {}))
            .await
            .unwrap()
            .unwrap();
    let (cid, bytes) = manifest.encode();
    fx.store.commit_artifact(&cid, &bytes, None, None).unwrap();
    cap
}

/// An answer, reduced to what a client sees: status, headers (but `date`), body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

async fn answer(c: &reqwest::Client, post: bool, url: &str, auth: Option<&str>) -> Answer {
    let mut r = if post {
        c.post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("paths=config.json")
    } else {
        c.get(url)
    };
    if let Some(a) = auth {
        r = r.header(AUTHORIZATION, a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    let body = r.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// The same answer with `from` replaced by `to` everywhere.
fn renamed(a: &Answer, from: &str, to: &str) -> Answer {
    let body = a.body.replace(from, to);
    Answer {
        status: a.status,
        headers: a
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.replace(from, to);
                // The body length changes with the name.
                if k == "content-length" {
                    (k.clone(), body.len().to_string())
                } else {
                    (k.clone(), v)
                }
            })
            .collect(),
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_answers_exactly_like_missing() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    // A private revision in a public repository: registered, then `main` moved back.
    let other = publish_other(&fx).await;
    let restricted = AccessPolicy::ApiKeyScopes(vec![]);
    let model = MODEL.parse().unwrap();
    kg.admin
        .register(RepoKind::Model, &model, &other, restricted)
        .await
        .unwrap();
    kg.admin
        .register(RepoKind::Model, &model, &fx.cap, AccessPolicy::Public)
        .await
        .unwrap();
    let other_commit = CommitId::of(&other.cid).to_string();
    let zero = "0".repeat(40);
    let missing_cid = cairn_artifact::manifest_cid(b"never registered").to_string();
    let other_cid = other.cid.to_string();
    let u = |p: &str| format!("{}{p}", kg.url);
    // (POST?, hidden URL, missing URL, the hidden name, the missing name)
    let pairs: Vec<(bool, String, String, String, String)> = vec![
        (
            false,
            u(&format!("/{PRIVATE}/resolve/main/config.json")),
            u("/cairn-test/nope/resolve/main/config.json"),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        (
            false,
            u(&format!("/api/models/{PRIVATE}")),
            u("/api/models/cairn-test/nope"),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        (
            false,
            u(&format!("/api/models/{PRIVATE}/revision/{}", fx.commit)),
            u(&format!(
                "/api/models/cairn-test/nope/revision/{}",
                fx.commit
            )),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        // A missing revision of a hidden repository hides the repository.
        (
            false,
            u(&format!("/api/models/{PRIVATE}/revision/{zero}")),
            u(&format!("/api/models/cairn-test/nope/revision/{zero}")),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        (
            false,
            u(&format!("/api/models/{PRIVATE}/tree/main")),
            u("/api/models/cairn-test/nope/tree/main"),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        (
            true,
            u(&format!("/api/models/{PRIVATE}/paths-info/main")),
            u("/api/models/cairn-test/nope/paths-info/main"),
            PRIVATE.into(),
            "cairn-test/nope".into(),
        ),
        (
            false,
            u(&format!("/api/models/{MODEL}/revision/{other_commit}")),
            u(&format!("/api/models/{MODEL}/revision/{zero}")),
            other_commit.clone(),
            zero.clone(),
        ),
        (
            false,
            u(&format!("/{MODEL}/resolve/{other_commit}/config.json")),
            u(&format!("/{MODEL}/resolve/{zero}/config.json")),
            other_commit.clone(),
            zero.clone(),
        ),
        (
            false,
            u(&format!("/api/artifacts/{other_cid}")),
            u(&format!("/api/artifacts/{missing_cid}")),
            other_cid.clone(),
            missing_cid.clone(),
        ),
        (
            false,
            u(&format!("/artifacts/{other_cid}/config.json")),
            u(&format!("/artifacts/{missing_cid}/config.json")),
            other_cid.clone(),
            missing_cid.clone(),
        ),
    ];
    // Keys that cover none of the hidden targets: another repository, and a prefix that is a
    // string prefix of `cairn-test/` but not a path segment of it.
    let one = kg.key(&["read:repo:acme/one"]).await;
    let tes = kg.key(&["read:prefix:cairn-tes"]).await;
    let creds: Vec<Option<String>> = vec![
        None,
        Some(format!("Bearer {}", one.key)),
        Some(format!("bearer {}", tes.key)),
    ];
    for cred in &creds {
        for (post, hidden, missing, hname, mname) in &pairs {
            let h = answer(&c, *post, hidden, cred.as_deref()).await;
            let m = answer(&c, *post, missing, cred.as_deref()).await;
            assert_eq!(h.status, 404, "{hidden} with {:?}: {h:?}", cred.is_some());
            assert_eq!(
                renamed(&h, hname, mname),
                m,
                "{hidden} and {missing} answer differently"
            );
        }
    }
    // The same check ran for every hidden and every missing target: each left one entry (the
    // keys' in their log, the anonymous ones counted in theirs), beside the note on each key's
    // first use from this address, whatever it asked for.
    let n = pairs.len() as u64 * 2;
    let audit = kg.admin.audit(10_000).await.unwrap();
    for k in [&one, &tes] {
        let of_key: Vec<_> = audit.iter().filter(|e| e.key_id == k.id).collect();
        let (notes, uses): (Vec<&&cairn_gateway::AuditEntry>, Vec<_>) = of_key
            .iter()
            .partition(|e| e.decision == cairn_gateway::AuditDecision::Note);
        assert_eq!(uses.len() as u64, n, "{of_key:?}");
        assert_eq!(notes.len(), 1, "{of_key:?}");
        assert!(of_key.iter().all(|e| e.status == 404));
    }
    let anon = kg.admin.audit_anonymous(100).await.unwrap();
    assert_eq!(anon.iter().map(|e| e.count).sum::<u64>(), n, "{anon:?}");

    // A bad key is refused alike on hidden, missing and public targets.
    let public = u(&format!("/{MODEL}/resolve/main/config.json"));
    let bad = "Bearer cairn_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (post, hidden, missing, hname, mname) = &pairs[0];
    let h = answer(&c, *post, hidden, Some(bad)).await;
    let m = answer(&c, *post, missing, Some(bad)).await;
    let p = answer(&c, false, &public, Some(bad)).await;
    assert_eq!(h.status, 401, "{h:?}");
    assert_eq!(renamed(&h, hname, mname), m);
    assert_eq!(p.status, 401, "{p:?}");
    // The one who holds a covering key sees the private revision, with either scheme case.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let a = answer(
            &c,
            false,
            &u(&format!("/{PRIVATE}/resolve/main/config.json")),
            Some(&format!(
                "{scheme} {}",
                kg.key(&["read:prefix:cairn-test"]).await.key
            )),
        )
        .await;
        assert_eq!(a.status, 200, "{scheme}: {a:?}");
        assert_eq!(a.body.as_bytes(), &fx.files["config.json"][..]);
    }
    kg.shutdown().await;
    fx.shutdown().await;
}

/// Re-registering a private repository without a policy keeps it private; making it public
/// takes an explicit policy. The admin API takes its token with any scheme case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregistering_keeps_a_private_repo_private() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    let other = publish_other(&fx).await;
    let repo = PRIVATE.parse().unwrap();
    let url = format!("{}/{PRIVATE}/resolve/main/config.json", kg.url);
    let (commit, restricted) = kg
        .admin
        .register_keeping(RepoKind::Model, &repo, &other, None)
        .await
        .unwrap();
    assert!(restricted, "a private repository stays private");
    assert_eq!(commit, CommitId::of(&other.cid));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // A new repository without a policy is public.
    let (_, restricted) = kg
        .admin
        .register_keeping(RepoKind::Model, &"fresh/one".parse().unwrap(), &other, None)
        .await
        .unwrap();
    assert!(!restricted);
    // Public on request.
    let (_, restricted) = kg
        .admin
        .register_keeping(RepoKind::Model, &repo, &other, Some(AccessPolicy::Public))
        .await
        .unwrap();
    assert!(!restricted);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"other": true}"#);
    // The admin token with a lower-case scheme.
    let r = c
        .get(format!("{}/admin/keys", kg.admin_url))
        .header(AUTHORIZATION, format!("bearer {}", kg.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    kg.shutdown().await;
    fx.shutdown().await;
}

/// Requests sent by the flood, from 127.0.0.1, and from each of four other loopback addresses.
const FLOOD: usize = 3000;
const FLOOD_PER_OTHER: usize = 200;

/// Thousands of requests without a key, from several addresses, against a gateway that keeps
/// only 50 entries of keys: every use of the real key is still in the log afterwards, and the
/// flood is a handful of counted entries in the anonymous log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_flood_leaves_key_uses_in_the_audit_log() {
    let fx = Fixture::start(1000).await;
    let tmp = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(&tmp.path().join("gw")).unwrap());
    registry
        .register(
            RepoKind::Model,
            &PRIVATE.parse().unwrap(),
            &fx.cap,
            AccessPolicy::ApiKeyScopes(vec![]),
        )
        .unwrap();
    let keys = Arc::new(ApiKeyStore::open_with_retention(registry.clone(), 50).unwrap());
    let gw = Gateway::with_authorizer(
        GatewayConfig::default(),
        registry,
        Arc::new(LocalSource::new(fx.store.clone())),
        Arc::new(ApiKeyAuthorizer::new(keys.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/{PRIVATE}/resolve/main/config.json",
        listener.local_addr().unwrap()
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gw.serve(listener, async {
            let _ = rx.await;
        })
        .await
    });
    let key = keys
        .create(NewKey {
            label: "real".into(),
            scopes: vec!["read:repo:cairn-test/private".parse().unwrap()],
            expires_in_secs: None,
            allow_ips: vec![],
            rate_per_minute: None,
            client_cert: None,
        })
        .unwrap();
    let c = client();
    for _ in 0..5 {
        let r = c.get(&url).bearer_auth(&key.key).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // The flood: eight keep-alive streams from 127.0.0.1, one from each other address.
    let mut tasks = Vec::new();
    const _: () = assert!(FLOOD.is_multiple_of(8));
    for _ in 0..8 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..FLOOD / 8 {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 404);
                r.bytes().await.unwrap();
            }
        }));
    }
    let others: Vec<String> = (2..6).map(|i| format!("127.0.0.{i}")).collect();
    for ip in &others {
        let c = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..FLOOD_PER_OTHER {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 404);
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let audit = keys.audit(1000).unwrap();
    let uses = audit.iter().filter(|e| e.key_id == key.id).count();
    assert_eq!(
        uses,
        5,
        "the flood pushed key uses out of the log ({} entries kept)",
        audit.len()
    );
    let anon = keys.audit_anonymous(1000).unwrap();
    let count_of = |ip: &str| -> u64 {
        anon.iter()
            .filter(|e| e.client_ip.as_deref() == Some(ip))
            .map(|e| e.count)
            .sum()
    };
    assert_eq!(count_of("127.0.0.1"), FLOOD as u64, "{anon:?}");
    for ip in &others {
        assert_eq!(count_of(ip), FLOOD_PER_OTHER as u64, "{ip}: {anon:?}");
    }
    let addrs: BTreeSet<_> = anon.iter().map(|e| e.client_ip.clone()).collect();
    assert_eq!(addrs.len(), 5);
    // One entry per address and minute: the flood took well under a few minutes.
    assert!(anon.len() <= 15, "{} entries for 5 addresses", anon.len());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    fx.shutdown().await;
}
