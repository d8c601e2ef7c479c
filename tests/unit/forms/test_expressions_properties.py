"""Property tests of the expression evaluator against a small reference semantics, and fuzzing.

Quickness is guaranteed by construction (length, nesting, step and regex bounds, tested in
test_expressions.py); here hypothesis' deadline is off so a busy machine cannot fail a test.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forms.expressions import (
    EvalContext,
    ExpressionSyntaxError,
    NotEvaluable,
    evaluate,
    evaluate_bool,
    parse_expression,
    references,
    to_xpath_string,
)

NOW = datetime(2026, 3, 10, 2, 30, tzinfo=UTC)
FIELD_NAMES = ("n0", "n1", "n2")
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ------------------------------------------------------ reference semantics over integers


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Dot:
    pass


@dataclass(frozen=True)
class Neg:
    operand: NumTree


@dataclass(frozen=True)
class Arith:
    op: str
    left: NumTree
    right: NumTree


@dataclass(frozen=True)
class Cmp:
    op: str
    left: NumTree
    right: NumTree


@dataclass(frozen=True)
class Logic:
    op: str
    left: BoolTree
    right: BoolTree


@dataclass(frozen=True)
class Not:
    operand: BoolTree


@dataclass(frozen=True)
class Const:
    value: bool


NumTree = Num | Ref | Dot | Neg | Arith
BoolTree = Cmp | Logic | Not | Const

ARITH_PRECEDENCE = {"+": 5, "-": 5, "*": 6, "div": 6, "mod": 6}
CMP_PRECEDENCE = {"=": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}
LOGIC_PRECEDENCE = {"or": 1, "and": 2}
UNARY, ATOM = 7, 8

num_leaves = st.one_of(
    st.builds(Num, st.integers(0, 1_000)),
    st.builds(Ref, st.sampled_from(FIELD_NAMES)),
    st.just(Dot()),
)
num_trees = st.recursive(
    num_leaves,
    lambda inner: st.one_of(
        st.builds(Neg, inner),
        st.builds(Arith, st.sampled_from(sorted(ARITH_PRECEDENCE)), inner, inner),
    ),
    max_leaves=12,
)
bool_leaves = st.one_of(
    st.builds(Cmp, st.sampled_from(sorted(CMP_PRECEDENCE)), num_trees, num_trees),
    st.builds(Const, st.booleans()),
)
bool_trees = st.recursive(
    bool_leaves,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(Logic, st.sampled_from(sorted(LOGIC_PRECEDENCE)), inner, inner),
    ),
    max_leaves=6,
)
field_values = st.fixed_dictionaries({name: st.integers(-1_000, 1_000) for name in FIELD_NAMES})


def reference_divide(left: float, right: float) -> float:
    if right != 0:
        return left / right
    if left == 0 or math.isnan(left):
        return math.nan
    # IEEE 754: the sign of the infinity is the product of the signs, zero's sign included.
    return math.copysign(math.inf, left) * math.copysign(1.0, right)


def reference_modulo(left: float, right: float) -> float:
    if math.isnan(left) or math.isnan(right) or math.isinf(left) or right == 0:
        return math.nan
    if math.isinf(right):
        return left
    return math.fmod(left, right)  # Java's %, the sign of the dividend


def reference_number(tree: NumTree, fields: dict[str, int], current: int) -> float:
    if isinstance(tree, Num):
        return float(tree.value)
    if isinstance(tree, Ref):
        return float(fields[tree.name])
    if isinstance(tree, Dot):
        return float(current)
    if isinstance(tree, Neg):
        return -reference_number(tree.operand, fields, current)
    left = reference_number(tree.left, fields, current)
    right = reference_number(tree.right, fields, current)
    if tree.op == "+":
        return left + right
    if tree.op == "-":
        return left - right
    if tree.op == "*":
        return left * right
    if tree.op == "div":
        return reference_divide(left, right)
    return reference_modulo(left, right)


def reference_bool(tree: BoolTree, fields: dict[str, int], current: int) -> bool:
    if isinstance(tree, Const):
        return tree.value
    if isinstance(tree, Not):
        return not reference_bool(tree.operand, fields, current)
    if isinstance(tree, Logic):
        left = reference_bool(tree.left, fields, current)
        right = reference_bool(tree.right, fields, current)
        return (left and right) if tree.op == "and" else (left or right)
    a = reference_number(tree.left, fields, current)
    b = reference_number(tree.right, fields, current)
    return {
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[tree.op]


def precedence(tree: NumTree | BoolTree) -> int:
    if isinstance(tree, Arith):
        return ARITH_PRECEDENCE[tree.op]
    if isinstance(tree, Cmp):
        return CMP_PRECEDENCE[tree.op]
    if isinstance(tree, Logic):
        return LOGIC_PRECEDENCE[tree.op]
    if isinstance(tree, Neg):
        return UNARY
    return ATOM


def render(tree: NumTree | BoolTree, minimal: bool) -> str:
    """XPath text; `minimal` uses only the parentheses precedence and associativity need."""

    def child(node: NumTree | BoolTree, needed: int) -> str:
        text = render(node, minimal)
        return f"({text})" if not minimal or precedence(node) < needed else text

    if isinstance(tree, Num):
        return str(tree.value)
    if isinstance(tree, Ref):
        return "${" + tree.name + "}"
    if isinstance(tree, Dot):
        return "."
    if isinstance(tree, Const):
        return "true()" if tree.value else "false()"
    if isinstance(tree, Not):
        return f"not({render(tree.operand, minimal)})"
    if isinstance(tree, Neg):
        return "-" + child(tree.operand, UNARY)
    level = precedence(tree)
    # Left-associative: the right operand needs parentheses at the same level.
    return f"{child(tree.left, level)} {tree.op} {child(tree.right, level + 1)}"


def same_number(actual: object, expected: float) -> bool:
    if not isinstance(actual, float):
        return False
    return (math.isnan(actual) and math.isnan(expected)) or actual == expected


@PROPERTY_SETTINGS
@given(tree=num_trees, fields=field_values, current=st.integers(-50, 50), minimal=st.booleans())
def test_arithmetic_matches_the_reference(
    tree: NumTree, fields: dict[str, int], current: int, minimal: bool
) -> None:
    text = render(tree, minimal)
    ctx = EvalContext(resolve=fields.get, now=NOW, current=current)
    actual = evaluate(parse_expression(text), ctx)
    assert same_number(actual, reference_number(tree, fields, current)), text


@PROPERTY_SETTINGS
@given(tree=bool_trees, fields=field_values, current=st.integers(-50, 50), minimal=st.booleans())
def test_comparison_and_logic_match_the_reference(
    tree: BoolTree, fields: dict[str, int], current: int, minimal: bool
) -> None:
    text = render(tree, minimal)
    ctx = EvalContext(resolve=fields.get, now=NOW, current=current)
    expected = reference_bool(tree, fields, current)
    assert evaluate(parse_expression(text), ctx) is expected, text
    assert evaluate_bool(parse_expression(text), ctx) is expected


@PROPERTY_SETTINGS
@given(tree=bool_trees)
def test_references_are_the_fields_in_the_text(tree: BoolTree) -> None:
    text = render(tree, minimal=True)
    assert references(parse_expression(text)) == {
        name for name in FIELD_NAMES if "${" + name + "}" in text
    }


@PROPERTY_SETTINGS
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_print_without_exponents_and_read_back(number: float) -> None:
    printed = to_xpath_string(number)
    assert "e" not in printed.lower()
    ctx = EvalContext(resolve=lambda name: printed, now=NOW)
    assert evaluate(parse_expression("number(${x})"), ctx) == number


@PROPERTY_SETTINGS
@given(haystack=st.text(max_size=30), needle=st.text(max_size=5))
def test_string_functions_match_python(haystack: str, needle: str) -> None:
    values = {"h": haystack, "n": needle}
    ctx = EvalContext(resolve=values.get, now=NOW)

    def run(text: str) -> object:
        return evaluate(parse_expression(text), ctx)

    assert run("contains(${h}, ${n})") is (needle in haystack)
    assert run("starts-with(${h}, ${n})") is haystack.startswith(needle)
    assert run("ends-with(${h}, ${n})") is haystack.endswith(needle)
    assert run("concat(${h}, ${n}, ${h})") == haystack + needle + haystack
    assert run("string-length(${h})") == float(len(haystack))
    assert run("${h} = ${n}") is (haystack == needle)


@PROPERTY_SETTINGS
@given(
    choices=st.lists(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)),
    wanted=st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8),
    as_list=st.booleans(),
)
def test_selected_matches_membership(choices: list[str], wanted: str, as_list: bool) -> None:
    value: object = choices if as_list else " ".join(choices)
    ctx = EvalContext(resolve=lambda name: value if name == "s" else wanted, now=NOW)
    assert evaluate(parse_expression("selected(${s}, ${w})"), ctx) is (wanted in choices)
    assert evaluate(parse_expression("count-selected(${s})"), ctx) == float(len(choices))


@PROPERTY_SETTINGS
@given(day=st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_dates_as_text_and_as_dates_agree(day: date) -> None:
    values: dict[str, object] = {"text": day.isoformat(), "day": day}
    ctx = EvalContext(resolve=values.get, now=NOW)
    today = NOW.date()
    assert evaluate(parse_expression("${text} = ${day}"), ctx) is True
    assert evaluate(parse_expression("${text} <= today()"), ctx) is (day <= today)
    assert evaluate(parse_expression("${day} > today()"), ctx) is (day > today)
    assert evaluate(parse_expression("date(decimal-date-time(${text}))"), ctx) == day


# -------------------------------------------------------------------------------- fuzzing

raw_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.text(max_size=50),
    st.lists(st.text(max_size=10), max_size=5),
    st.dates(),
    st.datetimes(
        timezones=st.one_of(st.none(), st.just(UTC), st.just(timezone(timedelta(hours=7))))
    ),
    st.times(),
    st.sampled_from(["", "2026-03-10", "2026-03-10T09:00:00+07:00", " 12 ", "NaN", "-0", "1e5"]),
)

TOKENS = [
    *["${a}", "${b}", "${last-saved#a}", "$v", ".", "..", "/", "//", "@", "*", "|"],
    *["(", ")", "[", "]", ",", "::", "'x'", '"y"', "''", "0", "1", "2.5", ".5", "-"],
    *["+", "div", "mod", "=", "!=", "<", "<=", ">", ">=", "and", "or", "child", "node()"],
    *["if(", "not(", "true()", "false()", "selected(", "count-selected(", "regex("],
    *["string-length(", "contains(", "starts-with(", "ends-with(", "concat(", "coalesce("],
    *["today()", "now()", "date(", "decimal-date-time(", "int(", "number(", "string("],
    *["round(", "position(", "jr:choice-name(", "instance(", "count(", "'^(a+)+$'", "x:*"],
    *["'[0-9]{2,}'", "'2026-01-01'", "1 div 0", "0 div 0", "!", "$", "{", "}", "#", "\\"],
]


def assert_contained(text: str, fields: dict[str, object], current: object) -> None:
    """Parsing raises only ExpressionSyntaxError; evaluation only NotEvaluable."""
    try:
        expr = parse_expression(text)
    except ExpressionSyntaxError as error:
        assert 0 <= error.position <= len(text)
        return
    ctx = EvalContext(resolve=fields.get, now=NOW, current=current, position=2)
    try:
        result = evaluate(expr, ctx)
    except NotEvaluable:
        assert evaluate_bool(expr, ctx) is None
        return
    assert isinstance(result, bool | float | str | date | datetime)
    assert isinstance(to_xpath_string(result), str)
    assert evaluate_bool(expr, ctx) in (True, False)


FUZZ_SETTINGS = settings(max_examples=400, deadline=None)


@FUZZ_SETTINGS
@given(text=st.text(max_size=200), a=raw_values, current=raw_values)
def test_random_text_never_escapes(text: str, a: object, current: object) -> None:
    assert_contained(text, {"a": a, "b": a}, current)


@FUZZ_SETTINGS
@given(
    soup=st.lists(st.sampled_from(TOKENS), max_size=40),
    spaced=st.booleans(),
    a=raw_values,
    b=raw_values,
    current=raw_values,
)
def test_token_soup_never_escapes(
    soup: list[str], spaced: bool, a: object, b: object, current: object
) -> None:
    assert_contained((" " if spaced else "").join(soup), {"a": a, "b": b}, current)


@FUZZ_SETTINGS
@given(
    tree=bool_trees,
    wrap=st.lists(st.sampled_from(["not(", "(", "boolean(", "string(", "-"]), max_size=120),
)
def test_deep_wrapping_is_an_error_or_a_value(tree: BoolTree, wrap: list[str]) -> None:
    closers = "".join("" if opener == "-" else ")" for opener in reversed(wrap))
    text = "".join(wrap) + render(tree, minimal=True) + closers
    assert_contained(text, {"n0": 1, "n1": 2, "n2": 3}, 0)


@FUZZ_SETTINGS
@given(
    pattern=st.text(alphabet="ab01^$.*+?|()[]{},\\-dws", max_size=30),
    subject=st.one_of(st.text(max_size=40), st.text(alphabet="ab01", max_size=3_000)),
)
def test_random_regexes_match_or_are_not_evaluable(pattern: str, subject: str) -> None:
    ctx = EvalContext(resolve={"p": pattern, "s": subject}.get, now=NOW)
    try:
        result = evaluate(parse_expression("regex(${s}, ${p})"), ctx)
    except NotEvaluable:
        return
    assert isinstance(result, bool)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Decimal("sNaN"), None),
        (Decimal("1e999999"), True),
        (10**400, None),
        (time(23, 59), False),
        (float("nan"), False),
        (float("-inf"), False),
    ],
)
def test_odd_stored_values_give_an_answer_or_not_checked(
    raw: object, expected: bool | None
) -> None:
    ctx = EvalContext(resolve=lambda name: raw, now=NOW)
    assert evaluate_bool(parse_expression("${a} + 1 > 0"), ctx) is expected
