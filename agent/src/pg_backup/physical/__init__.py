"""Physical base backups (``backup --physical``), full or incremental, for point-in-time recovery.

- :mod:`.layout`: the names of a physical backup's objects in the repository;
- :mod:`.stream`: ``BASE_BACKUP`` (and ``UPLOAD_MANIFEST``) over a replication connection;
- :mod:`.archiving`: the WAL a base backup needs, before and after it;
- :mod:`.config_files`: configuration files that live outside the data directory;
- :mod:`.incremental`: choosing the parent of an incremental backup and keeping its backup_manifest;
- :mod:`.backup`: :func:`~.backup.run_physical_backup`, which puts them together.
"""
