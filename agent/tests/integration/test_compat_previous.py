"""The current agent against the previous one: same CLI, same documents, and it reads (and extends)
a repository the previous version wrote.

The previous version is built from git history (``PREVIOUS_VERSION_COMMIT``), not checked in: its
``agent/src`` runs with this venv's interpreter through a small wrapper. One PostgreSQL 15 cluster
archives its WAL through the *previous* agent's ``wal-push``; the previous agent takes a logical
backup (two databases), a physical base backup and a restore verification into a local repository,
then the current agent must
- print ``list`` and ``show`` that extend the previous ones (text and JSON, same fixed clock: every
  key, value and word the previous version printed is still there; see ``assert_compatible``),
- verify every old backup, restore the old logical backup exactly, recover the old physical backup
  plus old WAL to a named restore point exactly, evaluate health from the old records,
- keep archiving into the old archive (same identity, read from the old ``archive.json``);
and the CLI surface (every ``--help``, ``--version``, ``exit-codes``, ``config reference``, usage,
configuration and not-found errors) must keep every command, option, key and message with the same
exit code. The restructuring (issue 9) kept all of it byte for byte; later releases only add (new
commands, options, JSON keys, list columns), and a value that changes on purpose is named in
``CHANGED`` below with the reason.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from conftest import AgentRunner, ClusterFactory, PgCluster, S3Bucket, WorkDir, free_port, give_to_pg_user, \
    make_pg_dir, write_config, write_pg_file
from pgb_compat_support import assert_compatible, build_previous_agent, subcommands
from pgb_pitr_support import connect, remove_tree, scratch_dir, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration


def _old_config(*args, **kwargs):
    """write_config for the previous agent too, which does not know physical.archive_part_mib."""
    kwargs["physical"] = dict(kwargs.get("physical") or {}, archive_part_mib=None)
    return write_config(*args, **kwargs)

# The last commit before the issue-9 restructuring (the agent's upper half moved into packages):
# everything the restructured agent prints and stores must match what this version prints and stores.
PREVIOUS_VERSION_COMMIT = "c32f2f15651c36132f0fd951190ff42ffaa67e24"

# JSON paths (regular expressions) whose value changed on purpose since that version, and why.
CHANGED: Tuple[str, ...] = (
    # Issue 12: S3 retries are quick inside the client; outages are ridden out by time
    # (repository.s3.outage_tolerance_seconds), not by ten attempts.
    r"\$\.options\[path='repository\.s3\.max_attempts'\]\.(default|doc)",
    # Issue 12: the CA bundle is PEM (a private CA), no longer "a file".
    r"\$\.options\[path='repository\.s3\.ca_bundle'\]\.doc",
)
# The text of ``config reference`` is the JSON reference rendered: compared there, path by path.
TEXT_REFERENCE_CHANGED = CHANGED + ("stdout",)

RESTORE_POINT = "compat-after-backups"
ORDERS = "SELECT id, item, qty, note FROM orders ORDER BY id"
CONTACTS = "SELECT id, name, email FROM contacts ORDER BY id"


@pytest.fixture(scope="session")
def previous_agent(pg_test_base) -> Path:
    return build_previous_agent(PREVIOUS_VERSION_COMMIT, pg_test_base / "previous-agent")


def rows(port: int, dbname: str, query: str) -> List[Tuple[Any, ...]]:
    with connect(port, dbname) as conn:
        return conn.execute(query).fetchall()


@dataclass
class OldRepo:
    cluster: PgCluster
    work: WorkDir
    cfg: str
    old: AgentRunner
    new: AgentRunner
    old_agent: Path
    logical_id: str
    physical_id: str
    at_backup: Dict[str, List[Tuple[Any, ...]]]      # rows of the logical backup
    at_restore_point: List[Tuple[Any, ...]]          # orders at RESTORE_POINT
    clock: str                                       # PG_BACKUP_TEST_NOW for output comparisons
    dirs: List[str] = field(default_factory=list)

    def both(self, *args: Any, cfg: str = "", json: bool = True, env: Optional[Dict[str, str]] = None):
        """The same command through the previous and the current agent (previous first)."""
        kwargs = dict(check=False, json=json, env=env, timeout=300)
        return (self.old(cfg or self.cfg, *args, **kwargs), self.new(cfg or self.cfg, *args, **kwargs))


@pytest.fixture(scope="module")
def old_repo(pg_test_base, previous_agent):
    factory = ClusterFactory(pg_test_base)
    out_dir = make_pg_dir(pg_test_base / "agent-output", 0o700)
    tmp_dir = make_pg_dir(pg_test_base / "agent-tmp", 0o700)
    old, new = AgentRunner(out_dir, tmp_dir, previous_agent), AgentRunner(out_dir, tmp_dir)
    make_pg_dir(pg_test_base / "work", 0o700)
    work = WorkDir(tempfile.mkdtemp(prefix="compat-", dir=pg_test_base / "work"))
    give_to_pg_user(work, 0o700)
    try:
        yield from _old_repository(factory, work, old, new, previous_agent)
    finally:
        old.cleanup()
        new.cleanup()
        factory.cleanup()


def _old_repository(factory: ClusterFactory, work: WorkDir, old: AgentRunner, new: AgentRunner,
                    previous_agent: Path):
    """The previous agent archives, backs up and verifies; yields the OldRepo, stops pitr servers after."""
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    # No resident uploader: every segment is stored by the wal-push PostgreSQL called, so the WAL
    # written before the switch is the previous agent's and the WAL after it the current one's.
    cfg = _old_config(work, "compat", cluster=cluster, physical={"checkpoint": "fast"},
                       wal={"uploader_idle_seconds": 0})
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{previous_agent} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    cluster.psql("CREATE DATABASE shop; CREATE DATABASE crm")
    cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int, note text); "
                 "INSERT INTO orders SELECT g, 'item-' || g, g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE "
                 "'n''ote ' || g END FROM generate_series(1, 60) g", dbname="shop")
    cluster.psql("CREATE TABLE contacts (id int PRIMARY KEY, name text, email text); "
                 "INSERT INTO contacts VALUES (1, 'Zoë Ångström', 'zoe@example.org'), (2, 'Łukasz', NULL), "
                 "(3, 'plain', 'p@example.org')", dbname="crm")
    at_backup = {"shop": rows(cluster.port, "shop", ORDERS), "crm": rows(cluster.port, "crm", CONTACTS)}
    logical_id = old(cfg, "backup", "--tier", "daily", "--database", "shop", "--database",
                     "crm").data["backup_id"]
    physical_id = old(cfg, "backup", "--physical").data["backup_id"]
    cluster.psql("INSERT INTO orders SELECT g, 'later-' || g, g, NULL FROM generate_series(61, 80) g",
                 dbname="shop")
    at_restore_point = rows(cluster.port, "shop", ORDERS)
    cluster.psql(f"SELECT pg_create_restore_point('{RESTORE_POINT}')")
    cluster.psql("UPDATE orders SET qty = -1 WHERE id <= 10", dbname="shop")  # after the target: not recovered
    switch_and_wait_archived(cluster)
    verified = old(cfg, "verify", "--restore", "--kind", "logical", timeout=300).data
    assert verified["passed"] is True, verified
    clock = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = OldRepo(cluster, work, cfg, old, new, previous_agent, logical_id, physical_id, at_backup,
                  at_restore_point, clock)
    try:
        yield env
    finally:
        stop(*[str(sub) for d in env.dirs for sub in Path(d).iterdir()])
        for d in env.dirs:
            remove_tree(d)


# ---------------------------------------------------------------------------------------------
# The CLI surface


Case = Tuple[str, Sequence[str], bool]  # (config file, arguments, --json)


@pytest.fixture(scope="module")
def agents(pg_test_base, previous_agent):
    """(previous, current) runners and a postgres-owned work directory for the CLI surface tests."""
    out_dir = make_pg_dir(pg_test_base / "agent-output", 0o700)
    tmp_dir = make_pg_dir(pg_test_base / "agent-tmp", 0o700)
    work = make_pg_dir(Path(tempfile.mkdtemp(prefix="compat-cli-", dir=make_pg_dir(pg_test_base / "work"))))
    return AgentRunner(out_dir, tmp_dir, previous_agent), AgentRunner(out_dir, tmp_dir), WorkDir(work)


def compare_all(old: AgentRunner, new: AgentRunner, cases: Sequence[Case]) -> None:
    """Run every case through both agents (4 cases at a time) and report every difference at once."""
    def run(case: Case):
        cfg, args, as_json = case
        kwargs = dict(check=False, json=as_json, timeout=120)
        return old(cfg, *args, **kwargs), new(cfg, *args, **kwargs)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, cases))
    failures = []
    for (cfg, args, as_json), (a, b) in zip(cases, results):
        try:
            assert_compatible(a, b, f"pg-backup --config {os.path.basename(cfg)}{' --json' if as_json else ''} "
                              f"{' '.join(args)}",
                              TEXT_REFERENCE_CHANGED if list(args) == ["config", "reference"] and not as_json
                              else CHANGED)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(cases)} commands changed:\n\n" + "\n\n".join(failures)


def test_cli_surface_extends_the_previous_version(agents):
    """Every --help (top level, each command, each config action), --version, exit-codes,
    config reference and usage errors: the same exit codes, every command, option, key and message."""
    old, new, work = agents
    cfg = _old_config(work, "surface")
    top = old(cfg, "--help", json=False)
    commands = subcommands(top.stdout)
    assert top.rc == 0 and len(commands) >= 10 and "wal-push" in commands and "config" in commands, top.describe()
    actions = subcommands(old(cfg, "config", "--help", json=False).stdout)
    assert actions == ["validate", "reference"], actions

    plain = [["--help"], ["--version"], []] + [[c, "--help"] for c in commands] + \
        [["config", a, "--help"] for a in actions] + [["exit-codes"], ["config", "reference"]]
    as_json = [[], ["no-such-command"], ["exit-codes"], ["config", "reference"], ["config"],
               ["list", "--tier", "hourly"], ["backup", "--tier", "daily", "--physical", "extra"],
               ["pitr", "--latest"], ["pitr", "--target-time", "2026-11-25 10:00:00", "--data-dir", "/x"],
               ["verify"], ["verify", "--random"], ["restore", "--jobs", "many", "x"],
               ["health", "--max-age-hours", "hourly=3"]]
    compare_all(old, new, [(cfg, args, False) for args in plain] + [(cfg, args, True) for args in as_json])


def test_configuration_errors_are_compatible(agents):
    """config validate (text and JSON) on a valid file, a file with many problems, a missing file
    and broken YAML, and a command run with each: the same problems, messages and exit codes."""
    old, new, work = agents
    good = _old_config(work, "surface", config_name="good.yml")
    bad = _old_config(work, "bad name!", config_name="bad.yml", retention={"daily_days": "thirty", "hourly": 3},
                       encryption={"mode": "rot13"}, repository_overrides={"type": "ftp"}, bogus_section={"x": 1})
    missing = str(work / "missing.yml")
    broken_yaml = str(write_pg_file(work / "broken.yml", "cluster: [unclosed\n"))
    cases: List[Case] = [(good, ["config", "validate"], True), (good, ["config", "validate"], False)]
    for path in (bad, missing, broken_yaml):
        cases += [(path, ["config", "validate"], True), (path, ["config", "validate"], False),
                  (path, ["list"], True)]
    cases.append((bad, ["list"], False))
    compare_all(old, new, cases)
    refused = old(bad, "config", "validate", check=False).data["error"]  # the broken file really is broken
    assert refused["exit_code"] == 2 and len(refused["problems"]) >= 5, refused


# ---------------------------------------------------------------------------------------------
# The previous version's repository


def test_list_and_show_extend_the_previous_output(old_repo):
    env = {"PG_BACKUP_TEST_NOW": old_repo.clock}
    cases = [["list"], ["list", "--tier", "daily"], ["list", "--tier", "weekly"],
             ["show", old_repo.logical_id], ["show", old_repo.physical_id]]
    for args in cases:
        for as_json in (True, False):
            old, new = old_repo.both(*args, json=as_json, env=env)
            assert old.rc == 0, old.describe()
            assert_compatible(old, new, f"{' '.join(args)}{' --json' if as_json else ''}", CHANGED)
    listing = old_repo.new(old_repo.cfg, "list", env=env).data
    assert [b["backup_id"] for b in listing["backups"]] == [old_repo.logical_id, old_repo.physical_id]
    assert listing["recoverable_window"]["start_backup_id"] == old_repo.physical_id


def test_errors_on_the_old_repository_are_compatible(old_repo):
    """Not found, a logical/physical mix-up and an unusable target: same document, message, code."""
    cases = [["show", "20200101T000000Z-nonexistent"], ["verify", "nonexistent-id"],
             ["restore", old_repo.physical_id, "--database", "shop", "--target-database", "never"],
             ["restore", old_repo.logical_id, "--database", "nosuchdb", "--target-database", "never"],
             ["pitr", "--latest", "--backup-id", old_repo.logical_id, "--data-dir", "/nonexistent/x"],
             ["pitr", "--target-time", "2001-01-01T00:00:00Z", "--data-dir", "/nonexistent/x"]]
    for args in cases:
        for as_json in (True, False):
            old, new = old_repo.both(*args, json=as_json)
            assert old.rc != 0, old.describe()
            assert_compatible(old, new, f"{' '.join(args)}{' --json' if as_json else ''}", CHANGED)


def test_verify_all_passes_on_the_old_backups(old_repo):
    res = old_repo.new(old_repo.cfg, "verify", "--all").data
    assert res["verified"] == 2 and res["failed"] == 0, res
    assert all(o["ok"] for r in res["backups"] for o in r["objects"])
    deep = old_repo.new(old_repo.cfg, "verify", old_repo.logical_id, "--deep").data
    assert deep["failed"] == 0 and deep["backups"][0]["backup_id"] == old_repo.logical_id


def test_health_reads_the_old_records(old_repo):
    """health evaluates the previous version's backups, WAL archive and restore verification."""
    env = {"PG_BACKUP_TEST_NOW": old_repo.clock}
    old, new = old_repo.both("health", env=env)
    assert new.rc == old.rc and new.data is not None, new.describe()
    assert new.data["schema_version"] == 1 and new.data["status"] == old.data["status"]
    checks = {c["name"]: c for c in new.data["checks"]}
    # Every check of the previous version, unchanged; checks added since (the erasure register...) pass.
    assert [_steady(checks[c["name"]]) for c in old.data["checks"] if c["name"] in checks] == \
        [_steady(c) for c in old.data["checks"]]
    added = [c for c in new.data["checks"] if c["name"] not in {o["name"] for o in old.data["checks"]}]
    assert all(c["status"] == "ok" for c in added), added
    assert checks["restore_verification"]["status"] == "ok", checks
    assert old_repo.logical_id in checks["restore_verification"]["message"]
    assert checks["wal_gaps"]["status"] == "ok" and checks["wal_archiver"]["status"] == "ok", checks


def _steady(check: Dict[str, Any]) -> Dict[str, Any]:
    """A health check without what changes between two runs a moment apart: ages (the test clock
    is an offset, it keeps ticking), free disk space, WAL written meanwhile. Status stays."""
    check = dict(check)
    if check["name"] == "local_disk" or check.get("unit") in ("s", "h"):
        check.pop("value", None)
        check["message"] = re.sub(r"\d+(?:\.\d+)?", "#", check["message"])
    return check


def test_logical_restore_of_the_old_backup_gives_the_exact_rows(old_repo):
    for db, query in (("shop", ORDERS), ("crm", CONTACTS)):
        target = f"{db}_from_previous"
        res = old_repo.new(old_repo.cfg, "restore", old_repo.logical_id, "--database", db,
                           "--target-database", target).data
        assert res["target_database"] == target and res["replaced"] is False
        assert rows(old_repo.cluster.port, target, query) == old_repo.at_backup[db]


def test_pitr_of_the_old_physical_backup_and_old_wal(old_repo):
    """Base backup and every WAL segment written by the previous agent, recovered by the current one
    to the named restore point: exactly the rows committed before it."""
    path = scratch_dir("pgbc-")
    old_repo.dirs.append(path)
    port = free_port()
    res = old_repo.new(old_repo.cfg, "pitr", "--target-name", RESTORE_POINT, "--data-dir",
                       os.path.join(path, "data"), "--port", str(port), timeout=300).data
    assert res["backup_id"] == old_repo.physical_id and res["started"] is True, res
    assert rows(port, "shop", ORDERS) == old_repo.at_restore_point
    assert rows(port, "crm", CONTACTS) == old_repo.at_backup["crm"]


def test_current_agent_keeps_archiving_into_the_old_archive(old_repo):
    """wal-push of the current agent with an empty spool (so it checks the cluster against the old
    archive.json itself): PostgreSQL reports the new segments archived, none failed, and list shows
    one unbroken window from the old physical backup to them."""
    work = old_repo.work
    cfg = _old_config(work, "compat", cluster=old_repo.cluster, config_name="current.yml",
                       physical={"checkpoint": "fast"}, wal={"uploader_idle_seconds": 0},
                       paths={"state_dir": str(work / "state-current")})
    cluster = old_repo.cluster
    failed_before = cluster.psql("SELECT failed_count FROM pg_stat_archiver")
    archive_json = (work / "repo" / "compat" / "wal" / "archive.json").read_bytes()
    new_bin = old_repo.new.agent_bin
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{new_bin} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    try:
        cluster.psql("INSERT INTO orders VALUES (1001, 'pushed by the current agent', 1, NULL)", dbname="shop")
        segment = archive_or_fail(cluster, int(failed_before))
        checked = old_repo.new(cfg, "wal-check", "--timeout", "60").data
        assert checked["ok"] is True and checked["archived"] is True, checked
    finally:
        cluster.psql(f"ALTER SYSTEM SET archive_command = '{old_repo.old_agent} --config {old_repo.cfg} --quiet "
                     "wal-push %p'; SELECT pg_reload_conf()")
    assert (work / "repo" / "compat" / "wal" / segment[:8] / f"{segment}.zst.gpg").exists()  # wal/<timeline>/
    assert (work / "repo" / "compat" / "wal" / "archive.json").read_bytes() == archive_json  # same identity
    window = old_repo.new(old_repo.cfg, "list").data["recoverable_window"]
    assert window["gaps"] == [] and window["start_backup_id"] == old_repo.physical_id
    assert window["end_segment"] >= segment
    old, new = old_repo.both("list", env={"PG_BACKUP_TEST_NOW": old_repo.clock})
    assert_compatible(old, new, "list --json after the current agent's pushes", CHANGED)




def test_s3_repository_of_the_previous_version(old_repo, s3_server_session):
    """On S3 (moto) too: the previous agent's object keys and metadata are read by the current one."""
    s3_server = S3Bucket(s3_server_session.start())  # a few KB: not emptied afterwards
    cfg = _old_config(old_repo.work, "compat-s3", cluster=old_repo.cluster, s3=s3_server, config_name="s3.yml")
    backup_id = old_repo.old(cfg, "backup", "--tier", "weekly", "--database", "crm").data["backup_id"]
    env = {"PG_BACKUP_TEST_NOW": old_repo.clock}
    for args, as_json in ((["list"], True), (["list"], False), (["show", backup_id], True)):
        assert_compatible(*old_repo.both(*args, cfg=cfg, json=as_json, env=env), f"S3: {' '.join(args)}", CHANGED)
    verified = old_repo.new(cfg, "verify", "--all").data
    assert verified["verified"] == 1 and verified["failed"] == 0, verified
    old_repo.new(cfg, "restore", backup_id, "--database", "crm", "--target-database", "crm_from_s3")
    assert rows(old_repo.cluster.port, "crm_from_s3", CONTACTS) == old_repo.at_backup["crm"]

def archive_or_fail(cluster: PgCluster, failed_before: int, timeout: float = 60) -> str:
    """Switch WAL and wait until PostgreSQL reports the segment archived; the first failed
    archive_command fails the test at once, with the server log (where the agent's error is)."""
    segment = cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while True:
        archived, failed = cluster.psql(f"SELECT coalesce(last_archived_wal, '') >= '{segment}', failed_count "
                                        "FROM pg_stat_archiver").split("|")
        if archived == "t":
            return segment
        if int(failed) > failed_before or time.monotonic() > deadline:
            raise AssertionError(f"{segment} was not archived by the current agent (failed_count {failed}):\n"
                                 f"{cluster.log_tail(12)}")
        time.sleep(0.1)
