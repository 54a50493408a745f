"""Incremental backup decisions without a server: the mode a run asks for, WAL summary coverage,
the summarizer's health checks, and the chain helpers of manifests."""
from __future__ import annotations

import pytest

from pg_backup.errors import UsageError
from pg_backup.health.summarizer import BEHIND_WARNING_BYTES, SummarizerProbe, summarizer_checks
from pg_backup.manifest import ChainInfo, EncryptionInfo, Manifest, chain_root, dependents, missing_members
from pg_backup.physical.incremental import requested_mode
from pg_backup.postgres.summarizer import SummarizerState, first_gap

MB = 1 << 20


@pytest.mark.parametrize("configured,inc,full,expected", [
    ("never", False, False, "never"), ("auto", False, False, "auto"), ("always", False, False, "always"),
    ("never", True, False, "auto"), ("auto", True, False, "auto"), ("always", True, False, "always"),
    ("always", False, True, "never"), ("auto", False, True, "never")])
def test_requested_mode(configured, inc, full, expected):
    assert requested_mode(configured, incremental_flag=inc, full_flag=full) == expected


def test_incremental_and_full_together_are_a_usage_error():
    with pytest.raises(UsageError, match="contradict"):
        requested_mode("auto", incremental_flag=True, full_flag=True)


def test_first_gap_of_summaries():
    s = [(1, 100, 200), (1, 200, 350), (1, 400, 500)]
    assert first_gap(s, 100, 350) is None
    assert first_gap(s, 150, 300) is None
    assert first_gap(s, 50, 300) == (50, 100)            # before the oldest summary (removed, or summarize_wal was off)
    assert first_gap(s, 120, 450) == (350, 400)          # a hole in the middle
    assert first_gap(s, 120, 600) == (350, 400)
    assert first_gap(s[:2], 120, 600) == (350, 600)      # not summarized that far
    assert first_gap([], 10, 20) == (10, 20)
    assert first_gap([], 10, 10) is None                  # nothing to cover
    assert first_gap(list(reversed(s)), 100, 350) is None  # order does not matter


def _state(**kw):
    base = dict(server_major=18, enabled=True, timeline=1, summarized_tli=1, summarized_lsn=100 * MB,
                summarizer_pid=4242, current_lsn=100 * MB + 5)
    base.update(kw)
    return SummarizerState(**base)


def test_summarizer_checks():
    assert summarizer_checks(None) == []
    [ok] = summarizer_checks(SummarizerProbe("auto", _state()))
    assert ok["status"] == "ok" and ok["value"] == 5 and "pid 4242" in ok["message"]
    [off] = summarizer_checks(SummarizerProbe("auto", _state(enabled=False)))
    assert off["status"] == "warning" and "summarize_wal is off" in off["message"] and "full" in off["message"]
    [off_always] = summarizer_checks(SummarizerProbe("always", _state(enabled=False)))
    assert off_always["status"] == "critical" and "fails" in off_always["message"]
    [behind] = summarizer_checks(SummarizerProbe("auto", _state(current_lsn=100 * MB + BEHIND_WARNING_BYTES + 1)))
    assert behind["status"] == "warning" and "behind" in behind["message"]
    [dead] = summarizer_checks(SummarizerProbe("auto", _state(summarizer_pid=None)))
    assert dead["status"] == "critical" and "no WAL summarizer process" in dead["message"]
    [old] = summarizer_checks(SummarizerProbe("always", SummarizerState(server_major=15)))
    assert old["status"] == "critical" and "PostgreSQL 15" in old["message"]
    [unknown] = summarizer_checks(SummarizerProbe("auto", error="connection refused"))
    assert unknown["status"] == "unknown"
    [standby] = summarizer_checks(SummarizerProbe("auto", _state(in_recovery=True)))
    assert standby["status"] == "ok"


def _m(backup_id, members=None):
    chain = ChainInfo(members[-1], members[0], list(members), "0/1", len(members)) if members else None
    return Manifest(backup_id=backup_id, kind="physical", tier="daily", cluster="c", hostname="h", agent_version="x",
                    server_version="18.1", server_version_num=180001, system_identifier="1",
                    started_at=f"2026-01-0{len(members or []) + 1}T00:00:00.000000Z",
                    finished_at="2026-01-09T00:00:00.000000Z",
                    encryption=EncryptionInfo("openpgp", "passphrase", "AES256", "f"), compression={},
                    incremental=chain)


def test_chain_helpers():
    full, inc1, inc2 = _m("full"), _m("inc1", ["full"]), _m("inc2", ["full", "inc1"])
    assert chain_root(full) == "full" and chain_root(inc2) == "full"
    assert inc2.chain_ids() == ["full", "inc1", "inc2"] and inc2.schema_version == 2 and full.schema_version == 1
    assert dependents([full, inc1, inc2]) == {"full": ["inc1", "inc2"], "inc1": ["inc2"]}
    assert missing_members(inc2, {"inc1", "inc2"}) == ["full"] and missing_members(full, set()) == []
    again = Manifest.from_json(inc2.to_json())
    assert again.incremental == inc2.incremental


def test_size_check_compares_incremental_backups_with_incremental_ones():
    import dataclasses
    import datetime as dt

    from pg_backup.config import HealthSettings
    from pg_backup.health.checks import Probes, evaluate
    from pg_backup.manifest import StoredObject

    def sized(m, day, size):
        return dataclasses.replace(m, started_at=f"2026-01-{day:02d}T01:00:00.000000Z",
                                   objects=[StoredObject("base.tar.zst.gpg", "base", size, "0" * 64, size)])

    fulls = [sized(_m(f"full{d}"), d, 1000 * MB) for d in (1, 2, 3)]
    incs = [sized(_m(f"inc{d}", [f"full{d - 1}"]), d, 20 * MB) for d in (4, 5, 6)]
    now = dt.datetime(2026, 1, 6, 2, tzinfo=dt.timezone.utc)
    [size] = [c for c in evaluate(fulls + incs, HealthSettings(), Probes(), now) if c.name == "size_physical_daily"]
    assert size.status == "ok" and "previous 2" in size.message, size.message


def test_catalog_text_of_logical_full_and_incremental_backups():
    import dataclasses

    from pg_backup.commands.catalog import backup_type, chains, describe, human_duration

    logical = dataclasses.replace(_m("logical"), kind="logical")
    full, inc1, inc2 = _m("full"), _m("inc1", ["full"]), _m("inc2", ["full", "inc1"])
    assert [backup_type(m) for m in (logical, full, inc1, inc2)] == ["logical", "full", "incr 1", "incr 2"]
    assert human_duration(5) == "5s" and human_duration(125) == "2m05s" and human_duration(7260) == "2h01m"
    assert describe(logical, set())[0].startswith("backup logical: logical, tier daily")
    text = "\n".join(describe(inc2, {"inc1"}))
    assert "incremental to inc1, depth 2; a restore combines full + inc1 + inc2" in text
    assert "BROKEN chain: full not in the repository" in text
    [chain] = chains([logical, full, inc1, inc2])
    assert chain["root"] == "full" and chain["backups"] == ["full", "inc1", "inc2"] and chain["incremental"] == 2
    [broken] = chains([inc1, inc2])
    assert broken["missing"] == ["full"]


class _Ctx:
    """The little of a Context that ManifestCopy uses."""

    def __init__(self, state_dir):
        import types

        self.cluster = "main"
        self.settings = types.SimpleNamespace(backup_manifests_path=str(state_dir))
        self.warnings = []
        self.progress = types.SimpleNamespace(warn=self.warnings.append)


def test_manifest_copy_is_private_and_replaces_the_previous_one(tmp_path):
    import hashlib
    import io
    import os

    from pg_backup.physical.incremental import ManifestCopy

    ctx = _Ctx(tmp_path / "bm")
    for backup_id, content in (("b1", b"first manifest"), ("b2", b"second manifest" * 1000)):
        copy = ManifestCopy(ctx, backup_id, keep_copy=True)
        reader = copy.reader(io.BytesIO(content))
        while reader.read(100):
            pass
        assert copy.sha256 == hashlib.sha256(content).hexdigest()
        kept = copy.keep()
        copy.discard()
    assert sorted(os.listdir(tmp_path / "bm" / "main")) == ["b2.backup_manifest"]
    assert open(kept, "rb").read() == b"second manifest" * 1000
    assert os.stat(kept).st_mode & 0o077 == 0 and os.stat(tmp_path / "bm" / "main").st_mode & 0o077 == 0


def test_a_copy_that_cannot_be_written_does_not_fail_the_backup(tmp_path):
    import hashlib
    import io
    import os

    from pg_backup.physical.incremental import ManifestCopy

    ctx = _Ctx(tmp_path / "bm")
    copy = ManifestCopy(ctx, "b3", keep_copy=True)
    copy._fh.close()
    copy._fh = open("/dev/full", "wb", buffering=0)  # every write fails with ENOSPC, as a full disk does
    reader = copy.reader(io.BytesIO(b"x" * 5000))
    assert len(b"".join(iter(lambda: reader.read(1000), b""))) == 5000  # the stored stream is complete
    assert copy.sha256 == hashlib.sha256(b"x" * 5000).hexdigest()     # and its SHA-256 still recorded
    assert copy.keep() is None and ctx.warnings and "No space left" in ctx.warnings[0]
    assert os.listdir(tmp_path / "bm" / "main") == []


def test_the_checkpoint_wait_is_announced():
    from pg_backup.physical.backup import checkpoint_wait

    assert checkpoint_wait("fast", "5min", "0.9") == "waiting for the server's fast checkpoint"
    spread = checkpoint_wait("spread", "15min", "0.9")
    assert "checkpoint_timeout 15min x checkpoint_completion_target 0.9" in spread and "fast starts at once" in spread
