#!/usr/bin/env python3
"""The cost of on-chain access at the gateway, against a same-run API-key baseline.

    target/test-env/venv/bin/python3 scripts/bench-gated.py [--requests 300] [--kib 1024]

Needs what the test command installs: anvil (CAIRN_ANVIL or target/test-env/npm) and
eth-account (the test venv). Builds the release binary unless CAIRN_BIN names one.

One local store, one `cairn gateway --chain 31337=<anvil>`, one file of --kib KiB registered
twice: `bench/gated` behind an ERC-1155 pass (deployed and minted on the anvil from its
unlocked default account; the wallet is a fresh eth-account key) and `bench/private` for an API
key scoped to it. On one keep-alive connection each, alternating, it measures:

- full GETs and 4 KiB ranges with the API key (the baseline) and with the wallet's session token
  while the gateway's allow cache is warm: medians and their ratio;
- cold authorizations: the chain cache is cleared (admin API) before each gated GET; the median
  added over a warm one is one `eth_blockNumber` + one `eth_call` to the local anvil.
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc(url, method, params):
    req = urllib.request.Request(url, data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        headers={"content-type": "application/json"})
    r = json.load(urllib.request.urlopen(req, timeout=10))
    if "error" in r:
        raise RuntimeError(f"{method}: {r['error']}")
    return r["result"]


def send_tx(url, frm, to, data):
    tx = {"from": frm, "data": data}
    if to:
        tx["to"] = to
    h = rpc(url, "eth_sendTransaction", [tx])
    for _ in range(200):
        rec = rpc(url, "eth_getTransactionReceipt", [h])
        if rec:
            if rec["status"] != "0x1":
                raise RuntimeError("transaction failed")
            return rec
        time.sleep(0.01)
    raise RuntimeError("no receipt")


def word(n):
    return n.to_bytes(32, "big").hex()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--kib", type=int, default=1024)
    a = ap.parse_args()

    anvil = os.environ.get("CAIRN_ANVIL") or os.path.join(
        ROOT, "target/test-env/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
    if not os.path.exists(anvil):
        sys.exit("no anvil: run scripts/test.sh once (it installs it) or set CAIRN_ANVIL")
    cairn = os.environ.get("CAIRN_BIN")
    if not cairn:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "cairn"], cwd=ROOT, check=True)
        cairn = os.path.join(ROOT, "target/release/cairn")

    work = tempfile.mkdtemp(prefix="cairn-bench-gated.")
    procs = []
    try:
        port = free_port()
        chain = f"http://127.0.0.1:{port}"
        procs.append(subprocess.Popen([anvil, "--host", "127.0.0.1", "--port", str(port), "--silent"]))
        for _ in range(200):
            try:
                rpc(chain, "eth_chainId", [])
                break
            except Exception:
                time.sleep(0.05)
        owner = rpc(chain, "eth_accounts", [])[0]
        code = json.load(open(os.path.join(ROOT, "tests/chain/contracts.json")))["AccessPass"]["bytecode"]
        pass_addr = send_tx(chain, owner, None, code)["contractAddress"]
        wallet = Account.create()
        mint = keccak(text="mint(address,uint256,uint256)")[:4].hex()
        send_tx(chain, owner, pass_addr, "0x" + mint + word(int(wallet.address, 16)) + word(7) + word(1))

        data = os.path.join(work, "data")
        model = os.path.join(work, "model")
        os.makedirs(model)
        with open(os.path.join(model, "weights.bin"), "wb") as f:
            f.write(os.urandom(a.kib * 1024))
        subprocess.run([cairn, "--data-dir", data, "init"], check=True, capture_output=True)
        out = subprocess.run([cairn, "--data-dir", data, "add", model], check=True,
                             capture_output=True, text=True).stdout
        cap = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("read capability: "))
        log = open(os.path.join(work, "gateway.log"), "w")
        procs.append(subprocess.Popen([cairn, "--data-dir", data, "gateway", "--listen", "127.0.0.1:0",
                                       "--chain", f"31337={chain}"], stdout=log, stderr=log))
        addr_file = os.path.join(data, "gateway/gateway.addr")
        for _ in range(600):
            if os.path.exists(addr_file) and open(addr_file).read().strip():
                break
            time.sleep(0.05)
        gw = open(addr_file).read().strip()
        run = lambda *args: subprocess.run([cairn, "--data-dir", data, *args], check=True,
                                           capture_output=True, text=True).stdout
        run("register", "bench/gated", cap, "--gate", f"erc1155:31337:{pass_addr}:7>=1")
        run("register", "bench/private", cap, "--private")
        key = next(l[5:].strip() for l in run("apikey", "create", "--scope", "read:repo:bench/private").splitlines()
                   if l.startswith("key: "))
        admin_url = open(os.path.join(data, "gateway/admin.addr")).read().strip()
        admin_token = open(os.path.join(data, "gateway/admin.token")).read().strip()

        n = json.load(urllib.request.urlopen(gw + "/auth/nonce"))
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        t = lambda d: (now + d).strftime("%Y-%m-%dT%H:%M:%SZ")
        msg = (f"{n['domain']} wants you to sign in with your Ethereum account:\n{wallet.address}\n\n"
               f"Sign in to read gated models.\n\nURI: {n['uri']}\nVersion: 1\nChain ID: 31337\n"
               f"Nonce: {n['nonce']}\nIssued At: {t(datetime.timedelta())}\n"
               f"Expiration Time: {t(datetime.timedelta(hours=1))}")
        sig = wallet.sign_message(encode_defunct(text=msg)).signature.hex()
        sig = sig if sig.startswith("0x") else "0x" + sig
        req = urllib.request.Request(gw + "/auth/siwe", method="POST",
                                     data=json.dumps({"message": msg, "signature": sig}).encode(),
                                     headers={"content-type": "application/json"})
        token = json.load(urllib.request.urlopen(req))["token"]

        host = gw.removeprefix("http://")
        conns = {"key": http.client.HTTPConnection(host), "wallet": http.client.HTTPConnection(host)}
        admin = http.client.HTTPConnection(admin_url.removeprefix("http://"))

        def get(who, rng=None):
            repo, cred = ("bench/private", key) if who == "key" else ("bench/gated", token)
            h = {"authorization": f"Bearer {cred}"}
            if rng:
                h["range"] = rng
            c = conns[who]
            t0 = time.perf_counter()
            c.request("GET", f"/{repo}/resolve/main/weights.bin", headers=h)
            r = c.getresponse()
            body = r.read()
            dt = time.perf_counter() - t0
            assert r.status in (200, 206), (who, r.status, body[:200])
            return dt

        def clear():
            admin.request("POST", "/admin/chains/cache/clear", headers={"authorization": f"Bearer {admin_token}"})
            r = admin.getresponse()
            r.read()
            assert r.status == 200, r.status

        for _ in range(20):  # warm up both paths
            get("key"); get("wallet")
        full = {"key": [], "wallet": []}
        ranged = {"key": [], "wallet": []}
        for i in range(a.requests):
            for who in ("key", "wallet") if i % 2 == 0 else ("wallet", "key"):
                full[who].append(get(who))
                off = (i * 4099) % (a.kib * 1024 - 4096)
                ranged[who].append(get(who, f"bytes={off}-{off + 4095}"))
        cold, warm = [], []
        for i in range(min(a.requests, 200)):
            off = (i * 4099) % (a.kib * 1024 - 4096)
            clear()
            cold.append(get("wallet", f"bytes={off}-{off + 4095}"))
            warm.append(get("wallet", f"bytes={off}-{off + 4095}"))
        ms = lambda v: statistics.median(v) * 1000
        print(f"file {a.kib} KiB, {a.requests} requests per kind, one keep-alive connection each")
        print(f"full GET      API key {ms(full['key']):.3f} ms   wallet (warm) {ms(full['wallet']):.3f} ms"
              f"   ratio {ms(full['wallet']) / ms(full['key']):.3f}")
        print(f"4 KiB range   API key {ms(ranged['key']):.3f} ms   wallet (warm) {ms(ranged['wallet']):.3f} ms"
              f"   ratio {ms(ranged['wallet']) / ms(ranged['key']):.3f}")
        print(f"cold authorization (cache cleared): {ms(cold):.3f} ms, warm {ms(warm):.3f} ms,"
              f" added {ms(cold) - ms(warm):.3f} ms (median of {len(cold)})")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
