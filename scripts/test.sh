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
#   diff, cmp       Debian's diffutils, when absent and when run as root
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
    "$venv/bin/python3" -m pip install --disable-pip-version-check -r "$req" >>"$log" 2>&1 ||
        die "the Python clients in tests/requirements.txt could not be installed (no network to PyPI? see $log): run '$venv/bin/python3 -m pip install -r tests/requirements.txt'"
    cp "$req" "$venv/.cairn-requirements"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
python3 -c 'import huggingface_hub, datasets, transformers, safetensors' 2>/dev/null ||
    die "the Python clients in $venv do not import: remove $venv and run this again"

exec cargo nextest run --no-fail-fast "$@"
