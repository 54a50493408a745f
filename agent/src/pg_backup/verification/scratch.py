"""Scratch servers of verifications and drills: what databases one holds, and removing it afterwards.

A scratch server is recovered from a physical backup into a data directory under ``verify.scratch_dir``
(or a drill's ``--data-dir``) by the recovery service, which also gives the client to reach it.
"""
from __future__ import annotations

import os
import shutil
from typing import List

from ..errors import PgBackupError
from ..postgres.client import Postgres
from ..postgres.server import stop_server


def database_names(pg: Postgres) -> List[str]:
    """The databases of a server that a check may connect to (no templates)."""
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")]


def remove_scratch_server(data_dir: str) -> None:
    """Stop a scratch server (if it runs) and remove its data directory."""
    if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
        try:
            stop_server(data_dir)
        except PgBackupError:
            pass
    shutil.rmtree(data_dir, ignore_errors=True)
