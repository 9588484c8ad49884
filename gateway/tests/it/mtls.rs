//! Mutual TLS: client certificates as backend credentials.
//!
//! Method: a gateway started with `run_gateway_with` (the `Keyed` fixture of `auth`), over
//! HTTPS with a client CA for the end-to-end test; test CAs and certificates are made with
//! rcgen (chosen names and serials, an expired one, one from a CA the gateway does not know);
//! clients are reqwest and raw tokio-rustls + hyper connections (one connection kept open across
//! a revocation) with rustls on ring. Keys bound to certificate names and revocations are made
//! through `AdminClient` and raw JSON. Every denial is checked for its status, error code and
//! body as in `auth`.

use std::sync::Arc;
use std::time::Duration;

use cairn_gateway::{
    CertRevocation, Error, GatewayConfig, LocalCa, RevokeCert, TlsFiles, write_key,
};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::auth::{Keyed, denied, get, new_key, served};
use crate::{Fixture, MODEL, client};

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

/// Test certificates: the gateway's own (from a server CA the clients trust), and a client CA
/// whose certificates authenticate backends, with chosen names, serials and validity.
struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    server_ca: CertificateDer<'static>,
    client_ca: Issuer<'static, KeyPair>,
}

/// A client's certificate and key.
struct ClientId {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientId {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    (Issuer::new(p, key), pem)
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = LocalCa::new("test server CA", Duration::from_secs(86_400)).unwrap();
        let server = server_ca
            .issue_server(&["127.0.0.1", "localhost"], Duration::from_secs(86_400))
            .unwrap();
        let (client_ca, client_ca_pem) = new_ca("test backends CA");
        let files = TlsFiles {
            cert: dir.path().join("gateway.pem"),
            key: dir.path().join("gateway.key"),
            client_ca: Some(dir.path().join("backends-ca.pem")),
        };
        std::fs::write(&files.cert, &server.cert_pem).unwrap();
        write_key(&files.key, &server.key_pem).unwrap();
        std::fs::write(files.client_ca.as_ref().unwrap(), client_ca_pem).unwrap();
        Pki {
            server_ca: CertificateDer::from_pem_slice(server_ca.cert_pem().as_bytes()).unwrap(),
            _dir: dir,
            files,
            client_ca,
        }
    }

    /// A client certificate signed by `issuer`, common name `cn`, serial `serial`; expired
    /// since 2021 when `expired`.
    fn issue(issuer: &Issuer<'_, KeyPair>, cn: &str, serial: &[u8], expired: bool) -> ClientId {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from_slice(serial));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        ClientId {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    fn client(&self, cn: &str, serial: &[u8]) -> ClientId {
        Self::issue(&self.client_ca, cn, serial, false)
    }

    /// A rustls client configuration trusting the gateway's CA, presenting `id` if given.
    fn tls(&self, id: Option<&ClientId>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        match id {
            Some(id) => b
                .with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())
                .unwrap(),
            None => b.with_no_client_auth(),
        }
    }

    fn https(&self, id: Option<&ClientId>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.tls(id))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

/// One TLS connection (HTTP/1.1) kept open across requests, to show that a revocation reaches
/// connections opened before it.
struct OneConnection {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    host: String,
}

impl OneConnection {
    async fn open(url: &str, cfg: rustls::ClientConfig) -> OneConnection {
        let host = url.strip_prefix("https://").unwrap().to_string();
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        OneConnection { send, host }
    }

    /// GET `path` on this connection: the status.
    async fn get(&mut self, path: &str) -> u16 {
        let req = hyper::Request::get(path)
            .header("host", &self.host)
            .body(http_body_util::Empty::new())
            .unwrap();
        let fut = async {
            self.send
                .ready()
                .await
                .expect("the connection is still open");
            let resp = self.send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            resp.into_body().collect().await.unwrap();
            status
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("an answer within 30 s")
    }
}

/// The error chain of a failed request, as text.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Mutual TLS end to end over real HTTPS: a certificate from the CA with a bound name reads
/// what its key's scopes allow and nothing else (other repositories look missing); another CA
/// and an expired certificate are refused at the handshake; a revoked certificate (by serial
/// number, by fingerprint) is refused (401) from its next request, on a connection opened before
/// the revocation too; without a certificate, bearer keys work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_end_to_end() {
    let fx = Fixture::start(300_000).await;
    let pki = Pki::new();
    let config = GatewayConfig {
        tls: Some(pki.files.clone()),
        ..GatewayConfig::default()
    };
    let kg = Keyed::start_with(&fx, config).await;
    assert!(kg.url.starts_with("https://127.0.0.1:"), "{}", kg.url);
    let file = fx.files["model.safetensors"].clone();
    let path = |repo: &str| format!("/{repo}/resolve/main/model.safetensors");
    let url = |repo: &str| format!("{}{}", kg.url, path(repo));

    let mut nk = new_key(&["read:repo:acme/one"], None, &[], None);
    nk.client_cert = Some("cn:backend-1".parse().unwrap());
    let bound = kg.admin.create_key(nk).await.unwrap();
    let bearer = kg.key(&["read:repo:acme/two"]).await;

    // A certificate bound to a key: its scope, nothing else; public repositories as usual.
    let a = pki.client("backend-1", &[0x0a, 0x01]);
    let ca = pki.https(Some(&a));
    served(
        &get(&ca, &url("acme/one"), None).await,
        &file,
        "bound certificate",
    );
    denied(
        &get(&ca, &url("acme/two"), None).await,
        404,
        &file,
        "bound certificate, out of scope",
    );
    denied(
        &get(&ca, &url("other/x"), None).await,
        404,
        &file,
        "bound certificate, another organisation",
    );
    served(
        &get(&ca, &url(MODEL), None).await,
        &file,
        "public, with a certificate",
    );
    // It wins over a bearer header: a stale token changes nothing, another key adds nothing.
    served(
        &get(&ca, &url("acme/one"), Some("hf_stale_token")).await,
        &file,
        "certificate and a stale token",
    );
    denied(
        &get(&ca, &url("acme/two"), Some(&bearer.key)).await,
        404,
        &file,
        "certificate and another key's token",
    );

    // No certificate: bearer keys as before.
    let plain = pki.https(None);
    served(
        &get(&plain, &url("acme/two"), Some(&bearer.key)).await,
        &file,
        "bearer, no certificate",
    );
    denied(
        &get(&plain, &url("acme/one"), None).await,
        404,
        &file,
        "nothing",
    );
    // A certificate bound to no key: the bearer key decides.
    let nobody = pki.https(Some(&pki.client("nobody", &[0x33])));
    served(
        &get(&nobody, &url("acme/two"), Some(&bearer.key)).await,
        &file,
        "unbound certificate with a bearer key",
    );
    denied(
        &get(&nobody, &url("acme/one"), None).await,
        404,
        &file,
        "unbound certificate",
    );

    // Another CA, and an expired certificate from the right CA: no connection.
    let (other_ca, _) = new_ca("someone else's CA");
    let foreign = Pki::issue(&other_ca, "backend-1", &[0x0a, 0x01], false);
    let expired = Pki::issue(&pki.client_ca, "backend-1", &[0x0a, 0x02], true);
    for (what, id) in [("another CA", &foreign), ("expired", &expired)] {
        let e = pki
            .https(Some(id))
            .get(url("acme/one"))
            .send()
            .await
            .expect_err(what);
        let text = chain(&e);
        assert!(
            text.contains("alert"),
            "{what}: refused by the server's alert, got {text}"
        );
    }
    served(
        &get(&ca, &url("acme/one"), None).await,
        &file,
        "still serving",
    );

    // Revocation by serial number reaches a connection opened before it.
    let mut conn = OneConnection::open(&kg.url, pki.tls(Some(&a))).await;
    assert_eq!(conn.get(&path("acme/one")).await, 200);
    kg.admin
        .revoke_cert(RevokeCert {
            what: CertRevocation::serial("0A01").unwrap(),
            label: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        conn.get(&path("acme/one")).await,
        401,
        "the open connection"
    );
    assert_eq!(conn.get(&path(MODEL)).await, 401, "on every route");
    denied(
        &get(&ca, &url("acme/one"), None).await,
        401,
        &file,
        "revoked by serial",
    );
    denied(
        &get(&pki.https(Some(&a)), &url("acme/two"), Some(&bearer.key)).await,
        401,
        &file,
        "revoked, with a valid bearer key",
    );

    // Revocation by fingerprint: another certificate with the same name and a new serial.
    let b = pki.client("backend-1", &[0x0b]);
    let mut conn = OneConnection::open(&kg.url, pki.tls(Some(&b))).await;
    assert_eq!(conn.get(&path("acme/one")).await, 200);
    let fp = cairn_gateway::cert_sha256(&b.cert);
    kg.admin
        .revoke_cert(RevokeCert {
            what: CertRevocation::fingerprint(&fp).unwrap(),
            label: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        conn.get(&path("acme/one")).await,
        401,
        "the open connection"
    );
    // A third certificate with the name is still the key.
    let c = pki.https(Some(&pki.client("backend-1", &[0x0c])));
    served(
        &get(&c, &url("acme/one"), None).await,
        &file,
        "unrevoked certificate",
    );

    // The audit log names the key and the certificate (its fingerprint), never the DER.
    let audit = kg.admin.audit(1000).await.unwrap();
    let a_fp = cairn_gateway::cert_sha256(&a.cert);
    let by_a: Vec<(&str, u16)> = audit
        .iter()
        .filter(|e| e.client_cert.as_ref().is_some_and(|c| c.sha256 == a_fp))
        .map(|e| (e.key_id.as_str(), e.status))
        .collect();
    assert!(by_a.contains(&(bound.id.as_str(), 200)), "{by_a:?}");
    assert!(by_a.contains(&(bound.id.as_str(), 401)), "{by_a:?}");
    let text = serde_json::to_string(&audit).unwrap();
    let der_hex = data_encoding::HEXLOWER.encode(&a.cert);
    assert!(
        !text.contains(&der_hex[..64]),
        "no certificate bytes in the log"
    );

    let (_dir, _guard) = kg.shutdown().await;
    fx.shutdown().await;
}
