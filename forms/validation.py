"""Server-side validation of a submission's JSON against the exact form version it names.

Submission data: groups are nested objects, repeats are lists of objects, select_multiple is a list
of choice names or a space-separated string, geopoint is "lat lon [alt [accuracy]]".
Error paths are XForm paths with a 1-based position per repeat instance:
`/data/visit/violations[2]/kind`. A rule the evaluator cannot evaluate is listed in
`not_checked` and never rejects the submission.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any

from forms import expressions
from forms.spec import walk_fields
from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.forms import Field, FormSpec, NotChecked, ValidationResult

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")

# The server's own messages, when the form gives none; Vietnamese first.
_MESSAGES: dict[str, dict[str, str]] = {
    "required": {"vi": "Trường này bắt buộc.", "en": "This field is required."},
    "constraint": {"vi": "Giá trị không hợp lệ.", "en": "The value does not meet the form's rule."},
    "unknown_field": {"vi": "Biểu mẫu không có trường này.", "en": "The form has no such field."},
    "unknown_choice": {"vi": "Lựa chọn không có trong danh sách", "en": "Not one of the choices"},
    "wrong_type": {"vi": "Sai kiểu dữ liệu, cần", "en": "Wrong type of value, expected"},
}


@lru_cache(maxsize=4096)
def _parsed(text: str) -> Any:
    """Parse once per distinct expression text; None when it does not parse."""
    try:
        return expressions.parse_expression(text)
    except expressions.ExpressionSyntaxError:
        return None


def _message(code: str, language: str) -> str:
    texts = _MESSAGES[code]
    return texts.get(language) or texts["en"]


def _form_message(messages: dict[str, str], language: str, default_language: str) -> str | None:
    if not messages:
        return None
    return messages.get(language) or messages.get(default_language) or next(iter(messages.values()))


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == []


def _as_choices(value: object) -> list[str] | None:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    return None


def _type_ok(kind: str, value: object) -> bool:
    """Whether a non-empty value has the shape its field type needs."""
    if isinstance(value, bool):
        return kind in ("note", "calculate")
    if kind in ("text", "calculate", "note"):
        return isinstance(value, str | int | float) or kind == "note"
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, str) and bool(_INTEGER.match(value)))
    if kind == "decimal":
        if isinstance(value, int | float):
            return math.isfinite(value)
        return isinstance(value, str) and bool(_DECIMAL.match(value.strip()))
    if kind == "select_one":
        return isinstance(value, str | int)
    if kind == "select_multiple":
        return _as_choices(value) is not None
    if not isinstance(value, str):
        return False
    try:
        if kind == "date":
            return bool(_DATE.match(value)) and isinstance(date.fromisoformat(value), date)
        if kind == "time":
            return bool(_TIME.match(value)) and isinstance(time.fromisoformat(value), time)
        if kind == "datetime":
            return bool(_DATETIME.match(value)) and isinstance(
                datetime.fromisoformat(value), datetime
            )
    except ValueError:
        return False
    if kind == "geopoint":
        return _geopoint_ok(value)
    return kind in ("image", "audio", "file") and value.strip() != ""


def _geopoint_ok(value: str) -> bool:
    parts = value.split()
    if not 2 <= len(parts) <= 4:
        return False
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return False
    return (
        all(math.isfinite(n) for n in numbers)
        and -90 <= numbers[0] <= 90
        and -180 <= numbers[1] <= 180
    )


def _for_expression(kind: str, value: object) -> object:
    """The value an expression sees: numbers as numbers, choices as a space-separated string."""
    if _is_empty(value):
        return None
    if kind == "integer" and isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    if kind == "decimal" and isinstance(value, str) and _DECIMAL.match(value.strip()):
        return float(value)
    if kind == "select_multiple":
        choices = _as_choices(value)
        return " ".join(choices) if choices is not None else value
    return value


@dataclass
class _Run:
    spec: FormSpec
    data: dict[str, Any]
    now: datetime
    language: str
    by_name: dict[str, Field]
    chains: dict[str, list[Field]]  # field path -> containers from the root down, then the field
    errors: list[ErrorItem] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)

    def error(self, path: str, code: str, message: str) -> None:
        self.errors.append(ErrorItem(path=path, code=code, message=message))

    def resolve_in(self, instances: dict[str, dict[str, Any]]) -> Any:
        def resolve(name: str) -> object:
            target = self.by_name.get(name)
            if target is None:
                return None
            values: list[Any] = [self.data]
            many = False
            for container in self.chains[target.path][:-1]:
                following: list[Any] = []
                if container.type == "repeat" and container.path in instances:
                    following.append(instances[container.path])
                else:
                    for value in values:
                        child = value.get(container.name) if isinstance(value, dict) else None
                        if container.type == "repeat":
                            many = True
                            if isinstance(child, list):
                                following.extend(c for c in child if isinstance(c, dict))
                        elif isinstance(child, dict):
                            following.append(child)
                values = following
            leaves = [v.get(target.name) for v in values if isinstance(v, dict)]
            if target.type == "repeat":
                return [item for leaf in leaves if isinstance(leaf, list) for item in leaf]
            converted = [_for_expression(target.type, leaf) for leaf in leaves]
            if many:
                return converted
            return converted[0] if converted else None

        return resolve

    def check(
        self,
        rule: str,
        text: str,
        path: str,
        current: object,
        instances: dict[str, dict[str, Any]],
        position: int | None,
    ) -> bool | None:
        """Evaluate a rule to true/false; None (and a not-checked note) when it cannot be."""
        parsed = _parsed(text)
        outcome: bool | None = None
        reason = "the expression does not parse"
        if parsed is not None:
            reason = "the expression uses something the server cannot evaluate"
            context = expressions.EvalContext(
                resolve=self.resolve_in(instances), current=current, position=position, now=self.now
            )
            try:
                outcome = expressions.evaluate_bool(parsed, context)
            except Exception:  # never let an evaluator gap reject or crash a submission
                outcome = None
        if outcome is None:
            self.not_checked.append(
                NotChecked(path=path, rule=rule, reason=reason, expression=text)  # type: ignore[arg-type]
            )
        return outcome

    def walk(
        self,
        fields: list[Field],
        values: object,
        path: str,
        relevant: bool | None,
        instances: dict[str, dict[str, Any]],
        position: int | None,
    ) -> None:
        container = values if isinstance(values, dict) else {}
        known = {f.name for f in fields}
        for key in container:
            if key not in known:
                self.error(
                    f"{path}/{key}",
                    ErrorCode.UNKNOWN_FIELD,
                    _message("unknown_field", self.language),
                )
        for f in fields:
            self.field(f, container.get(f.name), f"{path}/{f.name}", relevant, instances, position)

    def field(
        self,
        f: Field,
        value: object,
        path: str,
        parent_relevant: bool | None,
        instances: dict[str, dict[str, Any]],
        position: int | None,
    ) -> None:
        relevant = parent_relevant
        if relevant is not False and f.relevant:
            own = self.check("relevant", f.relevant, path, value, instances, position)
            relevant = False if own is False else (None if own is None else relevant)
        if relevant is False:
            return  # ODK clears non-relevant answers, so nothing about them is checked
        if f.type == "group":
            if not _is_empty(value) and not isinstance(value, dict):
                self.error(
                    path, ErrorCode.WRONG_TYPE, f"{_message('wrong_type', self.language)} group"
                )
                return
            self.walk(f.children, value or {}, path, relevant, instances, position)
            return
        if f.type == "repeat":
            if not _is_empty(value) and not isinstance(value, list):
                self.error(
                    path, ErrorCode.WRONG_TYPE, f"{_message('wrong_type', self.language)} repeat"
                )
                return
            items: list[Any] = value if isinstance(value, list) else []
            for index, item in enumerate(items, start=1):
                item_path = f"{path}[{index}]"
                if not isinstance(item, dict):
                    self.error(
                        item_path,
                        ErrorCode.WRONG_TYPE,
                        f"{_message('wrong_type', self.language)} group",
                    )
                    continue
                inner = {**instances, f.path: item}
                self.walk(f.children, item, item_path, relevant, inner, index)
            return
        self.leaf(f, value, path, relevant, instances, position)

    def leaf(
        self,
        f: Field,
        value: object,
        path: str,
        relevant: bool | None,
        instances: dict[str, dict[str, Any]],
        position: int | None,
    ) -> None:
        if f.type == "note":
            return
        if _is_empty(value):
            self.required(f, path, relevant, instances, position)
            return
        if not _type_ok(f.type, value):
            self.error(
                path, ErrorCode.WRONG_TYPE, f"{_message('wrong_type', self.language)} {f.type}"
            )
            return
        if f.type in ("select_one", "select_multiple"):
            if not f.choices_known:
                self.not_checked.append(
                    NotChecked(path=path, rule="choices", reason="choices come from a file")
                )
            else:
                allowed = {c.name for c in f.choices}
                picked = [str(value)] if f.type == "select_one" else (_as_choices(value) or [])
                unknown = [p for p in picked if p not in allowed]
                if unknown:
                    self.error(
                        path,
                        ErrorCode.UNKNOWN_CHOICE,
                        f"{_message('unknown_choice', self.language)}: {', '.join(unknown)}",
                    )
                    return
        if f.constraint:
            current = _for_expression(f.type, value)
            if self.check("constraint", f.constraint, path, current, instances, position) is False:
                message = _form_message(
                    f.constraint_message, self.language, self.spec.default_language
                )
                self.error(
                    path, ErrorCode.CONSTRAINT, message or _message("constraint", self.language)
                )

    def required(
        self,
        f: Field,
        path: str,
        relevant: bool | None,
        instances: dict[str, dict[str, Any]],
        position: int | None,
    ) -> None:
        if f.required is False or f.type == "calculate":
            return
        if relevant is None:
            self.not_checked.append(
                NotChecked(path=path, rule="required", reason="relevance unknown")
            )
            return
        needed: bool | None = True
        if isinstance(f.required, str):
            needed = self.check("required", f.required, path, None, instances, position)
        if needed:
            message = _form_message(f.required_message, self.language, self.spec.default_language)
            self.error(path, ErrorCode.REQUIRED, message or _message("required", self.language))


def _chains(fields: list[Field], above: list[Field], into: dict[str, list[Field]]) -> None:
    for f in fields:
        chain = [*above, f]
        into[f.path] = chain
        _chains(f.children, chain, into)


def validate_submission(
    spec: FormSpec, data: dict[str, Any], *, now: datetime, language: str = "vi"
) -> ValidationResult:
    """Check a submission's data; messages in `language`, the form's own message first."""
    by_name, chains = _index(spec)
    run = _Run(spec=spec, data=data, now=now, language=language, by_name=by_name, chains=chains)
    root = spec.fields[0].path.rsplit("/", 1)[0] if spec.fields else "/data"
    if not isinstance(data, dict):
        run.error(root, "wrong_type", f"{_message('wrong_type', language)} object")
    else:
        run.walk(spec.fields, data, root, True, {}, None)
    return ValidationResult(valid=not run.errors, errors=run.errors, not_checked=run.not_checked)


_INDEX_CACHE: dict[str, tuple[dict[str, Field], dict[str, list[Field]]]] = {}


def _index(spec: FormSpec) -> tuple[dict[str, Field], dict[str, list[Field]]]:
    """Name and ancestry lookups, kept per spec hash since published specs never change."""
    cached = _INDEX_CACHE.get(spec.hash) if spec.hash else None
    if cached is not None:
        return cached
    chains: dict[str, list[Field]] = {}
    _chains(spec.fields, [], chains)
    index = ({f.name: f for f in walk_fields(spec.fields)}, chains)
    if spec.hash and len(_INDEX_CACHE) < 256:
        _INDEX_CACHE[spec.hash] = index
    return index


# ------------------------------------------------------------------ one expression, in place


def _locate(
    spec: FormSpec, data: dict[str, Any], path: str
) -> tuple[dict[str, dict[str, Any]], int | None, object, Field | None]:
    """Repeat instances, innermost position, value and field at `/data/rep[2]/x`."""
    steps = [step for step in path.split("/") if step][1:]
    instances: dict[str, dict[str, Any]] = {}
    position: int | None = None
    node: object = data
    fields = spec.fields
    target: Field | None = None
    for step in steps:
        name, _, rest = step.partition("[")
        target = next((f for f in fields if f.name == name), None)
        if target is None:
            raise ValueError(f"{path}: the form has no field {name!r} there")
        node = node.get(name) if isinstance(node, dict) else None
        if target.type == "repeat" and rest:
            position = int(rest.rstrip("]"))
            items = node if isinstance(node, list) else []
            node = items[position - 1] if 0 < position <= len(items) else {}
            instances[target.path] = node if isinstance(node, dict) else {}
        fields = target.children
    current = _for_expression(target.type, node) if target is not None else None
    return instances, position, current, target


def evaluate_at(
    spec: FormSpec, data: dict[str, Any], expression: str, *, path: str, now: datetime
) -> expressions.Value:
    """Evaluate one expression as the form would at `path` (e.g. `/data/rep[2]/x`).

    Raises `ExpressionSyntaxError` or `NotEvaluable` where the server cannot evaluate it.
    """
    by_name, chains = _index(spec)
    run = _Run(spec=spec, data=data, now=now, language="en", by_name=by_name, chains=chains)
    instances, position, current, _ = _locate(spec, data, path)
    context = expressions.EvalContext(
        resolve=run.resolve_in(instances), current=current, position=position, now=now
    )
    return expressions.evaluate(expressions.parse_expression(expression), context)


def judge_at(
    spec: FormSpec, data: dict[str, Any], expression: str, *, path: str, now: datetime
) -> bool | None:
    """The server's verdict on a rule at `path`: True/False, or None when it is not decided
    (then a constraint never rejects and the submission is flagged)."""
    by_name, chains = _index(spec)
    run = _Run(spec=spec, data=data, now=now, language="en", by_name=by_name, chains=chains)
    instances, position, current, _ = _locate(spec, data, path)
    return run.check("constraint", expression, path, current, instances, position)
