"""``wal-push`` (archive_command) and ``wal-fetch`` (restore_command): continuous WAL archiving.

Rules (DESIGN §5), and how they are kept:

- **Durable before acknowledged.** ``wal-push`` exits 0 only after the object is stored (S3: a PUT
  with Content-MD5 answered 200; local: temp file fsynced, linked into place, directory fsynced).
  A spool marker that lets a later call acknowledge at once is written only after that, and it is
  bound to the file's identity (device, inode, size, mtime and ctime in nanoseconds).
- **Never overwrite.** Objects are created with create-if-absent (S3 ``If-None-Match: *``, local
  ``link()``). When the name exists, the SHA-256 of the *plaintext* stored with the object
  (metadata ``pgb-sha256``) decides: same content is success (PostgreSQL re-archives after a crash),
  different content is refused, recorded under ``<cluster>/wal/conflicts/`` and in the audit log.
- **One archive, one cluster.** ``<cluster>/wal/archive.json`` names the system identifier and
  segment size (created on the first push, create-if-absent). The pushing cluster's identifier is
  read from the file itself (the long page header of every segment) or ``global/pg_control``; the
  verified identity is cached in the spool, so steady-state pushes do not read archive.json.
- **Throughput.** A push also stores other ``.ready`` files (oldest first, ``wal.push_parallel`` at
  once) and remembers them; a resident uploader (started by a push that sees a backlog, gone when
  idle or when the postmaster is gone) drains ``.ready`` files ahead of PostgreSQL. PostgreSQL's
  later calls then take the *fast path* (:mod:`pg_backup.wal.fast`), which needs no YAML, boto3,
  psycopg or zstandard -- a stat, a marker read and, if the uploader is busy with that very file, a
  lock wait.
- **Fetch.** ``wal-fetch`` writes DEST atomically (temp file + rename in DEST's directory), never
  serves a ``.partial`` as a segment, exits 7 quickly for a missing file (a local repository is
  answered by the fast path), and prefetches the next ``wal.fetch_prefetch`` segments into the spool
  in a background process; a prefetched file is served only if it still matches the archive's object.
- **Exit codes < 128.** A signal (e.g. SIGTERM at shutdown) ends a push or fetch with exit 5 and
  nothing visible: PostgreSQL treats codes above 125 from restore_command as fatal to recovery
  (:mod:`pg_backup.commands.wal`).

The package, by layer: ``names`` (WAL file names, LSNs, segment arithmetic, object names), ``spool``
(markers, locks, prefetched copies), ``workers`` (starting the resident processes), ``fast`` (the
fast path), ``archive`` (reading the archive, gaps, retention planning), ``pgfiles`` (PostgreSQL's own
files), ``encode``, ``push`` (wal-push and the uploader), ``fetch`` (wal-fetch, ``fetch_to`` and the
prefetcher); ``python -m pg_backup.wal`` is the detached workers' entry (``__main__``). The fast
path imports only ``names``, ``spool``, ``workers`` and ``fast`` (and :mod:`pg_backup.files`,
:mod:`pg_backup.objmeta`): they and this module use the standard library alone.
"""
from __future__ import annotations
