"""The restored data directory is written back before the recovered server starts (recovery/durable.py)."""

import os
import time

from pg_backup.progress import PhaseTimer
from pg_backup.recovery import durable


def _tree(tmp_path):
    data = tmp_path / "data"
    (data / "base" / "1").mkdir(parents=True)
    (data / "base" / "1" / "1259").write_bytes(b"x" * 8192)
    return str(data)


def test_make_durable_syncs_each_filesystem_once_and_reports_the_phase(tmp_path):
    data = _tree(tmp_path)
    timer = PhaseTimer()
    before = durable.SYNC_CALLS
    durable.make_durable([data, os.path.join(data, "base"), str(tmp_path / "missing")], timer)
    assert durable.SYNC_CALLS == before + 1          # same filesystem twice: one pass; a missing path: none
    assert "sync" in timer.phases


def test_fallback_fsyncs_every_file_when_syncfs_is_missing(tmp_path, monkeypatch):
    data = _tree(tmp_path)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(durable, "_libc_syncfs", lambda: None)
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                         real_fsync(fd)))
    durable.sync_tree(data)
    assert os.path.join(data, "base", "1", "1259") in synced
    assert data in synced                            # directories too: the new entries are durable


def test_writeback_runs_while_extraction_goes_on_and_stops_after(tmp_path):
    data = _tree(tmp_path)
    before = durable.SYNC_CALLS
    with durable.Writeback([data], interval=0.05) :
        time.sleep(0.3)
    after = durable.SYNC_CALLS
    assert after - before >= 2
    time.sleep(0.15)
    assert durable.SYNC_CALLS == after
