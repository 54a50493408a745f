"""``audit verify``: check the repository's audit hash chain (pg_backup.audit.chain) and report every
break; exit 4 (integrity) when there is one."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from ..context import Context
from ..errors import EXIT_INTEGRITY, UsageError
from . import CommandResult


def parse_since(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a date (2026-11-01) or an ISO time with a zone "
                         f"(2026-11-01T00:00:00Z)") from None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def audit_verify(ctx: Context, *, action: Optional[str], since: Optional[str]) -> CommandResult:
    from ..audit.chain import verify

    if action != "verify":
        raise UsageError("audit needs an action: verify")
    report = verify(ctx.repo, ctx.clock(), parse_since(since))
    doc = report.as_dict()
    result = CommandResult({"audit_chain": doc, "since": since})
    result.text = [f"audit chain of {ctx.cluster}: {report.entries} entr{'y' if report.entries == 1 else 'ies'} "
                   f"checked, head {report.head_seq}" + (f", began {report.began}" if report.began else ", not begun")]
    if report.unchained_before:
        result.text.append(f"  {report.unchained_before} record(s) unchained, before {report.began or 'the chain'} "
                           f"(written by agents without the chain: accepted)")
    if report.unsigned_before:
        result.text.append(f"  {report.unsigned_before} entr{'y' if report.unsigned_before == 1 else 'ies'} unsigned, "
                           f"before the first signed one (written before signing was enabled: accepted)")
    result.text += [f"  BREAK {b.kind}: {b.message}" for b in report.breaks]
    if report.breaks:
        result.exit_code = EXIT_INTEGRITY
        result.error = (f"the audit chain of {ctx.cluster} is broken in {len(report.breaks)} place(s): restore the "
                        f"objects from the bucket's versions or investigate who wrote them (docs/audit.md)")
    else:
        result.text.append("  intact")
    return result
