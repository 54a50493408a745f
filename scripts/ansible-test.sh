#!/usr/bin/env bash
# ansible-test sanity (every test, no ignore entries) and units for the collection, without Docker
# or Galaxy. ansible-test needs a real .../ansible_collections/miometry/pg_backup directory, so the
# checkout is copied into $BUILD first (the agent, benchmarks and outputs are not collection content
# that ansible-test should check: the agent has its own tests).
#
#   BUILD   where the collection tree is made (default build/ansible-test)
#   VENV    virtualenv with the pinned collection tooling (default .venv; make venv +
#           pip install -r requirements/ansible.txt)
# Exit status: non-zero when sanity or units fail (both always run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-build/ansible-test}
VENV=${VENV:-$ROOT/.venv}
PYTHON_VERSION=3.11
# ansible-core 2.19's ansible-test bootstraps pip 24.2 (get_pip_24_2.py); 2.21 wants 25.2.
PIP_BOOTSTRAP_VERSION=${PIP_BOOTSTRAP_VERSION:-24.2}

case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
if [ ! -x "$VENV/bin/ansible-test" ]; then
    echo "error: $VENV/bin/ansible-test not found; install the tooling: $VENV/bin/pip install -r requirements/ansible.txt" >&2
    exit 2
fi
# The venv first, then real interpreters (pyenv shims fail inside ansible-test).
export PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin"

# rsync copies the tree; ansible-test treats the shellcheck binary as optional (without it that
# sanity test passes silently), so install both when missing.
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ansible-test downloads a pip bootstrap script from a host CI cannot reach: serve it from its cache.
install_pip_bootstrap() {
    local cache="$HOME/.ansible/test/cache"
    local script="$cache/get_pip_${PIP_BOOTSTRAP_VERSION//./_}.py"
    mkdir -p "$cache"
    if ! compgen -G "$cache/pip-$PIP_BOOTSTRAP_VERSION-*.whl" >/dev/null; then
        "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps -q -d "$cache" "pip==$PIP_BOOTSTRAP_VERSION"
    fi
    cat > "$script.tmp" <<'EOF'
import argparse, glob, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = os.path.splitext(os.path.basename(__file__))[0].replace("get_pip_", "").replace("_", ".")
WHEEL = sorted(glob.glob(os.path.join(HERE, "pip-%s-*.whl" % VERSION)))[-1]
def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--no-setuptools", action="store_true")
    pre.add_argument("--no-wheel", action="store_true")
    opts, args = pre.parse_known_args()
    if not opts.no_setuptools: args.append("setuptools")
    if not opts.no_wheel: args.append("wheel")
    sys.path.insert(0, WHEEL)
    from pip._internal.cli.main import main as pip_main
    return pip_main(["install", "--upgrade", "--force-reinstall", "--find-links", HERE] + args)
if __name__ == "__main__":
    sys.exit(main())
EOF
    mv "$script.tmp" "$script"
}

COLLECTION="$BUILD/ansible_collections/miometry/pg_backup"
mkdir -p "$COLLECTION"
rsync -a --delete \
    --exclude=/.git --exclude='/.venv*' --exclude=/tests/output --exclude=/agent --exclude=/bench \
    --exclude=/build --exclude=/dist --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.tar.gz' \
    --exclude='.make-*' \
    "$ROOT/" "$COLLECTION/"
# ansible-test lists content with git when it finds a .git above it: here that would be this
# checkout, which ignores build/ and so would hide every file. A throwaway repository in the copy
# makes ansible-test see exactly the files git would track (the copied .gitignore applies).
[ -e "$COLLECTION/.git" ] || git -C "$COLLECTION" init -q
install_pip_bootstrap
# galaxy.yml's dependencies next to the collection, where ansible-test (sanity import, units) finds them.
bash "$ROOT/scripts/install-collections.sh" "$VENV"
for dep in "$VENV"/collections/ansible_collections/*/*; do
    name=${dep#"$VENV"/collections/ansible_collections/}
    mkdir -p "$BUILD/ansible_collections/${name%/*}"
    rsync -a --delete "$dep/" "$BUILD/ansible_collections/$name/"
done

cd "$COLLECTION"
status=0
echo "== ansible-test sanity (all tests) in $COLLECTION"
ansible-test sanity --local --python "$PYTHON_VERSION" --color no || status=1
echo "== ansible-test units"
ansible-test units --local --python "$PYTHON_VERSION" --requirements --color no || status=1
if [ "$status" -ne 0 ]; then
    echo "ansible-test: FAILED (see above; the tree is $COLLECTION)" >&2
else
    echo "ansible-test: sanity and units passed"
fi
exit "$status"
