//! On-chain access at the gateway, against a real local chain: a `cairn gateway` process
//! pointed at an anvil (`--chain 31337=…`), OpenZeppelin tokens deployed and minted from fresh
//! keys, wallets signing in with EIP-4361 messages over real HTTP, and every denial checked for
//! its status, its `X-Error-Code` and for not carrying a byte of the artifact.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde_json::{Value, json};

use crate::anvil::*;
use crate::devnet::{DevGateway, cairn};
use crate::util::*;

/// The file every gated repository holds, and its bytes.
const FILE: &str = "weights.bin";
const TIMEOUT: Duration = Duration::from_secs(60);

/// An answer: status, `X-Error-Code`, body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    code: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = tokio::time::timeout(TIMEOUT, req.send())
        .await
        .expect("answer in time")
        .unwrap();
    let status = r.status().as_u16();
    let code = r
        .headers()
        .get("x-error-code")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Answer {
        status,
        code,
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// RFC 3339 of Unix seconds, UTC (whole seconds, as wallets write them).
fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What a test message says; `Default` is a good one for the gateway at `domain`.
#[derive(Clone)]
struct Msg {
    domain: String,
    uri: String,
    chain: u64,
    nonce: String,
    issued: i64,
    expires: Option<i64>,
    not_before: Option<i64>,
}

impl Msg {
    fn text(&self, address: Address) -> String {
        let mut s = format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to read gated models.\n\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.domain,
            address.to_checksum(None),
            self.uri,
            self.chain,
            self.nonce,
            rfc3339(self.issued)
        );
        if let Some(e) = self.expires {
            s += &format!("\nExpiration Time: {}", rfc3339(e));
        }
        if let Some(n) = self.not_before {
            s += &format!("\nNot Before: {}", rfc3339(n));
        }
        s
    }
}

/// A gateway over a local store with one artifact, pointed at an anvil with the tokens
/// deployed.
pub(crate) struct Setup {
    pub(crate) anvil: Anvil,
    d: Deployed,
    _node: Node,
    pub(crate) gw: DevGateway,
    cap: String,
    ds_cap: String,
    data: Vec<u8>,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) http: reqwest::Client,
}

const PASS_ID: u64 = 7;
const NFT_ID: u64 = 42;

impl Setup {
    pub(crate) fn new(extra: &[&str]) -> Setup {
        Setup::with(2, extra)
    }

    /// As [`Setup::new`], believing the chain's allows for `cache_secs`.
    fn with(cache_secs: u32, extra: &[&str]) -> Setup {
        let rt = test_runtime();
        let anvil = Anvil::start();
        let d = rt.block_on(deploy_all(&anvil));
        let node = Node::new("1GiB");
        let src = node.tmp.path().join("model");
        std::fs::create_dir_all(&src).unwrap();
        let data = pseudo_random(12, 300_000);
        std::fs::write(src.join(FILE), &data).unwrap();
        std::fs::write(src.join("config.json"), br#"{"model_type": "gpt2"}"#).unwrap();
        let cap = node.add(&src).to_string();
        // A small dataset, added before the gateway holds the store.
        let ds = node.tmp.path().join("ds");
        std::fs::create_dir_all(ds.join("data")).unwrap();
        let rows: String = (0..50)
            .map(|i| format!("{{\"id\": {i}, \"text\": \"row {i}\"}}\n"))
            .collect();
        std::fs::write(ds.join("data/train.jsonl"), rows).unwrap();
        let ds_cap = node.add(&ds).to_string();
        let chain = format!("31337={}", anvil.url);
        let cache = cache_secs.to_string();
        let mut args = vec![
            "--chain",
            chain.as_str(),
            "--chain-cache-secs",
            cache.as_str(),
        ];
        args.extend_from_slice(extra);
        let gw = DevGateway::start_local_with(&node.dir, &args);
        Setup {
            anvil,
            d,
            _node: node,
            gw,
            cap,
            ds_cap,
            data,
            rt,
            http: http_client(),
        }
    }

    pub(crate) fn gate(&self, repo: &str, policy: &str) {
        self.gw.register(repo, &self.cap, &["--gate", policy]);
    }

    pub(crate) fn pass(&self) -> String {
        format!("erc1155:31337:{}:{PASS_ID}>=1", self.d.erc1155)
    }

    fn domain(&self) -> String {
        self.gw.url.trim_start_matches("http://").to_string()
    }

    fn nonce(&self) -> String {
        let a = self
            .rt
            .block_on(send(self.http.get(format!("{}/auth/nonce", self.gw.url))));
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        assert_eq!(j["domain"], self.domain());
        assert_eq!(j["chains"], json!([31337]));
        j["nonce"].as_str().unwrap().to_string()
    }

    /// A good message for this gateway with a fresh nonce.
    fn msg(&self) -> Msg {
        Msg {
            domain: self.domain(),
            uri: format!("{}/auth", self.gw.url),
            chain: 31337,
            nonce: self.nonce(),
            issued: now(),
            expires: Some(now() + 3600),
            not_before: None,
        }
    }

    fn post_siwe(&self, body: String) -> Answer {
        self.rt.block_on(send(
            self.http
                .post(format!("{}/auth/siwe", self.gw.url))
                .header("content-type", "application/json")
                .body(body),
        ))
    }

    /// Signs `m` as `address` with `signer` and posts it.
    fn sign_in_as(&self, m: &Msg, address: Address, signer: &PrivateKeySigner) -> Answer {
        let text = m.text(address);
        let sig = signer.sign_message_sync(text.as_bytes()).unwrap();
        let body = json!({
            "message": text,
            "signature": format!("0x{}", data_encoding::HEXLOWER.encode(&sig.as_bytes())),
        });
        self.post_siwe(body.to_string())
    }

    /// A session token for `signer` (asserting the sign-in succeeds).
    fn token(&self, signer: &PrivateKeySigner) -> String {
        let a = self.sign_in_as(&self.msg(), signer.address(), signer);
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        assert_eq!(j["address"], signer.address().to_checksum(None));
        j["token"].as_str().unwrap().to_string()
    }

    pub(crate) fn get(&self, repo: &str, token: Option<&str>) -> Answer {
        let mut r = self
            .http
            .get(format!("{}/{repo}/resolve/main/{FILE}", self.gw.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.rt.block_on(send(r))
    }

    /// The file is served, whole.
    pub(crate) fn served(&self, repo: &str, token: Option<&str>) {
        let a = self.get(repo, token);
        assert_eq!(a.status, 200, "{repo}: {}", a.text());
        assert!(a.body == self.data, "{repo}: the body is not the file");
    }

    /// 403 `GatedRepo`, and no byte of the file in the answer.
    fn denied(&self, repo: &str, token: Option<&str>) {
        let a = self.get(repo, token);
        assert_eq!(
            (a.status, a.code.as_str()),
            (403, "GatedRepo"),
            "{repo}: {}",
            a.text()
        );
        assert_no_file_bytes(&a.body, &self.data);
    }

    pub(crate) fn mint1155(&self, to: Address, amount: u64) {
        self.rt.block_on(mint1155(
            &self.anvil,
            &self.d,
            to,
            U256::from(PASS_ID),
            U256::from(amount),
        ));
    }
}

/// No 64-byte window of the file appears in a denial's body.
fn assert_no_file_bytes(body: &[u8], data: &[u8]) {
    assert!(body.len() < 4096, "a denial of {} bytes", body.len());
    for w in data.chunks(64).take(64) {
        assert!(
            !body.windows(w.len()).any(|b| b == w),
            "a denial carries file bytes"
        );
    }
}

/// Waits past the gateway's allow cache (`--chain-cache-secs 2`).
fn past_the_cache() {
    std::thread::sleep(Duration::from_millis(2300));
}

#[test]
fn holders_of_each_standard_read_and_others_get_gated_repo() {
    let s = Setup::new(&[]);
    let (pass, nft, tok) = (s.d.erc1155, s.d.erc721, s.d.erc20);
    s.gate("demo/pass", &s.pass());
    s.gate("demo/nft", &format!("erc721:31337:{nft}:{NFT_ID}"));
    s.gate("demo/nft-any", &format!("erc721:31337:{nft}"));
    s.gate("demo/coin", &format!("erc20:31337:{tok}>=100"));
    let both = json!({"all": [
        {"erc1155": {"chain": 31337, "contract": pass.to_string(), "id": PASS_ID.to_string()}},
        {"erc20": {"chain": 31337, "contract": tok.to_string(), "min": "100"}},
    ]});
    let either = json!({"any": [
        {"erc1155": {"chain": 31337, "contract": pass.to_string(), "id": PASS_ID.to_string()}},
        {"erc20": {"chain": 31337, "contract": tok.to_string(), "min": "100"}},
    ]});
    s.gate("demo/both", &both.to_string());
    let file = s.gw.dir.join("either.json");
    std::fs::write(&file, either.to_string()).unwrap();
    s.gate("demo/either", &format!("@{}", file.display()));

    let holder = s.anvil.funded_signer();
    let poor = s.anvil.funded_signer();
    let nobody = s.anvil.funded_signer();
    let other = s.anvil.funded_signer();
    s.mint1155(holder.address(), 1);
    s.rt.block_on(async {
        mint721(&s.anvil, &s.d, holder.address(), U256::from(NFT_ID)).await;
        mint721(&s.anvil, &s.d, other.address(), U256::from(NFT_ID + 1)).await;
        mint20(&s.anvil, &s.d, holder.address(), U256::from(150)).await;
        mint20(&s.anvil, &s.d, poor.address(), U256::from(50)).await;
    });
    let (t_holder, t_poor, t_nobody, t_other) = (
        s.token(&holder),
        s.token(&poor),
        s.token(&nobody),
        s.token(&other),
    );

    // Gated repositories are shown, with `gated`, and their files listed, to anyone.
    let info = s.rt.block_on(send(
        s.http.get(format!("{}/api/models/demo/pass", s.gw.url)),
    ));
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["gated"], "auto");
    assert_eq!(info.json()["private"], false);

    for repo in [
        "demo/pass",
        "demo/nft",
        "demo/nft-any",
        "demo/coin",
        "demo/both",
        "demo/either",
    ] {
        s.served(repo, Some(&t_holder));
        // No credential, and a wallet holding nothing.
        s.denied(repo, None);
        s.denied(repo, Some(&t_nobody));
    }
    // A balance below the minimum.
    s.denied("demo/coin", Some(&t_poor));
    s.denied("demo/both", Some(&t_poor));
    // An ERC-721 id owned by someone else; but `balanceOf >= 1` lets any holder in.
    s.denied("demo/nft", Some(&t_other));
    s.served("demo/nft-any", Some(&t_other));
    // `any` lets the ERC-20 holder in without the pass; `all` does not.
    s.rt.block_on(mint20(&s.anvil, &s.d, poor.address(), U256::from(50)));
    past_the_cache();
    s.served("demo/either", Some(&t_poor));
    s.denied("demo/both", Some(&t_poor));

    // A Range request is authorized like the whole file.
    let r = s.rt.block_on(send(
        s.http
            .get(format!("{}/demo/pass/resolve/main/{FILE}", s.gw.url))
            .bearer_auth(&t_holder)
            .header("range", "bytes=100-199"),
    ));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, s.data[100..200]);

    // A session does not open a private repository, and a bad token is refused everywhere.
    s.gw.register("demo/private", &s.cap, &["--private"]);
    let a = s.get("demo/private", Some(&t_holder));
    assert_eq!((a.status, a.code.as_str()), (404, "RepoNotFound"));
    let mut forged = t_holder.clone();
    forged.replace_range(forged.len() - 2.., "AA");
    let a = s.get("demo/pass", Some(&forged));
    assert_eq!(a.status, 401, "{}", a.text());
    assert_no_file_bytes(&a.body, &s.data);

    // An API key scoped to the repository reads it (marketplace backends); another key does
    // not.
    let key = s.gw.apikey("read:repo:demo/pass");
    s.served("demo/pass", Some(&key));
    let key_other = s.gw.apikey("read:repo:demo/other");
    s.denied("demo/pass", Some(&key_other));

    // Every decision of a session is in the audit log, with the address and the block.
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&s.gw.dir)
        .args(["apikey", "audit", "--limit", "200"]);
    let (audit, _) = crate::devnet::ok(c);
    assert!(
        audit.contains(&holder.address().to_checksum(None)) && audit.contains("at block"),
        "{audit}"
    );
    assert!(!audit.contains(&t_holder), "the audit log holds a token");
}

#[test]
fn transfers_and_reorgs_take_access_away() {
    let s = Setup::new(&[]);
    s.gate("demo/pass", &s.pass());
    let holder = s.anvil.funded_signer();
    let buyer = s.anvil.funded_signer();
    s.mint1155(holder.address(), 1);
    let (t_holder, t_buyer) = (s.token(&holder), s.token(&buyer));
    s.served("demo/pass", Some(&t_holder));
    s.denied("demo/pass", Some(&t_buyer));
    // The holder sells the pass: denied once the cache lets go, and the buyer reads.
    s.rt.block_on(transfer1155(
        &s.anvil,
        s.d.erc1155,
        &holder,
        buyer.address(),
        U256::from(PASS_ID),
        U256::ONE,
    ));
    past_the_cache();
    s.denied("demo/pass", Some(&t_holder));
    s.served("demo/pass", Some(&t_buyer));

    // A mint that a reorg removes.
    let late = s.anvil.funded_signer();
    let before = s.anvil.snapshot();
    s.mint1155(late.address(), 1);
    let t_late = s.token(&late);
    s.served("demo/pass", Some(&t_late));
    assert!(s.anvil.revert(&before));
    past_the_cache();
    s.denied("demo/pass", Some(&t_late));

    // Confirmations: a fresh mint does not count until it is 3 blocks deep.
    s.gate("demo/deep", &format!("{},confirmations=3", s.pass()));
    let fresh = s.anvil.funded_signer();
    s.mint1155(fresh.address(), 1);
    let t_fresh = s.token(&fresh);
    s.denied("demo/deep", Some(&t_fresh));
    s.anvil.mine(3);
    past_the_cache();
    s.served("demo/deep", Some(&t_fresh));
}

#[test]
fn sign_in_refuses_every_bad_message() {
    let s = Setup::new(&[]);
    s.gate("demo/pass", &s.pass());
    let who = s.anvil.funded_signer();
    s.mint1155(who.address(), 1);
    let addr = who.address();
    let check = |m: Msg, signer: &PrivateKeySigner, status: u16, want: &str| {
        let a = s.sign_in_as(&m, addr, signer);
        assert_eq!(a.status, status, "{want}: {}", a.text());
        assert!(a.text().contains(want), "{want}: {}", a.text());
        assert!(a.json().get("token").is_none());
    };
    // Nonce replay: the first use works, the second does not.
    let m = s.msg();
    assert_eq!(s.sign_in_as(&m, addr, &who).status, 200);
    check(m.clone(), &who, 401, "nonce");
    // A nonce the gateway never issued.
    check(
        Msg {
            nonce: "abcdefgh12345678".into(),
            ..s.msg()
        },
        &who,
        401,
        "nonce",
    );
    // A made-up nonce with a signature that would need a chain call (a contract wallet's): the
    // nonce is looked up first, so it is refused for its nonce, without asking the chain.
    let m = Msg {
        nonce: "madeupnonce12345".into(),
        ..s.msg()
    };
    let body = json!({
        "message": m.text(addr),
        "signature": format!("0x{}", "ab".repeat(100)),
    });
    let a = s.post_siwe(body.to_string());
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("nonce"), "{}", a.text());
    // Expired; not yet valid; issued in the future; no expiration; valid too long.
    check(
        Msg {
            issued: now() - 7200,
            expires: Some(now() - 3600),
            ..s.msg()
        },
        &who,
        400,
        "expired",
    );
    check(
        Msg {
            not_before: Some(now() + 3600),
            ..s.msg()
        },
        &who,
        400,
        "not valid yet",
    );
    check(
        Msg {
            issued: now() + 3600,
            ..s.msg()
        },
        &who,
        400,
        "future",
    );
    check(
        Msg {
            expires: None,
            ..s.msg()
        },
        &who,
        400,
        "Expiration Time",
    );
    check(
        Msg {
            expires: Some(now() + 3 * 86_400),
            ..s.msg()
        },
        &who,
        400,
        "at most",
    );
    // Wrong domain, wrong URI, a chain the gateway does not check.
    check(
        Msg {
            domain: "evil.example:443".into(),
            ..s.msg()
        },
        &who,
        400,
        "domain",
    );
    check(
        Msg {
            uri: "https://evil.example/auth".into(),
            ..s.msg()
        },
        &who,
        400,
        "URI",
    );
    check(
        Msg {
            chain: 1,
            ..s.msg()
        },
        &who,
        400,
        "chain 1",
    );
    // Signed by another key.
    let thief = s.anvil.funded_signer();
    check(s.msg(), &thief, 401, "signature");
    // The used-up nonces stay used after a failed attempt with a good one? A refused message
    // does not burn its nonce: the owner can still sign in with it.
    let m = s.msg();
    let bad = s.sign_in_as(&m, addr, &thief);
    assert_eq!(bad.status, 401);
    assert_eq!(s.sign_in_as(&m, addr, &who).status, 200);

    // Malformed bodies.
    for (body, want) in [
        ("{".to_string(), "expected JSON"),
        (
            json!({"message": "hello", "signature": "0x00"}).to_string(),
            "EIP-4361",
        ),
        (
            json!({"message": s.msg().text(addr), "signature": "0xnothex"}).to_string(),
            "hex",
        ),
        (
            json!({"message": s.msg().text(addr), "signature": "00"}).to_string(),
            "0x",
        ),
        (
            json!({"message": s.msg().text(addr)}).to_string(),
            "expected JSON",
        ),
        ("x".repeat(20_000), "over"),
    ] {
        let a = s.post_siwe(body);
        assert!(
            a.status == 400 || a.status == 413,
            "{want}: {} {}",
            a.status,
            a.text()
        );
        assert!(
            a.status == 413 || a.text().contains(want),
            "{want}: {}",
            a.text()
        );
    }
    // A signature of the right length that recovers to nobody in particular.
    let text = s.msg().text(addr);
    let a = s.post_siwe(
        json!({"message": text, "signature": format!("0x{}", "11".repeat(65))}).to_string(),
    );
    assert_eq!(a.status, 401, "{}", a.text());

    // Signing out ends the session; the token is refused from then on.
    let t = s.token(&who);
    s.served("demo/pass", Some(&t));
    let out = s.rt.block_on(send(
        s.http
            .delete(format!("{}/auth/session", s.gw.url))
            .bearer_auth(&t),
    ));
    assert_eq!(out.status, 204);
    let a = s.get("demo/pass", Some(&t));
    assert_eq!(a.status, 401);
    assert_no_file_bytes(&a.body, &s.data);
}

#[test]
fn contract_wallets_sign_in_through_erc1271() {
    let s = Setup::new(&[]);
    s.gate("demo/pass", &s.pass());
    let owner = s.anvil.funded_signer();
    let wallet = s.rt.block_on(deploy_wallet1271(&s.anvil, owner.address()));
    s.mint1155(wallet, 1);
    // The owner signs for the wallet: served.
    let a = s.sign_in_as(&s.msg(), wallet, &owner);
    assert_eq!(a.status, 200, "{}", a.text());
    let t = a.json()["token"].as_str().unwrap().to_string();
    s.served("demo/pass", Some(&t));
    // Anyone else signing for the wallet: refused.
    let stranger = s.anvil.funded_signer();
    let a = s.sign_in_as(&s.msg(), wallet, &stranger);
    assert_eq!(a.status, 401, "{}", a.text());
}

#[test]
fn a_chain_that_fails_denies_and_health_says_so() {
    let mut s = Setup::new(&[]);
    let holder = s.anvil.funded_signer();
    s.mint1155(holder.address(), 1);
    s.gate("demo/pass", &s.pass());
    // No contract at the address: `eth_call` answers `0x`, which is a denial, not a zero.
    let empty = Address::repeat_byte(0x42);
    s.gate(
        "demo/absent",
        &format!("erc1155:31337:{empty}:{PASS_ID}>=1"),
    );
    let t = s.token(&holder);
    s.denied("demo/absent", Some(&t));
    // A policy naming a chain the gateway does not check is refused when registered.
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&s.gw.dir)
        .args(["register", "demo/mainnet", &s.cap, "--gate"])
        .arg(format!("erc20:1:{}>=1", s.d.erc20));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chain 1"));

    s.served("demo/pass", Some(&t));
    let health = |s: &Setup| {
        s.rt.block_on(send(s.http.get(format!("{}/healthz", s.gw.url))))
            .text()
    };
    assert_eq!(health(&s), "ok\n");
    // The RPC goes down: denied (well within 3 s, never served from a stale yes past the
    // cache), and /healthz says degraded.
    s.anvil.kill();
    past_the_cache();
    let t0 = Instant::now();
    s.denied("demo/pass", Some(&t));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health(&s).starts_with("degraded") {
        assert!(Instant::now() < deadline, "healthz: {}", health(&s));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(health(&s).contains("31337"));
}

#[test]
fn gateway_refuses_to_start_on_the_wrong_chain() {
    let anvil = Anvil::start();
    let n = Node::new("1GiB");
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&n.dir)
        .args(["gateway", "--listen", "127.0.0.1:0", "--chain"])
        .arg(format!(
            "1={}",
            anvil.url.replace("http://", "http://user:secret-key@")
        ));
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("says it is chain 31337"), "{err}");
    assert!(!err.contains("secret-key"), "{err}");
    assert!(!Path::new(&n.dir.join("gateway/gateway.addr")).exists());
}

/// Unmodified Hugging Face clients with a wallet's session token as `HF_TOKEN`, the wallet
/// signing in from Python with `eth-account` as the devnet's demo tells users to: the model
/// downloads with `snapshot_download`, the dataset loads with `datasets`; without the token the
/// client raises `GatedRepoError`.
#[test]
fn huggingface_clients_read_gated_repos_with_a_wallet_token() {
    let s = Setup::new(&[]);
    s.gate("demo/pass", &s.pass());
    // A gated dataset.
    s.gw.register("demo/data", &s.ds_cap, &["--dataset", "--gate", &s.pass()]);
    let wallet = PrivateKeySigner::random();
    s.mint1155(wallet.address(), 1);
    let key = format!(
        "0x{}",
        data_encoding::HEXLOWER.encode(&wallet.to_bytes()[..])
    );
    let script = r#"
import datetime, json, os, urllib.request
from eth_account import Account
from eth_account.messages import encode_defunct

gw = os.environ["HF_ENDPOINT"]
acct = Account.from_key(os.environ["CAIRN_TEST_WALLET_KEY"])
n = json.load(urllib.request.urlopen(gw + "/auth/nonce"))
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
msg = (f"{n['domain']} wants you to sign in with your Ethereum account:\n{acct.address}\n\n"
       f"Sign in to read gated models.\n\nURI: {n['uri']}\nVersion: 1\n"
       f"Chain ID: {n['chains'][0]}\nNonce: {n['nonce']}\nIssued At: {iso(now)}\n"
       f"Expiration Time: {iso(now + datetime.timedelta(hours=1))}")
sig = acct.sign_message(encode_defunct(text=msg)).signature.hex()
sig = sig if sig.startswith("0x") else "0x" + sig
req = urllib.request.Request(gw + "/auth/siwe", method="POST",
    data=json.dumps({"message": msg, "signature": sig}).encode(),
    headers={"content-type": "application/json"})
os.environ["HF_TOKEN"] = json.load(urllib.request.urlopen(req))["token"]

from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError
try:
    snapshot_download("demo/pass", token=False)
    print("without token: served")
except GatedRepoError:
    print("without token: GatedRepoError")
path = snapshot_download("demo/pass")
print("with token:", open(os.path.join(path, "weights.bin"), "rb").read() == open(os.environ["CAIRN_TEST_FILE"], "rb").read())
from datasets import load_dataset
d = load_dataset("demo/data", split="train")
print("dataset rows:", len(d), d[7]["text"])
"#;
    let file = s._node.tmp.path().join("model").join(FILE);
    let out = crate::gateway::python_against_env(
        &s.gw.url,
        &s._node.tmp.path().join("hf-home"),
        "eth_account",
        script,
        &[
            ("CAIRN_TEST_WALLET_KEY", key.as_str()),
            ("CAIRN_TEST_FILE", file.to_str().unwrap()),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"without token: GatedRepoError"), "{out}");
    assert!(lines.contains(&"with token: True"), "{out}");
    assert!(lines.contains(&"dataset rows: 50 row 7"), "{out}");
}

/// The value of the unlabelled sample `name` in the gateway's metrics.
fn metric(s: &Setup, name: &str) -> u64 {
    let text =
        s.rt.block_on(send(s.http.get(format!("{}/metrics", s.gw.url))))
            .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in the metrics:\n{text}"))
}

/// 1000 concurrent gated range requests from 50 signed-in addresses: every one is answered
/// `206` with the right bytes, and the chain is asked once per address (concurrent checks of
/// one address wait for the first one's call).
#[test]
fn a_thousand_concurrent_gated_ranges_cost_one_chain_check_per_address() {
    let s = Setup::with(
        30,
        &[
            "--sign-ins-per-minute",
            "100",
            "--connections-per-client",
            "1000",
        ],
    );
    s.gate("demo/pass", &s.pass());
    let wallets: Vec<PrivateKeySigner> = (0..50).map(|_| PrivateKeySigner::random()).collect();
    for w in &wallets {
        s.mint1155(w.address(), 1);
    }
    let tokens: Vec<String> = wallets.iter().map(|w| s.token(w)).collect();
    let before = metric(&s, "cairn_gateway_chain_cache_misses_total");
    let url = format!("{}/demo/pass/resolve/main/{FILE}", s.gw.url);
    let len = s.data.len();
    let answers = s.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..1000usize {
            let (http, url, token) = (s.http.clone(), url.clone(), tokens[i % 50].clone());
            let off = (i * 257) % (len - 1000);
            set.spawn(async move {
                let a = send(
                    http.get(&url)
                        .bearer_auth(token)
                        .header("range", format!("bytes={off}-{}", off + 999)),
                )
                .await;
                (off, a)
            });
        }
        set.join_all().await
    });
    let mut bad = 0;
    for (off, a) in &answers {
        if a.status != 206 || a.body != s.data[*off..off + 1000] {
            bad += 1;
        }
    }
    assert_eq!(
        bad,
        0,
        "{bad} of 1000 ranges failed, e.g. {:?}",
        answers
            .iter()
            .find(|(_, a)| a.status != 206)
            .map(|(_, a)| (a.status, a.text()))
    );
    let misses = metric(&s, "cairn_gateway_chain_cache_misses_total") - before;
    assert_eq!(misses, 50, "chain checks for 50 addresses");
}

/// A nonce used by a sign-in stays used when the gateway restarts (SIGKILL, so nothing is
/// flushed at exit): the same signed message is refused by the new process, which takes the
/// old origin as its public origin so that only the nonce can refuse it.
#[test]
fn a_used_nonce_stays_used_across_a_restart() {
    let mut s = Setup::new(&[]);
    let who = s.anvil.funded_signer();
    let m = s.msg();
    assert_eq!(s.sign_in_as(&m, who.address(), &who).status, 200);
    let origin = s.gw.url.clone();
    let chain = format!("31337={}", s.anvil.url);
    s.gw.restart_local(&["--chain", &chain, "--public-origin", &origin]);
    let a = s.sign_in_as(&m, who.address(), &who);
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("nonce"), "{}", a.text());
    // The new process is otherwise fine with that origin: a fresh nonce signs in.
    let n =
        s.rt.block_on(send(s.http.get(format!("{}/auth/nonce", s.gw.url))))
            .json();
    assert_eq!(n["uri"], origin.as_str());
    let fresh = Msg {
        nonce: n["nonce"].as_str().unwrap().to_string(),
        ..m
    };
    let a = s.sign_in_as(&fresh, who.address(), &who);
    assert_eq!(a.status, 200, "{}", a.text());
}
