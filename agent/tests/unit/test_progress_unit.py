"""Progress rendering (issue 13): percentage and ETA where the size is known, a line in logs, and a
heartbeat while a spread checkpoint keeps the backup waiting; the verify text of archived backups."""
from __future__ import annotations

import io

import pytest

from pg_backup import progress as progress_mod
from pg_backup.progress import Progress, progress_line


def test_a_known_total_gives_a_percentage_and_an_eta():
    line = progress_line("storing base.tar", 256 << 20, 10.0, 1 << 30, "server's estimate")
    assert line == ("storing base.tar: 256.0 MiB of ~1.0 GiB (server's estimate), 25%, 25.6 MiB/s, ETA 30s")


def test_without_a_total_only_bytes_and_rate():
    assert progress_line("dump", 2048, 2.0) == "dump: 2.0 KiB at 1.0 KiB/s"


def test_an_estimate_is_never_shown_as_done_and_an_outgrown_one_says_so():
    assert ", 99%," in progress_line("d", 999_999, 5.0, 1_000_000)
    assert progress_line("d", 3 << 20, 5.0, 1 << 20, "database size").endswith(
        "more than the estimated ~1.0 MiB (database size)")
    assert progress_line("d", 0, 0.1, 1 << 20).endswith("ETA unknown")  # no rate yet


@pytest.fixture
def clock(monkeypatch):
    """The progress module's monotonic clock, moved by hand: ``clock[0] += seconds``."""
    now = [1000.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now[0])
    return now


def test_logs_get_a_line_every_interval_once_the_size_is_known(clock):
    now, out = clock, io.StringIO()
    p = Progress(out, live=False)
    p.stage("database 'crm' (1/1)")
    p.bytes("dump", 10 << 20)
    now[0] += 60
    p.bytes("dump", 10 << 20)
    assert out.getvalue().count("\n") == 1  # size unknown: the stage line only
    p.expect(100 << 20, "database size")
    now[0] += 31
    p.bytes("dump", 50 << 20)
    now[0] += 5
    p.bytes("dump", 60 << 20)  # within the interval: nothing
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("pg-backup:   database 'crm' (1/1): 50.0 MiB of ~100.0 MiB (database size), 50%")
    p.stage("next")  # a new stage forgets the previous size
    now[0] += 60
    p.bytes("x", 1)
    assert len(out.getvalue().splitlines()) == 3


def test_a_terminal_redraws_with_the_percentage(clock):
    now, out = clock, io.StringIO()
    p = Progress(out, live=True)
    p.stage("storing base.tar")
    p.expect(4 << 20)
    now[0] += 1
    p.bytes("x", 1 << 20)
    assert "\r  storing base.tar: 1.0 MiB of ~4.0 MiB, 25%, 1.0 MiB/s, ETA 3s" in out.getvalue()


def test_a_long_checkpoint_is_not_silent():
    out = io.StringIO()
    tick = Progress(out, live=False).waiting("the server's spread checkpoint", "physical.checkpoint: fast starts at once",
                                             interval=30)
    for second in range(1, 95):
        tick(float(second))
    notes = out.getvalue().splitlines()
    assert notes == [f"pg-backup: still waiting for the server's spread checkpoint: {t} so far "
                     f"(physical.checkpoint: fast starts at once)" for t in ("30s", "1m00s", "1m30s")]
    quiet = io.StringIO()
    Progress(quiet, quiet=True).waiting("x")(100.0)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("retrieval, expected", [
    ("not requested", "verify --retrieve requests it"),
    ("requested", "retrieval requested now; verify again once it is done"),
    ("in progress", "retrieval in progress; verify again once it is done"),
])
def test_verify_says_what_an_archived_backup_was_verified_by(retrieval, expected):
    from pg_backup.verification.archived import describe

    text = describe({"objects": 2, "storage_classes": ["DEEP_ARCHIVE"], "compared": ["sha256", "size"],
                     "retrieval": retrieval})
    assert text == (f"verified by metadata (the store's SHA-256 and sizes); content check pending a retrieval of 2 "
                    f"object(s) in DEEP_ARCHIVE ({expected})")


def test_a_retrieval_started_by_an_earlier_run_is_in_progress_not_requested_again():
    from pg_backup.verification.archived import archived_summary

    cold = {"checked": "metadata", "storage_class": "GLACIER", "compared": ["size"]}
    entries = [dict(cold, archive_state="restoring"), dict(cold, archive_state="archived"), {"checked": "content"}]
    assert archived_summary(entries, [], retrieve=False)["retrieval"] == "in progress"
    assert archived_summary(entries, ["k1", "k2"], retrieve=True)["retrieval"] == "requested"
    assert archived_summary([dict(cold, archive_state="archived")], [], retrieve=False) == {
        "objects": 1, "storage_classes": ["GLACIER"], "compared": ["size"], "retrieval": "not requested"}
    assert archived_summary([{"checked": "content"}], [], retrieve=False) is None
