"""Import of a plain XForm XML into the normalized spec (types from binds and body controls).

Parsed with defusedxml: no DTDs, no external or internal entities. Absolute paths in bind
expressions (` /data/visit/kind `) are rewritten to `${kind}` so the same evaluator checks them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from forms.spec import language_code, with_hash
from forms.xlsform import FormImportError, ImportedForm
from schemas.forms import Choice, EntityBinding, Field, FieldType, FormSpec, ImportIssue

XF = "{http://www.w3.org/2002/xforms}"
H = "{http://www.w3.org/1999/xhtml}"
JR = "{http://openrosa.org/javarosa}"
ENTITIES = "{http://www.opendatakit.org/xforms/entities}"

_BIND_TYPES: dict[str, FieldType] = {
    "string": "text",
    "int": "integer",
    "integer": "integer",
    "decimal": "decimal",
    "date": "date",
    "time": "time",
    "dateTime": "datetime",
    "geopoint": "geopoint",
}
_ITEXT_REF = re.compile(r"jr:itext\('([^']+)'\)")
_TRUE = frozenset({"true()", "true", "yes", "1"})


def _required(text: str, rewrite: Callable[[str | None], str | None]) -> bool | str:
    if text in _TRUE:
        return True
    if text in ("", "false()", "false"):
        return False
    return rewrite(text) or False


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _fail(message: str) -> FormImportError:
    return FormImportError([ImportIssue(sheet="", message=message)])


def import_xform(data: bytes, filename: str) -> ImportedForm:
    try:
        html = fromstring(data)
    except (ET.ParseError, DefusedXmlException, ValueError) as error:
        raise _fail(f"This file is not a readable XForm XML document: {error}") from error
    head = html.find(f"{H}head")
    model = head.find(f"{XF}model") if head is not None else None
    if head is None or model is None:
        raise _fail("This XML is not an XForm: it has no <h:head> with a <model>.")
    instances = model.findall(f"{XF}instance")
    primary = next(
        (i for i in instances if "id" not in i.attrib), instances[0] if instances else None
    )
    if primary is None or len(primary) == 0:
        raise _fail("This XForm has no primary <instance>.")
    root = primary[0]
    reader = _XFormReader(model, html.find(f"{H}body"), instances)
    spec = reader.spec(root, head.findtext(f"{H}title") or "")
    return ImportedForm(
        source=data,
        filename=filename,
        source_kind="xform",
        xform=data.decode("utf-8", errors="replace"),
        spec=spec,
    )


class _XFormReader:
    def __init__(self, model: ET.Element, body: ET.Element | None, instances: list[ET.Element]):
        self.binds = {b.get("nodeset", ""): b for b in model.iter(f"{XF}bind")}
        self.translations: dict[str, dict[str, str]] = {}
        itext = model.find(f"{XF}itext")
        self.default_lang = ""
        if itext is not None:
            for translation in itext.findall(f"{XF}translation"):
                lang = translation.get("lang", "default")
                if translation.get("default") and not self.default_lang:
                    self.default_lang = lang
                texts: dict[str, str] = {}
                for text in translation.findall(f"{XF}text"):
                    values = [v for v in text.findall(f"{XF}value") if not v.get("form")]
                    if values and values[0].text and values[0].text != "-":
                        texts[text.get("id", "")] = values[0].text
                self.translations[lang] = texts
        self.default_code = language_code(self.default_lang) if self.default_lang else "vi"
        self.controls: dict[str, ET.Element] = {}
        self.repeats: set[str] = set()
        if body is not None:
            for element in body.iter():
                name = _local(element.tag)
                if name == "repeat":
                    self.repeats.add(element.get("nodeset", ""))
                elif element.get("ref") and name not in ("label", "hint", "value"):
                    self.controls[element.get("ref", "")] = element
        self.secondary = {i.get("id", ""): i for i in instances if i.get("id")}
        self.paths: dict[str, str] = {}  # absolute path -> field name

    def labels(self, element: ET.Element | None) -> dict[str, str]:
        if element is None:
            return {}
        translated = self.translated(element.get("ref", ""))
        if translated is not None:
            return translated
        text = "".join(element.itertext()).strip()
        return {self.default_code: text} if text else {}

    def expression(self, text: str | None) -> str | None:
        if not text or not text.strip():
            return None
        value = text.strip()
        for path in sorted(self.paths, key=len, reverse=True):
            # pyxform pads each reference with one space on either side; drop that padding.
            value = re.sub(
                rf"(?<![\w/]) ?{re.escape(path)}(?![\w/-]) ?", f"${{{self.paths[path]}}}", value
            )
        return value.strip()

    def choices(self, control: ET.Element) -> tuple[list[Choice], str | None, bool]:
        items = control.findall(f"{XF}item")
        if items:
            return (
                [
                    Choice(
                        name=item.findtext(f"{XF}value", ""),
                        labels=self.labels(item.find(f"{XF}label")),
                    )
                    for item in items
                ],
                None,
                True,
            )
        itemset = control.find(f"{XF}itemset")
        match = (
            re.match(r"instance\('([^']+)'\)", itemset.get("nodeset", ""))
            if itemset is not None
            else None
        )
        instance = self.secondary.get(match.group(1)) if match else None
        if match is None or instance is None or instance.get("src"):
            # Choices from a file are known by its name (`jr://file-csv/wards.csv` → wards.csv).
            src = instance.get("src", "") if instance is not None else ""
            return [], src.rsplit("/", 1)[-1] or (match.group(1) if match else None), False
        choices = []
        for item in instance.iter(f"{XF}item"):
            itext_id = item.findtext(f"{XF}itextId")
            if itext_id:
                labels = {
                    language_code(lang) if lang != "default" else self.default_code: texts[itext_id]
                    for lang, texts in self.translations.items()
                    if itext_id in texts
                }
            else:
                label = item.findtext(f"{XF}label")
                labels = {self.default_code: label} if label else {}
            choices.append(Choice(name=item.findtext(f"{XF}name", ""), labels=labels))
        return choices, match.group(1), True

    def collect(self, element: ET.Element, path: str) -> None:
        seen: set[str] = set()
        for child in element:
            name = _local(child.tag)
            if name in seen:
                continue
            seen.add(name)
            self.paths[f"{path}/{name}"] = name
            self.collect(child, f"{path}/{name}")

    def fields(self, element: ET.Element, path: str) -> list[Field]:
        built: list[Field] = []
        seen: set[str] = set()
        for child in element:
            name = _local(child.tag)
            if name in seen or name == "entity":
                continue  # repeat instances after the template; entity plumbing
            seen.add(name)
            built.append(self.field(child, f"{path}/{name}"))
        return built

    def field(self, element: ET.Element, path: str) -> Field:
        bind = self.binds.get(path)
        attrs = bind.attrib if bind is not None else {}
        control = self.controls.get(path)
        control_kind = _local(control.tag) if control is not None else ""
        choices: list[Choice] = []
        choice_list: str | None = None
        choices_known = True
        kind: FieldType
        if path in self.repeats:
            kind = "repeat"
        elif len(element) > 0 or control_kind == "group":
            kind = "group"
        elif control_kind in ("select1", "select"):
            kind = "select_one" if control_kind == "select1" else "select_multiple"
            assert control is not None
            choices, choice_list, choices_known = self.choices(control)
        elif control_kind == "upload":
            media = (control.get("mediatype", "") if control is not None else "").split("/")[0]
            kind = {"image": "image", "audio": "audio"}.get(media, "file")  # type: ignore[assignment]
        elif attrs.get("calculate") and control is None:
            kind = "calculate"
        elif (
            control_kind == "input"
            and attrs.get("readonly") in _TRUE
            and attrs.get("type", "string") == "string"
        ):
            kind = "note"
        else:
            kind = _BIND_TYPES.get(attrs.get("type", "string"), "text")
        required_text = attrs.get("required", "")
        return Field(
            name=_local(element.tag),
            path=path,
            type=kind,
            labels=self.labels(control.find(f"{XF}label") if control is not None else None),
            hint=self.labels(control.find(f"{XF}hint") if control is not None else None),
            choice_list=choice_list,
            choices=choices,
            choices_known=choices_known,
            required=_required(required_text, self.expression),
            required_message=self.message(attrs.get(f"{JR}requiredMsg")),
            constraint=self.expression(attrs.get("constraint")),
            constraint_message=self.message(attrs.get(f"{JR}constraintMsg")),
            relevant=self.expression(attrs.get("relevant")),
            calculation=self.expression(attrs.get("calculate")),
            default=(element.text or "").strip() or None
            if kind not in ("group", "repeat")
            else None,
            read_only=attrs.get("readonly") in _TRUE,
            save_to=attrs.get(f"{ENTITIES}saveto"),
            children=self.fields(element, path) if kind in ("group", "repeat") else [],
        )

    def message(self, text: str | None) -> dict[str, str]:
        if not text:
            return {}
        translated = self.translated(text)
        if translated is not None:
            return translated
        return {self.default_code: text}

    def translated(self, text: str) -> dict[str, str] | None:
        """The itext a `jr:itext('id')` reference names, by language; None for plain text."""
        match = _ITEXT_REF.search(text)
        if not match:
            return None
        return {
            language_code(lang) if lang != "default" else self.default_code: texts[match.group(1)]
            for lang, texts in self.translations.items()
            if match.group(1) in texts
        }

    def spec(self, root: ET.Element, title: str) -> FormSpec:
        root_path = f"/{_local(root.tag)}"
        self.collect(root, root_path)
        fields = self.fields(root, root_path)
        entities: list[EntityBinding] = []
        for entity in [e for e in root.iter() if _local(e.tag) == "entity" and e.get("dataset")]:
            base = f"{root_path}/meta/entity"

            def calc(node: str, base: str = base) -> str | None:
                bind = self.binds.get(f"{base}/{node}")
                return self.expression(bind.get("calculate")) if bind is not None else None

            properties = {
                str(b.get(f"{ENTITIES}saveto")): path
                for path, b in self.binds.items()
                if b.get(f"{ENTITIES}saveto")
            }
            entities.append(
                EntityBinding(
                    list_name=entity.get("dataset", ""),
                    create_if=calc("@create") if entity.get("create") else None,
                    update_if=calc("@update") if entity.get("update") else None,
                    label=calc("label"),
                    entity_id=calc("@id"),
                    properties=properties,
                )
            )
        languages = sorted(
            {language_code(lang) for lang in self.translations if lang != "default"}
            | {self.default_code}
        )
        languages.sort(key=lambda code: (code != self.default_code, code))
        spec = FormSpec(
            form_id=root.get("id", ""),
            title=title,
            version=root.get("version", ""),
            default_language=self.default_code,
            languages=languages,
            fields=fields,
            entities=entities,
        )
        return with_hash(spec)
