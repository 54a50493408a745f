#!/usr/bin/env bash
# Install the Debian packages the agent and its tests need, only if some are missing.
# Idempotent: with everything present it changes nothing and needs no network or root.
# Usage: scripts/install-deps.sh [extra-package ...]
set -euo pipefail

# prometheus: its promtool checks the agent's Prometheus output in the tests (health --format prometheus).
# sq: Sequoia, a second OpenPGP implementation the tests decrypt backups and WAL with (test_openpgp_interop.py).
# poppler-utils: pdftoppm and pdftotext render and read the compliance report's PDF (test_compliance.py).
# rsync, shellcheck: the static gates (ansible-test's sanity runs shellcheck); installed here, once, because
# make test runs those gates side by side (scripts/parallel.sh).
packages=(postgresql postgresql-contrib gnupg zstd python3-venv prometheus sq poppler-utils rsync shellcheck "$@")

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]]
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: dpkg-query not found; this script supports Debian/Ubuntu only" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all present (${packages[*]})"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root, e.g. sudo $0 $*" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
    if ! is_installed "$pkg"; then
        still_missing+=("$pkg")
    fi
done
if [[ ${#still_missing[@]} -ne 0 ]]; then
    echo "install-deps: still missing after apt-get: ${still_missing[*]}" >&2
    exit 1
fi
echo "install-deps: done"
