//! Resource limits under hostile clients, over real HTTP with plain sockets as the adversary.
//!
//! Method: the adversary connects from 127.0.0.2 (Linux routes all of 127/8 to loopback, so a
//! socket bound there is "another address" to the gateway) and misbehaves: sends a Range GET
//! and never reads, opens idle connections by the thousand, makes up method names, asks
//! paths-info about too many paths. Meanwhile a legitimate client on 127.0.0.1 (or on the same
//! address) must still be answered, and the gateway's threads, connections and metrics must
//! stay bounded. Waits are on answers and closed sockets, bounded by generous timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_gateway::{GatewayConfig, PATHS_INFO_MAX};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{Fixture, MODEL, client};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

fn addr(fx: &Fixture) -> SocketAddr {
    fx.url.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `src` with a small receive buffer (so a client that does not read stalls
/// the server's writes after a few kilobytes).
async fn connect_from(src: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(SocketAddr::from((src, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// Raises this process's soft limit on open files to its hard limit (at most 16 384).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid, initialized struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max.min(16_384);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Threads of this process (the gateway runs in it).
fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Reads what the server sends until it closes the connection (at most `limit`).
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the gateway closes the connection");
    out
}

async fn get_text(c: &reqwest::Client, url: String) -> (StatusCode, Vec<u8>) {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let r = c.get(&url).send().await.unwrap();
        let s = r.status();
        (s, r.bytes().await.unwrap().to_vec())
    })
    .await;
    r.unwrap_or_else(|_| panic!("{url} was not answered within 5 s"))
}

/// Hardening item 5: sockets that send a Range GET and never read hold at most their address's
/// share of streams (and so of threads and read-ahead), are cut off by the write timeout, and
/// meanwhile another client's small and streamed GETs and `/healthz` are answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_are_cut_off_and_do_not_starve_others() {
    const STALLED: usize = 40;
    const RANGE: usize = 10 << 20;
    let cfg = GatewayConfig {
        write_timeout: Duration::from_secs(2),
        streams_max: 4,
        streams_per_client_max: 2,
        stream_wait: Duration::from_secs(1),
        ..GatewayConfig::default()
    };
    let fx = Fixture::start_with(12 << 20, cfg).await;
    let data = fx.files["model.safetensors"].clone();
    let to = addr(&fx);
    let c = client();
    // Warm up the runtime's threads, then count.
    let _ = get_text(&c, format!("{}/healthz", fx.url)).await;
    let before = threads();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut s = connect_from(ATTACKER, to).await;
        let req = format!(
            "GET /{MODEL}/resolve/main/model.safetensors HTTP/1.1\r\nhost: x\r\n\
             range: bytes=0-{}\r\nconnection: close\r\n\r\n",
            RANGE - 1
        );
        s.write_all(req.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // Another client, while they stall: a small file, a streamed range, health.
    let (s, b) = get_text(&c, fx.resolve_url("main", "config.json")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &fx.files["config.json"][..]));
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let r = c
            .get(fx.resolve_url("main", "model.safetensors"))
            .header("range", "bytes=3000000-5999999")
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap())
    })
    .await
    .expect("a streamed range is answered while others stall");
    assert_eq!(r.0, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.1[..], &data[3_000_000..6_000_000]);
    let (s, _) = get_text(&c, format!("{}/healthz", fx.url)).await;
    assert_eq!(s, StatusCode::OK);
    // Each stream holds a reader and, for a long read, a fetcher: 40 unbounded streams would
    // add some 80 threads; the address's share of 2 adds a few.
    let grown = threads().saturating_sub(before);
    assert!(
        grown <= 16,
        "{grown} threads more with {STALLED} stalled readers"
    );

    // The write timeout cuts off the readers that got a stream: wait until none is open.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, m) = get_text(&c, format!("{}/metrics", fx.url)).await;
            if String::from_utf8(m)
                .unwrap()
                .contains("\ncairn_gateway_streams 0\n")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stalled streams end");
    // So every stalled socket ends: the ones that got a stream were cut off (fewer bytes than the
    // range), the others were told 503 once the wait for a stream ran out.
    let mut cut = 0;
    for s in &mut stalled {
        let got = read_to_close(s, Duration::from_secs(30)).await;
        let head = String::from_utf8_lossy(&got[..got.len().min(12)]).to_string();
        if head.starts_with("HTTP/1.1 206") {
            assert!(
                got.len() < RANGE,
                "a reader that stalled got the whole range"
            );
            cut += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        }
    }
    assert!((1..=2).contains(&cut), "{cut} stalled readers had a stream");
    // The streams came free: the attacker's address is served again.
    let mut s = connect_from(ATTACKER, to).await;
    s.write_all(
        format!(
            "GET /{MODEL}/resolve/main/model.safetensors HTTP/1.1\r\nhost: x\r\n\
             range: bytes=0-99999\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(got.starts_with(b"HTTP/1.1 206"));
    assert!(got.ends_with(&data[..100_000]));
    fx.shutdown().await;
}

/// Hardening item 6: made-up method names are counted as `OTHER`; `/metrics` does not grow with
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_metrics() {
    const REQUESTS: usize = 500;
    let fx = Fixture::start(1000).await;
    let c = client();
    let (_, m0) = get_text(&c, format!("{}/metrics", fx.url)).await;
    let mut s = connect_from(ATTACKER, addr(&fx)).await;
    let writer = {
        let mut pipelined = String::new();
        for i in 0..REQUESTS {
            let method = format!("X{i:04}{}", "Q".repeat(1000));
            let path = if i % 2 == 0 { "/healthz" } else { "/nowhere" };
            pipelined.push_str(&format!("{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n"));
        }
        pipelined.push_str("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let (mut rd, mut wr) = s.split();
        let w = async move { wr.write_all(pipelined.as_bytes()).await.unwrap() };
        let r = async move {
            let mut all = Vec::new();
            rd.read_to_end(&mut all).await.unwrap();
            all
        };
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(w, r).1 })
            .await
            .expect("the pipelined requests are answered")
    };
    let answers = String::from_utf8_lossy(&writer)
        .matches("HTTP/1.1 ")
        .count();
    assert_eq!(answers, REQUESTS + 1);
    let (_, m1) = get_text(&c, format!("{}/metrics", fx.url)).await;
    let m1 = String::from_utf8(m1).unwrap();
    assert!(!m1.contains("X0001"), "a made-up method became a label");
    assert!(m1.contains("method=\"OTHER\""), "{m1}");
    // A few new series (OTHER for two routes, their latency histograms), never one per name.
    // (500 names of a kilobyte each would add half a megabyte.)
    assert!(
        m1.len() < m0.len() + 16 * 1024,
        "/metrics grew from {} to {} bytes",
        m0.len(),
        m1.len()
    );
    let others: u64 = m1
        .lines()
        .filter(|l| l.starts_with("cairn_gateway_requests_total{") && l.contains("\"OTHER\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(others, REQUESTS as u64);
    fx.shutdown().await;
}

/// Hardening item 9: 1100 idle connections from one address take at most that address's share
/// of the slots; `/healthz` still answers, from another address and from the same one (its
/// oldest idle connection makes room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    const IDLE: usize = 1100;
    // Both ends of every connection live in this process: over 2200 descriptors, past the
    // usual soft limit of 1024 for an ordinary account (the hard limit is higher).
    raise_fd_limit();
    // Idle connections are not closed by the header timeout while this test looks: only the
    // limits close them.
    let cfg = GatewayConfig {
        header_read_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    };
    let per_client = cfg.connections_per_client_max;
    let fx = Fixture::start_with(1000, cfg).await;
    let to = addr(&fx);
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(connect_from(ATTACKER, to).await);
    }
    let healthz = |src: [u8; 4]| async move {
        let mut s = connect_from(src, to).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut s, Duration::from_secs(5)).await
    };
    let other = healthz([127, 0, 0, 1]).await;
    assert!(other.starts_with(b"HTTP/1.1 200"), "{other:?}");
    assert!(other.ends_with(b"ok\n"));
    let same = healthz(ATTACKER).await;
    assert!(same.starts_with(b"HTTP/1.1 200"), "{same:?}");
    // The gateway closed all but its share of the idle ones (each either shed or refused).
    let open = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut open = 0;
            for s in &idle {
                let mut b = [0u8; 256];
                match s.try_read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
                    // EOF, a 503, or a reset: closed (or closing) by the gateway.
                    _ => {}
                }
            }
            if open <= per_client {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("idle connections over the address's share are closed");
    assert!(open <= per_client);
    fx.shutdown().await;
}

/// Hardening item 10: a paths-info request over the per-request bound is refused with `400`
/// and a message naming the limit; one at the bound is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_info_is_bounded_per_request() {
    let fx = Fixture::start(1000).await;
    let c = client();
    let url = format!("{}/api/models/{MODEL}/paths-info/main", fx.url);
    let ask = |n: usize| {
        let mut form: Vec<String> = (0..n - 2).map(|i| format!("paths=absent/{i}")).collect();
        form.push("paths=config.json".into());
        form.push("paths=sub/dir".into());
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.join("&"))
                .send()
                .await
                .unwrap()
        }
    };
    let r = ask(PATHS_INFO_MAX + 1).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let msg = r.headers()["x-error-message"].to_str().unwrap().to_string();
    assert!(msg.contains(&PATHS_INFO_MAX.to_string()), "{msg}");
    let r = ask(PATHS_INFO_MAX).await;
    assert_eq!(r.status(), StatusCode::OK);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j[0]["path"], "config.json");
    assert_eq!(j[1]["type"], "directory");
    fx.shutdown().await;
}
