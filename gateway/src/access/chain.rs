//! Chain checks: the conditions of a [`Gate`] asked of the chains' JSON-RPC endpoints.
//!
//! # Fail closed
//! A condition is met only when an `eth_call` at `latest - confirmations` returned a well-formed
//! answer that meets it. Everything else is a denial with its class ([`ChainError`]): an empty
//! `0x` reply (no contract at that address at that block: `eth_call` does not fail there), a
//! revert (an ERC-721 `ownerOf` of a token that does not exist), an answer that does not decode,
//! an RPC error, no answer within [`RPC_TIMEOUT`], a chain the gateway was not configured for.
//! None of these is ever read as a zero balance, and none as an allow.
//!
//! # Cache
//! Outcomes are cached per (chain, contract, check, holder, confirmations), bounded to
//! [`CACHE_ENTRIES_MAX`] entries: an allow for [`ALLOW_TTL`] (a holder who transfers the token
//! away keeps access at most that long), a denial or an error for [`DENY_TTL`] (a holder who
//! just received the token waits at most that long; a flood against a failing RPC costs one
//! call per key and TTL). Concurrent checks of one key wait for the first one's call (the cache
//! hands out one guard per key), so a burst of requests from one address costs one chain call.
//!
//! # What a compromised RPC can do
//! The gateway believes its RPC endpoints: one that lies can allow or deny any holder of the
//! chain it serves (run your own node, or one you trust, for chains that gate anything of
//! value). It cannot make the gateway serve a repository without a gate, forge a sign-in (EOA
//! signatures are recovered locally; only ERC-1271 wallets ask the chain), or reach anything but
//! the outcome of that chain's conditions. A slow or huge answer costs at most [`RPC_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{BlockId, TransactionRequest};
use alloy::sol;
use alloy::sol_types::SolCall;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use quick_cache::sync::Cache;

use super::policy::{Check, Condition, Gate};

/// Longest wait for one JSON-RPC answer.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an allow is believed.
pub const ALLOW_TTL: Duration = Duration::from_secs(30);
/// How long a denial (or a failed check) is believed.
pub const DENY_TTL: Duration = Duration::from_secs(3);
/// Outcomes kept in the cache.
pub const CACHE_ENTRIES_MAX: usize = 100_000;
/// Chains one gateway may be configured with.
pub const CHAINS_MAX: usize = 32;
/// How often a chain's health is probed (`eth_blockNumber`) for `/healthz`.
pub const HEALTH_PROBE_EVERY: Duration = Duration::from_secs(2);

/// The ERC-1271 magic value: `isValidSignature` returns it for a valid signature.
pub const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

sol! {
    interface IErc20 {
        function balanceOf(address owner) external view returns (uint256);
    }
    interface IErc721 {
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 tokenId) external view returns (address);
    }
    interface IErc1155 {
        function balanceOf(address account, uint256 id) external view returns (uint256);
    }
    interface IErc1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
    }
}

/// Why a condition could not be checked (each is a denial).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The gateway has no RPC endpoint for this chain.
    #[error("chain {0} is not configured on this gateway")]
    UnknownChain(u64),
    /// `eth_call` answered `0x`: no contract at that address at that block.
    #[error("no contract at that address at block {0}")]
    NoContract(u64),
    /// The call reverted or the endpoint answered with an error.
    #[error("the call failed: {0}")]
    Rpc(String),
    /// The answer did not decode as the standard's return type.
    #[error("the answer does not decode: {0}")]
    Decode(String),
    /// No answer in time, or no connection.
    #[error("the chain's RPC did not answer in time")]
    Timeout,
    /// The endpoint cannot be reached.
    #[error("the chain's RPC cannot be reached")]
    Unreachable,
}

impl ChainError {
    /// A short class for metrics and the audit log.
    pub fn class(&self) -> &'static str {
        match self {
            ChainError::UnknownChain(_) => "unknown_chain",
            ChainError::NoContract(_) => "no_contract",
            ChainError::Rpc(_) => "rpc_error",
            ChainError::Decode(_) => "decode",
            ChainError::Timeout => "timeout",
            ChainError::Unreachable => "unreachable",
        }
    }
}

/// A checked condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the holder meets it.
    pub met: bool,
    /// The block the answer was read at.
    pub block: u64,
}

/// The result of a whole gate for one holder: met or not, with the condition and block that
/// decided it (for the audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateOutcome {
    /// Whether the holder passes the gate.
    pub met: bool,
    /// What decided: `erc1155:…>=1 at block 12: met`, or the error.
    pub why: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CallLabels {
    chain: u64,
    outcome: &'static str,
}

struct Rpc {
    provider: RootProvider,
    healthy: AtomicBool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    cond: Condition,
    holder: Address,
}

#[derive(Clone)]
struct Cached {
    result: Result<Outcome, ChainError>,
    until: Instant,
}

/// The chains a gateway checks conditions on, and the outcome cache.
pub struct Chains {
    rpcs: BTreeMap<u64, Arc<Rpc>>,
    allow_ttl: Duration,
    cache: Cache<Key, Cached>,
    calls: Family<CallLabels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
}

impl std::fmt::Debug for Chains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chains")
            .field("chains", &self.rpcs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An RPC URL with any user, password, query or path left out, for logs and errors (provider
/// URLs often carry an API key).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<unparsable URL>".into(),
    }
}

fn client() -> reqwest::Client {
    // HTTPS endpoints use rustls with the ring provider, the one the gateway's TLS uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(RPC_TIMEOUT)
        .connect_timeout(RPC_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client with a timeout and no redirects builds")
}

impl Chains {
    /// No chain: every condition is denied as [`ChainError::UnknownChain`].
    pub fn none() -> Self {
        Self::with(BTreeMap::new(), ALLOW_TTL)
    }

    fn with(rpcs: BTreeMap<u64, Arc<Rpc>>, allow_ttl: Duration) -> Self {
        Self {
            rpcs,
            allow_ttl: allow_ttl.min(ALLOW_TTL),
            cache: Cache::new(CACHE_ENTRIES_MAX),
            calls: Family::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
        }
    }

    /// Connects to each `(chain id, RPC URL)`, asks its `eth_chainId` and refuses a mismatch,
    /// a duplicate, or an endpoint that does not answer: a gateway must not start believing
    /// the wrong chain. Allows are believed for `allow_ttl` (at most [`ALLOW_TTL`]).
    pub async fn connect(specs: &[(u64, String)], allow_ttl: Duration) -> Result<Self, String> {
        if specs.len() > CHAINS_MAX {
            return Err(format!("at most {CHAINS_MAX} chains"));
        }
        let mut rpcs = BTreeMap::new();
        for (id, url) in specs {
            let shown = redact_url(url);
            let u: reqwest::Url = url
                .parse()
                .map_err(|_| format!("chain {id}: {shown} is not a URL"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!(
                    "chain {id}: {shown}: the RPC must be http or https"
                ));
            }
            let provider = RootProvider::new(RpcClient::new_http_with_client(client(), u));
            let got = tokio::time::timeout(RPC_TIMEOUT, provider.get_chain_id())
                .await
                .map_err(|_| format!("chain {id}: {shown} did not answer eth_chainId in time"))?
                .map_err(|e| {
                    // Transport errors quote the URL, which may hold a key: say only the class.
                    let why = match &e {
                        alloy::transports::RpcError::ErrorResp(p) => clip(&p.message),
                        alloy::transports::RpcError::Transport(
                            alloy::transports::TransportErrorKind::HttpError(h),
                        ) => format!("it answered HTTP {}", h.status),
                        alloy::transports::RpcError::Transport(_) => "cannot be reached".into(),
                        _ => "an answer that is not JSON-RPC".into(),
                    };
                    format!("chain {id}: {shown} failed eth_chainId: {why}")
                })?;
            if got != *id {
                return Err(format!(
                    "chain {id}: {shown} says it is chain {got}; refusing to check chain {id} conditions there"
                ));
            }
            if rpcs
                .insert(
                    *id,
                    Arc::new(Rpc {
                        provider,
                        healthy: AtomicBool::new(true),
                    }),
                )
                .is_some()
            {
                return Err(format!("chain {id} is given twice"));
            }
        }
        Ok(Self::with(rpcs, allow_ttl))
    }

    /// The configured chain ids.
    pub fn ids(&self) -> Vec<u64> {
        self.rpcs.keys().copied().collect()
    }

    /// Whether `chain` is configured.
    pub fn has(&self, chain: u64) -> bool {
        self.rpcs.contains_key(&chain)
    }

    /// Chains whose last call or probe failed.
    pub fn unhealthy(&self) -> Vec<u64> {
        self.rpcs
            .iter()
            .filter(|(_, r)| !r.healthy.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Probes every chain's `eth_blockNumber` each [`HEALTH_PROBE_EVERY`] until `self` is
    /// dropped, so `/healthz` says `degraded` within seconds of an RPC going down.
    pub fn spawn_health_probe(self: &Arc<Self>) {
        if self.rpcs.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                for rpc in me.rpcs.values() {
                    let ok = matches!(
                        tokio::time::timeout(RPC_TIMEOUT, rpc.provider.get_block_number()).await,
                        Ok(Ok(_))
                    );
                    rpc.healthy.store(ok, Ordering::Relaxed);
                }
            }
        });
    }

    /// Registers the chain metrics under the gateway's prefix.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "chain_calls",
            "JSON-RPC calls made to check access conditions, by chain and outcome (ok, or the error class)",
            self.calls.clone(),
        );
        registry.register(
            "chain_call_duration_seconds",
            "Time of the JSON-RPC calls made to check access conditions",
            self.latency.clone(),
        );
        registry.register(
            "chain_cache_hits",
            "Access-condition checks answered from the cache",
            self.cache_hits.clone(),
        );
        registry.register(
            "chain_cache_misses",
            "Access-condition checks that asked the chain",
            self.cache_misses.clone(),
        );
    }

    /// Whether `holder` passes `gate`: `any` stops at the first condition met, `all` at the
    /// first one not met; a condition that could not be checked counts as not met.
    pub async fn check_gate(&self, gate: &Gate, holder: Address) -> GateOutcome {
        match gate {
            Gate::Condition(c) => match self.check(c, holder).await {
                Ok(o) => GateOutcome {
                    met: o.met,
                    why: format!(
                        "{c} at block {}: {}",
                        o.block,
                        if o.met { "met" } else { "not met" }
                    ),
                },
                Err(e) => GateOutcome {
                    met: false,
                    why: format!("{c}: not checked ({}): {e}", e.class()),
                },
            },
            Gate::All(v) | Gate::Any(v) => {
                let want_all = matches!(gate, Gate::All(_));
                let mut last = GateOutcome {
                    met: want_all,
                    why: String::new(),
                };
                for g in v {
                    let o = Box::pin(self.check_gate(g, holder)).await;
                    let decided = o.met != want_all;
                    last = o;
                    if decided {
                        break;
                    }
                }
                last
            }
        }
    }

    /// Checks one condition for `holder`, through the cache.
    pub async fn check(&self, cond: &Condition, holder: Address) -> Result<Outcome, ChainError> {
        let key = Key {
            cond: cond.clone(),
            holder,
        };
        loop {
            match self.cache.get_value_or_guard_async(&key).await {
                Ok(c) if c.until > Instant::now() => {
                    self.cache_hits.inc();
                    return c.result;
                }
                Ok(_) => {
                    // Expired: drop it and take the guard on the next turn.
                    self.cache.remove(&key);
                }
                Err(guard) => {
                    self.cache_misses.inc();
                    let result = self.call(cond, holder).await;
                    let ttl = match &result {
                        Ok(o) if o.met => self.allow_ttl,
                        _ => DENY_TTL.min(self.allow_ttl),
                    };
                    let _ = guard.insert(Cached {
                        result: result.clone(),
                        until: Instant::now() + ttl,
                    });
                    return result;
                }
            }
        }
    }

    /// Forgets every cached outcome (tests, and an operator who knows the chain changed).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    async fn call(&self, cond: &Condition, holder: Address) -> Result<Outcome, ChainError> {
        let rpc = self
            .rpcs
            .get(&cond.chain)
            .ok_or(ChainError::UnknownChain(cond.chain))?;
        let block = self.block_at(rpc, cond.chain, cond.confirmations).await?;
        let data: Vec<u8> = match cond.check {
            Check::Erc20Balance { .. } => IErc20::balanceOfCall { owner: holder }.abi_encode(),
            Check::Erc721Balance { .. } => IErc721::balanceOfCall { owner: holder }.abi_encode(),
            Check::Erc721Owner { id } => IErc721::ownerOfCall { tokenId: id }.abi_encode(),
            Check::Erc1155Balance { id, .. } => IErc1155::balanceOfCall {
                account: holder,
                id,
            }
            .abi_encode(),
        };
        let out = self
            .eth_call(rpc, cond.chain, cond.contract, data, block)
            .await?;
        let dec = |e: alloy::sol_types::Error| ChainError::Decode(clip(&e.to_string()));
        let met = match cond.check {
            Check::Erc20Balance { min } | Check::Erc721Balance { min } => {
                let b: U256 =
                    IErc20::balanceOfCall::abi_decode_returns_validate(&out).map_err(dec)?;
                b >= min
            }
            Check::Erc1155Balance { min, .. } => {
                let b: U256 =
                    IErc1155::balanceOfCall::abi_decode_returns_validate(&out).map_err(dec)?;
                b >= min
            }
            Check::Erc721Owner { .. } => {
                let o: Address =
                    IErc721::ownerOfCall::abi_decode_returns_validate(&out).map_err(dec)?;
                o == holder
            }
        };
        Ok(Outcome { met, block })
    }

    /// Whether `wallet` (a contract) accepts `signature` over `hash` (ERC-1271), read at the
    /// chain's latest block. `Ok(false)` when it answered anything but the magic value.
    pub async fn erc1271_valid(
        &self,
        chain: u64,
        wallet: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<bool, ChainError> {
        let rpc = self
            .rpcs
            .get(&chain)
            .ok_or(ChainError::UnknownChain(chain))?;
        let block = self.block_at(rpc, chain, 0).await?;
        let data = IErc1271::isValidSignatureCall {
            hash,
            signature: Bytes::copy_from_slice(signature),
        }
        .abi_encode();
        let out = self.eth_call(rpc, chain, wallet, data, block).await?;
        let magic = IErc1271::isValidSignatureCall::abi_decode_returns_validate(&out)
            .map_err(|e| ChainError::Decode(clip(&e.to_string())))?;
        Ok(magic.0 == ERC1271_MAGIC)
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        rpc: &Rpc,
        chain: u64,
        fut: impl std::future::Future<Output = Result<T, alloy::transports::RpcError<E>>>,
    ) -> Result<T, ChainError> {
        let t = Instant::now();
        let r = tokio::time::timeout(RPC_TIMEOUT, fut).await;
        self.latency.observe(t.elapsed().as_secs_f64());
        let r = match r {
            Err(_) => Err(ChainError::Timeout),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match &e {
                alloy::transports::RpcError::ErrorResp(p) => ChainError::Rpc(clip(&p.message)),
                alloy::transports::RpcError::Transport(k) => {
                    let s = k.to_string();
                    if s.contains("timed out") || s.contains("timeout") {
                        ChainError::Timeout
                    } else {
                        ChainError::Unreachable
                    }
                }
                other => ChainError::Rpc(clip(&other.to_string())),
            }),
        };
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.class(),
        };
        // An answer, even an error answer, says the endpoint is up.
        rpc.healthy.store(
            !matches!(r, Err(ChainError::Timeout | ChainError::Unreachable)),
            Ordering::Relaxed,
        );
        self.calls
            .get_or_create(&CallLabels { chain, outcome })
            .inc();
        r
    }

    async fn block_at(&self, rpc: &Rpc, chain: u64, confirmations: u64) -> Result<u64, ChainError> {
        let head = self
            .timed(rpc, chain, rpc.provider.get_block_number())
            .await?;
        // A chain younger than the confirmations asked has no block that old: nothing there
        // can have the confirmations, so nothing is met (read as a missing contract).
        head.checked_sub(confirmations)
            .ok_or(ChainError::NoContract(0))
    }

    async fn eth_call(
        &self,
        rpc: &Rpc,
        chain: u64,
        to: Address,
        data: Vec<u8>,
        block: u64,
    ) -> Result<Bytes, ChainError> {
        let tx = TransactionRequest::default().to(to).input(data.into());
        let out = self
            .timed(rpc, chain, async {
                rpc.provider.call(tx).block(BlockId::number(block)).await
            })
            .await?;
        if out.is_empty() {
            self.calls
                .get_or_create(&CallLabels {
                    chain,
                    outcome: "no_contract",
                })
                .inc();
            return Err(ChainError::NoContract(block));
        }
        Ok(out)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets_when_shown() {
        assert_eq!(
            redact_url("https://user:pw@rpc.example.org:8443/v3/SECRETKEY?key=x"),
            "https://rpc.example.org:8443"
        );
        assert_eq!(redact_url("not a url"), "<unparsable URL>");
    }

    #[tokio::test]
    async fn a_chain_not_configured_is_a_denial() {
        let chains = Chains::none();
        let c: Condition = "erc20:1:0x5fbdb2315678afecb367f032d93f642f64180aa3>=1"
            .parse()
            .unwrap();
        assert_eq!(
            chains.check(&c, Address::ZERO).await,
            Err(ChainError::UnknownChain(1))
        );
        let g = chains.check_gate(&Gate::Condition(c), Address::ZERO).await;
        assert!(!g.met && g.why.contains("unknown_chain"), "{}", g.why);
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_answer_is_refused_at_start() {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = Chains::connect(
            &[(31337, format!("http://127.0.0.1:{port}/key/SECRET"))],
            ALLOW_TTL,
        )
        .await
        .unwrap_err();
        assert!(e.contains("chain 31337") && !e.contains("SECRET"), "{e}");
    }
}
