"""The agent's error hierarchy, mapped once to exit codes in the CLI.

Every expected failure is a subclass of :class:`PgBackupError`; the CLI prints its message as one
line (``pg-backup: error: ...``) and exits with its ``exit_code``. Anything else is a bug and exits
with :data:`EXIT_INTERNAL`.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTEGRITY = 4
EXIT_STORAGE = 5
EXIT_POSTGRES = 6
EXIT_NOT_FOUND = 7
EXIT_KEY = 8
EXIT_REFUSED = 9
EXIT_INTERRUPTED = 130

#: Documented in the README ("Exit codes"); a test keeps the two in step.
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "unexpected internal error (a bug: please report it with --debug output)",
    EXIT_USAGE: "usage or configuration error",
    EXIT_LOCKED: "another pg-backup run holds this cluster's lock",
    EXIT_INTEGRITY: "integrity failure: a stored object does not match its manifest, or decryption failed authentication",
    EXIT_STORAGE: "storage unreachable or a storage operation failed",
    EXIT_POSTGRES: "PostgreSQL unreachable or a PostgreSQL tool failed",
    EXIT_NOT_FOUND: "the named backup, database or object does not exist",
    EXIT_KEY: "encryption key missing, unreadable or not the one a backup was made with",
    EXIT_REFUSED: "refused an unsafe operation (e.g. replacing a database without --replace, or handing over restored "
                  "data whose recorded erasures could not be re-applied)",
    EXIT_INTERRUPTED: "interrupted by a signal; nothing was committed",
}


class PgBackupError(Exception):
    """An expected failure: one clear line for the operator and a documented exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class UsageError(PgBackupError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration file is missing, unparsable or has invalid values."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = problems or []


class LockBusyError(PgBackupError):
    exit_code = EXIT_LOCKED


class IntegrityError(PgBackupError):
    exit_code = EXIT_INTEGRITY


class StorageError(PgBackupError):
    exit_code = EXIT_STORAGE


class PostgresError(PgBackupError):
    exit_code = EXIT_POSTGRES


class ArchivingError(PostgresError):
    """WAL archiving is off, failing, or not writing into this repository."""


class NotFoundError(PgBackupError):
    exit_code = EXIT_NOT_FOUND


class EncryptionKeyError(PgBackupError):
    """The key a backup needs is missing, unreadable, or decryption with it failed."""

    exit_code = EXIT_KEY


class RefusedError(PgBackupError):
    exit_code = EXIT_REFUSED


class Interrupted(PgBackupError):
    exit_code = EXIT_INTERRUPTED


def error_type_for(exit_code: int) -> str:
    """The error class name that stands for ``exit_code`` (for results that fail without raising)."""
    for cls in (UsageError, LockBusyError, IntegrityError, StorageError, PostgresError, NotFoundError,
                EncryptionKeyError, RefusedError, Interrupted):
        if cls.exit_code == exit_code:
            return cls.__name__
    return PgBackupError.__name__
