# Runs ON THE CONTROLLER (tasks/install.yml): packs the agent's source shipped in the collection into one
# reproducible archive, so a host receives one file instead of one transfer per module, and the archive's
# SHA-256 says whether the host's install is current.
#
#   pack_agent_source.py <agent source root> <output .tar.gz>
#
# Contents: pyproject.toml and src/pg_backup/**/{*.py,py.typed}; no caches, no tests. Reproducible: names
# sorted, one fixed mtime, owner root, mode 0644/0755, gzip header without name or time. Prints the SHA-256.
"""Pack the pg-backup agent's source into a reproducible tar.gz and print its SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile


def _members(root):
    yield "pyproject.toml"
    package = os.path.join(root, "src", "pg_backup")
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py") or name == "py.typed":
                yield os.path.relpath(os.path.join(dirpath, name), root)


def _info(name, size, directory=False):
    info = tarfile.TarInfo(name)
    info.mtime = 946684800  # 2000-01-01: wheels are zip files, which cannot hold times before 1980
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def pack(root, output):
    names = sorted(_members(root))
    directories = sorted({parent for name in names for parent in _parents(name)})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in directories:
            tar.addfile(_info(directory, 0, directory=True))
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
    tmp = output + ".tmp"
    with open(tmp, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            gz.write(raw.getvalue())
    os.replace(tmp, output)
    with open(output, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _parents(name):
    parent = os.path.dirname(name)
    while parent:
        yield parent
        parent = os.path.dirname(parent)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: pack_agent_source.py <agent source root> <output .tar.gz>\n")
        return 2
    root, output = argv[1], argv[2]
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        sys.stderr.write("error: %s has no pyproject.toml: point at the collection's agent/ directory\n" % root)
        return 2
    sys.stdout.write(pack(root, output) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
