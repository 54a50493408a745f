#!/usr/bin/env bash
# ansible-lint (production profile, offline) over the whole collection; exits non-zero on any
# finding. The collection is made importable as miometry.pg_backup through a temporary
# ANSIBLE_COLLECTIONS_PATH holding a symlink to this checkout (and <venv>/collections, its dependencies).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/ansible_collections/miometry"
ln -s "$root" "$tmp/ansible_collections/miometry/pg_backup"
# galaxy.yml's dependencies (community.postgresql, amazon.aws) come from the venv's collection tree.
bash "$root/scripts/install-collections.sh" "$venv"
export ANSIBLE_COLLECTIONS_PATH="$tmp:$venv/collections"
export ANSIBLE_HOME="$tmp/.ansible"
export PATH="$venv/bin:$PATH"
cd "$root"
# ansible-lint exits 2 on findings; --strict makes warnings count too.
"$venv/bin/ansible-lint" --offline --strict --profile production "$@"
