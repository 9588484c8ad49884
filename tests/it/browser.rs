//! The gateway's sign-in page (`GET /auth` and `/auth/page.js`, the script users get) in a real
//! headless Chromium: Debian's `chromium`, driven by Playwright (Python), with a test EIP-1193
//! wallet injected into the page. The wallet forwards `eth_requestAccounts`, `eth_chainId` and
//! `personal_sign` to anvil, which signs with its first unlocked default account: no private
//! key is written down anywhere. The page itself may only connect to its own origin (its CSP),
//! so the wallet reaches anvil through a function Playwright exposes to the page, as a wallet
//! extension reaches its node from outside the page.
//!
//! `scripts/test.sh` installs Chromium (`CAIRN_CHROMIUM`) and Playwright (in the tests' Python
//! environment, first on `PATH`); Playwright never downloads a browser of its own.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use alloy::primitives::Address;
use serde_json::json;

use crate::gated::Setup;

/// How long the browser may take to start, load the page and sign in (2 cores, cold start).
const SIGN_IN_CAP: Duration = Duration::from_secs(120);
/// How long signing out may take.
const SIGN_OUT_CAP: Duration = Duration::from_secs(60);

/// The browser side: opens `<gateway>/auth` with the test wallet injected, clicks "Connect",
/// checks what the page shows, prints `token <token>`; then, on a `sign-out` line on stdin,
/// clicks "Sign out", checks the page, prints `signed-out`. Anything unexpected fails with the
/// page's `#error`, its console and the wallet's calls.
const DRIVER: &str = r##"
import json, sys, urllib.request
from playwright.sync_api import sync_playwright, TimeoutError as PlaywrightTimeout

gateway, anvil, expected, chromium = sys.argv[1:5]
calls = []   # (method, params) the page's wallet asked of anvil
console = [] # the page's console and uncaught errors
# Loopback only, whatever proxy the environment names.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def rpc(method, params_json):
    params = json.loads(params_json)
    calls.append((method, params))
    body = json.dumps({"jsonrpc": "2.0", "id": len(calls), "method": method, "params": params})
    req = urllib.request.Request(anvil, data=body.encode(), headers={"content-type": "application/json"})
    with opener.open(req, timeout=20) as r:
        answer = json.load(r)
    if "error" in answer:
        raise Exception(f"anvil {method}: {answer['error']}")
    return answer["result"]

# The test wallet (EIP-1193): what the page asks, forwarded to anvil through Python.
WALLET = """
(() => {
  const forward = {
    eth_requestAccounts: "eth_accounts",
    eth_accounts: "eth_accounts",
    eth_chainId: "eth_chainId",
    personal_sign: "personal_sign",
  };
  window.ethereum = {
    isCairnTestWallet: true,
    request: async ({ method, params }) => {
      const to = forward[method];
      if (!to) {
        const e = new Error(`the test wallet does not do ${method}`);
        e.code = 4200;
        throw e;
      }
      return window.cairnRpc(to, JSON.stringify(params || []));
    },
  };
})();
"""

def fail(page, why):
    try:
        error = page.locator("#error").text_content()
        status = page.locator("#status").text_content()
    except Exception as e:
        error = status = f"(page unreadable: {e})"
    sys.exit(
        f"{why}\n#error: {error!r}\n#status: {status!r}\nconsole:\n  "
        + "\n  ".join(console or ["(nothing)"])
        + "\nwallet calls:\n  "
        + "\n  ".join(f"{m} {json.dumps(p)[:200]}" for m, p in calls or [("(none)", [])])
    )

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        timeout=60_000,
    )
    page = browser.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    page.expose_function("cairnRpc", rpc)
    page.add_init_script(WALLET)
    resp = page.goto(gateway + "/auth", timeout=30_000)
    if resp is None or resp.status != 200:
        fail(page, f"GET /auth answered {resp and resp.status}")

    page.click("#connect")
    try:
        page.wait_for_function(
            """() => document.getElementById("token").value
                  || document.getElementById("error").textContent""",
            timeout=20_000,
        )
    except PlaywrightTimeout:
        fail(page, "no token and no error within 20 s of clicking #connect")
    token = page.locator("#token").input_value()
    if not token:
        fail(page, "the page shows an error instead of a token")
    address = page.locator("#address").text_content()
    if address != expected:
        fail(page, f"#address shows {address!r}, not {expected!r}")
    if not page.locator("#result").is_visible():
        fail(page, "#result is not shown after signing in")
    shell = page.locator("#snippet-shell").text_content()
    if f"HF_ENDPOINT={gateway}\n" not in shell or f"HF_TOKEN={token}\n" not in shell:
        fail(page, f"the shell snippet does not name the gateway and the token: {shell!r}")
    if page.locator("#status").text_content() != "Signed in.":
        fail(page, "#status does not say 'Signed in.'")
    # The wallet was asked for the address, the chain and one personal_sign of the message, by
    # the address, in hex.
    methods = [m for m, _ in calls]
    if methods != ["eth_accounts", "eth_chainId", "personal_sign"]:
        fail(page, f"the page asked the wallet {methods}")
    hex_message, signer = calls[2][1]
    message = bytes.fromhex(hex_message.removeprefix("0x")).decode()
    host = gateway.split("://", 1)[1]
    if not message.startswith(f"{host} wants you to sign in with your Ethereum account:\n"):
        fail(page, f"the signed message does not start with the gateway's domain: {message!r}")
    # anvil gives its accounts in lower case, as wallets commonly do; the message names the
    # address in its EIP-55 form, as EIP-4361 asks.
    if message.split("\n")[1:2] != [expected]:
        fail(page, f"the message does not name the checksummed {expected}: {message!r}")
    if signer.lower() != expected.lower():
        fail(page, f"personal_sign asked of {signer}, not {expected}")
    if any("Content Security Policy" in c or c.startswith("uncaught") for c in console):
        fail(page, "the page broke its CSP or threw")
    print(f"token {token}", flush=True)
    print(f"message {json.dumps(message)}", file=sys.stderr, flush=True)

    line = sys.stdin.readline()
    if line.strip() != "sign-out":
        fail(page, f"expected 'sign-out' on stdin, got {line!r}")
    page.click("#signout")
    try:
        page.wait_for_function(
            """() => document.getElementById("status").textContent === "Signed out."
                  || document.getElementById("error").textContent""",
            timeout=20_000,
        )
    except PlaywrightTimeout:
        fail(page, "the page did not say 'Signed out.' within 20 s of clicking #signout")
    if page.locator("#status").text_content() != "Signed out.":
        fail(page, "signing out failed")
    if page.locator("#token").input_value() or page.locator("#result").is_visible():
        fail(page, "the token is still shown after signing out")
    print("signed-out", flush=True)
    browser.close()
"##;

/// Debian's Chromium: `$CAIRN_CHROMIUM` (set by `scripts/test.sh`), else `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let bin = std::env::var_os("CAIRN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.is_file(),
        "Chromium is missing at {}: run scripts/test.sh (it installs Debian's chromium and sets \
         CAIRN_CHROMIUM)",
        bin.display()
    );
    bin
}

/// The Python driver, running; closing its stdin ends it, and dropping it kills what is left.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Driver {
    fn start(args: &[&str]) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("auth_page.py");
        std::fs::write(&script, DRIVER).unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3: {e}: run scripts/test.sh (it puts its Python first on PATH)")
            });
        // Python has read its script once it runs; the directory may go.
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let _dir = dir;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// The next line the driver prints, within `cap`; panics with its stderr otherwise.
    fn line(&mut self, cap: Duration, what: &str) -> String {
        match self.lines.recv_timeout(cap) {
            Ok(l) => l,
            Err(e) => {
                // Disconnected: the driver has exited, or is about to (its why is on stderr).
                if e == mpsc::RecvTimeoutError::Timeout {
                    let _ = self.child.kill();
                }
                let _ = self.child.wait();
                let err = self.stderr();
                let hint = if err.contains("No module named 'playwright'") {
                    "\n(Playwright is missing: run scripts/test.sh, which installs \
                     tests/requirements.txt and puts its Python first on PATH)"
                } else {
                    ""
                };
                panic!("the browser driver gave no {what} ({e:?}):\n{err}{hint}");
            }
        }
    }

    fn say(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("the driver's stdin");
        writeln!(w, "{line}").unwrap();
        w.flush().unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // EOF on stdin ends a driver that waits for a command; then the rest is killed.
        drop(self.stdin.take());
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_auth_page_signs_in_with_an_injected_wallet_in_chromium() {
    let chromium = chromium();
    let s = Setup::new(&[]);
    s.gate("demo/pass", &s.pass());

    // The wallet: anvil's first unlocked default account, holding the pass.
    let accounts = s.anvil.rpc("eth_accounts", json!([]));
    let addr: Address = accounts[0]
        .as_str()
        .expect("anvil has unlocked accounts")
        .parse()
        .unwrap();
    s.mint1155(addr, 1);

    // Without a token the file is not served; the page's headers hold without a browser.
    let a = s.get("demo/pass", None);
    assert_eq!(a.status, 403, "{}", a.text());
    let (page_csp, page_js) = s.rt.block_on(async {
        let page = s
            .http
            .get(format!("{}/auth", s.gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let csp = page
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string());
        let js = s
            .http
            .get(format!("{}/auth/page.js", s.gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(js.status(), 200);
        (csp, js.text().await.unwrap())
    });
    let csp = page_csp.expect("GET /auth has a content-security-policy header");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    // The script the browser runs is the page's own, as users get it.
    assert_eq!(
        page_js,
        include_str!("../../gateway/src/access/auth.js"),
        "the gateway serves another /auth/page.js than gateway/src/access/auth.js"
    );

    let checksummed = addr.to_checksum(None);
    let mut driver = Driver::start(&[
        &s.gw.url,
        &s.anvil.url,
        &checksummed,
        chromium.to_str().unwrap(),
    ]);
    let line = driver.line(SIGN_IN_CAP, "token");
    let token = line
        .strip_prefix("token ")
        .unwrap_or_else(|| panic!("the driver printed {line:?}, not a token"))
        .to_string();
    assert!(token.starts_with("cairn_siwe_"), "{token}");

    // The page's token reads the gated repository.
    s.served("demo/pass", Some(&token));

    // "Sign out" on the page revokes it.
    driver.say("sign-out");
    let line = driver.line(SIGN_OUT_CAP, "sign-out confirmation");
    assert_eq!(line, "signed-out");
    let a = s.get("demo/pass", Some(&token));
    assert_eq!(a.status, 401, "{}", a.text());
    drop(driver);
}
