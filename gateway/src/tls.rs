//! TLS for the gateway (stand-in until the listener's TLS lands: only the type the accept loop
//! puts into every request's extensions).

use std::sync::Arc;

/// The verified client's end-entity certificate, put into every request's extensions by the
/// accept loop when the client presented one that chains to `--client-ca`.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<rustls_pki_types::CertificateDer<'static>>);
