"""What backups do: the ``compression``, ``retention``, ``backup``, ``wal`` and ``physical`` sections.

Part of the one schema (:class:`pg_backup.config.Settings`), declared apart to keep modules short.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .config_options import opt


@dataclass
class CompressionSettings:
    level: int = opt(1, "zstd level (1 fastest ... 19 smallest). Level 1 already beats pg_dump's zlib in size on typical dumps and keeps up with pg_dump; raise it for smaller archives at more CPU.", minimum=1, maximum=19)
    threads: int = opt(0, "zstd worker threads; 0 means one per CPU core.", minimum=0, maximum=256)


@dataclass
class RetentionSettings:
    daily_days: int = opt(30, "Keep daily backups this many days.", minimum=1, maximum=3660)
    weekly_weeks: int = opt(12, "Keep weekly backups this many weeks.", minimum=1, maximum=520)
    monthly_months: int = opt(84, "Keep monthly backups this many months (84 = 7 years).", minimum=1, maximum=1200)
    wal_hours: int = opt(24, "Point-in-time recovery window for WAL beyond what retained base backups need.",
                         minimum=1, maximum=24 * 400)
    incomplete_grace_hours: int = opt(24, "Backups without a manifest and abandoned multipart uploads older than "
                                      "this are removed by prune (younger ones may still be running).",
                                      minimum=1, maximum=24 * 30)


@dataclass
class BackupSettings:
    databases: List[str] = opt([], "Databases to back up; empty means every database that allows connections "
                               "except templates.")
    exclude_databases: List[str] = opt([], "Databases never backed up.")
    globals: bool = opt(True, "Also store roles and tablespaces (pg_dumpall --globals-only).")
    row_counts: bool = opt(False, "Record exact per-table row counts in the manifest, counted in the same "
                           "snapshot as the dump (costs a full scan of every table).")


@dataclass
class WalSettings:
    push_parallel: int = opt(4, "Segments one 'wal-push' call stores at once: the one PostgreSQL asked for plus "
                             "other .ready segments, which later calls then acknowledge at once (never before "
                             "they are durable).", minimum=1, maximum=64)
    spool_dir: Optional[str] = opt(None, "Private directory (0700) where wal-push remembers segments already "
                                   "stored and wal-fetch keeps prefetched ones; default <state_dir>/wal-spool.")
    fetch_prefetch: int = opt(4, "Segments 'wal-fetch' downloads ahead during recovery; 0 turns prefetch off.",
                              minimum=0, maximum=64)
    archive_timeout_seconds: int = opt(60, "PostgreSQL archive_timeout (set by the wal_archiving role from the RPO "
                                       "target); health warns when the newest archived WAL is older than "
                                       "health.wal_age_factor times this.", minimum=1, maximum=3600)
    uploader_idle_seconds: int = opt(60, "A wal-push starts a resident uploader that stores .ready files ahead of "
                                     "PostgreSQL (its later calls then return at once); it exits after this many "
                                     "idle seconds or when the postmaster is gone. 0 turns it off.",
                                     minimum=0, maximum=3600)


@dataclass
class PhysicalSettings:
    checkpoint: str = opt("spread", "Checkpoint mode of base backups: spread (gentle on a busy primary) or fast "
                          "(start at once).", choices=("spread", "fast"))
    max_rate_kib: int = opt(0, "Throttle base backups to this many KiB/s (the server's MAX_RATE, 32 or more); 0 "
                            "means unthrottled.", minimum=0, maximum=1048576)
    wal_wait_seconds: int = opt(300, "After the base backup, wait this long for its last WAL segment to reach the "
                                "archive; the backup is committed only once it is there (without it the backup "
                                "cannot be restored).", minimum=1, maximum=86400)
    incremental: str = opt("never", "Incremental base backups (PostgreSQL 17+ with summarize_wal = on): never "
                           "(every 'backup --physical' is full), auto (incremental to the newest physical backup "
                           "when it can be, else a full backup that says why) or always (incremental or refuse, "
                           "exit 2). 'backup --physical --incremental' asks for auto (always if set); '--full' "
                           "forces a full backup.", choices=("never", "auto", "always"))
    max_chain: int = opt(6, "Most incremental backups on one full backup: when the newest chain has this many, the "
                         "next physical backup is full (restore time and risk grow with the chain).",
                         minimum=1, maximum=100)
    archive_part_mib: int = opt(256, "Store each archive of a base backup (the data directory, each tablespace) as "
                                "objects of about this many MiB of tar stream, cut between files or inside a large "
                                "one: a restore extracts them in parallel (restore_workers). 0 stores each archive "
                                "as one object (a restore then has one stream per archive).", minimum=0,
                                maximum=1048576)
    restore_workers: int = opt(0, "Objects a physical restore (pitr, verify --restore, drill) downloads and "
                               "checks, or decrypts and extracts, at the same time (each a gpg, a zstd stream and "
                               "the writing of its files; an archive stored as parts is one job per part); 0 "
                               "means two per CPU (each also waits on reads and writes), at least 2 and at most 8.",
                               minimum=0, maximum=64)
