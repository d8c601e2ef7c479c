"""A guarded `regex()` for constraints: Python's `re` has no timeout, so refuse what could hang.

Before running a pattern we walk Python's own parse tree of it and estimate how many ways the
backtracking engine could split the subject among the pattern's variable repeats and alternatives.
A pattern whose estimate exceeds `REGEX_WORK_LIMIT` for the given subject, a quantifier applied to
something that can itself match in several ways (`(a+)+`, `(ab|a)*`, the classic catastrophic
cases), back-references and conditionals are refused with `UnsafeRegex`; the caller reports the
expression as "not checked". Patterns run with `re.ASCII` (Java's `\\d`/`\\w` are ASCII) and
`re.search` (JavaRosa finds a match anywhere; forms anchor with `^…$`).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

from schemas.errors import CodedError, ErrorCode

MAX_PATTERN_LENGTH = 500
MAX_SUBJECT_LENGTH = 10_000
# Rough bound on backtracking states; `re` explores far more than this many per second.
REGEX_WORK_LIMIT = 2_000_000

# re._parser is private but stable since 3.11 and is exactly the parser `re.compile` uses.
_sre_parser: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")
_MAXREPEAT: int = int(_sre_constants.MAXREPEAT)

_SINGLE_POSITION = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN", "AT", "CATEGORY"})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_ANCHORS = frozenset({"AT_BEGINNING", "AT_BEGINNING_STRING"})


class UnsafeRegex(CodedError):
    """The pattern is invalid, too long, or could backtrack too long on this subject."""

    code = ErrorCode.EXPRESSION_NOT_EVALUABLE


@lru_cache(maxsize=512)
def _compile(pattern: str) -> tuple[re.Pattern[str], Any]:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafeRegex(f"regex pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re.compile(pattern, re.ASCII), _sre_parser.parse(pattern, re.ASCII)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise UnsafeRegex(f"invalid regex pattern: {exc}") from exc


def _cost(items: Any, n: int) -> int:
    """Upper estimate of the ways `items` can match within a subject of length `n` (capped)."""
    total = 1
    for op, av in items:
        name = op.name
        if name in _SINGLE_POSITION:
            cost = 1
        elif name == "SUBPATTERN":
            cost = _cost(av[3], n)
        elif name == "ATOMIC_GROUP":
            cost = _cost(av, n)
        elif name in ("ASSERT", "ASSERT_NOT"):
            cost = _cost(av[1], n)
        elif name == "BRANCH":
            cost = min(sum(_cost(alt, n) for alt in av[1]), REGEX_WORK_LIMIT + 1)
        elif name in _REPEATS:
            low, high, body = av
            body_cost = _cost(body, n)
            if low == high:
                # A fixed count multiplies the body's ambiguity, it adds none of its own.
                cost = 1 if body_cost == 1 or low == 0 else _capped_power(body_cost, low)
            elif body_cost > 1:
                raise UnsafeRegex("regex repeats something that can itself match in several ways")
            else:
                upper = n if high >= _MAXREPEAT else min(high, n)
                cost = max(upper - low + 1, 1)
        else:
            raise UnsafeRegex(f"regex feature {name} is not supported")
        total = min(total * cost, REGEX_WORK_LIMIT + 1)
    return total


def _capped_power(base: int, exponent: int) -> int:
    result = 1
    for _ in range(exponent):
        result *= base
        if result > REGEX_WORK_LIMIT:
            return REGEX_WORK_LIMIT + 1
    return result


def regex_matches(subject: str, pattern: str) -> bool:
    """JavaRosa's `regex(subject, pattern)`; raises `UnsafeRegex` instead of risking a hang."""
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise UnsafeRegex(f"regex subject longer than {MAX_SUBJECT_LENGTH} characters")
    compiled, tree = _compile(pattern)
    n = len(subject)
    try:
        work = _cost(tree, n)
    except RecursionError as exc:
        raise UnsafeRegex("regex pattern nested too deeply") from exc
    anchored = len(tree) > 0 and tree[0][0].name == "AT" and tree[0][1].name in _ANCHORS
    if not anchored:
        # search() retries the whole pattern at every start position.
        work = min(work * (n + 1), REGEX_WORK_LIMIT + 1)
    if work > REGEX_WORK_LIMIT:
        raise UnsafeRegex("regex could take too long on this value")
    return compiled.search(subject) is not None
