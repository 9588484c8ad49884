//! Mutual TLS: client certificates as backend credentials, managed through the admin API.
//!
//! Method: a gateway started with `run_gateway` (the `Keyed` fixture of `auth`); keys bound to
//! certificate names and certificate revocations are made through `AdminClient` and raw JSON,
//! and the answers, the listing and the public endpoints are checked: a key bound to a
//! certificate has no secret anyone can present, cannot be rotated, and revocations are stored
//! in canonical form, once.

use std::time::Duration;

use cairn_gateway::{CertRevocation, Error, RevokeCert};
use reqwest::StatusCode;

use crate::auth::{Keyed, denied, get, new_key};
use crate::{Fixture, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keys_and_revocations_through_the_admin_api() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start(&fx).await;
    let c = client();
    let file = fx.files["model.safetensors"].clone();
    let url = format!("{}/acme/one/resolve/main/model.safetensors", kg.url);

    let mut nk = new_key(&["read:repo:acme/one"], None, &[], None);
    nk.client_cert = Some("dns:Backend-1.Example".parse().unwrap());
    let k = kg.admin.create_key(nk).await.unwrap();
    assert!(
        k.key.is_empty(),
        "a key bound to a certificate has no secret"
    );
    let list = kg.admin.list_keys().await.unwrap();
    let info = list.iter().find(|i| i.id == k.id).unwrap();
    assert_eq!(
        info.client_cert.as_ref().map(|n| n.to_string()).as_deref(),
        Some("dns:backend-1.example")
    );
    // Its id with any secret is an unknown key, on every route.
    let forged = format!("cairn_{}_{}", k.id, "A".repeat(43));
    assert!(cairn_gateway::parse_api_key(&forged).is_ok());
    denied(
        &get(&c, &url, Some(&forged)).await,
        401,
        &file,
        "a certificate key's id as a bearer key",
    );
    // No secret to rotate.
    match kg.admin.rotate_key(&k.id, Duration::from_secs(60)).await {
        Err(Error::Admin {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("--client-cert"), "{message}"),
        other => panic!("rotating a certificate key: {other:?}"),
    }
    // A name the gateway could never match is refused when the key is made.
    for bad in ["ip:10.0.0.1", "cn:", "dns:b\u{e9}.example"] {
        let r = c
            .post(format!("{}/admin/keys", kg.admin_url))
            .bearer_auth(&kg.token)
            .json(&serde_json::json!({
                "label": "x", "scopes": ["read:repo:acme/one"], "client_cert": bad
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }

    // Revocations: canonical hex, stored once, listed.
    let r = kg
        .admin
        .revoke_cert(RevokeCert {
            what: CertRevocation::serial("00:8F:01").unwrap(),
            label: "lost laptop".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.what, CertRevocation::Serial("8f01".into()));
    let fp = "AB:".repeat(31) + "CD";
    let raw = c
        .post(format!("{}/admin/certs/revoke", kg.admin_url))
        .bearer_auth(&kg.token)
        .json(&serde_json::json!({ "sha256": fp }))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::CREATED);
    for bad in [
        serde_json::json!({ "serial": "zz" }),
        serde_json::json!({ "serial": "ab".repeat(21) }),
        serde_json::json!({ "sha256": "abcd" }),
        serde_json::json!({ "serial": "01", "label": "a\nb" }),
    ] {
        let r = c
            .post(format!("{}/admin/certs/revoke", kg.admin_url))
            .bearer_auth(&kg.token)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let again = kg
        .admin
        .revoke_cert(RevokeCert {
            what: CertRevocation::Serial("8F01".into()),
            label: "again".into(),
        })
        .await
        .unwrap();
    assert_eq!(again, r, "the first entry stands");
    let list = kg.admin.revoked_certs().await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.what.clone()).collect::<Vec<_>>(),
        [
            CertRevocation::Sha256("ab".repeat(31) + "cd"),
            CertRevocation::Serial("8f01".into()),
        ]
    );
    let (_dir, _guard) = kg.shutdown().await;
    fx.shutdown().await;
}
