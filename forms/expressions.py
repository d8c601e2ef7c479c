"""The ODK XPath subset used by XLSForm `constraint`, `relevant`, `required` and `calculation`.

`parse_expression` tokenizes and parses (XPath 1.0 grammar, plus ODK's `${name}`) into an AST;
`evaluate` walks it. Anything that is syntactically XPath but outside the subset (location paths
such as `/data/x`, `instance(...)`, `$variables`, unknown functions, `jr:choice-name`) parses and
raises `NotEvaluable` when evaluated; the validator reports such a field as "not checked".

Semantics (XPath 1.0 as JavaRosa implements it, with these choices where the spec was silent):
- Values are `bool`, `float` (every number), `str`, `date` and timezone-aware `datetime`.
  `${name}` and `.` are converted from what `resolve`/`current` give: None → '' (empty is the
  empty string), int/float/Decimal → float, a list or tuple (select_multiple) → the
  space-separated string of its items, naive datetimes are taken as UTC, `time` → 'HH:MM:SS.mmm'.
  As in JavaRosa (not XPath node-sets), an empty field is the string '' and so is false.
- Number conversion: booleans 1/0; strings in XPath number syntax (`-?digits(.digits)`, optional
  surrounding whitespace; no exponents, no 'inf'); dates and 'YYYY-MM-DD' strings → days since
  1970-01-01; datetimes and ISO datetime strings → fractional days since the epoch in UTC (what
  `decimal-date-time` returns); anything else (including '') → NaN. So `number('')` is NaN and
  `today() - ${dob}` works when a date field arrives as a string.
- `=`/`!=`: booleans as booleans if either side is one, else numerically if either side is a
  number, else as days if either side is a date/datetime and both convert, else as strings.
  `<`, `<=`, `>`, `>=` always compare numerically; NaN compares false.
- `div` by zero gives ±Infinity or NaN; `mod` is the truncating remainder (sign of the dividend),
  NaN for a zero divisor. Numbers print as XPath does: integers without '.0', 'NaN', 'Infinity'.
- `today()` is the calendar date of `ctx.now` in its own timezone (pass a Hanoi-time `now` for
  Hanoi dates); `now()` is `ctx.now` as an aware UTC datetime.
- `round(x)` is floor(x + 0.5); `round(x, digits)` rounds half away from zero. `int(x)` truncates.
- `string-length` counts code points. `selected`/`count-selected` split on whitespace.
- `regex(value, pattern)` is a search with Python `re` under `forms.xpath_regex` guards.
- `position(..)` and `position()` are `ctx.position`; NotEvaluable when it is None.
- `date(x)` of an unparseable value is NotEvaluable (JavaRosa raises a type error); of '' is ''.
Limits: expressions up to 10,000 characters and 100 levels of nesting (parentheses, calls,
predicates) else `ExpressionSyntaxError`; evaluation stops after 100,000 steps or on strings over
1,000,000 characters with `NotEvaluable`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Final

from forms.xpath_regex import UnsafeRegex, regex_matches
from schemas.errors import CodedError, ErrorCode

MAX_EXPRESSION_LENGTH: Final = 10_000
MAX_NESTING: Final = 100
MAX_EVALUATION_STEPS: Final = 100_000
MAX_STRING_LENGTH: Final = 1_000_000

Value = bool | float | str | date | datetime


class ExpressionSyntaxError(CodedError):
    code = ErrorCode.EXPRESSION_SYNTAX

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.message = message
        self.position = position


class NotEvaluable(CodedError):
    """The expression uses something this evaluator does not support, or exceeded its limits."""

    code = ErrorCode.EXPRESSION_NOT_EVALUABLE


# ---------------------------------------------------------------------------------------- AST


@dataclass(slots=True)
class Literal:
    value: str | float


@dataclass(slots=True)
class FieldRef:
    name: str


@dataclass(slots=True)
class Current:
    pass


@dataclass(slots=True)
class Parent:
    pass


@dataclass(slots=True)
class Negate:
    operand: Node
    times: int  # `- - x` is kept flat so long runs of minus signs cannot nest deeply


@dataclass(slots=True)
class Chain:
    """Left-associative run of operators of one precedence level, kept flat (no deep trees)."""

    level: int
    first: Node
    rest: list[tuple[str, Node]]


@dataclass(slots=True)
class Call:
    name: str
    args: list[Node]


@dataclass(slots=True)
class Unsupported:
    """Valid XPath outside the subset: paths, unions, variables, last-saved references."""

    what: str
    children: list[Node] = field(default_factory=list)


Node = Literal | FieldRef | Current | Parent | Negate | Chain | Call | Unsupported


@dataclass(slots=True)
class Expression:
    source: str
    root: Node


# ----------------------------------------------------------------------------------- tokens

_OR, _AND, _EQ, _REL, _ADD, _MUL = 1, 2, 3, 4, 5, 6
_PRECEDENCE: Final = {
    "or": _OR,
    "and": _AND,
    "=": _EQ,
    "!=": _EQ,
    "<": _REL,
    "<=": _REL,
    ">": _REL,
    ">=": _REL,
    "+": _ADD,
    "-": _ADD,
    "*": _MUL,
    "div": _MUL,
    "mod": _MUL,
}
_OPERATOR_NAMES: Final = frozenset({"and", "or", "div", "mod"})
_NODE_TYPES: Final = frozenset({"node", "text", "comment", "processing-instruction"})
_AXES: Final = frozenset(
    {
        "ancestor",
        "ancestor-or-self",
        "attribute",
        "child",
        "descendant",
        "descendant-or-self",
        "following",
        "following-sibling",
        "namespace",
        "parent",
        "preceding",
        "preceding-sibling",
        "self",
    }
)
_NCNAME = r"[^\W\d][\w.\-]*"
_NAME_RE = re.compile(rf"{_NCNAME}(?::(?:{_NCNAME}|\*))?")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_REF_RE = re.compile(rf"\$\{{(last-saved#)?({_NCNAME})\}}")
_VARIABLE_RE = re.compile(rf"\${_NCNAME}(?::{_NCNAME})?")
_SYMBOLS: Final = ("!=", "<=", ">=", "//", "::", "..", ".", "(", ")", "[", "]", ",", "@", "|", "/")
_SYMBOLS_1: Final = frozenset("+-*=<>")


@dataclass(slots=True)
class _Token:
    kind: str  # num, str, ref, lastsaved, var, name, op, punct, eof
    value: str
    position: int


def _is_operator(token: _Token) -> bool:
    return token.kind == "op"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        previous = tokens[-1] if tokens else None
        # XPath 1.0 §3.7: after a value-like token, `*` multiplies and a name must be an operator.
        operator_expected = previous is not None and not (
            _is_operator(previous)
            or (previous.kind == "punct" and previous.value in ("@", "::", "(", "[", ","))
        )
        if char == "$":
            if match := _REF_RE.match(text, i):
                kind = "lastsaved" if match.group(1) else "ref"
                tokens.append(_Token(kind, match.group(2), i))
            elif match := _VARIABLE_RE.match(text, i):
                tokens.append(_Token("var", match.group(0)[1:], i))
            else:
                raise ExpressionSyntaxError("'$' must start a ${field} reference", i)
            i = match.end()
        elif char in "'\"":
            end = text.find(char, i + 1)
            if end < 0:
                raise ExpressionSyntaxError("text in quotes is not closed", i)
            tokens.append(_Token("str", text[i + 1 : end], i))
            i = end + 1
        elif match := _NUMBER_RE.match(text, i):
            tokens.append(_Token("num", match.group(0), i))
            i = match.end()
        elif match := _NAME_RE.match(text, i):
            name = match.group(0)
            if operator_expected:
                if name not in _OPERATOR_NAMES:
                    raise ExpressionSyntaxError(f"expected an operator, found '{name}'", i)
                tokens.append(_Token("op", name, i))
            else:
                tokens.append(_Token("name", name, i))
            i = match.end()
        elif char == "*":
            tokens.append(_Token("op" if operator_expected else "name", "*", i))
            i += 1
        else:
            symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
            if symbol is None and char in _SYMBOLS_1:
                symbol = char
            if symbol is None:
                raise ExpressionSyntaxError(f"unexpected character '{char}'", i)
            is_op = symbol in _PRECEDENCE or symbol in ("/", "//", "|")
            tokens.append(_Token("op" if is_op else "punct", symbol, i))
            i += len(symbol)
    tokens.append(_Token("eof", "", length))
    return tokens


# ----------------------------------------------------------------------------------- parser

# name -> (minimum, maximum) argument count; None means any number.
_ARITY: Final[dict[str, tuple[int, int | None]]] = {
    "true": (0, 0),
    "false": (0, 0),
    "not": (1, 1),
    "boolean": (1, 1),
    "if": (3, 3),
    "selected": (2, 2),
    "count-selected": (1, 1),
    "string-length": (0, 1),
    "regex": (2, 2),
    "contains": (2, 2),
    "starts-with": (2, 2),
    "ends-with": (2, 2),
    "concat": (0, None),
    "coalesce": (1, None),
    "today": (0, 0),
    "now": (0, 0),
    "date": (1, 1),
    "decimal-date-time": (1, 1),
    "int": (1, 1),
    "number": (0, 1),
    "string": (0, 1),
    "round": (1, 2),
    "position": (0, 1),
}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, kind: str, value: str | None = None, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == kind and (value is None or token.value == value)

    def expect(self, kind: str, value: str, what: str) -> _Token:
        if not self.at(kind, value):
            raise self.error(f"expected {what}")
        return self.advance()

    def error(self, message: str) -> ExpressionSyntaxError:
        token = self.peek()
        found = "the end of the expression" if token.kind == "eof" else f"'{token.value}'"
        return ExpressionSyntaxError(f"{message}, found {found}", token.position)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionSyntaxError(
                f"expression is nested more than {MAX_NESTING} levels deep", self.peek().position
            )

    def parse(self) -> Node:
        if self.at("eof"):
            raise ExpressionSyntaxError("the expression is empty", 0)
        root = self.binary()
        if not self.at("eof"):
            raise self.error("expected an operator or the end of the expression")
        return root

    def binary(self) -> Node:
        # Operator precedence by shunting-yard: binary operators cost no recursion.
        operands = [self.unary()]
        operators: list[tuple[int, str]] = []
        while self.at("op") and self.peek().value in _PRECEDENCE:
            op = self.advance().value
            level = _PRECEDENCE[op]
            while operators and operators[-1][0] >= level:
                self._reduce(operands, operators)
            operators.append((level, op))
            operands.append(self.unary())
        while operators:
            self._reduce(operands, operators)
        return operands[0]

    @staticmethod
    def _reduce(operands: list[Node], operators: list[tuple[int, str]]) -> None:
        level, op = operators.pop()
        right = operands.pop()
        left = operands.pop()
        if isinstance(left, Chain) and left.level == level:
            left.rest.append((op, right))  # ((a - b) - c) is the flat chain a - b - c
            operands.append(left)
        else:
            operands.append(Chain(level, left, [(op, right)]))

    def unary(self) -> Node:
        times = 0
        while self.at("op", "-"):
            self.advance()
            times += 1
        operand = self.union()
        return Negate(operand, times) if times else operand

    def union(self) -> Node:
        first = self.path()
        if not self.at("op", "|"):
            return first
        children = [first]
        while self.at("op", "|"):
            self.advance()
            children.append(self.path())
        return Unsupported("a node-set union '|'", children)

    def starts_step(self) -> bool:
        token = self.peek()
        if token.kind == "punct":
            return token.value in (".", "..", "@")
        if token.kind != "name":
            return False
        if self.at("punct", "(", 1):
            return token.value in _NODE_TYPES
        return True

    def path(self) -> Node:
        if self.at("op", "/"):
            self.advance()
            children = self.relative_path() if self.starts_step() else []
            return Unsupported("an absolute path", children)
        if self.at("op", "//"):
            self.advance()
            return Unsupported("an absolute path", self.relative_path())
        if self.starts_step():
            first_token = self.peek()
            start = self.index
            children = self.relative_path()
            single = self.index == start + 1
            if single and first_token.value == "." and first_token.kind == "punct":
                return Current()
            if single and first_token.value == ".." and first_token.kind == "punct":
                return Parent()
            return Unsupported("a path", children)
        primary = self.primary()
        predicates = self.predicates()
        if self.at("op", "/") or self.at("op", "//"):
            self.advance()
            return Unsupported("a path", [primary, *predicates, *self.relative_path()])
        if predicates:
            return Unsupported("a predicate '[...]'", [primary, *predicates])
        return primary

    def relative_path(self) -> list[Node]:
        children = self.step()
        while self.at("op", "/") or self.at("op", "//"):
            self.advance()
            children.extend(self.step())
        return children

    def step(self) -> list[Node]:
        if self.at("punct", ".") or self.at("punct", ".."):
            self.advance()
            return []
        if self.at("punct", "@"):
            self.advance()
        elif self.at("name") and self.at("punct", "::", 1):
            axis = self.peek()
            if axis.value not in _AXES:
                raise ExpressionSyntaxError(f"'{axis.value}' is not an XPath axis", axis.position)
            self.advance()
            self.advance()
        self.node_test()
        return self.predicates()

    def node_test(self) -> None:
        if not self.at("name"):
            raise self.error("expected a name")
        name = self.advance().value
        if name in _NODE_TYPES and self.at("punct", "("):
            self.advance()
            if name == "processing-instruction" and self.at("str"):
                self.advance()
            self.expect("punct", ")", "')'")

    def predicates(self) -> list[Node]:
        found: list[Node] = []
        while self.at("punct", "["):
            self.advance()
            self.enter()
            found.append(self.binary())
            self.expect("punct", "]", "']'")
            self.depth -= 1
        return found

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "num":
            self.advance()
            return Literal(float(token.value))
        if token.kind == "str":
            self.advance()
            return Literal(token.value)
        if token.kind == "ref":
            self.advance()
            return FieldRef(token.value)
        if token.kind == "lastsaved":
            self.advance()
            return Unsupported("a last-saved reference")
        if token.kind == "var":
            self.advance()
            return Unsupported(f"the variable ${token.value}")
        if token.kind == "punct" and token.value == "(":
            self.advance()
            self.enter()
            inner = self.binary()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            return inner
        if token.kind == "name" and self.at("punct", "(", 1):
            return self.call()
        raise self.error("expected a value")

    def call(self) -> Node:
        name_token = self.advance()
        self.advance()  # "("
        self.enter()
        args: list[Node] = []
        if not self.at("punct", ")"):
            args.append(self.binary())
            while self.at("punct", ","):
                self.advance()
                args.append(self.binary())
        self.expect("punct", ")", "',' or ')'")
        self.depth -= 1
        name = name_token.value
        if name in _ARITY:
            low, high = _ARITY[name]
            if len(args) < low or (high is not None and len(args) > high):
                wanted = str(low) if low == high else f"{low} to {high}" if high else f"{low}+"
                raise ExpressionSyntaxError(
                    f"{name}() takes {wanted} argument(s), not {len(args)}", name_token.position
                )
        return Call(name, args)


def parse_expression(text: str) -> Expression:
    """Parse an XLSForm expression; raises `ExpressionSyntaxError` and nothing else."""
    if not isinstance(text, str):
        raise ExpressionSyntaxError("the expression is not text", 0)
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(
            f"expression is longer than {MAX_EXPRESSION_LENGTH} characters", MAX_EXPRESSION_LENGTH
        )
    try:
        return Expression(text, _Parser(_tokenize(text)).parse())
    except RecursionError as exc:  # backstop; MAX_NESTING keeps well below the limit
        raise ExpressionSyntaxError("expression is nested too deeply", 0) from exc


def references(expr: Expression) -> set[str]:
    """Names used as `${name}` (last-saved references excluded)."""
    found: set[str] = set()
    pending: list[Node] = [expr.root]
    while pending:
        node = pending.pop()
        if isinstance(node, FieldRef):
            found.add(node.name)
        elif isinstance(node, Negate):
            pending.append(node.operand)
        elif isinstance(node, Chain):
            pending.append(node.first)
            pending.extend(operand for _, operand in node.rest)
        elif isinstance(node, Call):
            pending.extend(node.args)
        elif isinstance(node, Unsupported):
            pending.extend(node.children)
    return found


# -------------------------------------------------------------------------------- evaluation

_EPOCH_DATE: Final = date(1970, 1, 1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_XPATH_NUMBER_RE = re.compile(r"\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*")
_DATE_RE = re.compile(r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2})\s*")
_DATETIME_RE = re.compile(
    r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)\s*"
)
_ROUNDING_CONTEXT: Final = Context(prec=1000, Emax=10_000, Emin=-10_000)


@dataclass
class EvalContext:
    resolve: Callable[[str], object]  # ${name} -> the field's value (None when empty/absent)
    now: datetime  # injected clock for today()/now()
    current: object = None  # value of `.`
    position: int | None = None  # 1-based index in the innermost repeat, for position(..)


def _parse_date(text: str) -> date | None:
    if match := _DATE_RE.fullmatch(text):
        try:
            return date.fromisoformat(match.group(1))
        except ValueError:
            return None
    return None


def _parse_datetime(text: str) -> datetime | None:
    if match := _DATETIME_RE.fullmatch(text):
        try:
            return _as_utc(datetime.fromisoformat(match.group(1)))
        except ValueError:
            return None
    return None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days(value: date | datetime) -> float:
    if isinstance(value, datetime):
        return (value - _EPOCH).total_seconds() / 86_400
    return float((value - _EPOCH_DATE).days)


def _check_length(text: str) -> str:
    if len(text) > MAX_STRING_LENGTH:
        raise NotEvaluable(f"text longer than {MAX_STRING_LENGTH} characters")
    return text


def to_value(raw: object) -> Value:
    """Convert a field value as stored (None, numbers, text, lists, dates) to an XPath value."""
    if raw is None:
        return ""
    if isinstance(raw, bool | str):
        return _check_length(raw) if isinstance(raw, str) else raw
    if isinstance(raw, int | float | Decimal):
        try:
            return float(raw)
        except (OverflowError, ValueError) as exc:
            raise NotEvaluable("number out of range") from exc
    if isinstance(raw, datetime):
        return _as_utc(raw)
    if isinstance(raw, date):
        return raw
    if isinstance(raw, time):
        return raw.isoformat(timespec="milliseconds")
    if isinstance(raw, list | tuple):
        return _check_length(" ".join(to_xpath_string(to_value(item)) for item in raw))
    raise NotEvaluable(f"a value of type {type(raw).__name__} cannot be evaluated")


def to_xpath_string(value: Value) -> str:
    """XPath string() of a value; use it to store a calculation's result."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_to_string(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _number_to_string(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == math.floor(number):
        return str(int(number))
    return format(Decimal(repr(number)), "f")


def to_number(value: Value) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, date):
        return _days(value)
    if match := _XPATH_NUMBER_RE.fullmatch(value):
        return float(match.group(1))
    moment = _parse_date(value) or _parse_datetime(value)
    return _days(moment) if moment is not None else math.nan


def to_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _equals(left: Value, right: Value) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return to_bool(left) == to_bool(right)
    if isinstance(left, float) or isinstance(right, float):
        return to_number(left) == to_number(right)
    if isinstance(left, date) or isinstance(right, date):
        left_days, right_days = to_number(left), to_number(right)
        if not (math.isnan(left_days) or math.isnan(right_days)):
            return left_days == right_days
    return to_xpath_string(left) == to_xpath_string(right)


def _compare(op: str, left: float, right: float) -> bool:
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _divide(left: float, right: float) -> float:
    if right == 0:
        if left == 0 or math.isnan(left):
            return math.nan
        return math.copysign(math.inf, left) * math.copysign(1.0, right)
    return left / right


def _modulo(left: float, right: float) -> float:
    if right == 0 or math.isnan(left) or math.isnan(right) or math.isinf(left):
        return math.nan
    if math.isinf(right):
        return left
    return math.fmod(left, right)


def _arithmetic(op: str, left: float, right: float) -> float:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "div":
        return _divide(left, right)
    return _modulo(left, right)


def _round_half_up(number: float, digits: float) -> float:
    if math.isnan(number) or math.isinf(number) or math.isnan(digits):
        return number if not math.isnan(digits) else math.nan
    places = int(digits)
    if abs(places) > 400:
        raise NotEvaluable("round() digits out of range")
    exponent = Decimal(1).scaleb(-places)
    rounded = Decimal(repr(number)).quantize(exponent, ROUND_HALF_UP, _ROUNDING_CONTEXT)
    return float(rounded)


def _round(number: float) -> float:
    if math.isnan(number) or math.isinf(number):
        return number
    floor = math.floor(number)
    return float(floor + 1 if number - floor >= 0.5 else floor)


def _to_date(value: Value) -> Value:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise NotEvaluable("date() of a number that is not finite")
        try:
            return _EPOCH_DATE + timedelta(days=math.floor(value))
        except OverflowError as exc:
            raise NotEvaluable("date() out of range") from exc
    if isinstance(value, str):
        if value.strip() == "":
            return ""
        if (day := _parse_date(value)) is not None:
            return day
        if (moment := _parse_datetime(value)) is not None:
            return moment.date()
    raise NotEvaluable(f"date() cannot convert {to_xpath_string(value)[:40]!r}")


class _Evaluation:
    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.steps = 0

    def eval(self, node: Node) -> Value:
        self.steps += 1
        if self.steps > MAX_EVALUATION_STEPS:
            raise NotEvaluable(f"evaluation took more than {MAX_EVALUATION_STEPS} steps")
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, FieldRef):
            return to_value(self.ctx.resolve(node.name))
        if isinstance(node, Current):
            return to_value(self.ctx.current)
        if isinstance(node, Chain):
            return self.chain(node)
        if isinstance(node, Negate):
            number = to_number(self.eval(node.operand))
            return -number if node.times % 2 else number
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Parent):
            raise NotEvaluable("'..' is only supported as position(..)")
        raise NotEvaluable(f"{node.what} is not supported")

    def chain(self, node: Chain) -> Value:
        if node.level == _OR:
            operands = [node.first, *(operand for _, operand in node.rest)]
            return any(to_bool(self.eval(operand)) for operand in operands)
        if node.level == _AND:
            operands = [node.first, *(operand for _, operand in node.rest)]
            return all(to_bool(self.eval(operand)) for operand in operands)
        value = self.eval(node.first)
        for op, operand in node.rest:
            right = self.eval(operand)
            if node.level == _EQ:
                value = _equals(value, right) == (op == "=")
            elif node.level == _REL:
                value = _compare(op, to_number(value), to_number(right))
            else:
                value = _arithmetic(op, to_number(value), to_number(right))
        return value

    def text(self, node: Node) -> str:
        return to_xpath_string(self.eval(node))

    def call(self, node: Call) -> Value:
        name, args = node.name, node.args
        if name == "if":
            return self.eval(args[1] if to_bool(self.eval(args[0])) else args[2])
        if name == "coalesce":
            for arg in args:
                value = self.eval(arg)
                if to_xpath_string(value) != "":
                    return value
            return ""
        if name == "position":
            if args and not isinstance(args[0], Parent):
                raise NotEvaluable("position() is only supported as position(..)")
            if self.ctx.position is None:
                raise NotEvaluable("position(..) outside a repeat")
            return float(self.ctx.position)
        if name not in _ARITY:
            raise NotEvaluable(f"the function {name}() is not supported")
        values = [self.eval(arg) for arg in args]
        if not values and name in ("string-length", "number", "string"):
            values = [to_value(self.ctx.current)]  # XPath: no argument means the context node
        return _FUNCTIONS[name](self.ctx, values)


def _selected(values: list[Value]) -> bool:
    return to_xpath_string(values[1]).strip() in to_xpath_string(values[0]).split()


def _regex(values: list[Value]) -> bool:
    try:
        return regex_matches(to_xpath_string(values[0]), to_xpath_string(values[1]))
    except UnsafeRegex as exc:
        raise NotEvaluable(str(exc)) from exc


def _concat(values: list[Value]) -> str:
    return _check_length("".join(to_xpath_string(value) for value in values))


def _int(number: float) -> float:
    return number if math.isnan(number) or math.isinf(number) else float(math.trunc(number))


def _today(ctx: EvalContext) -> date:
    return ctx.now.date()


def _decimal_date_time(value: Value) -> float:
    if isinstance(value, date):
        return _days(value)
    return to_number(value)


_Function = Callable[[EvalContext, list[Value]], Value]
_FUNCTIONS: Final[dict[str, _Function]] = {
    "true": lambda ctx, v: True,
    "false": lambda ctx, v: False,
    "not": lambda ctx, v: not to_bool(v[0]),
    "boolean": lambda ctx, v: to_bool(v[0]),
    "selected": lambda ctx, v: _selected(v),
    "count-selected": lambda ctx, v: float(len(to_xpath_string(v[0]).split())),
    "string-length": lambda ctx, v: float(len(to_xpath_string(v[0]))),
    "regex": lambda ctx, v: _regex(v),
    "contains": lambda ctx, v: to_xpath_string(v[1]) in to_xpath_string(v[0]),
    "starts-with": lambda ctx, v: to_xpath_string(v[0]).startswith(to_xpath_string(v[1])),
    "ends-with": lambda ctx, v: to_xpath_string(v[0]).endswith(to_xpath_string(v[1])),
    "concat": lambda ctx, v: _concat(v),
    "today": lambda ctx, v: _today(ctx),
    "now": lambda ctx, v: _as_utc(ctx.now),
    "date": lambda ctx, v: _to_date(v[0]),
    "decimal-date-time": lambda ctx, v: _decimal_date_time(v[0]),
    "int": lambda ctx, v: _int(to_number(v[0])),
    "number": lambda ctx, v: to_number(v[0]),
    "string": lambda ctx, v: to_xpath_string(v[0]),
    "round": lambda ctx, v: (
        _round(to_number(v[0])) if len(v) == 1 else _round_half_up(to_number(v[0]), to_number(v[1]))
    ),
}


def evaluate(expr: Expression, ctx: EvalContext) -> Value:
    """Evaluate; raises `NotEvaluable` for anything unsupported or over limits, nothing else."""
    try:
        return _Evaluation(ctx).eval(expr.root)
    except NotEvaluable:
        raise
    except Exception as exc:  # a failing resolve(), a RecursionError: never crash the validator
        raise NotEvaluable(f"evaluation failed: {type(exc).__name__}") from exc


def evaluate_bool(expr: Expression, ctx: EvalContext) -> bool | None:
    """boolean() of the result, or None when the expression cannot be checked."""
    try:
        return to_bool(evaluate(expr, ctx))
    except NotEvaluable:
        return None
