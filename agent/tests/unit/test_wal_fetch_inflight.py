"""wal-fetch and the prefetcher working on the same segment: a call for a segment the prefetcher is
decrypting waits for it instead of decrypting it a second time beside it, and still serves only a copy
that matches the archive (real files, real flock, a real second thread as the prefetcher)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from types import SimpleNamespace

from pg_backup.config import RepositorySettings, S3Settings
from pg_backup.recovery.archives import AUTO_WORKERS_MAX, AUTO_WORKERS_MIN, restore_workers
from pg_backup.repository import Repository
from pg_backup.storage import open_storage
from pg_backup.storage.base import PutOptions
from pg_backup.storage.local import LocalStorage
from pg_backup.wal import fast as fastpath
from pg_backup.wal.spool import Spool, in_flight, wait_in_flight

NAME = "000000010000000000000009"
DATA = b"segment bytes " * 4000


def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    cfg = tmp_path / "c.yml"
    cfg.write_text("cluster: main\n")
    settings = SimpleNamespace(cluster="main", wal_spool_path=str(tmp_path / "spool"),
                               repository=RepositorySettings(type="local", path=str(tmp_path / "repo"), prefix="pre",
                                                             s3=S3Settings(bucket="b", endpoint_url="http://x")))
    spool = Spool.for_settings(settings)
    fastpath.write_fast_settings(str(cfg), Repository(open_storage(settings), settings.cluster), spool)
    storage = LocalStorage(str(tmp_path / "repo"), "pre")
    storage.put_bytes(f"main/wal/00000001/{NAME}.zst.gpg", b"ciphertext",
                      PutOptions(metadata={"pgb-sha256": hashlib.sha256(DATA).hexdigest()}), overwrite=False)
    return cfg, spool


def _start_fetch(spool):
    """What the prefetcher does first: the record (object size 10 = the stored 'ciphertext' above)."""
    with open(os.path.join(spool.prefetch, NAME + ".json"), "w") as fh:
        json.dump({"sha256": hashlib.sha256(DATA).hexdigest(), "object_size": 10, "verified_at": time.time()}, fh)


def _finish_later(spool, data, delay=0.3):
    def run():
        time.sleep(delay)
        tmp = os.path.join(spool.prefetch, f".{NAME}.pgb-tmp-1")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.rename(tmp, os.path.join(spool.prefetch, NAME))
    t = threading.Thread(target=run)
    t.start()
    return t


class _Prefetcher:
    """Holds the prefetcher lock as the resident prefetcher does."""

    def __init__(self, spool):
        self.fh = open(spool.prefetcher_lock_path, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def close(self):
        self.fh.close()


def test_a_segment_in_flight_is_waited_for_then_served_by_the_fast_path(tmp_path, monkeypatch):
    cfg, spool = _env(tmp_path, monkeypatch)
    _start_fetch(spool)
    assert in_flight(spool.prefetch, NAME)
    holder = _Prefetcher(spool)
    try:
        worker = _finish_later(spool, DATA)
        t0 = time.monotonic()
        assert fastpath.fast_main(["--config", str(cfg), "wal-fetch", NAME, str(tmp_path / "dest")]) == 0
        waited = time.monotonic() - t0
        worker.join()
    finally:
        holder.close()
    assert waited >= 0.25                                   # it waited for the prefetcher's copy...
    assert (tmp_path / "dest").read_bytes() == DATA        # ...and served exactly it, by rename
    assert not os.path.exists(os.path.join(spool.prefetch, NAME))


def test_a_wrong_copy_finished_while_waiting_is_never_served(tmp_path, monkeypatch):
    cfg, spool = _env(tmp_path, monkeypatch)
    _start_fetch(spool)
    holder = _Prefetcher(spool)
    try:
        worker = _finish_later(spool, b"X" + DATA[1:])         # damaged (or another segment's bytes)
        rc = fastpath.fast_main(["--config", str(cfg), "wal-fetch", NAME, str(tmp_path / "dest")])
        worker.join()
    finally:
        holder.close()
    assert rc is None                                       # the full path fetches it from the archive
    assert not (tmp_path / "dest").exists()
    assert os.listdir(spool.prefetch) == []                 # the bad copy and its record are gone


def test_no_wait_without_a_running_prefetcher_or_for_a_dropped_fetch(tmp_path, monkeypatch):
    _, spool = _env(tmp_path, monkeypatch)
    assert not wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path)   # nothing at all
    _start_fetch(spool)                                     # a record a killed prefetcher left behind
    t0 = time.monotonic()
    assert not wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path)
    assert time.monotonic() - t0 < 0.2
    holder = _Prefetcher(spool)
    try:                                                    # the prefetcher fails: it drops the record
        threading.Timer(0.2, lambda: os.unlink(os.path.join(spool.prefetch, NAME + ".json"))).start()
        t0 = time.monotonic()
        assert not wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path, timeout=10)
        assert 0.15 <= time.monotonic() - t0 < 5
        _start_fetch(spool)                                 # a prefetcher that hangs: bounded wait
        t0 = time.monotonic()
        assert not wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path, timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 5
    finally:
        holder.close()


def test_a_download_that_progresses_is_waited_for_and_a_stalled_one_is_not(tmp_path, monkeypatch):
    _, spool = _env(tmp_path, monkeypatch)
    tmp = os.path.join(spool.prefetch, f".{NAME}.pgb-tmp-7")
    holder = _Prefetcher(spool)
    try:
        _start_fetch(spool)

        def slow_download():                                # grows every 0.1 s for 0.8 s, then completes
            with open(tmp, "wb") as fh:
                for _ in range(8):
                    fh.write(DATA[:1000])
                    fh.flush()
                    time.sleep(0.1)
            os.rename(tmp, os.path.join(spool.prefetch, NAME))
        worker = threading.Thread(target=slow_download)
        worker.start()
        t0 = time.monotonic()
        assert wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path, timeout=10, stall=0.3)
        assert time.monotonic() - t0 >= 0.7                 # longer than the stall limit: it kept growing
        worker.join()
        os.unlink(os.path.join(spool.prefetch, NAME))
        with open(tmp, "wb") as fh:                         # a hung download: written once, then nothing
            fh.write(b"x" * 100)
        t0 = time.monotonic()
        assert not wait_in_flight(spool.prefetch, NAME, spool.prefetcher_lock_path, timeout=10, stall=0.3)
        assert 0.25 <= time.monotonic() - t0 < 5
    finally:
        holder.close()


def test_restore_workers_setting_and_its_cpu_default(monkeypatch):
    settings = SimpleNamespace(physical=SimpleNamespace(restore_workers=3))
    assert restore_workers(settings) == 3
    settings.physical.restore_workers = 0
    for cpus, expected in ((1, AUTO_WORKERS_MIN), (None, AUTO_WORKERS_MIN), (2, 4), (3, 6), (64, AUTO_WORKERS_MAX)):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert restore_workers(settings) == expected
