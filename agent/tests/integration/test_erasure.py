"""The erasure register on real PostgreSQL 15 with a real S3 endpoint (moto_server over HTTP).

Story of the logical test, in order: a backup holds member 42; ``erasure add`` deletes it in
production and records the erasure (encrypted, never in the audit trail in plaintext); refused and
failing statements are not recorded; restoring the old backup (whole and ``--table``) and ``verify
--restore`` hand over data without member 42 and say which record they applied; an erasure that
cannot be re-applied to the old schema stops the restore (exit 9, no database) unless it is skipped
with a reason, which is audited; a later backup claims the register; a tampered record is refused
(exit 4) by list, restore and health. The physical test: PITR to a time before the erasure, a
``verify --restore`` and a drill re-apply it after the promotion."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import AGENT_BIN, free_port, give_to_pg_user
from pgb_pitr_support import remove_tree, sql_on, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration

DELETE_ORDERS = "DELETE FROM orders WHERE member_id = 42"
DELETE_MEMBER = "DELETE FROM members WHERE member_id = 42"


def _populate(cluster, db="app"):
    cluster.psql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    cluster.psql("CREATE TABLE members (member_id int PRIMARY KEY, email text NOT NULL);"
                 "INSERT INTO members SELECT g, 'm' || g || '@example.org' FROM generate_series(1, 100) g;"
                 "CREATE TABLE orders (id serial PRIMARY KEY, member_id int REFERENCES members, item text);"
                 "INSERT INTO orders (member_id, item) SELECT 1 + g % 100, 'item' FROM generate_series(1, 300) g",
                 dbname=db)


def _keys(s3, prefix=""):
    resp = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)   # a few dozen objects: one page
    assert not resp.get("IsTruncated")
    return [o["Key"] for o in resp.get("Contents", [])]


def _body(s3, key):
    return s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def _count(cluster, sql, db):
    return int(cluster.psql(sql, dbname=db))


def _databases(cluster, like):
    out = cluster.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{like}'")
    return [d for d in out.split("\n") if d]


def test_erasure_register_with_logical_restores(pg15, s3_server, workdir, write_config, run_agent):
    _populate(pg15)
    cfg = write_config(workdir, "er", cluster=pg15, s3=s3_server, backup={"row_counts": True, "globals": False})
    old = run_agent(cfg, "backup", "--tier", "daily", "--database", "app").data["backup_id"]

    # -- record: checked, run in production (one transaction), recorded once committed -------------
    added = run_agent(cfg, "erasure", "add", "--database", "app", "--sql", DELETE_ORDERS, "--sql", DELETE_MEMBER,
                      "--request-id", "REQ-2026-17", "--reason", "Art. 17 request of member 42").data
    first = added["erasure_id"]
    assert added["command"] == "erasure add" and added["rows"] == 4     # 3 orders + the member
    assert [s["table"] for s in added["record"]["statements"]] == ["public.orders", "public.members"]
    assert "sql" not in added["record"]["statements"][0]
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app") == 0
    [key] = [k for k in _keys(s3_server, "er/erasures/")]
    assert key == f"er/erasures/{first}.json.zst.gpg" and key == added["key"]
    stored = _body(s3_server, key)
    assert b"members" not in stored and b"REQ-2026" not in stored     # encrypted like a backup

    # The audit trail (local and in the repository) never holds the statements or the reason.
    audit_local = (workdir / "state" / "audit.jsonl").read_text()
    assert '"erasure-add"' in audit_local and "member_id = 42" not in audit_local and "Art. 17" not in audit_local
    remote = [k for k in _keys(s3_server, "er/audit/") if "-erasure-add-" in k]
    assert remote and all(b"member_id = 42" not in _body(s3_server, k) for k in remote)

    listed = run_agent(cfg, "erasure", "list").data
    assert listed["count"] == 1 and listed["erasures"][0]["request_id"] == "REQ-2026-17"
    assert [s["sql"] for s in listed["erasures"][0]["statements"]] == [DELETE_ORDERS, DELETE_MEMBER]
    text = run_agent(cfg, "erasure", "list", json=False).stdout
    assert first in text and DELETE_MEMBER in text

    # -- refused at record time: nothing runs, nothing is recorded ----------------------------------
    for sql, code, words in [("DROP TABLE orders", 2, "DROP is not a data-changing"),
                             ("BEGIN", 2, "transaction control"),
                             ("DELETE FROM other.public.members WHERE member_id = 1", 2, "names database 'other'"),
                             ("DELETE FROM members WHERE member_id = 1 AND now() > '2000-01-01'", 2, "calls now()"),
                             ("DELETE FROM members WHERE member_id = 1 RETURNING email", 2, "RETURNING"),
                             ("DELETE FROM members WHERE no_such_column = 1", 6, "rolled back"),
                             ("DELETE FROM members WHERE member_id = 7", 6, "violates foreign key")]:
        bad = run_agent(cfg, "erasure", "add", "--database", "app", "--sql", sql, check=False)
        assert bad.rc == code and words in bad.stderr, (sql, bad.describe())
        assert "nothing was" in bad.stderr and "Traceback" not in bad.stderr
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id IN (1, 7)", "app") == 2
    assert [k for k in _keys(s3_server, "er/erasures/")] == [key]

    # -- every restore of the old backup re-applies it ----------------------------------------------
    whole = run_agent(cfg, "restore", old, "--target-database", "app_whole").data
    assert [a["erasure_id"] for a in whole["erasures"]["applied"]] == [first]
    assert whole["erasures"]["applied"][0]["deleted"] == {"public.orders": 3, "public.members": 1}
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app_whole") == 0
    assert _count(pg15, "SELECT count(*) FROM orders WHERE member_id = 42", "app_whole") == 0
    assert _count(pg15, "SELECT count(*) FROM members", "app_whole") == 99
    assert _databases(pg15, "app_whole_pgb_%") == []                  # the temporary name is gone

    table = run_agent(cfg, "restore", old, "--target-database", "app_table", "--table", "members").data
    [applied] = table["erasures"]["applied"]
    assert applied["erasure_id"] == first and applied["not_restored"] == ["public.orders"]
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app_table") == 0
    restored_text = run_agent(cfg, "restore", old, "--target-database", "app_text", json=False).stdout
    assert f"erasure register: 1 applied ({first})" in restored_text

    verified = run_agent(cfg, "verify", "--restore", old).data
    assert verified["passed"] is True, verified
    [vdb] = verified["databases"]
    assert [a["erasure_id"] for a in vdb["erasures"]["applied"]] == [first]
    assert vdb["row_counts"]["mismatches"] == []                       # expected counts lose the erased rows

    # -- an erasure the old schema cannot take stops the restore -------------------------------------
    pg15.psql("CREATE TABLE newsletter (member_id int, email text); INSERT INTO newsletter VALUES (42, 'x')",
              dbname="app")
    second = run_agent(cfg, "erasure", "add", "-d", "app", "--sql",
                       "DELETE FROM newsletter WHERE member_id = 42").data["erasure_id"]
    assert second > first
    stopped = run_agent(cfg, "restore", old, "--target-database", "app_stopped", check=False)
    assert stopped.rc == 9, stopped.describe()
    assert f"erasure {second} could not be re-applied" in stopped.stderr and "nothing was handed over" in stopped.stderr
    assert f"--skip-erasure {second}" in stopped.stderr
    assert _databases(pg15, "app_stopped%") == []                     # nothing handed over, nothing left
    assert stopped.data["error"]["type"] == "ErasureReplayError"

    no_reason = run_agent(cfg, "restore", old, "--target-database", "app_skip", "--skip-erasure", second, check=False)
    assert no_reason.rc == 2 and "--skip-reason" in no_reason.stderr
    unknown = run_agent(cfg, "restore", old, "--target-database", "app_skip", "--skip-erasure",
                        "20200101T000000.000000Z-abcdef", "--skip-reason", "x", check=False)
    assert unknown.rc == 7 and _databases(pg15, "app_skip%") == []
    skipped = run_agent(cfg, "restore", old, "--target-database", "app_skip", "--skip-erasure", second,
                        "--skip-reason", "newsletter table created after this backup").data
    assert [a["erasure_id"] for a in skipped["erasures"]["applied"]] == [first]
    assert skipped["erasures"]["skipped"] == [{"erasure_id": second, "database": "app",
                                               "reason": "newsletter table created after this backup"}]
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app_skip") == 0
    records = [json.loads(line) for line in (workdir / "state" / "audit.jsonl").read_text().splitlines()]
    [skip_audit] = [r for r in records if r["operation"] == "erasure-skip"]
    assert skip_audit["erasure_id"] == second and skip_audit["skip_reason"].startswith("newsletter table")
    [restore_audit] = [r for r in records if r["operation"] == "restore" and r.get("erasures_skipped")]
    assert restore_audit["erasures_applied"] == [first]
    assert any(b"erasure-skip" in _body(s3_server, k) for k in _keys(s3_server, "er/audit/") if "erasure-skip" in k)

    # -- a later backup claims the register; health agrees --------------------------------------------
    newer = run_agent(cfg, "backup", "--tier", "daily", "--database", "app").data["backup_id"]
    manifest = json.loads(_body(s3_server, f"er/backups/{newer}/manifest.json"))
    assert manifest["extra"]["erasure_through"] == second and manifest["schema_version"] == 1
    old_manifest = json.loads(_body(s3_server, f"er/backups/{old}/manifest.json"))
    assert old_manifest["extra"]["erasure_through"] is None
    health = {c["name"]: c for c in run_agent(cfg, "health", check=False).data["checks"]}
    assert health["erasure_register"]["status"] == "ok" and health["erasure_claims"]["status"] == "ok"

    # -- a tampered record is refused everywhere ----------------------------------------------------
    second_key = f"er/erasures/{second}.json.zst.gpg"
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=second_key)
    data = bytearray(_body(s3_server, second_key))
    data[-30] ^= 0x01
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=second_key, Body=bytes(data),
                                  Metadata=head["Metadata"])
    tampered = run_agent(cfg, "erasure", "list", check=False)
    assert tampered.rc == 4 and f"erasure record {second}" in tampered.stderr, tampered.describe()
    refused = run_agent(cfg, "restore", newer, "--target-database", "app_tampered", check=False)
    assert refused.rc == 4 and _databases(pg15, "app_tampered%") == []
    health = {c["name"]: c for c in run_agent(cfg, "health", check=False).data["checks"]}
    assert health["erasure_register"]["status"] == "critical" and second in health["erasure_register"]["message"]


@pytest.fixture
def short_scratch():
    path = tempfile.mkdtemp(prefix="pgbe-", dir="/tmp")
    give_to_pg_user(path, 0o700)
    yield path
    remove_tree(path)


def test_pitr_verify_and_drill_reapply_the_register(make_cluster, s3_server, workdir, write_config, run_agent,
                                                    short_scratch):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    checks = [{"name": "member 42 erased", "database": "app",
               "sql": "SELECT count(*) FROM members WHERE member_id = 42", "expect": "= 0"}]
    cfg = write_config(workdir, "erp", cluster=cluster, s3=s3_server, backup={"globals": False},
                       physical={"checkpoint": "fast"}, wal={"archive_timeout_seconds": 5},
                       verify={"checks": checks, "scratch_dir": short_scratch, "scratch_port": free_port()},
                       drill={"port": free_port(), "rto_target_minutes": 10, "rpo_target_minutes": 5})
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    _populate(cluster)
    run_agent(cfg, "backup", "--physical")
    cluster.psql("INSERT INTO members VALUES (1000, 'late@example.org')", dbname="app")
    before = cluster.psql("SELECT clock_timestamp()")
    cluster.psql("SELECT pg_sleep(1.1)")
    first = run_agent(cfg, "erasure", "add", "-d", "app", "--sql", DELETE_ORDERS, "--sql", DELETE_MEMBER,
                      "--request-id", "REQ-9").data["erasure_id"]
    switch_and_wait_archived(cluster)
    pitr_dir = os.path.join(short_scratch, "pitr")
    port = free_port()
    try:
        res = run_agent(cfg, "pitr", "--data-dir", pitr_dir, "--port", port, "--target-time", before,
                        timeout=300).data
        assert [a["erasure_id"] for a in res["erasures"]["applied"]] == [first]
        assert res["erasures"]["applied"][0]["deleted"] == {"public.orders": 3, "public.members": 1}
        assert sql_on(port, "SELECT count(*) FROM members WHERE member_id = 42", "app") == (0,)
        assert sql_on(port, "SELECT count(*) FROM members WHERE member_id = 1000", "app") == (1,)  # the target held
    finally:
        stop(pitr_dir)

    verified = run_agent(cfg, "verify", "--restore", "--kind", "physical", timeout=300).data
    assert verified["passed"] is True, verified
    assert [a["erasure_id"] for a in verified["databases"][0]["erasures"]["applied"]] == [first]

    drill = run_agent(cfg, "drill", timeout=600).data
    assert drill["recovery_error"] is None, drill
    assert [a["erasure_id"] for a in drill["erasures"]["applied"]] == [first]
    assert {c["name"]: c["status"] for c in drill["checks"]} == {"member 42 erased": "passed"}
    report_md = _body(s3_server, f"erp/audit/drills/{drill['drill_id']}/report.md").decode()
    assert f"erasure register: 1 applied ({first}) before the checks" in report_md

    # An erasure the recovered point cannot take (its table came later) stops the PITR: server stopped, exit 9.
    cluster.psql("CREATE TABLE newsletter (member_id int); INSERT INTO newsletter VALUES (42)", dbname="app")
    second = run_agent(cfg, "erasure", "add", "-d", "app", "--sql",
                       "DELETE FROM newsletter WHERE member_id = 42").data["erasure_id"]
    failed_dir = os.path.join(short_scratch, "pitr-failed")
    failed = run_agent(cfg, "pitr", "--data-dir", failed_dir, "--port", free_port(), "--target-time", before,
                       check=False, timeout=300)
    try:
        assert failed.rc == 9, failed.describe()
        assert f"erasure {second} could not be re-applied" in failed.stderr
        assert "the recovered server was stopped" in failed.stderr
        assert not os.path.exists(os.path.join(failed_dir, "postmaster.pid"))      # nothing handed over
    finally:
        stop(failed_dir)
    skipped_dir = os.path.join(short_scratch, "pitr-skip")
    port = free_port()
    try:
        res = run_agent(cfg, "pitr", "--data-dir", skipped_dir, "--port", port, "--target-time", before,
                        "--skip-erasure", second, "--skip-reason", "newsletter did not exist then", timeout=300).data
        assert [a["erasure_id"] for a in res["erasures"]["applied"]] == [first]
        assert [s["erasure_id"] for s in res["erasures"]["skipped"]] == [second]
        assert sql_on(port, "SELECT count(*) FROM members WHERE member_id = 42", "app") == (0,)
    finally:
        stop(skipped_dir)
    audit = [json.loads(line) for line in (workdir / "state" / "audit.jsonl").read_text().splitlines()]
    assert [r["erasure_id"] for r in audit if r["operation"] == "erasure-skip"] == [second]


def test_an_erasure_recorded_while_a_restore_runs_is_applied_before_hand_over(pg15, workdir, write_config, run_agent,
                                                                              monkeypatch):
    from pg_backup import config
    from pg_backup.context import Context
    from pg_backup.restore import run_restore

    _populate(pg15, "app_race")
    cfg = write_config(workdir, "race", cluster=pg15, backup={"globals": False})     # a local repository
    old = run_agent(cfg, "backup", "--tier", "daily", "--database", "app_race").data["backup_id"]
    first = run_agent(cfg, "erasure", "add", "-d", "app_race", "--sql", DELETE_ORDERS, "--sql",
                      DELETE_MEMBER).data["erasure_id"]
    ctx = Context(config.load(cfg))
    listing = ctx.repo.erasure_ids
    added = []

    def register_read_while_another_erasure_arrives():
        ids = listing()
        if not added:   # the restore's first read of the register, after pg_restore: production erases member 43
            added.append(run_agent(cfg, "erasure", "add", "-d", "app_race", "--sql",
                                   "DELETE FROM orders WHERE member_id = 43", "--sql",
                                   "DELETE FROM members WHERE member_id = 43").data["erasure_id"])
        return ids

    monkeypatch.setattr(ctx.repo, "erasure_ids", register_read_while_another_erasure_arrives)
    try:
        res = run_restore(ctx, old, database="app_race", target="app_race_copy")
    finally:
        ctx.close()
    assert [a["erasure_id"] for a in res["erasures"]["applied"]] == [first, added[0]]
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id IN (42, 43)", "app_race_copy") == 0
    assert _count(pg15, "SELECT count(*) FROM members", "app_race_copy") == 98


def _recipe(section: str) -> str:
    """The shell block of a docs/erasure.md section, as the operator would paste it."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "erasure.md").read_text()
    body = text.split(f"## {section}", 1)[1]
    return body.split("```bash\n", 1)[1].split("```", 1)[0]


def test_stock_tools_recipe_replays_the_register(pg15, workdir, write_config, run_agent, tmp_path):
    _populate(pg15, "app_stock")
    cfg = write_config(workdir, "stock", cluster=pg15, backup={"globals": False})     # a local repository
    old = run_agent(cfg, "backup", "--tier", "daily", "--database", "app_stock").data
    run_agent(cfg, "erasure", "add", "-d", "app_stock", "--sql", DELETE_ORDERS, "--sql", DELETE_MEMBER)
    repo = workdir / "repo" / "stock"
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = f"gpg --batch --quiet --pinentry-mode loopback --passphrase-file {workdir / 'passphrase'} --decrypt"
    env = dict(os.environ, GNUPGHOME=str(gnupg), PGHOST=str(pg15.host), PGPORT=str(pg15.port), PGUSER="postgres",
               PATH=f"{pg15.bin_dir}:/usr/bin:/bin")
    dump = json.loads((repo / "backups" / old["backup_id"] / "manifest.json").read_text())["databases"][0]["object"]
    subprocess.run(["bash", "-ec", f"createdb -T template0 app_stock_dr; set -o pipefail; "
                    f"{gpg} {repo}/backups/{old['backup_id']}/{dump} | zstd -d | pg_restore --exit-on-error -d app_stock_dr"],
                   env=env, check=True, cwd=tmp_path, capture_output=True, timeout=120)
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app_stock_dr") == 1
    script = (_recipe("Re-applying by hand").replace("/var/backups/pg-backup/main/", f"{repo}/")
              .replace("DB=crm", "DB=app_stock_dr").replace("gpg --decrypt", gpg))
    # The register's records name their database; the copy is restored under another name.
    script = script.replace('--arg db "$DB"', '--arg db app_stock')
    done = subprocess.run(["bash", "-ec", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _count(pg15, "SELECT count(*) FROM members WHERE member_id = 42", "app_stock_dr") == 0
    assert _count(pg15, "SELECT count(*) FROM orders WHERE member_id = 42", "app_stock_dr") == 0
    pg15.psql("DROP DATABASE app_stock_dr")
