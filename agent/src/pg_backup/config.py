"""Configuration: one declarative schema drives loading, validation and the reference docs.

The schema is the tree of dataclasses rooted at :class:`Settings`. Each field's ``metadata`` carries
its documentation and constraints; :func:`iter_options` flattens the tree into dotted key paths, which
``config validate``, ``config reference`` (the README's configuration table) and the Ansible roles'
argument specs are all derived from or checked against. Add an option to the schema and nowhere else.

How options are declared (``opt``, ``section``), flattened and built from YAML, whatever they are, is
:mod:`pg_backup.config_options`. The sections are declared by concern beside this module
(``config_postgres``, ``config_repository``, ``config_encryption``, ``config_signing``,
``config_jobs``, ``config_checks``), each with the rules across its own fields; this module
assembles them, holds the rules across sections, and loads. Every section class stays importable
from here (``from pg_backup.config import S3Settings``).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from .config_checks import DrillSettings, HealthSettings, TierHoursSettings, VerifyCheck, VerifySettings
from .config_encryption import EncryptionSettings
from .config_jobs import BackupSettings, CompressionSettings, PhysicalSettings, RetentionSettings, WalSettings
from .config_options import OptionInfo, build, opt, options_of, secret_file_problems, section
from .config_postgres import PostgresSettings
from .config_repository import (S3_STORAGE_CLASSES, TIERS, RepositorySettings, S3CredentialsSettings, S3Settings,
                                StorageClassSettings)
from .config_signing import SigningSettings
from .errors import ConfigError

#: libyaml's safe loader when PyYAML was built with it (the wheels are): same documents, ~8x faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = [
    "BackupSettings", "CompressionSettings", "DrillSettings", "EncryptionSettings", "HealthSettings",
    "PathsSettings", "PhysicalSettings", "PostgresSettings", "RepositorySettings", "RetentionSettings",
    "S3CredentialsSettings", "S3Settings", "S3_STORAGE_CLASSES", "Settings", "SigningSettings",
    "StorageClassSettings", "TIERS", "TierHoursSettings", "VerifyCheck", "VerifySettings", "WalSettings",
    "DEFAULT_CONFIG_PATH", "ENV_CONFIG", "config_path", "iter_options", "load", "parse", "read_file",
    "reference_markdown", "semantic_problems", "to_dict",
]

ENV_CONFIG = "PG_BACKUP_CONFIG"
DEFAULT_CONFIG_PATH = "/etc/pg-backup/pg-backup.yml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class PathsSettings:
    state_dir: str = opt("/var/lib/pg-backup", "Local state: locks, the local audit log, the restore spool, "
                                                 "caches (key fingerprints, signature verdicts).")
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
    problems.extend(s.repository.problems(check_files=check_files))
    problems.extend(s.encryption.problems(check_files=check_files))
    problems.extend(s.signing.problems())
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
            return yaml.load(fh, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader (libyaml's when built)
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
