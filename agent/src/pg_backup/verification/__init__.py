"""Restore verification: one service for ``verify --restore`` and ``drill``.

- :mod:`.outcome`: what a verification found (checks, failures, notes) and the one mapping of an
  outcome to an exit code and error line;
- :mod:`.checks`: running the checks (their expectations are :mod:`pg_backup.expectations`, beside
  the configuration that validates them) and comparing row counts in a restored database or server;
- :mod:`.scratch`: scratch servers and their databases;
- :mod:`.records`: the verifications and drill reports kept in the repository;
- :mod:`.restore_check`: ``verify --restore`` itself (logical and physical).

Importers name the module (``from ..verification.records import verification_history``); this file
imports nothing, so ``health`` reading the records does not load the restore code.
"""
