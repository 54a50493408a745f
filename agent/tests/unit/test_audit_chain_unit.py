"""The audit chain's head search and claim (pg_backup.audit.chain) on a real local repository."""
from __future__ import annotations

import datetime as dt
import json

from pg_backup.audit.chain import append, find_head, verify
from pg_backup.repository import Repository
from pg_backup.storage.local import LocalStorage

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)


def _record(i: int) -> dict:
    return {"operation": "backup", "started_at": f"2026-12-04T10:00:{i:02d}.000000Z",
            "finished_at": f"2026-12-04T10:01:{i:02d}.000000Z", "result": "success"}


def _key(repo: Repository, i: int, who: str = "a") -> str:
    return repo.audit_key(NOW - dt.timedelta(minutes=60 - i), "backup", f"{who}{i:05d}")


def test_the_head_is_found_from_any_hint_without_listing(tmp_path):
    repo = Repository(LocalStorage(str(tmp_path)), "main")
    assert find_head(repo) == 0
    for i in range(1, 12):
        assert append(repo, _record(i), _key(repo, i)) == i
    assert {find_head(repo, hint) for hint in (0, 1, 5, 11)} == {11}
    assert find_head(repo, 40) == 40    # a remembered head above the stored ones: the tail was deleted, and the
    #                                     next entry (41) makes that a reported gap rather than filling it in
    repo.storage.delete([repo.audit_chain_key(1), repo.audit_chain_key(5)])   # deleted entries do not hide the head
    assert {find_head(repo, hint) for hint in (0, 1, 5)} == {11}


class RacingStorage(LocalStorage):
    """A local store on which another writer claims the next chain entry just before this one does."""

    def __init__(self, root: str, repo_factory):
        super().__init__(root)
        self.rival = repo_factory
        self.raced = False

    def put_bytes(self, key, data, options=None, *, overwrite=False):
        if "/audit/chain/" in key and not self.raced:
            self.raced = True
            append(self.rival(), _record(50), "main/audit/2026/12/20261204T100050Z-prune-rival.json")
        return super().put_bytes(key, data, *(x for x in (options,) if x is not None), overwrite=overwrite)


def test_a_writer_that_loses_the_claim_chains_behind_the_winner(tmp_path):
    plain = lambda: Repository(LocalStorage(str(tmp_path)), "main")  # noqa: E731
    append(plain(), _record(1), _key(plain(), 1))
    racing = Repository(RacingStorage(str(tmp_path), plain), "main")
    assert append(racing, _record(2), _key(racing, 2, "b")) == 3    # the rival took 2
    report = verify(plain(), NOW)
    assert (report.entries, report.breaks) == (3, [])
    entry = json.loads(plain().storage.get_bytes(plain().audit_chain_key(2)))
    assert entry["record"].endswith("-prune-rival.json")
    repo = plain()                                            # companions (signatures) are not entries
    repo.storage.put_bytes(repo.audit_chain_key(1) + ".sig", b"sig")
    repo.storage.put_bytes(_key(repo, 1) + ".sig", b"sig")
    assert verify(repo, NOW).breaks == verify(repo, NOW, since=NOW - dt.timedelta(days=1)).breaks == []
    repo.storage.put_bytes(repo.audit_chain_prefix + "latest.json", b"{}")
    assert [b.kind for b in verify(repo, NOW).breaks] == ["unreadable"]
