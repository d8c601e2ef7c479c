"""The ODK XPath of XLSForm `constraint`, `relevant`, `required` and `calculation`, evaluated as
JavaRosa 5.1 (the engine inside ODK Collect) evaluates it.

`parse_expression` tokenizes and parses (XPath 1.0 grammar, plus ODK's `${name}`) into an AST;
`evaluate` walks it over an instance tree of `Node`s (the form's fields with a submission's values)
from a context node; `judge` gives a rule's verdict, or None where it cannot be decided.

Semantics follow `org.javarosa.xpath` at v5.1.0 (see docs/protocol.md, "Validation"):
- Values are `bool`, `float`, `str`, an instant (an aware `datetime`, for date, dateTime and time
  alike, read in the form's zone: the zone of `ctx.now`), and node-sets. `${name}` is the field's
  absolute path, pinned to the context's own repeat instance (JavaRosa's contextualisation); a
  node-set of one node gives its value, of none '', of several an error ("use indexed-repeat()").
  Empty values are ''. Integers and decimals are numbers; select_multiple is its space-separated
  choices.
- Numbers from text: ',' reads as '.', surrounding spaces and control characters are trimmed, and
  only digits, '-' and '.' are allowed ('12,5' is 12.5, '1e3' is NaN). Dates count whole local days
  since 1970-01-01; `abs()`, `pow()` and the like use fractional days.
- `=`: booleans if either side is one, numbers (within 1e-12) if either is a number, else text
  (a date's text is its local 'YYYY-MM-DD'). `<`, `>`: numbers.
- Text is UTF-16: `string-length('😀')` is 2, `substr()` counts UTF-16 units.
- `regex()` must match the whole value (RE2, see `forms.xpath_regex`).
- `round(x, n)` rounds halves up for positive and towards zero for negative numbers; `max()` and
  `min()` keep JavaRosa's starting values (max(-5) is 4.9E-324).
- `today()` is local midnight and `now()` the instant of `ctx.now`.
Where JavaRosa stops with an error (a function it lacks, `selected()` of a number, a repeated field)
the server raises `NotEvaluable`: it does not guess a value Collect never computed.
`judge` also reads the rule as Enketo's evaluator would where the two engines are known to differ
(`regex()` matches anywhere in Enketo; Enketo has `floor()` and `ceiling()`); a rule is decided false
only if both read it false.
Limits: expressions up to 10,000 characters and 100 levels of nesting, else
`ExpressionSyntaxError`; evaluation stops after 100,000 steps or on strings over 1,000,000
characters with `NotEvaluable`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, tzinfo
from decimal import ROUND_HALF_DOWN, ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING, Final
from typing import Literal as TypingLiteral

from forms import javarosa_dates as dates
from forms.xpath_regex import UnsafeRegex, regex_matches
from schemas.errors import CodedError, ErrorCode

if TYPE_CHECKING:
    from schemas.forms import Field

MAX_EXPRESSION_LENGTH: Final = 10_000
MAX_NESTING: Final = 100
MAX_EVALUATION_STEPS: Final = 100_000
MAX_STRING_LENGTH: Final = 1_000_000


class ExpressionSyntaxError(CodedError):
    code = ErrorCode.EXPRESSION_SYNTAX

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.message = message
        self.position = position


class NotEvaluable(CodedError):
    """The server cannot evaluate the expression exactly as the engines do, or it hit a limit."""

    code = ErrorCode.EXPRESSION_NOT_EVALUABLE


# ---------------------------------------------------------------------------------------- AST


@dataclass(slots=True)
class Literal:
    value: str | float


@dataclass(slots=True)
class FieldRef:
    name: str


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
class Step:
    axis: str  # child, self, parent, attribute, descendant-or-self, ...
    test: str  # a name, '*', or 'node()'
    predicates: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class Path:
    """A location path: absolute (`/data/x`), relative (`../x`, `.`) or from a value (`current()/..`)."""

    absolute: bool
    steps: list[Step]
    start: Node | None = None
    filters: list[Node] = field(default_factory=list)  # predicates on `start`


@dataclass(slots=True)
class Unsupported:
    """Valid XPath the server does not evaluate: unions, variables, last-saved references."""

    what: str
    children: list[Node] = field(default_factory=list)


Node = Literal | FieldRef | Negate | Chain | Call | Path | Unsupported


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

# name -> (minimum, maximum) argument count; None means any number. Functions not listed parse
# with any arguments and are judged when evaluated.
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
        if self.at("op", "/") or self.at("op", "//"):
            steps: list[Step] = []
            if self.advance().value == "//":
                steps.append(Step("descendant-or-self", "node()"))
                steps.extend(self.relative_path())
            elif self.starts_step():
                steps.extend(self.relative_path())
            return Path(True, steps)
        if self.starts_step():
            return Path(False, self.relative_path())
        primary = self.primary()
        filters = self.predicates()
        if self.at("op", "/") or self.at("op", "//"):
            steps = [Step("descendant-or-self", "node()")] if self.advance().value == "//" else []
            steps.extend(self.relative_path())
            return Path(False, steps, primary, filters)
        if filters:
            return Path(False, [], primary, filters)
        return primary

    def relative_path(self) -> list[Step]:
        steps = [self.step()]
        while self.at("op", "/") or self.at("op", "//"):
            if self.advance().value == "//":
                steps.append(Step("descendant-or-self", "node()"))
            steps.append(self.step())
        return steps

    def step(self) -> Step:
        if self.at("punct", "."):
            self.advance()
            return Step("self", "node()")
        if self.at("punct", ".."):
            self.advance()
            return Step("parent", "node()")
        axis = "child"
        if self.at("punct", "@"):
            self.advance()
            axis = "attribute"
        elif self.at("name") and self.at("punct", "::", 1):
            token = self.peek()
            if token.value not in _AXES:
                raise ExpressionSyntaxError(f"'{token.value}' is not an XPath axis", token.position)
            axis = token.value
            self.advance()
            self.advance()
        return Step(axis, self.node_test(), self.predicates())

    def node_test(self) -> str:
        if not self.at("name"):
            raise self.error("expected a name")
        name = self.advance().value
        if name in _NODE_TYPES and self.at("punct", "("):
            self.advance()
            if name == "processing-instruction" and self.at("str"):
                self.advance()
            self.expect("punct", ")", "')'")
            return f"{name}()"
        return name

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
            return Unsupported(
                "a last-saved reference (the tablet's previous form is not sent to the server)"
            )
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


def _children(node: Node) -> list[Node]:
    if isinstance(node, Negate):
        return [node.operand]
    if isinstance(node, Chain):
        return [node.first, *(operand for _, operand in node.rest)]
    if isinstance(node, Call | Unsupported):
        return list(node.args if isinstance(node, Call) else node.children)
    if isinstance(node, Path):
        start = [node.start] if node.start is not None else []
        return [*start, *node.filters, *(p for step in node.steps for p in step.predicates)]
    return []


def references(expr: Expression) -> set[str]:
    """Names used as `${name}` (last-saved references excluded)."""
    found: set[str] = set()
    pending: list[Node] = [expr.root]
    while pending:
        node = pending.pop()
        if isinstance(node, FieldRef):
            found.add(node.name)
        pending.extend(_children(node))
    return found


# ----------------------------------------------------------------------------- the instance


@dataclass(eq=False, slots=True)
class Element:
    """A node of the form's instance: a group, a repeat instance or a field with its value."""

    name: str
    value: object = None  # as submitted (None when empty); groups and repeats have none
    definition: Field | None = None  # the form's field; None for the root
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    index: int = 0  # 0-based among same-named siblings: a repeat instance's position - 1

    def add(self, child: Element) -> Element:
        child.parent = self
        child.index = sum(1 for sibling in self.children if sibling.name == child.name)
        self.children.append(child)
        return child

    @property
    def kind(self) -> str:
        return self.definition.type if self.definition is not None else "text"

    def lineage(self) -> list[Element]:
        """The elements from the root down to this one."""
        chain: list[Element] = []
        node: Element | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]

    def path(self) -> str:
        """`/data/rep[2]/x`: the XForm path with a 1-based position for each repeat instance."""
        parts = []
        for node in self.lineage():
            repeated = node.definition is not None and node.definition.type == "repeat"
            parts.append(f"{node.name}[{node.index + 1}]" if repeated else node.name)
        return "/" + "/".join(parts)


@dataclass(slots=True)
class NodeSet:
    elements: list[Element]


Value = bool | float | str | datetime
Result = Value | NodeSet


@dataclass
class EvalContext:
    now: datetime  # aware, in the form's time zone: today(), now() and every local date use it
    node: Element | None = None  # the context node: `.`, and where `${name}` is pinned
    references: Mapping[str, str] = field(default_factory=dict)  # ${name} -> '/data/grp/name'
    version: str = ""  # the form version, for version()
    dialect: TypingLiteral["javarosa", "enketo"] = "javarosa"
    # Judging a constraint: JavaRosa then reads the context node's value as the answer being
    # checked wherever a path lands on the node it is evaluating at (see `indexed_repeat`).
    constraint: bool = False

    @property
    def zone(self) -> tzinfo:
        zone = self.now.tzinfo
        if zone is None:
            raise NotEvaluable("the clock has no time zone")
        return zone


# ----------------------------------------------------------------------------- conversions

_JAVA_SPACE: Final = "".join(chr(code) for code in range(33))  # what String.trim() removes
_NUMBER_CHARS: Final = frozenset("-.0123456789")
_ROUNDING: Final = Context(prec=1000, Emax=10_000, Emin=-10_000)
_INT_MAX: Final = 2**31 - 1
_LONG_MAX: Final = 2**63 - 1
_DOUBLE_MIN: Final = 5e-324  # Double.MIN_VALUE
_DOUBLE_MAX: Final = 1.7976931348623157e308


def _check_length(text: str) -> str:
    if len(text) > MAX_STRING_LENGTH:
        raise NotEvaluable(f"text longer than {MAX_STRING_LENGTH} characters")
    return text


def _java_int(number: float, limit: int = _INT_MAX) -> int:
    """Java's `(int) d` / `(long) d`: NaN is 0, saturates at the type's range, truncates."""
    if math.isnan(number):
        return 0
    if number >= limit:
        return limit
    if number <= -limit - 1:
        return -limit - 1
    return math.trunc(number)


def java_double(number: float) -> str:
    """`Double.toString`: decimal notation within [1e-3, 1e7), else 'd.dddE±n'."""
    if number == 0:
        return "-0.0" if math.copysign(1.0, number) < 0 else "0.0"
    if abs(number) == _DOUBLE_MIN:  # JDK 17's FloatingDecimal prints the smallest double so
        return "-4.9E-324" if number < 0 else "4.9E-324"
    magnitude = abs(number)
    if 1e-3 <= magnitude < 1e7:
        text = repr(number)
        return text if "." in text else f"{text}.0"
    digits, exponent = Decimal(repr(number)).as_tuple()[1:]
    assert isinstance(exponent, int)
    significant = "".join(map(str, digits)).rstrip("0") or "0"
    power = len(digits) + exponent - 1
    sign = "-" if number < 0 else ""
    return f"{sign}{significant[0]}.{significant[1:] or '0'}E{power}"


def _number_to_string(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if abs(number) < 1e-12:
        return "0"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    whole = _java_int(number)
    if abs(number - whole) < 1e-12:
        return str(whole)
    return java_double(number)


def _text_number(text: str) -> float:
    """JavaRosa `toNumeric` of text: ',' is '.', trimmed, digits, '-' and '.' only."""
    cleaned = text.replace(",", ".").strip(_JAVA_SPACE)
    if not cleaned or not _NUMBER_CHARS.issuperset(cleaned):
        return math.nan
    try:
        return float(cleaned)
    except ValueError:
        return math.nan


def _element_value(element: Element, now: datetime) -> Value:
    """JavaRosa's `unpackValue` of a node's answer, by the field's type; `now` (aware) gives the
    zone, and the day a time alone is read on."""
    zone = now.tzinfo
    assert zone is not None
    raw = element.value
    kind = element.kind
    if raw is None or raw == "" or raw == [] or kind in ("group", "repeat", "note"):
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if kind in ("integer", "decimal"):
        if isinstance(raw, int | float | Decimal):
            return float(raw)
        number = _text_number(str(raw))
        return number if kind == "decimal" or math.isnan(number) else float(math.trunc(number))
    if isinstance(raw, datetime):
        return raw.replace(tzinfo=zone) if raw.tzinfo is None else raw.astimezone(zone)
    if isinstance(raw, date):
        return dates.local(raw.year, raw.month, raw.day, zone)
    if isinstance(raw, time):
        today = now.astimezone(zone)
        clock = (raw.hour, raw.minute, raw.second, raw.microsecond)
        return dates.local(today.year, today.month, today.day, zone, *clock)
    if isinstance(raw, list | tuple):
        return _check_length(" ".join(to_xpath_string(_plain(item)) for item in raw))
    if isinstance(raw, int | float | Decimal):
        return _number_to_string(float(raw)) if isinstance(raw, float) else str(raw)
    text = _check_length(str(raw))
    try:
        if kind in ("date", "datetime"):
            return dates.parse_date_time(text.strip(), zone)
        if kind == "time":
            return dates.parse_time(text.strip(), zone, now.astimezone(zone).date())
    except dates.DateError:
        return text
    return text


def _plain(raw: object) -> Value:
    if isinstance(raw, bool | str | datetime):
        return raw
    if isinstance(raw, int | float):
        return float(raw)
    return str(raw)


def to_xpath_string(value: Value, zone: tzinfo | None = None) -> str:
    """JavaRosa `toString`: numbers as it prints them, a date as its local 'YYYY-MM-DD' (in
    `zone`, by default the date's own: the evaluator gives dates in the form's zone)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_to_string(value)
    if isinstance(value, datetime):
        return dates.iso_date(value, zone or value.tzinfo or UTC)
    return value


def to_number(value: Value, zone: tzinfo | None = None) -> float:
    """JavaRosa `toNumeric`; a date is its count of whole local days."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, datetime):
        return float(dates.local_days(value, zone or value.tzinfo or UTC))
    return _text_number(value)


def _to_double(value: Value, zone: tzinfo) -> float:
    """JavaRosa `toDouble`: as `to_number`, but a date in fractional local days."""
    if isinstance(value, datetime):
        return dates.fractional_days(value, zone)
    return to_number(value, zone)


def to_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return abs(value) > 1e-12 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def _units(text: str) -> list[str]:
    """The UTF-16 code units of the text, as Java indexes it (surrogates as lone characters)."""
    if text.isascii() or all(ord(char) < 0x10000 for char in text):
        return list(text)
    raw = text.encode("utf-16-le", "surrogatepass")
    return [raw[i : i + 2].decode("utf-16-le", "surrogatepass") for i in range(0, len(raw), 2)]


def _from_units(units: list[str]) -> str:
    return _paired("".join(units))


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _paired(text: str) -> str:
    """Text as Java holds it: UTF-16 units, so two halves of a surrogate pair are one character."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _java_split(text: str) -> list[str]:
    """`DateUtils.split(s, " ", true)`: pieces between single spaces, empty ones dropped."""
    return [piece for piece in text.split(" ") if piece]


# ------------------------------------------------------------------------------ arithmetic


def _equals(left: Value, right: Value, zone: tzinfo) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return to_bool(left) == to_bool(right)
    if isinstance(left, float) or isinstance(right, float):
        return abs(to_number(left, zone) - to_number(right, zone)) < 1e-12
    return to_xpath_string(left, zone) == to_xpath_string(right, zone)


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


def _round(number: float, places: int) -> float:
    """JavaRosa `round()`: half up (towards zero for negatives) via BigDecimal."""
    if math.isnan(number) or math.isinf(number):
        return number
    if not -30 <= places <= 30:
        return math.nan
    if places >= 0:
        method = ROUND_HALF_DOWN if number < 0 else ROUND_HALF_UP
        exact = Decimal(java_double(number))
        return float(exact.quantize(Decimal(1).scaleb(-places), method, _ROUNDING))
    scaled = float(Decimal(java_double(number)).scaleb(places, _ROUNDING))
    rounded = _java_int(scaled + 0.5, _LONG_MAX)
    return float(Decimal(rounded).scaleb(-places, _ROUNDING))


def _to_int(number: float) -> float:
    """JavaRosa `toInt`: truncates, keeps -0, NaN, infinities and huge values."""
    if math.isnan(number) or math.isinf(number) or abs(number) >= _LONG_MAX:
        return number
    return math.copysign(float(math.trunc(number)), number) if number != 0 else number


def _java_math(function: Callable[..., float], *args: float) -> float:
    """Java's Math: NaN or an infinity where Python's math raises."""
    try:
        return function(*args)
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError):
        if function is math.log or function is math.log10:
            return -math.inf if args[0] == 0 else math.nan
        if function is math.pow and args[0] == 0 and args[1] < 0:
            return math.inf
        return math.nan


# ------------------------------------------------------------------------------ evaluation

_ENKETO_ONLY: Final = frozenset({"floor", "ceiling"})
_NOT_EVALUATED: Final[dict[str, str]] = {
    "random": "random() differs on every evaluation",
    "uuid": "uuid() differs on every evaluation",
    "randomize": "randomize() shuffles differently on every device",
    "property": "property() reads the tablet's settings",
    "pulldata": "pulldata() reads a CSV file attached to the form",
    "instance": "secondary instances (choice lists, CSV files) are not evaluated",
    "extract-signed": "extract-signed() is not evaluated by the server",
    "area": "geographic functions are not evaluated by the server",
    "enclosed-area": "geographic functions are not evaluated by the server",
    "distance": "geographic functions are not evaluated by the server",
    "geofence": "geographic functions are not evaluated by the server",
}
# JavaRosa's own argument counts, checked when it evaluates (the parser is more lenient).
_JAVAROSA_ARITY: Final[dict[str, tuple[int, ...]]] = {
    "coalesce": (2,),
    "number": (1,),
    "string": (1,),
    "boolean-from-string": (1,),
    "format-date": (2,),
    "format-date-time": (2,),
    "date-time": (1,),
    "decimal-time": (1,),
    "selected-at": (2,),
    "count": (1,),
    "count-non-empty": (1,),
    "sum": (1,),
    "substr": (2, 3),
    "substring-before": (2,),
    "substring-after": (2,),
    "translate": (3,),
    "normalize-space": (0, 1),
    "once": (1,),
    "pow": (2,),
    "pi": (0,),
    "atan2": (2,),
    "version": (0,),
    "base64-decode": (1,),
    "digest": (2, 3),
    "jr:choice-name": (2,),
    "is-selected": (2,),
    **{name: (1,) for name in ("abs", "acos", "asin", "atan", "cos", "exp", "exp10", "log")},
    **{name: (1,) for name in ("log10", "sin", "sqrt", "tan", "floor", "ceiling")},
}
_MATH: Final[dict[str, Callable[..., float]]] = {
    "abs": abs,
    "acos": math.acos,
    "asin": math.asin,
    "atan": math.atan,
    "atan2": math.atan2,
    "cos": math.cos,
    "exp": math.exp,
    "exp10": lambda x: math.pow(10.0, x),
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "sqrt": math.sqrt,
    "tan": math.tan,
    "pow": math.pow,
}


class _Evaluation:
    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.zone = ctx.zone
        self.steps = 0
        self.node = ctx.node  # changes inside predicates
        self.position: int | None = None  # the position within a predicate's node-set
        self.divergent = False  # used something JavaRosa and Enketo read differently

    # -- values

    def eval(self, node: Node) -> Result:
        self.steps += 1
        if self.steps > MAX_EVALUATION_STEPS:
            raise NotEvaluable(f"evaluation took more than {MAX_EVALUATION_STEPS} steps")
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, FieldRef):
            return NodeSet(self.select_field(node.name))
        if isinstance(node, Path):
            return NodeSet(self.select(node))
        if isinstance(node, Chain):
            return self.chain(node)
        if isinstance(node, Negate):
            number = to_number(self.value(node.operand), self.zone)
            return -number if node.times % 2 else number
        if isinstance(node, Call):
            return self.call(node)
        raise NotEvaluable(f"{node.what} is not supported")

    def value(self, node: Node) -> Value:
        return self.unpack(self.eval(node))

    def unpack(self, result: Result) -> Value:
        if not isinstance(result, NodeSet):
            return result
        if not result.elements:
            return ""
        if len(result.elements) > 1:
            raise NotEvaluable(
                f"{result.elements[0].name} is repeated: JavaRosa stops here and asks for "
                "indexed-repeat()"
            )
        return _element_value(result.elements[0], self.ctx.now)

    def text(self, node: Node) -> str:
        return to_xpath_string(self.value(node), self.zone)

    def number(self, node: Node) -> float:
        return to_number(self.value(node), self.zone)

    def chain(self, node: Chain) -> Value:
        if node.level in (_OR, _AND):
            operands = [node.first, *(operand for _, operand in node.rest)]
            want = node.level == _OR
            for operand in operands:
                if to_bool(self.value(operand)) == want:
                    return want
            return not want
        value = self.value(node.first)
        for op, operand in node.rest:
            right = self.value(operand)
            if node.level == _EQ:
                value = _equals(value, right, self.zone) == (op == "=")
            elif node.level == _REL:
                value = _compare(op, to_number(value, self.zone), to_number(right, self.zone))
            else:
                value = _arithmetic(op, to_number(value, self.zone), to_number(right, self.zone))
        return value

    # -- paths

    def context(self) -> Element:
        if self.node is None:
            raise NotEvaluable("a path needs the form's instance")
        return self.node

    def select_field(self, name: str) -> list[Element]:
        path = self.ctx.references.get(name)
        if path is None:
            raise NotEvaluable(f"the form has no field named {name!r}")
        return self.absolute([part for part in path.split("/") if part])

    def absolute(self, names: list[str], pins: Mapping[int, int] | None = None) -> list[Element]:
        """An absolute path of plain names, pinned to the context's repeat instances
        (TreeReference.contextualize) or to `pins` (depth -> 0-based position)."""
        lineage = self.context().lineage()
        root = lineage[0]
        if not names or names[0] != root.name:
            return []
        current, pinned = [root], True
        for depth in range(1, len(names)):
            name = names[depth]
            if pins is not None and depth in pins:
                current = [
                    child
                    for parent in current
                    for child in parent.children
                    if child.name == name and child.index == pins[depth]
                ]
                pinned = False
            elif pinned and depth < len(lineage) and lineage[depth].name == name:
                current = [lineage[depth]]
            else:
                pinned = False
                current = [c for parent in current for c in parent.children if c.name == name]
        return current

    def select(self, path: Path) -> list[Element]:
        steps = path.steps
        if path.start is not None:
            start = self.eval(path.start)
            if not isinstance(start, NodeSet):
                raise NotEvaluable("a path must start from a node-set")
            current = self.filter(start.elements, path.filters)
        elif path.absolute:
            if self.ctx.dialect == "javarosa" and not all(map(_javarosa_step, steps)):
                raise NotEvaluable("JavaRosa does not support a step of this path")
            names = [step.test for step in steps]
            if all(step.axis == "child" and not step.predicates for step in steps) and all(
                name != "*" and not name.endswith("()") for name in names
            ):
                return self.absolute(names)
            root = self.context().lineage()[0]
            if not steps:
                raise NotEvaluable("the document root '/' is not a value")
            first, steps = steps[0], steps[1:]
            if first.axis != "child" or first.test not in (root.name, "*", "node()"):
                return []
            current = self.filter([root], first.predicates)
        else:
            current = [self.context()]
        for step in steps:
            current = self.step(current, step)
        return current

    def step(self, current: list[Element], step: Step) -> list[Element]:
        if self.ctx.dialect == "javarosa" and not _javarosa_step(step):
            # XPathPathExpr.getReference: child::name, child::*, '.', '..' and @name only.
            raise NotEvaluable(f"JavaRosa does not support the step {step.axis}::{step.test}")
        found: list[Element] = []
        seen: set[int] = set()
        for element in current:
            if step.axis == "child":
                candidates = [c for c in element.children if step.test in ("*", "node()", c.name)]
            elif step.axis == "self":
                candidates = [element] if step.test in ("*", "node()", element.name) else []
            elif step.axis == "parent":
                parent = element.parent
                matches = parent is not None and step.test in ("*", "node()", parent.name)
                candidates = [parent] if parent is not None and matches else []
            else:
                raise NotEvaluable(f"the {step.axis} axis is not supported")
            for candidate in self.filter(candidates, step.predicates):
                if id(candidate) not in seen:
                    seen.add(id(candidate))
                    found.append(candidate)
        return found

    def filter(self, elements: list[Element], predicates: list[Node]) -> list[Element]:
        for predicate in predicates:
            kept: list[Element] = []
            saved = self.node, self.position
            try:
                for position, element in enumerate(elements, start=1):
                    self.node, self.position = element, position
                    outcome = self.eval(predicate)
                    if self.ctx.dialect == "enketo":  # XPath 1.0: a number is a position
                        outcome = self.unpack(outcome)
                        if isinstance(outcome, float):
                            outcome = outcome == position
                        if to_bool(outcome):
                            kept.append(element)
                    elif outcome is True:
                        # JavaRosa keeps a node only for a boolean true: `rep[2]` selects
                        # nothing there, `rep[position() = 2]` is the way (RawFilterStrategy).
                        kept.append(element)
            finally:
                self.node, self.position = saved
            elements = kept
        return elements

    def names_of(self, node: Node, what: str) -> list[str]:
        """The absolute names of a `${field}` or plain absolute path argument."""
        if isinstance(node, FieldRef):
            path = self.ctx.references.get(node.name)
            if path is None:
                raise NotEvaluable(f"the form has no field named {node.name!r}")
            return [part for part in path.split("/") if part]
        if (
            isinstance(node, Path)
            and node.absolute
            and node.start is None
            and all(step.axis == "child" and not step.predicates for step in node.steps)
        ):
            return [step.test for step in node.steps]
        raise NotEvaluable(f"indexed-repeat(): {what} must be a field reference")

    # -- functions

    def call(self, node: Call) -> Result:
        name, args = node.name, node.args
        javarosa = self.ctx.dialect == "javarosa"
        if javarosa and name in _JAVAROSA_ARITY and len(args) not in _JAVAROSA_ARITY[name]:
            raise NotEvaluable(f"JavaRosa refuses {name}() with {len(args)} argument(s)")
        if name in _NOT_EVALUATED:
            raise NotEvaluable(_NOT_EVALUATED[name])
        if name in _ENKETO_ONLY:
            self.divergent = True
            if javarosa:
                raise NotEvaluable(f"{name}() is not a function of ODK Collect's engine")
            number = self.number(args[0])
            return float(math.floor(number) if name == "floor" else math.ceil(number))
        if name == "if":
            return self.eval(args[1] if to_bool(self.value(args[0])) else args[2])
        if name == "coalesce":
            for arg in args:
                value = self.value(arg)
                if not (value == "" or (isinstance(value, float) and math.isnan(value))):
                    return value
            return value
        if name == "current":
            return NodeSet([self.context() if self.ctx.node is None else self.ctx.node])
        if name == "indexed-repeat":
            return self.indexed_repeat(args)
        if name == "position":
            return self.position_of(args)
        if name == "jr:choice-name":
            return self.choice_name(self.text(args[0]), self.text(args[1]))
        if name == "once":
            own = _element_value(self.context(), self.ctx.now)
            return self.value(args[0]) if to_xpath_string(own, self.zone) == "" else own
        if name in ("count", "count-non-empty", "sum"):
            elements = self.node_set(args[0], name)
            if name == "count":
                return float(len(elements))
            if name == "count-non-empty":
                return float(sum(1 for e in elements if e.children or not _empty(e.value)))
            numbers = (to_number(_element_value(e, self.ctx.now), self.zone) for e in elements)
            return math.fsum(n for n in numbers if not math.isnan(n))
        if name in ("max", "min", "concat", "join", "checklist", "weighted-checklist"):
            return self.aggregate(name, args)
        if name in _MATH:
            # toDouble reads a date value in fractional days, but a field reference reaches it as
            # a node-set, which it reads with toNumeric: whole days.
            doubles = [
                to_number(self.unpack(r)) if isinstance(r, NodeSet) else _to_double(r, self.zone)
                for r in (self.eval(arg) for arg in args)
            ]
            return _java_math(_MATH[name], *doubles)
        function = _FUNCTIONS.get(name)
        if function is None:
            raise NotEvaluable(f"the function {name}() is not supported")
        values = [self.value(arg) for arg in args]
        if not values and name in ("string-length", "normalize-space", "number", "string"):
            values = [_element_value(self.context(), self.ctx.now)]  # XPath: the context node
        if name == "regex":
            self.divergent = True
        return function(self, values)

    def node_set(self, arg: Node, name: str) -> list[Element]:
        result = self.eval(arg)
        if not isinstance(result, NodeSet):
            raise NotEvaluable(f"{name}() needs a field, not a value")
        return result.elements

    def spread(self, args: list[Node]) -> list[Value]:
        """One node-set argument as its nodes' values, else each argument's value."""
        if len(args) == 1:
            result = self.eval(args[0])
            if isinstance(result, NodeSet):
                return [_element_value(e, self.ctx.now) for e in result.elements]
            return [result]
        return [self.value(arg) for arg in args]

    def aggregate(self, name: str, args: list[Node]) -> Value:
        if name in ("max", "min"):
            numbers = [to_number(v, self.zone) for v in self.spread(args)]
            numbers = [n for n in numbers if not math.isnan(n)]
            if not numbers:
                return math.nan
            # JavaRosa starts max at Double.MIN_VALUE (the smallest positive double) and min at
            # Double.MAX_VALUE; max of negative numbers is therefore 4.9E-324.
            return max(_DOUBLE_MIN, *numbers) if name == "max" else min(_DOUBLE_MAX, *numbers)
        if name == "concat":
            texts = (to_xpath_string(v, self.zone) for v in self.spread(args))
            return _check_length(_paired("".join(texts)))
        if name == "join":
            if not args:
                raise NotEvaluable("JavaRosa refuses join() without arguments")
            separator = self.text(args[0])
            parts = self.spread(args[1:]) if len(args) == 2 else [self.value(a) for a in args[1:]]
            texts = (to_xpath_string(v, self.zone) for v in parts)
            return _check_length(_paired(separator.join(texts)))
        if len(args) < 2:
            raise NotEvaluable(f"JavaRosa refuses {name}() with {len(args)} argument(s)")
        low, high = self.number(args[0]), self.number(args[1])
        if name == "checklist":
            flags = self.spread(args[2:]) if len(args) == 3 else [self.value(a) for a in args[2:]]
            count = sum(1 for flag in flags if to_bool(flag))
            least, most = _java_int(low), _java_int(high)
            return (least < 0 or count >= least) and (most < 0 or count <= most)
        if len(args) % 2:
            raise NotEvaluable("JavaRosa refuses weighted-checklist() with an odd count")
        rest = args[2:]
        if len(rest) == 2:
            flags, weights = self.spread(rest[:1]), self.spread(rest[1:])
        else:
            flags = [self.value(a) for a in rest[0::2]]
            weights = [self.value(a) for a in rest[1::2]]
        if len(flags) != len(weights):
            raise NotEvaluable("weighted-checklist(): the two fields differ in length")
        total = sum(
            to_number(w, self.zone) for f, w in zip(flags, weights, strict=True) if to_bool(f)
        )
        return low <= total <= high

    def position_of(self, args: list[Node]) -> float:
        if args:
            elements = self.node_set(args[0], "position")
            return float(elements[0].index + 1) if elements else 0.0
        if self.position is not None:
            return float(self.position)
        return float(self.context().index + 1)

    def indexed_repeat(self, args: list[Node]) -> Result:
        if len(args) not in (3, 5, 7, 9, 11):
            raise NotEvaluable("indexed-repeat() takes 3, 5, 7, 9 or 11 arguments")
        target = self.names_of(args[0], "its first argument")
        pins: dict[int, int] = {}
        for repeat_arg, index_arg in zip(args[1::2], args[2::2], strict=True):
            repeat = self.names_of(repeat_arg, "each repeat")
            if len(repeat) > len(target) or target[: len(repeat)] != repeat:
                raise NotEvaluable("indexed-repeat(): a repeat must contain the field")
            index = _java_int(_to_int(self.number(index_arg)))
            pins[len(repeat) - 1] = max(index, 1) - 1
        found = self.absolute(target, pins)
        if self.ctx.constraint and len(found) == 1 and self.ctx.node is not None:
            # JavaRosa evaluates the target with the pinned node as context, and a constraint's
            # context node reads as the answer being checked: indexed-repeat() inside a
            # constraint gives that answer (XPathPathExpr.getRefValue). Collect does this.
            return NodeSet([self.ctx.node])
        return NodeSet(found)

    def choice_name(self, value: str, where: str) -> str:
        text = where.strip()
        if match := re.fullmatch(r"\$\{([^}]*)\}", text):
            elements = self.select_field(match.group(1))
        elif text.startswith("/"):
            elements = self.absolute([part for part in text.split("/") if part])
        else:
            raise NotEvaluable("jr:choice-name(): the second argument must name a field")
        question = elements[0].definition if elements else None
        if question is None or question.type not in ("select_one", "select_multiple"):
            return ""
        if not question.choices_known:
            raise NotEvaluable("jr:choice-name(): the choices come from a file")
        for choice in question.choices:
            if choice.name == value:
                labels = set(choice.labels.values())
                if len(labels) > 1:
                    raise NotEvaluable(
                        "jr:choice-name() gives the label in the language chosen on the tablet"
                    )
                label = next(iter(labels), "")
                if "${" in label or "<output" in label:
                    raise NotEvaluable("jr:choice-name(): the label refers to other fields")
                return label
        return ""


def _javarosa_step(step: Step) -> bool:
    if step.axis == "child":
        return not step.test.endswith("()")
    return step.test == "node()" and step.axis in ("self", "parent")


def _empty(raw: object) -> bool:
    return raw is None or raw == "" or raw == []


# ------------------------------------------------------------------------- plain functions


def _string_arg(value: Value, function: str) -> str:
    """JavaRosa casts these arguments to String: a number or date there is an error."""
    if not isinstance(value, str):
        raise NotEvaluable(f"JavaRosa stops on {function}() of a {type(value).__name__}")
    return value


def _selected(values: list[Value]) -> bool:
    choices = _string_arg(values[0], "selected")
    wanted = _string_arg(values[1], "selected").strip(_JAVA_SPACE)
    return f" {wanted} " in f" {choices} "


def _selected_at(values: list[Value]) -> str:
    pieces = _java_split(_string_arg(values[0], "selected-at"))
    index = _java_int(_to_int(to_number(values[1])))
    return pieces[index] if 0 <= index < len(pieces) else ""


def _regex(run: _Evaluation, values: list[Value]) -> bool:
    subject = to_xpath_string(values[0], run.zone)
    pattern = to_xpath_string(values[1], run.zone)
    try:
        return regex_matches(subject, pattern, search=run.ctx.dialect == "enketo")
    except UnsafeRegex as exc:
        raise NotEvaluable(str(exc)) from exc


def _substr(values: list[Value], zone: tzinfo) -> str:
    units = _units(to_xpath_string(values[0], zone))
    length = len(units)
    start = _java_int(_to_int(to_number(values[1], zone)))
    end = _java_int(_to_int(to_number(values[2], zone))) if len(values) == 3 else length
    start = length + start if start < 0 else start
    end = length + end if end < 0 else end
    end = min(max(0, end), length)
    start = min(max(0, start), length)
    return _from_units(units[start:end]) if start <= end else ""


def _translate(values: list[Value], zone: tzinfo) -> str:
    text, source, target = (_units(to_xpath_string(v, zone)) for v in values)
    out: list[str] = []
    for unit in text:
        if unit not in source:
            out.append(unit)
        elif (at := source.index(unit)) < len(target):
            out.append(target[at])
    return _from_units(out)


def _normalize_space(text: str) -> str:
    return re.sub(r"[ \t\n\x0b\f\r]+", " ", text.strip(_JAVA_SPACE))


def _to_date(value: Value, zone: tzinfo, keep_time: bool) -> Value:
    """JavaRosa `toDate`: date() (keep_time False) and date-time() (True)."""
    try:
        if isinstance(value, float):
            if math.isnan(value):
                return value
            number = value if keep_time else _to_int(value)
            if math.isinf(number) or abs(number) > _INT_MAX:
                raise NotEvaluable(f"{_number_to_string(value)} is out of range for a date")
            if keep_time:
                return dates.from_ms(_java_int(number * dates.DAY_MS, _LONG_MAX), zone)
            return dates.add_days(int(number), zone)
        if isinstance(value, str):
            if value == "":
                return value
            return dates.parse_date_time(value, zone)
        if isinstance(value, datetime):
            return value if keep_time else dates.round_date(value, zone)
    except dates.DateError as exc:
        raise NotEvaluable(f"JavaRosa cannot read {str(value)[:40]!r} as a date") from exc
    raise NotEvaluable(f"JavaRosa cannot read {value!r} as a date")


def _decimal_date_time(run: _Evaluation, value: Value, keep_date: bool) -> Value:
    if isinstance(value, bool):
        raise NotEvaluable("JavaRosa cannot read a boolean as a date")
    if isinstance(value, float):
        if math.isnan(value):
            return value
        if math.isinf(value) or abs(value) > _INT_MAX:
            raise NotEvaluable(f"{_number_to_string(value)} is out of range for a date")
        return value if keep_date else value - math.floor(value)
    if isinstance(value, str):
        if value == "":
            return value
        try:
            moment = dates.parse_date_time(value, run.zone)
        except dates.DateError as exc:
            raise NotEvaluable(f"JavaRosa cannot read {value[:40]!r} as a date") from exc
    else:
        moment = value
    if keep_date:
        return dates.decimal_date_time(moment)
    return dates.decimal_time(moment, run.zone, run.ctx.now)


def _format_date(run: _Evaluation, values: list[Value]) -> str:
    moment = _to_date(values[0], run.zone, keep_time=True)
    if not isinstance(moment, datetime):
        return ""
    try:
        return dates.format_date(moment, to_xpath_string(values[1], run.zone), run.zone)
    except dates.DateError as exc:
        raise NotEvaluable(f"format-date(): {exc}") from exc


def _around(values: list[Value], *, before: bool) -> str:
    """substring-before/after: '' where the needle is absent; an empty needle is found at 0."""
    text, needle = to_xpath_string(values[0]), to_xpath_string(values[1])
    at = text.find(needle)
    if at < 0:
        return ""
    return text[:at] if before else text[at + len(needle) :]


_DIGESTS: Final = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA384": "sha384"}


def _digest(values: list[Value]) -> str:
    """`digest(text, 'SHA-256'[, 'hex'|'base64'])` of the UTF-8 text (DigestAlgorithm)."""
    text, algorithm = to_xpath_string(values[0]), to_xpath_string(values[1])
    encoding = to_xpath_string(values[2]).upper() if len(values) == 3 else "BASE64"
    name = {**_DIGESTS, "SHA512": "sha512"}.get(algorithm.upper().replace("-", ""))
    if name is None or encoding not in ("HEX", "BASE64"):
        raise NotEvaluable(f"JavaRosa does not support digest(..., {algorithm!r}, {encoding!r})")
    raw = hashlib.new(name, text.encode("utf-8")).digest()
    return raw.hex() if encoding == "HEX" else base64.b64encode(raw).decode("ascii")


def _base64_decode(text: str) -> str:
    try:
        return base64.b64decode(text.encode("utf-8")).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as exc:
        raise NotEvaluable("base64-decode(): not base64") from exc


def _round_call(run: _Evaluation, values: list[Value]) -> float:
    places = _java_int(to_number(values[1], run.zone)) if len(values) == 2 else 0
    return _round(to_number(values[0], run.zone), places)


def _today(run: _Evaluation) -> datetime:
    return dates.round_date(run.ctx.now, run.zone)


_Function = Callable[[_Evaluation, list[Value]], Value]
_FUNCTIONS: Final[dict[str, _Function]] = {
    "true": lambda run, v: True,
    "false": lambda run, v: False,
    "not": lambda run, v: not to_bool(v[0]),
    "boolean": lambda run, v: to_bool(v[0]),
    "boolean-from-string": lambda run, v: to_xpath_string(v[0], run.zone).lower() in ("true", "1"),
    "number": lambda run, v: to_number(v[0], run.zone),
    "int": lambda run, v: _to_int(to_number(v[0], run.zone)),
    "round": _round_call,
    "string": lambda run, v: to_xpath_string(v[0], run.zone),
    "date": lambda run, v: _to_date(v[0], run.zone, keep_time=False),
    "date-time": lambda run, v: _to_date(v[0], run.zone, keep_time=True),
    "decimal-date-time": lambda run, v: _decimal_date_time(run, v[0], keep_date=True),
    "decimal-time": lambda run, v: _decimal_date_time(run, v[0], keep_date=False),
    "format-date": _format_date,
    "format-date-time": _format_date,
    "today": lambda run, v: _today(run),
    "now": lambda run, v: run.ctx.now,
    "selected": lambda run, v: _selected(v),
    "is-selected": lambda run, v: _selected(v),
    "count-selected": lambda run, v: float(len(_java_split(_string_arg(v[0], "count-selected")))),
    "selected-at": lambda run, v: _selected_at(v),
    "string-length": lambda run, v: float(len(_units(to_xpath_string(v[0], run.zone)))),
    "normalize-space": lambda run, v: _normalize_space(to_xpath_string(v[0], run.zone)),
    "contains": lambda run, v: to_xpath_string(v[1], run.zone) in to_xpath_string(v[0], run.zone),
    "starts-with": lambda run, v: to_xpath_string(v[0], run.zone).startswith(
        to_xpath_string(v[1], run.zone)
    ),
    "ends-with": lambda run, v: to_xpath_string(v[0], run.zone).endswith(
        to_xpath_string(v[1], run.zone)
    ),
    "substr": lambda run, v: _substr(v, run.zone),
    "substring-before": lambda run, v: _around(v, before=True),
    "substring-after": lambda run, v: _around(v, before=False),
    "digest": lambda run, v: _digest(v),
    "translate": lambda run, v: _translate(v, run.zone),
    "regex": _regex,
    "depend": lambda run, v: v[0] if v else "",
    "version": lambda run, v: run.ctx.version,
    "base64-decode": lambda run, v: _base64_decode(to_xpath_string(v[0], run.zone)),
    "pi": lambda run, v: math.pi,
}


def evaluate(expr: Expression, ctx: EvalContext) -> Value:
    """Evaluate as JavaRosa (or `ctx.dialect`) would; raises `NotEvaluable`, nothing else."""
    return _run(expr, ctx).result


@dataclass(slots=True)
class _Outcome:
    result: Value
    divergent: bool


def _run(expr: Expression, ctx: EvalContext) -> _Outcome:
    evaluation = _Evaluation(ctx)
    try:
        return _Outcome(evaluation.value(expr.root), evaluation.divergent)
    except NotEvaluable:
        raise
    except Exception as exc:  # a RecursionError, a date out of range: never crash the validator
        raise NotEvaluable(f"evaluation failed: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's outcome; `outcome` None means not decided, and `reason` says why."""

    outcome: bool | None
    reason: str = ""


def judge(expr: Expression, ctx: EvalContext) -> Verdict:
    """A rule's verdict: false only where JavaRosa and (where they differ) Enketo agree it is."""
    try:
        javarosa = _run(expr, ctx)
    except NotEvaluable as exc:
        return Verdict(None, str(exc))
    outcome = to_bool(javarosa.result)
    if outcome or not javarosa.divergent:
        return Verdict(outcome)
    try:
        enketo = _run(expr, replace(ctx, dialect="enketo"))
    except NotEvaluable as exc:
        return Verdict(None, f"Enketo's reading cannot be evaluated: {exc}")
    if to_bool(enketo.result):
        return Verdict(None, "JavaRosa reads this rule as false, Enketo as true")
    return Verdict(False)


def evaluate_bool(expr: Expression, ctx: EvalContext) -> bool | None:
    """boolean() of the result, or None when the expression cannot be checked."""
    try:
        return to_bool(evaluate(expr, ctx))
    except NotEvaluable:
        return None
