"""Property tests of the expression evaluator against small reference models, and fuzzing.

The reference models restate JavaRosa 5.1.0's rules (XPathArithExpr, XPathEqExpr, XPathCmpExpr,
XPathFuncExpr.toString/toNumeric, DateUtils) independently of the evaluator's code.
Quickness is guaranteed by construction (length, nesting, step and regex bounds, tested in
test_expressions.py); here hypothesis' deadline is off so a busy machine cannot fail a test.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forms.expressions import (
    ExpressionSyntaxError,
    NotEvaluable,
    evaluate,
    evaluate_bool,
    judge,
    parse_expression,
    references,
    to_xpath_string,
)
from tests.unit.forms.instances import AFTERNOON, HANOI, Form, at_value

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


def integer_form(fields: dict[str, int], current: int) -> Form:
    """Integer fields n0..n2 and `x`, the context node's own value."""
    return Form({name: ("integer", value) for name, value in {**fields, "x": current}.items()})


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
    equal = abs(a - b) < 1e-12  # XPathEqExpr: so infinity = infinity is false, as NaN = NaN
    return {
        "=": equal,
        "!=": not equal,
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
    actual = integer_form(fields, current).evaluate(text, "/data/x")
    assert same_number(actual, reference_number(tree, fields, current)), text


@PROPERTY_SETTINGS
@given(tree=bool_trees, fields=field_values, current=st.integers(-50, 50), minimal=st.booleans())
def test_comparison_and_logic_match_the_reference(
    tree: BoolTree, fields: dict[str, int], current: int, minimal: bool
) -> None:
    text = render(tree, minimal)
    ctx = integer_form(fields, current).context("/data/x")
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


# ------------------------------------------------------------------- numbers and text


@PROPERTY_SETTINGS
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_print_as_javarosa_prints_them(number: float) -> None:
    # XPathFuncExpr.toString: '0' near zero, an int if within 1e-12 of (int) d (which saturates),
    # else Double.toString: plain within [1e-3, 1e7), 'd.dddE±n' outside; toNumeric reads no 'E'.
    printed = to_xpath_string(number)
    read = at_value("text", printed).evaluate("number(.)", "/data/x")
    assert isinstance(read, float)
    whole = max(-(2**31), min(2**31 - 1, math.trunc(number)))
    if abs(number) < 1e-12:
        assert printed == "0"
    elif abs(number - whole) < 1e-12:
        assert printed == str(whole)
        assert abs(read - number) < 1e-12
    elif 1e-3 <= abs(number) < 1e7:
        assert re.fullmatch(r"-?[0-9]+\.[0-9]+", printed), printed
        assert read == number
    else:
        assert re.fullmatch(r"-?[1-9]\.[0-9]+E-?[0-9]+", printed), printed
        assert float(printed) == number
        assert math.isnan(read)


@PROPERTY_SETTINGS
@given(
    number=st.decimals(
        min_value=-1_000_000, max_value=1_000_000, places=3, allow_nan=False, allow_infinity=False
    )
)
def test_comma_decimals_read_as_the_number(number: Decimal) -> None:
    # toNumeric replaces ',' by '.' (a Vietnamese tablet types 12,5).
    typed = str(number).replace(".", ",")
    assert at_value("text", typed).evaluate("number(.)", "/data/x") == float(number)


@PROPERTY_SETTINGS
@given(haystack=st.text(max_size=30), needle=st.text(max_size=5))
def test_string_functions_match_java_strings(haystack: str, needle: str) -> None:
    form = Form({"h": ("text", haystack), "n": ("text", needle)})

    def run(text: str) -> object:
        return form.evaluate(text)

    assert run("contains(${h}, ${n})") is (needle in haystack)
    assert run("starts-with(${h}, ${n})") is haystack.startswith(needle)
    assert run("ends-with(${h}, ${n})") is haystack.endswith(needle)
    assert run("concat(${h}, ${n}, ${h})") == haystack + needle + haystack
    assert run("${h} = ${n}") is (haystack == needle)
    # Java strings are UTF-16: a character outside the BMP counts twice.
    assert run("string-length(${h})") == float(len(haystack.encode("utf-16-le")) // 2)


@PROPERTY_SETTINGS
@given(
    text=st.text(
        alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=20
    ),
    cut=st.integers(),
)
def test_substr_splits_and_joins(text: str, cut: int) -> None:
    # Within the BMP a UTF-16 unit is a character; out-of-range indexes are clamped. (Lone
    # surrogates are left out: two of them side by side are one character in Java, and so here.)
    form = at_value("text", text)
    at = min(max(cut if cut >= 0 else len(text) + cut, 0), len(text))
    assert form.evaluate(f"substr(., 0, {cut})", "/data/x") == text[:at]
    assert form.evaluate(f"concat(substr(., 0, {cut}), substr(., {cut}))", "/data/x") == text


@PROPERTY_SETTINGS
@given(
    choices=st.lists(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)),
    wanted=st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8),
    as_list=st.booleans(),
)
def test_selected_matches_membership(choices: list[str], wanted: str, as_list: bool) -> None:
    value: object = choices if as_list else " ".join(choices)
    form = Form({"s": ("select_multiple", value), "w": ("text", wanted)})
    assert form.evaluate("selected(${s}, ${w})") is (wanted in choices)
    assert form.evaluate("count-selected(${s})") == float(len(choices))


# ------------------------------------------------------------------------------ dates


@PROPERTY_SETTINGS
@given(day=st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_dates_as_text_days_and_dates_agree(day: date) -> None:
    form = Form({"text": ("text", day.isoformat()), "day": ("date", day.isoformat())})
    today = AFTERNOON.date()
    # '=' with no number compares text; '<' compares days since 1970-01-01 (daysSinceEpoch).
    assert form.evaluate("${text} = ${day}") is True
    assert form.evaluate("${day} <= today()") is (day <= today)
    assert form.evaluate("${day} > today()") is (day > today)
    days = float((day - date(1970, 1, 1)).days)
    assert form.evaluate("${day} - date('1970-01-01')") == days
    assert form.evaluate("date(${day} - date('1970-01-01')) = ${day}") is True
    assert form.evaluate("format-date(${day}, '%Y-%m-%d')") == day.isoformat()


@PROPERTY_SETTINGS
@given(
    instant=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1)),
    zone=st.sampled_from([HANOI, UTC, timezone(timedelta(hours=-9, minutes=-30))]),
)
def test_today_is_the_clocks_local_day(instant: datetime, zone: timezone) -> None:
    now = instant.replace(tzinfo=UTC).astimezone(zone)
    form = Form({})
    assert form.evaluate("string(today())", now=now) == now.date().isoformat()
    assert form.evaluate("now() = today()", now=now) is True  # the same text
    assert form.evaluate("now() > today()", now=now) is False  # the same day


# -------------------------------------------------------------------------------- fuzzing

FIELD_TYPES = (
    "text",
    "integer",
    "decimal",
    "select_one",
    "select_multiple",
    "date",
    "time",
    "datetime",
    "geopoint",
    "calculate",
    "note",
)
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
    st.sampled_from(
        ["", "2026-03-10", "2026-03-10T09:00:00+07:00", "09:30", " 12 ", "12,5", "NaN", "1e5"]
    ),
)
answers = st.tuples(st.sampled_from(FIELD_TYPES), raw_values)

TOKENS = [
    *["${a}", "${b}", "${r}", "${last-saved#a}", "$v", ".", "..", "/", "//", "@", "*", "|"],
    *["/data/a", "/data/r", "current()", "(", ")", "[", "]", ",", "::", "'x'", '"y"', "''"],
    *["0", "1", "2.5", ".5", "-", "+", "div", "mod", "=", "!=", "<", "<=", ">", ">="],
    *["and", "or", "child", "node()", "if(", "not(", "true()", "false()", "selected("],
    *["count-selected(", "regex(", "string-length(", "contains(", "concat(", "coalesce("],
    *["today()", "now()", "date(", "decimal-date-time(", "decimal-time(", "int(", "number("],
    *["string(", "round(", "position(", "jr:choice-name(", "instance(", "count(", "sum("],
    *["indexed-repeat(", "substr(", "format-date(", "max(", "join(", "once(", "floor("],
    *["'^(a+)+$'", "'(a)\\1'", "x:*", "'[0-9]{2,}'", "'2026-01-01'", "1 div 0", "0 div 0"],
    *["!", "$", "{", "}", "#", "\\"],
]


def fuzz_form(a: tuple[str, object], b: tuple[str, object]) -> Form:
    """Fields a and b of any type and value, beside a repeat r of two instances of a."""
    return Form({"a": a, "b": b, "r": ("repeat", [{"c": a}, {"c": b}])})


def assert_contained(text: str, form: Form, at: str) -> None:
    """Parsing raises only ExpressionSyntaxError; evaluation only NotEvaluable."""
    try:
        expr = parse_expression(text)
    except ExpressionSyntaxError as error:
        assert 0 <= error.position <= len(text)
        return
    for dialect in ("javarosa", "enketo"):
        ctx = form.context(at, dialect=dialect)
        try:
            result = evaluate(expr, ctx)
        except NotEvaluable:
            assert evaluate_bool(expr, ctx) is None
            continue
        assert isinstance(result, bool | float | str | datetime)
        assert isinstance(to_xpath_string(result, HANOI), str)
        assert evaluate_bool(expr, ctx) in (True, False)
    verdict = judge(expr, form.context(at))
    assert verdict.outcome in (True, False, None)
    assert (verdict.outcome is None) == bool(verdict.reason)


FUZZ_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
places = st.sampled_from(["/data", "/data/a", "/data/r[2]/c"])


@FUZZ_SETTINGS
@given(text=st.text(max_size=200), a=answers, at=places)
def test_random_text_never_escapes(text: str, a: tuple[str, object], at: str) -> None:
    assert_contained(text, fuzz_form(a, a), at)


@FUZZ_SETTINGS
@given(
    soup=st.lists(st.sampled_from(TOKENS), max_size=40),
    spaced=st.booleans(),
    a=answers,
    b=answers,
    at=places,
)
def test_token_soup_never_escapes(
    soup: list[str], spaced: bool, a: tuple[str, object], b: tuple[str, object], at: str
) -> None:
    assert_contained((" " if spaced else "").join(soup), fuzz_form(a, b), at)


@FUZZ_SETTINGS
@given(
    tree=bool_trees,
    wrap=st.lists(st.sampled_from(["not(", "(", "boolean(", "string(", "-"]), max_size=120),
)
def test_deep_wrapping_is_an_error_or_a_value(tree: BoolTree, wrap: list[str]) -> None:
    closers = "".join("" if opener == "-" else ")" for opener in reversed(wrap))
    text = "".join(wrap) + render(tree, minimal=True) + closers
    assert_contained(text, integer_form({"n0": 1, "n1": 2, "n2": 3}, 0), "/data/x")


@FUZZ_SETTINGS
@given(
    pattern=st.text(alphabet="ab01^$.*+?|()[]{},\\-dwsp:&", max_size=30),
    subject=st.one_of(st.text(max_size=40), st.text(alphabet="ab01", max_size=3_000)),
)
def test_random_regexes_match_or_are_not_evaluable(pattern: str, subject: str) -> None:
    form = Form({"p": ("text", pattern), "s": ("text", subject)})
    for dialect in ("javarosa", "enketo"):
        try:
            result = form.evaluate("regex(${s}, ${p})", dialect=dialect)
        except NotEvaluable:
            continue
        assert isinstance(result, bool)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (("decimal", Decimal("sNaN")), None),
        (("decimal", Decimal("1e999999")), True),
        (("integer", 10**400), None),
        (("time", time(23, 59)), True),  # a time is a date: days since 1970, not negative
        (("decimal", float("nan")), False),
        (("decimal", float("-inf")), False),
    ],
)
def test_odd_stored_values_give_an_answer_or_not_checked(
    answer: tuple[str, object], expected: bool | None
) -> None:
    ctx = Form({"a": answer}).context()
    assert evaluate_bool(parse_expression("${a} + 1 > 0"), ctx) is expected
