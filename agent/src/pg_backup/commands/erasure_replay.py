"""``erasure replay``: apply the erasure register to a server recovered with ``pitr --no-start
--defer-erasure`` once it runs (see :mod:`pg_backup.erasure.pending`)."""
from __future__ import annotations

from typing import Dict, Optional

from ..context import Context
from ..erasure.pending import replay_pending
from ..erasure.replay import summary_line
from . import CommandResult


def erasure_replay(ctx: Context, *, data_dir: str, skips: Dict[str, str], timeout: Optional[float]) -> CommandResult:
    doc = replay_pending(ctx, data_dir, skips=skips, timeout=timeout)
    text = [f"server in {doc['data_dir']}: {summary_line(doc)}; the pending-erasure marker is removed and the "
            f"server may be handed over"]
    return CommandResult({"erasures": doc, "data_dir": doc["data_dir"]}, text)
