"""Everything the agent knows about PostgreSQL itself, below the commands and the WAL subsystem.

- ``client``: SQL through psycopg (:class:`~.client.Postgres`), snapshots shared with pg_dump, names.
- ``tools``: where client tools and server binaries of a major version are, their versions, and
  ``ClientProcess`` (a client tool on the data path, built on ``pg_backup.process``).
- ``archiver``: ``archiver_state``, the one decision ``archiving_off``, and ``switch_and_wait``.
- ``server``: is a postmaster running on a data directory, where it listens, pg_ctl start/stop.

Nothing here imports the WAL archive, storage or a command: whether a segment is archived is a
callable the caller passes in. Importers name the module (``from .postgres.client import Postgres``).
"""
