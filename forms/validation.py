"""Server-side validation of a submission's JSON against the exact form version it names.

Submission data: groups are nested objects, repeats are lists of objects, select_multiple is a list
of choice names or a space-separated string, geopoint is "lat lon [alt [accuracy]]".
Error paths are XForm paths with a 1-based position per repeat instance:
`/data/visit/violations[2]/kind`. A rule the evaluator cannot evaluate is listed in
`not_checked` and never rejects the submission; so is an answer picked from a file
(`select_one_from_file wards.csv`) unless the caller says what that file holds for the submitter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any, Literal

from forms import expressions
from forms.spec import walk_fields
from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.forms import Field, FormSpec, NotChecked, ValidationResult

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")  # "12,5": Vietnamese input
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


# What the caller knows of the choices a form picks from a file, by file name (`wards.csv`): per
# answer, True (one of them), False (not one of them) or None (not known: flagged, not rejected).
FileChoices = Mapping[str, Callable[[str], bool | None]]


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


def _build(fields: list[Field], values: object, parent: expressions.Element) -> None:
    """Add an element per field (per repeat instance) under `parent`, with the values given."""
    container = values if isinstance(values, dict) else {}
    for f in fields:
        value = container.get(f.name)
        if f.type == "repeat":
            for item in value if isinstance(value, list) else []:
                instance = parent.add(expressions.Element(f.name, definition=f))
                _build(f.children, item, instance)
        elif f.type == "group":
            _build(f.children, value, parent.add(expressions.Element(f.name, definition=f)))
        else:
            parent.add(expressions.Element(f.name, value=value, definition=f))


def instance_tree(spec: FormSpec, data: object) -> expressions.Element:
    """The form's instance as the engines see it: every field, one element per repeat instance."""
    root = expressions.Element(_root_name(spec))
    _build(spec.fields, data, root)
    return root


def _root_name(spec: FormSpec) -> str:
    return spec.fields[0].path.split("/")[1] if spec.fields else "data"


@dataclass
class _Run:
    spec: FormSpec
    now: datetime
    language: str
    references: dict[str, str]  # ${name} -> the field's path
    file_choices: FileChoices = field(default_factory=dict)
    errors: list[ErrorItem] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)

    def error(self, path: str, code: str, message: str) -> None:
        self.errors.append(ErrorItem(path=path, code=code, message=message))

    def verdict(self, rule: str, text: str, element: expressions.Element) -> expressions.Verdict:
        parsed = _parsed(text)
        if parsed is None:
            return expressions.Verdict(None, "the expression does not parse")
        context = expressions.EvalContext(
            now=self.now,
            node=element,
            references=self.references,
            version=self.spec.version,
            constraint=rule == "constraint",
        )
        return expressions.judge(parsed, context)

    def check(self, rule: str, text: str, element: expressions.Element) -> bool | None:
        """A rule's outcome; None (and a not-checked note) when it cannot be decided."""
        verdict = self.verdict(rule, text, element)
        if verdict.outcome is None:
            self.not_checked.append(
                NotChecked(path=element.path(), rule=rule, reason=verdict.reason, expression=text)  # type: ignore[arg-type]
            )
        return verdict.outcome

    def walk(
        self,
        fields: list[Field],
        values: object,
        parent: expressions.Element,
        relevant: bool | None,
    ) -> None:
        container = values if isinstance(values, dict) else {}
        known = {f.name for f in fields}
        path = parent.path()
        for key in container:
            if key not in known:
                self.error(
                    f"{path}/{key}",
                    ErrorCode.UNKNOWN_FIELD,
                    _message("unknown_field", self.language),
                )
        for f in fields:
            elements = [c for c in parent.children if c.name == f.name]
            self.field(f, container.get(f.name), elements, f"{path}/{f.name}", relevant)

    def field(
        self,
        f: Field,
        value: object,
        elements: list[expressions.Element],
        path: str,
        parent_relevant: bool | None,
    ) -> None:
        relevant = parent_relevant
        if relevant is not False and f.relevant:
            # A repeat's relevance is judged at its first instance, as the engines do for a new one.
            at = elements[0] if elements else None
            own = self.check("relevant", f.relevant, at) if at is not None else True
            relevant = False if own is False else (None if own is None else relevant)
        if relevant is False:
            for element in elements:
                _clear(element)  # ODK clears non-relevant answers: others see them empty
            return
        wrong = f"{_message('wrong_type', self.language)} "
        if f.type == "group":
            if not _is_empty(value) and not isinstance(value, dict):
                self.error(path, ErrorCode.WRONG_TYPE, wrong + "group")
                return
            self.walk(f.children, value or {}, elements[0], relevant)
            return
        if f.type == "repeat":
            if not _is_empty(value) and not isinstance(value, list):
                self.error(path, ErrorCode.WRONG_TYPE, wrong + "repeat")
                return
            items: list[Any] = value if isinstance(value, list) else []
            for item, element in zip(items, elements, strict=True):
                if not isinstance(item, dict):
                    self.error(element.path(), ErrorCode.WRONG_TYPE, wrong + "group")
                    continue
                self.walk(f.children, item, element, relevant)
            return
        self.leaf(f, value, elements[0], relevant)

    def leaf(
        self, f: Field, value: object, element: expressions.Element, relevant: bool | None
    ) -> None:
        if f.type == "note":
            return
        path = element.path()
        if _is_empty(value):
            self.required(f, element, relevant)
            return
        if not _type_ok(f.type, value):
            self.error(
                path, ErrorCode.WRONG_TYPE, f"{_message('wrong_type', self.language)} {f.type}"
            )
            return
        if f.type in ("select_one", "select_multiple"):
            picked = [str(value)] if f.type == "select_one" else (_as_choices(value) or [])
            if not f.choices_known:
                unknown = self.picked_from_file(f, picked, path)
            else:
                allowed = {c.name for c in f.choices}
                unknown = [p for p in picked if p not in allowed]
            if unknown:
                self.error(
                    path,
                    ErrorCode.UNKNOWN_CHOICE,
                    f"{_message('unknown_choice', self.language)}: {', '.join(unknown)}",
                )
                return
        if f.constraint and self.check("constraint", f.constraint, element) is False:
            message = _form_message(f.constraint_message, self.language, self.spec.default_language)
            self.error(path, ErrorCode.CONSTRAINT, message or _message("constraint", self.language))

    def picked_from_file(self, f: Field, picked: list[str], path: str) -> list[str]:
        """The answers the file is known not to hold; a flag when some are not known either way."""
        judge = self.file_choices.get(f.choice_list or "")
        verdicts = [(p, judge(p) if judge is not None else None) for p in picked]
        if any(verdict is None for _, verdict in verdicts):
            self.not_checked.append(
                NotChecked(path=path, rule="choices", reason="choices come from a file")
            )
        return [p for p, verdict in verdicts if verdict is False]

    def required(self, f: Field, element: expressions.Element, relevant: bool | None) -> None:
        if f.required is False or f.type == "calculate":
            return
        path = element.path()
        if relevant is None:
            self.not_checked.append(
                NotChecked(path=path, rule="required", reason="relevance unknown")
            )
            return
        needed: bool | None = True
        if isinstance(f.required, str):
            needed = self.check("required", f.required, element)
        if needed:
            message = _form_message(f.required_message, self.language, self.spec.default_language)
            self.error(path, ErrorCode.REQUIRED, message or _message("required", self.language))


def _clear(element: expressions.Element) -> None:
    element.value = None
    for child in element.children:
        _clear(child)


def validate_submission(
    spec: FormSpec,
    data: dict[str, Any],
    *,
    now: datetime,
    language: str = "vi",
    file_choices: FileChoices | None = None,
) -> ValidationResult:
    """Check a submission's data; messages in `language`, the form's own message first.

    `now` is when the form was completed, aware, in the form's time zone: today() is its date.
    `file_choices` judges answers picked from the files it names (others are flagged)."""
    run = _Run(
        spec=spec,
        now=now,
        language=language,
        references=_references(spec),
        file_choices=file_choices or {},
    )
    root = instance_tree(spec, data)
    if not isinstance(data, dict):
        run.error(f"/{root.name}", "wrong_type", f"{_message('wrong_type', language)} object")
    else:
        run.walk(spec.fields, data, root, True)
    return ValidationResult(valid=not run.errors, errors=run.errors, not_checked=run.not_checked)


_REFERENCES_CACHE: dict[str, dict[str, str]] = {}


def _references(spec: FormSpec) -> dict[str, str]:
    """${name} -> path, kept per spec hash since published specs never change."""
    cached = _REFERENCES_CACHE.get(spec.hash) if spec.hash else None
    if cached is not None:
        return cached
    references = {f.name: f.path for f in walk_fields(spec.fields)}
    if spec.hash and len(_REFERENCES_CACHE) < 256:
        _REFERENCES_CACHE[spec.hash] = references
    return references


# ------------------------------------------------------------------ one expression, in place


def _element_at(spec: FormSpec, data: dict[str, Any], path: str) -> expressions.Element:
    pending = [instance_tree(spec, data)]
    while pending:
        element = pending.pop()
        if element.path() == path:
            return element
        pending.extend(element.children)
    raise ValueError(f"{path}: no such element in this instance")


def evaluate_at(
    spec: FormSpec,
    data: dict[str, Any],
    expression: str,
    *,
    path: str,
    now: datetime,
    dialect: Literal["javarosa", "enketo"] = "javarosa",
) -> expressions.Value:
    """Evaluate one expression as the form would at `path` (e.g. `/data/rep[2]/x`), in
    JavaRosa's reading or Enketo's.

    Raises `ExpressionSyntaxError` or `NotEvaluable` where the server cannot evaluate it.
    """
    context = expressions.EvalContext(
        now=now,
        node=_element_at(spec, data, path),
        references=_references(spec),
        version=spec.version,
        dialect=dialect,
    )
    return expressions.evaluate(expressions.parse_expression(expression), context)


def judge_at(
    spec: FormSpec,
    data: dict[str, Any],
    expression: str,
    *,
    path: str,
    now: datetime,
    rule: Literal["constraint", "relevant", "required"] = "constraint",
) -> bool | None:
    """The server's verdict on a rule at `path`: True/False, or None when it is not decided
    (then a constraint never rejects and the submission is flagged)."""
    run = _Run(spec=spec, now=now, language="en", references=_references(spec))
    return run.verdict(rule, expression, _element_at(spec, data, path)).outcome
