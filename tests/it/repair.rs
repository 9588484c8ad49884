//! Storage proofs, reputation and repair through real node processes (issue 13).
//!
//! Goal: nobody has to act for data to survive node loss. Nodes audit each other on a short
//! period (seconds here), find holders that died (SIGKILL) or whose disk lost, cut or altered a
//! shard, and re-create the missing shards elsewhere from any k survivors, without the read
//! capability; a reader then finds them through the repair record (or the repair ranking) and
//! reads the artifact back identical after more losses than the code alone would bear. Method:
//! shard files are checked on the nodes' disks (hash of the bytes against the CID), every wait
//! is bounded, and the repairs, audits and receipts the nodes report are checked too.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use cairn_artifact::{Cid, ReadCap};
use cairn_node::{Network, NetworkConfig, NodeStatus, PeerAddr};
use cairn_store::{HEADER_LEN, ShardHeader};
use cairn_swarm::{EndpointId, HolderRecord};

use crate::devnet::*;
use crate::util::*;

/// Audit period of the test nodes: rounds every half second or so.
const PERIOD: &str = "2s";
/// Time the network gets to restore full redundancy.
const REPAIR_WITHIN: Duration = Duration::from_secs(150);

fn model(dir: &Path, seed: u64, len: usize) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("weights.bin"), pseudo_random(seed, len)).unwrap();
    fs::write(dir.join("config.json"), pseudo_random(seed + 1, 411)).unwrap();
}

fn shard_path(node_dir: &Path, cid: &Cid) -> std::path::PathBuf {
    let s = cid.to_string();
    node_dir
        .join("store/shards")
        .join(&s[s.len() - 2..])
        .join(s)
}

/// Whether node `dir` has shard `cid` on disk with bytes that hash to it.
fn verified_on(dir: &Path, cid: &Cid) -> bool {
    let Ok(b) = fs::read(shard_path(dir, cid)) else {
        return false;
    };
    let Ok(h) = ShardHeader::parse(&b[..HEADER_LEN.min(b.len())]) else {
        return false;
    };
    let end = HEADER_LEN + h.data_len as usize;
    b.len() >= end
        && cairn_artifact::blake3_digest(cid) == Some(*blake3::hash(&b[HEADER_LEN..end]).as_bytes())
}

fn node_id(net: &Devnet, i: usize) -> EndpointId {
    net.addr(i).parse::<PeerAddr>().unwrap().id
}

/// The manifest's shard CIDs per chunk, the publisher's record and the record a reader uses
/// (a repair record once there is one), read over the network.
fn artifact(net: &Devnet, cap: &str) -> (Vec<Vec<Cid>>, HolderRecord, HolderRecord) {
    let rt = test_runtime();
    let boot: PeerAddr = net.addr(0).parse().unwrap();
    let cap: ReadCap = cap.parse().unwrap();
    rt.block_on(async {
        let reader = Network::connect(NetworkConfig::new("cairn", vec![boot]))
            .await
            .unwrap();
        let art = reader.open(&cap).await.unwrap();
        let chunks = art
            .opened
            .manifest
            .chunks()
            .iter()
            .map(|c| c.shards.clone())
            .collect();
        let primary = art.alternate.clone().unwrap_or_else(|| art.record.clone());
        let used = art.record.clone();
        reader.close().await;
        (chunks, primary, used)
    })
}

/// For every chunk, the live nodes holding a verified copy of each of its shards.
fn verified_holders(net: &Devnet, live: &[usize], chunks: &[Vec<Cid>]) -> Vec<Vec<Vec<usize>>> {
    chunks
        .iter()
        .map(|shards| {
            shards
                .iter()
                .map(|cid| {
                    live.iter()
                        .copied()
                        .filter(|&i| verified_on(&net.nodes[i].dir, cid))
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Whether every chunk has all its shards verified on distinct live nodes (a matching of
/// shards to nodes, found by backtracking: at most a handful of each).
fn fully_redundant(holders: &[Vec<Vec<usize>>]) -> bool {
    fn place(shards: &[Vec<usize>], used: &mut Vec<usize>) -> bool {
        let Some((first, rest)) = shards.split_first() else {
            return true;
        };
        for &i in first {
            if !used.contains(&i) {
                used.push(i);
                if place(rest, used) {
                    return true;
                }
                used.pop();
            }
        }
        false
    }
    holders.iter().all(|shards| place(shards, &mut Vec::new()))
}

fn status(net: &Devnet, i: usize) -> NodeStatus {
    let mut c = cairn();
    c.arg("--data-dir")
        .arg(&net.nodes[i].dir)
        .args(["node", "status", "--json"]);
    serde_json::from_str(&ok(c).0).unwrap()
}

/// A 7-node devnet, 3-of-5: two holders SIGKILLed for good; the nodes notice, re-create every
/// missing shard on the live nodes (back to 5 verified shards per chunk on 5 distinct nodes),
/// without the read capability; then two more are killed and the artifact still reads back
/// identical, where without repair most chunks would have been lost (the test counts them).
#[test]
fn lost_holders_are_repaired_and_the_artifact_outlives_four_of_seven() {
    let mut net = Devnet::start_with_args(&["1GiB"; 7], &["--audit-period", PERIOD]);
    let src = net.tmp.path().join("model");
    model(&src, 31, 12 << 20);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, err) = ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"]));
    assert!(err.contains("to 7 nodes"), "{err}");
    let cap = cap_line(&out);
    let (chunks, primary, _) = artifact(&net, &cap);
    assert!(chunks.len() >= 6, "12 MiB in only {} chunks", chunks.len());
    let ids: Vec<EndpointId> = (0..7).map(|i| node_id(&net, i)).collect();
    let index_of: HashMap<EndpointId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let recorded: Vec<Vec<usize>> = primary
        .holders
        .iter()
        .map(|h| {
            h.iter()
                .map(|&x| index_of[&primary.nodes[x as usize].0])
                .collect()
        })
        .collect();

    // Lose two holders for good (node 0 is everyone's bootstrap and stays).
    let first = [5, 6];
    for i in first {
        net.kill(i);
    }
    let lost_shards: usize = recorded
        .iter()
        .map(|h| h.iter().filter(|i| first.contains(i)).count())
        .sum();
    assert!(lost_shards > 0, "the killed nodes held nothing");
    let live: Vec<usize> = (0..7).filter(|i| !first.contains(i)).collect();
    let took = wait_until("full redundancy after losing 2 of 7", REPAIR_WITHIN, || {
        fully_redundant(&verified_holders(&net, &live, &chunks))
    });
    eprintln!(
        "{lost_shards} shards lost with 2 nodes; back to 5 verified shards per chunk in {took:?}"
    );

    // The repairs were made by nodes (which never saw the capability), recorded in a repair
    // record that they signed and that readers use.
    let repairs: u64 = live.iter().map(|&i| status(&net, i).repairs_done).sum();
    assert!(
        repairs >= lost_shards as u64,
        "nodes report {repairs} repairs for {lost_shards} lost shards"
    );
    let audits: u64 = live.iter().map(|&i| status(&net, i).audits_done).sum();
    assert!(audits > 0);
    // What readers see converges too: the records (caretakers of different chunks publish
    // concurrently, and one may overtake another's) end up naming the live holders.
    let cid = cap_of(&out).cid.to_string();
    let mut health = artifact_status(&net, &cid);
    wait_until(
        "the records to name the repaired holders",
        REPAIR_WITHIN,
        || {
            health = artifact_status(&net, &cid);
            health["min"] == 5
        },
    );
    assert_eq!(health["repaired"], true, "{health}");
    assert!(
        health["shards_moved"].as_u64().unwrap() >= lost_shards as u64,
        "{health}"
    );
    let (_, _, map) = artifact(&net, &cap);
    assert!(
        map.version > primary.version,
        "readers do not see a repair record"
    );
    assert!(
        map.nodes.iter().all(|(id, _)| index_of.contains_key(id)),
        "the record names a node outside the devnet"
    );

    // Without repair, losing 4 of 7 nodes loses every chunk with fewer than 3 shards left.
    let second = [3, 4];
    let gone: HashSet<usize> = first.iter().chain(&second).copied().collect();
    let would_be_lost: Vec<usize> = recorded
        .iter()
        .enumerate()
        .filter(|(_, h)| h.iter().filter(|i| !gone.contains(i)).count() < 3)
        .map(|(c, _)| c)
        .collect();
    eprintln!(
        "without repair, chunks {would_be_lost:?} of {} would be lost with nodes 3, 4, 5, 6 gone",
        chunks.len()
    );
    assert!(!would_be_lost.is_empty(), "the test shows nothing");
    for i in second {
        net.kill(i);
    }
    let out = net.tmp.path().join("out");
    ok(net.get_cmd(&cap, &out));
    assert_same_tree(&src, &out);

    // A node exports the receipts its auditors signed; the file verifies with nothing else.
    let mut earned = 0;
    for &i in &[0usize, 1, 2] {
        let mut c = cairn();
        c.arg("--data-dir")
            .arg(&net.nodes[i].dir)
            .args(["node", "receipts", "--json"]);
        let json = ok(c).0;
        let file = net.tmp.path().join(format!("receipts-{i}.json"));
        fs::write(&file, &json).unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        earned += rows.len();
        let mut v = cairn();
        v.args(["receipts", "verify"]).arg(&file);
        let (out, _) = ok(v);
        assert!(
            out.contains(&format!("{} valid receipts", rows.len())),
            "{out}"
        );
    }
    assert!(earned > 0, "no receipts earned");
}

/// Damage on one node's disk (a flipped byte, a truncated file, a deleted file): the audits
/// find each, the node's reputation drops in its auditors' eyes, each damaged shard is
/// re-created on another node, and no corrupted byte is ever served.
#[test]
fn disk_damage_is_found_repaired_elsewhere_and_never_served() {
    let mut net = Devnet::start_with_args(&["1GiB"; 6], &["--audit-period", PERIOD]);
    let src = net.tmp.path().join("model");
    model(&src, 41, 6 << 20);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"]));
    let cap = cap_line(&out);
    let (chunks, _, _) = artifact(&net, &cap);
    let victim = 2;
    net.stop(victim);
    let mut mine: Vec<Cid> = chunks
        .iter()
        .flatten()
        .filter(|c| verified_on(&net.nodes[victim].dir, c))
        .copied()
        .collect();
    // The largest first: damage in the middle of real data, not in a tail shard of a few bytes.
    let size = |c: &Cid| {
        fs::metadata(shard_path(&net.nodes[victim].dir, c))
            .unwrap()
            .len()
    };
    mine.sort_by_key(|c| std::cmp::Reverse(size(c)));
    assert!(mine.len() >= 3, "node {victim} holds {} shards", mine.len());
    let (flipped, cut, deleted) = (mine[0], mine[1], mine[2]);
    let dir = net.nodes[victim].dir.clone();
    let mut b = fs::read(shard_path(&dir, &flipped)).unwrap();
    let at = HEADER_LEN + (b.len() - HEADER_LEN) / 2;
    b[at] ^= 0x01;
    fs::write(shard_path(&dir, &flipped), &b).unwrap();
    let b = fs::read(shard_path(&dir, &cut)).unwrap();
    fs::write(shard_path(&dir, &cut), &b[..b.len() / 2]).unwrap();
    fs::remove_file(shard_path(&dir, &deleted)).unwrap();
    net.spawn(victim);

    let others: Vec<usize> = (0..6).filter(|&i| i != victim).collect();
    let took = wait_until(
        "the damaged shards re-created elsewhere",
        REPAIR_WITHIN,
        || {
            [flipped, cut, deleted]
                .iter()
                .all(|c| others.iter().any(|&i| verified_on(&net.nodes[i].dir, c)))
        },
    );
    eprintln!("3 damaged shards found and re-created in {took:?}");
    // Its auditors saw it fail.
    let victim_id = data_encoding::HEXLOWER.encode(node_id(&net, victim).as_bytes());
    let failures: u64 = others
        .iter()
        .flat_map(|&i| status(&net, i).reputation)
        .filter(|r| r.peer == victim_id)
        .map(|r| r.failure)
        .sum();
    assert!(
        failures >= 3,
        "{failures} failed audits of node {victim} reported"
    );
    let worst = others
        .iter()
        .flat_map(|&i| status(&net, i).reputation)
        .filter(|r| r.peer == victim_id)
        .map(|r| r.audit_score)
        .fold(1.0f64, f64::min);
    assert!(worst < 1.0, "node {victim}'s audit score did not drop");
    let own = status(&net, victim);
    assert!(own.audits_failed >= 3, "{own:?}");

    // Reads never use the damaged copies: with two other nodes gone, the damaged chunks need
    // their repaired shards.
    net.kill(4);
    net.kill(5);
    let out = net.tmp.path().join("out");
    ok(net.get_cmd(&cap, &out));
    assert_same_tree(&src, &out);
}

fn artifact_status(net: &Devnet, cid: &str) -> serde_json::Value {
    let mut c = net.cli();
    c.args(["status", cid, "--json"]);
    let out = run_bounded(c, CMD_TIMEOUT);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The publisher's view without any node caretaking (a day's period): `cairn status` audits
/// every shard itself and shows a lost holder's chunks at 4 of 5; `cairn repair` by the
/// publisher re-creates them on the spare node and stores a new record; `status` then shows
/// 5 of 5 again and the artifact reads back identical with two more nodes gone.
#[test]
fn status_shows_lost_shards_and_the_publisher_repairs_them_by_hand() {
    let mut net = Devnet::with_nodes(6);
    let src = net.tmp.path().join("model");
    model(&src, 51, 8 << 20);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"]));
    let cap = cap_line(&out);
    let cid = cap_of(&out).cid.to_string();
    let healthy = artifact_status(&net, &cid);
    assert_eq!(healthy["min"], 5, "{healthy}");
    assert_eq!(healthy["repaired"], false);

    // A holder other than the bootstrap node goes.
    let hex = |i: usize| data_encoding::HEXLOWER.encode(node_id(&net, i).as_bytes());
    let held: Vec<String> = healthy["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    let victim = (1..6).find(|&i| held.contains(&hex(i))).unwrap();
    let gone = hex(victim);
    net.kill(victim);
    let degraded = artifact_status(&net, &cid);
    assert_eq!(degraded["min"], 4, "{degraded}");
    let h = degraded["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == gone.as_str())
        .expect("the killed holder is listed");
    assert_eq!(h["passed"], 0);
    assert_ne!(h["reached"], "yes", "{h}");

    let mut c = net.cli();
    c.arg("--data-dir").arg(&p).args(["repair", &cid]);
    let (out, _) = ok(c);
    assert!(out.contains("holder record updated"), "{out}");
    let repaired = artifact_status(&net, &cid);
    assert_eq!(repaired["min"], 5, "{repaired}");
    // The publisher signed a new record of its own: the lost holder is gone from it.
    assert!(
        repaired["holders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != gone.as_str()),
        "{repaired}"
    );
    assert!(
        repaired["record_version"].as_u64() > healthy["record_version"].as_u64(),
        "{repaired}"
    );
    // A second repair finds nothing to do.
    let mut c = net.cli();
    c.arg("--data-dir").arg(&p).args(["repair", &cid]);
    let (out, _) = ok(c);
    assert!(out.starts_with("0 chunks short"), "{out}");

    for i in (1..6).filter(|&i| i != victim).take(2) {
        net.kill(i);
    }
    let dir = net.tmp.path().join("out");
    ok(net.get_cmd(&cap, &dir));
    assert_same_tree(&src, &dir);
}

/// The node doing a repair SIGKILLed as it starts placing shards: another node (the next
/// caretaker) finishes the job, every chunk is back to 5 verified shards on the live nodes, the
/// artifact reads back identical, and the copies made along the way stay bounded (each repair
/// places a shard on the same ranked node, where it is stored once).
#[test]
fn a_repairer_killed_mid_repair_is_taken_over_without_loss_or_runaway_copies() {
    let mut net = Devnet::start_with_args(&["1GiB"; 7], &["--audit-period", PERIOD]);
    let src = net.tmp.path().join("model");
    model(&src, 61, 12 << 20);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"]));
    let cap = cap_line(&out);
    let (chunks, _, _) = artifact(&net, &cap);
    let logs_len: Vec<usize> = (0..7)
        .map(|i| fs::read(net.nodes[i].dir.join("node.log")).map_or(0, |b| b.len()))
        .collect();

    net.kill(6);
    // The first node to log a repaired shard is killed at once, whatever it had done.
    let mut repairer = None;
    wait_until("a repair to start", REPAIR_WITHIN, || {
        repairer = (1..6).find(|&i| {
            fs::read(net.nodes[i].dir.join("node.log"))
                .map(|b| String::from_utf8_lossy(&b[logs_len[i]..]).contains("repaired shard"))
                .unwrap_or(false)
        });
        repairer.is_some()
    });
    let repairer = repairer.unwrap();
    net.kill(repairer);
    let live: Vec<usize> = (0..6).filter(|&i| i != repairer).collect();
    let took = wait_until(
        "full redundancy after the repairer died",
        REPAIR_WITHIN,
        || fully_redundant(&verified_holders(&net, &live, &chunks)),
    );
    eprintln!("node {repairer} killed mid-repair; full redundancy on the 5 others in {took:?}");
    // Copies on the live nodes: every shard at least once; at most the 5 per chunk plus those
    // the dead nodes' shards could have left behind twice (a shard placed, then its node seen
    // as lost again): bounded by twice the chunk's shards.
    let copies: usize = chunks
        .iter()
        .flatten()
        .map(|c| {
            live.iter()
                .filter(|&&i| verified_on(&net.nodes[i].dir, c))
                .count()
        })
        .sum();
    let shards = chunks.len() * 5;
    assert!(
        copies >= shards && copies <= shards + shards / 2,
        "{copies} copies of {shards} shards"
    );
    let out = net.tmp.path().join("out");
    ok(net.get_cmd(&cap, &out));
    assert_same_tree(&src, &out);
}

/// A node that comes back after its shards were re-created elsewhere learns the repair record
/// from another holder, audits the new holders of its old shards and, once they are proved,
/// drops its extra copies: overlapping repairs and returning nodes do not leave the network
/// storing more than it needs, and nothing it needs is dropped.
#[test]
fn a_returning_node_trims_its_extra_copies_once_they_are_proved_elsewhere() {
    let mut net = Devnet::start_with_args(&["1GiB"; 7], &["--audit-period", PERIOD]);
    let src = net.tmp.path().join("model");
    model(&src, 71, 8 << 20);
    let p = net.tmp.path().join("publisher");
    init(&p, "1GiB");
    let (out, _) = ok(net.add_cmd(&p, &src, &["-k", "3", "-m", "2"]));
    let cap = cap_line(&out);
    let (chunks, _, _) = artifact(&net, &cap);
    let away = 6;
    let held = |net: &Devnet| {
        chunks
            .iter()
            .flatten()
            .filter(|c| verified_on(&net.nodes[away].dir, c))
            .count()
    };
    let before = held(&net);
    assert!(before > 0, "node {away} holds nothing");
    net.kill(away);
    let live: Vec<usize> = (0..6).collect();
    wait_until("full redundancy without node 6", REPAIR_WITHIN, || {
        fully_redundant(&verified_holders(&net, &live, &chunks))
    });
    net.spawn(away);
    assert_eq!(held(&net), before, "the node came back with its copies");
    let took = wait_until(
        "the returning node's extra copies trimmed",
        REPAIR_WITHIN,
        || held(&net) == 0,
    );
    eprintln!("{before} extra copies trimmed {took:?} after the node came back");
    // Nothing needed went with them.
    assert!(fully_redundant(&verified_holders(&net, &live, &chunks)));
    let trimmed = status(&net, away);
    assert_eq!(trimmed.shards, 0, "{trimmed:?}");
    let out = net.tmp.path().join("out");
    ok(net.get_cmd(&cap, &out));
    assert_same_tree(&src, &out);
}
