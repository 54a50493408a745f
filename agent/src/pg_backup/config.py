"""Configuration: one declarative schema drives loading, validation and the reference docs.

The schema is the tree of dataclasses below. Each field's ``metadata`` carries its documentation and
constraints; :func:`iter_options` flattens the tree into dotted key paths, which ``config validate``,
``config reference`` (the README's configuration table) and the Ansible roles' argument specs are
all derived from or checked against. Add an option here and nowhere else.

How options are declared (``opt``, ``section``), flattened and built from YAML, whatever they are, is
:mod:`pg_backup.config_options`; this module holds what they are, the rules across them, and
loading. Only this module and ``storage/`` know what the repository's backend type means for
the rest of the agent (e.g. :meth:`RepositorySettings.storage_class_for`).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from .config_options import OptionInfo, build, opt, options_of, secret_file_problems, section
from .config_signing import SigningSettings
from .errors import ConfigError

ENV_CONFIG = "PG_BACKUP_CONFIG"
DEFAULT_CONFIG_PATH = "/etc/pg-backup/pg-backup.yml"
TIERS = ("daily", "weekly", "monthly")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


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


@dataclass
class StorageClassSettings:
    daily: str = opt("STANDARD", "S3 storage class for daily backups.")
    weekly: str = opt("STANDARD", "S3 storage class for weekly backups.")
    monthly: str = opt("STANDARD", "S3 storage class for monthly backups (e.g. GLACIER or DEEP_ARCHIVE for "
                       "7-year archives; the agent restores archived objects itself).")


S3_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR",
                      "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")


@dataclass
class S3CredentialsSettings:
    writer: Optional[str] = opt(None, "Credentials file (0600, AWS ini) of the writer duty: backup, wal-push, "
                                "wal-check, erasure. Database hosts hold it.", secret_file=True)
    pruner: Optional[str] = opt(None, "Credentials file (0600) of the pruner duty: prune only.", secret_file=True)
    restorer: Optional[str] = opt(None, "Credentials file (0600) of the restorer duty: restore, pitr, wal-fetch, "
                                  "verify, drill. The playbooks deliver it for a job's duration only.",
                                  secret_file=True)


@dataclass
class S3Settings:
    bucket: Optional[str] = opt(None, "Bucket name (required when repository.type is s3).")
    endpoint_url: Optional[str] = opt(None, "Endpoint for S3-compatible stores (MinIO, Ceph RGW, ...); empty for AWS.",
                                      example="https://minio.internal:9000")
    region: Optional[str] = opt(None, "Region of the bucket; also checked against the bucket's real region "
                                "(data locality).", example="eu-central-1")
    force_path_style: bool = opt(False, "Use path-style addressing (MinIO and most non-AWS stores need it).")
    verify_tls: bool = opt(True, "Verify the endpoint's TLS certificate (and host name). false is for "
                           "tests only: every run and `health` warn about it.")
    ca_bundle: Optional[str] = opt(None, "CA bundle (PEM) to verify the endpoint's certificate with, e.g. a "
                                   "private CA; empty uses the system's CAs.", example="/etc/pg-backup/s3-ca.pem")
    credentials_file: Optional[str] = opt(None, "AWS-style credentials file (mode 0600) with aws_access_key_id and "
                                          "aws_secret_access_key; empty uses the instance/IAM role or the "
                                          "standard AWS environment.", secret_file=True)
    profile: Optional[str] = opt(None, "Profile within credentials_file.")
    credentials: S3CredentialsSettings = section(S3CredentialsSettings, "Least privilege: one credentials file per "
                                                 "duty; each command uses its duty's file (else credentials_file). "
                                                 "list, show and health use the first one set.")
    sse: str = opt("none", "Server-side encryption requested on every object, in addition to the agent's own "
                   "client-side encryption.", choices=("none", "AES256", "aws:kms"))
    sse_kms_key_id: Optional[str] = opt(None, "KMS key id when sse is aws:kms.")
    storage_class: StorageClassSettings = section(StorageClassSettings, "Storage class per backup tier.")
    part_size_mib: int = opt(8, "Multipart part size. The agent's memory is about 60 MiB plus 5 x part size at "
                             "the default concurrency; parts grow only for objects beyond 2,000 parts.",
                             minimum=5, maximum=5120)
    max_concurrency: int = opt(2, "Parts uploaded in parallel.", minimum=1, maximum=16)
    max_attempts: int = opt(3, "Attempts per request inside the S3 client (quick retries of throttling and "
                            "server errors); a store that stays unreachable is then waited out for "
                            "outage_tolerance_seconds.", minimum=1, maximum=50)
    outage_tolerance_seconds: int = opt(300, "How long a storage outage is ridden out: a request that fails "
                                        "(connection refused or cut, timeout, 5xx) is retried with backoff until "
                                        "this many seconds have passed since it first failed; a multipart upload "
                                        "resumes from the parts already stored. Beyond it the command fails with "
                                        "exit 5 and commits nothing. 0 fails at the first outage.",
                                        minimum=0, maximum=86400)
    wal_push_outage_tolerance_seconds: int = opt(15, "The same for wal-push (archive_command): kept short because "
                                                 "PostgreSQL's archiver retries a failed push itself (three "
                                                 "times a second apart, then at the next segment or within "
                                                 "a minute), and a push that waits holds the archiver.",
                                                 minimum=0, maximum=3600)
    connect_timeout: int = opt(10, "Seconds to connect to the endpoint.", minimum=1, maximum=600)
    read_timeout: int = opt(120, "Seconds to wait for a response.", minimum=1, maximum=3600)
    restore_tier: str = opt("Standard", "Retrieval tier for objects in GLACIER/DEEP_ARCHIVE.",
                            choices=("Expedited", "Standard", "Bulk"))
    restore_days: int = opt(3, "Days a retrieved archived object stays readable.", minimum=1, maximum=365)
    restore_poll_seconds: int = opt(60, "Seconds between checks while an archived object is being retrieved.",
                                    minimum=1, maximum=3600)
    restore_timeout_hours: int = opt(60, "Give up waiting for archived objects after this many hours.",
                                     minimum=1, maximum=24 * 14)


@dataclass
class RepositorySettings:
    type: str = opt("local", "Where backups go.", choices=("local", "s3"))
    path: Optional[str] = opt(None, "Root directory of a local repository (required when type is local).",
                              example="/var/backups/pg-backup")
    prefix: str = opt("", "Key prefix inside the bucket or directory, before <cluster>/.")
    s3: S3Settings = section(S3Settings, "S3-compatible object storage.")

    def identity(self) -> Dict[str, Any]:
        """What tells this repository apart from every other one (not options, not secrets): local
        state kept per repository, such as the WAL spool's markers, starts afresh for a new bucket
        or directory."""
        where: Dict[str, Any] = {"type": self.type, "prefix": self.prefix}
        if self.type == "local":
            where["path"] = os.path.abspath(self.path or "")
        else:
            where.update(bucket=self.s3.bucket, endpoint=self.s3.endpoint_url or "")
        return where

    def storage_class_for(self, tier: str) -> Optional[str]:
        """The storage class of a tier's data objects; None where the backend has no classes (local)."""
        return getattr(self.s3.storage_class, tier) if self.type == "s3" else None

    def required_region(self) -> Optional[str]:
        """The region the bucket must be in (data locality, checked by health); None for a local
        repository or when no region is configured."""
        return self.s3.region if self.type == "s3" else None


@dataclass
class EncryptionSettings:
    mode: str = opt("public-key", "public-key: hosts hold only an OpenPGP public key and cannot read backups; "
                    "passphrase: one symmetric secret.", choices=("public-key", "passphrase"))
    public_key_file: Optional[str] = opt(None, "OpenPGP public key (armored or binary) new backups are "
                                         "encrypted to (public-key mode); 'pg-backup keys create' makes the pair.")
    private_key_files: List[str] = opt([], "OpenPGP secret keys (mode 0600) for restore and deep verify; "
                                       "list old keys too after a rotation. Only needed where restores run.",
                                       secret_file=True)
    private_key_passphrase_file: Optional[str] = opt(None, "File (0600) holding the passphrase that protects "
                                                     "the secret keys, if any.", secret_file=True)
    passphrase_file: Optional[str] = opt(None, "File (0600) with the passphrase new backups are encrypted with "
                                         "(passphrase mode).", secret_file=True)
    old_passphrase_files: List[str] = opt([], "Previous passphrases (0600 files) still needed to read older "
                                          "backups after a rotation.", secret_file=True)
    gpg_binary: str = opt("gpg", "GnuPG 2.2+ executable (the packet format it writes is pinned: SEIPD v1, "
                                 "AES-256, never AEAD).")


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
    restore_workers: int = opt(0, "Objects a physical restore (pitr, verify --restore, drill) downloads and "
                               "checks, or decrypts and extracts, at the same time (each a gpg, a zstd stream and "
                               "a tar); 0 means two per CPU (each also waits on reads and writes), at least 2 and "
                               "at most 8.", minimum=0, maximum=64)


@dataclass
class VerifyCheck:
    name: str = opt("", "Name of the check in reports.")
    database: str = opt("postgres", "Database the query runs in.")
    sql: str = opt("", "A query returning one value (one row, one column).")
    expect: str = opt("> 0", "Expectation on the value: an operator (=, !=, >, >=, <, <=) and a number, a "
                      "'quoted string' or true/false, or 'is null' / 'is not null', e.g. '> 0' or \"= 'ok'\". "
                      "A NULL or a value of another kind never holds.")


@dataclass
class VerifySettings:
    checks: List[VerifyCheck] = opt([], "Checks run after every restore verification and drill, each "
                                    "{name, database, sql, expect}, e.g. the seed's SELECT COUNT(*) FROM "
                                    "domain_events with expect '> 0'.", item=VerifyCheck)
    scratch_port: int = opt(55433, "Port of the scratch server 'verify --restore' starts for physical backups "
                            "(loopback only, archiving off).", minimum=1024, maximum=65535)
    scratch_dir: Optional[str] = opt(None, "Directory for scratch data directories of verifications and drills; "
                                     "default <state_dir>/scratch.")
    keep_failed: bool = opt(False, "Keep the scratch database or data directory of a failed verification for "
                            "inspection instead of removing it.")


@dataclass
class DrillSettings:
    rto_target_minutes: int = opt(240, "Recovery time objective: a drill slower than this fails.",
                                  minimum=1, maximum=7 * 24 * 60)
    rpo_target_minutes: int = opt(60, "Recovery point objective: a drill losing more than this much time of "
                                  "commits fails.", minimum=1, maximum=7 * 24 * 60)
    port: int = opt(55434, "Port of the scratch server a drill restores into (loopback only).",
                    minimum=1024, maximum=65535)


@dataclass
class TierHoursSettings:
    daily: int = opt(26, "A daily backup older than this many hours is a warning (twice as old: critical).",
                     minimum=1, maximum=24 * 400)
    weekly: int = opt(8 * 24, "A weekly backup older than this many hours is a warning (twice as old: critical).",
                      minimum=1, maximum=24 * 400)
    monthly: int = opt(32 * 24, "A monthly backup older than this many hours is a warning (twice as old: "
                       "critical).", minimum=1, maximum=24 * 800)


@dataclass
class HealthSettings:
    max_age_hours: TierHoursSettings = section(TierHoursSettings, "Freshness thresholds per tier (missed schedules).")
    size_change_percent: int = opt(50, "Warn when the newest backup of a tier differs from the median of the "
                                   "previous ones by more than this.", minimum=1, maximum=1000)
    min_free_disk_percent: int = opt(10, "Warn when the filesystem of paths.state_dir has less free space.",
                                     minimum=0, maximum=99)
    wal_age_factor: int = opt(5, "Warn when the newest archived WAL is older than this many times "
                              "wal.archive_timeout_seconds (critical beyond drill.rpo_target_minutes).",
                              minimum=1, maximum=1000)
    restore_verification_max_age_days: int = opt(35, "Warn when the last successful restore verification is "
                                                 "older than this many days (the seed's monthly restore test).",
                                                 minimum=1, maximum=3660)


@dataclass
class PathsSettings:
    state_dir: str = opt("/var/lib/pg-backup", "Local state: locks, the local audit log, the restore spool.")
    audit_log: Optional[str] = opt(None, "Local audit log (JSON lines); default <state_dir>/audit.jsonl.")
    spool_dir: Optional[str] = opt(None, "Private directory for parallel restores that need a seekable file; "
                                   "default <state_dir>/spool. Created 0700 and emptied after each use.")


@dataclass
class Settings:
    cluster: Optional[str] = opt(None, "Name of this cluster in the repository (<prefix>/<cluster>/...); unique "
                                 "per repository.", pattern=_NAME_RE.pattern, example="main")
    postgres: PostgresSettings = section(PostgresSettings, "How to reach the PostgreSQL cluster.")
    repository: RepositorySettings = section(RepositorySettings, "Where backups are stored.")
    encryption: EncryptionSettings = section(EncryptionSettings, "Client-side OpenPGP encryption (AES-256).")
    signing: SigningSettings = section(SigningSettings, "Cluster signing keys: every object is signed, readers verify.")
    compression: CompressionSettings = section(CompressionSettings, "zstd compression.")
    retention: RetentionSettings = section(RetentionSettings, "Grandfather-father-son retention.")
    backup: BackupSettings = section(BackupSettings, "What a backup contains.")
    physical: PhysicalSettings = section(PhysicalSettings, "Physical base backups ('backup --physical').")
    wal: WalSettings = section(WalSettings, "Continuous WAL archiving ('wal-push', 'wal-fetch').")
    verify: VerifySettings = section(VerifySettings, "Restore verification ('verify --restore').")
    drill: DrillSettings = section(DrillSettings, "Disaster-recovery drills ('drill').")
    health: HealthSettings = section(HealthSettings, "Thresholds of 'pg-backup health'.")
    paths: PathsSettings = section(PathsSettings, "Local files of the agent.")

    # Derived conveniences, not options.
    @property
    def audit_log_path(self) -> str:
        return self.paths.audit_log or os.path.join(self.paths.state_dir, "audit.jsonl")

    @property
    def spool_path(self) -> str:
        return self.paths.spool_dir or os.path.join(self.paths.state_dir, "spool")

    @property
    def wal_spool_path(self) -> str:
        return self.wal.spool_dir or os.path.join(self.paths.state_dir, "wal-spool")

    @property
    def backup_manifests_path(self) -> str:
        """Plaintext backup_manifest of the newest physical backup taken here, per cluster: the parent of
        the next incremental backup (the host cannot decrypt the repository in public-key mode)."""
        return os.path.join(self.paths.state_dir, "backup-manifests")

    @property
    def scratch_path(self) -> str:
        return self.verify.scratch_dir or os.path.join(self.paths.state_dir, "scratch")


def iter_options() -> Iterator[OptionInfo]:
    """Every option as a dotted key path, in schema order."""
    return options_of(Settings)


def reference_markdown() -> str:
    """The README's configuration reference, generated from the schema."""
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for o in iter_options():
        default = "" if o.default in (None, "", []) else f"`{o.default}`"
        doc = o.doc
        if o.choices:
            doc += " One of: " + ", ".join(f"`{c}`" for c in o.choices if c is not None) + "."
        if o.minimum is not None:
            doc += f" Range {o.minimum}–{o.maximum}."
        lines.append(f"| `{o.path}` | {o.type_name} | {default} | {doc} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Loading and validation


def semantic_problems(s: Settings, *, check_files: bool = True) -> List[str]:
    """Cross-field rules that a per-field type check cannot express."""
    problems: List[str] = []
    if not s.cluster:
        problems.append("cluster: required; name this cluster in the repository, e.g. 'main'")
    repo = s.repository
    if repo.type == "local":
        if not repo.path:
            problems.append("repository.path: required when repository.type is local")
        elif not os.path.isabs(repo.path):
            problems.append(f"repository.path: must be an absolute path, got {repo.path!r}")
    else:
        if not repo.s3.bucket:
            problems.append("repository.s3.bucket: required when repository.type is s3")
        if repo.s3.sse == "aws:kms" and not repo.s3.sse_kms_key_id:
            problems.append("repository.s3.sse_kms_key_id: required when repository.s3.sse is aws:kms")
        for tier in TIERS:
            sc = getattr(repo.s3.storage_class, tier)
            if sc not in S3_STORAGE_CLASSES:
                problems.append(f"repository.s3.storage_class.{tier}: {sc!r} is not one of "
                                f"{', '.join(S3_STORAGE_CLASSES)}")
        if repo.s3.endpoint_url and not re.match(r"^https?://", repo.s3.endpoint_url):
            problems.append(f"repository.s3.endpoint_url: must start with http:// or https://, "
                            f"got {repo.s3.endpoint_url!r}")
    if repo.prefix and (repo.prefix.startswith("/") or ".." in repo.prefix.split("/")):
        problems.append(f"repository.prefix: must be relative without '..', got {repo.prefix!r}")
    enc = s.encryption
    if enc.mode == "public-key" and not enc.public_key_file and not enc.private_key_files:
        problems.append("encryption.public_key_file: required in public-key mode (or private_key_files on a "
                        "restore-only host)")
    if enc.mode == "passphrase" and not enc.passphrase_file:
        problems.append("encryption.passphrase_file: required in passphrase mode")
    from .expectations import ExpectationError, parse_expectation

    for i, check in enumerate(s.verify.checks):
        if not check.name or not check.sql:
            problems.append(f"verify.checks[{i}]: needs a name and an sql query")
        try:
            parse_expectation(check.expect)
        except ExpectationError as exc:
            problems.append(f"verify.checks[{i}].expect: {exc}")
    if len({c.name for c in s.verify.checks}) != len(s.verify.checks):
        problems.append("verify.checks: check names must be unique (they name the results in reports)")
    if check_files:
        secret_file_problems(s, problems)
        problems.extend(s.postgres.path_problems())
        if s.postgres.sslrootcert and not os.path.isfile(s.postgres.sslrootcert):
            problems.append(f"postgres.sslrootcert: file {s.postgres.sslrootcert} does not exist")
        if repo.type == "s3" and repo.s3.ca_bundle and not os.path.isfile(repo.s3.ca_bundle):
            problems.append(f"repository.s3.ca_bundle: file {repo.s3.ca_bundle} does not exist")
        if enc.public_key_file and not os.path.exists(enc.public_key_file):
            problems.append(f"encryption.public_key_file: file {enc.public_key_file} does not exist")
    return problems



def parse(data: Any, *, check_files: bool = True) -> Tuple[Settings, List[str]]:
    """Build settings from parsed YAML; return them with every problem found (empty when valid)."""
    problems: List[str] = []
    settings = build(Settings, data, "", problems)
    problems.extend(semantic_problems(settings, check_files=check_files))
    return settings, problems


def config_path(explicit: Optional[str]) -> str:
    return explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH


def read_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist",
                          hint=f"pass --config FILE or set {ENV_CONFIG}") from None
    except PermissionError:
        raise ConfigError(f"configuration file {path} is not readable by this user",
                          hint="run as the user that owns it (usually postgres)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"configuration file {path} is not valid YAML{where}") from None


def load(path: Optional[str] = None, *, check_files: bool = True) -> Settings:
    """Load and validate; raise ConfigError listing every problem."""
    resolved = config_path(path)
    settings, problems = parse(read_file(resolved), check_files=check_files)
    if problems:
        first = problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)"
        raise ConfigError(f"invalid configuration {resolved}: {first}", problems=problems,
                          hint="run 'pg-backup config validate' to list every problem")
    return settings


def to_dict(settings: Settings) -> Dict[str, Any]:
    return dataclasses.asdict(settings)
