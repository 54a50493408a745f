"""The stop-segment wait: adaptive backoff (first re-check after tens of milliseconds, never more than
``poll`` apart), the deadline, and give_up."""
from __future__ import annotations

import itertools
import time

from pg_backup.postgres.archiver import FIRST_POLL, poll_delays, wait_archived


def test_poll_delays_start_short_and_double_up_to_poll():
    delays = list(itertools.islice(poll_delays(0.5), 8))
    assert delays[0] == FIRST_POLL <= 0.05
    assert delays[:6] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5]
    assert delays[6:] == [0.5, 0.5]
    assert list(itertools.islice(poll_delays(0.01), 3)) == [0.01, 0.01, 0.01]   # poll below the first delay


def test_arriving_segment_is_seen_after_short_sleeps():
    sleeps = []
    checks = iter([False, False, False, True])
    ok, why = wait_archived("000000010000000000000004", lambda _s: next(checks), 300, poll=0.5,
                            sleep=sleeps.append)
    assert (ok, why) == (True, "")
    assert sleeps == [0.02, 0.04, 0.08]            # the old fixed poll would have slept 1.5 s


def test_segment_archived_at_once_does_not_sleep():
    sleeps = []
    assert wait_archived("seg", lambda _s: True, 10, sleep=sleeps.append) == (True, "")
    assert sleeps == []


def test_give_up_stops_early_with_its_reason():
    sleeps = []
    reasons = iter(["", "archive_command failed"])
    assert wait_archived("seg", lambda _s: False, 300, give_up=lambda: next(reasons),
                         sleep=sleeps.append) == (False, "archive_command failed")
    assert sleeps == [FIRST_POLL]


def test_deadline_is_kept_and_checked_once_more_at_the_end():
    checked = []
    t0 = time.monotonic()
    ok, why = wait_archived("seg", lambda s: checked.append(s) or False, 0.3, poll=0.5)
    waited = time.monotonic() - t0
    assert (ok, why) == (False, "")
    assert 0.3 <= waited < 1.0                      # last sleep is cut to the deadline, not a full poll
    assert len(checked) >= 4                        # 0, 0.02, 0.06, 0.14, (0.3): short checks first


def test_backup_wal_names_cover_the_range_across_a_log_boundary():
    from pg_backup.physical.archiving import backup_wal_names

    seg = 16 << 20
    assert backup_wal_names("0000000100000000000000FE", "000000010000000100000001", seg) == [
        "0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000", "000000010000000100000001"]
    assert backup_wal_names("000000010000000000000004", "000000010000000000000004", seg) == [
        "000000010000000000000004"]
    # A timeline switch during the backup: only the stop segment is known to be on the stop timeline.
    assert backup_wal_names("000000010000000000000004", "000000020000000000000005", seg) == [
        "000000020000000000000005"]


def test_own_pg_wal_only_for_this_users_data_directory_of_that_cluster_archiving_with_wal_push(tmp_path):
    import os
    import struct

    from pg_backup.physical.archiving import own_pg_wal

    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    name, sysid, seg = "000000010000000000000004", 7000000000000000001, 16 << 20
    # A long page header: magic, info (XLP_LONG_HEADER), tli, pageaddr, rem_len, pad, sysid, seg size, blcksz.
    (pg_wal / name).write_bytes(struct.pack("<HHIQI4xQII", 0xD116, 2, 1, 0, 0, sysid, seg, 8192))
    cmd = "pg-backup --config /etc/pg-backup.yml wal-push %p"
    assert own_pg_wal(str(tmp_path), name, sysid, seg, cmd) == str(pg_wal)
    assert own_pg_wal(str(tmp_path), name, sysid + 1, seg, cmd) == ""            # another cluster's WAL
    assert own_pg_wal(str(tmp_path), name, sysid, seg * 2, cmd) == ""            # another segment size
    assert own_pg_wal(str(tmp_path), name, sysid, seg, "/bin/false") == ""      # another archive_command
    assert own_pg_wal(str(tmp_path), "000000010000000000000005", sysid, seg, cmd) == ""   # not here
    assert own_pg_wal("", name, sysid, seg, cmd) == ""
    if os.geteuid() == 0:
        os.chown(pg_wal, 12345, -1)
        assert own_pg_wal(str(tmp_path), name, sysid, seg, cmd) == ""            # another user's pg_wal
