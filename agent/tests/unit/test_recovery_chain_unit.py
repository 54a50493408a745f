"""The restore side of incremental chains without a server: which chains can be restored
(``recovery.chain.chain_problem``) and the bounded parallel runner of the restore
(``recovery.archives.run_parallel``). The real restores are in integration/test_incremental_restore.py."""
from __future__ import annotations

import threading
import time
from typing import List, Optional

import pytest

from pg_backup.errors import IntegrityError
from pg_backup.manifest import ChainInfo, EncryptionInfo, Manifest
from pg_backup.recovery.archives import run_parallel
from pg_backup.recovery.chain import chain_problem


def _m(backup_id: str, members: Optional[List[str]] = None, *, system: str = "1", stop: str = "0/3000000",
       parent_stop: Optional[str] = None) -> Manifest:
    chain = None
    if members:
        chain = ChainInfo(parent=members[-1], root=members[0], members=list(members),
                          parent_stop_lsn=parent_stop or stop, depth=len(members))
    return Manifest(backup_id=backup_id, kind="physical", tier="daily", cluster="c", hostname="h", agent_version="x",
                    server_version="18.1", server_version_num=180001, system_identifier=system,
                    started_at="2026-01-01T00:00:00.000000Z", finished_at="2026-01-01T00:01:00.000000Z",
                    encryption=EncryptionInfo("openpgp", "passphrase", "AES256", "f"), compression={},
                    stop_lsn=stop, incremental=chain)


def test_a_complete_chain_and_a_full_backup_have_no_problem():
    full, inc1, inc2 = _m("full"), _m("inc1", ["full"]), _m("inc2", ["full", "inc1"])
    known = {m.backup_id: m for m in (full, inc1, inc2)}
    assert chain_problem(full, {}) is None
    assert chain_problem(inc2, known) is None


def test_a_missing_member_is_named():
    full, inc2 = _m("full"), _m("inc2", ["full", "inc1"])
    assert chain_problem(inc2, {"full": full}) == "member inc1 of its chain is missing from the repository"
    assert chain_problem(inc2, {}) == "members full, inc1 of its chain are missing from the repository"


@pytest.mark.parametrize("known, expected", [
    ({"full": _m("full", ["older"]), "inc1": _m("inc1", ["full"])}, "first member full is not a full backup"),
    ({"full": _m("full"), "inc1": _m("inc1", ["other"])}, "inc1 in its chain is not incremental to full"),
    ({"full": _m("full", system="2"), "inc1": _m("inc1", ["full"])}, "come from different clusters"),
    ({"full": _m("full"), "inc1": _m("inc1", ["full"], parent_stop="0/5000000")},
     "inc1 was taken against a full that ended at 0/5000000, but the stored one ended at 0/3000000"),
])
def test_an_inconsistent_chain_is_explained(known, expected):
    problem = chain_problem(_m("inc2", ["full", "inc1"]), known)
    assert problem is not None and expected in problem


def test_run_parallel_keeps_order_and_bounds_the_threads():
    running, peak, lock = [0], [0], threading.Lock()

    def job(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i * i

    assert run_parallel([lambda i=i: job(i) for i in range(10)], workers=3) == [i * i for i in range(10)]
    assert peak[0] <= 3


def test_run_parallel_raises_the_first_failure_and_cancels_the_rest():
    started: List[int] = []

    def job(i: int) -> int:
        started.append(i)
        if i == 1:
            raise IntegrityError("member 1 tampered")
        time.sleep(0.2)
        return i

    with pytest.raises(IntegrityError, match="member 1 tampered"):
        run_parallel([lambda i=i: job(i) for i in range(20)], workers=2)
    assert len(started) < 20
