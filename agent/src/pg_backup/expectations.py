"""The expectations of ``verify.checks``: parsed once, evaluated against one value a query returned.

An expectation is an operator and a literal: ``> 0``, ``= 0``, ``!= 12.5``, ``= 'ok'``, ``= true``,
``is null``, ``is not null``. Numbers compare as decimals (an integer count, a numeric or a float
all work); quoted strings compare as text (``''`` inside quotes is one quote); ``true``/``false``
compare with a boolean. A value of the wrong kind (text against a number, NULL against anything but
``is null``) never holds: a check that cannot be decided is a failed check, not a passed one.

This module imports nothing from the agent so the configuration validator can use it (it lives
beside config.py, not in verification/, for that reason); ``verification.checks`` evaluates them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Tuple, Union

OPERATORS = ("=", "!=", "<>", ">=", "<=", ">", "<")
_EXPR = re.compile(r"^\s*(>=|<=|!=|<>|=|>|<)\s*(.+?)\s*$", re.S)
_NULL = re.compile(r"^\s*is\s+(not\s+)?null\s*$", re.I)

Literal = Union[Decimal, str, bool, None]


class ExpectationError(ValueError):
    """The expectation text is not one this module understands."""


@dataclass(frozen=True)
class Expectation:
    op: str                 # one of OPERATORS, or "is null" / "is not null"
    literal: Literal
    text: str

    def holds(self, value: Any) -> Tuple[bool, str]:
        """(does it hold, why not) for one value returned by a check query."""
        if self.op in ("is null", "is not null"):
            ok = (value is None) == (self.op == "is null")
            return ok, "" if ok else f"got {_show(value)}, expected {self.op}"
        if value is None:
            return False, f"got NULL, expected {self.text}"
        if isinstance(self.literal, bool):
            if not isinstance(value, bool):
                return False, f"got {_show(value)}, expected a boolean {self.text}"
            left: Any = value
        elif isinstance(self.literal, Decimal):
            if isinstance(value, bool):
                return False, f"got {_show(value)}, expected a number {self.text}"
            try:
                left = Decimal(str(value).strip())
            except InvalidOperation:
                return False, f"got {_show(value)}, which is not a number; expected {self.text}"
        else:
            left = value if isinstance(value, str) else str(value)
        right = self.literal
        if isinstance(self.literal, bool) and self.op not in ("=", "!=", "<>"):
            return False, f"a boolean can only be compared with = or !=, not {self.op}"
        ok = {"=": left == right, "!=": left != right, "<>": left != right, ">": left > right,
              ">=": left >= right, "<": left < right, "<=": left <= right}[self.op]
        return ok, "" if ok else f"got {_show(value)}, expected {self.text}"


def parse_expectation(text: str) -> Expectation:
    """Parse ``'> 0'``, ``"= 'ok'"``, ``'= true'``, ``'is not null'``; raise ExpectationError."""
    if not isinstance(text, str) or not text.strip():
        raise ExpectationError("empty expectation; write an operator and a value, e.g. '> 0' or \"= 'ok'\"")
    m = _NULL.match(text)
    if m:
        return Expectation("is not null" if m.group(1) else "is null", None, text.strip())
    m = _EXPR.match(text)
    if not m:
        raise ExpectationError(f"expectation {text!r} must start with one of {' '.join(OPERATORS)} "
                               f"(or be 'is null' / 'is not null')")
    op, raw = m.group(1), m.group(2)
    literal: Literal
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        inner = raw[1:-1]
        if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
            raise ExpectationError(f"expectation {text!r}: a quote inside a string is written ''")
        literal = inner.replace("''", "'")
    elif raw.lower() in ("true", "false"):
        literal = raw.lower() == "true"
    else:
        try:
            literal = Decimal(raw)
        except InvalidOperation:
            raise ExpectationError(f"expectation {text!r}: {raw!r} is neither a number, a 'quoted string' "
                                   f"nor true/false") from None
        if not literal.is_finite():
            raise ExpectationError(f"expectation {text!r}: {raw!r} is not a finite number")
    return Expectation(op, literal, f"{op} {raw}")


def _show(value: Any) -> str:
    if value is None:
        return "NULL"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
