// Shared by the targets that sign: fixed test keys, derived once.

use std::sync::OnceLock;

use cairn_encryption::{GatewayId, GatewaySecret};
use cairn_swarm::{EndpointId, SecretKey};

/// Distinct keys the fuzzer picks from by index.
pub const KEYS: usize = 16;

pub fn keys() -> &'static [(SecretKey, EndpointId)] {
    static KEYS_CELL: OnceLock<Vec<(SecretKey, EndpointId)>> = OnceLock::new();
    KEYS_CELL.get_or_init(|| {
        (0..KEYS as u8)
            .map(|i| {
                let key = SecretKey::from_bytes(&[i.wrapping_mul(37).wrapping_add(1); 32]);
                let id = key.public();
                (key, id)
            })
            .collect()
    })
}

pub fn key(i: u8) -> &'static (SecretKey, EndpointId) {
    &keys()[usize::from(i) % KEYS]
}

/// Fixed gateways (grant keys), by index.
pub const GATEWAYS: usize = 4;

pub fn gateways() -> &'static [(GatewaySecret, GatewayId)] {
    static CELL: OnceLock<Vec<(GatewaySecret, GatewayId)>> = OnceLock::new();
    CELL.get_or_init(|| {
        (0..GATEWAYS as u8)
            .map(|i| {
                let secret = GatewaySecret::from_bytes([0xa0 + i; 32]);
                let id = secret.id();
                (secret, id)
            })
            .collect()
    })
}

/// Applies at most `max` byte edits (position modulo the length, XOR), a truncation and an
/// extension to `bytes`.
pub fn mutate(
    bytes: &mut Vec<u8>,
    edits: &[(u16, u8)],
    max: usize,
    truncate: Option<u16>,
    extra: &[u8],
) {
    for &(at, xor) in edits.iter().take(max) {
        if !bytes.is_empty() {
            let at = usize::from(at) % bytes.len();
            bytes[at] ^= xor;
        }
    }
    if let Some(t) = truncate {
        bytes.truncate(usize::from(t));
    }
    bytes.extend_from_slice(extra);
}

/// A socket address from fuzzer bytes, either family.
pub fn socket_addr(a: &(bool, [u8; 16], u16)) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let (v6, b, port) = *a;
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    SocketAddr::new(ip, port)
}
