//! `cairn gateway` (serve HTTP), `cairn register` (name an artifact on a running gateway) and
//! `cairn apikey ...` (manage the gateway's API keys through its loopback-only admin API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_artifact::ReadCap;
use cairn_gateway::access::policy::Gate;
use cairn_gateway::{
    ADMIN_ADDR_FILE, ADMIN_TOKEN_FILE, AccessPolicy, AdminClient, ArtifactSource, CertName,
    CertRevocation, ChainRpc, GatewayConfig, IpNet, LocalSource, NetworkSource, NewKey, RepoId,
    RepoKind, RevokeCert, Scope, TlsFiles, UsageCounts, UsageRow, run_gateway_with,
};
use cairn_node::{Network, NetworkConfig};

use crate::config::DataDir;
use crate::netcmd::{parse_peers, runtime};
use crate::units::parse_duration_secs;

/// How often a gateway reading from the network asks for the live peers again.
const PEER_REFRESH_EVERY: Duration = Duration::from_secs(30);

/// The gateway's state lives here, beside the node's.
pub fn gateway_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway")
}

/// Limits of `cairn gateway` given on the command line (`None`: the gateway's default).
pub struct Limits {
    pub streams: Option<usize>,
    pub streams_per_client: Option<usize>,
    pub connections_per_client: Option<usize>,
}

impl Limits {
    fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut c = GatewayConfig::default();
        for (flag, given, field) in [
            ("--streams", self.streams, &mut c.streams_max),
            (
                "--streams-per-client",
                self.streams_per_client,
                &mut c.streams_per_client_max,
            ),
            (
                "--connections-per-client",
                self.connections_per_client,
                &mut c.connections_per_client_max,
            ),
        ] {
            match given {
                Some(0) => bail!("{flag} must be at least 1"),
                Some(n) => *field = n,
                None => {}
            }
        }
        Ok(c)
    }
}

/// How `cairn gateway` meets its clients: HTTPS (with mutual TLS for backends) or plain HTTP,
/// and which proxies it believes.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Transport {
    /// Serve HTTPS with this PEM certificate chain (the gateway's certificate first). It is
    /// reloaded when the file changes or on SIGHUP, without dropping connections.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert; must be readable by its owner only (chmod 600).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept client certificates signed by these PEM CA certificates (mutual TLS for
    /// backends); clients without a certificate still use API keys.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Serve plain HTTP on an address that is not loopback: only behind a TLS-terminating
    /// proxy on the same host or network, never facing clients.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,
    /// A proxy (address or CIDR) whose X-Forwarded-For names the client (repeatable); the
    /// header of anyone else is ignored.
    #[arg(long, value_name = "NET")]
    pub trusted_proxy: Vec<String>,
    /// A chain whose token holdings gate repositories: `<chain id>=<RPC URL>` (repeatable).
    /// The gateway asks each RPC its `eth_chainId` at start and refuses a mismatch.
    #[arg(long, value_name = "ID=URL")]
    pub chain: Vec<String>,
    /// Where users reach this gateway (`https://models.example.org`): what wallet sign-in
    /// messages must name. Default: the listening address.
    #[arg(long, value_name = "URL")]
    pub public_origin: Option<String>,
    /// Seconds a chain's "holds the token" answer is believed, 1 to 30 [default: 30]; a
    /// holder who transfers the token away is denied at most this long after.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=30))]
    pub chain_cache_secs: Option<u64>,
    /// Wallet sign-ins (nonces) one client address may start per minute [default: 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sign_ins_per_minute: Option<u32>,
}

impl Transport {
    fn apply(&self, c: &mut GatewayConfig) -> anyhow::Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            });
        }
        c.insecure_http = self.insecure_http;
        c.trusted_proxies = self
            .trusted_proxy
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .with_context(|| format!("--trusted-proxy {n:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        c.chains = self
            .chain
            .iter()
            .map(|s| {
                s.parse::<ChainRpc>()
                    .map_err(|e| anyhow::anyhow!("--chain: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        c.public_origin = self.public_origin.clone();
        if let Some(s) = self.chain_cache_secs {
            c.chain_allow_ttl = Duration::from_secs(s);
        }
        if let Some(n) = self.sign_ins_per_minute {
            c.nonces_per_client_per_minute = n;
        }
        Ok(())
    }
}

/// Serves HTTP until SIGTERM or Ctrl-C. With `--peer`, artifacts come from the network;
/// without, from this data directory's store.
pub fn serve(
    data_dir: &Path,
    peers: &[String],
    network: &str,
    (listen, admin_listen): (SocketAddr, SocketAddr),
    limits: Limits,
    transport: Transport,
) -> anyhow::Result<()> {
    let mut config = limits.config()?;
    transport.apply(&mut config)?;
    // Refused before anything starts (the TLS files are checked by the gateway itself).
    config.check_listen(listen).context(
        "pass --tls-cert and --tls-key, or --insecure-http when a TLS-terminating proxy is in front",
    )?;
    let rt = runtime()?;
    rt.block_on(async {
        let source: Arc<dyn ArtifactSource> = if peers.is_empty() {
            let dd = DataDir::open(data_dir)?;
            Arc::new(LocalSource::new(Arc::new(dd.open_store()?)))
        } else {
            // Repositories granted to this gateway's grant key on the network are served
            // without registration (the names module of the gateway).
            let secret = crate::config::grant_secret(data_dir)?;
            eprintln!("gateway grant id: {}", secret.id());
            config.grant_secret = Some(Arc::new(secret));
            let net = Network::connect(NetworkConfig::new(network, parse_peers(peers)?)).await?;
            let net = Arc::new(net);
            // Nodes that join later must be asked for holder records too.
            net.spawn_peer_refresh(PEER_REFRESH_EVERY);
            Arc::new(NetworkSource::new(net))
        };
        let dir = gateway_dir(data_dir);
        let shutdown = async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        eprintln!(
            "gateway state in {}; its URLs go to gateway.addr and admin.addr there",
            dir.display()
        );
        run_gateway_with(&dir, listen, admin_listen, config, source, shutdown)
            .await
            .context("the gateway stopped with an error")
    })
}

fn admin(data_dir: &Path) -> anyhow::Result<AdminClient> {
    let dir = gateway_dir(data_dir);
    let url = std::fs::read_to_string(dir.join(ADMIN_ADDR_FILE)).with_context(|| {
        format!(
            "no running gateway found in {} (start one with `cairn gateway`)",
            dir.display()
        )
    })?;
    let token = std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE))
        .with_context(|| format!("cannot read the admin token in {}", dir.display()))?;
    Ok(AdminClient::new(url.trim(), token.trim().to_string())?)
}

/// Registers a read capability as the newest revision of `org/name` on the running gateway.
/// `policy` `None` keeps the policy of the repository's `main` (public for a new repository),
/// so re-registering a private or gated repository never opens it by omission.
pub fn register(
    data_dir: &Path,
    repo: &str,
    cap: &str,
    dataset: bool,
    policy: Option<AccessPolicy>,
) -> anyhow::Result<()> {
    let (kind, repo) = repo_arg(repo, dataset)?;
    let cap: ReadCap = cap.parse()?;
    let kept = policy.is_none();
    let client = admin(data_dir)?;
    let (commit, restricted, gate) =
        runtime()?.block_on(client.register_gated(kind, &repo, &cap, policy))?;
    println!(
        "{repo} revision {commit} (main), {}",
        describe(restricted, gate.as_deref())
    );
    if kept && (restricted || gate.is_some()) {
        eprintln!("{repo} keeps its access policy; pass --public to make it readable by anyone");
    }
    Ok(())
}

fn repo_arg(repo: &str, dataset: bool) -> anyhow::Result<(RepoKind, RepoId)> {
    let (org, name) = repo
        .split_once('/')
        .context("the repository must look like org/name")?;
    let kind = if dataset {
        RepoKind::Dataset
    } else {
        RepoKind::Model
    };
    Ok((kind, RepoId::new(org, name)?))
}

fn describe(restricted: bool, gate: Option<&str>) -> String {
    match (restricted, gate) {
        (true, _) => "private: readable with an API key only".into(),
        (false, Some(g)) => {
            format!("gated: readable by wallets that pass {g}, and API keys scoped to it")
        }
        (false, None) => "public".into(),
    }
}

/// The policy of `--private`, `--public` or `--gate <policy>` (`None` when none is given).
/// `--gate` takes the one-line shorthand, JSON, or `@file` holding either.
pub fn policy_arg(
    private: bool,
    public: bool,
    gate: Option<&str>,
) -> anyhow::Result<Option<AccessPolicy>> {
    Ok(match (private, public, gate) {
        (true, _, _) => Some(AccessPolicy::ApiKeyScopes(Vec::new())),
        (_, true, _) => Some(AccessPolicy::Public),
        (_, _, Some(g)) => {
            let text = match g.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the policy file {path}"))?,
                None => g.to_string(),
            };
            Some(AccessPolicy::Gated(Gate::parse(&text)?))
        }
        _ => None,
    })
}

/// Sets, changes or removes the gate of `org/name`'s `main` on the running gateway.
pub fn set_gate(
    data_dir: &Path,
    repo: &str,
    dataset: bool,
    policy: AccessPolicy,
) -> anyhow::Result<()> {
    let (kind, repo) = repo_arg(repo, dataset)?;
    let client = admin(data_dir)?;
    let (commit, restricted, gate) = runtime()?.block_on(client.set_policy(kind, &repo, policy))?;
    println!(
        "{repo} revision {commit} (main), {}",
        describe(restricted, gate.as_deref())
    );
    Ok(())
}

/// What `cairn apikey` does.
pub enum KeyAction {
    Create {
        label: String,
        scopes: Vec<String>,
        expires: Option<String>,
        allow_ip: Vec<String>,
        rate: Option<u32>,
        client_cert: Option<String>,
    },
    List,
    Revoke {
        id: String,
    },
    Rotate {
        id: String,
        grace: String,
    },
    Audit {
        limit: usize,
        anonymous: bool,
    },
    RevokeCert {
        serial: Option<String>,
        fingerprint: Option<String>,
        label: String,
    },
    Certs,
    Usage {
        since: Option<String>,
        json: bool,
    },
}

pub fn apikey(data_dir: &Path, action: KeyAction) -> anyhow::Result<()> {
    let client = admin(data_dir)?;
    let rt = runtime()?;
    match action {
        KeyAction::Create {
            label,
            scopes,
            expires,
            allow_ip,
            rate,
            client_cert,
        } => {
            if scopes.is_empty() {
                bail!("give at least one --scope, e.g. read:repo:org/name or read:prefix:org/");
            }
            let scopes = scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()?;
            let allow_ips = allow_ip
                .iter()
                .map(|s| s.parse::<IpNet>())
                .collect::<Result<Vec<_>, _>>()?;
            let expires_in_secs = expires.as_deref().map(parse_duration_secs).transpose()?;
            let client_cert = client_cert
                .as_deref()
                .map(str::parse::<CertName>)
                .transpose()?;
            let created = rt.block_on(client.create_key(NewKey {
                label,
                scopes,
                expires_in_secs,
                allow_ips,
                rate_per_minute: rate,
                client_cert: client_cert.clone(),
            }))?;
            println!("id: {}", created.id);
            if let Some(name) = client_cert {
                println!("client certificate: {name}");
                eprintln!(
                    "the key has no secret: a client certificate from the gateway's --client-ca \
                     carrying {name} acts as it"
                );
            } else {
                println!("key: {}", created.key);
                eprintln!("the key is shown this once; only its hash is stored");
            }
        }
        KeyAction::List => {
            for k in rt.block_on(client.list_keys())? {
                let scopes: Vec<String> = k.scopes.iter().map(|s| s.to_string()).collect();
                println!(
                    "{} {:<20} {} expires={} revoked={} rate={}{}",
                    k.id,
                    k.label,
                    scopes.join(","),
                    k.expires
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "never".into()),
                    k.revoked,
                    k.rate_per_minute
                        .map(|r| format!("{r}/min"))
                        .unwrap_or_else(|| "unlimited".into()),
                    k.client_cert
                        .map(|c| format!(" client-cert={c}"))
                        .unwrap_or_default()
                );
            }
        }
        KeyAction::Revoke { id } => {
            rt.block_on(client.revoke_key(&id))?;
            println!("revoked {id}");
        }
        KeyAction::Rotate { id, grace } => {
            let grace = Duration::from_secs(parse_duration_secs(&grace)?);
            let created = rt.block_on(client.rotate_key(&id, grace))?;
            println!("id: {}", created.id);
            println!("key: {}", created.key);
            eprintln!(
                "the old key {id} keeps working for {grace:?}; the new key is shown this once"
            );
        }
        KeyAction::Audit { limit, anonymous } => {
            let entries = if anonymous {
                rt.block_on(client.audit_anonymous(limit))?
            } else {
                rt.block_on(client.audit(limit))?
            };
            for e in entries {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        KeyAction::RevokeCert {
            serial,
            fingerprint,
            label,
        } => {
            let what = match (serial, fingerprint) {
                (Some(s), None) => CertRevocation::serial(&s)?,
                (None, Some(f)) => CertRevocation::fingerprint(&f)?,
                _ => bail!("give one of --serial HEX or --fingerprint HEX"),
            };
            let r = rt.block_on(client.revoke_cert(RevokeCert { what, label }))?;
            println!("revoked client certificates with {}", r.what);
        }
        KeyAction::Certs => {
            for r in rt.block_on(client.revoked_certs())? {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        KeyAction::Usage { since, json } => {
            let since = match since.as_deref() {
                None => 0,
                Some(s) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .context("the clock is before 1970")?
                        .as_secs();
                    now.saturating_sub(parse_duration_secs(s)?)
                }
            };
            let rows = rt.block_on(client.usage(since))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_usage(&rows);
            }
        }
    }
    Ok(())
}

/// A table of the rows, then each principal's totals over them.
fn print_usage(rows: &[UsageRow]) {
    println!(
        "{:<10}  {:<22}  {:>10}  {:>16}  {:>8}",
        "day", "principal", "requests", "bytes", "denials"
    );
    let mut totals: std::collections::BTreeMap<&str, UsageCounts> = Default::default();
    for r in rows {
        println!(
            "{:<10}  {:<22}  {:>10}  {:>16}  {:>8}",
            r.day, r.principal, r.counts.requests, r.counts.bytes, r.counts.denials
        );
        let t = totals.entry(&r.principal).or_default();
        t.requests += r.counts.requests;
        t.bytes += r.counts.bytes;
        t.denials += r.counts.denials;
    }
    for (p, t) in totals {
        println!(
            "{:<10}  {:<22}  {:>10}  {:>16}  {:>8}",
            "total", p, t.requests, t.bytes, t.denials
        );
    }
}
