//! Names, grants and records on the network, over a 7-node devnet with two publishers and two
//! gateways, each a real `cairn` process; the gateways are read by the unmodified
//! `huggingface_hub` and over plain HTTP.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_encryption::GatewaySecret;

use crate::devnet::*;
use crate::gateway::python_against;
use crate::util::*;

/// How long a new revision or a revocation may take to reach a gateway: its name cache lives
/// 5 s, and a lookup is a few requests.
const NAME_PROPAGATION: Duration = Duration::from_secs(30);

fn model(dir: &Path, config: &str, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("config.json"), config).unwrap();
    fs::write(dir.join("model.safetensors"), pseudo_random(seed, 3 << 20)).unwrap();
}

fn publisher(net: &Devnet, name: &str) -> PathBuf {
    let p = net.tmp.path().join(name);
    init(&p, "1GiB");
    p
}

/// The grant id of the data directory `dir`, as `cairn id` prints it; it is the id of the
/// `grant.key` the gateway made at start (owner-only).
fn grant_id(dir: &Path) -> String {
    let mut c = cairn();
    c.arg("--data-dir").arg(dir).arg("id");
    let (out, _) = ok(c);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("grant: "))
        .unwrap_or_else(|| panic!("no grant id in {out}"))
        .to_string();
    let key = dir.join("grant.key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&key).unwrap().permissions()) & 0o077,
        0,
        "the grant key is readable by others"
    );
    let bytes = fs::read(key).unwrap();
    assert_eq!(
        GatewaySecret::from_slice(&bytes).unwrap().id().to_string(),
        id
    );
    id
}

/// `revision: <commit>` from `cairn add --name` or `cairn grant`.
fn revision_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("revision: "))
        .unwrap_or_else(|| panic!("no revision in {stdout}"))
        .trim()
        .to_string()
}

/// Status and body of a GET.
fn get(url: &str) -> (u16, Vec<u8>) {
    test_runtime().block_on(async {
        let r = tokio::time::timeout(Duration::from_secs(60), http_client().get(url).send())
            .await
            .expect("the gateway answers within 60 s")
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    })
}

fn config_at(gw: &DevGateway, repo: &str, rev: &str) -> (u16, Vec<u8>) {
    get(&format!("{}/{repo}/resolve/{rev}/config.json", gw.url))
}

/// The whole flow a marketplace needs: publisher A names a model and grants gateway 1 only;
/// gateway 1 serves it to the unmodified `huggingface_hub` without any `register`, gateway 2
/// answers 404 (never 403); a second publisher can neither claim A's org nor read A's model
/// until A delegates the org to its key (then its model in the org is served); A's
/// revision 2 reaches gateway 1 within seconds while the old commit still serves revision 1;
/// `cairn log` lists both, `cairn get org/name` works for the publisher; and a revocation makes
/// gateway 1 stop serving `main`.
#[test]
fn granted_gateways_serve_names_from_the_network_and_no_other_does() {
    let net = Devnet::with_nodes(7);
    let gw1 = net.start_gateway_with("gateway-1", &[]);
    let gw2 = net.start_gateway_with("gateway-2", &[]);
    let (id1, id2) = (grant_id(&gw1.dir), grant_id(&gw2.dir));
    assert_ne!(id1, id2);
    let a = publisher(&net, "publisher-a");
    let b = publisher(&net, "publisher-b");
    let v1 = net.tmp.path().join("v1");
    model(&v1, r#"{"revision": 1}"#, 1);

    // Revision 1, granted to gateway 1.
    let (out, _) = ok(net.add_cmd(&a, &v1, &["--name", "acme/model", "--grant", &id1]));
    let rev1 = revision_of(&out);
    assert_eq!(rev1.len(), 40);

    // Gateway 1 serves it to huggingface_hub, unregistered.
    let script = r#"
from huggingface_hub import snapshot_download, HfApi
info = HfApi().model_info("acme/model")
print(info.sha)
print(snapshot_download("acme/model"))
"#;
    let hf = net.tmp.path().join("hf-home");
    let out = python_against(&gw1.url, &hf, "huggingface_hub", script);
    let mut lines = out.trim().lines();
    assert_eq!(lines.next(), Some(rev1.as_str()), "{out}");
    let snapshot = PathBuf::from(lines.last().unwrap());
    assert_same_tree(&v1, &snapshot);

    // Gateway 2 was not granted: 404 everywhere, exactly as for a repository that does not
    // exist.
    for url in [
        format!("{}/api/models/acme/model", gw2.url),
        format!("{}/acme/model/resolve/main/config.json", gw2.url),
        format!("{}/acme/model/resolve/{rev1}/config.json", gw2.url),
    ] {
        assert_eq!(get(&url).0, 404, "{url}");
    }
    let missing = get(&format!("{}/api/models/nobody/nothing", gw2.url));
    let not_granted = get(&format!("{}/api/models/acme/model", gw2.url));
    assert_eq!(missing.0, not_granted.0);

    // Publisher B cannot publish into A's org, in any case, and cannot read A's model by name.
    let v_b = net.tmp.path().join("b");
    model(&v_b, r#"{"squatter": true}"#, 2);
    for repo in ["acme/model", "ACME/other"] {
        let err = fails(net.add_cmd(&b, &v_b, &["--name", repo, "--grant", &id1]));
        assert!(
            err.contains("owned by key") || err.contains("ORG_CLAIMED"),
            "{repo}: {err}"
        );
    }
    let mut get_b = net.cli();
    get_b
        .arg("--data-dir")
        .arg(&b)
        .args(["get", "acme/model", "-o"])
        .arg(net.tmp.path().join("b-out"));
    let err = fails(get_b);
    assert!(err.contains("not granted"), "{err}");
    // Gateway 1 still serves A's revision 1, not B's bytes.
    assert_eq!(
        config_at(&gw1, "acme/model", "main"),
        (200, br#"{"revision": 1}"#.to_vec())
    );
    // A delegates org acme to B's key: B then names a model in it, signed by B's key under
    // the delegation, and gateway 1 serves it. A delegation altered on the way does not join.
    let key_of = |dir: &Path| -> String {
        let mut c = cairn();
        c.arg("--data-dir").arg(dir).arg("id");
        let (out, _) = ok(c);
        out.lines()
            .find_map(|l| l.strip_prefix("publisher: "))
            .unwrap_or_else(|| panic!("no publisher key in {out}"))
            .to_string()
    };
    let (key_a, key_b) = (key_of(&a), key_of(&b));
    let mut delegate = cairn();
    delegate
        .arg("--data-dir")
        .arg(&a)
        .args(["org", "delegate", "acme", "--member", &key_b, "--for", "1d"]);
    let token = ok(delegate).0.trim().to_string();
    assert!(token.starts_with("cairn-delegation1:acme:"), "{token}");
    let join = |token: &str| {
        let mut c = cairn();
        c.arg("--data-dir").arg(&b).args(["org", "join", token]);
        c
    };
    let forged = token.replacen(":acme:", ":acmf:", 1);
    let err = fails(join(&forged));
    assert!(err.contains("not signed by the org key"), "{err}");
    let err = fails(join(&token.replacen(&key_b, &key_a, 1)));
    assert!(err.contains("not signed by the org key"), "{err}");
    ok(join(&token));
    let v_tools = net.tmp.path().join("tools");
    model(&v_tools, r#"{"member": "b"}"#, 4);
    ok(net.add_cmd(&b, &v_tools, &["--name", "acme/tools", "--grant", &id1]));
    assert_eq!(
        config_at(&gw1, "acme/tools", "main"),
        (200, br#"{"member": "b"}"#.to_vec())
    );
    let mut log = net.cli();
    log.args(["log", "acme/tools", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&ok(log).0).unwrap();
    assert_eq!(rows[0]["org_key"], key_a.as_str());
    assert_eq!(rows[0]["signer"], key_b.as_str());

    // B's own org, granted to gateway 2 only: gateway 1 says 404.
    ok(net.add_cmd(&b, &v_b, &["--name", "beta/thing", "--grant", &id2]));
    assert_eq!(config_at(&gw2, "beta/thing", "main").0, 200);
    assert_eq!(config_at(&gw1, "beta/thing", "main").0, 404);

    // Revision 2: no --grant, gateway 1 keeps its grant; served within seconds.
    let v2 = net.tmp.path().join("v2");
    model(&v2, r#"{"revision": 2}"#, 3);
    let (out, _) = ok(net.add_cmd(&a, &v2, &["--name", "acme/model"]));
    let rev2 = revision_of(&out);
    assert_ne!(rev1, rev2);
    let took = wait_until("gateway 1 to serve revision 2", NAME_PROPAGATION, || {
        config_at(&gw1, "acme/model", "main") == (200, br#"{"revision": 2}"#.to_vec())
    });
    eprintln!("revision 2 reached gateway 1 in {took:?}");
    // The old commit still serves revision 1, through huggingface_hub too.
    assert_eq!(
        config_at(&gw1, "acme/model", &rev1),
        (200, br#"{"revision": 1}"#.to_vec())
    );
    let script = format!(
        r#"
from huggingface_hub import hf_hub_download
print(open(hf_hub_download("acme/model", "config.json", revision="{rev1}")).read())
print(open(hf_hub_download("acme/model", "config.json")).read())
"#
    );
    let out = python_against(&gw1.url, &hf, "huggingface_hub", &script);
    assert_eq!(
        out.trim().lines().collect::<Vec<_>>(),
        [r#"{"revision": 1}"#, r#"{"revision": 2}"#],
        "{out}"
    );

    // The log lists both revisions, newest first; the publisher reads by name.
    let mut log = net.cli();
    log.args(["log", "acme/model", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&ok(log).0).unwrap();
    let commits: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["commit"].as_str().unwrap())
        .collect();
    assert_eq!(commits, [rev2.as_str(), rev1.as_str()]);
    let out_dir = net.tmp.path().join("a-out");
    let mut get_a = net.cli();
    get_a
        .arg("--data-dir")
        .arg(&a)
        .args(["get", &format!("acme/model@{}", &rev1[..12]), "-o"])
        .arg(&out_dir);
    ok(get_a);
    assert_same_tree(&v1, &out_dir);

    // Revocation: the next record is not wrapped to gateway 1; it stops serving main (404),
    // while what it could already unwrap (the older commits) cannot be taken back.
    let mut revoke = net.cli();
    revoke
        .arg("--data-dir")
        .arg(&a)
        .args(["grant", "acme/model", "--gateway", &id1, "--revoke"]);
    ok(revoke);
    wait_until("gateway 1 to stop serving main", NAME_PROPAGATION, || {
        config_at(&gw1, "acme/model", "main").0 == 404
    });
    assert_eq!(get(&format!("{}/api/models/acme/model", gw1.url)).0, 404);
    assert_eq!(
        config_at(&gw1, "acme/model", &rev2).0,
        404,
        "the revoked revision"
    );
    assert_eq!(
        config_at(&gw1, "acme/model", &rev1),
        (200, br#"{"revision": 1}"#.to_vec()),
        "an older revision's key was given and stays given"
    );
}
