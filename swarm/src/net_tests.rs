//! Tests over real iroh endpoints on 127.0.0.1: the shard protocol end to end, its failure
//! modes (wrong CID, full quota, foreign DELETE, oversized frames, corrupt and hanging peers),
//! hedged fetching and gossip membership. Every wait is bounded by a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{EndpointAddr, SecretKey};
use iroh_gossip::Gossip;

use crate::protocol::{Head, Kind, Status, encode_data_head, encode_head, read_head};
use crate::*;

/// Upper bound on any single test step, far above what loopback needs.
const STEP: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config() -> ShardConfig {
    ShardConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(1500),
        ..ShardConfig::default()
    }
}

fn addr_of(bound: &BoundEndpoint) -> EndpointAddr {
    EndpointAddr::new(bound.endpoint.id()).with_ip_addr(bound.endpoint.bound_sockets()[0])
}

async fn bind() -> BoundEndpoint {
    endpoint_offline(generate_secret_key(), loopback())
        .await
        .unwrap()
}

/// A node serving `handler` on the shard ALPN.
async fn serve(handler: impl ProtocolHandler) -> (Router, EndpointAddr) {
    let bound = bind().await;
    let addr = addr_of(&bound);
    let router = Router::builder(bound.endpoint)
        .accept(SHARD_ALPN, handler)
        .spawn();
    (router, addr)
}

async fn client() -> (ShardClient, BoundEndpoint) {
    let bound = bind().await;
    (ShardClient::new(bound.endpoint.clone(), config()), bound)
}

async fn step<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .expect("test step timed out")
}

/// Data of `len` bytes that differs per `seed`.
fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A peer that misbehaves on purpose.
#[derive(Debug, Clone, Copy)]
enum Evil {
    /// Accepts streams and never answers.
    Hang,
    /// Answers every GET with OK and bytes that are not the shard.
    WrongBytes,
}

impl ProtocolHandler for Evil {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let mut held = Vec::new();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            match self {
                Evil::Hang => held.push((send, recv)),
                Evil::WrongBytes => {
                    if let Ok(Head::Get { .. }) = read_head(&mut recv).await {
                        let junk = b"not the shard you asked for";
                        let _ = send.write_all(&encode_data_head(junk.len() as u32)).await;
                        let _ = send.write_all(junk).await;
                        let _ = send.finish();
                        held.push((send, recv));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A backend whose reads come back with one byte flipped, as from a rotting disk.
struct Corrupting(MemoryBackend);

impl ShardBackend for Corrupting {
    fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError> {
        self.0.put(cid, data, owner)
    }
    fn get(
        &self,
        cid: &Cid,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.0.get(cid, range)?.map(|mut bytes| {
            if let Some(first) = bytes.first_mut() {
                *first ^= 0xff;
            }
            bytes
        }))
    }
    fn has(&self, cid: &Cid) -> bool {
        self.0.has(cid)
    }
    fn delete(&self, cid: &Cid, requester: [u8; 32]) -> Result<bool, BackendError> {
        self.0.delete(cid, requester)
    }
    fn free_bytes(&self) -> u64 {
        self.0.free_bytes()
    }
}

fn memory_server(quota: u64) -> ShardServer {
    ShardServer::new(Arc::new(MemoryBackend::new(quota)), config())
}

#[tokio::test]
async fn put_get_has_delete_round_trip() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    // Sizes around the edges: empty, one byte, and a multi-packet shard.
    for (seed, len) in [(1u8, 0usize), (2, 1), (3, 300_000)] {
        let bytes = data(seed, len);
        let cid = shard_cid(&bytes);
        step(client.put(&addr, &cid, &bytes)).await.unwrap();
        assert_eq!(
            step(client.get(&addr, &cid, None)).await.unwrap(),
            Some(bytes.clone())
        );
    }
    let bytes = data(4, 1000);
    let cid = shard_cid(&bytes);
    let absent = shard_cid(b"absent");
    step(client.put(&addr, &cid, &bytes)).await.unwrap();
    assert_eq!(
        step(client.has(&addr, &[cid, absent])).await.unwrap(),
        vec![true, false]
    );
    assert_eq!(step(client.get(&addr, &absent, None)).await.unwrap(), None);
    assert!(step(client.delete(&addr, &cid)).await.unwrap());
    assert_eq!(step(client.has(&addr, &[cid])).await.unwrap(), vec![false]);
    assert_eq!(step(client.get(&addr, &cid, None)).await.unwrap(), None);
    assert!(
        !step(client.delete(&addr, &cid)).await.unwrap(),
        "deleting again finds nothing"
    );
    client.close().await;
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_with_a_range() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let bytes = data(5, 10_000);
    let cid = shard_cid(&bytes);
    step(client.put(&addr, &cid, &bytes)).await.unwrap();
    let part = step(client.get(&addr, &cid, Some(100..2100)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(part, bytes[100..2100]);
    let tail = step(client.get(&addr, &cid, Some(9_990..20_000)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail, bytes[9_990..], "a range past the end is clamped");
    assert!(matches!(
        step(client.get(&addr, &cid, Some(std::ops::Range { start: 5, end: 4 }))).await,
        Err(Error::InvalidRange { start: 5, end: 4 })
    ));
    assert!(matches!(
        step(client.get(&addr, &cid, Some(0..u64::from(SHARD_LEN_MAX) + 1))).await,
        Err(Error::TooLarge {
            what: "range length",
            ..
        })
    ));
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn put_with_the_wrong_cid_is_refused() {
    let backend = Arc::new(MemoryBackend::new(1 << 20));
    let (router, addr) = serve(ShardServer::new(backend.clone(), config())).await;
    let (client, bound) = client().await;
    let claimed = shard_cid(b"what the CID says");
    let result = step(client.put(&addr, &claimed, b"something else")).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected {
                status: "CID_MISMATCH",
                operation: "PUT",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!backend.has(&claimed));
    assert_eq!(backend.free_bytes(), 1 << 20);
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn put_over_quota_is_refused_with_a_typed_error() {
    let (router, addr) = serve(memory_server(1000)).await;
    let (client, bound) = client().await;
    let small = data(6, 600);
    step(client.put(&addr, &shard_cid(&small), &small))
        .await
        .unwrap();
    let big = data(7, 500_000);
    let result = step(client.put(&addr, &shard_cid(&big), &big)).await;
    assert!(
        matches!(
            &result,
            Err(Error::QuotaFull {
                needed: 500_000,
                free: 400,
                ..
            })
        ),
        "{result:?}"
    );
    // The connection survives the refusal.
    let fits = data(8, 400);
    step(client.put(&addr, &shard_cid(&fits), &fits))
        .await
        .unwrap();
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_by_another_endpoint_is_refused() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (owner, owner_bound) = client().await;
    let (stranger, stranger_bound) = client().await;
    let bytes = data(9, 100);
    let cid = shard_cid(&bytes);
    step(owner.put(&addr, &cid, &bytes)).await.unwrap();
    let result = step(stranger.delete(&addr, &cid)).await;
    assert!(matches!(&result, Err(Error::NotOwner { .. })), "{result:?}");
    assert_eq!(step(stranger.has(&addr, &[cid])).await.unwrap(), vec![true]);
    assert!(step(owner.delete(&addr, &cid)).await.unwrap());
    owner_bound.endpoint.close().await;
    stranger_bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// Sends `frame` on a fresh raw stream without finishing it and returns the reply bytes.
async fn raw_request(conn: &Connection, frame: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = step(conn.open_bi()).await.unwrap();
    step(send.write_all(frame)).await.unwrap();
    step(recv.read_to_end(4096)).await.unwrap()
}

#[tokio::test]
async fn oversized_and_reserved_frames_get_errors_and_the_node_keeps_serving() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let conn = step(bound.endpoint.connect(addr.clone(), SHARD_ALPN))
        .await
        .unwrap();

    // A PUT announcing 4 GiB: refused from the length alone, before any payload is sent.
    let mut huge = encode_head(&Head::Put {
        cid: shard_cid(b"x"),
        len: 0,
    });
    let n = huge.len();
    huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    let reply = raw_request(&conn, &huge).await;
    assert_eq!(
        reply[..2],
        [PROTOCOL_VERSION, Status::TooLarge as u8],
        "{reply:?}"
    );
    assert!(String::from_utf8_lossy(&reply[4..]).contains("over the limit"));

    // A HAS of 65535 CIDs, and a reserved request type.
    let reply = raw_request(&conn, &[PROTOCOL_VERSION, Kind::Has as u8, 0xff, 0xff]).await;
    assert_eq!(reply[1], Status::TooLarge as u8);
    let reply = raw_request(&conn, &[PROTOCOL_VERSION, 200]).await;
    assert_eq!(reply[1], Status::UnsupportedRequest as u8);

    // The same node still serves a well-formed client.
    let bytes = data(10, 5000);
    let cid = shard_cid(&bytes);
    step(client.put(&addr, &cid, &bytes)).await.unwrap();
    assert_eq!(
        step(client.get(&addr, &cid, None)).await.unwrap(),
        Some(bytes)
    );
    conn.close(0u32.into(), b"done");
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_bytes_are_detected_on_both_sides() {
    // A server whose disk rots notices before sending.
    let backend = Arc::new(Corrupting(MemoryBackend::new(1 << 20)));
    let (router, addr) = serve(ShardServer::new(backend, config())).await;
    let (client, bound) = client().await;
    let bytes = data(11, 2000);
    let cid = shard_cid(&bytes);
    step(client.put(&addr, &cid, &bytes)).await.unwrap();
    let result = step(client.get(&addr, &cid, None)).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected {
                status: "CORRUPTED",
                ..
            })
        ),
        "{result:?}"
    );

    // A lying peer is caught by the client, which names the peer and the shard.
    let (evil_router, evil_addr) = serve(Evil::WrongBytes).await;
    let result = step(client.get(&evil_addr, &cid, None)).await;
    match result {
        Err(Error::Corrupt { peer, cid: named }) => {
            assert_eq!(peer, evil_addr.id.fmt_short().to_string());
            assert_eq!(named, cid.to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
    evil_router.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_peers_time_out() {
    let (router, addr) = serve(Evil::Hang).await;
    let bound = bind().await;
    let client = ShardClient::new(
        bound.endpoint.clone(),
        ShardConfig {
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(400),
            ..ShardConfig::default()
        },
    );
    let result = step(client.get(&addr, &shard_cid(b"x"), None)).await;
    assert!(
        matches!(
            &result,
            Err(Error::Timeout {
                operation: "GET",
                ..
            })
        ),
        "{result:?}"
    );

    // Nothing answers on this UDP port: connecting times out at our limit, not iroh's 30 s.
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let nowhere = EndpointAddr::new(SecretKey::from_bytes(&[42; 32]).public())
        .with_ip_addr(silent.local_addr().unwrap());
    let result = step(client.has(&nowhere, &[shard_cid(b"x")])).await;
    assert!(
        matches!(
            &result,
            Err(Error::Timeout {
                operation: "connect",
                ..
            })
        ),
        "{result:?}"
    );
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn fetch_any_k_survives_hanging_and_lying_holders() {
    let k = 3;
    let shards: Vec<Vec<u8>> = (0..5).map(|i| data(20 + i, 4000)).collect();
    let (hang_router, hang_addr) = serve(Evil::Hang).await;
    let (liar_router, liar_addr) = serve(Evil::WrongBytes).await;
    let mut routers = vec![hang_router, liar_router];
    let mut locations = vec![
        ShardLocation {
            index: 0,
            cid: shard_cid(&shards[0]),
            holder: hang_addr,
        },
        ShardLocation {
            index: 1,
            cid: shard_cid(&shards[1]),
            holder: liar_addr,
        },
    ];
    let (client, bound) = client().await;
    for (index, bytes) in shards.iter().enumerate().skip(2) {
        let (router, addr) = serve(memory_server(1 << 20)).await;
        step(client.put(&addr, &shard_cid(bytes), bytes))
            .await
            .unwrap();
        locations.push(ShardLocation {
            index,
            cid: shard_cid(bytes),
            holder: addr,
        });
        routers.push(router);
    }

    let got = step(fetch_any_k(
        &client,
        locations.clone(),
        k,
        Duration::from_millis(50),
    ))
    .await
    .unwrap();
    let expected: Vec<(usize, Vec<u8>)> = (2..5).map(|i| (i, shards[i].clone())).collect();
    assert_eq!(got, expected);

    // Asking for 4 cannot succeed: the error names the two bad shards and why.
    let err = step(fetch_any_k(
        &client,
        locations,
        4,
        Duration::from_millis(50),
    ))
    .await
    .unwrap_err();
    assert_eq!((err.needed, err.got), (4, 3));
    let mut missing: Vec<_> = err
        .missing
        .iter()
        .map(|f| (f.index, f.cid.clone()))
        .collect();
    missing.sort();
    assert_eq!(
        missing,
        vec![
            (0, shard_cid(&shards[0]).to_string()),
            (1, shard_cid(&shards[1]).to_string())
        ]
    );
    assert!(
        err.missing
            .iter()
            .any(|f| f.index == 0 && f.reason.contains("did not finish GET"))
    );
    assert!(
        err.missing
            .iter()
            .any(|f| f.index == 1 && f.reason.contains("do not match"))
    );

    bound.endpoint.close().await;
    for router in routers {
        router.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn fetch_any_k_prefers_data_shards() {
    let k = 2;
    let shards: Vec<Vec<u8>> = (0..4).map(|i| data(40 + i, 100)).collect();
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let mut locations = Vec::new();
    // Listed parity first, to show the order of the list does not matter.
    for index in (0..4).rev() {
        step(client.put(&addr, &shard_cid(&shards[index]), &shards[index]))
            .await
            .unwrap();
        locations.push(ShardLocation {
            index,
            cid: shard_cid(&shards[index]),
            holder: addr.clone(),
        });
    }
    let got = step(fetch_any_k(&client, locations, k, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got, vec![(0, shards[0].clone()), (1, shards[1].clone())]);
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn gossip_members_see_each_other() {
    let network = "cairn-test-gossip";
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let bound = bind().await;
        let gossip = Gossip::builder().spawn(bound.endpoint.clone());
        let router = Router::builder(bound.endpoint.clone())
            .accept(GOSSIP_ALPN, gossip.clone())
            .spawn();
        nodes.push((bound, gossip, router));
    }
    let first = addr_of(&nodes[0].0);
    let mut members = Vec::new();
    for (i, (bound, gossip, _)) in nodes.iter().enumerate() {
        let bootstrap = if i == 0 { vec![] } else { vec![first.clone()] };
        let config = MembershipConfig {
            announce_interval: Duration::from_millis(100),
            ..MembershipConfig::new(network, bootstrap)
        };
        let table = PeerTable::new(topic_id(network));
        let free = 1000 * (i as u64 + 1);
        members.push(
            step(Membership::join(bound, gossip, config, table, move || free))
                .await
                .unwrap(),
        );
    }
    let ids: Vec<_> = nodes
        .iter()
        .map(|(bound, _, _)| bound.endpoint.id())
        .collect();
    step(async {
        loop {
            let complete = members.iter().enumerate().all(|(i, member)| {
                let mut seen: Vec<_> = member.live_peers().into_iter().map(|p| p.id).collect();
                seen.sort();
                let mut others: Vec<_> = ids.iter().copied().filter(|id| *id != ids[i]).collect();
                others.sort();
                seen == others
            });
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Announced quotas and addresses arrive intact, and the table persists.
    let peers = members[1].live_peers();
    let node0 = peers.iter().find(|p| p.id == ids[0]).unwrap();
    assert_eq!(node0.free_bytes, 1000);
    assert_eq!(node0.addrs, first.ip_addrs().copied().collect::<Vec<_>>());
    let restored = PeerTable::from_bytes(&members[1].table_bytes(), topic_id(network)).unwrap();
    assert_eq!(
        restored.live_peers(u64::MAX / 2).len(),
        0,
        "far in the future everyone is silent"
    );
    assert_eq!(restored.peers(0).len(), 2);

    drop(members);
    for (_, _, router) in nodes {
        router.shutdown().await.unwrap();
    }
}
