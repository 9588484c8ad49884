//! HTTPS at the gateway over real TLS on 127.0.0.1: ALPN, trust, certificate rotation under a
//! running download, the refusals at start, and which `X-Forwarded-For` is believed.
//!
//! Certificates come from throwaway CAs made in the test (`LocalCa`, the code behind
//! `cairn devnet --tls`); clients are reqwest over rustls trusting exactly the CA given.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_gateway::{
    AuditDecision, Error, GatewayConfig, IpNet, LocalCa, LocalSource, TlsFiles, run_gateway_with,
};
use reqwest::StatusCode;

use crate::auth::{Keyed, new_key};
use crate::{Fixture, PRIVATE};

const DAY: Duration = Duration::from_secs(86_400);

/// A CA and a server certificate for 127.0.0.1 written into `dir` (`gateway.pem`,
/// `gateway.key` 0600).
fn server_files(dir: &Path) -> (LocalCa, TlsFiles) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = LocalCa::new("test CA", DAY).unwrap();
    let files = TlsFiles {
        cert: dir.join("gateway.pem"),
        key: dir.join("gateway.key"),
        client_ca: None,
    };
    install(&ca, &files);
    (ca, files)
}

/// Issues a server certificate for 127.0.0.1 under `ca` and replaces `files` with it, each file
/// by an atomic rename (the certificate first, as a certificate manager would).
fn install(ca: &LocalCa, files: &TlsFiles) {
    let c = ca.issue_server(&["127.0.0.1", "localhost"], DAY).unwrap();
    let tmp = files.cert.with_extension("new");
    std::fs::write(&tmp, &c.cert_pem).unwrap();
    std::fs::rename(&tmp, &files.cert).unwrap();
    cairn_gateway::write_key(&files.key, &c.key_pem).unwrap();
}

/// A client that trusts only `ca_pem`, offering `alpn`.
fn https_client(ca_pem: &str, alpn: &[&[u8]]) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .no_proxy()
        .timeout(Duration::from_secs(60));
    if !alpn.contains(&&b"h2"[..]) {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn tls_config(files: &TlsFiles) -> GatewayConfig {
    GatewayConfig {
        tls: Some(files.clone()),
        ..GatewayConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_or_http1_and_untrusted_clients_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, files) = server_files(tmp.path());
    let fx = Fixture::start_with(3_000_000, tls_config(&files)).await;
    assert!(fx.url.starts_with("https://"), "{}", fx.url);
    let url = fx.resolve_url("main", "model.safetensors");
    let data = &fx.files["model.safetensors"];

    // A client that offers h2 gets HTTP/2; one that offers only http/1.1 gets HTTP/1.1. Both
    // read the same verified bytes, whole and by range.
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], reqwest::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], reqwest::Version::HTTP_11),
    ] {
        let c = https_client(ca.cert_pem(), alpn);
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), version);
        assert!(r.bytes().await.unwrap()[..] == data[..]);
        let r = c
            .get(&url)
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.version(), version);
        assert_eq!(&r.bytes().await.unwrap()[..], &data[1000..2000]);
    }

    // A client trusting another CA gets no answer at all: the handshake fails.
    let other = LocalCa::new("another CA", DAY).unwrap();
    let err = https_client(other.cert_pem(), &[b"h2", b"http/1.1"])
        .get(&url)
        .send()
        .await
        .expect_err("a client that does not trust the gateway's CA must fail");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "not a certificate error: {chain}"
    );
    // The certificate's end of validity is a metric, for an expiry alert.
    let c = https_client(ca.cert_pem(), &[b"http/1.1"]);
    let not_after = crate::metric(
        &c,
        &fx.url,
        "cairn_gateway_tls_certificate_not_after_seconds",
    )
    .await as i64;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 86_000..=now + 86_500).contains(&not_after),
        "{not_after} is not a day from {now}"
    );
    // Plain HTTP to the HTTPS port gets no HTTP answer either.
    let plain = format!("http://{}", fx.url.trim_start_matches("https://"));
    assert!(crate::client().get(&plain).send().await.is_err());
    fx.shutdown().await;
}

/// The certificate files are replaced (a new CA, a new key) while a download is in flight: the
/// download completes intact on its old connection, and a connection made after the reload
/// presents the new certificate (a client trusting only the old CA is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_open_downloads_and_serves_the_new_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_ca, files) = server_files(tmp.path());
    let fx = Fixture::start_with(48 << 20, tls_config(&files)).await;
    let url = fx.resolve_url("main", "model.safetensors");
    let data = &fx.files["model.safetensors"];

    let old = https_client(old_ca.cert_pem(), &[b"h2", b"http/1.1"]);
    let mut long = old.get(&url).send().await.unwrap();
    assert_eq!(long.status(), StatusCode::OK);
    let mut got = long.chunk().await.unwrap().expect("a first chunk").to_vec();
    assert!(got.len() < data.len(), "the download must still be running");

    let new_ca = LocalCa::new("rotated CA", DAY).unwrap();
    install(&new_ca, &files);
    let new = https_client(new_ca.cert_pem(), &[b"h2", b"http/1.1"]);
    let health = fx.url.clone() + "/healthz";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match new.get(&health).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            r => panic!("the new certificate was not served within 20 s: {r:?}"),
        }
    }
    // A fresh client (no pooled connection) trusting only the old CA is refused now.
    let fresh_old = https_client(old_ca.cert_pem(), &[b"h2", b"http/1.1"]);
    assert!(fresh_old.get(&health).send().await.is_err());

    while let Some(c) = long.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), data.len());
    assert!(
        got[..] == data[..],
        "the download across the rotation differs"
    );
    fx.shutdown().await;
}

/// What `run_gateway_with` answers for `config`: it must refuse before serving.
async fn start_error(config: GatewayConfig, bind: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        cairn_store::Store::open(
            &tmp.path().join("store"),
            cairn_store::StoreConfig::new(1 << 20),
        )
        .unwrap(),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        run_gateway_with(
            &tmp.path().join("gw"),
            bind.parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            config,
            Arc::new(LocalSource::new(store)),
            std::future::pending(),
        ),
    )
    .await
    .expect("a refused start returns at once");
    let e: Error = r.expect_err("the gateway must refuse to start");
    assert!(
        !tmp.path().join("gw/gateway.addr").exists(),
        "a refused gateway announced an address"
    );
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_at_start_name_the_file_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (ca, files) = server_files(tmp.path());

    // A key other users can read.
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = start_error(tls_config(&files), "127.0.0.1:0").await;
    assert!(
        e.contains("chmod 600") && e.contains(&files.key.display().to_string()),
        "{e}"
    );
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = start_error(tls_config(&files), "127.0.0.1:0").await;
    assert!(e.contains("chmod 600"), "group-readable: {e}");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An expired certificate.
    let now = SystemTime::now();
    let expired = ca
        .issue_server_between(&["127.0.0.1"], now - 10 * DAY, now - DAY)
        .unwrap();
    let exp = TlsFiles {
        cert: tmp.path().join("expired.pem"),
        key: tmp.path().join("expired.key"),
        client_ca: None,
    };
    std::fs::write(&exp.cert, &expired.cert_pem).unwrap();
    cairn_gateway::write_key(&exp.key, &expired.key_pem).unwrap();
    let e = start_error(tls_config(&exp), "127.0.0.1:0").await;
    assert!(e.contains("expired"), "{e}");

    // A certificate not valid yet.
    let future = ca
        .issue_server_between(&["127.0.0.1"], now + DAY, now + 10 * DAY)
        .unwrap();
    std::fs::write(&exp.cert, &future.cert_pem).unwrap();
    cairn_gateway::write_key(&exp.key, &future.key_pem).unwrap();
    let e = start_error(tls_config(&exp), "127.0.0.1:0").await;
    assert!(e.contains("not valid before"), "{e}");

    // A key that belongs to another certificate.
    let other = ca.issue_server(&["127.0.0.1"], DAY).unwrap();
    let mismatched = TlsFiles {
        key: tmp.path().join("other.key"),
        ..files.clone()
    };
    cairn_gateway::write_key(&mismatched.key, &other.key_pem).unwrap();
    let e = start_error(tls_config(&mismatched), "127.0.0.1:0").await;
    assert!(e.contains("does not match"), "{e}");

    // A missing key, a certificate file that is not PEM, a client CA file without a CA.
    let missing = TlsFiles {
        key: tmp.path().join("nope.key"),
        ..files.clone()
    };
    let e = start_error(tls_config(&missing), "127.0.0.1:0").await;
    assert!(e.contains("nope.key") && e.contains("cannot open"), "{e}");
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad_cert = TlsFiles {
        cert: garbage.clone(),
        ..files.clone()
    };
    let e = start_error(tls_config(&bad_cert), "127.0.0.1:0").await;
    assert!(e.contains("no PEM certificate"), "{e}");
    let bad_ca = TlsFiles {
        client_ca: Some(garbage),
        ..files.clone()
    };
    let e = start_error(tls_config(&bad_ca), "127.0.0.1:0").await;
    assert!(e.contains("garbage.pem"), "{e}");

    // Plain HTTP on an address that is not loopback.
    let e = start_error(GatewayConfig::default(), "0.0.0.0:0").await;
    assert!(e.contains("not a loopback address"), "{e}");
}

/// `--insecure-http` lets plain HTTP listen on every address (a proxy in front terminates TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_http_is_allowed_when_asked_for() {
    let fx = Fixture::start(1000).await;
    let kg = Keyed::start_with_bind(
        &fx,
        GatewayConfig {
            insecure_http: true,
            ..GatewayConfig::default()
        },
        "0.0.0.0:0",
    )
    .await;
    let r = crate::client()
        .get(format!("{}/healthz", kg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    kg.shutdown().await;
    fx.shutdown().await;
}

/// A client that can reach the gateway directly cannot claim another address with
/// `X-Forwarded-For`; a trusted proxy can, and the address it appended is the one that counts
/// (for IP allow-lists, audit entries and per-client limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let fx = Fixture::start(200_000).await;
    fx.add_private();
    let config = GatewayConfig {
        trusted_proxies: vec!["127.0.0.2/32".parse::<IpNet>().unwrap()],
        ..GatewayConfig::default()
    };
    let kg = Keyed::start_with(&fx, config).await;
    let key = kg
        .admin
        .create_key(new_key(
            &["read:repo:cairn-test/private"],
            None,
            &["10.1.2.3/32"],
            None,
        ))
        .await
        .unwrap();
    let url = format!("{}/{PRIVATE}/resolve/main/config.json", kg.url);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let status = |c: reqwest::Client, xff: Option<&'static str>| {
        let (url, key) = (url.clone(), key.key.clone());
        async move {
            let mut r = c.get(&url).bearer_auth(key);
            if let Some(x) = xff {
                r = r.header("x-forwarded-for", x);
            }
            r.send().await.unwrap().status()
        }
    };
    // Directly, from an address that is not a trusted proxy: the header is ignored.
    assert_eq!(
        status(from("127.0.0.1"), Some("10.1.2.3")).await,
        StatusCode::FORBIDDEN
    );
    // Through the trusted proxy, which appended the client's address.
    assert_eq!(
        status(from("127.0.0.2"), Some("10.1.2.3")).await,
        StatusCode::OK
    );
    // The client wrote an allowed address itself; the proxy appended the real one.
    assert_eq!(
        status(from("127.0.0.2"), Some("10.1.2.3, 10.9.9.9")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(from("127.0.0.2"), Some("10.9.9.9, 10.1.2.3")).await,
        StatusCode::OK
    );
    // The proxy itself, naming no client, is not the allowed address.
    assert_eq!(status(from("127.0.0.2"), None).await, StatusCode::FORBIDDEN);
    // A malformed header from the proxy: the proxy's own address counts.
    assert_eq!(
        status(from("127.0.0.2"), Some("10.1.2.3, garbage")).await,
        StatusCode::FORBIDDEN
    );
    let audit = kg.admin.audit(100).await.unwrap();
    let seen: Vec<(Option<&str>, u16)> = audit
        .iter()
        .filter(|e| e.key_id == key.id && e.decision != AuditDecision::Note)
        .map(|e| (e.client_ip.as_deref(), e.status))
        .collect();
    for want in [
        (Some("127.0.0.1"), 403),
        (Some("10.1.2.3"), 200),
        (Some("10.9.9.9"), 403),
        (Some("127.0.0.2"), 403),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert_eq!(seen.iter().filter(|(_, s)| *s == 200).count(), 2);
    // The key's first use from the forwarded address is noted (and the proxy's is not).
    let noted: Vec<Option<&str>> = audit
        .iter()
        .filter(|e| e.key_id == key.id && e.decision == AuditDecision::Note)
        .map(|e| e.client_ip.as_deref())
        .collect();
    assert!(noted.contains(&Some("10.1.2.3")), "{noted:?}");
    kg.shutdown().await;
    fx.shutdown().await;
}

/// A client that opens a connection to the HTTPS port and never completes a handshake (silent,
/// or sending bytes that are not TLS) is closed after the header timeout, and meanwhile a real
/// client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_garbage_handshakes_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let (ca, files) = server_files(tmp.path());
    let config = GatewayConfig {
        header_read_timeout: Duration::from_millis(500),
        ..tls_config(&files)
    };
    let fx = Fixture::start_with(1000, config).await;
    let addr = fx.url.trim_start_matches("https://").to_string();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(&addr).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01\xff\xffnot a client hello at all")
        .await
        .unwrap();
    let r = https_client(ca.cert_pem(), &[b"h2", b"http/1.1"])
        .get(format!("{}/healthz", fx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for (what, s) in [("silent", &mut silent), ("garbage", &mut garbage)] {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    // A TLS alert may come first; then the close.
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the {what} connection was not closed");
    }
    fx.shutdown().await;
}
