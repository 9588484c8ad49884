//! Building iroh endpoints and handling node secret keys.

use std::net::SocketAddr;

use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::{QuicTransportConfig, VarInt, presets};
use iroh::{Endpoint, RelayMode, SecretKey};

use crate::error::{Error, Result};
use crate::protocol::PEER_INFLIGHT_MAX;

/// Length of a node secret key in bytes (an ed25519 seed).
pub const SECRET_KEY_LEN: usize = 32;

/// How many bytes one peer may have sent on a connection beyond what we have read, on an
/// endpoint that only talks over loopback (tests, the devnet): QUIC's connection-level flow
/// control window. On loopback the round trip is about 0.1 ms, so 1 MiB is many times what
/// keeps a connection busy; without this bound (iroh's default is unlimited, each stream being
/// capped at 1.25 MB) five nodes answering a reader's 24 shard requests at once overflowed its
/// UDP receive buffer (8 MiB) whenever the reader's CPU fell behind: 500 to 700 dropped
/// datagrams per GiB, so retransmissions and congestion-window cuts. With it: no drops, and
/// full gateway GETs over a 5-node devnet about 12 % faster (`scripts/bench-gateway.sh`,
/// builds with and without it alternated).
pub const LOOPBACK_RECEIVE_WINDOW: u32 = 1 << 20;

/// The same bound on an endpoint facing real networks: about the bandwidth-delay product of
/// 1 Gbit/s at a 130 ms round trip, so one peer can still fill a fast long link, while what
/// one peer can push at us unread stays bounded.
pub const RECEIVE_WINDOW: u32 = 16 << 20;

/// An endpoint together with the address book it dials from.
///
/// Peers are dialled by endpoint id; their addresses come from `lookup`, which membership fills
/// from announcements and the bootstrap list.
#[derive(Debug, Clone)]
pub struct BoundEndpoint {
    /// The iroh endpoint.
    pub endpoint: Endpoint,
    /// Peer addresses known to this process.
    pub lookup: MemoryLookup,
}

/// An endpoint for tests and the devnet: bound only to `bind` (which should be a 127.0.0.1
/// address; port 0 picks one), no relays, no DNS or pkarr, so it never leaves the machine.
pub async fn endpoint_offline(secret_key: SecretKey, bind: SocketAddr) -> Result<BoundEndpoint> {
    let lookup = MemoryLookup::new();
    let bind_error = |reason: String| Error::Bind {
        bind: bind.to_string(),
        reason,
    };
    // Without clear_ip_transports the builder also binds [::] and advertises every local address.
    let endpoint = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key)
        .transport_config(transport(LOOPBACK_RECEIVE_WINDOW))
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .address_lookup(lookup.clone())
        .clear_ip_transports()
        .bind_addr(bind)
        .map_err(|err| bind_error(err.to_string()))?
        .bind()
        .await
        .map_err(|err| bind_error(err.to_string()))?;
    Ok(BoundEndpoint { endpoint, lookup })
}

/// An endpoint for real deployments: n0's relays and address lookup (pkarr, DNS), hole punching,
/// plus a [`MemoryLookup`] for peers learnt from membership announcements.
pub async fn endpoint_online(secret_key: SecretKey) -> Result<BoundEndpoint> {
    let lookup = MemoryLookup::new();
    let endpoint = Endpoint::builder(presets::N0)
        .secret_key(secret_key)
        .transport_config(transport(RECEIVE_WINDOW))
        .address_lookup(lookup.clone())
        .bind()
        .await
        .map_err(|err| Error::Bind {
            bind: "default addresses".into(),
            reason: err.to_string(),
        })?;
    Ok(BoundEndpoint { endpoint, lookup })
}

/// QUIC settings of every Cairn endpoint: iroh's, with streams of a connection sent one after
/// the other rather than interleaved. A reader has several shard requests in flight to one
/// peer; sent in turn, the first shard arrives whole as early as it can (and its chunk can be
/// opened) instead of all of them arriving at the end together, and packets carry fewer stream
/// frames. `receive_window` bounds what a peer may send on a connection ahead of our reading
/// (see [`LOOPBACK_RECEIVE_WINDOW`]).
///
/// A connection window asks that every stream a peer opens be read as its data comes, or a
/// stream left unread could hold credit the others need. Cairn's readers read each reply in its
/// own task, and its server reads each request it accepts; so that a peer cannot open streams
/// the server has not accepted (whose data would sit in the window), a peer may have at most
/// [`PEER_INFLIGHT_MAX`] bidirectional streams open, as many as the server handles at once.
fn transport(receive_window: u32) -> QuicTransportConfig {
    QuicTransportConfig::builder()
        .send_fairness(false)
        .receive_window(VarInt::from_u32(receive_window))
        .max_concurrent_bidi_streams(VarInt::from_u32(PEER_INFLIGHT_MAX as u32))
        .build()
}

/// A fresh random node secret key.
pub fn generate_secret_key() -> SecretKey {
    SecretKey::generate()
}

/// The bytes to persist for `key` (the binary owns the file and its permissions).
pub fn secret_key_to_bytes(key: &SecretKey) -> [u8; SECRET_KEY_LEN] {
    key.to_bytes()
}

/// A secret key from bytes written by [`secret_key_to_bytes`].
pub fn secret_key_from_bytes(bytes: &[u8]) -> Result<SecretKey> {
    let seed: &[u8; SECRET_KEY_LEN] = bytes.try_into().map_err(|_| Error::SecretKeyLength {
        len: bytes.len(),
        expected: SECRET_KEY_LEN,
    })?;
    Ok(SecretKey::from_bytes(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_round_trips_and_rejects_wrong_lengths() {
        let key = generate_secret_key();
        let back = secret_key_from_bytes(&secret_key_to_bytes(&key)).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(matches!(
            secret_key_from_bytes(&[0; 31]),
            Err(Error::SecretKeyLength {
                len: 31,
                expected: 32
            })
        ));
    }

    #[tokio::test]
    async fn offline_endpoint_binds_loopback_only() {
        let bound = endpoint_offline(generate_secret_key(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let sockets = bound.endpoint.bound_sockets();
        assert!(!sockets.is_empty());
        assert!(
            sockets.iter().all(|s| s.ip().is_loopback()),
            "bound {sockets:?}"
        );
        bound.endpoint.close().await;
    }
}
