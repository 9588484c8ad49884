//! A local chain for the gateway's on-chain access tests: an anvil process on a free loopback
//! port, the test contracts of `tests/chain` (compiled into `tests/chain/contracts.json`, see its
//! README) deployed and minted from fresh random keys, and the module's own tests of all that.
//!
//! anvil comes from `$CAIRN_ANVIL`, which `scripts/test.sh` sets after installing it; without the
//! variable, from the place that script installs it to. No private key is ever written down here:
//! every key is `PrivateKeySigner::random()`, funded with `anvil_setBalance`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use alloy::eips::BlockId;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256, eip191_hash_message};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use serde_json::{Value, json};

sol! {
    #[sol(rpc)]
    interface IAccessToken {
        error OwnableUnauthorizedAccount(address account);
        function mint(address to, uint256 amount) external;
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function owner() external view returns (address);
    }

    #[sol(rpc)]
    interface IAccessNft {
        error OwnableUnauthorizedAccount(address account);
        error ERC721NonexistentToken(uint256 tokenId);
        function mint(address to, uint256 id) external;
        function transferFrom(address from, address to, uint256 id) external;
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 id) external view returns (address);
    }

    #[sol(rpc)]
    interface IAccessPass {
        error OwnableUnauthorizedAccount(address account);
        function mint(address to, uint256 id, uint256 amount) external;
        function safeTransferFrom(address from, address to, uint256 id, uint256 amount, bytes data) external;
        function balanceOf(address account, uint256 id) external view returns (uint256);
    }

    #[sol(rpc)]
    interface IWallet1271 {
        function owner() external view returns (address);
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
    }
}

/// What `Wallet1271.isValidSignature` answers for its owner's signature (ERC-1271's magic value).
pub const MAGIC_1271: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
/// What it answers for any other signature.
pub const INVALID_1271: [u8; 4] = [0xff, 0xff, 0xff, 0xff];

/// How long a start or a transaction may take before the test fails.
const START_CAP: Duration = Duration::from_secs(10);
const TX_CAP: Duration = Duration::from_secs(30);

/// The compiled contracts: `{ "<Name>": { "abi": [...], "bytecode": "0x..." } }`.
static CONTRACTS: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../chain/contracts.json"))
        .expect("tests/chain/contracts.json")
});

fn bytecode(name: &str) -> Bytes {
    let hex = CONTRACTS[name]["bytecode"]
        .as_str()
        .unwrap_or_else(|| panic!("no bytecode for {name} in tests/chain/contracts.json"));
    hex.parse().unwrap()
}

/// The anvil binary: `$CAIRN_ANVIL`, else where `scripts/test.sh` installs it.
fn anvil_bin() -> PathBuf {
    let bin = match std::env::var_os("CAIRN_ANVIL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-env/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
    };
    assert!(
        bin.is_file(),
        "anvil is missing at {}: run scripts/test.sh (it installs anvil and sets CAIRN_ANVIL)",
        bin.display()
    );
    bin
}

/// A running anvil on 127.0.0.1, killed on drop.
pub struct Anvil {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub chain_id: u64,
    addr: SocketAddr,
    child: Child,
    /// Holds anvil's stderr, shown when it fails to start.
    _logs: tempfile::TempDir,
}

impl Anvil {
    /// Starts anvil on a free port and waits until it answers `eth_chainId` (10 s at most).
    pub fn start() -> Anvil {
        // alloy's reqwest is built without a TLS provider (see Cargo.toml): it needs one installed
        // even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = anvil_bin();
        let logs = tempfile::tempdir().unwrap();
        let stderr_path = logs.path().join("anvil.stderr");
        let mut last_err = String::new();
        // A free port can be taken by another test between its probe and anvil's bind: retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut child = Command::new(&bin)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--silent",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let t0 = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_err = format!(
                        "anvil exited with {status}: {}",
                        std::fs::read_to_string(&stderr_path)
                            .unwrap_or_default()
                            .trim()
                    );
                    break;
                }
                if let Ok(v) = try_rpc(addr, "eth_chainId", json!([])) {
                    let chain_id = quantity(&v);
                    return Anvil {
                        url: format!("http://{addr}"),
                        chain_id,
                        addr,
                        child,
                        _logs: logs,
                    };
                }
                if t0.elapsed() > START_CAP {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "anvil did not answer eth_chainId on {addr} within {START_CAP:?}: {}",
                        std::fs::read_to_string(&stderr_path)
                            .unwrap_or_default()
                            .trim()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("anvil did not start: {last_err}");
    }

    /// Kills anvil (SIGKILL) and reaps it: the RPC endpoint goes away, for tests of a dead chain.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One JSON-RPC call, blocking (usable inside or outside a runtime); panics on an error reply.
    /// For anvil's test methods: `anvil_mine`, `anvil_snapshot`, `anvil_revert`, `anvil_setBalance`...
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .unwrap_or_else(|e| panic!("anvil {method}: {e}"))
    }

    /// [`Anvil::rpc`] that returns the error: the transport's, or the JSON-RPC error object.
    pub fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        try_rpc(self.addr, method, params)
    }

    /// The latest block number.
    pub fn block_number(&self) -> u64 {
        quantity(&self.rpc("eth_blockNumber", json!([])))
    }

    /// Mines `blocks` empty blocks.
    pub fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]));
    }

    /// Saves the chain's state; [`Anvil::revert`] goes back to it (once: the id is used up).
    pub fn snapshot(&self) -> String {
        self.rpc("anvil_snapshot", json!([]))
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Reverts to a snapshot; false when the id is unknown or already used.
    pub fn revert(&self, id: &str) -> bool {
        self.rpc("anvil_revert", json!([id])).as_bool().unwrap()
    }

    /// A fresh random key holding 1000 ETH.
    pub fn funded_signer(&self) -> PrivateKeySigner {
        let signer = PrivateKeySigner::random();
        let wei = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18u64));
        self.rpc(
            "anvil_setBalance",
            json!([signer.address(), format!("{wei:#x}")]),
        );
        signer
    }

    /// A read-only provider on this chain.
    pub fn provider(&self) -> impl Provider + Clone + use<> {
        ProviderBuilder::new().connect_http(self.url.parse().unwrap())
    }

    /// A provider that signs and sends with `signer` (nonce, gas and chain id filled in).
    pub fn wallet_provider(&self, signer: &PrivateKeySigner) -> impl Provider + Clone + use<> {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_http(self.url.parse().unwrap())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JSON-RPC POST over a plain TcpStream (HTTP/1.1, one request per connection).
fn try_rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TX_CAP)).unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let resp = String::from_utf8(resp).map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {resp:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {body}", head.lines().next().unwrap_or("")));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    match v.get("error") {
        Some(err) => Err(err.to_string()),
        None => Ok(v["result"].clone()),
    }
}

/// A JSON-RPC quantity ("0x7a69") as a number.
fn quantity(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not a quantity: {s}"))
}

/// Sends a transaction and waits for its receipt; panics when it is not mined successfully.
async fn send(
    anvil: &Anvil,
    from: &PrivateKeySigner,
    tx: TransactionRequest,
) -> TransactionReceipt {
    let provider = anvil.wallet_provider(from);
    let pending = provider
        .send_transaction(tx)
        .await
        .unwrap_or_else(|e| panic!("sending a transaction from {}: {e}", from.address()));
    let receipt = tokio::time::timeout(TX_CAP, pending.get_receipt())
        .await
        .expect("no receipt within 30 s")
        .unwrap();
    assert!(receipt.status(), "transaction reverted: {receipt:?}");
    receipt
}

/// Deploys `code` (constructor arguments appended) and returns the new contract's address.
async fn deploy(anvil: &Anvil, from: &PrivateKeySigner, code: Vec<u8>) -> Address {
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = send(anvil, from, tx).await;
    receipt
        .contract_address
        .expect("a deployment receipt names the contract")
}

/// The three token contracts, deployed by `owner` (the only key that can mint).
pub struct Deployed {
    pub erc20: Address,
    pub erc721: Address,
    pub erc1155: Address,
    pub owner: PrivateKeySigner,
}

/// Deploys `AccessToken` (ERC-20), `AccessNft` (ERC-721) and `AccessPass` (ERC-1155) from a fresh
/// funded key.
pub async fn deploy_all(anvil: &Anvil) -> Deployed {
    let owner = anvil.funded_signer();
    let erc20 = deploy(anvil, &owner, bytecode("AccessToken").to_vec()).await;
    let erc721 = deploy(anvil, &owner, bytecode("AccessNft").to_vec()).await;
    let erc1155 = deploy(anvil, &owner, bytecode("AccessPass").to_vec()).await;
    Deployed {
        erc20,
        erc721,
        erc1155,
        owner,
    }
}

/// Deploys a `Wallet1271` whose signatures are `owner`'s (from a fresh funded key); it can also
/// hold ERC-721 and ERC-1155 tokens.
pub async fn deploy_wallet1271(anvil: &Anvil, owner: Address) -> Address {
    let deployer = anvil.funded_signer();
    let mut code = bytecode("Wallet1271").to_vec();
    code.extend_from_slice(owner.into_word().as_slice());
    deploy(anvil, &deployer, code).await
}

/// Mints `amount` of the ERC-20 to `to`.
pub async fn mint20(anvil: &Anvil, d: &Deployed, to: Address, amount: U256) {
    let tx = IAccessToken::mintCall { to, amount };
    send(anvil, &d.owner, call_tx(d.erc20, tx)).await;
}

/// Mints the ERC-721 token `id` to `to`.
pub async fn mint721(anvil: &Anvil, d: &Deployed, to: Address, id: U256) {
    let tx = IAccessNft::mintCall { to, id };
    send(anvil, &d.owner, call_tx(d.erc721, tx)).await;
}

/// Mints `amount` of the ERC-1155 token `id` to `to`.
pub async fn mint1155(anvil: &Anvil, d: &Deployed, to: Address, id: U256, amount: U256) {
    let tx = IAccessPass::mintCall { to, id, amount };
    send(anvil, &d.owner, call_tx(d.erc1155, tx)).await;
}

/// `from` sends `amount` of the ERC-20 at `token` to `to`.
pub async fn transfer20(
    anvil: &Anvil,
    token: Address,
    from: &PrivateKeySigner,
    to: Address,
    amount: U256,
) {
    let tx = IAccessToken::transferCall { to, amount };
    send(anvil, from, call_tx(token, tx)).await;
}

/// `from` sends its ERC-721 token `id` of `nft` to `to` (`transferFrom`: `to` may be any contract).
pub async fn transfer721(
    anvil: &Anvil,
    nft: Address,
    from: &PrivateKeySigner,
    to: Address,
    id: U256,
) {
    let tx = IAccessNft::transferFromCall {
        from: from.address(),
        to,
        id,
    };
    send(anvil, from, call_tx(nft, tx)).await;
}

/// `from` sends `amount` of its ERC-1155 token `id` of `pass` to `to`.
pub async fn transfer1155(
    anvil: &Anvil,
    pass: Address,
    from: &PrivateKeySigner,
    to: Address,
    id: U256,
    amount: U256,
) {
    let tx = IAccessPass::safeTransferFromCall {
        from: from.address(),
        to,
        id,
        amount,
        data: Bytes::new(),
    };
    send(anvil, from, call_tx(pass, tx)).await;
}

fn call_tx(to: Address, call: impl SolCall) -> TransactionRequest {
    TransactionRequest::default()
        .with_to(to)
        .with_input(call.abi_encode())
}

/// The ERC-20 balance of `who` at the latest block.
pub async fn balance20(anvil: &Anvil, token: Address, who: Address) -> U256 {
    let c = IAccessToken::new(token, anvil.provider());
    c.balanceOf(who).call().await.unwrap()
}

/// How many ERC-721 tokens of `nft` `who` holds at the latest block.
pub async fn balance721(anvil: &Anvil, nft: Address, who: Address) -> U256 {
    let c = IAccessNft::new(nft, anvil.provider());
    c.balanceOf(who).call().await.unwrap()
}

/// The owner of ERC-721 token `id`; None when it does not exist (`ownerOf` reverts).
pub async fn owner721(anvil: &Anvil, nft: Address, id: U256) -> Option<Address> {
    let c = IAccessNft::new(nft, anvil.provider());
    match c.ownerOf(id).call().await {
        Ok(owner) => Some(owner),
        Err(e) => {
            let err = e
                .as_decoded_error::<IAccessNft::ERC721NonexistentToken>()
                .unwrap_or_else(|| panic!("ownerOf({id}) failed: {e}"));
            assert_eq!(err.tokenId, id);
            None
        }
    }
}

/// The ERC-1155 balance of `who` for token `id` at the latest block.
pub async fn balance1155(anvil: &Anvil, pass: Address, who: Address, id: U256) -> U256 {
    let c = IAccessPass::new(pass, anvil.provider());
    c.balanceOf(who, id).call().await.unwrap()
}

/// What `wallet.isValidSignature(hash, signature)` answers.
pub async fn is_valid_signature_1271(
    anvil: &Anvil,
    wallet: Address,
    hash: B256,
    signature: &[u8],
) -> [u8; 4] {
    let c = IWallet1271::new(wallet, anvil.provider());
    let v = c
        .isValidSignature(hash, Bytes::copy_from_slice(signature))
        .call()
        .await
        .unwrap();
    v.0
}

// The module's own tests.

#[tokio::test]
async fn deploys_mints_and_reads_back() {
    let anvil = Anvil::start();
    assert_eq!(anvil.chain_id, 31337);
    let d = deploy_all(&anvil).await;
    assert_ne!(d.erc20, d.erc721);
    for a in [d.erc20, d.erc721, d.erc1155] {
        let code = anvil.rpc("eth_getCode", json!([a, "latest"]));
        assert!(code.as_str().unwrap().len() > 2, "no code at {a}");
    }
    let owner = IAccessToken::new(d.erc20, anvil.provider())
        .owner()
        .call()
        .await
        .unwrap();
    assert_eq!(owner, d.owner.address());

    let alice = anvil.funded_signer();
    let bob = PrivateKeySigner::random().address();
    let (id7, id9) = (U256::from(7), U256::from(9));

    mint20(&anvil, &d, alice.address(), U256::from(1000)).await;
    mint721(&anvil, &d, alice.address(), id7).await;
    mint1155(&anvil, &d, alice.address(), id9, U256::from(5)).await;
    assert_eq!(
        balance20(&anvil, d.erc20, alice.address()).await,
        U256::from(1000)
    );
    assert_eq!(
        balance721(&anvil, d.erc721, alice.address()).await,
        U256::from(1)
    );
    assert_eq!(owner721(&anvil, d.erc721, id7).await, Some(alice.address()));
    assert_eq!(owner721(&anvil, d.erc721, id9).await, None);
    assert_eq!(
        balance1155(&anvil, d.erc1155, alice.address(), id9).await,
        U256::from(5)
    );
    assert_eq!(
        balance1155(&anvil, d.erc1155, alice.address(), id7).await,
        U256::ZERO
    );

    transfer20(&anvil, d.erc20, &alice, bob, U256::from(400)).await;
    transfer721(&anvil, d.erc721, &alice, bob, id7).await;
    transfer1155(&anvil, d.erc1155, &alice, bob, id9, U256::from(2)).await;
    assert_eq!(
        balance20(&anvil, d.erc20, alice.address()).await,
        U256::from(600)
    );
    assert_eq!(balance20(&anvil, d.erc20, bob).await, U256::from(400));
    assert_eq!(owner721(&anvil, d.erc721, id7).await, Some(bob));
    assert_eq!(
        balance721(&anvil, d.erc721, alice.address()).await,
        U256::ZERO
    );
    assert_eq!(
        balance1155(&anvil, d.erc1155, alice.address(), id9).await,
        U256::from(3)
    );
    assert_eq!(
        balance1155(&anvil, d.erc1155, bob, id9).await,
        U256::from(2)
    );
}

#[tokio::test]
async fn only_the_owner_mints() {
    let anvil = Anvil::start();
    let d = deploy_all(&anvil).await;
    let mallory = anvil.funded_signer();
    let p = anvil.wallet_provider(&mallory);
    let to = mallory.address();

    let e = IAccessToken::new(d.erc20, &p)
        .mint(to, U256::from(1))
        .send()
        .await
        .expect_err("a mint by another key must revert");
    let err = e
        .as_decoded_error::<IAccessToken::OwnableUnauthorizedAccount>()
        .unwrap_or_else(|| panic!("not OwnableUnauthorizedAccount: {e}"));
    assert_eq!(err.account, to);
    let e = IAccessNft::new(d.erc721, &p)
        .mint(to, U256::from(1))
        .send()
        .await
        .expect_err("a mint by another key must revert");
    assert!(
        e.as_decoded_error::<IAccessNft::OwnableUnauthorizedAccount>()
            .is_some(),
        "{e}"
    );
    let e = IAccessPass::new(d.erc1155, &p)
        .mint(to, U256::from(1), U256::from(1))
        .send()
        .await
        .expect_err("a mint by another key must revert");
    assert!(
        e.as_decoded_error::<IAccessPass::OwnableUnauthorizedAccount>()
            .is_some(),
        "{e}"
    );

    assert_eq!(balance20(&anvil, d.erc20, to).await, U256::ZERO);
    assert_eq!(owner721(&anvil, d.erc721, U256::from(1)).await, None);
    assert_eq!(
        balance1155(&anvil, d.erc1155, to, U256::from(1)).await,
        U256::ZERO
    );
}

/// `eth_call` to an address without code answers `0x` (empty return data), not an error: at a
/// block before the contract was deployed, and at an address where nothing was ever deployed.
/// A `balanceOf` that reads `0x` is therefore no balance at all, and a checker must deny on it
/// rather than decode it as zero; alloy's typed call turns it into a decode error.
#[tokio::test]
async fn eth_call_before_deployment_is_empty() {
    let anvil = Anvil::start();
    let holder = PrivateKeySigner::random().address();
    anvil.mine(3);
    let before = anvil.block_number();
    let d = deploy_all(&anvil).await;
    mint20(&anvil, &d, holder, U256::from(5)).await;
    let after = anvil.block_number();
    assert!(after > before);

    let data = IAccessToken::balanceOfCall { account: holder }.abi_encode();
    let call = json!({"to": d.erc20, "data": Bytes::from(data)});
    let at = |block: u64| anvil.rpc("eth_call", json!([call, format!("{block:#x}")]));
    assert_eq!(at(before), json!("0x"));
    assert_eq!(at(after), json!(format!("0x{:064x}", 5)));
    let nowhere = json!({"to": PrivateKeySigner::random().address(), "data": call["data"]});
    assert_eq!(
        anvil.rpc("eth_call", json!([nowhere, "latest"])),
        json!("0x")
    );

    let c = IAccessToken::new(d.erc20, anvil.provider());
    let typed = c
        .balanceOf(holder)
        .call()
        .block(BlockId::number(before))
        .await;
    assert!(typed.is_err(), "empty return data decoded as {typed:?}");
    assert_eq!(
        c.balanceOf(holder)
            .call()
            .block(BlockId::number(after))
            .await
            .unwrap(),
        U256::from(5)
    );
}

#[tokio::test]
async fn snapshot_revert_removes_a_mint() {
    let anvil = Anvil::start();
    let d = deploy_all(&anvil).await;
    let holder = PrivateKeySigner::random().address();
    let id = U256::from(42);
    let height = anvil.block_number();
    let snap = anvil.snapshot();

    mint721(&anvil, &d, holder, id).await;
    mint1155(&anvil, &d, holder, id, U256::from(3)).await;
    assert_eq!(owner721(&anvil, d.erc721, id).await, Some(holder));
    assert!(anvil.block_number() > height);

    assert!(anvil.revert(&snap));
    assert_eq!(anvil.block_number(), height);
    assert_eq!(owner721(&anvil, d.erc721, id).await, None);
    assert_eq!(balance721(&anvil, d.erc721, holder).await, U256::ZERO);
    assert_eq!(balance1155(&anvil, d.erc1155, holder, id).await, U256::ZERO);
    // A snapshot id is used up by its revert.
    assert!(!anvil.revert(&snap));
    // The contracts themselves predate the snapshot and are still there.
    mint721(&anvil, &d, holder, id).await;
    assert_eq!(owner721(&anvil, d.erc721, id).await, Some(holder));
}

#[tokio::test]
async fn wallet1271_accepts_only_its_owners_signature() {
    let anvil = Anvil::start();
    let owner = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();
    let wallet = deploy_wallet1271(&anvil, owner.address()).await;
    let got = IWallet1271::new(wallet, anvil.provider())
        .owner()
        .call()
        .await
        .unwrap();
    assert_eq!(got, owner.address());

    let msg = b"Cairn test message: sign in to read a dataset";
    let hash = eip191_hash_message(msg);
    let by_owner = owner.sign_message_sync(msg).unwrap().as_bytes();
    let by_other = other.sign_message_sync(msg).unwrap().as_bytes();
    let elsewhere = owner.sign_message_sync(b"another").unwrap().as_bytes();
    assert_eq!(
        is_valid_signature_1271(&anvil, wallet, hash, &by_owner).await,
        MAGIC_1271
    );
    assert_eq!(
        is_valid_signature_1271(&anvil, wallet, hash, &by_other).await,
        INVALID_1271
    );
    // The owner's signature over another message, a truncated one, garbage, none: no revert.
    for sig in [&elsewhere[..], &by_owner[..64], &[0xab; 65], &[]] {
        let got = is_valid_signature_1271(&anvil, wallet, hash, sig).await;
        assert_eq!(got, INVALID_1271, "signature {}", alloy::hex::encode(sig));
    }

    // It can hold the access tokens too (ERC-1155 checks the receiver, ERC-721 mint does not).
    let d = deploy_all(&anvil).await;
    mint1155(&anvil, &d, wallet, U256::from(1), U256::from(1)).await;
    assert_eq!(
        balance1155(&anvil, d.erc1155, wallet, U256::from(1)).await,
        U256::from(1)
    );
    mint721(&anvil, &d, wallet, U256::from(2)).await;
    assert_eq!(
        owner721(&anvil, d.erc721, U256::from(2)).await,
        Some(wallet)
    );
}

#[test]
fn kill_takes_the_rpc_down() {
    let mut anvil = Anvil::start();
    let signer = anvil.funded_signer();
    let balance = anvil.rpc("eth_getBalance", json!([signer.address(), "latest"]));
    assert_ne!(balance, json!("0x0"));
    anvil.kill();
    let e = anvil
        .try_rpc("eth_chainId", json!([]))
        .expect_err("a killed anvil must not answer");
    assert!(!e.is_empty());
}

/// Every function the Rust interfaces call is in the compiled ABI (contracts.json is stale
/// otherwise, or the interfaces drifted).
#[test]
fn interfaces_match_contracts_json() {
    use alloy::json_abi::JsonAbi;
    let abi =
        |name: &str| -> JsonAbi { serde_json::from_value(CONTRACTS[name]["abi"].clone()).unwrap() };
    let has = |name: &str, selector: [u8; 4], sig: &str| {
        let found = abi(name).functions().any(|f| f.selector().0 == selector);
        assert!(found, "{name} has no {sig} in tests/chain/contracts.json");
    };
    has(
        "AccessToken",
        IAccessToken::mintCall::SELECTOR,
        IAccessToken::mintCall::SIGNATURE,
    );
    has(
        "AccessToken",
        IAccessToken::transferCall::SELECTOR,
        IAccessToken::transferCall::SIGNATURE,
    );
    has(
        "AccessNft",
        IAccessNft::mintCall::SELECTOR,
        IAccessNft::mintCall::SIGNATURE,
    );
    has(
        "AccessNft",
        IAccessNft::transferFromCall::SELECTOR,
        IAccessNft::transferFromCall::SIGNATURE,
    );
    has(
        "AccessPass",
        IAccessPass::mintCall::SELECTOR,
        IAccessPass::mintCall::SIGNATURE,
    );
    has(
        "AccessPass",
        IAccessPass::safeTransferFromCall::SELECTOR,
        IAccessPass::safeTransferFromCall::SIGNATURE,
    );
    has(
        "Wallet1271",
        IWallet1271::isValidSignatureCall::SELECTOR,
        IWallet1271::isValidSignatureCall::SIGNATURE,
    );
    for name in ["AccessToken", "AccessNft", "AccessPass", "Wallet1271"] {
        assert!(bytecode(name).len() > 100, "{name}'s bytecode is missing");
    }
}
