//! Leases through real node processes: abandoned data does not fill operators' disks forever.
//!
//! A publisher pins its artifacts on the network (`cairn pin --peer`): a lease signed with its
//! publisher key goes to every holder. Nodes keep an artifact while its lease, plus their grace
//! (`cairn node --lease-grace`, seconds here instead of 7 days), runs; then their periodic gc
//! lets it go, shard files and all. A `cairn node` on the publisher's data directory renews the
//! leases `leases.json` lists, so an artifact pinned for long outlives its first lease; once
//! unpinned, it goes at the end of the lease the holders keep. Method: shard files are counted
//! on the nodes' disks, every wait is bounded.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_artifact::{Cid, ReadCap};
use cairn_node::{LeaseClient, LeaseFile, Network, NetworkConfig, PeerAddr};

use crate::devnet::*;
use crate::util::*;

/// Node arguments: audits every 2 s (rounds every half second or so), a grace of 2 s.
const NODE_ARGS: [&str; 4] = ["--audit-period", "2s", "--lease-grace", "2s"];
/// Time for every node to let an artifact go once its lease has ended: the grace, then at most
/// one housekeeping period (30 s) until the gc that collects it, and room for a loaded machine.
const LET_GO_WITHIN: Duration = Duration::from_secs(120);

fn model(dir: &Path, seed: u64, len: usize) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("weights.bin"), pseudo_random(seed, len)).unwrap();
    fs::write(dir.join("config.json"), pseudo_random(seed + 1, 300)).unwrap();
}

/// The shard CIDs of the artifact `cap` names, from its manifest on the network.
fn shards_of(net: &Devnet, cap: &str) -> HashSet<Cid> {
    let boot: PeerAddr = net.addr(0).parse().unwrap();
    let cap: ReadCap = cap.parse().unwrap();
    test_runtime().block_on(async {
        let reader = Network::connect(NetworkConfig::new("cairn", vec![boot]))
            .await
            .unwrap();
        let art = reader.open(&cap).await.unwrap();
        let shards = art.opened.manifest.shard_cids().copied().collect();
        reader.close().await;
        shards
    })
}

/// Shard files of `shards` on the nodes `nodes`, counted on their disks.
fn files_of(net: &Devnet, nodes: &[usize], shards: &HashSet<Cid>) -> usize {
    let names: HashSet<String> = shards.iter().map(Cid::to_string).collect();
    nodes
        .iter()
        .flat_map(|&i| net.shard_files(i))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| names.contains(n))
        })
        .count()
}

/// `cairn pin <cap> --peer <node 0> [extra]` from the publisher data directory `publisher`.
fn pin(net: &Devnet, publisher: &Path, cap: &str, extra: &[&str]) -> String {
    let mut c = net.cli();
    c.arg("--data-dir")
        .arg(publisher)
        .args(["pin", cap])
        .args(extra);
    ok(c).0
}

/// The latest end of a lease the holders of `cid` keep, signed by the publisher of `dir`.
fn lease_on_network(net: &Devnet, dir: &Path, cid: &Cid) -> Option<u64> {
    let key: [u8; 32] = fs::read(dir.join("publisher.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let signer = cairn_swarm::secret_key_from_bytes(&key).unwrap().public();
    let boot: PeerAddr = net.addr(0).parse().unwrap();
    test_runtime().block_on(async {
        let client = LeaseClient::connect("cairn", &[boot]).await.unwrap();
        let holders = client.holders(cid, &signer).await;
        let until = client.current(&holders, cid, &signer).await;
        client.close().await;
        until
    })
}

/// Two artifacts on five nodes: one pinned for 3 s, one for a day. The first stays while its
/// lease runs, then (lease end, 2 s of grace, the next gc) every node drops its manifest and
/// shard files and it no longer reads; the second stays whole and reads back.
#[test]
fn an_artifact_whose_lease_ends_is_let_go_and_one_pinned_long_stays() {
    let net = Devnet::start_with_args(&["1GiB"; 5], &NODE_ARGS);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (short_src, long_src) = (net.tmp.path().join("short"), net.tmp.path().join("long"));
    model(&short_src, 71, 3 << 20);
    model(&long_src, 81, 3 << 20);
    let short = cap_line(&ok(net.add_cmd(&p, &short_src, &["-k", "3", "-m", "2"])).0);
    let long = cap_line(&ok(net.add_cmd(&p, &long_src, &["-k", "3", "-m", "2"])).0);
    let (short_shards, long_shards) = (shards_of(&net, &short), shards_of(&net, &long));
    assert!(short_shards.is_disjoint(&long_shards));
    let all: Vec<usize> = (0..5).collect();
    let (short_files, long_files) = (
        files_of(&net, &all, &short_shards),
        files_of(&net, &all, &long_shards),
    );
    assert!(short_files >= short_shards.len() && long_files >= long_shards.len());

    let out = pin(&net, &p, &long, &["--pin-for", "1d"]);
    assert!(out.contains("kept by 5 of 5 holders"), "{out}");
    let pinned = Instant::now();
    let out = pin(&net, &p, &short, &["--pin-for", "3s"]);
    assert!(out.contains("kept by 5 of 5 holders"), "{out}");
    assert!(
        out.contains("pinned") && out.contains("on the network until"),
        "{out}"
    );
    // Both are listed for renewal; the short one's pin ends with its first lease.
    let listed = LeaseFile::read(&p.join("leases.json")).unwrap();
    assert_eq!(listed.pins.len(), 2);
    let short_cid = short.parse::<ReadCap>().unwrap().cid;
    let entry = listed
        .pins
        .iter()
        .find(|e| e.cid == short_cid.to_string())
        .unwrap();
    assert_eq!(Some(entry.lease_until_ms), entry.until_ms);
    // While the lease runs, nothing goes.
    assert_eq!(files_of(&net, &all, &short_shards), short_files);
    assert!(
        pinned.elapsed() < Duration::from_secs(3),
        "the check above came after the lease ended"
    );

    let took = wait_until(
        "the nodes letting the short artifact go",
        LET_GO_WITHIN,
        || files_of(&net, &all, &short_shards) == 0,
    );
    eprintln!("every shard file of the 3 s artifact gone {took:?} after its pin");
    assert_eq!(files_of(&net, &all, &long_shards), long_files);
    let err = fails(net.get_cmd(&short, &net.tmp.path().join("short-out")));
    assert!(err.contains("no node knows it"), "{err}");
    let out_dir = net.tmp.path().join("long-out");
    ok(net.get_cmd(&long, &out_dir));
    assert_same_tree(&long_src, &out_dir);
}

/// The publisher runs a node on its data directory: it renews the lease of an artifact pinned
/// for an hour in terms of 10 s, so the artifact outlives its first lease (and many graces and
/// gcs after it). Unpinned, the renewals stop, `cairn unpin` says when the lease ends, and the
/// nodes let the artifact go after it.
#[test]
fn a_publisher_node_renews_leases_until_unpinned() {
    let mut net = Devnet::start_with_args(&["1GiB"; 5], &NODE_ARGS);
    let me = net.add_node("1GiB");
    net.spawn(me);
    let p = net.nodes[me].dir.clone();
    let src = net.tmp.path().join("model");
    model(&src, 91, 3 << 20);
    let cap = cap_line(&ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"])).0);
    let cid = cap.parse::<ReadCap>().unwrap().cid;
    let shards = shards_of(&net, &cap);
    let all: Vec<usize> = (0..=me).collect();
    let files = files_of(&net, &all, &shards);
    assert!(files >= shards.len());

    let out = pin(&net, &p, &cap, &["--pin-for", "1h", "--lease-term", "10s"]);
    assert!(out.contains("renews its lease until then"), "{out}");
    let first_end = LeaseFile::read(&p.join("leases.json")).unwrap().pins[0].lease_until_ms;
    // Past the first lease, its grace and a gc: the renewed lease keeps everything.
    let renewed = |net: &Devnet| lease_on_network(net, &p, &cid).is_some_and(|u| u > first_end);
    wait_until("a renewal by the publisher's node", LET_GO_WITHIN, || {
        renewed(&net)
    });
    let keep_until = Instant::now() + Duration::from_secs(10 + 2 + 35);
    while Instant::now() < keep_until {
        assert_eq!(
            files_of(&net, &all, &shards),
            files,
            "shard files went while the publisher's node renews the lease"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = fs::read_to_string(p.join("node.log")).unwrap();
    assert!(log.contains("renewed the lease of"), "{log}");
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&p)
        .args(["node", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&ok(c).0).unwrap();
    assert!(status["leases_renewed"].as_u64().unwrap() >= 2, "{status}");

    // Unpinned: no more renewals; the data goes once the current lease and the grace end.
    let mut c = net.cli();
    c.arg("--data-dir").arg(&p).args(["unpin", &cap]);
    let (out, _) = ok(c);
    assert!(out.contains("no more renewals; its lease ends"), "{out}");
    assert!(
        LeaseFile::read(&p.join("leases.json"))
            .unwrap()
            .pins
            .is_empty()
    );
    let took = wait_until(
        "the nodes letting the unpinned artifact go",
        LET_GO_WITHIN,
        || files_of(&net, &all, &shards) == 0,
    );
    eprintln!("every shard file gone {took:?} after the unpin");
}

/// A repaired shard goes with its lease: a holder dies, the caretakers re-create its shards on
/// the one node that held nothing of the artifact (it joined after the publication and the
/// pin), handing it the lease with them; that node then keeps them exactly as long as the
/// others: once the lease and the grace end, every live node, it included, lets them go.
#[test]
fn a_repaired_shard_goes_with_its_lease_and_goes_with_it() {
    let mut net = Devnet::start_with_args(&["1GiB"; 5], &NODE_ARGS);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let src = net.tmp.path().join("model");
    model(&src, 101, 3 << 20);
    let cap = cap_line(&ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"])).0);
    let cid = cap.parse::<ReadCap>().unwrap().cid;
    let shards = shards_of(&net, &cap);
    let newcomer = net.add_node("1GiB");
    net.spawn(newcomer);
    net.wait_peers(0, newcomer + 1);
    assert_eq!(files_of(&net, &[newcomer], &shards), 0);

    let out = pin(&net, &p, &cap, &["--pin-for", "90s"]);
    assert!(out.contains("kept by 5 of 5 holders"), "{out}");
    let until = LeaseFile::read(&p.join("leases.json")).unwrap().pins[0].lease_until_ms;
    net.kill(4);
    let live = [0, 1, 2, 3, newcomer];
    let took = wait_until(
        "a repair onto the newcomer",
        Duration::from_secs(75),
        || files_of(&net, &[newcomer], &shards) > 0,
    );
    eprintln!("shards re-created on the newcomer {took:?} after the holder died");
    // The newcomer got the lease with the shards, from the repairer.
    let addr: PeerAddr = net.addr(newcomer).parse().unwrap();
    let key: [u8; 32] = fs::read(p.join("publisher.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let signer = cairn_swarm::secret_key_from_bytes(&key).unwrap().public();
    let boot: PeerAddr = net.addr(0).parse().unwrap();
    let kept = test_runtime().block_on(async {
        let client = LeaseClient::connect("cairn", &[boot]).await.unwrap();
        let kept = client.current(&[addr.endpoint_addr()], &cid, &signer).await;
        client.close().await;
        kept
    });
    assert_eq!(
        kept,
        Some(until),
        "the newcomer keeps no lease of the artifact"
    );

    let took = wait_until(
        "the live nodes letting the artifact go",
        Duration::from_secs(90) + LET_GO_WITHIN,
        || files_of(&net, &live, &shards) == 0,
    );
    eprintln!("every shard file gone {took:?} after the repair");
}
