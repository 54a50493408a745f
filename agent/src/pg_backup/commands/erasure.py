"""``erasure add`` and ``erasure list``: the erasure register (docs/erasure.md)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

from ..context import Context
from ..erasure.live import record_erasure
from ..erasure.register import load_register
from . import CommandResult


def erasure_add(ctx: Context, *, database: str, sql: Sequence[str], request_id: Optional[str],
                reason: Optional[str]) -> CommandResult:
    done = record_erasure(ctx, database=database, sql=sql, request_id=request_id, reason=reason)
    rec = done.record
    rows = sum(s["rows"] for s in rec.statements)
    for warning in done.warnings:
        ctx.progress.warn(warning)
    text = [f"erasure {rec.erasure_id} recorded: {len(rec.statements)} statement(s) committed in database "
            f"{rec.database!r} ({rows} row(s) changed)" + (f", request {rec.request_id}" if rec.request_id else "")]
    text += [f"  {s['kind']} on {s['table']}: {s['rows']} row(s)" for s in rec.statements]
    text += [f"  warning: {w}" for w in done.warnings]
    text.append("  every later restore, pitr, verify --restore and drill re-applies it")
    return CommandResult({"erasure_id": rec.erasure_id, "key": done.key, "database": rec.database,
                          "rows": rows, "record": rec.summary(), "warnings": done.warnings}, text)


def erasure_list(ctx: Context, *, database: Optional[str]) -> CommandResult:
    records = [r for r in load_register(ctx.repo, ctx.gpg) if database is None or r.database == database]
    docs: List[Dict[str, Any]] = [dataclasses.asdict(r) for r in records]
    text = [f"{len(records)} erasure record(s) in {ctx.repo.location}" +
            (f" for database {database!r}" if database else "")]
    for r in records:
        text.append(f"{r.erasure_id}  {r.database}  by {r.os_user}@{r.host}"
                    + (f"  request {r.request_id}" if r.request_id else "") + (f"  reason: {r.reason}" if r.reason else ""))
        text += [f"    {s['sql']}  -- {s.get('rows')} row(s) in production" for s in r.statements]
    return CommandResult({"erasures": docs, "count": len(docs)}, text)
