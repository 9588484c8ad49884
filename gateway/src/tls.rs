//! HTTPS: the certificate, its checks, its reload, and the client certificates of mutual TLS.
//!
//! # What is served
//! - TLS 1.3 and 1.2 only (rustls never speaks older versions), with rustls' default cipher
//!   suites of the `ring` provider (AES-GCM and ChaCha20-Poly1305, forward secret only).
//! - ALPN offers `h2` then `http/1.1`; a client that asks for neither gets HTTP/1.1.
//! - With a client CA ([`TlsFiles::client_ca`]), a client may present a certificate: one that
//!   chains to the CA and is within its validity is accepted, one that does not fails the
//!   handshake, and a client with no certificate connects as usual (API keys still work). The
//!   verified end-entity certificate reaches every request of the connection as a
//!   [`PeerCertificate`] extension; what it may read is decided per request (see `clientcert`).
//!
//! # Checks at start (each a clear error that names the file)
//! The key file must not be readable, writable or executable by group or others (the error
//! gives the `chmod 600` that fixes it); both files must be PEM, at most [`PEM_FILE_BYTES_MAX`];
//! the first certificate must be valid now (not expired, not before its start); the key must
//! match it; the client CA file must hold at least one CA certificate.
//!
//! # Reload
//! The files are polled every [`RELOAD_POLL`] (size, modification time and inode of each), and
//! `SIGHUP` asks for a reload at once. A change is loaded with the same checks; when they pass,
//! new connections get the new certificate (and client CA), while connections already open keep
//! the session they negotiated until they end: nothing is dropped. When they fail (for example
//! the certificate was replaced but the key not yet), the gateway keeps serving the previous
//! certificate, logs why once per change, and tries again as soon as a file changes again (the
//! key arriving after its certificate) or on `SIGHUP`. An expired or
//! mismatched pair is never loaded. Cancel safety: dropping the reload task stops reloading
//! and changes nothing else.
//!
//! # Decisions
//! - The `ring` provider, not rustls' default `aws-lc-rs`: the peer layer (iroh) already builds
//!   `ring`, so the gateway adds no second C crypto library to build and audit. Both use AES-NI
//!   and carry-less multiplication for AES-GCM on this CPU.
//! - Polling instead of inotify: it works the same on every file system (including the bind
//!   mounts and symlink swaps that certificate managers use) and costs three `stat`s a second.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Largest PEM file read (certificate chain, key or client CA bundle).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most certificates in a chain or in a client CA bundle.
pub const PEM_CERTS_MAX: usize = 256;
/// How often the certificate files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);
/// ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The files of an HTTPS gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the gateway's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate; readable by its owner only.
    pub key: PathBuf,
    /// PEM CA certificates whose client certificates authenticate backends (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The verified certificate a client presented (mutual TLS), its end-entity certificate in
/// DER. Put in the extensions of every request of the connection.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// What a loaded certificate says about itself, for logs and metrics.
#[derive(Clone, Debug)]
pub struct CertSummary {
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// Its subject, as text.
    pub subject: String,
}

/// The live TLS configuration: swapped whole on a reload, read at each accept.
pub(crate) struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    summary: RwLock<CertSummary>,
    /// The file stamps of the configuration loaded, and of the last change that failed.
    stamps: std::sync::Mutex<(Stamps, Option<Stamps>)>,
    /// Metrics kept up to date by reloads (see [`TlsState::observe`]).
    gauges: std::sync::Mutex<Option<(Gauge, Counter)>>,
}

type Stamps = Vec<Option<(u64, SystemTime, u64)>>;

impl TlsState {
    /// Loads and checks `files` (see the module docs).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, Error> {
        let stamps = stamps(&files);
        let (config, summary) = build(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(config),
            summary: RwLock::new(summary),
            stamps: std::sync::Mutex::new((stamps, None)),
            gauges: std::sync::Mutex::new(None),
        }))
    }

    /// Keeps `not_after` at the served certificate's end of validity and counts in `failures`
    /// the changes that could not be loaded, from now on.
    pub fn observe(&self, not_after: Gauge, failures: Counter) {
        not_after.set(self.summary().not_after);
        *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = Some((not_after, failures));
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The certificate being served.
    pub fn summary(&self) -> CertSummary {
        self.summary
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads when the files changed since the last load (or always, when `force`). Returns
    /// whether a new configuration is now served.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let now = stamps(&self.files);
        {
            let s = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if !force && (now == s.0 || s.1.as_ref() == Some(&now)) {
                return false;
            }
        }
        match build(&self.files) {
            Ok((config, summary)) => {
                tracing::info!(subject = %summary.subject, not_after = summary.not_after, "TLS certificate reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                *self.summary.write().unwrap_or_else(|p| p.into_inner()) = summary;
                *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = (now, None);
                if let Some((g, _)) = &*self.gauges.lock().unwrap_or_else(|p| p.into_inner()) {
                    g.set(self.summary().not_after);
                }
                true
            }
            Err(e) => {
                let mut s = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
                if s.1.as_ref() != Some(&now) {
                    tracing::warn!(error = %e, "TLS files changed but cannot be loaded; still serving the previous certificate");
                    s.1 = Some(now);
                    if let Some((_, c)) = &*self.gauges.lock().unwrap_or_else(|p| p.into_inner()) {
                        c.inc();
                    }
                }
                false
            }
        }
    }

    /// Polls the files (and listens for `SIGHUP`) until dropped; see the module docs.
    pub async fn watch(self: Arc<Self>) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(RELOAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let me = self.clone();
            // `stat`s and file reads: off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed(force)).await;
        }
    }
}

fn stamps(files: &TlsFiles) -> Stamps {
    use std::os::unix::fs::MetadataExt;
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.ino(),
            )
        })
    })
    .collect()
}

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads a PEM file: at most [`PEM_FILE_BYTES_MAX`].
fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| tls_err(path, format!("cannot open: {e}")))?;
    let mut buf = Vec::new();
    f.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| tls_err(path, format!("cannot read: {e}")))?;
    if buf.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(tls_err(
            path,
            format!("larger than {PEM_FILE_BYTES_MAX} bytes; is it a PEM file?"),
        ));
    }
    Ok(buf)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_pem(path)?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| tls_err(path, format!("not a PEM certificate file: {e}")))?;
        if certs.len() == PEM_CERTS_MAX {
            return Err(tls_err(
                path,
                format!("more than {PEM_CERTS_MAX} certificates"),
            ));
        }
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(tls_err(
            path,
            "holds no PEM certificate (BEGIN CERTIFICATE)",
        ));
    }
    Ok(certs)
}

/// Refuses a key file that users other than its owner may read (or write).
fn check_key_mode(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| tls_err(path, format!("cannot open: {e}")))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(tls_err(
            path,
            format!(
                "the private key is accessible to other users (mode {:04o}); run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    check_key_mode(path)?;
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        tls_err(
            path,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

/// Checks the validity period of the end-entity certificate against the clock.
fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<CertSummary, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| tls_err(path, format!("the first certificate does not parse: {e}")))?;
    let v = cert.validity();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (start, end) = (v.not_before.timestamp(), v.not_after.timestamp());
    if now > end {
        return Err(tls_err(
            path,
            format!("the certificate expired at {} (UTC)", v.not_after),
        ));
    }
    if now < start {
        return Err(tls_err(
            path,
            format!("the certificate is not valid before {} (UTC)", v.not_before),
        ));
    }
    Ok(CertSummary {
        not_after: end,
        subject: cert.subject().to_string(),
    })
}

fn build(files: &TlsFiles) -> Result<(Arc<ServerConfig>, CertSummary), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&files.cert)?;
    let summary = check_validity(&files.cert, &chain[0])?;
    let key = read_key(&files.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key in {} does not match this certificate",
                files.key.display()
            ),
            e => format!("the key and certificate cannot be used together: {e}"),
        };
        tls_err(&files.cert, why)
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_err(&files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), summary))
}

/// One certificate for every server name (a reload swaps the whole [`ServerConfig`]).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
