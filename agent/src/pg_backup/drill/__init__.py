"""``pg-backup drill``: a disaster-recovery drill with measured RTO and RPO.

1. **Mark the primary** (if it answers): commit a marker transaction (a transactional logical
   message ``pg-backup-drill``, no table needed), create the restore point ``pgb-drill-<id>``, switch
   WAL and wait (bounded) until that segment is in the archive. Then read the primary's WAL position:
   this instant is the *simulated loss*. Preparing is reported separately and is not part of the RTO.
   (:mod:`.primary`)
2. **Recover** the newest base backup plus every archived WAL segment (the recovery service, to the
   latest point) into a scratch data directory on the drill port, archiving off, as if the primary
   were gone. (:mod:`.run`)
3. **Check** the restored server: ``verify.checks`` must hold (the verification service's checks).
4. **Measure** (:mod:`.rpo`)
   - RTO = simulated loss -> restored server accepting connections *and* the checks passed, with
     the phases of recovery (download, decrypt+decompress, extract, combine for an incremental
     chain, WAL replay, startup, checks).
   - RPO: if the restored server replayed WAL up to the primary's position at the loss
     (``pg_last_wal_replay_lsn() >= loss LSN``) nothing was lost: RPO 0. Otherwise the RPO is the
     time from the last commit present in the restore (``pg_last_xact_replay_timestamp()``) to the
     loss, and the WAL bytes missing are reported too. That time is an upper bound of what was
     lost: it counts from the last recovered commit, and the lost WAL may hold no commit at all.
     The loss instant is the agent's clock (the ``PG_BACKUP_TEST_NOW`` test clock applies).
5. **Report** to ``<cluster>/audit/drills/<drill id>/``: ``report.md``, ``report.json`` and
   ``history.png`` (RTO and RPO of every drill in storage against the targets). ``report.json`` is
   written last. The drill exits 4 when a check failed or a target was missed, with the report written.
   (:mod:`.report`)
"""
