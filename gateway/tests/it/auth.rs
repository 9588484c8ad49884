//! API keys and the admin API over real HTTP on 127.0.0.1.
//!
//! Method: publish a sample folder into a real local store (the `Fixture`), start a gateway the
//! way the binary does (`run_gateway`: registry, key store, admin token, both listeners, `.addr`
//! files), register repositories and create keys through `AdminClient` over the admin
//! listener, then request restricted files with each kind of bad key. Every denial is checked
//! for its status and error code (a bad key: 401 without a code; no covering key: 404
//! `RepoNotFound`, as if missing; over the rate: 429 `GatedRepo`) and a body that is a short
//! JSON error holding no byte of the artifact. Finally the audit log, the key listing and the
//! redb file itself are searched for every secret ever issued.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_gateway::{
    AccessPolicy, AdminClient, AuditDecision, CreatedKey, Error, GatewayConfig, LocalSource,
    NewKey, RepoKind, Scope, run_gateway, run_gateway_with,
};
use reqwest::StatusCode;
use tokio::sync::oneshot;

use crate::{DATASET, Fixture, MODEL, PRIVATE, client, hdr};

/// A gateway started with `run_gateway` over the fixture's store, with `MODEL` and `DATASET`
/// public and `PRIVATE`, `acme/one`, `acme/two`, `other/x` restricted to API keys.
pub struct Keyed {
    pub dir: PathBuf,
    pub url: String,
    pub admin_url: String,
    pub token: String,
    pub admin: AdminClient,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    _tmp: tempfile::TempDir,
}

pub const RESTRICTED: [&str; 4] = [PRIVATE, "acme/one", "acme/two", "other/x"];

impl Keyed {
    pub async fn start(fx: &Fixture) -> Keyed {
        Self::start_with(fx, GatewayConfig::default()).await
    }

    /// As [`Keyed::start`], with `config` (TLS, trusted proxies, limits).
    pub async fn start_with(fx: &Fixture, config: GatewayConfig) -> Keyed {
        Self::start_with_bind(fx, config, "127.0.0.1:0").await
    }

    /// As [`Keyed::start_with`], listening on `bind`.
    pub async fn start_with_bind(fx: &Fixture, config: GatewayConfig, bind: &str) -> Keyed {
        let bind: SocketAddr = bind.parse().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gw");
        let kg = Self::run(fx, dir, tmp, config, bind).await;
        for (kind, repo) in [(RepoKind::Model, MODEL), (RepoKind::Dataset, DATASET)] {
            let c = kg
                .admin
                .register(kind, &repo.parse().unwrap(), &fx.cap, AccessPolicy::Public)
                .await
                .unwrap();
            assert_eq!(c, fx.commit);
        }
        for repo in RESTRICTED {
            kg.admin
                .register(
                    RepoKind::Model,
                    &repo.parse().unwrap(),
                    &fx.cap,
                    AccessPolicy::ApiKeyScopes(vec![]),
                )
                .await
                .unwrap();
        }
        kg
    }

    /// Starts the gateway again on the directory a [`Keyed::shutdown`] returned: its
    /// repositories, keys, audit log and usage are those it had.
    pub async fn restart(fx: &Fixture, (dir, tmp): (PathBuf, tempfile::TempDir)) -> Keyed {
        let bind = "127.0.0.1:0".parse().unwrap();
        Self::run(fx, dir, tmp, GatewayConfig::default(), bind).await
    }

    async fn run(
        fx: &Fixture,
        dir: PathBuf,
        tmp: tempfile::TempDir,
        config: GatewayConfig,
        bind: SocketAddr,
    ) -> Keyed {
        let (stop, rx) = oneshot::channel::<()>();
        let source = Arc::new(LocalSource::new(fx.store.clone()));
        let d = dir.clone();
        let server = tokio::spawn(async move {
            run_gateway_with(
                &d,
                bind,
                "127.0.0.1:0".parse().unwrap(),
                config,
                source,
                async {
                    let _ = rx.await;
                },
            )
            .await
        });
        // The `.addr` files appear once both listeners are bound.
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let mut waited = 0;
        let (url, admin_url) = loop {
            if let (Some(u), Some(a)) = (read("gateway.addr"), read("admin.addr")) {
                break (u.trim().to_string(), a.trim().to_string());
            }
            assert!(waited < 200, "run_gateway did not write its .addr files");
            waited += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("admin.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "admin.token must be private");
        }
        let admin = AdminClient::new(&admin_url, token.clone()).unwrap();
        Keyed {
            dir,
            url,
            admin_url,
            token,
            admin,
            stop: Some(stop),
            server: Some(server),
            _tmp: tmp,
        }
    }

    pub async fn key(&self, scopes: &[&str]) -> CreatedKey {
        self.admin
            .create_key(new_key(scopes, None, &[], None))
            .await
            .unwrap()
    }

    /// Stops the gateway; the directory lives as long as the returned guard.
    pub async fn shutdown(mut self) -> (PathBuf, tempfile::TempDir) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.server.take().unwrap())
            .await
            .expect("run_gateway returns after shutdown")
            .unwrap()
            .unwrap();
        assert!(
            !self.dir.join("gateway.addr").exists(),
            "the .addr files are removed at shutdown"
        );
        (self.dir, self._tmp)
    }
}

/// Waits until the clock reads at least `unix_secs` (keys expire at that second); at most a
/// minute.
async fn wait_past(unix_secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if now.as_secs() >= unix_secs {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited a minute for second {unix_secs}"
        );
        // To the next whole second.
        tokio::time::sleep(Duration::from_nanos(
            1_000_000_000 - u64::from(now.subsec_nanos()),
        ))
        .await;
    }
}

pub fn new_key(
    scopes: &[&str],
    expires_in_secs: Option<u64>,
    allow_ips: &[&str],
    rate_per_minute: Option<u32>,
) -> NewKey {
    NewKey {
        label: "test key".into(),
        scopes: scopes.iter().map(|s| s.parse::<Scope>().unwrap()).collect(),
        expires_in_secs,
        allow_ips: allow_ips.iter().map(|s| s.parse().unwrap()).collect(),
        rate_per_minute,
        client_cert: None,
    }
}

/// What a request got: status, error code and message, body.
pub struct Got {
    pub status: u16,
    code: Option<String>,
    message: Option<String>,
    body: Vec<u8>,
}

pub async fn get(c: &reqwest::Client, url: &str, key: Option<&str>) -> Got {
    let mut r = c.get(url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let code = hdr(&r, "x-error-code");
    if status == 429 {
        assert_eq!(hdr(&r, "retry-after").as_deref(), Some("60"));
    }
    let message = hdr(&r, "x-error-message");
    if status >= 400 {
        assert!(message.is_some());
    }
    Got {
        status,
        code,
        message,
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// `got` is a denial with `status` and its error code (a bad key is refused as the Hub refuses
/// a bad token; no covering key looks like a missing repository), a short JSON error, none of
/// `file`'s bytes.
pub fn denied(got: &Got, status: u16, file: &[u8], what: &str) {
    assert_eq!(
        got.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&got.body)
    );
    let code = match status {
        401 | 403 => None,
        404 => Some("RepoNotFound"),
        _ => Some("GatedRepo"),
    };
    assert_eq!(got.code.as_deref(), code, "{what}");
    if status == 401 {
        assert_eq!(
            got.message.as_deref(),
            Some("Invalid credentials in Authorization header"),
            "{what}"
        );
    }
    assert!(
        got.body.len() < 1024,
        "{what}: an error body, not file bytes"
    );
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("a JSON error body");
    assert!(v["error"].is_string(), "{what}");
    // No 16-byte window of the (random) file is in the body.
    for w in file.windows(16).step_by(16) {
        assert!(
            !got.body.windows(16).any(|b| b == w),
            "{what}: file bytes in the body"
        );
    }
}

pub fn served(got: &Got, file: &[u8], what: &str) {
    assert_eq!(
        got.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.body, file, "{what}");
}

/// A well-formed key with the same id and another secret.
fn wrong_secret(key: &str) -> String {
    let last = if key.ends_with('A') { "E" } else { "A" };
    let k = format!("{}{last}", &key[..key.len() - 1]);
    assert!(cairn_gateway::parse_api_key(&k).is_ok());
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix() {
    let fx = Fixture::start(300_000).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    let file = fx.files["model.safetensors"].clone();
    let private = format!("{}/{PRIVATE}/resolve/main/model.safetensors", kg.url);
    let repo_url = |r: &str| format!("{}/{r}/resolve/main/model.safetensors", kg.url);
    let mut secrets: Vec<String> = Vec::new();

    // Keys whose time runs out are made first, so one wait serves them all. Expiry is in whole
    // seconds, so a key of lifetime L works for more than L - 1 s: L = 5 leaves 4 s to show
    // each working, however slow the machine, and the wait at the end is for the expiry
    // instant itself, not a guess at it.
    let short = kg
        .admin
        .create_key(new_key(&["read:prefix:cairn-test/"], Some(5), &[], None))
        .await
        .unwrap();
    served(
        &get(&c, &private, Some(&short.key)).await,
        &file,
        "short-lived key before it expires",
    );
    let old = kg.key(&["read:repo:cairn-test/private"]).await;
    served(
        &get(&c, &private, Some(&old.key)).await,
        &file,
        "before rotation",
    );
    let new = kg
        .admin
        .rotate_key(&old.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_ne!(new.id, old.id);
    served(
        &get(&c, &private, Some(&old.key)).await,
        &file,
        "old key in grace",
    );
    served(
        &get(&c, &private, Some(&new.key)).await,
        &file,
        "new key in grace",
    );
    secrets.extend([short.key.clone(), old.key.clone(), new.key.clone()]);

    // No key: as if the repository did not exist. Malformed keys, unknown id, wrong secret:
    // 401.
    denied(&get(&c, &private, None).await, 404, &file, "no key");
    for (i, bad) in [
        "cairn_xyz",
        "hf_abcdefghijklmnopqrstuvwxyz",
        &old.key.to_uppercase(),
        &"cairn_".repeat(11),
    ]
    .iter()
    .enumerate()
    {
        denied(
            &get(&c, &private, Some(bad)).await,
            401,
            &file,
            &format!("malformed {i}"),
        );
    }
    let unknown = format!("cairn_0123456789abcdef_{}", &new.key[23..]);
    denied(
        &get(&c, &private, Some(&unknown)).await,
        401,
        &file,
        "unknown id",
    );
    denied(
        &get(&c, &private, Some(&wrong_secret(&new.key))).await,
        401,
        &file,
        "right id, wrong secret",
    );

    // Revoked.
    let rev = kg.key(&["read:repo:cairn-test/private"]).await;
    secrets.push(rev.key.clone());
    served(
        &get(&c, &private, Some(&rev.key)).await,
        &file,
        "before revocation",
    );
    kg.admin.revoke_key(&rev.id).await.unwrap();
    denied(
        &get(&c, &private, Some(&rev.key)).await,
        401,
        &file,
        "revoked",
    );
    assert!(kg.admin.rotate_key(&rev.id, Duration::ZERO).await.is_err());

    // Wrong scope: another repository, a prefix that does not match, a CID it does not name.
    // Each looks like a missing repository or artifact.
    let one = kg.key(&["read:repo:acme/one"]).await;
    let acme = kg.key(&["read:prefix:acme/"]).await;
    secrets.extend([one.key.clone(), acme.key.clone()]);
    served(
        &get(&c, &repo_url("acme/one"), Some(&one.key)).await,
        &file,
        "repo scope",
    );
    denied(
        &get(&c, &repo_url("acme/two"), Some(&one.key)).await,
        404,
        &file,
        "other repo",
    );
    denied(
        &get(&c, &private, Some(&one.key)).await,
        404,
        &file,
        "other org",
    );
    served(
        &get(&c, &repo_url("acme/one"), Some(&acme.key)).await,
        &file,
        "prefix one",
    );
    served(
        &get(&c, &repo_url("acme/two"), Some(&acme.key)).await,
        &file,
        "prefix two",
    );
    denied(
        &get(&c, &repo_url("other/x"), Some(&acme.key)).await,
        404,
        &file,
        "prefix mismatch",
    );
    let info = get(
        &c,
        &format!("{}/api/models/acme/two", kg.url),
        Some(&acme.key),
    )
    .await;
    assert_eq!(info.status, 200);
    let info = get(
        &c,
        &format!("{}/api/models/other/x", kg.url),
        Some(&acme.key),
    )
    .await;
    assert_eq!(
        (info.status, info.code.as_deref()),
        (404, Some("RepoNotFound"))
    );
    // By CID: restricted (the strictest registration), only an artifact scope opens it.
    let by_cid = format!("{}/artifacts/{}/model.safetensors", kg.url, fx.cid);
    denied(
        &get(&c, &by_cid, Some(&acme.key)).await,
        404,
        &file,
        "CID with a repo scope",
    );
    let art = kg.key(&[&format!("read:artifact:{}", fx.cid)]).await;
    secrets.push(art.key.clone());
    served(
        &get(&c, &by_cid, Some(&art.key)).await,
        &file,
        "artifact scope",
    );

    // Wrong source IP: the test connects from 127.0.0.1.
    let ten = kg
        .admin
        .create_key(new_key(
            &["read:prefix:cairn-test/"],
            None,
            &["10.0.0.0/8"],
            None,
        ))
        .await
        .unwrap();
    let lo = kg
        .admin
        .create_key(new_key(
            &["read:prefix:cairn-test/"],
            None,
            &["10.0.0.0/8", "127.0.0.0/8"],
            None,
        ))
        .await
        .unwrap();
    secrets.extend([ten.key.clone(), lo.key.clone()]);
    denied(
        &get(&c, &private, Some(&ten.key)).await,
        403,
        &file,
        "wrong source IP",
    );
    served(
        &get(&c, &private, Some(&lo.key)).await,
        &file,
        "allowed source IP",
    );

    // Over the rate limit: 3 per minute, the 4th gets 429.
    let rl = kg
        .admin
        .create_key(new_key(
            &["read:repo:cairn-test/private"],
            None,
            &[],
            Some(3),
        ))
        .await
        .unwrap();
    secrets.push(rl.key.clone());
    for i in 0..3 {
        served(
            &get(&c, &private, Some(&rl.key)).await,
            &file,
            &format!("rate {i}"),
        );
    }
    denied(
        &get(&c, &private, Some(&rl.key)).await,
        429,
        &file,
        "over the rate limit",
    );

    // Public repositories need no key, but a bad key is refused there too, as the Hub does;
    // a good key (whatever its scopes) is fine.
    let public = format!("{}/{MODEL}/resolve/main/model.safetensors", kg.url);
    served(&get(&c, &public, None).await, &file, "public, no key");
    denied(
        &get(&c, &public, Some("garbage")).await,
        401,
        &file,
        "public, bad key",
    );
    denied(
        &get(&c, &public, Some(&rev.key)).await,
        401,
        &file,
        "public, revoked key",
    );
    served(
        &get(&c, &public, Some(&one.key)).await,
        &file,
        "public, good key",
    );

    // Time runs out: the short key expires, the rotated-out key leaves its grace period.
    let keys = kg.admin.list_keys().await.unwrap();
    let old_expires = keys
        .iter()
        .find(|k| k.id == old.id)
        .and_then(|k| k.expires)
        .expect("a rotated-out key has an expiry");
    wait_past(short.expires.unwrap().max(old_expires)).await;
    denied(
        &get(&c, &private, Some(&short.key)).await,
        401,
        &file,
        "expired",
    );
    denied(
        &get(&c, &private, Some(&old.key)).await,
        401,
        &file,
        "rotated out",
    );
    served(
        &get(&c, &private, Some(&new.key)).await,
        &file,
        "rotated in",
    );

    // The audit log: allowed and denied uses, reasons, no secret anywhere.
    let audit = kg.admin.audit(10_000).await.unwrap();
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq));
    let of = |id: &str, d: AuditDecision| {
        audit
            .iter()
            .filter(|e| e.key_id == id && e.decision == d)
            .count()
    };
    assert!(of(&old.id, AuditDecision::Allow) >= 2);
    assert!(of(&old.id, AuditDecision::Deny) >= 1);
    assert_eq!(of(&rl.id, AuditDecision::Allow), 3);
    assert_eq!(of(&rl.id, AuditDecision::Deny), 1);
    // Requests without a valid key are in the anonymous log, counted per address.
    let anon = kg.admin.audit_anonymous(1000).await.unwrap();
    assert!(!audit.iter().any(|e| e.key_id == "unknown"));
    assert!(
        anon.iter()
            .any(|e| e.key_id == "unknown" && e.client_ip.as_deref() == Some("127.0.0.1")),
        "{anon:?}"
    );
    assert!(anon.iter().map(|e| e.count).sum::<u64>() >= 8, "{anon:?}");
    assert!(audit.iter().any(|e| e.key_id == ten.id
        && e.status == 403
        && e.client_ip.as_deref() == Some("127.0.0.1")));
    let e = audit
        .iter()
        .find(|e| e.key_id == rev.id && e.status == 401)
        .unwrap();
    assert!(e.reason.contains("revoked"), "{e:?}");
    assert_eq!(e.repo, "models/cairn-test/private");
    assert_eq!(
        e.route,
        format!("GET /{PRIVATE}/resolve/main/model.safetensors")
    );
    // Reading a public repository is not a use of a key's rights; a refused key is audited
    // wherever it was sent.
    assert!(
        !audit
            .iter()
            .any(|e| e.repo.contains(MODEL) && e.decision == AuditDecision::Allow)
    );
    assert!(
        audit
            .iter()
            .any(|e| e.repo.contains(MODEL) && e.key_id == rev.id && e.status == 401)
    );
    let audit_json = reqwest_admin(&c, &kg, "/admin/audit?limit=10000").await;
    let keys_json = reqwest_admin(&c, &kg, "/admin/keys").await;
    assert!(!keys_json.contains("hash"), "{keys_json}");
    let listed = kg.admin.list_keys().await.unwrap();
    assert!(listed.iter().any(|k| k.id == rev.id && k.revoked));
    assert!(
        listed
            .iter()
            .any(|k| k.id == old.id && k.rotated_to.as_deref() == Some(new.id.as_str()))
    );
    for s in &secrets {
        let secret_part = &s[23..];
        assert!(
            !audit_json.contains(secret_part),
            "a secret in the audit log"
        );
        assert!(!keys_json.contains(secret_part), "a secret in the key list");
    }

    let (dir, _tmp) = kg.shutdown().await;
    let db = std::fs::read(dir.join("gateway.redb")).unwrap();
    for s in &secrets {
        let raw = data_encoding::BASE64URL_NOPAD
            .decode(&s.as_bytes()[23..])
            .unwrap();
        assert!(
            !db.windows(s.len()).any(|w| w == s.as_bytes()),
            "a key in gateway.redb"
        );
        assert!(
            !db.windows(43).any(|w| w == &s.as_bytes()[23..]),
            "a secret in gateway.redb"
        );
        assert!(
            !db.windows(32).any(|w| w == raw.as_slice()),
            "raw secret bytes in gateway.redb"
        );
    }
    fx.shutdown().await;
}

async fn reqwest_admin(c: &reqwest::Client, kg: &Keyed, path: &str) -> String {
    let r = c
        .get(format!("{}{path}", kg.admin_url))
        .bearer_auth(&kg.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    let body = serde_json::json!({"label": "x", "scopes": ["read:prefix:acme/"]});
    for token in [None, Some("wrong"), Some(&kg.token[..kg.token.len() - 1])] {
        for (method, path) in [
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", "/admin/audit"),
            ("POST", "/admin/repos"),
            ("POST", "/admin/keys/0123456789abcdef/revoke"),
            ("POST", "/admin/certs/revoke"),
            ("GET", "/admin/certs/revoked"),
        ] {
            let mut r = match method {
                "GET" => c.get(format!("{}{path}", kg.admin_url)),
                _ => c.post(format!("{}{path}", kg.admin_url)).json(&body),
            };
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
        }
    }
    assert!(
        kg.admin.list_keys().await.unwrap().is_empty(),
        "nothing was created"
    );
    // The client with a wrong token gets the 401 as an error.
    let wrong = AdminClient::new(&kg.admin_url, "x".repeat(43)).unwrap();
    match wrong.list_keys().await {
        Err(Error::Admin { status: 401, .. }) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    // The admin API is not on the public listener.
    let r = c
        .get(format!("{}/admin/keys", kg.url))
        .bearer_auth(&kg.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Bad input is a 4xx with a message, and unknown keys are 404.
    let e = kg
        .admin
        .create_key(NewKey {
            label: "x".into(),
            scopes: vec![],
            expires_in_secs: None,
            allow_ips: vec![],
            rate_per_minute: None,
            client_cert: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Admin { status: 400, .. }), "{e}");
    let e = kg.admin.revoke_key("0123456789abcdef").await.unwrap_err();
    assert!(matches!(e, Error::Admin { status: 404, .. }), "{e}");
    let r = c
        .post(format!("{}/admin/keys", kg.admin_url))
        .bearer_auth(&kg.token)
        .json(&serde_json::json!({"label": "x", "scopes": ["write:repo:a/b"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let r = c
        .post(format!("{}/admin/keys", kg.admin_url))
        .bearer_auth(&kg.token)
        .header("content-type", "application/json")
        .body(vec![b' '; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Loopback only, on both ends.
    for url in [
        "http://10.0.0.1:1",
        "https://127.0.0.1:1",
        "http://example.com",
        "127.0.0.1:1",
    ] {
        assert!(
            matches!(
                AdminClient::new(url, "t".into()),
                Err(Error::NotLoopback { .. })
            ),
            "{url}"
        );
    }
    assert!(AdminClient::new("http://[::1]:1/", "t".into()).is_ok());
    assert!(AdminClient::new("http://localhost:1", "t".into()).is_ok());
    let tmp = tempfile::tempdir().unwrap();
    let r = run_gateway(
        tmp.path(),
        "127.0.0.1:0".parse().unwrap(),
        "0.0.0.0:0".parse::<SocketAddr>().unwrap(),
        Arc::new(LocalSource::new(fx.store.clone())),
        async {},
    )
    .await;
    assert!(matches!(r, Err(Error::NotLoopback { .. })), "{r:?}");
    // A second gateway on the same directory is refused (redb is single-process).
    let r = run_gateway(
        &kg.dir,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(LocalSource::new(fx.store.clone())),
        async {},
    )
    .await;
    assert!(matches!(r, Err(Error::Registry { .. })), "{r:?}");
    kg.shutdown().await;
    fx.shutdown().await;
}
