//! `cairn node status`, `cairn node receipts`, `cairn receipts verify`: what a node did for the
//! network, and the proof of it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use cairn_artifact::Cid;
use cairn_node::{NodeStatus, ReceiptJson, verify_receipts};
use http_body_util::{BodyExt, Empty};

use crate::config::DataDir;
use crate::units::{human, parse_duration_secs};
use crate::{NodeCmd, ReceiptsCmd};

/// Longest answer read from a node's control socket.
const CONTROL_ANSWER_MAX: usize = 512 << 20;
/// Time a node has to answer on its control socket.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn node_cmd(dd: &DataDir, action: NodeCmd) -> anyhow::Result<()> {
    match action {
        NodeCmd::Status { json } => {
            let status: NodeStatus = match ask_node(&dd.path, "/status")? {
                Some(body) => serde_json::from_slice(&body).context("the node's status")?,
                None => {
                    eprintln!("(the node is not running: what its store keeps)");
                    let store = dd.open_store()?;
                    let id = cairn_swarm::secret_key_from_bytes(&dd.node_key()?)?
                        .public()
                        .to_string();
                    NodeStatus::collect(id, &store, &[], 0, (0, 0))
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        NodeCmd::Receipts { since, json } => {
            let since_ms = match since {
                Some(s) => cairn_store::now_ms().saturating_sub(parse_duration_secs(&s)? * 1000),
                None => 0,
            };
            let rows: Vec<ReceiptJson> =
                match ask_node(&dd.path, &format!("/receipts?since={since_ms}"))? {
                    Some(body) => serde_json::from_slice(&body).context("the node's receipts")?,
                    None => {
                        let store = dd.open_store()?;
                        store
                            .receipts_since(since_ms, cairn_node::RECEIPTS_EXPORT_MAX)?
                            .iter()
                            .filter_map(|b| cairn_swarm::SignedReceipt::decode(b).ok())
                            .map(|r| ReceiptJson::from_signed(&r))
                            .collect()
                    }
                };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    println!(
                        "{} auditor {} {} shards {}",
                        r.time_ms,
                        &r.auditor[..16],
                        r.shards.len(),
                        human(r.bytes)
                    );
                }
                eprintln!("{} receipts", rows.len());
            }
            Ok(())
        }
    }
}

pub fn receipts_cmd(action: ReceiptsCmd) -> anyhow::Result<()> {
    match action {
        ReceiptsCmd::Verify { file } => {
            let bytes = if file == Path::new("-") {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let report = verify_receipts(&bytes).map_err(anyhow::Error::msg)?;
            for why in &report.invalid {
                eprintln!("invalid: {why}");
            }
            println!(
                "{} valid receipts proving {} audited; {} invalid",
                report.valid,
                human(report.bytes),
                report.invalid.len()
            );
            if !report.invalid.is_empty() {
                bail!("{} receipts do not verify", report.invalid.len());
            }
            Ok(())
        }
    }
}

/// `cairn status <artifact>`: audits it on the network now.
pub fn status(peers: &[String], network: &str, cid: &Cid, json: bool) -> anyhow::Result<()> {
    if peers.is_empty() {
        bail!("give a node with --peer <id>@<ip:port> (or set CAIRN_PEER)");
    }
    let rt = crate::netcmd::runtime()?;
    let health = rt.block_on(async {
        let net = crate::netcmd::connect(peers, network, None).await?;
        let h = net.inspect(cid).await;
        net.close().await;
        h.map_err(anyhow::Error::from)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&health)?);
        return Ok(());
    }
    println!(
        "artifact {} ({}-of-{})",
        health.artifact, health.k, health.n
    );
    println!(
        "chunks   {}; verified shards per chunk: min {} of {}",
        health.verified.len(),
        health.min,
        health.n
    );
    for (count, chunks) in &health.histogram {
        println!("  {count} verified: {chunks} chunks");
    }
    if health.repaired {
        println!(
            "repairs  {} shards moved since publishing (record version {})",
            health.shards_moved, health.record_version
        );
    } else {
        println!("repairs  none (the publisher's record)");
    }
    println!("holders  {}", health.holders.len());
    for h in &health.holders {
        println!(
            "  {} shards {} proved {} failed {}{}{}",
            &h.id[..16.min(h.id.len())],
            h.shards,
            h.passed,
            h.failed,
            if h.reached == "yes" {
                String::new()
            } else {
                format!(" ({})", h.reached)
            },
            if h.listed {
                ""
            } else {
                " not in the peer list"
            }
        );
    }
    if !health.unreadable.is_empty() {
        bail!(
            "{} chunks have fewer than {} verified shards: {:?}",
            health.unreadable.len(),
            health.k,
            health.unreadable
        );
    }
    Ok(())
}

/// `cairn repair <artifact>`: re-creates what fails its audit now.
pub fn repair(peers: &[String], network: &str, dd: &DataDir, cid: &Cid) -> anyhow::Result<()> {
    if peers.is_empty() {
        bail!("give a node with --peer <id>@<ip:port> (or set CAIRN_PEER)");
    }
    let rt = crate::netcmd::runtime()?;
    let report = rt.block_on(async {
        let net = crate::netcmd::connect(peers, network, Some(dd.publisher_key()?)).await?;
        let r = net.repair(cid).await;
        net.close().await;
        r.map_err(anyhow::Error::from)
    })?;
    println!(
        "{} chunks short of shards; {} shards re-created and placed; {} chunks not fully repaired; \
         holder record {}",
        report.chunks,
        report.placed,
        report.unrepaired,
        if report.record_stored {
            "updated"
        } else if report.placed > 0 {
            "left to the nodes (this key is not the publisher's)"
        } else {
            "unchanged"
        }
    );
    if report.unrepaired > 0 {
        bail!("{} chunks could not be fully repaired", report.unrepaired);
    }
    Ok(())
}

fn print_status(s: &NodeStatus) {
    println!("node {}", s.id);
    println!(
        "stored   {} of {} ({} shards, {} manifests)",
        human(s.stored_bytes),
        human(s.quota),
        s.shards,
        s.manifests
    );
    println!(
        "audits   answered {}, failed {}; done on others {}",
        s.audits_answered, s.audits_failed, s.audits_done
    );
    println!(
        "repairs  {} shards ({})",
        s.repairs_done,
        human(s.repair_bytes)
    );
    println!("served   {}", human(s.bytes_served));
    println!("receipts {} since start", s.receipts);
    println!("leases   {} renewed", s.leases_renewed);
    println!("peers    {} known, {} live", s.peers_known, s.peers_live);
    for r in &s.reputation {
        println!(
            "  {} audit {:.2} online {:.2}{}  ok {} fail {} offline {} timeout {} unknown {}",
            &r.peer[..16.min(r.peer.len())],
            r.audit_score,
            r.online_score,
            if r.avoided { " AVOIDED" } else { "" },
            r.success,
            r.failure,
            r.offline,
            r.timeout,
            r.unknown
        );
    }
}

/// GETs `path` from the node running in `dir` over its control socket; None if no node runs
/// there.
fn ask_node(dir: &Path, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let socket = dir.join(crate::netcmd::CONTROL_SOCKET);
    if !socket.exists() {
        return Ok(None);
    }
    let rt = crate::netcmd::runtime()?;
    rt.block_on(async {
        let stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => s,
            // A socket file left by a node that was killed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot reach {}", socket.display())),
        };
        let exchange = async {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header("host", "node")
                .body(Empty::<Bytes>::new())?;
            let resp = send.send_request(req).await?;
            if !resp.status().is_success() {
                bail!("the node answered {}", resp.status());
            }
            let body = http_body_util::Limited::new(resp.into_body(), CONTROL_ANSWER_MAX)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the node's answer: {e}"))?
                .to_bytes();
            Ok(Some(body.to_vec()))
        };
        tokio::time::timeout(CONTROL_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("the node did not answer within {CONTROL_TIMEOUT:?}"))?
    })
}
