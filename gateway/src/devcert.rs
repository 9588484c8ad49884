//! Throwaway certificates for a gateway on one machine: a local CA and a server certificate
//! for `localhost`, `127.0.0.1` and `::1` (`cairn devnet --tls`, tests).
//!
//! Never for a gateway others reach: the CA's key is never written (see [`write_local_tls`]), and clients
//! trust the CA only when told to (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use zeroize::Zeroizing;

use crate::{Error, TlsFiles};

/// A certificate authority held in memory.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its private key, in PEM.
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (zeroed on drop).
    pub key_pem: Zeroizing<String>,
}

fn gen_err(e: rcgen::Error) -> Error {
    Error::Tls {
        path: PathBuf::from("(generated)"),
        reason: format!("cannot generate a certificate: {e}"),
    }
}

/// A validity window from an hour ago (clocks differ a little) to `valid` from now.
fn window(p: &mut CertificateParams, valid: Duration) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::seconds(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX));
}

impl LocalCa {
    /// A new CA named `name`, valid for `valid`, with an ECDSA P-256 key.
    pub fn new(name: &str, valid: Duration) -> Result<Self, Error> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        window(&mut p, valid);
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.self_signed(&key).map_err(gen_err)?;
        Ok(Self {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate clients are told to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid from an hour ago to
    /// `valid` from now.
    pub fn issue_server(&self, names: &[&str], valid: Duration) -> Result<IssuedCert, Error> {
        let now = SystemTime::now();
        self.issue_server_between(names, now - Duration::from_secs(3600), now + valid)
    }

    /// A server certificate for `names`, valid from `not_before` to `not_after` (either may be
    /// in the past: tests make expired certificates with it).
    pub fn issue_server_between(
        &self,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, Error> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).map_err(gen_err)?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        self.issue(p)
    }

    /// A client certificate (mutual TLS) whose subject common name is `cn`, valid for `valid`.
    pub fn issue_client(&self, cn: &str, valid: Duration) -> Result<IssuedCert, Error> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        window(&mut p, valid);
        self.issue(p)
    }

    fn issue(&self, p: CertificateParams) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// The files [`write_local_tls`] made.
pub struct LocalTls {
    /// What the gateway serves (no client CA).
    pub files: TlsFiles,
    /// The CA certificate for clients to trust.
    pub ca_cert: PathBuf,
}

/// Makes a throwaway CA and a server certificate for `localhost`, `127.0.0.1` and `::1`, valid
/// for `valid`, and writes into `dir` (created owner-only): `ca.pem` (the CA certificate),
/// `gateway.pem` (the server certificate) and `gateway.key` (its key, mode 0600). The CA's own
/// key is never written: once this returns, no further certificate can be issued under it.
pub fn write_local_tls(dir: &Path, valid: Duration) -> Result<LocalTls, Error> {
    let io = |what: String| {
        move |source| Error::Io {
            what: what.clone(),
            source,
        }
    };
    cairn_store::create_dir_private(dir).map_err(io(format!("creating {}", dir.display())))?;
    let ca = LocalCa::new("Cairn local CA (throwaway)", valid)?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"], valid)?;
    let (ca_path, cert, key) = (
        dir.join("ca.pem"),
        dir.join("gateway.pem"),
        dir.join("gateway.key"),
    );
    std::fs::write(&ca_path, ca.cert_pem())
        .map_err(io(format!("writing {}", ca_path.display())))?;
    std::fs::write(&cert, &server.cert_pem).map_err(io(format!("writing {}", cert.display())))?;
    write_key(&key, &server.key_pem)?;
    Ok(LocalTls {
        files: TlsFiles {
            cert,
            key,
            client_ca: None,
        },
        ca_cert: ca_path,
    })
}

/// Writes a private key readable by its owner only: through a 0600 temporary file and a rename,
/// so the key is never readable by others, and a gateway reloading sees the old key or the new.
pub fn write_key(path: &Path, pem: &str) -> Result<(), Error> {
    cairn_store::write_private_replace(path, pem.as_bytes()).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
