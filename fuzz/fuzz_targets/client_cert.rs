//! Client certificates (mutual TLS) are read on every request that comes with one: reading
//! must never panic, must stay within its bounds, and what it reads must be what a key or a
//! revocation is matched against: the fingerprint is the SHA-256 of exactly these bytes, the
//! serial number is the canonical form a revocation typed from it takes, and every name prints
//! and parses back to itself (so a key bound with the printed name matches the certificate).
#![no_main]

use cairn_gateway::fuzzing::client_cert;
use cairn_gateway::{
    CERT_DER_LEN_MAX, CERT_NAMES_MAX, CERT_SERIAL_LEN_MAX, CertError, CertName, CertNameKind,
    CertRevocation, cert_sha256,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let (sha256, identity) = client_cert(der);
    assert_eq!(sha256, cert_sha256(der));
    assert_eq!(sha256.len(), 64);
    let id = match identity {
        Ok(id) => id,
        Err(e) => {
            if der.len() > CERT_DER_LEN_MAX {
                assert_eq!(e, CertError::TooLong);
            }
            // The reason is text for a log line and an X-Error-Message: bounded, one line.
            let m = e.to_string();
            assert!(m.len() < 400 && !m.contains('\n'), "{m:?}");
            return;
        }
    };
    assert!(der.len() <= CERT_DER_LEN_MAX);
    assert_eq!(id.sha256(), sha256);
    let s = id.serial();
    assert!(
        s.len() % 2 == 0 && s.len() <= 2 * CERT_SERIAL_LEN_MAX,
        "{s}"
    );
    assert!(s == "00" || !s.starts_with("00"), "{s}");
    assert_eq!(
        CertRevocation::serial(s).expect("a serial read is a serial"),
        CertRevocation::Serial(s.to_string())
    );
    assert!(id.names().len() <= CERT_NAMES_MAX);
    assert!(
        id.names().windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    for n in id.names() {
        let printed = n.to_string();
        assert_eq!(
            printed.parse::<CertName>().ok().as_ref(),
            Some(n),
            "{printed:?}"
        );
        if n.kind() == CertNameKind::Dns {
            assert_eq!(n.value(), n.value().to_ascii_lowercase());
        }
    }
});
