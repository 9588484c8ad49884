//! The network side of the command line: `node`, `peers`, and `add`/`get`/`ls`/`pin`/`unpin`
//! with `--peer`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use cairn_artifact::{AddOptions, Cid, ReadCap};
use cairn_node::{
    CareConfig, LEASE_TERM_MAX, LEASES_FILE, LeaseClient, LeaseFile, LeasePin, Network,
    NetworkConfig, NodeConfig, PeerAddr, RemoteArtifact, RenewConfig, run_node, sign_lease,
};
use cairn_store::now_ms;

use crate::config::DataDir;
use crate::getls::Opened;

/// The running node's control socket, in its data directory.
pub const CONTROL_SOCKET: &str = "node.sock";

/// A runtime for the network: two workers, matching the machine this runs on by default.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn parse_peers(peers: &[String]) -> anyhow::Result<Vec<PeerAddr>> {
    peers
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.parse::<PeerAddr>().map_err(anyhow::Error::from))
        .collect()
}

pub async fn connect(
    peers: &[String],
    network: &str,
    key: Option<[u8; 32]>,
) -> anyhow::Result<Network> {
    let mut config = NetworkConfig::new(network, parse_peers(peers)?);
    config.secret_key = key;
    Ok(Network::connect(config).await?)
}

/// How a node cares for the network's data, from the command line.
pub struct NodeCare {
    pub care: CareConfig,
    pub metrics: Option<SocketAddr>,
    /// How long past the end of its lease an artifact is kept.
    pub lease_grace: std::time::Duration,
}

pub fn node(
    dd: &DataDir,
    network: &str,
    listen: SocketAddr,
    bootstrap: &[String],
    care: NodeCare,
) -> anyhow::Result<()> {
    let rt = runtime()?;
    let store = Arc::new(dd.open_store_with(care.lease_grace)?);
    // The publisher of this data directory keeps its `cairn pin --peer` artifacts alive
    // through this node's renewals.
    let renew = match dd.publisher_key() {
        Ok(publisher_key) => Some(RenewConfig {
            file: dd.path.join(LEASES_FILE),
            publisher_key,
        }),
        Err(e) => {
            tracing::warn!("no lease renewals: {e:#}");
            None
        }
    };
    let config = NodeConfig {
        store,
        secret_key: dd.node_key()?,
        listen,
        offline: listen.ip().is_loopback(),
        network: network.to_string(),
        bootstrap: parse_peers(bootstrap)?,
        peer_table: Some(dd.path.join("peers.bin")),
        care: care.care,
        metrics: care.metrics,
        control_socket: Some(dd.path.join(CONTROL_SOCKET)),
        renew,
    };
    rt.block_on(async {
        let handle = run_node(config).await?;
        let addr = handle.peer_addr();
        let addr_file = dd.path.join("node.addr");
        cairn_artifact::write_private_replace(&addr_file, format!("{addr}\n").as_bytes())
            .with_context(|| format!("cannot write {}", addr_file.display()))?;
        println!("node {addr}");
        if let Some(m) = handle.metrics_addr() {
            println!("metrics http://{m}/metrics");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        handle.shutdown().await;
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(dd.path.join(CONTROL_SOCKET));
        Ok(())
    })
}

pub fn peers(peers: &[String], network: &str) -> anyhow::Result<()> {
    if peers.is_empty() {
        bail!("give a node with --peer <id>@<ip:port> (or set CAIRN_PEER)");
    }
    let rt = runtime()?;
    rt.block_on(async {
        let net = connect(peers, network, None).await?;
        // Each listed node is probed: the node asked may still list one that died a moment
        // ago, until it has been silent for long enough.
        let (live, silent) = net.probe_peers().await;
        println!("{live} live nodes");
        if silent > 0 {
            eprintln!("{silent} more listed by the node asked, not answering");
        }
        net.close().await;
        Ok(())
    })
}

/// What `add --name` publishes on the network besides the artifact.
pub struct NamedAdd {
    pub repo: crate::namecmd::RepoRef,
    pub policy: Option<String>,
    pub grants: Vec<cairn_encryption::GatewayId>,
}

pub fn add(
    peers: &[String],
    network: &str,
    dd: &DataDir,
    path: &Path,
    add: AddOptions,
    allow_reduced_durability: bool,
    named: Option<NamedAdd>,
) -> anyhow::Result<()> {
    let rt = runtime()?;
    let net = rt.block_on(connect(peers, network, Some(dd.publisher_key()?)))?;
    let res = crate::getls::add(
        crate::getls::AddTarget::Network {
            net: &net,
            allow_reduced_durability,
        },
        path,
        add,
    );
    let res = match (res, named) {
        (Ok(added), Some(n)) => rt
            .block_on(crate::namecmd::publish_revision(
                &net,
                dd,
                &n.repo,
                &added.cap,
                n.policy,
                &n.grants,
                &[],
            ))
            .map(|_| ())
            .context("the artifact is on the network, but its name record was not published; run the same add again"),
        (res, _) => res.map(|_| ()),
    };
    rt.block_on(net.close());
    res
}

pub fn get(
    peers: &[String],
    network: &str,
    cap: &str,
    file: Option<&str>,
    out: &Path,
) -> anyhow::Result<()> {
    let cap: ReadCap = cap.parse()?;
    let rt = runtime()?;
    let net = rt.block_on(connect(peers, network, None))?;
    let res = rt
        .block_on(net.open(&cap))
        .map_err(anyhow::Error::from)
        .and_then(|art| crate::getls::get(&remote_opened(&art), &net.source(&art), file, out));
    rt.block_on(net.close());
    res
}

pub fn ls(peers: &[String], network: &str, cap: &str) -> anyhow::Result<()> {
    let cap: ReadCap = cap.parse()?;
    let rt = runtime()?;
    let net = rt.block_on(connect(peers, network, None))?;
    let res = rt.block_on(net.open(&cap));
    rt.block_on(net.close());
    crate::getls::ls(&remote_opened(&res?));
    Ok(())
}

/// A Unix-ms time as people read it (RFC 3339, UTC, to the second).
pub(crate) fn date(ms: u64) -> String {
    let nanos = i128::from(ms / 1000) * 1_000_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after 1970"))
}

/// `cairn pin <artifact> --peer ...`: signs a lease with this data directory's publisher key
/// until the earlier of the pin's end and one term from now, hands it to every holder, and
/// lists the artifact in `leases.json` for a `cairn node` on this data directory to renew.
pub fn pin(
    peers: &[String],
    network: &str,
    dd: &DataDir,
    cid: &Cid,
    pin_for: Option<&str>,
    lease_term: Option<&str>,
) -> anyhow::Result<()> {
    let ms = |d: &str| -> anyhow::Result<u64> {
        Ok(crate::units::parse_duration_secs(d)?.saturating_mul(1000))
    };
    let max_term = LEASE_TERM_MAX.as_millis() as u64;
    let term = lease_term.map(ms).transpose()?.unwrap_or(max_term);
    if term == 0 || term > max_term {
        bail!(
            "a lease term must be between 1 s and {} days",
            LEASE_TERM_MAX.as_secs() / 86_400
        );
    }
    let pin_for = pin_for.map(ms).transpose()?;
    if pin_for == Some(0) {
        bail!("--pin-for must be at least 1 s");
    }
    let now = now_ms();
    let end = pin_for.map(|d| now.saturating_add(d));
    let term = pin_for.map_or(term, |d| term.min(d));
    let until = end.unwrap_or(u64::MAX).min(now.saturating_add(term));
    let key = cairn_swarm::secret_key_from_bytes(&dd.publisher_key()?)?;
    let signed = sign_lease(&key, *cid, until)?;
    let rt = runtime()?;
    let (holders, spread) = rt.block_on(async {
        let client = LeaseClient::connect(network, &parse_peers(peers)?).await?;
        let holders = client.holders(cid, &key.public()).await;
        let spread = client.send(&holders, &signed).await;
        client.close().await;
        anyhow::Ok((holders, spread))
    })?;
    for why in &spread.refusals {
        eprintln!("not kept by {why}");
    }
    if holders.is_empty() {
        bail!(
            "no node keeps a holder record of {cid} signed by this data directory's publisher \
             key; publish it from here (`cairn add --peer`) first"
        );
    }
    if spread.accepted == 0 {
        bail!(
            "none of the {} holders of {cid} took its lease",
            holders.len()
        );
    }
    let path = dd.path.join(LEASES_FILE);
    let mut file = LeaseFile::read(&path)?;
    file.upsert(LeasePin {
        cid: cid.to_string(),
        until_ms: end,
        term_ms: term,
        lease_until_ms: until,
    });
    file.write(&path)?;
    println!(
        "lease of {cid} until {} kept by {} of {} holders",
        date(until),
        spread.accepted,
        spread.holders
    );
    match end {
        Some(end) if end <= until => println!("pinned {cid} on the network until {}", date(end)),
        Some(end) => println!(
            "pinned {cid} on the network until {}; a `cairn node` on this data directory renews \
             its lease until then",
            date(end)
        ),
        None => println!(
            "pinned {cid} on the network until unpinned; a `cairn node` on this data directory \
             renews its lease"
        ),
    }
    Ok(())
}

/// `cairn unpin <artifact> --peer ...`: stops renewing the artifact's lease (removes it from
/// `leases.json`) and says when the lease its holders keep ends.
pub fn unpin(peers: &[String], network: &str, dd: &DataDir, cid: &Cid) -> anyhow::Result<()> {
    let path = dd.path.join(LEASES_FILE);
    let mut file = LeaseFile::read(&path)?;
    let Some(removed) = file.remove(&cid.to_string()) else {
        bail!(
            "{cid} is not pinned on the network from this data directory ({} lists the pins)",
            path.display()
        );
    };
    file.write(&path)?;
    let key = cairn_swarm::secret_key_from_bytes(&dd.publisher_key()?)?;
    let rt = runtime()?;
    // What the holders keep (a node on this data directory may have renewed it since).
    let current = rt
        .block_on(async {
            let client = LeaseClient::connect(network, &parse_peers(peers)?).await?;
            let holders = client.holders(cid, &key.public()).await;
            let current = client.current(&holders, cid, &key.public()).await;
            client.close().await;
            anyhow::Ok(current)
        })
        .unwrap_or_else(|e| {
            eprintln!("could not ask the holders for the lease they keep: {e:#}");
            None
        });
    let ends = current.unwrap_or(0).max(removed.lease_until_ms);
    println!(
        "unpinned {cid}: no more renewals; its lease ends {}, then the holders let it go after \
         their grace period",
        date(ends)
    );
    Ok(())
}

/// An artifact opened on the network as `get` and `ls` take it; `ls` adds its holders.
fn remote_opened(art: &RemoteArtifact) -> Opened<'_> {
    Opened {
        art,
        placement: Some(format!(
            "on {} nodes{}",
            art.record.nodes.len(),
            if art.record.reduced_durability {
                " (reduced durability)"
            } else {
                ""
            }
        )),
    }
}
