"""Configuration files that live outside the data directory (Debian keeps them in
/etc/postgresql/<major>/<cluster>/), stored with a physical backup so a recovered data directory can
start on its own."""
from __future__ import annotations

import io
import os
import re
import tarfile
import time
from typing import Dict, List, Optional, Tuple

_INCLUDE = re.compile(r"^\s*(include_dir|include_if_exists|include)\s*=?\s*'([^']*)'", re.M)


def config_archive(files: Dict[str, str], notes: List[str]) -> Tuple[Optional[bytes], Dict[str, str]]:
    """A tar of the configuration files that live outside the data directory (Debian keeps them in
    /etc/postgresql/<major>/<cluster>/), with the files their relative include directives name, so a
    recovered data directory can start on its own. (None, {}) when everything is inside it."""
    data_dir = os.path.realpath(files["data_directory"])
    outside = {name: path for name, path in files.items() if name != "data_directory" and path
               and not os.path.realpath(path).startswith(data_dir + os.sep)}
    if not outside:
        return None, {}
    members: Dict[str, bytes] = {}
    for name, path in outside.items():
        try:
            with open(path, "rb") as fh:
                members[name] = fh.read()
        except OSError as exc:
            notes.append(f"{name} ({path}) lives outside the data directory and could not be read ({exc.strerror}): "
                         f"it is not in the backup")
    conf_dir = os.path.dirname(outside.get("postgresql.conf", ""))
    if "postgresql.conf" in members and conf_dir:
        for kind, target in _INCLUDE.findall(members["postgresql.conf"].decode(errors="replace")):
            if os.path.isabs(target) or ".." in target.split("/"):
                continue  # absolute includes are commented out on recovery (a note says so)
            full = os.path.join(conf_dir, target)
            paths = sorted(os.path.join(full, f) for f in os.listdir(full) if f.endswith(".conf")) \
                if kind == "include_dir" and os.path.isdir(full) else [full]
            for path in paths:
                try:
                    with open(path, "rb") as fh:
                        members[os.path.relpath(path, conf_dir)] = fh.read()
                except OSError:
                    continue
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), {name: outside.get(name, os.path.join(conf_dir, name)) for name in members}
