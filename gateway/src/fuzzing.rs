//! Entry points for fuzzers: the gateway's readers of request bytes as pure functions, so that
//! `fuzz/` reaches exactly the code a request runs. Not a stable API.

use axum::http::HeaderValue;

use cairn_artifact::Cid;

use crate::{CertError, ClientCert, ClientIdentity};

/// The paths a `paths-info` body with this `Content-Type` asks about, or the refusal's text.
pub fn paths_info_body(content_type: &[u8], body: &[u8]) -> Result<Vec<String>, String> {
    // As the handler reads it: a header value that is not visible ASCII is no content type.
    let ct = HeaderValue::from_bytes(content_type)
        .ok()
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    crate::handlers::parse_paths(&ct, body).map_err(|e| e.to_string())
}

/// Whether an `If-None-Match` header of these bytes gives `304` for a file whose ETag
/// (unquoted) is `etag`. Bytes that are not a header value are not a header.
pub fn if_none_match(value: &[u8], etag: &str) -> bool {
    HeaderValue::from_bytes(value)
        .ok()
        .and_then(|v| {
            v.to_str()
                .ok()
                .map(|v| crate::handlers::etag_matches(v, etag))
        })
        .unwrap_or(false)
}

/// Whether a `Range` applies given an `If-Range` header of these bytes (`None`: no header) for
/// a file whose ETag, as sent (quoted), is `quoted`.
pub fn if_range_allows(value: Option<&[u8]>, quoted: &str) -> bool {
    match value {
        None => crate::handlers::if_range_allows(None, quoted),
        // Bytes hyper would not take as a header value never reach the handler.
        Some(bytes) => match HeaderValue::from_bytes(bytes) {
            Ok(v) => crate::handlers::if_range_allows(Some(&v), quoted),
            Err(_) => crate::handlers::if_range_allows(None, quoted),
        },
    }
}

/// The CID of an `/artifacts/{cid}` URL segment, as the handlers read it.
pub fn url_cid(segment: &str) -> Option<Cid> {
    crate::handlers::parse_url_cid(segment)
}

/// What the gateway reads from a client certificate's DER (mutual TLS), as every request with
/// one reads it: the identity, or why the certificate is refused. The fingerprint is known
/// either way.
pub fn client_cert(der: &[u8]) -> (String, Result<ClientIdentity, CertError>) {
    let c = ClientCert::from_der(der);
    (
        c.sha256().to_string(),
        c.identity().cloned().map_err(Clone::clone),
    )
}
