#!/usr/bin/env bash
# Run the collection's Molecule scenarios (extensions/molecule/) without Docker: local-connection hosts,
# real PostgreSQL 15 clusters and a moto_server S3 endpoint on loopback. Run as root on a throw-away
# machine (the agent is installed to /opt/pg-backup, cron files go to /etc/cron.d).
#
#   scripts/molecule.sh                 # default, fleet, then pitr
#   scripts/molecule.sh fleet           # only the named scenario(s)
#
# Exits non-zero when any scenario fails (Molecule's exit code is the gate: a failed idempotence step
# exits 1 even though the recap says "Successful").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/molecule" ]; then
    echo "error: $VENV/bin/molecule not found; run: $VENV/bin/pip install -r $ROOT/requirements/ansible.txt" >&2
    exit 2
fi

# A snapshot of the collection under the name Ansible resolves: <tmp>/ansible_collections/miometry/pg_backup.
# A copy, not a symlink: an edit of the checkout while a scenario runs (minutes) would otherwise show up
# between converge and idempotence as a change (the agent role reinstalls changed agent sources).
COLLECTIONS="$(mktemp -d /tmp/pgb-collections.XXXXXX)"
trap 'rm -rf "$COLLECTIONS"' EXIT
mkdir -p "$COLLECTIONS/ansible_collections/miometry/pg_backup"
rsync -a --exclude=/.git --exclude='/.venv*' --exclude=/build --exclude=/dist --exclude=/tests/output \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.egg-info' --exclude='*.tar.gz' \
    "$ROOT/" "$COLLECTIONS/ansible_collections/miometry/pg_backup/"

# galaxy.yml's dependencies (community.postgresql, amazon.aws) come from the venv's collection tree.
bash "$ROOT/scripts/install-collections.sh" "$VENV"
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS:$VENV/collections"
export ANSIBLE_PYTHON_INTERPRETER="$VENV/bin/python"
export ANSIBLE_FORCE_COLOR=false PY_COLORS=0 NO_COLOR=1
export PATH="$VENV/bin:$PATH"
# Molecule finds extensions/molecule/ only from the collection root (galaxy.yml).
cd "$ROOT"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(default fleet pitr)

failed=()
for s in "${scenarios[@]}"; do
    echo "=== molecule test -s $s"
    start=$SECONDS
    if molecule test -s "$s"; then
        echo "=== scenario $s: PASSED in $((SECONDS - start)) s"
    else
        rc=$?
        echo "=== scenario $s: FAILED (exit $rc) after $((SECONDS - start)) s" >&2
        failed+=("$s")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "molecule: failed scenario(s): ${failed[*]}" >&2
    exit 1
fi
echo "molecule: all scenario(s) passed: ${scenarios[*]}"
