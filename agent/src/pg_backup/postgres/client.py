"""Talking to PostgreSQL: SQL through psycopg, dumps and restores through the server's own tools.

Connection parameters reach libpq through keyword arguments (psycopg) or the environment (PG*
variables for pg_dump & co.), never through a command line that ``ps`` would show; passwords come
only from a libpq password file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..config import PostgresSettings
from ..errors import PostgresError
from .tools import client_bin_dir


def _psycopg():  # type: ignore[no-untyped-def]
    import psycopg  # imported lazily: commands that never touch SQL start faster

    return psycopg


def conninfo_quote(value: str) -> str:
    """Quote a value for a libpq keyword/value connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class ServerInfo:
    version: str
    version_num: int
    system_identifier: Optional[str]
    in_recovery: bool
    is_superuser: bool

    @property
    def major(self) -> int:
        return self.version_num // 10000


@dataclass
class DatabaseRow:
    name: str
    encoding: str
    collate: str
    ctype: str
    owner: str
    size_bytes: int


class Postgres:
    def __init__(self, settings: PostgresSettings):
        self.settings = settings
        self._bin_dir: Optional[str] = None

    # -- SQL ---------------------------------------------------------------------------------------
    def connect(self, dbname: Optional[str] = None, *, autocommit: bool = True):  # type: ignore[no-untyped-def]
        s = self.settings
        params: Dict[str, object] = {"host": s.host, "port": s.port, "user": s.user,
                                     "dbname": dbname or s.dbname, "connect_timeout": s.connect_timeout,
                                     "application_name": "pg-backup"}
        params.update(s.libpq_security())
        psycopg = _psycopg()
        try:
            return psycopg.connect(autocommit=autocommit, **params)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "connection failed"
            raise PostgresError(f"cannot connect to PostgreSQL at {s.host}:{s.port} as {s.user} "
                                f"(database {dbname or s.dbname!r}): {first}",
                                hint="check the postgres section of the configuration and that the server runs") from None

    def server_info(self) -> ServerInfo:
        with self.connect() as conn:
            row = conn.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
                               " pg_is_in_recovery(), rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            try:
                sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
            except _psycopg().Error:
                sysid = None
            return ServerInfo(row[0], row[1], sysid, row[2], row[3])

    def databases(self) -> List[DatabaseRow]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba),"
                " pg_database_size(oid) FROM pg_database WHERE datallowconn AND NOT datistemplate"
                " ORDER BY datname").fetchall()
        return [DatabaseRow(*r) for r in rows]

    def database_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def role_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None

    # -- client tools --------------------------------------------------------------------------------
    def env(self, dbname: Optional[str] = None) -> Dict[str, str]:
        """Environment for pg_dump & co.: connection through PG* variables, nothing in argv."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGHOST": s.host, "PGPORT": str(s.port), "PGUSER": s.user,
                    "PGDATABASE": dbname or s.dbname, "PGCONNECT_TIMEOUT": str(s.connect_timeout),
                    "PGAPPNAME": "pg-backup"})
        names = {"passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT"}
        env.update({names[k]: v for k, v in s.libpq_security().items()})
        return env

    def bin_dir(self, server_major: int) -> str:
        """Client tools at least as new as the server (pg_dump refuses older-major servers' successors)."""
        if not self._bin_dir:
            self._bin_dir = client_bin_dir(self.settings.bin_dir, server_major)
        return self._bin_dir

    def tool(self, name: str, server_major: int) -> str:
        return os.path.join(self.bin_dir(server_major), name)


class SnapshotSession:
    """A REPEATABLE READ transaction whose snapshot pg_dump imports (``--snapshot``).

    Row counts taken here see exactly the data the dump contains. The transaction must stay open
    until pg_dump has imported the snapshot, so the session lives as long as the dump."""

    def __init__(self, pg: Postgres, dbname: str):
        self.conn = pg.connect(dbname, autocommit=False)
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        self.snapshot_id: str = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]

    def row_counts(self) -> Dict[str, int]:
        sql = _psycopg().sql
        tables = self.conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
            "                 AND d.objid = c.oid AND d.deptype = 'e')"
            " ORDER BY 1, 2").fetchall()
        counts: Dict[str, int] = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            counts[qualified_name(schema, table)] = self.conn.execute(query).fetchone()[0]
        return counts

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def qualified_name(schema: str, table: str) -> str:
    """The key used for tables in manifests: schema.table, each part quoted only when it must be."""
    return f"{quote_ident_if_needed(schema)}.{quote_ident_if_needed(table)}"


def quote_ident_if_needed(name: str) -> str:
    if re.match(r"^[a-z_][a-z0-9_$]*$", name):
        return name
    return '"' + name.replace('"', '""') + '"'
