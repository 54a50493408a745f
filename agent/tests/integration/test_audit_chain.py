"""The audit hash chain (pg_backup.audit.chain, docs/audit.md) on real storage.

- local repository, the real CLI: audited operations chain their records; ``audit verify`` accepts the
  chain and the records from before it, then reports an edited record, a deleted one, a forged insert and
  a forked one (exit 4); ``health`` warns (check ``audit_chain``, metric pg_backup_audit_chain_breaks);
- moto S3 (real conditional writes over HTTP): concurrent writers take turns without forking the chain;
  deleting an entry is a gap; ``verify --since`` checks from a date.

No PostgreSQL: the audited commands used (prune, verify of an unknown backup) only read the catalog.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from pg_backup import config as config_mod
from pg_backup.audit import AuditRecord, write_remote
from pg_backup.audit.chain import verify
from pg_backup.repository import Repository
from pg_backup.storage import open_storage

from conftest import make_pg_dir, write_pg_file


def _kinds(result) -> dict:
    out: dict = {}
    for b in result.data["audit_chain"]["breaks"]:
        out.setdefault(b["kind"], []).append(b)
    return out


def test_the_chain_verifies_and_reports_edits_deletions_forgeries_and_forks(workdir, write_config, run_agent):
    cfg = write_config(workdir, "main")
    month = Path(workdir) / "repo" / "main" / "audit" / dt.datetime.now(dt.timezone.utc).strftime("%Y/%m")
    for d in (*reversed(month.relative_to(workdir).parents), month.relative_to(workdir)):
        make_pg_dir(Path(workdir) / d, 0o750)
    old = write_pg_file(month / "20000101T000000Z-backup-aaaaaa.json",   # by an agent from before the chain
                        json.dumps({"operation": "backup", "started_at": "2000-01-01T00:00:00.000000Z"}), 0o640)
    os.utime(old, (946684800, 946684800))

    for args in (["prune"], ["prune", "--dry-run"], ["verify", "20000101T000000Z-logical-daily"], ["prune"]):
        run_agent(cfg, *args, check=False)
    intact = run_agent(cfg, "audit", "verify")
    chain = intact.data["audit_chain"]
    assert (chain["entries"], chain["head_seq"], chain["breaks"], chain["unchained_before"]) == (4, 4, [], 1)
    assert "unchained, before" in run_agent(cfg, "audit", "verify", json=False).stdout
    health = run_agent(cfg, "health", check=False).data     # remembers head 4 as verified
    assert [c["status"] for c in health["checks"] if c["name"] == "audit_chain"] == ["ok"]

    records = {json.loads(p.read_text())["chain"]["seq"]: p for p in month.glob("*.json") if p != old}
    assert sorted(records) == [1, 2, 3, 4]
    edited = json.loads(records[2].read_text())
    edited["result"] = "failure"
    records[2].write_text(json.dumps(edited, indent=1, sort_keys=True) + "\n")
    records[3].unlink()
    forged = dict(edited, operation="restore", chain={"seq": 1, "prev_sha256": None})
    (month / (records[1].name[:16] + "-restore-ffffff.json")).write_text(json.dumps(forged))
    (month / "29990101T000000Z-prune-eeeeee.json").write_text(json.dumps({"operation": "prune"}))

    broken = run_agent(cfg, "audit", "verify", check=False)
    assert broken.rc == 4, broken.describe()
    kinds = _kinds(broken)
    assert [b["seq"] for b in kinds["edited"]] == [2]
    assert [b["seq"] for b in kinds["missing"]] == [3]
    assert [b["seq"] for b in kinds["fork"]] == [1]
    assert [b["key"].rsplit("/", 1)[1] for b in kinds["unchained"]] == ["29990101T000000Z-prune-eeeeee.json"]
    assert "broken in 4 place(s)" in broken.stderr

    records[4].unlink()                                     # the verified head: only the remembered head sees it
    (Path(workdir) / "repo" / "main" / "audit" / "chain" / "000000000004.json").unlink()
    health = run_agent(cfg, "health", "--format", "prometheus", check=False).stdout
    assert 'pg_backup_check_status{cluster="main",check="audit_chain"} 1' in health
    assert 'pg_backup_audit_chain_breaks{cluster="main"} 1' in health
    text = run_agent(cfg, "health", json=False, check=False).stdout
    assert "audit chain entry 4, verified" in text and "is gone (deleted)" in text
    assert run_agent(cfg, "audit", "verify", "--since", "yesterday", check=False).rc == 2


def test_concurrent_writers_on_s3_take_turns_and_a_deleted_entry_is_a_gap(s3_server, workdir, write_config):
    settings = config_mod.load(write_config(workdir, "main", s3=s3_server), check_files=False)
    repo = Repository(open_storage(settings), "main")
    start = dt.datetime.now(dt.timezone.utc)
    errors: list = []

    def writer(name: str) -> None:
        for _ in range(4):
            rec = AuditRecord("backup", [name], "main")
            errors.append(write_remote(Repository(open_storage(settings), "main"), rec.finish(result="success",
                                                                                          exit_code=0), rec.started))

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [None] * 8
    report = verify(repo, dt.datetime.now(dt.timezone.utc))
    assert (report.entries, report.head_seq, report.breaks) == (8, 8, [])
    assert verify(repo, dt.datetime.now(dt.timezone.utc), since=start + dt.timedelta(days=1)).entries == 0

    repo.storage.delete([repo.audit_chain_key(5)])
    report = verify(repo, dt.datetime.now(dt.timezone.utc), since=start)
    assert {(b.kind, b.seq) for b in report.breaks} >= {("gap", 5)}
    assert any(b.kind == "unchained" for b in report.breaks)   # the record entry 5 named is now outside
