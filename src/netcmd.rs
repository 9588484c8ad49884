//! The network side of the command line: `node`, `peers`, and `add`/`get`/`ls` with `--peer`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use cairn_artifact::{AddOptions, ReadCap};
use cairn_node::{
    CareConfig, Network, NetworkConfig, NodeConfig, PeerAddr, RemoteArtifact, run_node,
};

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
}

pub fn node(
    dd: &DataDir,
    network: &str,
    listen: SocketAddr,
    bootstrap: &[String],
    care: NodeCare,
) -> anyhow::Result<()> {
    let rt = runtime()?;
    let store = Arc::new(dd.open_store()?);
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

pub fn add(
    peers: &[String],
    network: &str,
    dd: &DataDir,
    path: &Path,
    add: AddOptions,
    allow_reduced_durability: bool,
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
    rt.block_on(net.close());
    res.map(|_| ())
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
