"""Health: one evaluation (a pure function of manifests, probes and a clock), several renderings
(text, JSON, Nagios with perfdata, Prometheus textfile). DESIGN §8.

- :mod:`.probes`: :func:`~.probes.gather` collects the probes (storage, the WAL archive, PostgreSQL's
  archiver, the recorded restore verifications, local disk, the audit log, the keys the host writes with);
- :mod:`.keys`: reading those keys (:func:`~.keys.probe_keys`) and their expiry checks and metric;
- :mod:`.checks`: :func:`~.checks.evaluate` turns them into checks, with an injected clock;
- :mod:`.render`: ``document`` and the ``render_*`` functions print the same verdict in each format.

Importers name the module (``from ..health.checks import evaluate``); this file imports nothing.

Checks (names are stable: monitoring keys on them)
  freshness_<tier>, size_<tier>                   newest logical backup per tier: age and size change
  size_<tier>_db_<database>                       one database's dump against its own history
  freshness_physical_<tier>, size_physical_<tier> the same for physical base backups (when there are any)
  last_run_<operation>                            the newest audit record of backup/prune/verify
  wal_archiver                                    archiving off (archiving_off), failing now (pg_stat_archiver),
                                                  or failures since the last run
  wal_newest_age                                  age of the newest archived segment (RPO at risk)
  wal_gaps, wal_conflicts                         missing segments since the oldest base backup; pushes
                                                  that met different content under the same name
  storage, local_disk                             reachable and in the configured region; free space
  restore_verification                            age of the last successful 'verify --restore' (or drill)
  untrusted_records                               verification, drill or WAL conflict records without a trusted
                                                  signature, ignored (warning, only when there are some; docs/signing.md)
  key_expiry_<purpose>                            the OpenPGP key the host writes with (key_expiry_encryption):
                                                  warning 30 days before it expires, critical once expired
                                                  (health/keys.py)
  erasure_register, erasure_claims                the erasure register unreadable or a record damaged (critical);
                                                  an erasure the newest backup's manifest does not claim (warning)
                                                  (health/erasure.py)
  audit_chain                                     the audit hash chain since the last verified head: a gap, a
                                                  deleted or edited record (warning; health/audit_chain.py)
"""
