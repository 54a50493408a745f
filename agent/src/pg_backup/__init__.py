"""pg-backup: encrypted, checksummed PostgreSQL backups (the on-host agent of miometry.pg_backup)."""

__version__ = "0.1.0"
