"""Point-in-time recovery and physical backup logic without a server: targets, recovery settings,
the data directory and tablespace rules, the base backup stream's message handling, and the
recoverable window and backup choice over a real local repository with hand-made WAL objects."""
from __future__ import annotations

import datetime as dt
import os
from typing import List, Optional

import pytest

from pg_backup import config
from pg_backup.context import Context
from pg_backup.errors import ArchivingError, NotFoundError, PostgresError, RefusedError, UsageError
from pg_backup.manifest import EncryptionInfo, Manifest, StoredObject, iso
from pg_backup.physical.archiving import check_archiving_configured
from pg_backup.physical.backup import check_max_rate
from pg_backup.physical.layout import BASE_OBJECT
from pg_backup.physical.stream import BaseBackupStream
from pg_backup.recovery.datadir import (make_tablespace_dirs, parse_tablespace_map, plan_tablespaces, prepare_data_dir,
                                        rewrite_tablespace_map)
from pg_backup.recovery.settings import BLOCK_BEGIN, conf_quote, server_overrides, write_auto_conf
from pg_backup.recovery.targets import (RecoveryTarget, consistent_target, latest_target, lsn_target, name_target,
                                        parse_target_time, target_from_options, time_target, xid_target)
from pg_backup.recovery.window import Catalog, OutsideWindow, choose_backup, recoverable_window
from pg_backup.retention import BackupRef, plan, pitr_window_base
from pg_backup.storage.base import PutOptions
from pg_backup.wal import names

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SEG = 16 << 20


# -- targets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2026-11-25T14:03:00Z", dt.datetime(2026, 11, 25, 14, 3, tzinfo=UTC)),
    ("2026-11-25 14:03:00+00", dt.datetime(2026, 11, 25, 14, 3, tzinfo=UTC)),
    ("2026-11-25T15:03:00.250+01:00", dt.datetime(2026, 11, 25, 14, 3, 0, 250000, tzinfo=UTC)),
    ("2026-11-25T09:03-0500", dt.datetime(2026, 11, 25, 14, 3, tzinfo=UTC)),
    ("2026-11-25T14:03:00.123456789Z", dt.datetime(2026, 11, 25, 14, 3, 0, 123456, tzinfo=UTC)),
])
def test_target_times_need_and_keep_their_zone(text, expected):
    assert parse_target_time(text) == expected
    assert time_target(text).value == expected.strftime("%Y-%m-%d %H:%M:%S.%f+00")


@pytest.mark.parametrize("text, words", [("2026-11-25 14:03:00", "no time zone"), ("yesterday", "ISO 8601"),
                                         ("2026-13-01T00:00:00Z", "month must be")])
def test_bad_target_times_are_usage_errors(text, words):
    with pytest.raises(UsageError, match=words):
        parse_target_time(text)


def test_each_target_kind_writes_exactly_one_recovery_target():
    cases = {
        time_target("2026-11-25T14:03:00Z"): {"recovery_target_time": "2026-11-25 14:03:00.000000+00",
                                              "recovery_target_inclusive": "on"},
        lsn_target("0/3000060", inclusive=False): {"recovery_target_lsn": "0/3000060",
                                                   "recovery_target_inclusive": "off"},
        xid_target("1234"): {"recovery_target_xid": "1234", "recovery_target_inclusive": "on"},
        name_target("before-upgrade"): {"recovery_target_name": "before-upgrade"},
        consistent_target(): {"recovery_target": "immediate"},
        latest_target(): {},
    }
    for target, expected in cases.items():
        assert target.settings() == expected
        assert len([k for k in target.settings() if k != "recovery_target_inclusive"]) <= 1
        assert target.describe()


@pytest.mark.parametrize("make, value", [(lsn_target, "3000060"), (lsn_target, "0/XYZ"),
                                         (xid_target, "abc"), (xid_target, "2"),
                                         (name_target, ""), (name_target, "x" * 64)])
def test_malformed_targets_are_refused(make, value):
    with pytest.raises(UsageError):
        make(value)


def _options(args) -> dict:
    return {k: getattr(args, k) for k in ("latest", "target_time", "target_lsn", "target_xid", "target_name",
                                          "exclusive")}


def test_target_from_cli_arguments():
    class Args:
        target_time = target_lsn = target_xid = target_name = None
        latest = False
        exclusive = False

    a = Args()
    a.latest = True
    assert target_from_options(**_options(a)).kind == "latest"
    a.exclusive = True
    with pytest.raises(UsageError, match="--exclusive"):
        target_from_options(**_options(a))
    b = Args()
    b.target_xid, b.exclusive = "900", True
    assert target_from_options(**_options(b)) == RecoveryTarget("xid", "900", False)
    assert parse_tablespace_map(["/old=/new", "fast=/x/y"]) == {"/old": "/new", "fast": "/x/y"}
    with pytest.raises(UsageError, match="OLD=NEW"):
        parse_tablespace_map(["/old=relative"])


def test_wal_range_uses_the_segment_before_the_stop_point():
    start, stop = names.wal_range(0x2000028, 1, 0x3000000, 1, SEG)
    assert (start, stop) == ("000000010000000000000002", "000000010000000000000002")  # stop on a boundary
    assert names.wal_range(0x2000028, 1, 0x3000100, 1, SEG)[1] == "000000010000000000000003"
    assert names.wal_range(0x1FF000028, 3, 0x200000100, 3, SEG) == ("0000000300000001000000FF",
                                                                     "000000030000000200000000")
    assert names.parse_lsn_arg("1/FF000028") == 0x1FF000028
    with pytest.raises(UsageError):
        names.parse_lsn_arg("nope")


def test_max_rate_outside_what_the_server_accepts_is_refused():
    assert check_max_rate(0) == 0 and check_max_rate(32) == 32
    with pytest.raises(UsageError, match="32"):
        check_max_rate(16)


def test_archiving_must_be_configured_before_a_physical_backup():
    with pytest.raises(ArchivingError, match="archive_mode = off") as off:
        check_archiving_configured({"archive_mode": "off", "archive_command": "x", "archive_library": ""})
    assert off.value.exit_code == 6
    with pytest.raises(ArchivingError, match="archive_command is empty"):
        check_archiving_configured({"archive_mode": "on", "archive_command": " ", "archive_library": ""})
    check_archiving_configured({"archive_mode": "on", "archive_command": "", "archive_library": "x"})


# -- recovery settings and files ----------------------------------------------------------------

def test_auto_conf_block_is_replaced_and_the_rest_kept(tmp_path):
    path = tmp_path / "postgresql.auto.conf"
    path.write_text("# Do not edit this file manually!\narchive_command = 'push %p'\n")
    write_auto_conf(str(tmp_path), {"restore_command": "fetch '%f' %p", "port": "5433"}, "first")
    write_auto_conf(str(tmp_path), {"archive_mode": "off"}, "second")
    text = path.read_text()
    assert text.startswith("# Do not edit this file manually!\narchive_command = 'push %p'\n")
    assert "restore_command" not in text and "first" not in text
    assert text.count(BLOCK_BEGIN) == 1 and "archive_mode = 'off'" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert conf_quote("it's \\ here") == "'it''s \\\\ here'"


def test_scratch_overrides_turn_archiving_off_and_bind_loopback():
    scratch = server_overrides(port=55432, socket_dir="/tmp/s", archiving=False)
    assert scratch == {"port": "55432", "listen_addresses": "127.0.0.1", "unix_socket_directories": "/tmp/s",
                       "archive_mode": "off", "archive_command": "", "synchronous_standby_names": ""}
    assert server_overrides(port=None, socket_dir=None, archiving=True) == {}


def test_data_dir_is_created_private_or_moved_aside_never_deleted(tmp_path):
    fresh = tmp_path / "fresh" / "data"
    assert prepare_data_dir(str(fresh), "S") is None
    assert oct(fresh.stat().st_mode & 0o777) == "0o700" and list(fresh.iterdir()) == []

    used = tmp_path / "used"
    used.mkdir()
    (used / "PG_VERSION").write_text("15\n")
    (used / "postmaster.pid").write_text("999999999\n")  # a stale pid file: no such process
    moved = prepare_data_dir(str(used), "20261125T000000Z")
    assert moved == f"{used}.pitr-20261125T000000Z" and (tmp_path / moved / "PG_VERSION").read_text() == "15\n"
    assert list(used.iterdir()) == []
    (used / "again").write_text("x")
    assert prepare_data_dir(str(used), "20261125T000000Z") == f"{used}.pitr-20261125T000000Z-1"

    running = tmp_path / "running"
    running.mkdir()
    (running / "postmaster.pid").write_text(f"{os.getpid()}\n{running}\n")
    with pytest.raises(RefusedError, match="is running in"):
        prepare_data_dir(str(running), "S")
    assert (running / "postmaster.pid").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RefusedError, match="not a directory"):
        prepare_data_dir(str(tmp_path / "afile"), "S")


def _manifest(backup_id: str, *, kind: str = "physical", stop: Optional[dt.datetime] = None, start_wal: str = "",
              stop_wal: str = "", stop_lsn: str = "", next_xid: Optional[int] = None, tablespaces=None) -> Manifest:
    stop = stop or T0
    return Manifest(backup_id=backup_id, kind=kind, tier="daily", cluster="c", hostname="h", agent_version="t",
                    server_version="15.8", server_version_num=150008, system_identifier="1",
                    started_at=iso(stop - dt.timedelta(seconds=30)), finished_at=iso(stop),
                    encryption=EncryptionInfo("openpgp", "passphrase", "AES256", "scrypt:x"),
                    compression={"algorithm": "zstd", "level": 1},
                    objects=[StoredObject(BASE_OBJECT, "base", 1, "0" * 64, 1)],
                    timeline=1 if kind == "physical" else None, start_lsn=None, stop_lsn=stop_lsn or None,
                    start_wal=start_wal or None, stop_wal=stop_wal or None,
                    wal_segment_size=SEG if kind == "physical" else None, tablespaces=tablespaces or [],
                    stop_time=iso(stop) if kind == "physical" else None, next_xid=next_xid)


def test_tablespaces_go_to_free_original_locations_else_inside_the_data_dir(tmp_path):
    free, busy = tmp_path / "free", tmp_path / "busy"
    (busy / "PG_15_202209061").mkdir(parents=True)
    (busy / "PG_16_202307071").mkdir()
    m = _manifest("b", tablespaces=[{"oid": 16400, "name": "a", "location": str(free), "object": "tablespace-16400"},
                                    {"oid": 16401, "name": "b", "location": str(busy), "object": "tablespace-16401"}])
    data = tmp_path / "data"
    notes: List[str] = []
    planned = plan_tablespaces(m, str(data), None, notes)
    assert [p["restored_to"] for p in planned] == [str(free), str(data / "pg_tblspc_restored" / "16401")]
    assert len(notes) == 1 and "is in use" in notes[0] and f"--tablespace-map {busy}=NEW" in notes[0]
    assert not free.exists()  # planning creates nothing
    make_tablespace_dirs(planned)
    assert oct(free.stat().st_mode & 0o777) == "0o700"

    mapped = plan_tablespaces(m, str(data), {"b": str(tmp_path / "new-b"), "16400": str(tmp_path / "new-a")}, [])
    assert [p["restored_to"] for p in mapped] == [str(tmp_path / "new-a"), str(tmp_path / "new-b")]
    with pytest.raises(UsageError, match="has no tablespace for"):
        plan_tablespaces(m, str(data), {"/nowhere": "/x"}, [])
    with pytest.raises(RefusedError, match="is not empty"):
        plan_tablespaces(m, str(data), {"a": str(busy)}, [])


def test_tablespace_map_is_rewritten_with_the_restored_locations(tmp_path):
    (tmp_path / "tablespace_map").write_text("16400 /old/a\n16401 /old/b\n")
    planned = [{"oid": 16400, "restored_to": "/new/a"}, {"oid": 16401, "restored_to": "/new b"}]
    rewrite_tablespace_map(str(tmp_path), planned)
    assert (tmp_path / "tablespace_map").read_text() == "16400 /new/a\n16401 /new b\n"
    with pytest.raises(Exception, match="tablespace_map"):
        rewrite_tablespace_map(str(tmp_path), planned[:1])


# -- the base backup stream -------------------------------------------------------------------

def _stream(messages: List[bytes]) -> BaseBackupStream:
    s = object.__new__(BaseBackupStream)
    s.where, s._pending, s._in_archive, s._copy_done = "test", None, False, False
    queue = [memoryview(m) for m in messages]

    def message():
        if s._pending is not None:
            msg, s._pending = s._pending, None
            return msg
        return queue.pop(0) if queue else None
    s._message = message  # type: ignore[assignment]
    return s


def test_stream_splits_archives_and_skips_progress_messages():
    s = _stream([b"n16400.tar\x00/ts/a\x00", b"dAAA", b"p\x00" * 4, b"dBB", b"nbase.tar\x00\x00", b"dCCCC",
                 b"m", b"d{}"])
    assert s.next_archive() == ("16400.tar", "/ts/a")
    assert s.read(2) == b"AAA" and s.read(100) == b"BB" and s.read(100) == b""
    assert s.next_archive() == ("base.tar", None)
    assert s.read(1 << 20) == b"CCCC" and s.read() == b""
    assert s.next_archive() == ("backup_manifest", None)
    assert s.read() == b"{}" and s.read() == b""
    assert s.next_archive() is None


@pytest.mark.parametrize("messages, words", [([b"dXX"], "outside an archive"), ([b"n../x.tar\x00\x00"], "expected base.tar"),
                                             ([b"nbase.tar\x00\x00", b"zQ"], "unknown message")])
def test_stream_refuses_what_it_does_not_understand(messages, words):
    s = _stream(messages)
    with pytest.raises(PostgresError, match=words):
        s.next_archive()
        s.read()


# -- window and choice over a real local repository --------------------------------------------

@pytest.fixture
def repo_ctx(tmp_path):
    (tmp_path / "pass").write_text("secret\n")
    os.chmod(tmp_path / "pass", 0o600)
    settings, problems = config.parse({"cluster": "c", "repository": {"type": "local", "path": str(tmp_path / "r")},
                                       "encryption": {"mode": "passphrase", "passphrase_file": str(tmp_path / "pass")},
                                       "paths": {"state_dir": str(tmp_path / "state")}})
    assert not problems
    ctx = Context(settings)
    yield ctx
    ctx.close()


def _archive(ctx, segments):
    """WAL objects by name with their modification time (minutes after T0)."""
    archive = ctx.wal_archive
    for name, minutes in segments.items():
        key = archive.key_for(name)
        ctx.storage.put_bytes(key, b"x", PutOptions())
        when = (T0 + dt.timedelta(minutes=minutes)).timestamp()
        os.utime(os.path.join(ctx.storage.root, *key.split("/")), (when, when))


def _seg(n: int) -> str:
    return f"00000001000000000000000{n:X}"


def _two_backups_and_a_gap(ctx):
    a = _manifest("A", stop=T0 + dt.timedelta(minutes=1), start_wal=_seg(2), stop_wal=_seg(2), stop_lsn="0/2000100",
                  next_xid=100)
    b = _manifest("B", stop=T0 + dt.timedelta(minutes=10), start_wal=_seg(6), stop_wal=_seg(6),
                  stop_lsn="0/6000100", next_xid=200)
    logical = _manifest("L", kind="logical", stop=T0 + dt.timedelta(minutes=11))
    for m in (a, b, logical):
        ctx.repo.commit_manifest(m, PutOptions())
    _archive(ctx, {_seg(2): 2, _seg(3): 3, _seg(4): 4, _seg(6): 11, _seg(7): 12})  # segment 5 is lost


def test_window_starts_after_the_last_gap_and_lists_the_earlier_stretch(repo_ctx):
    _two_backups_and_a_gap(repo_ctx)
    w = recoverable_window(repo_ctx)
    assert (w.start_backup_id, w.start_lsn, w.end_lsn, w.end_segment) == ("B", "0/6000100", "0/8000000", _seg(7))
    assert w.start_time == iso(T0 + dt.timedelta(minutes=10)) and w.end_time == iso(T0 + dt.timedelta(minutes=12))
    assert w.gaps == [_seg(5)] and w.timelines == [1] and w.backups == 2
    assert w.earlier == [{"start_time": iso(T0 + dt.timedelta(minutes=1)), "start_lsn": "0/2000100",
                          "end_time": iso(T0 + dt.timedelta(minutes=4)), "end_lsn": "0/5000000", "backup_id": "A"}]
    assert "also" in w.describe() and _seg(5) in w.describe()


@pytest.mark.parametrize("target, chosen", [
    (time_target(T0 + dt.timedelta(minutes=3)), "A"),
    (time_target(T0 + dt.timedelta(minutes=11, seconds=30)), "B"),
    (lsn_target("0/3000000"), "A"),
    (lsn_target("0/7000000"), "B"),
    (xid_target(150), "A"),
    (xid_target(250), "B"),
    (xid_target(50), "A"),            # assigned before every backup ended: the oldest
    (name_target("x"), "B"),
    (latest_target(), "B"),
])
def test_the_newest_backup_that_ended_before_the_target_is_chosen(repo_ctx, target, chosen):
    _two_backups_and_a_gap(repo_ctx)
    manifest, _notes = choose_backup(Catalog(repo_ctx), target)
    assert manifest.backup_id == chosen


@pytest.mark.parametrize("target, words", [
    (time_target(T0), "before the end of the oldest base backup"),
    (time_target(T0 + dt.timedelta(minutes=5)), "after the newest archived WAL reachable from A"),
    (time_target(T0 + dt.timedelta(hours=1)), "after the newest archived WAL reachable from B"),
    (lsn_target("0/5800000"), "reachable from A"),
    (lsn_target("0/9000000"), "reachable from B"),
])
def test_targets_outside_the_window_name_it(repo_ctx, target, words):
    _two_backups_and_a_gap(repo_ctx)
    with pytest.raises(OutsideWindow, match=words) as err:
        choose_backup(Catalog(repo_ctx), target)
    assert err.value.exit_code == 7 and "0/6000100" in str(err.value) and err.value.window.start_backup_id == "B"


def test_named_backup_must_be_physical_and_recoverable(repo_ctx):
    _two_backups_and_a_gap(repo_ctx)
    catalog = Catalog(repo_ctx)
    with pytest.raises(UsageError, match="is a logical backup"):
        choose_backup(catalog, latest_target(), "L")
    assert choose_backup(catalog, latest_target(), "A")[0].backup_id == "A"
    with pytest.raises(OutsideWindow, match="before the end of A"):
        choose_backup(catalog, time_target(T0), "A")
    with pytest.raises(NotFoundError):
        choose_backup(catalog, latest_target(), "nope")


def test_a_backup_without_its_wal_is_skipped(repo_ctx):
    m = _manifest("C", stop=T0 + dt.timedelta(minutes=20), start_wal=_seg(9), stop_wal=_seg(9), stop_lsn="0/9000100")
    _two_backups_and_a_gap(repo_ctx)
    repo_ctx.repo.commit_manifest(m, PutOptions())
    manifest, notes = choose_backup(Catalog(repo_ctx), latest_target())
    assert manifest.backup_id == "B" and any("C: its WAL" in n for n in notes)
    assert recoverable_window(repo_ctx).newest_backup_id == "C"


def test_no_physical_backup_no_window(repo_ctx):
    repo_ctx.repo.commit_manifest(_manifest("L", kind="logical"), PutOptions())
    assert recoverable_window(repo_ctx) is None
    with pytest.raises(NotFoundError, match="no physical base backup"):
        choose_backup(Catalog(repo_ctx), latest_target())


# -- retention -----------------------------------------------------------------------------------

def test_retention_keeps_the_backup_the_pitr_window_starts_from():
    settings = config.RetentionSettings(daily_days=1, wal_hours=72)
    now = T0
    refs = [BackupRef(f"p{d}", "physical", "daily", now - dt.timedelta(days=d)) for d in (5, 4, 3.5, 2, 0.5)]
    refs.append(BackupRef("l4", "logical", "daily", now - dt.timedelta(days=4)))
    assert pitr_window_base(refs, settings, now) == "p3.5"
    result = plan(refs, settings, now)
    assert "p3.5" in result.keep and "base of the point-in-time recovery window" in result.keep["p3.5"]
    assert {"p5", "p4", "p2"} <= set(result.delete) and "p0.5" in result.keep
    assert "l4" in result.keep  # the newest logical daily backup (its own kind)
