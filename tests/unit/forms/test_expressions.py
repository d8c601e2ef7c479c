"""The XLSForm expression evaluator: each operator and function, and real form rules."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from forms.expressions import (
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING,
    EvalContext,
    ExpressionSyntaxError,
    NotEvaluable,
    evaluate,
    evaluate_bool,
    parse_expression,
    references,
    to_xpath_string,
)

HANOI = timezone(timedelta(hours=7))
NOW = datetime(2026, 3, 10, 2, 30, tzinfo=UTC)  # 09:30 in Hanoi

FIELDS: dict[str, object] = {
    "age": 20,
    "minor_age": 15,
    "services": ["sti_test", "legal_aid"],
    "services_text": "psych_counselling  job_referral",
    "kind": "karaoke",
    "name": "",
    "dob": "1990-05-01",
    "visit_date": date(2026, 3, 1),
    "visited_at": "2026-03-10T09:00:00+07:00",
    "head_count": 0,
    "ratio": 2.5,
    "managed": True,
    "missing": None,
}


def ctx(current: object = None, position: int | None = None, now: datetime = NOW) -> EvalContext:
    return EvalContext(resolve=FIELDS.get, now=now, current=current, position=position)


def run(text: str, current: object = None, position: int | None = None) -> object:
    return evaluate(parse_expression(text), ctx(current, position))


def check(text: str, current: object = None, position: int | None = None) -> bool | None:
    return evaluate_bool(parse_expression(text), ctx(current, position))


# ----------------------------------------------------------------------- real form rules


@pytest.mark.parametrize(
    ("text", "current", "expected"),
    [
        (". >= 0 and . <= 120", 35, True),
        (". >= 0 and . <= 120", 121, False),
        (". >= 0 and . <= 120", -1, False),
        (". >= 0 and . <= 120", "45", True),
        ("${age} >= 18", None, True),
        ("${minor_age} >= 18", None, False),
        ("selected(${services}, 'sti_test')", None, True),
        ("selected(${services}, 'loan')", None, False),
        ("selected(${services_text}, 'job_referral')", None, True),
        ("regex(., '^[A-Z]{2}[0-9]{4}$')", "HN0042", True),
        ("regex(., '^[A-Z]{2}[0-9]{4}$')", "hn0042", False),
        ("regex(., '^[A-Z]{2}[0-9]{4}$')", "HN00421", False),
        ("regex(., '^(0|\\+84)[0-9]{9}$')", "0912345678", True),
        ("regex(., '^(0|\\+84)[0-9]{9}$')", "+84912345678", True),
        (". <= today()", "2026-03-10", True),
        (". <= today()", "2026-03-11", False),
        (". <= today()", date(2026, 3, 9), True),
        (". <= now()", "2026-03-10T09:00:00+07:00", True),
        (". <= now()", "2026-03-10T10:00:00+07:00", False),
        ("${kind} = 'karaoke' or ${kind} = 'massage'", None, True),
        ("${kind} != 'karaoke'", None, False),
        ("not(selected(${services}, 'loan')) and count-selected(${services}) >= 1", None, True),
        ("string-length(.) <= 10", "HN-0042", True),
        ("${head_count} > 0 or ${name} != ''", None, False),
        ("int((today() - ${dob}) div 365.25) >= 18", None, True),
        (". >= ${visit_date}", "2026-03-01", True),
        (". > ${visit_date}", "2026-03-01", False),
        ("${managed} = true()", None, True),
        ("${missing} = ''", None, True),
    ],
)
def test_form_rules(text: str, current: object, expected: bool) -> None:
    assert check(text, current) is expected


def test_if_picks_a_branch() -> None:
    assert run("if(${age} > 1, 'x', 'y')") == "x"
    assert run("if(${head_count} > 1, 'x', 'y')") == "y"
    # The branch not taken is never evaluated, so its unsupported function does no harm.
    assert run("if(true(), 1, count(/data/rep))") == 1.0


def test_relevance_on_an_empty_field_is_false() -> None:
    assert check("${missing} = 'yes'") is False
    assert check("${missing}") is False
    assert check("${name} != ''") is False


# ---------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2", 3.0),
        ("7 - 10", -3.0),
        ("6 * 7", 42.0),
        ("7 div 2", 3.5),
        ("7 mod 3", 1.0),
        ("-7 mod 3", -1.0),
        ("7 mod -3", 1.0),
        ("5.5 mod 2", 1.5),
        ("-3", -3.0),
        ("- -3", 3.0),
        ("--3", 3.0),
        ("2 + 3 * 4", 14.0),
        ("(2 + 3) * 4", 20.0),
        ("10 - 4 - 3", 3.0),
        ("100 div 10 div 5", 2.0),
        ("2 * 3 mod 4", 2.0),
        ("-2 * 3", -6.0),
        ("'4' + '0.5'", 4.5),
        ("true() + true()", 2.0),
        (".5 + 1.", 1.5),
        ("${age} * ${ratio}", 50.0),
    ],
)
def test_arithmetic(text: str, expected: float) -> None:
    assert run(text) == expected


def test_division_by_zero_follows_ieee() -> None:
    assert run("1 div 0") == math.inf
    assert run("-1 div 0") == -math.inf
    assert run("1 div (0 * -1)") == -math.inf
    assert math.isnan(run("0 div 0"))  # type: ignore[arg-type]
    assert math.isnan(run("5 mod 0"))  # type: ignore[arg-type]
    assert to_xpath_string(run("1 div 0")) == "Infinity"  # type: ignore[arg-type]
    assert to_xpath_string(run("0 div 0")) == "NaN"  # type: ignore[arg-type]


def test_arithmetic_on_text_that_is_not_a_number_is_nan() -> None:
    assert math.isnan(run("'abc' + 1"))  # type: ignore[arg-type]
    assert math.isnan(run("${name} + 1"))  # type: ignore[arg-type]
    assert math.isnan(run("'1e3' + 0"))  # type: ignore[arg-type]  # XPath has no exponents
    assert math.isnan(run("'٣' + 0"))  # type: ignore[arg-type]  # nor non-ASCII digits
    with pytest.raises(ExpressionSyntaxError):
        parse_expression("1e3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 = 1", True),
        ("1 = 2", False),
        ("1 != 2", True),
        ("'a' = 'a'", True),
        ("'a' = 'b'", False),
        ("'a' != 'a'", False),
        ("1 = '1.0'", True),  # a number on either side compares numerically
        ("'1' = '1.0'", False),  # two strings compare as strings
        ("0 div 0 = 0 div 0", False),
        ("0 div 0 != 0 div 0", True),
        ("true() = 'yes'", True),  # a boolean on either side compares as booleans
        ("false() = ''", True),
        ("true() = 1", True),
        ("false() = 0", True),
        ("1 < 2", True),
        ("2 < 1", False),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("'10' > '9'", True),  # relational operators are numeric even between strings
        ("'abc' < 1", False),
        ("'abc' >= 1", False),
        ("1 < 2 < 3", True),
        ("3 > 2 > 1", False),  # (3 > 2) is true, i.e. 1, and 1 > 1 is false
        ("1 + 1 = 2 and 2 > 1", True),
        ("1 = 1 or 1 div 0", True),
        ("false() or false() or true()", True),
        ("true() and true() and false()", False),
        ("1 = 2 = false()", True),
    ],
)
def test_comparison_and_logic(text: str, expected: bool) -> None:
    assert run(text) is expected


def test_or_and_short_circuit_around_unsupported_parts() -> None:
    assert run("true() or count(/data/x) > 0") is True
    assert run("false() and count(/data/x) > 0") is False
    with pytest.raises(NotEvaluable):
        run("false() or count(/data/x) > 0")


def test_dates_compare_by_day_whatever_their_form() -> None:
    assert run("date('2026-03-01') = ${visit_date}") is True
    assert run("'2026-03-01' = ${visit_date}") is True
    assert run("${visit_date} < '2026-03-02'") is True
    assert run("today() = '2026-03-10'") is True
    assert run("today() - ${visit_date}") == 9.0
    assert run("now() > today()") is True


# ---------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true()", True),
        ("false()", False),
        ("not(true())", False),
        ("not('')", True),
        ("not(0)", True),
        ("not('false')", False),  # any non-empty string is true
        ("boolean(0 div 0)", False),
        ("selected('a b c', 'b')", True),
        ("selected('a b c', ' b ')", True),
        ("selected('abc', 'b')", False),
        ("selected('', 'a')", False),
        ("count-selected('a b  c')", 3.0),
        ("count-selected('')", 0.0),
        ("count-selected(${services})", 2.0),
        ("string-length('Hà Nội')", 6.0),
        ("string-length('')", 0.0),
        ("string-length(12.50)", 4.0),
        ("contains('karaoke bar', 'oke')", True),
        ("contains('karaoke', 'bar')", False),
        ("contains('abc', '')", True),
        ("starts-with('HN0042', 'HN')", True),
        ("starts-with('HN0042', 'hn')", False),
        ("ends-with('HN0042', '42')", True),
        ("ends-with('HN0042', '41')", False),
        ("concat('a', 1, true(), 2.5)", "a1true2.5"),
        ("concat()", ""),
        ("concat(${kind}, '-', ${age})", "karaoke-20"),
        ("coalesce(${name}, 'fallback')", "fallback"),
        ("coalesce(${kind}, 'fallback')", "karaoke"),
        ("coalesce(${name}, ${missing})", ""),
        ("int(3.9)", 3.0),
        ("int(-3.9)", -3.0),
        ("int('7.2')", 7.0),
        ("number('  12.5 ')", 12.5),
        ("number(true())", 1.0),
        ("number('-.5')", -0.5),
        ("string(3)", "3"),
        ("string(-0.25)", "-0.25"),
        ("string(1 div 4)", "0.25"),
        ("string(0.0000001)", "0.0000001"),
        ("string(true())", "true"),
        ("string(date('2026-01-02'))", "2026-01-02"),
        ("round(2.5)", 3.0),
        ("round(2.49)", 2.0),
        ("round(-2.5)", -2.0),
        ("round(-2.51)", -3.0),
        ("round(3.14159, 2)", 3.14),
        ("round(2.675, 2)", 2.68),
        ("round(-2.5, 0)", -3.0),
        ("round(1234.5, -2)", 1200.0),
        ("decimal-date-time('1970-01-02')", 1.0),
        ("decimal-date-time('1970-01-02T12:00:00Z')", 1.5),
        ("decimal-date-time('1970-01-02T19:00:00+07:00')", 1.5),
        ("decimal-date-time(date('1970-01-11'))", 10.0),
        ("number('2026-03-10') = decimal-date-time(today())", True),
    ],
)
def test_functions(text: str, expected: object) -> None:
    assert run(text) == expected


def test_number_of_empty_text_is_nan() -> None:
    assert math.isnan(run("number('')"))  # type: ignore[arg-type]
    assert math.isnan(run("number('abc')"))  # type: ignore[arg-type]
    assert math.isnan(run("round(number(''))"))  # type: ignore[arg-type]


def test_functions_without_argument_use_the_current_value() -> None:
    assert run("string-length()", current="abcd") == 4.0
    assert run("number()", current="12") == 12.0
    assert run("string()", current=5) == "5"


def test_date_function() -> None:
    assert run("date('2026-03-10')") == date(2026, 3, 10)
    assert run("date('2026-03-10T23:00:00Z')") == date(2026, 3, 10)
    assert run("date(0)") == date(1970, 1, 1)
    assert run("date(20522.7)") == date(2026, 3, 10)
    assert run("date('')") == ""
    assert run("date(today() + 1)") == date(2026, 3, 11)
    for bad in (
        "date('next tuesday')",
        "date('2026-02-30')",
        "date(1 div 0)",
        "date(100000000000)",
    ):
        with pytest.raises(NotEvaluable):
            run(bad)


def test_today_and_now_come_from_the_injected_clock() -> None:
    assert run("today()") == date(2026, 3, 10)
    now = run("now()")
    assert now == NOW
    assert isinstance(now, datetime)
    assert now.utcoffset() == timedelta(0)
    # today() is the date in the clock's own timezone: 23:30 UTC is already tomorrow in Hanoi.
    late = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    assert evaluate(parse_expression("today()"), ctx(now=late)) == date(2026, 3, 10)
    in_hanoi = late.astimezone(HANOI)
    assert evaluate(parse_expression("today()"), ctx(now=in_hanoi)) == date(2026, 3, 11)
    naive = evaluate(parse_expression("now()"), ctx(now=datetime(2026, 1, 1, 8)))
    assert naive == datetime(2026, 1, 1, 8, tzinfo=UTC)


def test_position_inside_a_repeat() -> None:
    assert run("position(..)", position=2) == 2.0
    assert run("position()", position=3) == 3.0
    assert run("position(..) <= 5", position=6) is False
    assert run("concat('member-', position(..))", position=1) == "member-1"
    with pytest.raises(NotEvaluable):
        run("position(..)")
    with pytest.raises(NotEvaluable):
        run("position(${age})", position=1)


def test_regex_refuses_patterns_that_could_hang() -> None:
    long_value = "a" * 5_000 + "!"
    for pattern in ("^(a+)+$", "^(a|aa)*$", "^([a-z]+ ?)*$", "(x+x+)+y", "(a)\\1"):
        with pytest.raises(NotEvaluable):
            run(f"regex(., '{pattern}')", current=long_value)
    # Polynomial blow-ups are refused on long values and run on short ones.
    with pytest.raises(NotEvaluable):
        run("regex(., 'a*a*a*a*b')", current=long_value)
    assert run("regex(., 'a*a*a*a*b')", current="aaab") is True
    assert run("regex(., '^[0-9]+$')", current="1" * 10_000) is True


def test_regex_details() -> None:
    assert run("regex('x HN0042 y', 'HN[0-9]+')") is True  # a match anywhere, as JavaRosa
    assert run("regex('٣', '^\\d$')") is False  # \d is ASCII, as in Java
    assert run("regex('', '^$')") is True
    for broken in ("regex('a', '(')", "regex('a', '\\p{L}')", "regex('a', 'a{2,1}')"):
        with pytest.raises(NotEvaluable):
            run(broken)
    with pytest.raises(NotEvaluable):
        run("regex(., 'a')", current="a" * 20_000)


# ------------------------------------------------------------------- values from fields


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("text", "text"),
        (True, True),
        (7, 7.0),
        (Decimal("2.50"), 2.5),
        (["a", "b"], "a b"),
        (("a",), "a"),
        (date(2026, 1, 2), date(2026, 1, 2)),
        (datetime(2026, 1, 2, 3, 4), datetime(2026, 1, 2, 3, 4, tzinfo=UTC)),
        (time(8, 30), "08:30:00.000"),
    ],
)
def test_field_values_are_converted(raw: object, expected: object) -> None:
    expr = parse_expression("${x}")
    assert evaluate(expr, EvalContext(resolve=lambda name: raw, now=NOW)) == expected


def test_unconvertible_field_values_and_failing_resolvers_are_not_evaluable() -> None:
    expr = parse_expression("${x} = 1")
    with pytest.raises(NotEvaluable):
        evaluate(expr, EvalContext(resolve=lambda name: {"a": 1}, now=NOW))
    with pytest.raises(NotEvaluable):
        evaluate(expr, EvalContext(resolve=lambda name: 10**400, now=NOW))

    def broken(name: str) -> object:
        raise KeyError(name)

    with pytest.raises(NotEvaluable):
        evaluate(expr, EvalContext(resolve=broken, now=NOW))
    assert evaluate_bool(expr, EvalContext(resolve=broken, now=NOW)) is None


# ------------------------------------------------------------- unsupported but valid XPath


@pytest.mark.parametrize(
    "text",
    [
        "/data/visit/kind = 'bar'",
        "../kind",
        "count(${rep})",
        "sum(/data/rep/amount) > 3",
        "instance('wards')/root/item[name = ${ward}]/label",
        "jr:choice-name(${kind}, '${kind}')",
        "current()/../kind",
        "$var + 1",
        "${a} | ${b}",
        "//item[@id = 3]",
        "child::item/text()",
        "pulldata('x', 'y', 'z', ${a})",
        "${last-saved#kind}",
        "..",
        "*",
        "@attr",
    ],
)
def test_unsupported_xpath_parses_and_is_not_evaluable(text: str) -> None:
    expr = parse_expression(text)
    with pytest.raises(NotEvaluable):
        evaluate(expr, ctx())
    assert evaluate_bool(expr, ctx()) is None


# -------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("   ", 0),
        ("1 +", 3),
        ("(1", 2),
        ("1)", 1),
        ("${age} >= ", 10),
        ("${age", 0),
        ("${}", 0),
        ("'unclosed", 0),
        ('"unclosed', 0),
        ("1 ! 2", 2),
        ("a b", 2),
        ("if(1, 2)", 0),
        ("not()", 0),
        ("selected(${a})", 0),
        ("today(1)", 0),
        ("concat('a',)", 11),
        ("1 = = 2", 4),
        ("bogus::x", 0),
        ("{x}", 0),
        (".[1]", 1),
        ("f(", 2),
        ("/data/", 6),
        ("a[1", 3),
    ],
)
def test_syntax_errors_point_at_the_problem(text: str, position: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as caught:
        parse_expression(text)
    assert caught.value.code == "expression_syntax"
    assert caught.value.position == position
    assert caught.value.message


def test_operator_names_are_names_where_a_value_is_expected() -> None:
    assert isinstance(parse_expression("div"), object)  # an element called div
    with pytest.raises(NotEvaluable):
        run("div div div")  # the element div, divided by the element div
    assert run("2 div 2") == 1.0


def test_nesting_is_bounded() -> None:
    ok = "(" * MAX_NESTING + "1" + ")" * MAX_NESTING
    assert run(ok) == 1.0
    # false() is a call too, so 99 not() around it make 100 levels.
    nots = MAX_NESTING - 1
    assert run("not(" * nots + "false()" + ")" * nots) is True
    too_deep = "(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1)
    with pytest.raises(ExpressionSyntaxError):
        parse_expression(too_deep)
    with pytest.raises(ExpressionSyntaxError):
        parse_expression("concat(" * 5_000)


def test_long_flat_expressions_do_not_recurse() -> None:
    terms = 3_000
    assert run("+".join(["1"] * terms)) == float(terms)
    assert run(" - " * 2_000 + "1") == 1.0
    assert run(" and ".join(["true()"] * 700)) is True


def test_length_is_bounded() -> None:
    with pytest.raises(ExpressionSyntaxError):
        parse_expression("1" + " + 1" * MAX_EXPRESSION_LENGTH)


def test_strings_are_bounded() -> None:
    big = "x" * 600_000
    expr = parse_expression("concat(${big}, ${big})")
    with pytest.raises(NotEvaluable):
        evaluate(expr, EvalContext(resolve=lambda name: big, now=NOW))


def test_references_lists_every_field_used() -> None:
    expr = parse_expression(
        "if(selected(${services}, 'x'), ${age} + -${ratio}, count(/data/r[${ward} = 1]))"
        " and ${last-saved#kind} = ."
    )
    assert references(expr) == {"services", "age", "ratio", "ward"}
    assert references(parse_expression("1 + 2")) == set()


def test_xpath_string_of_numbers() -> None:
    assert to_xpath_string(5.0) == "5"
    assert to_xpath_string(-0.0) == "0"
    assert to_xpath_string(1e21) == "1000000000000000000000"
    assert to_xpath_string(0.1) == "0.1"
    assert to_xpath_string(-math.inf) == "-Infinity"
    assert (
        to_xpath_string(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == "2026-01-02T03:04:00.000+00:00"
    )
