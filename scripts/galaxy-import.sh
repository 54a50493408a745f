#!/usr/bin/env bash
# Builds the collection tarball (ansible-galaxy collection build --output-path build/) and runs
# galaxy-importer on it, failing on any WARNING: or ERROR: line (galaxy-importer prints lint
# findings as WARNING lines and still exits 0).
#   .venv-galaxy: /usr/bin/python3 -m venv .venv-galaxy && .venv-galaxy/bin/pip install -r requirements/galaxy.txt
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
galaxy_venv=${GALAXY_VENV:-$root/.venv-galaxy}
if [ ! -x "$galaxy_venv/bin/python" ]; then
    echo "error: $galaxy_venv missing; create it: /usr/bin/python3 -m venv $galaxy_venv && $galaxy_venv/bin/pip install -r $root/requirements/galaxy.txt" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Build from a clean copy: virtualenvs, caches and earlier builds in the checkout must not end up
# in the tarball whatever galaxy.yml's build_ignore says.
rsync -a --exclude=.git --exclude='.venv*' --exclude=build/ --exclude=dist/ --exclude=tests/output/ \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.egg-info' --exclude=.ansible/ \
    --exclude='*.tar.gz' --exclude=.cache/ "$root/" "$tmp/src/"
mkdir -p "$root/build"
"$venv/bin/ansible-galaxy" collection build --force --output-path "$root/build" "$tmp/src"
version=$("$venv/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$root/galaxy.yml")
tarball="$root/build/miometry-pg_backup-$version.tar.gz"
cd "$tmp"
# galaxy-importer runs ansible-doc and ansible-lint from its own venv (put first on PATH) with
# ANSIBLE_COLLECTIONS_PATH set to its own extraction directory, so galaxy.yml's dependencies (amazon.aws's
# doc fragments that backup_lifecycle extends, the modules the roles use) must come from that venv's
# sys.path, where ansible-core also looks for ansible_collections: a .pth file adds <venv>/collections.
bash "$root/scripts/install-collections.sh" "$venv"
site=$("$galaxy_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$venv/collections" > "$site/pg_backup_collection_dependencies.pth"
PATH="$galaxy_venv/bin:$PATH" "$galaxy_venv/bin/python" -m galaxy_importer.main "$tarball" 2>&1 | tee "$tmp/importer.log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "galaxy-importer: failed (exit $status)" >&2
    exit "$status"
fi
if grep -E '^(WARNING|ERROR):' "$tmp/importer.log" >/dev/null; then
    echo "galaxy-importer: findings above (WARNING:/ERROR: lines) for $tarball" >&2
    exit 1
fi
echo "galaxy-importer: $tarball imports cleanly"
