#!/usr/bin/env bash
# Cairn's test command (the README's second command, and what CI runs): installs what the tests
# need on a fresh machine, once, then runs every test with `cargo nextest run --no-fail-fast`.
# Arguments are passed on to nextest (`scripts/test.sh gateway::` runs a subset).
#
# What it installs, and where:
#   cargo-nextest   with `cargo install` into Cargo's bin folder, when `cargo nextest` is absent
#   Python clients  tests/requirements.txt, into a virtual environment in target/test-env/venv
#                   (CAIRN_TEST_ENV moves it), put first on PATH for the tests; never into the
#                   system Python. Reinstalled only when tests/requirements.txt changes.
#   anvil           the local Ethereum chain of the on-chain access tests: npm's
#                   @foundry-rs/anvil-linux-amd64 (version pinned below) into target/test-env/npm,
#                   its path exported as CAIRN_ANVIL (set CAIRN_ANVIL to use your own instead).
#                   Reinstalled only when absent or when the pinned version changes.
#   chromium        the headless browser of the sign-in page's test (tests/it/browser.rs):
#                   Debian's chromium, when /usr/bin/chromium and `chromium` on PATH are absent,
#                   as root; its path exported as CAIRN_CHROMIUM (set CAIRN_CHROMIUM to use your
#                   own instead). Playwright (in tests/requirements.txt) drives it and never
#                   downloads a browser of its own (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
#   diff, cmp       Debian's diffutils, when absent and when run as root
#   node, npm       Debian's nodejs and npm, when absent and anvil is to be installed, as root
# A second run installs nothing and starts the tests within seconds. Without network to the
# registries, a missing piece fails with one line naming it and how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
envdir="${CAIRN_TEST_ENV:-$top/target/test-env}"
venv="$envdir/venv"
req="$top/tests/requirements.txt"

die() { echo "scripts/test.sh: $*" >&2; exit 2; }
step() { echo "scripts/test.sh: $*" >&2; }
# What an install step prints goes to a log, so a failure is one line that points at it.
mkdir -p "$envdir"
log="$envdir/install.log"

command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain with rustup, then run this again"
command -v python3 >/dev/null 2>&1 || die "python3 is missing: install Python 3.9 or newer (Debian: apt-get install python3 python3-venv)"

# Debian packages (only as root, where apt-get can install them).
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing $* from Debian's packages"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >>"$log" 2>&1 ||
            die "$* could not be installed with apt-get (no network to Debian's packages? see $log): install $* and run this again"
    else
        die "$1 is missing: install the Debian package $* (apt-get install $*) and run this again"
    fi
}
if ! command -v diff >/dev/null 2>&1 || ! command -v cmp >/dev/null 2>&1; then
    apt_install diffutils
fi

# cargo-nextest, the test runner.
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest (once; a few minutes)"
    cargo install cargo-nextest --locked >>"$log" 2>&1 ||
        die "cargo-nextest is missing and 'cargo install cargo-nextest --locked' failed (no network to crates.io? see $log): install it and run this again"
fi

# The Python clients, in a virtual environment of our own.
if ! cmp -s "$req" "$venv/.cairn-requirements" || ! "$venv/bin/python3" -c '' >/dev/null 2>&1; then
    step "creating the Python environment for the tests in $venv"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >>"$log" 2>&1; then
        rm -rf "$venv"
        # Debian's Python ships venv and ensurepip in a separate package.
        apt_install python3-venv
        python3 -m venv "$venv" >>"$log" 2>&1 || die "python3 -m venv failed (see $log): install Python's venv module (Debian: python3-venv)"
    fi
    step "installing the pinned Python clients ($(grep -Ev '^\s*(#|$)' "$req" | tr '\n' ' '))"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/python3" -m pip install --disable-pip-version-check -r "$req" >>"$log" 2>&1 ||
        die "the Python clients in tests/requirements.txt could not be installed (no network to PyPI? see $log): run '$venv/bin/python3 -m pip install -r tests/requirements.txt'"
    cp "$req" "$venv/.cairn-requirements"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
python3 -c 'import huggingface_hub, datasets, transformers, safetensors, playwright.sync_api' 2>/dev/null ||
    die "the Python clients in $venv do not import: remove $venv and run this again"

# anvil, the local chain of the gateway's on-chain access tests (tests/it/anvil.rs), from npm.
# CAIRN_ANVIL, when set, names an anvil of your own and nothing is installed.
anvil_version=1.7.1
anvil_pkg=@foundry-rs/anvil-linux-amd64
# Whether $1 runs and is anvil $anvil_version (its output captured whole: no SIGPIPE under pipefail).
anvil_is_pinned() { case "$("$1" --version 2>/dev/null || true)" in *"Version: $anvil_version"[!0-9.]*) return 0 ;; *) return 1 ;; esac; }
if [ -n "${CAIRN_ANVIL:-}" ]; then
    "$CAIRN_ANVIL" --version >/dev/null 2>&1 || die "CAIRN_ANVIL=$CAIRN_ANVIL does not run: unset it to have anvil $anvil_version installed, or point it at an anvil"
else
    anvil="$envdir/npm/node_modules/$anvil_pkg/bin/anvil"
    if ! anvil_is_pinned "$anvil"; then
        [ "$(uname -sm)" = "Linux x86_64" ] ||
            die "anvil comes from $anvil_pkg, built for Linux x86_64 only: install anvil $anvil_version (Foundry) yourself and set CAIRN_ANVIL to its path"
        if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
            apt_install nodejs npm
        fi
        step "installing anvil $anvil_version from npm ($anvil_pkg) into $envdir/npm"
        npm install --prefix "$envdir/npm" --no-audit --no-fund "$anvil_pkg@$anvil_version" >>"$log" 2>&1 ||
            die "anvil could not be installed (no network to the npm registry? see $log): run 'npm install --prefix $envdir/npm $anvil_pkg@$anvil_version'"
        anvil_is_pinned "$anvil" || die "anvil $anvil_version does not run after its install: try '$anvil --version' (see $log)"
    fi
    export CAIRN_ANVIL="$anvil"
fi

# chromium, the browser the sign-in page's test drives through Playwright, from Debian.
# CAIRN_CHROMIUM, when set, names a Chromium of your own and nothing is installed.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -n "${CAIRN_CHROMIUM:-}" ]; then
    "$CAIRN_CHROMIUM" --version >/dev/null 2>&1 || die "CAIRN_CHROMIUM=$CAIRN_CHROMIUM does not run: unset it to have Debian's chromium installed, or point it at a Chromium"
else
    chromium=/usr/bin/chromium
    [ -x "$chromium" ] || chromium="$(command -v chromium 2>/dev/null || true)"
    if [ -z "$chromium" ]; then
        apt_install chromium
        chromium=/usr/bin/chromium
    fi
    "$chromium" --version >/dev/null 2>&1 || die "chromium at $chromium does not run: try '$chromium --version' (see $log)"
    export CAIRN_CHROMIUM="$chromium"
fi

exec cargo nextest run --no-fail-fast "$@"
