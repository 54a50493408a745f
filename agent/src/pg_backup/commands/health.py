"""``health``: one evaluation of the backups' health, rendered as text, JSON, Nagios or Prometheus."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from ..context import Context
from ..errors import UsageError
from . import CommandResult


def health(ctx: Context, *, output_format: Optional[str], max_age_hours: Sequence[str],
           as_json: bool) -> CommandResult:
    from ..health.audit_chain import audit_chain_checks
    from ..health.checks import evaluate
    from ..health.erasure import erasure_checks, probe_register
    from ..health.probes import gather
    from ..health.render import NAGIOS_CODES, document, render_nagios, render_prometheus, render_text

    overrides: Dict[str, float] = {}
    for item in max_age_hours:
        tier, _, hours = item.partition("=")
        try:
            if tier not in ("daily", "weekly", "monthly"):
                raise ValueError
            overrides[tier] = float(hours)
        except ValueError:
            raise UsageError(f"--max-age-hours {item!r}: expected TIER=HOURS with a tier of daily, weekly, "
                             f"monthly") from None
    manifests, probes = gather(ctx)
    now = ctx.clock()
    checks = evaluate(manifests, ctx.settings.health, probes, now, overrides,
                      archive_timeout_seconds=ctx.settings.wal.archive_timeout_seconds,
                      rpo_target_minutes=ctx.settings.drill.rpo_target_minutes)
    if probes.storage_error is None:  # an unreachable storage is the storage check's finding, once
        checks += erasure_checks(probe_register(ctx.repo), manifests)
        checks += audit_chain_checks(ctx.repo, ctx.settings.paths.state_dir, now)
    doc = document(ctx.cluster, checks)
    fmt = output_format or ("json" if as_json else "text")
    result = CommandResult(dict(doc))
    if fmt == "text":
        result.text = render_text(doc)
    elif fmt == "nagios":
        result.raw = render_nagios(doc) + "\n"
        result.exit_code = NAGIOS_CODES[doc["status"]]
    elif fmt == "prometheus":
        result.raw = render_prometheus(doc, manifests, now, probes)
    return result
