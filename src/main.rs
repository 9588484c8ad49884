//! The `cairn` command line. Thin: it parses arguments, owns the data directory's files, and
//! calls the library crates. Errors print the whole cause chain and exit with code 2.

mod carecmd;
mod commands;
mod config;
mod devnet;
mod devnetchain;
mod gatewaycmd;
mod getls;
mod namecmd;
mod netcmd;
mod tensors;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Cairn: content-addressed, encrypted, erasure-coded storage for AI models and datasets.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about)]
struct Cli {
    /// Data directory (keys, store, configuration).
    #[arg(long, global = true, env = "CAIRN_DIR")]
    data_dir: Option<PathBuf>,
    /// A node of the network to use, `<endpoint id>@<ip:port>` (repeat for more). With it,
    /// `add`, `get`, `ls` work on the network instead of the local store.
    #[arg(
        long = "peer",
        global = true,
        env = "CAIRN_PEER",
        value_delimiter = ' '
    )]
    peers: Vec<String>,
    /// Name of the network (its nodes announce themselves on a topic derived from it).
    #[arg(long, global = true, env = "CAIRN_NETWORK", default_value = "cairn")]
    network: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data directory: node key, convergence secret (owner-only files), empty store.
    Init {
        /// Disk quota for shards, e.g. 500GiB, 10GB, 1048576.
        #[arg(long, default_value = "10GiB")]
        quota: String,
    },
    /// Add a file or folder; prints the artifact CID and its read capability.
    Add {
        /// File or folder to add.
        path: PathBuf,
        /// Artifact name, `org/name`. With --peer, also a signed name record on the network: a
        /// new revision of the name (the first publish of an org claims it for this data
        /// directory's publisher key).
        #[arg(long)]
        name: Option<String>,
        /// With --name and --peer: the name is a dataset's (default: a model's).
        #[arg(long, requires = "name")]
        dataset: bool,
        /// With --name and --peer: also grant this revision to a gateway (its `cairn id` grant
        /// id, `cairngw1…`; repeatable). Gateways the previous revision was granted to keep it.
        #[arg(long, value_name = "GATEWAY_ID", requires = "name")]
        grant: Vec<String>,
        /// With --name and --peer: readable through gateways only with an API key whose scopes
        /// cover it (default: the previous revision's policy; public for a new name).
        #[arg(long, requires = "name", conflicts_with = "gate")]
        private: bool,
        /// With --name and --peer: an on-chain gate (as `cairn register --gate`).
        #[arg(long, value_name = "POLICY", requires = "name")]
        gate: Option<String>,
        /// Data shards per chunk.
        #[arg(short = 'k', long, default_value_t = 3)]
        data_shards: usize,
        /// Parity shards per chunk: the artifact survives the loss of any `m` shards of a chunk.
        #[arg(short = 'm', long, default_value_t = 2)]
        parity_shards: usize,
        /// Use a fresh random key per chunk (no dedup) instead of convergent keys.
        #[arg(long)]
        random_keys: bool,
        /// Pin for this long (e.g. 30d, 12h); default: until unpinned.
        #[arg(long)]
        pin_for: Option<String>,
        /// On a network with fewer live nodes than shards per chunk, publish anyway (some node
        /// then holds two shards of a chunk); recorded in the holder record.
        #[arg(long)]
        allow_reduced_durability: bool,
    },
    /// Fetch a whole artifact into a directory, or one file of it to a path (`-` for stdout).
    Get {
        /// Read capability printed by `cairn add` (other local users can see command lines:
        /// prefer --cap-file). With --cap-file, the one argument is the file to fetch.
        #[arg(required_unless_present = "cap_file")]
        cap: Option<String>,
        /// One file of the artifact to fetch.
        file: Option<String>,
        /// Read the capability from this file (`-` for standard input) instead of the command
        /// line.
        #[arg(long, value_name = "PATH")]
        cap_file: Option<PathBuf>,
        /// Output directory (whole artifact) or file path (one file).
        #[arg(short, long)]
        out: PathBuf,
        /// Only these tensors of a safetensors file: a name, or a pattern where `*` matches any
        /// run of characters and `?` one (repeat for more); writes a safetensors file of them,
        /// fetching only their chunks and the header's.
        #[arg(long, value_name = "PATTERN")]
        tensor: Vec<String>,
    },
    /// List an artifact's files.
    Ls {
        /// Read capability printed by `cairn add` (prefer --cap-file).
        #[arg(required_unless_present = "cap_file", conflicts_with = "cap_file")]
        cap: Option<String>,
        /// Read the capability from this file (`-` for standard input).
        #[arg(long, value_name = "PATH")]
        cap_file: Option<PathBuf>,
    },
    /// Pin an artifact held by this store. With --peer, keep it on the network instead: sign a
    /// lease with this data directory's publisher key, hand it to every holder, and list it in
    /// `leases.json`, which a `cairn node` on this data directory renews.
    Pin {
        /// Manifest CID (or a read capability).
        cid: String,
        /// Pin for this long (e.g. 30d, 12h); default: until unpinned.
        #[arg(long)]
        pin_for: Option<String>,
        /// With --peer: the length of each lease signed (default and most: 30d).
        #[arg(long, hide = true)]
        lease_term: Option<String>,
    },
    /// Remove a pin; the data goes at the next `cairn gc`. With --peer, stop renewing the
    /// artifact's lease: the holders let it go once the lease and their grace have ended.
    Unpin {
        /// Manifest CID (or a read capability).
        cid: String,
    },
    /// List pins.
    Pins,
    /// Remove everything no live pin needs.
    Gc,
    /// Show usage against quota.
    Stat,
    /// Read back every shard and check it against its CID.
    Verify,
    /// Run a node: serve this data directory's store to the network until SIGTERM or Ctrl-C,
    /// auditing the holders of what it keeps and repairing lost shards. `cairn node status` and
    /// `cairn node receipts` report on it.
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        action: Option<NodeCmd>,
        /// Address to listen on (UDP). A loopback address runs the node offline (no relays, no
        /// address lookup), as the devnet does.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Nodes to join through, `<endpoint id>@<ip:port>` (repeatable).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Every shard this node cares for is audited at least once per period (e.g. 1d, 1h,
        /// 30s).
        #[arg(long, default_value = "1d")]
        audit_period: String,
        /// Audit and report only: never re-create lost shards.
        #[arg(long)]
        no_repair: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// How long past the end of its lease an artifact is kept (tests shorten it).
        #[arg(long, hide = true, default_value = "7d")]
        lease_grace: String,
    },
    /// List the live nodes a network peer knows.
    Peers,
    /// Serve artifacts over HTTP (native and Hugging Face-compatible endpoints) until SIGTERM or
    /// Ctrl-C. With --peer, from the network; without, from this data directory's store.
    Gateway {
        /// Address of the HTTP endpoints.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Address of the admin API (`cairn register`, `cairn apikey`); loopback only.
        #[arg(long, default_value = "127.0.0.1:0")]
        admin_listen: std::net::SocketAddr,
        /// Response bodies streamed at once, each a reader thread and about 25 MiB of
        /// read-ahead [default: 32].
        #[arg(long)]
        streams: Option<usize>,
        /// Response bodies streamed at once to one client address [default: 8]. Behind a
        /// reverse proxy every client has the proxy's address: raise this and
        /// --connections-per-client to the totals.
        #[arg(long)]
        streams_per_client: Option<usize>,
        /// Connections one client address may hold, of 1024 [default: 64].
        #[arg(long)]
        connections_per_client: Option<usize>,
        #[command(flatten)]
        transport: gatewaycmd::Transport,
    },
    /// Name an artifact on the running gateway of this data directory: `org/name` at a new
    /// revision, which becomes `main`.
    Register {
        /// Repository, `org/name`.
        repo: String,
        /// Read capability printed by `cairn add` (prefer --cap-file).
        #[arg(required_unless_present = "cap_file", conflicts_with = "cap_file")]
        cap: Option<String>,
        /// Read the capability from this file (`-` for standard input).
        #[arg(long, value_name = "PATH")]
        cap_file: Option<PathBuf>,
        /// Register it as a dataset (default: a model).
        #[arg(long)]
        dataset: bool,
        /// Readable only with an API key whose scopes cover it. Without --private, --public or
        /// --gate, a repository keeps the policy its `main` has (a new one is public).
        #[arg(long, conflicts_with_all = ["public", "gate"])]
        private: bool,
        /// Readable by anyone; needed to make a private or gated repository public.
        #[arg(long, conflicts_with = "gate")]
        public: bool,
        /// Gated on chain: readable by wallets whose address passes this policy (shorthand such
        /// as `erc1155:31337:0xabc…:7>=1`, JSON, or `@file`; docs/access-policy.md), and by API
        /// keys with a scope covering it. The gateway must check every chain it names.
        #[arg(long, value_name = "POLICY")]
        gate: Option<String>,
    },
    /// Set, change or remove the on-chain gate of a repository on the running gateway.
    Gate {
        /// Repository, `org/name`.
        repo: String,
        /// The new gate (shorthand, JSON or `@file`, as for `register --gate`).
        #[arg(required_unless_present_any = ["remove", "private"], conflicts_with_all = ["remove", "private"])]
        policy: Option<String>,
        /// Remove the gate: the repository becomes public.
        #[arg(long, conflicts_with = "private")]
        remove: bool,
        /// Remove the gate and make the repository private (API keys only).
        #[arg(long)]
        private: bool,
        /// The repository is a dataset.
        #[arg(long)]
        dataset: bool,
    },
    /// Audit every shard of an artifact on the network now and show its health: verified
    /// shards per chunk (minimum and histogram), each holder's answers, repairs (needs --peer).
    Status {
        /// Artifact CID or read capability (only the CID is used).
        artifact: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repair an artifact now: re-create every shard that fails its audit from any k others
    /// and place it on a new node (needs --peer). Nodes do this on their own; this is for now.
    Repair {
        /// Artifact CID or read capability (only the CID is used).
        artifact: String,
    },
    /// Show this data directory's public identities: node id, publisher key (which owns the
    /// orgs it names) and grant id (what `cairn grant --gateway` and `add --grant` take).
    Id,
    /// Grant the current revision of a name to gateways (needs --peer): a new signed record of
    /// the same artifact whose key is also wrapped to them. With --revoke, the new record is not
    /// wrapped to them (what they already unwrapped cannot be taken back).
    Grant {
        /// Repository, `org/name`.
        repo: String,
        /// Gateway grant id (`cairngw1…`, from `cairn id` on the gateway's data directory).
        #[arg(long = "gateway", value_name = "GATEWAY_ID", required = true)]
        gateways: Vec<String>,
        /// Remove the gateways instead.
        #[arg(long)]
        revoke: bool,
        /// A dataset (default: a model).
        #[arg(long)]
        dataset: bool,
    },
    /// Let other publisher keys sign names of an org this data directory's key owns, or take
    /// up such a permission.
    Org {
        #[command(subcommand)]
        action: OrgCmd,
    },
    /// List the revisions of a name on the network, newest first (needs --peer).
    Log {
        /// Repository, `org/name`.
        repo: String,
        /// A dataset (default: a model).
        #[arg(long)]
        dataset: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check audit receipts exported by `cairn node receipts --json`.
    Receipts {
        #[command(subcommand)]
        action: ReceiptsCmd,
    },
    /// Manage the running gateway's API keys.
    Apikey {
        #[command(subcommand)]
        action: ApikeyCmd,
    },
    /// Start a local network of node processes on 127.0.0.1; Ctrl-C stops them all.
    Devnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Directory for the nodes' data (default: a new temporary directory, removed at exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Quota of each node.
        #[arg(long, default_value = "4GiB")]
        quota: String,
        /// Publish a sample model across the network and fetch it back, verified.
        #[arg(long)]
        demo: bool,
        /// Size of the demo's weights file in MiB.
        #[arg(long, default_value_t = 64)]
        demo_mib: u64,
        /// Stop the network after the demo instead of waiting for Ctrl-C.
        #[arg(long)]
        exit_after_demo: bool,
        /// Serve the gateway over HTTPS, with a throwaway CA and certificate made in the
        /// devnet's folder (`tls/ca.pem` is the CA to trust).
        #[arg(long)]
        tls: bool,
        /// The nodes audit every shard at least once per period and repair what they find
        /// lost (e.g. 1h, 30s).
        #[arg(long, default_value = "1h")]
        audit_period: String,
    },
    /// Demo on embedded defaults: a temporary store, a sample model added and fetched back verified.
    Demo {
        /// Size of the sample weights file in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// What the node stores and did: usage and quota, audits answered and failed, audits
    /// done, repairs, bytes served, peers and their reputation.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the audit receipts this node earned (signed by its auditors).
    Receipts {
        /// Only receipts signed less than this long ago (e.g. 24h, 7d); default: all kept.
        #[arg(long)]
        since: Option<String>,
        /// One JSON array (the format `cairn receipts verify` checks); default: a line each.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum OrgCmd {
    /// Print a delegation: the org key (this data directory's publisher key) lets MEMBER sign
    /// the org's name records until it ends. Give it to the member, who runs `cairn org join`.
    /// A member key is rotated by delegating to the new key; a delegation cannot be withdrawn
    /// before it ends, so keep them short.
    Delegate {
        /// The org, e.g. `acme`.
        org: String,
        /// The member's publisher key (`publisher:` of `cairn id` in its data directory).
        #[arg(long)]
        member: String,
        /// How long it lasts, e.g. 30d, 12h (at most 3650d).
        #[arg(long = "for", default_value = "90d")]
        valid_for: String,
    },
    /// Keep a delegation (`cairn-delegation1:…`) in this data directory: `add --name` and
    /// `grant` then sign the org's records with this data directory's key under it.
    Join {
        /// The delegation, as `cairn org delegate` printed it.
        delegation: String,
    },
}

#[derive(Subcommand, Debug)]
enum ReceiptsCmd {
    /// Check every receipt in a file exported by `cairn node receipts --json`: signatures,
    /// fields, and no nonce used twice by the same auditor. Needs nothing but the file.
    Verify {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ApikeyCmd {
    /// Create a key; it is printed once, only its hash is kept.
    Create {
        /// What the key may read: `read:repo:org/name`, `read:prefix:org/`, `read:artifact:<cid>` (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. 30d (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
        /// Client networks allowed, e.g. 10.0.0.0/8 (repeatable; default: any).
        #[arg(long)]
        allow_ip: Vec<String>,
        /// Requests per minute (default: unlimited).
        #[arg(long)]
        rate: Option<u32>,
        /// A name for people.
        #[arg(long, default_value = "")]
        label: String,
        /// Bind the key to a client certificate name instead of a secret: `cn:<common name>`,
        /// `dns:<name>`, `uri:<uri>` or `email:<address>`. A certificate from the gateway's
        /// --client-ca carrying that name acts as the key; the key has no bearer secret.
        #[arg(long, value_name = "KIND:NAME")]
        client_cert: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key at once.
    Revoke {
        /// Key id (16 hex).
        id: String,
    },
    /// Replace a key; the old one keeps working for the grace period.
    Rotate {
        /// Key id (16 hex).
        id: String,
        /// How long the old key keeps working, e.g. 1h.
        #[arg(long, default_value = "1h")]
        grace: String,
    },
    /// Revoke client certificates (mutual TLS) by serial number or SHA-256 fingerprint, from the
    /// next request on, connections already open included.
    RevokeCert {
        /// Serial number, hex (as `openssl x509 -noout -serial` prints it).
        #[arg(
            long,
            required_unless_present = "fingerprint",
            conflicts_with = "fingerprint"
        )]
        serial: Option<String>,
        /// SHA-256 fingerprint of the certificate, hex (as `openssl x509 -noout -fingerprint
        /// -sha256` prints it).
        #[arg(long)]
        fingerprint: Option<String>,
        /// A note for people (why it was revoked).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the revoked client certificates.
    Certs,
    /// Show the latest uses of keys (allowed and denied), without secrets.
    Audit {
        /// Entries to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Show the denials of requests without a valid key instead, one entry per client
        /// address and minute with its count.
        #[arg(long)]
        anonymous: bool,
    },
    /// Show requests, response bytes and denials per key (and `anonymous`) and UTC day.
    Usage {
        /// Only the days that end less than this long ago, e.g. 24h or 7d (default: every day
        /// kept, up to 400).
        #[arg(long)]
        since: Option<String>,
        /// One JSON array of {day, day_start, principal, requests, bytes, denials} rows.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // Quiet by default (warnings and errors). iroh's socket logs an error when a client
            // closes its endpoint without waiting out connection attempts to dead peers (see
            // `Network::close`), which is expected and not the user's concern.
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,iroh::socket=off")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file (the devnet's node.log, gateway.log) gets
        // plain text that grep and editors read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The CPU pool (chunking, sealing, coding, hashing) gets a name of its own, so a profile or
    // `top -H` tells it from the async runtime's threads.
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("cairn-cpu-{i}"))
        .build_global()
    {
        tracing::debug!("the CPU pool was set up already: {e}");
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
