"""Which text the server stores, and what it keeps of text it refused."""

from __future__ import annotations

import msgspec

from server.text_rules import control_characters, control_characters_of, scrubbed


class Note(msgspec.Struct):
    title: str
    answers: dict[str, str]


def test_control_characters_are_found_with_their_paths_and_tab_newline_cr_are_text() -> None:
    clean = Note("Quán\tHoa\r\nMai", {"ghi chú": "ổn"})
    assert control_characters_of(clean, "$.note") == []
    dirty = Note("Quán\x00", {"a\x1b": "b\x7f", "c": "d\x85"})
    found = [(e.path, e.code) for e in control_characters_of(dirty, "$.note")]
    assert found == [
        ("$.note.title", "control_character"),
        ('$.note.answers["a\\u001b"]', "control_character"),
        ('$.note.answers["a\\u001b"]', "control_character"),
        ("$.note.answers.c", "control_character"),
    ]
    assert found == [
        (e.path, e.code) for e in control_characters(msgspec.to_builtins(dirty), "$.note")
    ]


def test_scrubbed_replaces_control_characters_in_strings_and_keys_only() -> None:
    value = {"a\x00": ["x\x01y", 3, None, {"k": "\tok\n"}]}
    assert scrubbed(value) == {"a\ufffd": ["x\ufffdy", 3, None, {"k": "\tok\n"}]}
