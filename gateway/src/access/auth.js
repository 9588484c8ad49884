// Cairn gateway sign-in page: Sign-In with Ethereum (EIP-4361) through an injected EIP-1193
// wallet (window.ethereum). No dependencies, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const show = (id, text) => { $(id).textContent = text; };

function toHex(text) {
  return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Keccak-256 (Ethereum's, with the original Keccak padding), for EIP-55 checksums only.
function keccak256(bytes) {
  const M = (1n << 64n) - 1n;
  const rotl = (v, n) => (n === 0 ? v : ((v << BigInt(n)) | (v >> BigInt(64 - n))) & M);
  const rc = [];
  for (let i = 0, r = 1; i < 24; i++) {
    let c = 0n;
    for (let j = 0; j < 7; j++) {
      if (r & 1) c |= 1n << BigInt((1 << j) - 1);
      r = r & 0x80 ? ((r << 1) ^ 0x71) & 0xff : r << 1;
    }
    rc.push(c);
  }
  const rot = new Array(25).fill(0);
  for (let t = 0, x = 1, y = 0; t < 24; t++) {
    rot[x + 5 * y] = ((t + 1) * (t + 2) / 2) % 64;
    [x, y] = [y, (2 * x + 3 * y) % 5];
  }
  const rate = 136;
  const padded = new Uint8Array(Math.floor(bytes.length / rate) * rate + rate);
  padded.set(bytes);
  padded[bytes.length] ^= 0x01;
  padded[padded.length - 1] ^= 0x80;
  const a = new Array(25).fill(0n);
  for (let off = 0; off < padded.length; off += rate) {
    for (let i = 0; i < rate / 8; i++) {
      let lane = 0n;
      for (let k = 7; k >= 0; k--) lane = (lane << 8n) | BigInt(padded[off + 8 * i + k]);
      a[i] ^= lane;
    }
    for (let round = 0; round < 24; round++) {
      const c = [0, 1, 2, 3, 4].map((x) => a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20]);
      for (let x = 0; x < 5; x++) {
        const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
        for (let y = 0; y < 25; y += 5) a[x + y] ^= d;
      }
      const b = new Array(25);
      for (let x = 0; x < 5; x++) {
        for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], rot[x + 5 * y]);
      }
      for (let x = 0; x < 5; x++) {
        for (let y = 0; y < 25; y += 5) a[x + y] = b[x + y] ^ (~b[(x + 1) % 5 + y] & M & b[(x + 2) % 5 + y]);
      }
      a[0] ^= rc[round];
    }
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((a[i >> 3] >> BigInt(8 * (i & 7))) & 0xffn);
  return out;
}

// An address in its EIP-55 checksummed form, as EIP-4361 asks for in the message: wallets
// commonly give it in lower case, and a wallet that reads the message as a sign-in request
// (and checks its domain against the page's) may take it for plain text otherwise.
function checksummed(address) {
  const hex = String(address).toLowerCase().replace(/^0x/, "");
  if (!/^[0-9a-f]{40}$/.test(hex)) throw new Error(`The wallet gave something that is not an address: ${address}`);
  const h = keccak256(new TextEncoder().encode(hex));
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    const nibble = (h[i >> 1] >> (i & 1 ? 0 : 4)) & 0xf;
    out += nibble >= 8 ? hex[i].toUpperCase() : hex[i];
  }
  return out;
}

// The EIP-4361 message, in the layout the gateway reads back byte for byte.
function siweMessage(n, address, chainId, issuedAt, expiresAt) {
  return `${n.domain} wants you to sign in with your Ethereum account:\n` +
    `${address}\n\n` +
    `Sign in to the Cairn gateway to read the repositories your address may read.\n\n` +
    `URI: ${n.uri}\n` +
    `Version: 1\n` +
    `Chain ID: ${chainId}\n` +
    `Nonce: ${n.nonce}\n` +
    `Issued At: ${issuedAt}\n` +
    `Expiration Time: ${expiresAt}`;
}

async function json(resp) {
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

async function signIn() {
  show("error", "");
  const eth = window.ethereum;
  if (!eth) throw new Error("No wallet found: install a wallet extension (EIP-1193) and reload.");
  show("status", "Asking the wallet for your address...");
  const accounts = await eth.request({ method: "eth_requestAccounts" });
  if (!accounts || !accounts.length) throw new Error("The wallet gave no address.");
  const address = checksummed(accounts[0]);
  const chainId = parseInt(await eth.request({ method: "eth_chainId" }), 16);
  const n = await json(await fetch("/auth/nonce", { cache: "no-store" }));
  if (!n.chains.includes(chainId)) {
    throw new Error(`Your wallet is on chain ${chainId}; this gateway checks ${n.chains.join(", ")}. Switch networks and try again.`);
  }
  const now = new Date();
  const hours = Math.min(8, Math.floor(n.message_ttl_max_secs / 3600));
  const issuedAt = now.toISOString();
  const expiresAt = new Date(now.getTime() + hours * 3600 * 1000).toISOString();
  const message = siweMessage(n, address, chainId, issuedAt, expiresAt);
  show("status", "Sign the message in your wallet...");
  const signature = await eth.request({ method: "personal_sign", params: [toHex(message), address] });
  const s = await json(await fetch("/auth/siwe", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message, signature }),
  }));
  show("status", "Signed in.");
  show("address", s.address);
  show("expires", new Date(s.expires_at * 1000).toLocaleString());
  $("token").value = s.token;
  const origin = window.location.origin;
  show("snippet-shell", `export HF_ENDPOINT=${origin}\nexport HF_TOKEN=${s.token}\nhuggingface-cli download <org>/<model>`);
  show("snippet-python", `import os\nos.environ["HF_ENDPOINT"] = "${origin}"\nos.environ["HF_TOKEN"] = "${s.token}"\nfrom huggingface_hub import snapshot_download\nprint(snapshot_download("<org>/<model>"))`);
  $("result").hidden = false;
}

$("connect").addEventListener("click", () => {
  signIn().catch((e) => { show("status", ""); show("error", e.message || String(e)); });
});
$("copy").addEventListener("click", () => {
  navigator.clipboard.writeText($("token").value).then(() => show("status", "Copied."), () => $("token").select());
});
$("signout").addEventListener("click", async () => {
  show("error", "");
  let r;
  try {
    r = await fetch("/auth/session", { method: "DELETE", headers: { authorization: "Bearer " + $("token").value } });
  } catch (e) {
    show("error", `Sign-out failed: ${e.message || e}`);
    return;
  }
  if (r.ok || r.status === 401) { $("result").hidden = true; $("token").value = ""; show("status", "Signed out."); }
  else show("error", `Sign-out failed: HTTP ${r.status}`);
});
