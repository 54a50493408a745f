"""Point-in-time recovery (``pg-backup pitr``, ``verify --restore`` of physical backups, ``drill``) and
the recoverable window (DESIGN §7, docs/pitr.md).

The package, by layer:

- ``targets``: :class:`~.targets.RecoveryTarget` and its makers (``time_target``, ``lsn_target``,
  ``xid_target``, ``name_target``, ``latest_target``, ``consistent_target``, ``target_from_options``);
- ``window``: the catalog of physical backups and archived WAL, the recoverable
  :class:`~.window.Window`, the choice of base backup, ``OutsideWindow`` (exit 7);
- ``datadir``: the data directory (checked, moved aside, never deleted) and its tablespaces;
- ``archives``: the backup's objects checked (``pipeline.verify_stored``), downloaded when they are
  not local files, then decrypted and extracted (``extract_archive``, also used by deep verify), a
  few at a time in parallel;
- ``chain``: an incremental backup's chain from the manifests (``load_chain``, ``chain_problem``);
- ``combine``: every member of a chain checked and extracted, then ``pg_combinebackup``
  (``combine_chain``, also used by deep verify);
- ``restore_files``: the files of a recovery in place: a full backup extracted, or a chain combined
  beside the data directory and renamed into place (the data directory is untouched until then);
- ``settings``: the recovery settings in ``postgresql.auto.conf`` and the configuration
  restore_command (``pg-backup wal-fetch``) reads;
- ``server``: the recovered server's log, a client for it, waiting for the promotion (starting and
  stopping a server is :mod:`pg_backup.postgres.server`);
- ``flow``: :func:`~.flow.recover` and :class:`~.flow.RecoveryResult`, ``socket_host``.

Importers name the module (``from ..recovery.flow import recover``); this file imports nothing, so
reading the window (``list``) does not load the recovery flow.
"""
