//! Tests over real iroh endpoints on 127.0.0.1: the shard protocol end to end, its failure
//! modes (wrong CID, full quota, foreign DELETE, oversized frames, corrupt and hanging peers),
//! manifests over PUT/GET, holder records (versioning, publisher, tampering, size caps), PEERS
//! from gossip members to a client without gossip, hedged fetching and gossip membership. Every
//! wait is bounded by a timeout.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.0.put_record(artifact, signed)
    }
    fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.0.get_record(artifact)?.map(|mut bytes| {
            if let Some(last) = bytes.last_mut() {
                *last ^= 0xff;
            }
            bytes
        }))
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
    let (router, addr) = serve(ShardServer::new(backend.clone(), config())).await;
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
    // Two clients: connecting to the live (hanging) peer gets a connect timeout no loaded
    // machine can run out of, so only the request can time out; the short connect timeout is
    // for a socket that never answers, which no load can make answer in time.
    let client = ShardClient::new(
        bound.endpoint.clone(),
        ShardConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_millis(400),
            ..ShardConfig::default()
        },
    );
    let silent_client = ShardClient::new(
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
    let result = step(silent_client.has(&nowhere, &[shard_cid(b"x")])).await;
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
    // Both peers timed out, so both are skipped for a while: the next requests fail at once.
    let results = [
        (
            &addr,
            step(client.get(&addr, &shard_cid(b"y"), None))
                .await
                .map(|_| ()),
        ),
        (
            &nowhere,
            step(silent_client.has(&nowhere, &[shard_cid(b"x")]))
                .await
                .map(|_| ()),
        ),
    ];
    for (peer, result) in results {
        match result {
            Err(Error::PeerDown { peer: named, left }) => {
                assert_eq!(named, peer.id.fmt_short().to_string());
                assert!(left <= PEER_DOWN_FOR, "{left:?}");
            }
            other => panic!("expected PeerDown, got {other:?}"),
        }
    }
    // Only the connect that timed out left a handshake behind.
    for (c, abandoned_connects) in [(&client, 0), (&silent_client, 1)] {
        assert_eq!(
            c.stats(),
            ClientStats {
                requests: 2,
                failures: 2,
                timeouts: 1,
                skipped: 1,
                shard_bytes: 0,
                abandoned_connects,
            }
        );
        assert_eq!(c.abandoned_connects(), abandoned_connects > 0);
    }
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// Eight requests at once to a holder that died: the first connect times out, and the seven
/// waiting behind it fail at once instead of each trying (and timing out) in turn. Counted, not
/// timed: one timeout, seven skipped. (A one-file `cairn get` with eight chunks in flight and
/// three of five nodes dead took eight connect timeouts, about 25 s, before this.)
#[tokio::test]
async fn requests_waiting_on_a_dead_peer_fail_with_its_first_connect_timeout() {
    let bound = bind().await;
    let client = ShardClient::new(
        bound.endpoint.clone(),
        ShardConfig {
            connect_timeout: Duration::from_millis(300),
            ..ShardConfig::default()
        },
    );
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let dead = EndpointAddr::new(SecretKey::from_bytes(&[43; 32]).public())
        .with_ip_addr(silent.local_addr().unwrap());
    let cids: Vec<Cid> = (0..8u8).map(|i| shard_cid(&[i])).collect();
    let results = step(n0_future::join_all(
        cids.iter().map(|cid| client.get(&dead, cid, None)),
    ))
    .await;
    let timeouts = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(Error::Timeout {
                    operation: "connect",
                    ..
                })
            )
        })
        .count();
    let down = results
        .iter()
        .filter(|r| matches!(r, Err(Error::PeerDown { .. })))
        .count();
    assert_eq!((timeouts, down), (1, 7), "{results:?}");
    let stats = client.stats();
    assert_eq!((stats.timeouts, stats.skipped), (1, 7), "{stats:?}");
    bound.endpoint.close().await;
}

#[tokio::test]
async fn a_read_that_gets_no_reply_start_fails_early_and_a_write_does_not() {
    let (router, addr) = serve(Evil::Hang).await;
    let bound = bind().await;
    let start = Duration::from_millis(300);
    let config = ShardConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        reply_start_timeout: start,
        peer_down_for: Duration::ZERO,
        ..ShardConfig::default()
    };
    let client = ShardClient::new(bound.endpoint.clone(), config);
    // A read: the reply-start limit applies.
    match step(client.get(&addr, &shard_cid(b"x"), None)).await {
        Err(Error::Timeout {
            operation: "GET",
            limit,
            ..
        }) => assert_eq!(limit, start),
        other => panic!("expected a GET timeout, got {other:?}"),
    }
    // With no pause configured the peer is asked again (and times out again), not skipped.
    assert!(matches!(
        step(client.has(&addr, &[shard_cid(b"x")])).await,
        Err(Error::Timeout {
            operation: "HAS",
            ..
        })
    ));
    // A write is answered only once stored: it gets the whole request timeout.
    let bytes = data(3, 100);
    match step(client.put(&addr, &shard_cid(&bytes), &bytes)).await {
        Err(Error::Timeout {
            operation: "PUT",
            limit,
            ..
        }) => assert_eq!(limit, Duration::from_secs(3)),
        other => panic!("expected a PUT timeout, got {other:?}"),
    }
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// Serves `shards[from..]` from one honest server each (stored through `client`), adding their
/// locations; returns the routers.
async fn serve_shards(
    client: &ShardClient,
    shards: &[Vec<u8>],
    from: usize,
    locations: &mut Vec<ShardLocation>,
) -> Vec<Router> {
    let mut routers = Vec::new();
    for (index, bytes) in shards.iter().enumerate().skip(from) {
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
    routers
}

#[tokio::test]
async fn a_holder_left_waiting_on_is_asked_last_until_it_answers() {
    let shards: Vec<Vec<u8>> = (0..5).map(|i| data(40 + i, 3000)).collect();
    let (hang_router, hang_addr) = serve(Evil::Hang).await;
    let mut routers = vec![hang_router];
    let mut locations = vec![ShardLocation {
        index: 0,
        cid: shard_cid(&shards[0]),
        holder: hang_addr.clone(),
    }];
    let (client, bound) = client().await;
    routers.extend(serve_shards(&client, &shards, 1, &mut locations).await);
    // The silent holder of data shard 0 is asked first, the hedge (past SLOW_AFTER) gets
    // parity shard 3 instead, and the request left waiting is cancelled: the peer is now slow.
    // Only shards 0 to 3 are offered, so however late a reply comes on a loaded machine, the
    // hedge has one holder to ask and the shards got are 1, 2, 3.
    let hedge = SLOW_AFTER + Duration::from_millis(100);
    let got = step(fetch_any_k(&client, locations[..4].to_vec(), 3, hedge))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(client.is_slow(&hang_addr.id));
    assert!(locations[1..].iter().all(|l| !client.is_slow(&l.holder.id)));
    // The next chunk asks it last: three requests, three shards. The hedge delay is longer than
    // the test step, so any request beyond the first three (a hedge, or the slow holder asked
    // first) makes the count or the step fail, whatever the machine's load.
    let before = client.stats().requests;
    let got = step(fetch_any_k(&client, locations, 3, STEP * 2))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(client.stats().requests - before, 3);
    bound.endpoint.close().await;
    for r in routers {
        r.shutdown().await.unwrap();
    }
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
    routers.extend(serve_shards(&client, &shards, 2, &mut locations).await);

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

#[tokio::test]
async fn manifests_travel_over_put_and_get() {
    let backend = Arc::new(MemoryBackend::new(1 << 20));
    let (router, addr) = serve(ShardServer::new(backend.clone(), config())).await;
    let (client, bound) = client().await;
    let manifest = data(50, 3000);
    let cid = manifest_cid(&manifest);
    assert_eq!(cid.codec(), CODEC_DAG_CBOR);
    step(client.put(&addr, &cid, &manifest)).await.unwrap();
    assert_eq!(
        step(client.get(&addr, &cid, None)).await.unwrap(),
        Some(manifest.clone())
    );
    assert_eq!(step(client.has(&addr, &[cid])).await.unwrap(), vec![true]);
    // The same bytes as a shard are another CID, and not held.
    assert_eq!(
        step(client.get(&addr, &shard_cid(&manifest), None))
            .await
            .unwrap(),
        None
    );

    // A dag-cbor CID with other bytes than it names is refused and nothing is stored.
    let claimed = manifest_cid(b"the real manifest");
    let result = step(client.put(&addr, &claimed, b"a forged manifest")).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected {
                status: "CID_MISMATCH",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!backend.has(&claimed));
    assert_eq!(backend.free_bytes(), (1 << 20) - 3000);
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// A manifest of two chunks (k = 2, m = 1) whose records `signers` may sign, with its CID.
fn manifest_for(signers: &[&SecretKey], seed: u8) -> (Cid, Vec<u8>) {
    let chunks = (0..2u8)
        .map(|i| cairn_artifact::ChunkEntry {
            sealed_len: 100,
            shards: (0..3u8).map(|j| shard_cid(&[seed, i, j])).collect(),
        })
        .collect();
    let private = cairn_artifact::PrivatePart {
        format: 1,
        name: None,
        files: Vec::new(),
        chunks: Vec::new(),
    };
    let keys: Vec<[u8; 32]> = signers.iter().map(|k| *k.public().as_bytes()).collect();
    cairn_artifact::Manifest::seal(
        cairn_erasure::Params::new(2, 1).unwrap(),
        chunks,
        &private,
        &cairn_encryption::ArtifactKey::random(),
    )
    .with_record_signers(&keys)
    .unwrap()
    .encode()
}

/// A record of `artifact` over `holders` (k = 2, m = 1, two chunks).
fn holder_record(artifact: Cid, version: u64, holders: &[EndpointAddr]) -> HolderRecord {
    HolderRecord {
        artifact,
        version,
        k: 2,
        m: 1,
        reduced_durability: false,
        nodes: holders
            .iter()
            .map(|a| (a.id, a.ip_addrs().copied().collect()))
            .collect(),
        holders: vec![vec![0, 1, 2], vec![1, 2, 0]],
    }
}

fn fake_holders() -> Vec<EndpointAddr> {
    (1..=3u8)
        .map(|i| {
            EndpointAddr::new(SecretKey::from_bytes(&[i; 32]).public())
                .with_ip_addr(SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(i))))
        })
        .collect()
}

#[tokio::test]
async fn holder_records_move_forward_only_from_signers_their_manifest_allows() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let publisher = SecretKey::from_bytes(&[21; 32]);
    let stranger = SecretKey::from_bytes(&[22; 32]);
    let repairer = SecretKey::from_bytes(&[23; 32]);
    let (artifact, manifest) = manifest_for(&[&publisher, &repairer], 1);
    let holders = fake_holders();

    assert!(
        step(client.get_record(&addr, &artifact))
            .await
            .unwrap()
            .is_none()
    );
    // No manifest held, no record kept, whoever signed it.
    let v1 = holder_record(artifact, 1, &holders).sign(&publisher);
    let result = step(client.put_record(&addr, &v1)).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected {
                status: "UNKNOWN_ARTIFACT",
                ..
            })
        ),
        "{result:?}"
    );
    step(client.put(&addr, &artifact, &manifest)).await.unwrap();
    // A record of another shape than its manifest's is refused.
    let mut three_chunks = holder_record(artifact, 1, &holders);
    three_chunks.holders.push(vec![0, 1, 2]);
    let result = step(client.put_record(&addr, &three_chunks.sign(&publisher))).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected { status: "INVALID_RECORD", message, .. }) if message.contains("does not match its manifest")
        ),
        "{result:?}"
    );
    step(client.put_record(&addr, &v1)).await.unwrap();
    let got = step(client.get_record(&addr, &artifact))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.publisher, publisher.public());
    assert_eq!(got.bytes, v1);
    assert_eq!(got.record, holder_record(artifact, 1, &holders));
    // The same bytes again are an idempotent OK.
    step(client.put_record(&addr, &v1)).await.unwrap();

    // Repair: version 2 with another holder set replaces version 1.
    let mut repaired = holder_record(artifact, 2, &holders);
    repaired.holders[1] = vec![0, 0, 1];
    repaired.reduced_durability = true;
    let v2 = repaired.sign(&publisher);
    step(client.put_record(&addr, &v2)).await.unwrap();
    let got = step(client.get_record(&addr, &artifact))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.record, repaired);

    // Going back, or a different version-2 record, is stale.
    for stale in [
        v1.clone(),
        holder_record(artifact, 2, &holders).sign(&publisher),
    ] {
        let result = step(client.put_record(&addr, &stale)).await;
        assert!(
            matches!(
                &result,
                Err(Error::Rejected {
                    status: "STALE_RECORD",
                    operation: "PUT_RECORD",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // A key the manifest does not name may not take the artifact over, even with the highest
    // version there is.
    for version in [9, u64::MAX] {
        let forged = holder_record(artifact, version, &holders).sign(&stranger);
        let result = step(client.put_record(&addr, &forged)).await;
        assert!(
            matches!(
                &result,
                Err(Error::Rejected {
                    status: "NOT_PUBLISHER",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    // Nor may an allowed signer date a record past the node's clock by more than
    // RECORD_AHEAD_MAX: nobody could ever replace it.
    let frozen = holder_record(artifact, u64::MAX, &holders).sign(&publisher);
    let result = step(client.put_record(&addr, &frozen)).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected { status: "INVALID_RECORD", message, .. }) if message.contains("past this node's clock")
        ),
        "{result:?}"
    );
    // A tampered record (version 3 written over a signed version 2) does not verify.
    let mut tampered = v2.clone();
    let version_at = 42 + artifact.encoded_len();
    tampered[version_at..version_at + 8].copy_from_slice(&3u64.to_be_bytes());
    let result = step(client.put_record(&addr, &tampered)).await;
    assert!(
        matches!(
            &result,
            Err(Error::Rejected { status: "INVALID_RECORD", message, .. }) if message.contains("signature")
        ),
        "{result:?}"
    );
    let got = step(client.get_record(&addr, &artifact))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, v2, "nothing refused replaced the stored record");
    // A repairer the manifest names moves it forward with a later version.
    let now = now_ms();
    let v3 = holder_record(artifact, now, &holders).sign(&repairer);
    step(client.put_record(&addr, &v3)).await.unwrap();
    let got = step(client.get_record(&addr, &artifact))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.publisher, repairer.public());
    assert_eq!(got.bytes, v3);

    // A shard CID is no artifact: refused before anything is sent.
    assert!(matches!(
        step(client.get_record(&addr, &shard_cid(b"x"))).await,
        Err(Error::InvalidCid { .. })
    ));
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_and_corrupted_records_are_refused() {
    let backend = Arc::new(Corrupting(MemoryBackend::new(1 << 20)));
    let (router, addr) = serve(ShardServer::new(backend.clone(), config())).await;
    let (client, bound) = client().await;
    let conn = step(bound.endpoint.connect(addr.clone(), SHARD_ALPN))
        .await
        .unwrap();

    // A PUT_RECORD announcing one byte over the cap is refused from its length alone.
    let mut huge = encode_head(&Head::PutRecord { len: 0 });
    let n = huge.len();
    huge[n - 4..].copy_from_slice(&(RECORD_LEN_MAX + 1).to_be_bytes());
    let reply = raw_request(&conn, &huge).await;
    assert_eq!(reply[..2], [PROTOCOL_VERSION, Status::TooLarge as u8]);
    assert!(String::from_utf8_lossy(&reply[4..]).contains("outside 1..="));
    // One at the cap that then sends 3 bytes and finishes: the frame ends early, and the node
    // answered without waiting for (or allocating) 32 MiB.
    let (mut send, mut recv) = step(conn.open_bi()).await.unwrap();
    let mut short = encode_head(&Head::PutRecord {
        len: RECORD_LEN_MAX,
    });
    short.extend_from_slice(b"abc");
    step(send.write_all(&short)).await.unwrap();
    send.finish().unwrap();
    let reply = step(recv.read_to_end(4096)).await.unwrap();
    assert_eq!(reply[1], Status::Malformed as u8, "{reply:?}");
    // The client refuses to send one over the cap.
    let oversized = vec![0u8; RECORD_LEN_MAX as usize + 1];
    assert!(matches!(
        step(client.put_record(&addr, &oversized)).await,
        Err(Error::TooLarge {
            what: "holder record length",
            ..
        })
    ));

    // A stored record that rotted is not served. (The backend flips a byte of every read, the
    // manifest's too, so it is stored straight into the backend under the server.)
    let signer = SecretKey::from_bytes(&[5; 32]);
    let (artifact, manifest) = manifest_for(&[&signer], 2);
    backend.0.put(&artifact, &manifest, [0; 32]).unwrap();
    let signed = holder_record(artifact, 1, &fake_holders()).sign(&signer);
    backend.0.put_record(&artifact, &signed).unwrap();
    let result = step(client.get_record(&addr, &artifact)).await;
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
    conn.close(0u32.into(), b"done");
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// A peer that answers GET_RECORD with a valid record of another artifact.
#[derive(Debug, Clone)]
struct SwappedRecord(Vec<u8>);

impl ProtocolHandler for SwappedRecord {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            if let Ok(Head::GetRecord { .. }) = read_head(&mut recv).await {
                let _ = send.write_all(&encode_data_head(self.0.len() as u32)).await;
                let _ = send.write_all(&self.0).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_record_of_another_artifact_is_caught_by_the_client() {
    let other = holder_record(manifest_cid(b"other"), 1, &fake_holders())
        .sign(&SecretKey::from_bytes(&[6; 32]));
    let (router, addr) = serve(SwappedRecord(other)).await;
    let (client, bound) = client().await;
    let result = step(client.get_record(&addr, &manifest_cid(b"asked"))).await;
    assert!(
        matches!(&result, Err(Error::MalformedReply { reason, .. }) if reason.contains("names artifact")),
        "{result:?}"
    );
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn peers_hands_a_client_without_gossip_every_member() {
    let network = "cairn-test-peers";
    let topic = topic_id(network);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let bound = bind().await;
        let gossip = Gossip::builder().spawn(bound.endpoint.clone());
        // The server is on the router before membership exists; it reads it through the slot.
        let slot: Arc<OnceLock<Membership>> = Arc::new(OnceLock::new());
        let source = slot.clone();
        let server = memory_server(1 << 20).with_peer_source(Arc::new(move || {
            source
                .get()
                .map(Membership::signed_announcements)
                .unwrap_or_default()
        }));
        let router = Router::builder(bound.endpoint.clone())
            .accept(GOSSIP_ALPN, gossip.clone())
            .accept(SHARD_ALPN, server)
            .spawn();
        nodes.push((bound, gossip, router, slot));
    }
    let first = addr_of(&nodes[0].0);
    for (i, (bound, gossip, _, slot)) in nodes.iter().enumerate() {
        let bootstrap = if i == 0 { vec![] } else { vec![first.clone()] };
        let config = MembershipConfig {
            announce_interval: Duration::from_millis(100),
            ..MembershipConfig::new(network, bootstrap)
        };
        let member = step(Membership::join(
            bound,
            gossip,
            config,
            PeerTable::new(topic),
            || 1000,
        ))
        .await
        .unwrap();
        // The own announcement exists as soon as join returns.
        let own = member.signed_announcements();
        assert_eq!(
            Announcement::verify(&own[0], &topic).unwrap().endpoint_id(),
            bound.endpoint.id()
        );
        assert!(slot.set(member).is_ok());
    }
    let mut ids: Vec<_> = nodes.iter().map(|n| n.0.endpoint.id()).collect();
    ids.sort();

    // A fresh endpoint with no gossip asks node 0 until gossip has told it of everyone.
    let (client, bound) = client().await;
    let announcements = step(async {
        loop {
            let got = client.peers(&first, &topic).await.unwrap();
            let mut seen: Vec<_> = got.iter().map(Announcement::endpoint_id).collect();
            seen.sort();
            if seen == ids {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for (bound, ..) in &nodes {
        let announced = announcements
            .iter()
            .find(|a| a.endpoint_id() == bound.endpoint.id())
            .unwrap();
        assert_eq!(
            announced.addrs(),
            addr_of(bound).ip_addrs().copied().collect::<Vec<_>>()
        );
        assert_eq!(announced.free_bytes(), 1000);
    }
    // Announcements of another network do not verify and are dropped, not fatal.
    assert!(
        step(client.peers(&first, &topic_id("another network")))
            .await
            .unwrap()
            .is_empty()
    );
    // The raw reply builds a peer table with every member alive.
    let signed = step(client.peer_announcements(&first)).await.unwrap();
    let mut table = PeerTable::new(topic);
    assert_eq!(table.observe_all(&signed, now_ms()).len(), 3);
    let mut live: Vec<_> = table
        .live_peers(now_ms())
        .into_iter()
        .map(|p| p.id)
        .collect();
    live.sort();
    assert_eq!(live, ids);

    // A node without a peer source answers with none.
    let (plain_router, plain_addr) = serve(memory_server(1)).await;
    assert!(
        step(client.peer_announcements(&plain_addr))
            .await
            .unwrap()
            .is_empty()
    );

    bound.endpoint.close().await;
    plain_router.shutdown().await.unwrap();
    for (_, _, router, slot) in nodes {
        drop(slot);
        router.shutdown().await.unwrap();
    }
}

/// A membership larger than one PEERS reply: PEERS hands on its first 256, PEERS_AFTER pages
/// through all 700 in id order; a peer that sends the same page again (or ids out of order)
/// ends the paging after its second page instead of keeping the client asking.
#[tokio::test]
async fn peers_after_pages_through_a_membership_larger_than_one_reply() {
    let topic = topic_id("cairn-test-pages");
    let now = now_ms();
    let signed: Vec<Vec<u8>> = (0..700u32)
        .map(|i| {
            let key = crate::generate_secret_key();
            let addr: SocketAddr = format!("10.0.{}.{}:4433", i >> 8, i & 255).parse().unwrap();
            Announcement::new(key.public(), &[addr], 1, now, 1).sign(&key, &topic)
        })
        .collect();
    let all = signed.clone();
    let (router, addr) =
        serve(memory_server(1).with_peer_source(Arc::new(move || all.clone()))).await;
    let (client, bound) = client().await;
    assert_eq!(
        step(client.peer_announcements(&addr)).await.unwrap().len(),
        PEERS_REPLY_MAX
    );
    let first = step(client.peer_announcements_after(&addr, None))
        .await
        .unwrap();
    assert_eq!(first.len(), PEERS_REPLY_MAX);
    let got = step(client.all_peers(&addr, &topic)).await.unwrap();
    let mut want: Vec<EndpointId> = signed
        .iter()
        .map(|b| Announcement::verify(b, &topic).unwrap().endpoint_id())
        .collect();
    want.sort();
    let ids: Vec<EndpointId> = got.iter().map(Announcement::endpoint_id).collect();
    assert_eq!(ids, want, "every member, once, in id order");
    assert_eq!(
        client.requests_to(&addr.id),
        1 + 1 + 3,
        "PEERS, one page, then three pages"
    );

    // A hostile peer that answers every request with the same full page, whatever it asks.
    let (stuck_router, stuck_addr) = serve(Replay(crate::protocol::encode_peers(&first))).await;
    let got = step(client.all_peers(&stuck_addr, &topic)).await.unwrap();
    assert_eq!(got.len(), PEERS_REPLY_MAX);
    assert_eq!(
        client.requests_to(&stuck_addr.id),
        2,
        "its second page, no id above the first's, ends the paging"
    );

    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
    stuck_router.shutdown().await.unwrap();
}

/// A shard protocol peer that answers every request with the same reply frame.
#[derive(Debug, Clone)]
struct Replay(Vec<u8>);

impl ProtocolHandler for Replay {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let frame = self.0.clone();
            tokio::spawn(async move {
                let _ = recv.read_to_end(1024).await;
                let _ = send.write_all(&frame).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            });
        }
        Ok(())
    }
}

/// Answers each of the first `FLOOD_STREAMS` bi streams with `FLOOD_LEN` bytes, then keeps the
/// connection open.
#[derive(Debug, Clone)]
struct Flood;

const FLOOD_ALPN: &[u8] = b"/cairn-test/flood/1";
const FLOOD_STREAMS: u8 = 3;
const FLOOD_LEN: usize = 2 << 20;

impl ProtocolHandler for Flood {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        for seed in 0..FLOOD_STREAMS {
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return Ok(());
            };
            tokio::spawn(async move {
                let _ = recv.read_to_end(16).await;
                let _ = send.write_all(&data(seed, FLOOD_LEN)).await;
                let _ = send.finish();
                let _ = send.stopped().await;
            });
        }
        conn.closed().await;
        Ok(())
    }
}

/// A `Flood` server, a reader endpoint and the reader's connection to it.
async fn flood_connection() -> (Router, BoundEndpoint, Connection) {
    let server = bind().await;
    let server_addr = addr_of(&server);
    let router = Router::builder(server.endpoint)
        .accept(FLOOD_ALPN, Flood)
        .spawn();
    let reader = bind().await;
    let conn = step(reader.endpoint.connect(server_addr, FLOOD_ALPN))
        .await
        .unwrap();
    (router, reader, conn)
}

/// Several streams, each within its own window (1.25 MB), together may not get more than the
/// connection's receive window ahead of a reader that reads nothing: what five busy nodes can
/// pile into a reader's UDP receive buffer stays bounded.
#[tokio::test]
async fn a_peer_cannot_push_more_than_the_receive_window_at_a_reader_that_does_not_read() {
    let (router, reader, conn) = flood_connection().await;
    let mut streams = Vec::new();
    for _ in 0..FLOOD_STREAMS {
        let (mut send, recv) = step(conn.open_bi()).await.unwrap();
        send.write_all(b"go").await.unwrap();
        send.finish().unwrap();
        streams.push(recv);
    }
    // The reader reads nothing for a while: the sender may only get one window ahead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = conn.stats().udp_rx.bytes;
    let window = u64::from(LOOPBACK_RECEIVE_WINDOW);
    assert!(
        received <= window + window / 4,
        "{received} bytes arrived unread, the window is {window}"
    );
    assert!(
        received >= window / 2,
        "only {received} bytes arrived: the sender should fill the window"
    );
    // Reading releases the rest, all of it intact. The streams are read concurrently, as every
    // Cairn reader reads its replies: under a connection window, a stream left unread could
    // hold credit the others need.
    let mut reads = tokio::task::JoinSet::new();
    for (seed, mut recv) in (0..FLOOD_STREAMS).zip(streams) {
        reads.spawn(async move {
            let got = step(recv.read_to_end(FLOOD_LEN)).await.unwrap();
            assert!(
                got == data(seed, FLOOD_LEN),
                "stream {seed}: the bytes differ"
            );
        });
    }
    while let Some(done) = reads.join_next().await {
        done.unwrap();
    }
    conn.close(0u32.into(), b"done");
    reader.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// A peer may have at most `PEER_INFLIGHT_MAX` bidirectional streams open with a Cairn endpoint,
/// as many as its server handles at once: no stream can wait unaccepted with data in the
/// connection's window.
#[tokio::test]
async fn a_peer_cannot_open_more_streams_than_the_server_handles() {
    let (router, reader, conn) = flood_connection().await;
    let mut open = Vec::new();
    for _ in 0..crate::protocol::PEER_INFLIGHT_MAX {
        open.push(step(conn.open_bi()).await.unwrap());
    }
    let one_more = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
    assert!(
        one_more.is_err(),
        "a stream beyond the limit of {} was opened",
        crate::protocol::PEER_INFLIGHT_MAX
    );
    drop(open);
    conn.close(0u32.into(), b"done");
    reader.endpoint.close().await;
    router.shutdown().await.unwrap();
}

// Storage-proof audits and receipts.

/// How a test holder answers AUDIT, given the shards it was sent.
type AuditFn = Box<
    dyn Fn(&MemoryBackend, &Cid, &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> + Send + Sync,
>;

/// A holder over a [`MemoryBackend`] that answers audits its own way and logs lease renewals.
struct Audited {
    inner: MemoryBackend,
    answer: AuditFn,
    renewals: std::sync::Mutex<Vec<(Cid, [u8; 32], u64)>>,
    renewal_fails: bool,
}

impl ShardBackend for Audited {
    fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError> {
        self.inner.put(cid, data, owner)
    }
    fn get(
        &self,
        cid: &Cid,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(cid, range)
    }
    fn has(&self, cid: &Cid) -> bool {
        self.inner.has(cid)
    }
    fn delete(&self, cid: &Cid, requester: [u8; 32]) -> Result<bool, BackendError> {
        self.inner.delete(cid, requester)
    }
    fn free_bytes(&self) -> u64 {
        self.inner.free_bytes()
    }
    fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.inner.put_record(artifact, signed)
    }
    fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get_record(artifact)
    }
    fn audit(&self, cid: &Cid, nonce: &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> {
        (self.answer)(&self.inner, cid, nonce)
    }
    fn renew_lease(&self, cid: &Cid, owner: [u8; 32], until_ms: u64) -> Result<(), BackendError> {
        self.renewals.lock().unwrap().push((*cid, owner, until_ms));
        if self.renewal_fails {
            return Err(BackendError::Io("the lease table is on fire".into()));
        }
        Ok(())
    }
}

fn honest() -> AuditFn {
    Box::new(|backend, cid, nonce| backend.audit(cid, nonce))
}

/// A holder answering audits with `answer`, served on loopback.
async fn audited(answer: AuditFn, renewal_fails: bool) -> (Arc<Audited>, Router, EndpointAddr) {
    let backend = Arc::new(Audited {
        inner: MemoryBackend::new(1 << 24),
        answer,
        renewals: std::sync::Mutex::new(Vec::new()),
        renewal_fails,
    });
    let (router, addr) = serve(ShardServer::new(backend.clone(), config())).await;
    (backend, router, addr)
}

/// A fresh nonce per test audit: distinct, and not chosen by the holder.
fn nonce(i: u32) -> [u8; 32] {
    *blake3::hash(&i.to_be_bytes()).as_bytes()
}

/// Puts `(seed, len)` shards on `addr`; returns their CIDs and sizes.
async fn put_shards(
    client: &ShardClient,
    addr: &EndpointAddr,
    shards: &[(u8, usize)],
) -> Vec<(Cid, u64)> {
    let mut out = Vec::new();
    for &(seed, len) in shards {
        let bytes = data(seed, len);
        let cid = shard_cid(&bytes);
        step(client.put(addr, &cid, &bytes)).await.unwrap();
        out.push((cid, len as u64));
    }
    out
}

/// Group length as a usize, for sizes.
const GROUP: usize = cairn_artifact::AUDIT_GROUP_LEN as usize;

#[tokio::test]
async fn an_honest_holder_passes_audits_of_shards_of_every_size() {
    let (_backend, router, addr) = audited(honest(), false).await;
    let (client, bound) = client().await;
    // Empty, tiny (< 16 KiB), a few groups (asked whole), more groups than are asked, 1 MiB.
    let shards = put_shards(
        &client,
        &addr,
        &[
            (20, 0),
            (21, 1000),
            (22, 3 * GROUP + 100),
            (23, 7 * GROUP - 5),
            (24, 1 << 20),
        ],
    )
    .await;
    let absent = shard_cid(b"never stored");
    let mut cids: Vec<Cid> = shards.iter().map(|(cid, _)| *cid).collect();
    cids.push(absent);
    for i in 0..3 {
        let nonce = nonce(i);
        let replies = step(client.audit(&addr, &nonce, &cids, 0)).await.unwrap();
        assert_eq!(replies.len(), cids.len());
        for ((cid, size), reply) in shards.iter().zip(&replies) {
            let AuditReply::Answer(answer) = reply else {
                panic!("{cid} not answered: {reply:?}");
            };
            assert!(answer.len() <= AUDIT_ANSWER_LEN_MAX as usize);
            assert_eq!(
                judge_audit(&nonce, cid, *size, reply),
                AuditVerdict::Passed,
                "shard of {size} bytes"
            );
        }
        // About four groups and their proofs, not the 1 MiB shard.
        let AuditReply::Answer(big) = &replies[4] else {
            unreachable!()
        };
        assert!(big.len() < 5 * GROUP, "{}", big.len());
        assert_eq!(replies[5], AuditReply::NotHeld);
        assert_eq!(
            judge_audit(&nonce, &absent, 10, &replies[5]),
            AuditVerdict::NotHeld
        );
    }
    // The client refuses what the protocol cannot carry, before sending anything.
    assert!(matches!(
        client
            .audit(&addr, &nonce(0), &[manifest_cid(b"m")], 0)
            .await,
        Err(Error::InvalidCid { .. })
    ));
    let too_many = vec![cids[0]; AUDIT_BATCH_MAX + 1];
    assert!(matches!(
        client.audit(&addr, &nonce(0), &too_many, 0).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(
        client.audit(&addr, &nonce(0), &[], 0).await.unwrap(),
        vec![]
    );
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// Audits `cid` of `size` on `addr` with `nonce` and judges the one reply.
async fn audit_one(
    client: &ShardClient,
    addr: &EndpointAddr,
    nonce: &[u8; 32],
    cid: Cid,
    size: u64,
) -> AuditVerdict {
    let replies = step(client.audit(addr, nonce, &[cid], 0)).await.unwrap();
    assert_eq!(replies.len(), 1);
    judge_audit(nonce, &cid, size, &replies[0])
}

#[tokio::test]
async fn lying_holders_fail_audits() {
    let (client, bound) = client().await;
    let other_nonce = |nonce: &[u8; 32]| {
        let mut other = *nonce;
        other[0] ^= 1;
        other
    };
    // Wrong bytes: one byte of an honest answer flipped.
    let flip: AuditFn = Box::new(|backend, cid, nonce| {
        Ok(backend.audit(cid, nonce)?.map(|mut answer| {
            let middle = answer.len() / 2;
            answer[middle] ^= 0x01;
            answer
        }))
    });
    // A proof of other ranges: the honest answer to another nonce.
    let elsewhere: AuditFn =
        Box::new(move |backend, cid, nonce| backend.audit(cid, &other_nonce(nonce)));
    // A replay: the first answer it ever gave, kept and sent again for every later nonce.
    let kept = std::sync::Mutex::new(std::collections::HashMap::<Cid, Vec<u8>>::new());
    let replay: AuditFn = Box::new(move |backend, cid, nonce| {
        let mut kept = kept.lock().unwrap();
        if let Some(old) = kept.get(cid) {
            return Ok(Some(old.clone()));
        }
        let answer = backend.audit(cid, nonce)?;
        if let Some(answer) = &answer {
            kept.insert(*cid, answer.clone());
        }
        Ok(answer)
    });
    for (name, lie) in [("flip", flip), ("elsewhere", elsewhere), ("replay", replay)] {
        let (_backend, router, addr) = audited(lie, false).await;
        // More groups than a challenge asks for, so that nonces pick different ones.
        let shards = put_shards(&client, &addr, &[(30, 1 << 20), (31, 300_000)]).await;
        for (cid, size) in shards {
            let first = audit_one(&client, &addr, &nonce(100), cid, size).await;
            let second = audit_one(&client, &addr, &nonce(101), cid, size).await;
            match name {
                // It answered the first nonce honestly; its old answer fails the next one.
                "replay" => {
                    assert_eq!(first, AuditVerdict::Passed);
                    assert!(matches!(second, AuditVerdict::Failed(_)), "{second:?}");
                }
                _ => {
                    for verdict in [first, second] {
                        assert!(
                            matches!(verdict, AuditVerdict::Failed(_)),
                            "{name}: {verdict:?}"
                        );
                    }
                }
            }
        }
        router.shutdown().await.unwrap();
    }
    bound.endpoint.close().await;
}

#[tokio::test]
async fn a_holder_that_kept_half_a_shard_fails_most_audits() {
    // It kept the first half of the shard and the whole outboard (64 bytes per 16 KiB, so
    // cheap to keep): it proves every group it kept and sends what it has for the others.
    let half_keeper: AuditFn = Box::new(|backend, cid, nonce| {
        let Some(mut kept) = backend.get(cid, None)? else {
            return Ok(None);
        };
        let (_, ob) = cairn_artifact::outboard(&kept);
        let half = kept.len() / 2;
        kept[half..].fill(0);
        let mut answer = Vec::new();
        for range in cairn_artifact::challenge_ranges(nonce, cid, kept.len() as u64) {
            let proof = cairn_artifact::prove_range(cid, &kept, &ob, range.clone())
                .unwrap_or_else(|_| kept[range.start as usize..range.end as usize].to_vec());
            answer.extend_from_slice(&(proof.len() as u32).to_le_bytes());
            answer.extend_from_slice(&proof);
        }
        Ok(Some(answer))
    });
    let (_backend, router, addr) = audited(half_keeper, false).await;
    let (client, bound) = client().await;
    let groups = 64u64;
    let shards = put_shards(&client, &addr, &[(40, groups as usize * GROUP)]).await;
    let (cid, size) = shards[0];
    let audits = 20u32;
    let mut passed = 0;
    for i in 0..audits {
        let nonce = nonce(1000 + i);
        let verdict = audit_one(&client, &addr, &nonce, cid, size).await;
        // It passes exactly when every group the nonce asks lies in the half it kept.
        let touches_lost = cairn_artifact::challenge_ranges(&nonce, &cid, size)
            .iter()
            .any(|r| r.end > size / 2);
        if touches_lost {
            assert!(
                matches!(verdict, AuditVerdict::Failed(_)),
                "{i}: {verdict:?}"
            );
        } else {
            assert_eq!(verdict, AuditVerdict::Passed, "{i}");
            passed += 1;
        }
    }
    // The audit module's formula: C(f·g, c) / C(g, c) with f = 1/2, g = 64, c = 4.
    let choose = |n: u64, k: u64| (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
    let rate = choose(groups / 2, 4) / choose(groups, 4);
    assert!((rate - 0.0566).abs() < 0.001, "{rate}");
    // Expected 20 × 5.7 % ≈ 1.1 passes; at most 5 of 20 is far beyond chance at that rate.
    assert!(
        passed <= 5,
        "{passed} of {audits} passed, {:.1} expected",
        rate * f64::from(audits)
    );
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

#[tokio::test]
async fn audits_tell_not_held_corrupted_slow_and_unreachable_holders_apart() {
    let (client, bound) = client().await;
    // Not held.
    let (_backend, router, addr) = audited(honest(), false).await;
    let absent = shard_cid(b"absent");
    assert_eq!(
        audit_one(&client, &addr, &nonce(1), absent, 5).await,
        AuditVerdict::NotHeld
    );
    router.shutdown().await.unwrap();

    // A holder whose disk rotted: the default audit checks the stored bytes and says so.
    let backend = Arc::new(Corrupting(MemoryBackend::new(1 << 20)));
    let (router, addr) = serve(ShardServer::new(backend, config())).await;
    let shards = put_shards(&client, &addr, &[(50, 100_000)]).await;
    let (cid, size) = shards[0];
    assert_eq!(
        audit_one(&client, &addr, &nonce(2), cid, size).await,
        AuditVerdict::Corrupted
    );
    router.shutdown().await.unwrap();

    // A holder that reports a corrupted copy itself, beside one it answers for.
    let picky: AuditFn = Box::new(|backend, cid, nonce| {
        let answer = backend.audit(cid, nonce)?;
        if answer.as_ref().is_some_and(|a| a.len() > 20_000) {
            return Err(BackendError::Corrupted("checksum mismatch".into()));
        }
        Ok(answer)
    });
    let (_backend, router, addr) = audited(picky, false).await;
    let shards = put_shards(&client, &addr, &[(51, 100_000), (52, 500)]).await;
    let cids: Vec<Cid> = shards.iter().map(|(cid, _)| *cid).collect();
    let replies = step(client.audit(&addr, &nonce(3), &cids, 0))
        .await
        .unwrap();
    assert_eq!(replies[0], AuditReply::Corrupted);
    assert_eq!(
        judge_audit(&nonce(3), &cids[0], shards[0].1, &replies[0]),
        AuditVerdict::Corrupted
    );
    assert_eq!(
        judge_audit(&nonce(3), &cids[1], shards[1].1, &replies[1]),
        AuditVerdict::Passed
    );
    router.shutdown().await.unwrap();

    // A slow holder (it fetches the shard from elsewhere first): past the auditor's deadline,
    // a timeout, not a failed proof.
    let slow: AuditFn = Box::new(|backend, cid, nonce| {
        std::thread::sleep(Duration::from_millis(1000));
        backend.audit(cid, nonce)
    });
    let (_backend, router, addr) = audited(slow, false).await;
    let shards = put_shards(&client, &addr, &[(53, 1000)]).await;
    let hasty = ShardClient::new(
        bound.endpoint.clone(),
        ShardConfig {
            audit_timeout: Duration::from_millis(200),
            ..config()
        },
    );
    let result = step(hasty.audit(&addr, &nonce(4), &[shards[0].0], 0)).await;
    match &result {
        Err(err) => {
            assert!(err.is_timeout(), "{err:?}");
            assert!(!err.is_unreachable(), "{err:?}");
            assert!(
                matches!(err, Error::Timeout { operation: "AUDIT", limit, .. } if *limit == Duration::from_millis(200)),
                "{err:?}"
            );
        }
        Ok(replies) => panic!("a slow holder answered in time: {replies:?}"),
    }
    // With the default deadline the same holder passes.
    assert_eq!(
        audit_one(&client, &addr, &nonce(5), shards[0].0, shards[0].1).await,
        AuditVerdict::Passed
    );
    router.shutdown().await.unwrap();

    // Nothing answers on this UDP port: unreachable, not a timeout of the holder.
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let nowhere = EndpointAddr::new(SecretKey::from_bytes(&[43; 32]).public())
        .with_ip_addr(silent.local_addr().unwrap());
    let impatient = ShardClient::new(
        bound.endpoint.clone(),
        ShardConfig {
            connect_timeout: Duration::from_millis(200),
            ..config()
        },
    );
    for _ in 0..2 {
        // The second try is skipped (the peer is down): unreachable too.
        let err = step(impatient.audit(&nowhere, &nonce(6), &[absent], 0))
            .await
            .unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(!err.is_timeout(), "{err:?}");
    }
    bound.endpoint.close().await;
}

#[tokio::test]
async fn an_owner_auditing_renews_its_leases_and_a_failed_renewal_changes_no_answer() {
    let (client, bound) = client().await;
    let me = *bound.endpoint.id().as_bytes();
    let until = now_ms() + 3_600_000;
    for renewal_fails in [false, true] {
        let (backend, router, addr) = audited(honest(), renewal_fails).await;
        let shards = put_shards(&client, &addr, &[(60, 2000), (61, 100_000)]).await;
        let absent = shard_cid(b"absent");
        let cids = [shards[0].0, absent, shards[1].0];
        // Without a lease time nothing is renewed.
        step(client.audit(&addr, &nonce(7), &cids, 0))
            .await
            .unwrap();
        assert!(backend.renewals.lock().unwrap().is_empty());
        let replies = step(client.audit(&addr, &nonce(8), &cids, until))
            .await
            .unwrap();
        // Every shard answered is renewed for the requester; the one not held is not.
        assert_eq!(
            *backend.renewals.lock().unwrap(),
            vec![(shards[0].0, me, until), (shards[1].0, me, until)],
            "renewal_fails = {renewal_fails}"
        );
        assert_eq!(replies[1], AuditReply::NotHeld);
        for (i, (cid, size)) in [(0, shards[0]), (2, shards[1])] {
            assert_eq!(
                judge_audit(&nonce(8), &cid, size, &replies[i]),
                AuditVerdict::Passed,
                "renewal_fails = {renewal_fails}"
            );
        }
        router.shutdown().await.unwrap();
    }
    bound.endpoint.close().await;
}

/// A memory holder that knows its endpoint id, served on loopback.
async fn receipt_holder(knows_its_id: bool) -> (Arc<MemoryBackend>, Router, EndpointAddr) {
    let backend = Arc::new(MemoryBackend::new(1 << 22));
    let bound = bind().await;
    let addr = addr_of(&bound);
    let mut server = ShardServer::new(backend.clone(), config());
    if knows_its_id {
        server = server.with_endpoint_id(addr.id);
    }
    let router = Router::builder(bound.endpoint)
        .accept(SHARD_ALPN, server)
        .spawn();
    (backend, router, addr)
}

fn rejected_with(result: Result<()>, status: &str, needle: &str) {
    match result {
        Err(Error::Rejected {
            status: got,
            message,
            ..
        }) => {
            assert_eq!(got, status, "{message}");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        other => panic!("expected a {status} refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn receipts_are_kept_from_their_auditor_only() {
    let (backend, router, addr) = receipt_holder(true).await;
    let auditor_key = generate_secret_key();
    let auditor = endpoint_offline(auditor_key.clone(), loopback())
        .await
        .unwrap();
    let client = ShardClient::new(auditor.endpoint.clone(), config());

    // An audit that passes, then its receipt.
    let shards = put_shards(&client, &addr, &[(70, 50_000), (71, 3000)]).await;
    let cids: Vec<Cid> = shards.iter().map(|(cid, _)| *cid).collect();
    let audit_nonce = nonce(9);
    let replies = step(client.audit(&addr, &audit_nonce, &cids, 0))
        .await
        .unwrap();
    for ((cid, size), reply) in shards.iter().zip(&replies) {
        assert_eq!(
            judge_audit(&audit_nonce, cid, *size, reply),
            AuditVerdict::Passed
        );
    }
    let receipt = Receipt {
        auditor: auditor_key.public(),
        holder: addr.id,
        nonce: audit_nonce,
        time_ms: now_ms(),
        bytes: shards.iter().map(|(_, size)| size).sum(),
        shards: cids.clone(),
    };
    let signed = receipt.sign(&auditor_key);
    step(client.put_receipt(&addr, &signed)).await.unwrap();
    // Sent again (a retry): still one.
    step(client.put_receipt(&addr, &signed)).await.unwrap();
    let kept = backend.receipts();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].receipt, receipt);
    assert_eq!(kept[0].bytes, signed);

    // A receipt naming another holder.
    let elsewhere = Receipt {
        holder: SecretKey::from_bytes(&[44; 32]).public(),
        ..receipt.clone()
    };
    rejected_with(
        step(client.put_receipt(&addr, &elsewhere.sign(&auditor_key))).await,
        "INVALID_RECEIPT",
        "holder",
    );
    // A receipt another auditor signed (its signature verifies), sent by this endpoint.
    let someone = SecretKey::from_bytes(&[45; 32]);
    let foreign = Receipt {
        auditor: someone.public(),
        ..receipt.clone()
    };
    rejected_with(
        step(client.put_receipt(&addr, &foreign.sign(&someone))).await,
        "INVALID_RECEIPT",
        "auditor",
    );
    // Dated too far from the holder's clock, either way.
    for time_ms in [now_ms() - 600_000, now_ms() + 600_000] {
        let skewed = Receipt {
            time_ms,
            ..receipt.clone()
        };
        rejected_with(
            step(client.put_receipt(&addr, &skewed.sign(&auditor_key))).await,
            "INVALID_RECEIPT",
            "clock",
        );
    }
    // Bytes that are no receipt, and a signature that does not verify.
    rejected_with(
        step(client.put_receipt(&addr, b"not a receipt")).await,
        "INVALID_RECEIPT",
        "too short",
    );
    let mut tampered = signed.clone();
    let at = tampered.len() - 70;
    tampered[at] ^= 1;
    rejected_with(
        step(client.put_receipt(&addr, &tampered)).await,
        "INVALID_RECEIPT",
        "signature",
    );
    // The client refuses to send one over the cap.
    assert!(matches!(
        client
            .put_receipt(&addr, &vec![0u8; RECEIPT_LEN_MAX as usize + 1])
            .await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(backend.receipts().len(), 1, "nothing else was kept");

    // A server that does not know its own id cannot check the holder, so takes no receipt.
    let (blind_backend, blind_router, blind_addr) = receipt_holder(false).await;
    let for_blind = Receipt {
        holder: blind_addr.id,
        ..receipt
    };
    rejected_with(
        step(client.put_receipt(&blind_addr, &for_blind.sign(&auditor_key))).await,
        "UNSUPPORTED_REQUEST",
        "endpoint id",
    );
    assert!(blind_backend.receipts().is_empty());

    auditor.endpoint.close().await;
    router.shutdown().await.unwrap();
    blind_router.shutdown().await.unwrap();
}

/// Whether `result` is a refusal with wire status `want`.
fn refused<T: std::fmt::Debug>(result: &Result<T>, want: &str) -> bool {
    matches!(result, Err(Error::Rejected { status, .. }) if *status == want)
}

#[tokio::test]
async fn leases_are_kept_from_their_publisher_and_never_shortened() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let publisher = SecretKey::from_bytes(&[31; 32]);
    let stranger = SecretKey::from_bytes(&[32; 32]);
    let (artifact, manifest) = manifest_for(&[&publisher], 3);
    let now = now_ms();
    let day = 24 * 3600 * 1000;
    let lease = |key: &SecretKey, until_ms: u64, issued_ms: u64| {
        Lease {
            signer: key.public(),
            artifact,
            until_ms,
            issued_ms,
        }
        .try_sign(key)
        .unwrap()
    };
    let first = lease(&publisher, now + day, now);

    // Without the manifest the node has no reason to keep a lease.
    assert!(
        step(client.get_lease(&addr, &artifact))
            .await
            .unwrap()
            .is_none()
    );
    let result = step(client.put_lease(&addr, &first)).await;
    assert!(refused(&result, "UNKNOWN_ARTIFACT"), "{result:?}");
    step(client.put(&addr, &artifact, &manifest)).await.unwrap();

    // A stranger's lease, one too far ahead, one signed in the future, bytes that are no lease.
    let result = step(client.put_lease(&addr, &lease(&stranger, now + day, now))).await;
    assert!(refused(&result, "NOT_PUBLISHER"), "{result:?}");
    let beyond = now + LEASE_AHEAD_MAX.as_millis() as u64 + 60_000;
    let result = step(client.put_lease(&addr, &lease(&publisher, beyond, now))).await;
    assert!(
        matches!(&result, Err(Error::Rejected { status: "INVALID_LEASE", message, .. }) if message.contains("400 days")),
        "{result:?}"
    );
    let early = now + LEASE_ISSUED_AHEAD_MAX.as_millis() as u64 + 60_000;
    let result = step(client.put_lease(&addr, &lease(&publisher, now + day, early))).await;
    assert!(refused(&result, "INVALID_LEASE"), "{result:?}");
    let mut tampered = first.clone();
    let until_at = 42 + artifact.encoded_len();
    tampered[until_at] ^= 1;
    let result = step(client.put_lease(&addr, &tampered)).await;
    assert!(
        matches!(&result, Err(Error::Rejected { status: "INVALID_LEASE", message, .. }) if message.contains("signature")),
        "{result:?}"
    );
    assert!(
        step(client.get_lease(&addr, &artifact))
            .await
            .unwrap()
            .is_none(),
        "nothing refused was kept"
    );

    // The publisher's lease is kept and read back, verified.
    step(client.put_lease(&addr, &first)).await.unwrap();
    let got = step(client.get_lease(&addr, &artifact))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, first);
    assert_eq!(got.lease.until_ms, now + day);
    assert_eq!(got.lease.signer, publisher.public());
    // The same bytes again are an idempotent OK.
    step(client.put_lease(&addr, &first)).await.unwrap();

    // A later lease replaces it; an earlier one (or an ended one) is an OK that changes nothing.
    let later = lease(&publisher, now + 30 * day, now + 1);
    step(client.put_lease(&addr, &later)).await.unwrap();
    for earlier in [
        lease(&publisher, now + 2 * day, now + 2),
        lease(&publisher, now - day, now),
        first.clone(),
    ] {
        step(client.put_lease(&addr, &earlier)).await.unwrap();
        let got = step(client.get_lease(&addr, &artifact))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, later, "a lease was shortened");
    }

    // A shard CID is no artifact: refused before anything is sent.
    assert!(matches!(
        step(client.get_lease(&addr, &shard_cid(b"x"))).await,
        Err(Error::InvalidCid { .. })
    ));
    assert!(matches!(
        step(client.put_lease(&addr, &[])).await,
        Err(Error::TooLarge { .. })
    ));
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

/// A node whose backend keeps no leases refuses them as a storage failure, and answers
/// GET_LEASE with none.
#[tokio::test]
async fn a_backend_without_leases_refuses_them() {
    struct NoLeases(MemoryBackend);
    impl ShardBackend for NoLeases {
        fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError> {
            self.0.put(cid, data, owner)
        }
        fn get(
            &self,
            cid: &Cid,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<Option<Vec<u8>>, BackendError> {
            self.0.get(cid, range)
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
        fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
            self.0.put_record(artifact, signed)
        }
        fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
            self.0.get_record(artifact)
        }
    }
    let server = ShardServer::new(Arc::new(NoLeases(MemoryBackend::new(1 << 20))), config());
    let (router, addr) = serve(server).await;
    let (client, bound) = client().await;
    let publisher = SecretKey::from_bytes(&[33; 32]);
    let (artifact, manifest) = manifest_for(&[&publisher], 4);
    step(client.put(&addr, &artifact, &manifest)).await.unwrap();
    let signed = Lease {
        signer: publisher.public(),
        artifact,
        until_ms: now_ms() + 1000,
        issued_ms: now_ms(),
    }
    .try_sign(&publisher)
    .unwrap();
    let result = step(client.put_lease(&addr, &signed)).await;
    assert!(
        matches!(&result, Err(Error::Rejected { status: "INTERNAL", message, .. }) if message.contains("keeps no leases")),
        "{result:?}"
    );
    assert!(
        step(client.get_lease(&addr, &artifact))
            .await
            .unwrap()
            .is_none()
    );
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}

fn name_record(org_key: &SecretKey, org: &str, name: &str, version: u64) -> NameRecord {
    NameRecord {
        org_key: org_key.public(),
        signer: org_key.public(),
        delegation: None,
        kind: NameKind::Model,
        org: org.into(),
        name: name.into(),
        version,
        artifact: manifest_cid(&version.to_be_bytes()),
        parent: None,
        policy: "public".into(),
        grants: Vec::new(),
    }
}

/// Name records over PUT_NAME and GET_NAME between real endpoints: the owner's revisions are
/// kept and read back newest first; a forged record, a squatter's claim on the org (in another
/// case too), a replayed older revision and a record dated too far ahead are refused and never
/// served; a member key delegated by the org key may publish, one not delegated may not.
#[tokio::test]
async fn name_records_keep_their_owner_and_move_forward_only() {
    let (router, addr) = serve(memory_server(1 << 20)).await;
    let (client, bound) = client().await;
    let owner = SecretKey::from_bytes(&[41; 32]);
    let squatter = SecretKey::from_bytes(&[42; 32]);
    let member = SecretKey::from_bytes(&[43; 32]);
    let now = now_ms();
    let get = |count| client.get_names(&addr, NameKind::Model, "acme", "model", count);

    assert!(step(get(8)).await.unwrap().is_empty(), "nothing yet");
    let r1 = name_record(&owner, "acme", "model", now - 2000)
        .try_sign(&owner)
        .unwrap();
    step(client.put_name(&addr, &r1)).await.unwrap();
    // The same bytes again: an idempotent OK.
    step(client.put_name(&addr, &r1)).await.unwrap();

    // A squatter's record of the same org, in another case, is refused; so is one of another
    // name of that org.
    for (org, name) in [("ACME", "model"), ("acme", "other")] {
        let squat = name_record(&squatter, org, name, now)
            .try_sign(&squatter)
            .unwrap();
        let result = step(client.put_name(&addr, &squat)).await;
        assert!(refused(&result, "ORG_CLAIMED"), "{result:?}");
    }
    // A forged record: the owner's org key, signed by the squatter.
    let mut forged = name_record(&owner, "acme", "model", now)
        .try_sign(&owner)
        .unwrap();
    let n = forged.len();
    forged[n - 64..].copy_from_slice(&squatter.sign(b"anything").to_bytes());
    let result = step(client.put_name(&addr, &forged)).await;
    assert!(refused(&result, "INVALID_NAME"), "{result:?}");
    // A member key without a delegation cannot even build a record; with one it publishes.
    let mut by_member = name_record(&owner, "acme", "model", now - 1000);
    by_member.signer = member.public();
    assert!(by_member.try_sign(&member).is_err());
    by_member.delegation = Some(Delegation::sign(
        &owner,
        "acme",
        &member.public(),
        now + 60_000,
    ));
    let r2 = by_member.try_sign(&member).unwrap();
    step(client.put_name(&addr, &r2)).await.unwrap();

    // A replay of an older revision the node does not hold, and the first one again (held: OK,
    // and it stays behind).
    let older = name_record(&owner, "acme", "model", now - 1500)
        .try_sign(&owner)
        .unwrap();
    let result = step(client.put_name(&addr, &older)).await;
    assert!(refused(&result, "STALE_RECORD"), "{result:?}");
    step(client.put_name(&addr, &r1)).await.unwrap();
    // Dated too far ahead: refused, so no record can freeze a name.
    let future = name_record(&owner, "acme", "model", now + 3_600_000)
        .try_sign(&owner)
        .unwrap();
    let result = step(client.put_name(&addr, &future)).await;
    assert!(refused(&result, "INVALID_NAME"), "{result:?}");

    let got = step(get(8)).await.unwrap();
    let bytes: Vec<&Vec<u8>> = got.iter().map(|s| &s.bytes).collect();
    assert_eq!(bytes, vec![&r2, &r1], "newest first, nothing refused kept");
    assert_eq!(step(get(1)).await.unwrap().len(), 1);
    // Asked in another case, the org is the same org.
    let upper = step(client.get_names(&addr, NameKind::Model, "Acme", "model", 8))
        .await
        .unwrap();
    assert_eq!(upper.len(), 2);
    // Names are per kind.
    assert!(
        step(client.get_names(&addr, NameKind::Dataset, "acme", "model", 8))
            .await
            .unwrap()
            .is_empty()
    );

    // A GET_NAME with a bad part or a count of 0 is malformed or too large; the node serves on.
    let conn = step(bound.endpoint.connect(addr.clone(), SHARD_ALPN))
        .await
        .unwrap();
    let reply = raw_request(
        &conn,
        &[
            PROTOCOL_VERSION,
            Kind::GetName as u8,
            0,
            2,
            b'.',
            b'a',
            1,
            b'm',
            1,
        ],
    )
    .await;
    assert_eq!(reply[1], Status::Malformed as u8, "{reply:?}");
    let reply = raw_request(
        &conn,
        &[
            PROTOCOL_VERSION,
            Kind::GetName as u8,
            0,
            1,
            b'a',
            1,
            b'm',
            0,
        ],
    )
    .await;
    assert_eq!(reply[1], Status::TooLarge as u8, "{reply:?}");
    let reply = raw_request(
        &conn,
        &[
            PROTOCOL_VERSION,
            Kind::PutName as u8,
            0xff,
            0xff,
            0xff,
            0xff,
        ],
    )
    .await;
    assert_eq!(reply[1], Status::TooLarge as u8, "{reply:?}");
    assert_eq!(step(get(8)).await.unwrap().len(), 2);
    conn.close(0u32.into(), b"done");
    bound.endpoint.close().await;
    router.shutdown().await.unwrap();
}
