//! `cairn devnet`: a local network of node processes on 127.0.0.1.
//!
//! Each node is a real `cairn node` process with its own data directory and a fixed port, so a
//! node killed and started again comes back at the same address. The first node is everyone's
//! bootstrap. Ctrl-C (or SIGTERM) stops every node with SIGTERM and waits for it. A child that
//! dies before (killed by a test, say) is reaped at once and named on stderr.
//!
//! The devnet folder is created 0700 and its logs 0600: it holds the nodes' keys and the
//! gateway's state.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_artifact::{AddOptions, KeyMode, read_artifact};
use cairn_erasure::Params;
use cairn_node::{Network, NetworkConfig, PeerAddr, PublishOptions};

use crate::config::DataDir;
use crate::gatewaycmd::gateway_dir;
use crate::netcmd::runtime;
use crate::units::human;
use cairn_artifact::ReadCap;
use cairn_gateway::GATEWAY_ADDR_FILE;

/// Log filter of the devnet's processes (unless `CAIRN_LOG` says otherwise): Cairn's own events
/// at info, its dependencies at warn. iroh's info-level spans, created for every datagram sent,
/// cost several percent of a node's CPU.
const DEVNET_LOG: &str = "warn,cairn=info,cairn_node=info,cairn_swarm=info,cairn_gateway=info,cairn_store=info,cairn_artifact=info";

/// Time allowed for a node to start and for the network to see every node.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct DevnetOptions {
    pub nodes: usize,
    pub dir: Option<PathBuf>,
    pub quota: u64,
    pub network: String,
    pub demo: bool,
    pub demo_mib: u64,
    pub exit_after_demo: bool,
    /// Serve the gateway over HTTPS with a throwaway local CA.
    pub tls: bool,
    /// The nodes' audit period (`cairn node --audit-period`).
    pub audit_period: String,
}

/// Validity of the devnet's throwaway CA and certificate.
const DEVNET_TLS_VALID: Duration = Duration::from_secs(30 * 86_400);

/// How often the devnet reaps children that died (a node SIGKILLed by a test or the OOM killer):
/// until reaped, a dead child stays a zombie in the process table.
const REAP_EVERY: Duration = Duration::from_millis(200);

struct Nodes {
    children: Vec<Child>,
    /// `node-3`, `gateway`: how a child is named when it dies.
    names: Vec<String>,
}

impl Nodes {
    fn push(&mut self, name: String, child: Child) {
        self.children.push(child);
        self.names.push(name);
    }

    /// Reaps every child that exited, saying so once per child.
    fn reap(&mut self, announced: &mut [bool]) {
        for (i, c) in self.children.iter_mut().enumerate() {
            if !announced[i]
                && let Ok(Some(status)) = c.try_wait()
            {
                announced[i] = true;
                eprintln!("{} exited ({status})", self.names[i]);
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            // A reaped child's pid may belong to another process by now: never signal it.
            if let Ok(Some(_)) = c.try_wait() {
                continue;
            }
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_addr(dir: &Path, child: &mut Child) -> anyhow::Result<PeerAddr> {
    let file = dir.join("node.addr");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(&file)
            && let Ok(a) = s.trim().parse::<PeerAddr>()
        {
            return Ok(a);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the node in {} exited ({status}) before it was up; see its log {}",
                dir.display(),
                dir.join("node.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the node in {} did not come up in {:?}",
                dir.display(),
                START_TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(opts: DevnetOptions) -> anyhow::Result<()> {
    if opts.nodes == 0 || opts.nodes > 64 {
        bail!("--nodes must be between 1 and 64");
    }
    let (base, _tmp) = match &opts.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("cairn-devnet-{}", std::process::id()));
            (t.clone(), Some(TmpDir(t)))
        }
    };
    // Owner-only: the folder holds the nodes' keys, the gateway's capabilities and the logs.
    cairn_store::create_dir_private(&base)
        .with_context(|| format!("cannot create {}", base.display()))?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let mut nodes = Nodes {
        children: Vec::new(),
        names: Vec::new(),
    };
    let mut addrs: Vec<PeerAddr> = Vec::new();
    for i in 0..opts.nodes {
        let dir = base.join(format!("node-{i}"));
        if !dir.join("config.toml").exists() {
            DataDir::init(&dir, opts.quota)?;
        }
        let port = free_port()?;
        let log = cairn_store::create_private(&dir.join("node.log"))
            .with_context(|| format!("cannot create {}", dir.join("node.log").display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--data-dir")
            .arg(&dir)
            .arg("--network")
            .arg(&opts.network)
            .arg("node")
            .arg("--audit-period")
            .arg(&opts.audit_period)
            .arg("--listen")
            .arg(SocketAddr::from(([127, 0, 0, 1], port)).to_string());
        if let Some(first) = addrs.first() {
            cmd.arg("--bootstrap").arg(first.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_LOG").unwrap_or_else(|_| DEVNET_LOG.into()),
            );
        let child = cmd.spawn().context("cannot start a node process")?;
        nodes.push(format!("node-{i}"), child);
        let addr = wait_addr(&dir, nodes.children.last_mut().expect("just pushed"))?;
        addrs.push(addr);
    }
    let bootstrap = addrs[0].to_string();
    cairn_store::write_private_replace(
        &base.join("bootstrap"),
        format!("{bootstrap}\n").as_bytes(),
    )?;

    let rt = runtime()?;
    // Wait until the bootstrap node sees every node, so that the first publish uses them all.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let seen = rt.block_on(async {
            let net = Network::connect(NetworkConfig::new(&opts.network, vec![addrs[0].clone()]))
                .await
                .ok()?;
            let n = net.peer_count();
            net.close().await;
            Some(n)
        });
        if seen == Some(opts.nodes) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "after {:?} the bootstrap node sees {:?} of {} nodes",
                START_TIMEOUT,
                seen,
                opts.nodes
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // With --demo and an anvil installed, a local chain for the gated repository.
    let chain = match (opts.demo, crate::devnetchain::find_anvil()) {
        (true, Some(anvil)) => {
            let (child, url) = crate::devnetchain::start_anvil(&anvil, &base)?;
            nodes.push("anvil".into(), child);
            match rt.block_on(crate::devnetchain::deploy_demo(&url, &base)) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!(
                        "no gated demo: the local chain did not come up ({e:#}); see {}",
                        base.join("anvil.log").display()
                    );
                    None
                }
            }
        }
        (true, None) => {
            eprintln!(
                "no gated demo: no anvil found (set CAIRN_ANVIL, put anvil on PATH, or run scripts/test.sh once, which installs it)"
            );
            None
        }
        _ => None,
    };
    // The HTTP gateway, reading from the network through node 0.
    let gw_data = base.join("gateway-node");
    // Made before the gateway starts, so that its id can be printed for `cairn grant`.
    let gw_grant = crate::config::grant_secret(&gw_data)?.id();
    let gw_log = cairn_store::create_private(&base.join("gateway.log"))
        .with_context(|| format!("cannot create {}", base.join("gateway.log").display()))?;
    let gw_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // HTTPS: a CA made for this devnet (its key never written) and a certificate for
    // 127.0.0.1, localhost and ::1.
    let tls = if opts.tls {
        Some(cairn_gateway::write_local_tls(
            &base.join("tls"),
            DEVNET_TLS_VALID,
        )?)
    } else {
        None
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("--data-dir")
        .arg(&gw_data)
        .arg("--network")
        .arg(&opts.network)
        .arg("--peer")
        .arg(&bootstrap)
        .arg("gateway")
        .arg("--listen")
        .arg(format!("127.0.0.1:{gw_port}"));
    if let Some(t) = &tls {
        cmd.arg("--tls-cert")
            .arg(&t.files.cert)
            .arg("--tls-key")
            .arg(&t.files.key);
    }
    if let Some(c) = &chain {
        cmd.arg("--chain").arg(format!("{}={}", c.chain_id, c.url));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(gw_log)
        .env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG").unwrap_or_else(|_| DEVNET_LOG.into()),
        );
    nodes.push(
        "gateway".into(),
        cmd.spawn().context("cannot start the gateway process")?,
    );
    let gw_url = wait_file(
        &gateway_dir(&gw_data).join(GATEWAY_ADDR_FILE),
        nodes.children.last_mut().expect("just pushed"),
        &base.join("gateway.log"),
    )?;
    println!(
        "cairn devnet: {} nodes on 127.0.0.1, data in {}",
        opts.nodes,
        base.display()
    );
    for (i, a) in addrs.iter().enumerate() {
        println!("  node-{i}  {a}");
    }
    println!(
        "  gateway {gw_url}  (state in {}; grant id {gw_grant})",
        gateway_dir(&gw_data).display()
    );
    if let Some(t) = &tls {
        let ca = t.ca_cert.display();
        println!(
            "HTTPS with a throwaway CA made for this devnet (30 days; its key was never written). Point clients at it:\n  export SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca}   # Python: huggingface_hub, datasets, requests\n  curl --cacert {ca} {gw_url}/healthz\n  (with SSL_CERT_FILE set, that shell trusts only this CA)"
        );
    }
    println!(
        "talk to it with:\n  export CAIRN_PEER={bootstrap}\n  cairn add ./my-model        # publish across the nodes\n  cairn get --cap-file <file with the capability> -o ./out\n  cairn --data-dir {} register org/my-model --cap-file <file>   # serve it over HTTP\n  cairn add ./my-model --name org/my-model --grant {gw_grant}   # or name it on the network: the gateway serves it, no register",
        gw_data.display()
    );

    if opts.demo {
        let cap = demo(&rt, &base, &opts, &addrs)?;
        crate::gatewaycmd::register(&gw_data, "demo/sample-model", &cap.to_string(), false, None)?;
        println!(
            "served over {}, Hugging Face-compatible:",
            if tls.is_some() { "HTTPS" } else { "HTTP" }
        );
        let curl = match &tls {
            Some(t) => format!("curl -s --cacert {}", t.ca_cert.display()),
            None => "curl -s".into(),
        };
        println!("  {curl} {gw_url}/api/models/demo/sample-model");
        println!("  {curl} {gw_url}/demo/sample-model/resolve/main/config.json");
        println!(
            "  HF_ENDPOINT={gw_url} python3 -c \"from huggingface_hub import snapshot_download; print(snapshot_download('demo/sample-model'))\""
        );
        println!(
            "  HF_ENDPOINT={gw_url} python3 -c \"from transformers import AutoTokenizer; print(AutoTokenizer.from_pretrained('demo/sample-model')('cairn stores models'))\""
        );
        let path = "/demo/sample-model/resolve/main/config.json";
        let body = match &tls {
            None => fetch_http(&gw_url, path)?,
            Some(t) => fetch_https(&gw_url, path, &t.ca_cert)?,
        };
        if body != std::fs::read(base.join("sample-model/config.json"))? {
            bail!("the gateway served config.json differently; this is a bug");
        }
        println!("  (checked: the gateway serves config.json byte for byte)");
        if let Some(c) = &chain {
            let policy = c.policy();
            let gate = cairn_gateway::AccessPolicy::Gated(
                cairn_gateway::access::policy::Gate::parse(&policy)?,
            );
            crate::gatewaycmd::register(
                &gw_data,
                "demo/gated-model",
                &cap.to_string(),
                false,
                Some(gate),
            )?;
            println!(
                "gated on a local chain ({}, chain {}): demo/gated-model is readable by holders of ERC-1155 pass {} of {}",
                c.url,
                c.chain_id,
                crate::devnetchain::DEMO_PASS_ID,
                c.pass
            );
            println!(
                "  the demo wallet {} holds one (its key: {}); sign in and download with:",
                c.wallet.address(),
                c.key_file.display()
            );
            // Not indented: the heredoc and the Python must paste as they are.
            println!("\n{}\n", c.snippet(&gw_url));
            println!(
                "  or open {gw_url}/auth in a browser with a wallet on chain {}",
                c.chain_id
            );
            if tls.is_none() {
                let want = std::fs::read(base.join("sample-model/config.json"))?;
                rt.block_on(c.check(&gw_url, &want))?;
                println!(
                    "  (checked: 403 GatedRepo without a token; the demo wallet signs in and reads config.json)"
                );
            }
        }
    }
    if opts.demo && opts.exit_after_demo {
        println!("stopping the devnet");
        return Ok(());
    }
    println!("press Ctrl-C to stop every node");
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Both listeners live across the loop, so no signal falls between two of its turns.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(REAP_EVERY);
        let mut announced = vec![false; nodes.children.len()];
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => nodes.reap(&mut announced),
            }
        }
        anyhow::Ok(())
    })?;
    println!(
        "stopping {} processes (nodes, gateway and, with a local chain, anvil)",
        nodes.children.len()
    );
    Ok(())
}

struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo(
    rt: &tokio::runtime::Runtime,
    base: &Path,
    opts: &DevnetOptions,
    addrs: &[PeerAddr],
) -> anyhow::Result<ReadCap> {
    let publisher = base.join("publisher");
    let dd = if publisher.join("config.toml").exists() {
        DataDir::open(&publisher)?
    } else {
        DataDir::init(&publisher, 1 << 30)?
    };
    let model = base.join("sample-model");
    if !model.exists() {
        crate::commands::sample_model(&model, opts.demo_mib)?;
    }
    let mut config = NetworkConfig::new(&opts.network, vec![addrs[0].clone()]);
    config.secret_key = Some(dd.publisher_key()?);
    let net = rt.block_on(Network::connect(config))?;
    let res = demo_with(rt, &net, &dd, &model, opts);
    rt.block_on(net.close());
    res
}

fn demo_with(
    rt: &tokio::runtime::Runtime,
    net: &Network,
    dd: &DataDir,
    model: &Path,
    opts: &DevnetOptions,
) -> anyhow::Result<ReadCap> {
    let base = model
        .parent()
        .expect("the model is inside the devnet directory");
    let add = AddOptions {
        params: Params::DEFAULT,
        key_mode: KeyMode::Convergent(dd.convergence_secret()?),
        name: Some("demo/sample-model".into()),
        record_signers: Vec::new(),
    };
    let start = Instant::now();
    let report = net.publish(
        model,
        &PublishOptions {
            add,
            allow_reduced_durability: false,
        },
        &|_| {},
    )?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = (opts.demo_mib << 20) + 200;
    println!(
        "published sample-model ({}) across {} nodes in {secs:.2} s ({}/s), 3-of-5 per chunk",
        human(bytes),
        report.nodes,
        human((bytes as f64 / secs) as u64)
    );
    println!("  read capability: {}", report.cap);
    let out = base.join("fetched");
    let _ = std::fs::remove_dir_all(&out);
    let start = Instant::now();
    let art = rt.block_on(net.open(&report.cap))?;
    read_artifact(&art.artifact(), &net.source(&art), &out, &|_| {})?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fetched it back from the network in {secs:.2} s ({}/s)",
        human((bytes as f64 / secs) as u64)
    );
    for f in &art.private.files {
        if std::fs::read(model.join(&f.path))? != std::fs::read(out.join(&f.path))? {
            bail!("{} came back different; this is a bug", f.path);
        }
        println!("  {:<28} {:>10}  identical", f.path, human(f.size));
    }
    Ok(report.cap)
}

/// Waits for a process to write a one-line file (its address), or to die.
fn wait_file(file: &Path, child: &mut Child, log: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(file)
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_string());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "a devnet process exited ({status}) before it was up; see {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not appear within {:?}; see {}",
                file.display(),
                START_TIMEOUT,
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 GET over loopback (the demo's own check of the gateway), bounded in time
/// and size.
fn fetch_http(base: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let addr = base
        .strip_prefix("http://")
        .context("the gateway URL is not http://")?;
    get_over(connect(addr)?, addr, path)
}

/// The same GET over TLS, trusting only the devnet's CA in `ca`.
fn fetch_https(base: &str, path: &str, ca: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let addr = base
        .strip_prefix("https://")
        .context("the gateway URL is not https://")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host: SocketAddr = addr.parse().context("the gateway URL has no IP address")?;
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::IpAddress(host.ip().into()),
    )?;
    get_over(rustls::StreamOwned::new(conn, connect(addr)?), addr, path)
}

fn connect(addr: &str) -> anyhow::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// GET `path` on `s` (HTTP/1.1, `Connection: close`); the body of a `200`, at most 16 MiB.
fn get_over(
    mut s: impl std::io::Read + std::io::Write,
    addr: &str,
    path: &str,
) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    s.flush()?;
    let mut buf = Vec::new();
    match s.take(16 << 20).read_to_end(&mut buf) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: the caller compares the body with the
        // file it expects, so a cut answer is still caught.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the gateway answered {}", head.lines().next().unwrap_or(""));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("unexpected chunked answer for a small file");
    }
    Ok(buf[split + 4..].to_vec())
}
