"""The ``compliance`` command line (``compliance report``), kept beside the report it drives."""
from __future__ import annotations

from typing import Any


def add_compliance_parser(sub: Any, common: Any, parser_class: Any) -> None:
    c = sub.add_parser("compliance", parents=[common],
                       help="compliance evidence: what is kept, until when, how it is protected, recovery proofs")
    csub = c.add_subparsers(dest="compliance_command", metavar="ACTION", parser_class=parser_class)
    r = csub.add_parser("report", parents=[common],
                        help="one document of the cluster: backups per tier with expiry and Object Lock, oldest "
                             "recoverable points, last verification and drill, erasure register, audit trail")
    r.add_argument("--format", dest="report_format", choices=("md", "json", "pdf"), default=None,
                   help="md (default), json (schema_version) or pdf (needs pg-backup[charts]; with --output)")
    r.add_argument("--output", "-o", metavar="FILE", help="write the document here (default: standard output)")
    r.add_argument("--period", metavar="P", help="reporting period: 2026, 2026-11, 2026-Q4 or 90d (default 30d)")
    r.add_argument("--since", metavar="DATE", help="period start: a date (2026-11-01) or an ISO time with a zone")
    r.add_argument("--until", metavar="DATE", help="period end: a date (included) or an ISO time (default now)")
