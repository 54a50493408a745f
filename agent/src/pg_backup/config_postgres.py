"""The ``postgres`` section of the configuration: how the agent reaches the cluster and its programs.

Part of the one schema (:class:`pg_backup.config.Settings`), declared apart to keep modules short.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from .config_options import opt


@dataclass
class PostgresSettings:
    host: str = opt("/var/run/postgresql", "Host name or Unix-socket directory of the cluster.")
    port: int = opt(5432, "Port of the cluster.", minimum=1, maximum=65535)
    user: str = opt("postgres", "Role the agent connects as; it must be able to read every database "
                    "(a superuser, or a member of pg_read_all_data for dumps).")
    dbname: str = opt("postgres", "Maintenance database for catalog queries and for CREATE/ALTER DATABASE on restore.")
    bin_dir: Optional[str] = opt(None, "Directory holding pg_dump, pg_dumpall, pg_restore and psql; empty means "
                                 "the newest /usr/lib/postgresql/<major>/bin at least as new as the server, else PATH.")
    server_bin_dir: Optional[str] = opt(None, "Directory holding the server programs of the cluster's own major "
                                        "(postgres, pg_ctl, pg_combinebackup, pg_verifybackup, pg_waldump), which "
                                        "pitr, verify --restore/--deep and drill run: they must be exactly the "
                                        "backup's major, while bin_dir may be newer. Empty means bin_dir, then "
                                        "/usr/lib/postgresql/<major>/bin, /usr/pgsql-<major>/bin, pg_config --bindir.",
                                        example="/usr/lib/postgresql/17/bin")
    passfile: Optional[str] = opt(None, "libpq password file (mode 0600) when the role needs a password. "
                                  "Passwords never go in this configuration file.", secret_file=True)
    sslmode: Optional[str] = opt(None, "libpq sslmode for TCP connections (SQL, pg_dump & co. and the replication "
                                 "connection of physical backups); verify-full checks the server's certificate "
                                 "and host name against sslrootcert.",
                                 choices=(None, "disable", "allow", "prefer", "require", "verify-ca", "verify-full"))
    sslrootcert: Optional[str] = opt(None, "CA certificate file (PEM) the server's certificate must chain to "
                                     "(libpq sslrootcert); empty uses libpq's default ~/.postgresql/root.crt.",
                                     example="/etc/pg-backup/pg-ca.pem")
    connect_timeout: int = opt(10, "Seconds to wait for a connection before failing.", minimum=1, maximum=600)

    def libpq_security(self) -> Dict[str, str]:
        """The libpq parameters every connection of the agent carries (SQL, replication, client tools)."""
        params = {"passfile": self.passfile, "sslmode": self.sslmode, "sslrootcert": self.sslrootcert}
        return {k: v for k, v in params.items() if v}

    def path_problems(self) -> List[str]:
        """server_bin_dir must name a directory with postgres and pg_ctl (its major is checked when used:
        it is the major of the backup being restored)."""
        d = self.server_bin_dir
        if not d:
            return []
        if not os.path.isabs(d):
            return [f"postgres.server_bin_dir: must be an absolute path, got {d!r}"]
        missing = [p for p in ("postgres", "pg_ctl") if not os.access(os.path.join(d, p), os.X_OK)]
        if missing:
            return [f"postgres.server_bin_dir: {d} has no runnable {' or '.join(missing)}; set it to the bin "
                    f"directory of the cluster's PostgreSQL major"]
        return []
