//! `cairn apikey` for mutual TLS: keys bound to a client certificate name and revoked
//! certificates, through the real binary and a running `cairn gateway` (the HTTPS side is in
//! the gateway's own tests, `mtls::mutual_tls_end_to_end`).
//!
//! Method: a gateway over a data directory's local store; every command's output and exit code
//! is checked: a bound key prints no secret, cannot be rotated, shows its name in the listing;
//! names and hex the gateway could never match are refused before anything is stored.

use crate::private::LocalGateway;
use crate::util::*;

#[test]
fn apikey_commands_bind_keys_to_certificates_and_revoke_certificates() {
    let node = Node::new("1GiB");
    let gw = LocalGateway::start(&node.dir);
    let out = node.ok(&[
        "apikey",
        "create",
        "--scope",
        "read:repo:org/m",
        "--client-cert",
        "dns:Backend-1.Example",
        "--label",
        "backend-1",
    ]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {out}"))
        .to_string();
    assert!(
        out.contains("client certificate: dns:backend-1.example"),
        "{out}"
    );
    assert!(
        !out.contains("key:") && !out.contains("cairn_"),
        "no secret printed: {out}"
    );
    let list = node.ok(&["apikey", "list"]);
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("client-cert=dns:backend-1.example"), "{line}");
    let e = node.fails(&["apikey", "rotate", &id]);
    assert!(e.contains("--client-cert"), "{e}");
    for bad in ["ip:10.0.0.1", "cn:", "CN:x"] {
        let e = node.fails(&[
            "apikey",
            "create",
            "--scope",
            "read:repo:org/m",
            "--client-cert",
            bad,
        ]);
        assert!(e.contains("invalid certificate name"), "{bad}: {e}");
    }

    let out = node.ok(&[
        "apikey",
        "revoke-cert",
        "--serial",
        "00:8F:01",
        "--label",
        "lost laptop",
    ]);
    assert!(out.contains("serial number 8f01"), "{out}");
    let fp = "AB:".repeat(31) + "CD";
    node.ok(&["apikey", "revoke-cert", "--fingerprint", &fp]);
    for bad in [
        &["--serial", "xyz"][..],
        &["--fingerprint", "abcd"],
        &[],
        &["--serial", "01", "--fingerprint", &fp],
    ] {
        let mut args = vec!["apikey", "revoke-cert"];
        args.extend_from_slice(bad);
        let o = node.run(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
    let certs = node.ok(&["apikey", "certs"]);
    let rows: Vec<serde_json::Value> = certs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{certs}");
    assert_eq!(rows[0]["sha256"], "ab".repeat(31) + "cd");
    assert_eq!(rows[1]["serial"], "8f01");
    assert_eq!(rows[1]["label"], "lost laptop");
    gw.stop();
}
