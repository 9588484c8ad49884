/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The ciphertext did not authenticate under the key: it was altered, truncated, or the key
    /// is wrong. Nothing of the plaintext is returned.
    #[error(
        "ciphertext failed authentication ({what}): it was altered, truncated or the key is wrong"
    )]
    Tampered {
        /// What was being opened (`"chunk"` or `"manifest private part"`).
        what: &'static str,
    },
    /// A key or secret had the wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    BadLength {
        /// What was being parsed.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A gateway id is not `cairngw1` followed by 64 hex digits of a valid X25519 key.
    #[error("not a gateway id: expected `cairngw1` followed by 64 hex digits")]
    BadGatewayId,
}
