"""The erasure register's pure parts: statement checks (PostgreSQL's parser), ids in replay order,
skip options, audit redaction, expected row counts and the health checks."""
from __future__ import annotations

import datetime as dt

import pytest

from pg_backup.audit import redact_arguments
from pg_backup.erasure.register import ErasureRecord, erasure_id_time, new_erasure_id
from pg_backup.erasure.replay import expected_row_counts, parse_skips
from pg_backup.erasure.statements import check_statements
from pg_backup.errors import IntegrityError, UsageError
from pg_backup.health.erasure import ErasureProbe, erasure_checks
from pg_backup.manifest import EncryptionInfo, Manifest
from pg_backup.repository import ERASURE_ID
from pg_backup.storage.base import PutOptions

UTC = dt.timezone.utc


# -- statements ------------------------------------------------------------------------------------

def test_delete_and_update_are_accepted_with_their_own_text_and_target():
    out = check_statements(["DELETE FROM members WHERE member_id = 42;  update crm.notes SET body = lower('X') "
                            "WHERE member_id IN (SELECT member_id FROM members WHERE email = 'a;b@c')"], "app")
    assert [(s.kind, s.relation) for s in out] == [("DELETE", (None, "members")), ("UPDATE", ("crm", "notes"))]
    assert out[0].sql == "DELETE FROM members WHERE member_id = 42"
    assert out[1].sql.endswith("email = 'a;b@c')")          # the ';' inside a literal does not split it
    assert out[1].functions == [(None, "lower")]


def test_a_database_part_naming_the_erasure_database_is_accepted():
    assert check_statements(["DELETE FROM app.public.members WHERE member_id = 1"], "app")[0].relation == \
        ("public", "members")


@pytest.mark.parametrize("sql, why", [
    ("DROP TABLE members", "DROP is not a data-changing"),
    ("ALTER TABLE members ADD COLUMN x int", "not a data-changing"),
    ("TRUNCATE members", "TRUNCATE is not"),
    ("BEGIN", "transaction control"),
    ("DELETE FROM members WHERE member_id = 1; COMMIT", "transaction control"),
    ("SET search_path = x", "SET is not"),
    ("SELECT pg_terminate_backend(1)", "SELECT is not"),
    ("INSERT INTO members VALUES (1)", "INSERT is not"),
    ("WITH d AS (DELETE FROM members RETURNING *) SELECT * FROM d", "SELECT is not"),
    ("WITH i AS (INSERT INTO log VALUES (1) RETURNING 1) DELETE FROM members", "it contains INSERT"),
    ("DELETE FROM members WHERE member_id = 1 RETURNING *", "RETURNING would print"),
    ("DELETE FROM other.public.members WHERE member_id = 1", "names database 'other'"),
    ("DELETE FROM members m USING other.public.x o WHERE m.id = o.id", "names database 'other'"),
    ("DELETE FROM members WHERE created < current_date", "another answer on every replay"),
    ("DELETE FROM members WHERE member_id = $1", "parameters"),
    ("UPDATE members SET x = 1 WHERE id IN (SELECT id INTO t FROM z)", "not parse|SELECT INTO"),
])
def test_refused_statements_name_the_reason(sql, why):
    with pytest.raises(UsageError) as err:
        check_statements([sql], "app")
    assert any(part in str(err.value) for part in why.split("|")), str(err.value)
    assert err.value.exit_code == 2


def test_unparsable_and_empty_sql_is_a_usage_error():
    with pytest.raises(UsageError, match="does not parse as PostgreSQL"):
        check_statements(["DELETE FROM"], "app")
    with pytest.raises(UsageError, match="holds no statement"):
        check_statements([" ; "], "app")


# -- ids, records, skips ---------------------------------------------------------------------------

def test_ids_sort_in_time_order_even_when_the_clock_is_behind():
    t = dt.datetime(2026, 12, 4, 7, 30, 12, 5, tzinfo=UTC)
    first = new_erasure_id(t, [])
    assert ERASURE_ID.match(first) and first.startswith("20261204T073012.000005Z-")
    earlier_clock = new_erasure_id(t - dt.timedelta(hours=1), [first])
    assert earlier_clock > first and erasure_id_time(earlier_clock) == t + dt.timedelta(microseconds=1)
    assert sorted([earlier_clock, first]) == [first, earlier_clock]


def test_a_record_stored_under_another_id_is_refused():
    rec = ErasureRecord("20261204T073012.000005Z-abcdef", "x", "c", "app", [{"sql": "DELETE FROM t", "kind": "DELETE"}])
    assert ErasureRecord.from_json(rec.to_json(), expected_id=rec.erasure_id) == rec
    with pytest.raises(IntegrityError, match="moved or replaced"):
        ErasureRecord.from_json(rec.to_json(), expected_id="20261204T073012.000006Z-abcdef")
    with pytest.raises(IntegrityError, match="not a valid erasure record"):
        ErasureRecord.from_json(b"{\"schema_version\": 1, \"nope\": 1}", expected_id=rec.erasure_id)
    assert "sql" not in rec.summary()["statements"][0]


def test_skip_options():
    assert parse_skips([], None) == {}
    ident = "20261204T073012.000005Z-abcdef"
    assert parse_skips([ident], " table created later ") == {ident: "table created later"}
    with pytest.raises(UsageError, match="needs --skip-reason"):
        parse_skips([ident], None)
    with pytest.raises(UsageError, match="not an erasure id"):
        parse_skips(["42"], "why")
    with pytest.raises(UsageError, match="--skip-reason applies"):
        parse_skips([], "why")


def test_audit_arguments_hide_statements_and_reasons():
    argv = ["erasure", "add", "-d", "app", "--sql", "DELETE FROM m WHERE email = 'x@y'", "--reason=Jane Doe asked",
            "--request-id", "REQ-1"]
    assert redact_arguments(argv, ("--sql", "--reason")) == [
        "erasure", "add", "-d", "app", "--sql", "<redacted>", "--reason=<redacted>", "--request-id", "REQ-1"]


def test_expected_row_counts_lose_the_deleted_rows_of_that_database():
    doc = {"applied": [{"database": "app", "deleted": {"public.members": 1, "public.gone": 3}},
                       {"database": "other", "deleted": {"public.members": 5}}]}
    assert expected_row_counts({"public.members": 10, "public.orders": 4}, doc, "app") == \
        {"public.members": 9, "public.orders": 4}
    assert expected_row_counts(None, doc, "app") is None


# -- health ----------------------------------------------------------------------------------------

def _manifest(started: str, claims=None) -> Manifest:
    extra = {} if claims is False else {"erasure_through": claims}
    return Manifest(backup_id=f"{started}-logical-daily", kind="logical", tier="daily", cluster="c", hostname="h",
                    agent_version="t", server_version="15", server_version_num=150000, system_identifier=None,
                    started_at=started, finished_at=started, encryption=EncryptionInfo("openpgp", "passphrase",
                                                                                       "AES256", "f"),
                    compression={}, extra=extra)


E1 = "20261201T000000.000000Z-aaaaaa"
E2 = "20261203T000000.000000Z-bbbbbb"


def test_health_register_ok_and_claims():
    probe = ErasureProbe(ids=[E1, E2])
    checks = {c.name: c for c in erasure_checks(probe, [_manifest("2026-12-02T00:00:00.000000Z", E1)])}
    assert checks["erasure_register"].status == "ok" and checks["erasure_claims"].status == "ok"


def test_health_warns_about_an_erasure_the_newest_backup_does_not_claim():
    for claims in (False, None):          # an agent from before the register; or a wrong claim
        checks = {c.name: c for c in erasure_checks(ErasureProbe(ids=[E1, E2]),
                                                    [_manifest("2026-12-04T00:00:00.000000Z", claims)])}
        assert checks["erasure_claims"].status == "warning"
        assert E1 in checks["erasure_claims"].message and checks["erasure_claims"].value == 2


def test_health_register_unreadable_or_damaged_is_critical():
    (c,) = erasure_checks(ErasureProbe(error="storage unreachable"), [])
    assert c.status == "critical" and "cannot be read" in c.message
    (c,) = erasure_checks(ErasureProbe(ids=[E1], damaged=[f"{E1}: stored bytes differ from their SHA-256"]), [])
    assert c.status == "critical" and E1 in c.message


# -- the repository's keys and the manifests' claim -------------------------------------------------

def test_register_keys_and_the_claim_of_a_backup(tmp_path):
    from pg_backup.repository import Repository
    from pg_backup.storage.local import LocalStorage

    repo = Repository(LocalStorage(str(tmp_path)), "main")
    assert repo.erasure_ids() == [] and repo.erasure_through(dt.datetime(2030, 1, 1, tzinfo=UTC)) is None
    for ident in (E2, E1):
        repo.storage.put_bytes(repo.erasure_key(ident), b"x")
    repo.storage.put_bytes(repo.erasures_prefix + "notes.txt", b"not a record")
    assert repo.erasure_ids() == [E1, E2]                         # oldest first, other objects ignored
    assert repo.erasure_key(E1) == f"main/erasures/{E1}.json.zst.gpg"
    with pytest.raises(Exception, match="not an erasure id"):
        repo.erasure_key("../backups/x")
    assert repo.erasure_through(dt.datetime(2026, 12, 1, tzinfo=UTC)) is None       # recorded at that instant
    assert repo.erasure_through(dt.datetime(2026, 12, 2, tzinfo=UTC)) == E1
    assert repo.erasure_through(dt.datetime(2026, 12, 5, tzinfo=UTC)) == E2
    manifest = _manifest("2026-12-02T00:00:00.000000Z", False)
    repo.commit_manifest(manifest, PutOptions())
    assert repo.load_manifest(manifest.backup_id).extra == {"erasure_through": E1}
