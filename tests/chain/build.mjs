// Compiles the contracts of Cairn's on-chain access tests with solc-js (the compiler bundled in the
// npm package, no download) and writes contracts.json: { "<Name>": { "abi": [...], "bytecode": "0x..." } }.
// Run: cd tests/chain && npm ci && node build.mjs
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = dirname(fileURLToPath(import.meta.url));
const contractsDir = join(here, "contracts");
const names = ["AccessToken", "AccessNft", "AccessPass", "Wallet1271"];

const sources = {};
for (const file of readdirSync(contractsDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`contracts/${file}`] = { content: readFileSync(join(contractsDir, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    // Pinned so that a newer solc default does not outrun the local chain's hardfork.
    evmVersion: "cancun",
    // No metadata hash in the bytecode: the output then depends on the sources alone.
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

// Imports of @openzeppelin/... come from node_modules; nothing else is resolved.
function findImports(path) {
  if (!path.startsWith("@openzeppelin/")) {
    return { error: `import not found: ${path}` };
  }
  try {
    return { contents: readFileSync(join(here, "node_modules", path), "utf8") };
  } catch (e) {
    return { error: `import not found: ${path} (run npm ci first): ${e.message}` };
  }
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  console.error(e.formattedMessage ?? e.message);
}
if (errors.length > 0) {
  process.exit(1);
}

const out = {};
for (const name of names) {
  const c = output.contracts[`contracts/${name}.sol`]?.[name];
  if (!c || !c.evm.bytecode.object) {
    console.error(`build.mjs: ${name} was not compiled`);
    process.exit(1);
  }
  out[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
}
writeFileSync(join(here, "contracts.json"), `${JSON.stringify(out, null, 2)}\n`);
console.log(`build.mjs: solc ${solc.version()}: wrote contracts.json (${names.join(", ")})`);
