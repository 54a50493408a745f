"""``restore``: one database of a logical backup, into a new database or replacing one."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from ..context import Context
from . import CommandResult


def restore(ctx: Context, *, backup_id: str, database: Optional[str], target_database: Optional[str],
            replace: bool, tables: Sequence[str], schemas: Sequence[str], jobs: int, with_globals: bool,
            no_owner: bool, skip_erasures: Optional[Dict[str, str]] = None) -> CommandResult:
    from ..erasure.replay import summary_line
    from ..restore import run_restore

    res = run_restore(ctx, backup_id, database=database, target=target_database, replace=replace, tables=tables,
                      schemas=schemas, jobs=jobs, with_globals=with_globals, no_owner=no_owner,
                      skip_erasures=skip_erasures)
    verb = "replaced" if res["replaced"] else "restored into new database"
    return CommandResult(res, [f"{res['backup_id']}: database {res['database']!r} {verb} {res['target_database']!r} "
                               f"in {res['duration_seconds']:.1f} s", summary_line(res["erasures"])]
                         + [f"note: {n}" for n in res["notes"]])
