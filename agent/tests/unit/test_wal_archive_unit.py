"""The WAL archive's pure parts: names, positions, timelines, gaps and the retention plan.

The archive runs on a real LocalStorage in a temporary directory (metadata included); no PostgreSQL.
"""
from __future__ import annotations

import datetime as dt

import pytest

from pg_backup.storage.base import PutOptions
from pg_backup.repository import Repository
from pg_backup.storage.local import LocalStorage
from pg_backup.wal.archive import (META_HISTORY, PhysicalRef, WalArchive, decode_history_meta, encode_history_meta,
                                   parse_history, plan_wal_retention)
from pg_backup.wal.names import (WalNameError, lsn_to_segment, name_of_object, next_segment, object_name, parse_lsn,
                                 parse_wal_name, segment_name)

MIB = 1 << 20
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def test_parse_every_kind_of_name():
    seg = parse_wal_name("000000020000000A000000FF")
    assert (seg.kind, seg.timeline, seg.log, seg.seg, seg.segno()) == ("segment", 2, 10, 255, 10 * 256 + 255)
    assert parse_wal_name("000000010000000000000003.partial").kind == "partial"
    backup = parse_wal_name("000000010000000000000002.00000028.backup")
    assert (backup.kind, backup.offset, backup.segment) == ("backup", 0x28, "000000010000000000000002")
    hist = parse_wal_name("0000000A.history")
    assert (hist.kind, hist.timeline, hist.segno()) == ("history", 10, None)
    for bad in ("00000001000000000000000", "000000010000000000000003.tmp", "RECOVERYXLOG", "0000000a.history",
                "../000000010000000000000001", "000000010000000000000001.00000028.backup.x"):
        with pytest.raises(WalNameError):
            parse_wal_name(bad)


@pytest.mark.parametrize("size,last_seg", [(16 * MIB, 0xFF), (MIB, 0xFFF), (64 * MIB, 0x3F), (1024 * MIB, 3)])
def test_segment_arithmetic_for_any_segment_size(size, last_seg):
    per_log = 0x100000000 // size
    assert per_log - 1 == last_seg
    end_of_log = segment_name(1, per_log - 1, size)
    assert end_of_log == f"00000001000000000000{last_seg:04X}"
    assert next_segment(end_of_log, size) == "000000010000000100000000"
    assert parse_wal_name(next_segment(end_of_log, size)).segno(size) == per_log
    assert lsn_to_segment("1/0", 3, size) == "000000030000000100000000"
    assert lsn_to_segment(f"0/{size - 1:X}", 1, size) == "000000010000000000000000"
    assert lsn_to_segment(f"0/{size:X}", 1, size) == "000000010000000000000001"


def test_segment_size_must_be_a_power_of_two_in_range():
    with pytest.raises(ValueError):
        segment_name(1, 1, 3 * MIB)
    with pytest.raises(ValueError):
        segment_name(1, 1, 2 << 30)


def test_history_files_and_their_metadata():
    text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000060\tat restore point \"x\"\n"
    entries = parse_history(text)
    assert entries == [(1, 0x3000000), (2, 0x5000060)]
    encoded = encode_history_meta(entries)
    assert encoded == "1@0/3000000;2@0/5000060"
    assert decode_history_meta(encoded) == (entries, True)
    many = [(i, i * 0x1000000) for i in range(1, 400)]
    short = encode_history_meta(many, limit=200)
    assert short.startswith("~") and len(short) <= 200
    back, complete = decode_history_meta(short)
    assert not complete and back == many[-len(back):]
    with pytest.raises(ValueError):
        parse_history("garbage")
    assert parse_lsn("A/1F") == (0xA << 32) | 0x1F


def test_the_repository_names_every_wal_object():
    repo = Repository(LocalStorage("/nonexistent"), "c")
    assert repo.wal_key("000000010000000000000003") == "c/wal/00000001/000000010000000000000003.zst.gpg"
    assert repo.wal_identity_key == "c/wal/archive.json" and repo.wal_conflicts_prefix == "c/wal/conflicts/"
    for name in ("000000020000000A000000FF.partial", "0000000A.history", "000000010000000000000002.00000028.backup"):
        assert name_of_object(object_name(name)) == name
    assert name_of_object("00000001/000000020000000000000003.zst.gpg") is None     # another timeline's directory
    assert name_of_object("00000001/x/000000010000000000000003.zst.gpg") is None
    with pytest.raises(WalNameError):
        repo.wal_key("../000000010000000000000001")


# -- an archive in a temporary directory --------------------------------------------------------------

def put(storage: LocalStorage, archive: WalArchive, name: str, meta=None) -> None:
    storage.put_bytes(archive.key_for(name), b"x", PutOptions(metadata=meta or {}), overwrite=False)


def seg(tli: int, segno: int, size: int = 16 * MIB) -> str:
    return segment_name(tli, segno, size)


@pytest.fixture
def archive(tmp_path):
    storage = LocalStorage(str(tmp_path))
    return WalArchive(Repository(storage, "c"))


def test_entries_are_sorted_and_ignore_what_is_not_wal(archive):
    s = archive.storage
    for name in (seg(1, 3), seg(1, 1), "00000002.history", seg(2, 4), seg(1, 2) + ".00000028.backup",
                 seg(1, 4) + ".partial"):
        put(s, archive, name)
    s.put_bytes("c/wal/archive.json", b"{}")
    s.put_bytes("c/wal/conflicts/x.json", b"{}")
    s.put_bytes("c/wal/00000001/junk.txt", b"")
    names = [e.name for e in archive.entries()]
    assert names == ["00000002.history", seg(1, 1), seg(1, 2) + ".00000028.backup", seg(1, 3),
                     seg(1, 4) + ".partial", seg(2, 4)]
    assert [e.kind for e in archive.entries(timeline=2)] == ["history", "segment"]
    assert archive.newest_segment().name == seg(2, 4)
    assert archive.has(seg(1, 3)) and not archive.has(seg(1, 5))
    assert archive.key_for("00000002.history") == "c/wal/00000002/00000002.history.zst.gpg"


def test_gaps_on_one_timeline(archive):
    for n in (1, 2, 5, 6, 9):
        put(archive.storage, archive, seg(1, n))
    assert archive.gaps() == [(seg(1, 3), seg(1, 4)), (seg(1, 7), seg(1, 8))]
    assert archive.gaps(seg(1, 5)) == [(seg(1, 7), seg(1, 8))]
    assert archive.gaps(seg(1, 0)) == [(seg(1, 0), seg(1, 0)), (seg(1, 3), seg(1, 4)), (seg(1, 7), seg(1, 8))]


def test_gaps_follow_timeline_switches_through_history_metadata(archive):
    s = archive.storage
    # Timeline 1 up to segment 5 (switch at 0/5800000, inside segment 5), timeline 2 from 5 to 8
    # (switch at 0/9000000, exactly at the start of segment 9), timeline 3 from 9.
    for n in range(2, 6):
        put(s, archive, seg(1, n))
    put(s, archive, seg(1, 5) + ".partial")
    put(s, archive, seg(1, 6))            # timeline 1 went on after the fork: not on the path
    put(s, archive, "00000002.history", {META_HISTORY: "1@0/5800000"})
    for n in (5, 6, 8):
        put(s, archive, seg(2, n))
    put(s, archive, "00000003.history", {META_HISTORY: "1@0/5800000;2@0/9000000"})
    for n in (9, 10):
        put(s, archive, seg(3, n))
    assert archive.timeline_history(3) == ([(1, 0x5800000), (2, 0x9000000)], True)
    # Timeline 1 is needed up to segment 4 (5 is read from timeline 2), timeline 2 from 5 to 8.
    assert archive.gaps(seg(1, 2)) == [(seg(2, 7), seg(2, 7))]
    assert archive.gaps() == [(seg(2, 7), seg(2, 7))]
    assert archive.gaps(seg(2, 8)) == []
    put(s, archive, seg(2, 7))
    assert archive.gaps(seg(1, 2)) == []
    archive.storage.delete([archive.key_for(seg(1, 3))])
    assert archive.gaps(seg(1, 2)) == [(seg(1, 3), seg(1, 3))]


def test_gaps_without_history_metadata_check_each_timeline_alone(archive):
    s = archive.storage
    for n in (1, 3):
        put(s, archive, seg(1, n))
    put(s, archive, "00000002.history")   # no metadata: ancestry unknown
    for n in (3, 5):
        put(s, archive, seg(2, n))
    assert archive.gaps() == [(seg(1, 2), seg(1, 2)), (seg(2, 4), seg(2, 4))]


def test_gaps_with_other_segment_sizes(archive):
    size = MIB
    for n in (0xFFE, 0xFFF, 0x1001):
        put(archive.storage, archive, segment_name(1, n, size))
    assert archive.gaps(segment_size=size) == [("000000010000000100000000", "000000010000000100000000")]


# -- retention ---------------------------------------------------------------------------------------

def entries_for(archive, names):
    for n in names:
        put(archive.storage, archive, n)
    return archive.entries()


def ref(bid: str, hours_ago: float, start: int, stop: int, tli: int = 1) -> PhysicalRef:
    return PhysicalRef(bid, NOW - dt.timedelta(hours=hours_ago), tli, seg(tli, start), seg(tli, stop))


def test_no_physical_backup_deletes_no_wal(archive):
    entries = entries_for(archive, [seg(1, n) for n in range(1, 6)])
    plan = plan_wal_retention(entries, [], 24, NOW)
    assert plan.delete == [] and plan.keep == 5 and "no physical backup" in plan.reason


def test_wal_before_the_anchor_goes_and_every_retained_backup_keeps_its_range(archive):
    names = [seg(1, n) for n in range(1, 40)] + ["00000002.history", seg(1, 20) + ".00000028.backup",
                                                 seg(1, 5) + ".00000060.backup"]
    entries = entries_for(archive, names)
    backups = [ref("monthly", 24 * 60, 5, 6),     # an old monthly base backup: only its own range stays
               ref("daily-2", 30, 20, 21),       # newest before the 24 h window: the anchor
               ref("daily-1", 2, 30, 31)]
    plan = plan_wal_retention(entries, backups, 24, NOW)
    gone = {e.name for e in plan.delete}
    assert plan.anchor == "daily-2" and plan.keep_from == seg(1, 20)
    assert gone == {seg(1, n) for n in range(1, 20) if n not in (5, 6)}
    assert seg(1, 5) + ".00000060.backup" not in gone and "00000002.history" not in gone
    assert plan.keep == len(entries) - len(gone)


def test_without_a_backup_before_the_window_the_oldest_retained_one_anchors(archive):
    entries = entries_for(archive, [seg(1, n) for n in range(1, 12)])
    plan = plan_wal_retention(entries, [ref("b", 3, 7, 8), ref("a", 5, 4, 5)], 24, NOW)
    assert plan.anchor == "a" and {e.name for e in plan.delete} == {seg(1, n) for n in range(1, 4)}


def test_later_timelines_are_kept_from_the_anchor_position(archive):
    names = [seg(1, n) for n in range(1, 10)] + [seg(2, n) for n in range(2, 12)]
    entries = entries_for(archive, names)
    plan = plan_wal_retention(entries, [ref("a", 30, 6, 7)], 24, NOW)
    gone = {e.name for e in plan.delete}
    assert gone == {seg(1, n) for n in range(1, 6)} | {seg(2, n) for n in range(2, 6)}


def test_a_backup_without_wal_positions_keeps_everything(archive):
    entries = entries_for(archive, [seg(1, n) for n in range(1, 4)])
    bad = PhysicalRef("x", NOW - dt.timedelta(days=3), None, None, None)
    plan = plan_wal_retention(entries, [bad, ref("a", 30, 2, 2)], 24, NOW)
    assert plan.delete == [] and "x" in plan.reason
