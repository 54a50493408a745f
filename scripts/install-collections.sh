#!/usr/bin/env bash
# Install the collections galaxy.yml depends on into <venv>/collections/ansible_collections/, offline from
# Galaxy: the pinned `ansible` wheel of requirements/collections.txt is downloaded from PyPI (hash-checked,
# pip's cache reuses it) and only the listed collections are extracted from it; the ~550 MB package itself
# is never installed. Idempotent: nothing is done when the tree already holds that wheel's collections.
# The test scripts put <venv>/collections on ANSIBLE_COLLECTIONS_PATH.
#
#   scripts/install-collections.sh [VENV]      (default: $VENV or .venv)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${VENV:-$root/.venv}}
requirements=$root/requirements/collections.txt
dest=$venv/collections
if [ ! -x "$venv/bin/python" ]; then
    echo "install-collections: $venv/bin/python not found (make venv first)" >&2
    exit 2
fi
read -r -a names <<<"$(sed -n 's/^#   collections: //p' "$requirements")"
pin=$(grep -E '^ansible==' "$requirements")
if [ "${#names[@]}" -eq 0 ] || [ -z "$pin" ]; then
    echo "install-collections: $requirements lists no collections or no ansible==VERSION pin" >&2
    exit 2
fi
stamp=$dest/.installed-from
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pin ${names[*]}" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" -m pip download --disable-pip-version-check --no-input -q --no-deps --require-hashes \
    -r "$requirements" -d "$tmp"
wheel=$(compgen -G "$tmp/ansible-*.whl")
rm -rf "$dest.new"
mkdir -p "$dest.new"
"$venv/bin/python" - "$wheel" "$dest.new" "${names[@]}" <<'PY'
import json, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        top = 'ansible_collections/%s/' % name.replace('.', '/')
        members = [m for m in z.namelist() if m.startswith(top)]
        if not members:
            sys.exit('install-collections: %s is not in %s' % (name, wheel))
        z.extractall(dest, members)
        info = json.loads(z.read(top + 'MANIFEST.json'))['collection_info']
        print('install-collections: %s %s' % (name, info['version']))
PY
rm -rf "$dest"
mv "$dest.new" "$dest"
chmod -R a+rX "$dest"
echo "$pin ${names[*]}" > "$stamp"
