"""The ``audit`` command line (``audit verify``), kept beside the chain it checks."""
from __future__ import annotations

from typing import Any


def add_audit_parser(sub: Any, common: Any, parser_class: Any) -> None:
    a = sub.add_parser("audit", parents=[common], help="the repository's audit trail (hash-chained records)")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=parser_class)
    v = asub.add_parser("verify", parents=[common],
                        help="check the audit hash chain: gaps, edited, forged or forked records (exit 4 on a break)")
    v.add_argument("--since", metavar="DATE", help="check only records from this date (2026-11-01) or ISO time on")
