//! What full membership costs one node as the network grows, measured: the heap a peer table
//! of `N` peers takes (a counting allocator around building it), its persisted size, the CPU
//! to take one announcement (`PeerTable::observe`: signature check, freshness, insert) beside
//! its baseline, the ed25519 check alone (`Announcement::verify`) measured in the same run, and
//! the CPU of one record ranking over the whole membership (what every read and publish of a
//! name or an artifact computes). With the announcement interval the node uses at that size
//! (`announce_interval_for`), the traffic and CPU a node spends receiving announcements follow.
//!
//! `cargo bench -p cairn-bench --bench membership` prints the table (`-- --quick` stops at
//! 10 000 peers); docs/names.md reports it. Announcements carry one IPv4 address, as most do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use cairn_swarm::{
    ANNOUNCE_INTERVAL, ANNOUNCEMENTS_PER_SEC, Announcement, EndpointId, PeerTable,
    announce_interval_for, artifact_record_key, generate_secret_key, record_ranking, topic_id,
};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counter is a side
// effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised for this call.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

struct Row {
    peers: usize,
    heap: isize,
    persisted: usize,
    announcement: usize,
    observe: Duration,
    verify: Duration,
    ranking: Duration,
}

fn measure(peers: usize) -> Row {
    let topic = topic_id("membership-bench");
    let now = now_ms();
    let signed: Vec<Vec<u8>> = (0..peers)
        .map(|i| {
            let key = generate_secret_key();
            let addr: SocketAddr =
                format!("10.{}.{}.{}:4433", i >> 16 & 255, i >> 8 & 255, i & 255)
                    .parse()
                    .expect("an address");
            Announcement::new(key.public(), &[addr], 1 << 40, now, 1).sign(&key, &topic)
        })
        .collect();
    // Baseline: the signature checks alone.
    let started = Instant::now();
    for s in &signed {
        black_box(Announcement::verify(s, &topic).expect("verifies"));
    }
    let verify = started.elapsed() / peers as u32;
    let before = live();
    let mut table = PeerTable::new(topic);
    let started = Instant::now();
    for s in &signed {
        table.observe(s, now).expect("accepted");
    }
    let observe = started.elapsed() / peers as u32;
    let heap = live() - before;
    let persisted = table.to_bytes().len();
    let ids: Vec<EndpointId> = table.live_peers(now).iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), peers);
    let rounds = 20;
    let started = Instant::now();
    for i in 0..rounds {
        let key = artifact_record_key(&cairn_artifact::shard_cid(&[i as u8]));
        black_box(record_ranking(&key, &ids));
    }
    let ranking = started.elapsed() / rounds;
    Row {
        peers,
        heap,
        persisted,
        announcement: signed[0].len(),
        observe,
        verify,
        ranking,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 65_536]
    };
    println!(
        "| peers | heap | per peer | persisted | interval | received | bytes in | observe (verify alone) | CPU receiving | ranking |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        let r = measure(n);
        let interval = announce_interval_for(r.peers, ANNOUNCE_INTERVAL);
        let per_sec = r.peers as f64 / interval.as_secs_f64();
        let cpu = per_sec * r.observe.as_secs_f64() * 100.0;
        println!(
            "| {} | {:.1} MiB | {} B | {:.1} MiB | {:?} | {:.1}/s | {:.1} kB/s | {:.1} µs ({:.1} µs, {:.2}x) | {:.3} % of a core | {:.2} ms |",
            r.peers,
            r.heap as f64 / (1 << 20) as f64,
            r.heap / r.peers as isize,
            r.persisted as f64 / (1 << 20) as f64,
            interval,
            per_sec,
            per_sec * r.announcement as f64 / 1000.0,
            r.observe.as_secs_f64() * 1e6,
            r.verify.as_secs_f64() * 1e6,
            r.observe.as_secs_f64() / r.verify.as_secs_f64(),
            cpu,
            r.ranking.as_secs_f64() * 1e3,
        );
    }
    println!(
        "(announcements of {} peers/s at most network-wide: ANNOUNCEMENTS_PER_SEC; bytes in count the signed announcement only, not gossip framing)",
        ANNOUNCEMENTS_PER_SEC
    );
}
