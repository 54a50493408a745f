"""``compliance report``: what is kept, until when, how it is protected, and the evidence that it can be
restored, for one cluster (docs/compliance.md). Markdown, JSON (``schema_version``) or PDF (charts extra)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional

from ..charts import ChartUnavailable, toolkit
from ..compliance.collect import build_report
from ..compliance.markdown import day, render_markdown, size
from ..compliance.period import parse_period
from ..context import Context
from ..errors import UsageError
from . import CommandResult

FORMATS = ("md", "json", "pdf")


def compliance_report(ctx: Context, *, action: Optional[str], output_format: Optional[str], output: Optional[str],
                      period: Optional[str], since: Optional[str], until: Optional[str], as_json: bool) -> CommandResult:
    if action != "report":
        raise UsageError("compliance needs an action: report")
    fmt = output_format or "md"
    if fmt == "pdf":
        if not output:
            raise UsageError("--format pdf writes a file: add --output FILE")
        try:
            toolkit()
        except ChartUnavailable:
            raise UsageError("--format pdf needs matplotlib: install pg-backup[charts] "
                             "(pip install 'pg-backup[charts]'; role agent: agent_extras: [charts])") from None
    if output:
        directory = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(directory):
            raise UsageError(f"--output {output}: directory {directory} does not exist")
    chosen = parse_period(period, since, until, ctx.clock())
    doc = build_report(ctx, chosen)
    if fmt == "pdf":
        from ..compliance.pdf import render_pdf

        data = render_pdf(doc)
    elif fmt == "json":
        data = (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()
    else:
        data = render_markdown(doc).encode()
    fields: Dict[str, Any] = {"format": fmt, "report": doc}
    result = CommandResult(fields, _summary(doc))
    if output:
        try:
            _write(output, data)
        except OSError as exc:
            raise UsageError(f"cannot write --output {output}: {exc.strerror}") from None
        fields.update(output=os.path.abspath(output), bytes=len(data))
        result.text.append(f"  {fmt} report written to {fields['output']} ({len(data)} bytes)")
    elif not as_json:
        result.raw = data.decode()
    return result


def _summary(doc: Dict[str, Any]) -> list:
    tiers = ", ".join(f"{t} {v['count']}" for t, v in doc["tiers"].items())
    er = doc["erasures"]
    return [f"compliance report of cluster {doc['cluster']}, period {doc['period']['label']}: "
            f"{doc['backups_total']} backup(s) ({tiers}; "
            f"{size(sum(v['size_bytes'] for v in doc['tiers'].values()))}), {er['count']} erasure record(s)"
            + (f" complete everywhere by {day(er['complete_everywhere_at'])}" if er["complete_everywhere_at"] else ""),
            f"  {doc['audit']['count']} audited operation(s) in the period"]


def _write(path: str, data: bytes) -> None:
    """Whole or not at all: a temporary file in the same directory, renamed over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".compliance-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
