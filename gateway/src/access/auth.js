// Cairn gateway sign-in page: Sign-In with Ethereum (EIP-4361) through an injected EIP-1193
// wallet (window.ethereum). No dependencies, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const show = (id, text) => { $(id).textContent = text; };

function toHex(text) {
  return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
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
  const address = accounts[0];
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
  const r = await fetch("/auth/session", { method: "DELETE", headers: { authorization: "Bearer " + $("token").value } });
  if (r.ok || r.status === 401) { $("result").hidden = true; $("token").value = ""; show("status", "Signed out."); }
  else show("error", `Sign-out failed: HTTP ${r.status}`);
});
