"""Typed form instances for the expression tests: fields with values, a context node and a clock.

A form is a dict of `name: (type, value)`; a group's value is such a dict, a repeat's a list of
them (its fields are the union of its rows'). An optional third item gives more `Field` settings
(choices, say). The instance is what the validator builds (`forms.validation.instance_tree`), so
`${name}`, paths and repeat positions resolve as they do for a real submission.

    VISIT = Form({"age": ("integer", 20), "member": ("repeat", [{"nick": ("text", "A")}])})
    VISIT.evaluate("${age} + 1")                      # 21.0, at the root, on a Hanoi afternoon
    VISIT.evaluate("position(..)", at="/data/member[1]/nick", now=EARLY_MORNING)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from forms.expressions import (
    Element,
    EvalContext,
    Value,
    Verdict,
    evaluate,
    judge,
    parse_expression,
)
from forms.spec import walk_fields
from forms.validation import instance_tree
from schemas.forms import Field, FormSpec

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
AFTERNOON = datetime(2026, 3, 10, 15, 30, tzinfo=HANOI)  # 08:30 UTC
EARLY_MORNING = datetime(2026, 3, 10, 6, 30, tzinfo=HANOI)  # still 9 March in UTC

Answer = tuple[str, Any] | tuple[str, Any, Mapping[str, Any]]
Dialect = Literal["javarosa", "enketo"]


def _fields(answers: Mapping[str, Answer], parent: str) -> tuple[list[Field], dict[str, Any]]:
    fields: list[Field] = []
    data: dict[str, Any] = {}
    for name, answer in answers.items():
        kind, value = answer[0], answer[1]
        extra = dict(answer[2]) if len(answer) == 3 else {}
        path = f"{parent}/{name}"
        if kind == "group":
            children, data[name] = _fields(value, path)
        elif kind == "repeat":
            union: dict[str, Answer] = {}
            for row in value:
                for key, row_answer in row.items():
                    union.setdefault(key, row_answer)
            children = _fields(union, path)[0]
            data[name] = [_fields(row, path)[1] for row in value]
        else:
            children, data[name] = [], value
        fields.append(Field(name=name, path=path, type=kind, children=children, **extra))  # type: ignore[arg-type]
    return fields, data


class Form:
    """A form with one submission's values; evaluates expressions at any of its nodes."""

    def __init__(self, answers: Mapping[str, Answer], *, version: str = "7") -> None:
        fields, self.data = _fields(answers, "/data")
        self.spec = FormSpec(
            form_id="exprtests",
            title="Expression tests",
            version=version,
            default_language="vi",
            languages=["vi"],
            fields=fields,
        )

    def node(self, at: str = "/data") -> Element:
        """The element at an XForm path with repeat positions, e.g. `/data/member[2]/nick`."""
        pending = [instance_tree(self.spec, self.data)]
        while pending:
            element = pending.pop()
            if element.path() == at:
                return element
            pending.extend(element.children)
        raise KeyError(f"{at}: no such node in this instance")

    def context(
        self, at: str = "/data", *, now: datetime = AFTERNOON, dialect: Dialect = "javarosa"
    ) -> EvalContext:
        return EvalContext(
            now=now,
            node=self.node(at),
            references={f.name: f.path for f in walk_fields(self.spec.fields)},
            version=self.spec.version,
            dialect=dialect,
        )

    def evaluate(
        self,
        text: str,
        at: str = "/data",
        *,
        now: datetime = AFTERNOON,
        dialect: Dialect = "javarosa",
    ) -> Value:
        return evaluate(parse_expression(text), self.context(at, now=now, dialect=dialect))

    def judge(self, text: str, at: str = "/data", *, now: datetime = AFTERNOON) -> Verdict:
        return judge(parse_expression(text), self.context(at, now=now))


def at_value(kind: str, value: object, **extra: Any) -> Form:
    """A form of one field `x` holding `value`; evaluate at `/data/x` for `.`."""
    return Form({"x": (kind, value, extra)})
