"""`regex(value, pattern)` on a linear-time engine (RE2), read as java.util.regex reads it.

JavaRosa (ODK Collect) runs `Pattern.matches`: the pattern must match the WHOLE value. Enketo runs
`RegExp.test`: a match anywhere is enough; `search=True` gives that reading.
RE2 never backtracks, so no pattern can hang the server. Where RE2 and Java would read a pattern or a
value differently, `UnsafeRegex` is raised and the rule is "not checked" rather than guessed:
- features RE2 lacks (back-references, look-around, possessive quantifiers) fail to compile;
- class intersection `[a-z&&[^e]]`, nested and POSIX classes, octal escapes, `{` that is not a
  quantifier, `(?P<..>)`, `\\p{..}` other than a Unicode general category, and
  `\\v \\h \\R \\X \\Z \\G`: Java syntax RE2 reads otherwise (or Java refuses);
- `\\b`/`\\B` and `(?i)` on non-ASCII text (Java's word boundary is Unicode, its case folding
  ASCII; RE2's are the other way round);
- `.` on text holding \\r, U+0085, U+2028 or U+2029, and `\\s` on a vertical tab (Java excludes
  or includes them where RE2 does not).
`\\d`, `\\w`, `\\s` are ASCII in both; `\\p{L}` and other Unicode classes mean the same.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

import re2

from schemas.errors import CodedError, ErrorCode

MAX_PATTERN_LENGTH: Final = 500
MAX_SUBJECT_LENGTH: Final = 10_000

_OPTIONS: Final[Any] = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20
_JAVA_ONLY: Final = re.compile(r"\\[vhRXZG]|&&")
_WORD_BOUNDARY: Final = re.compile(r"\\[bB]")
_CASELESS: Final = re.compile(r"\(\?[a-zA-Z]*i")
_DOT_EXCLUDED: Final = frozenset("\r\x85\u2028\u2029")


class UnsafeRegex(CodedError):
    """The pattern or value is read differently by Java and RE2, or is invalid or too long."""

    code = ErrorCode.EXPRESSION_NOT_EVALUABLE


# Unicode general categories: the \p{..} names Java and RE2 both read the same way.
_CATEGORIES: Final = frozenset(
    "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp "
    "C Cc Cf Co Cs".split()
)
_QUANTIFIER: Final = re.compile(r"\{[0-9]+(,[0-9]*)?\}")


def _java_syntax(pattern: str) -> None:
    """Refuse what java.util.regex reads otherwise than RE2 (or refuses while RE2 accepts)."""
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            following = pattern[i + 1 : i + 2]
            if following.isdigit():
                raise UnsafeRegex("regex octal escapes and back-references read otherwise in Java")
            if following in ("p", "P"):
                rest = pattern[i + 2 :]
                braced = rest.startswith("{") and "}" in rest
                name = rest[1 : rest.find("}")] if braced else rest[:1]
                if name not in _CATEGORIES:
                    raise UnsafeRegex(f"regex property \\p{{{name}}} reads otherwise in Java")
                i += len(name) + 2 if braced else 1
            i += 2
            continue
        if in_class:
            if char == "[":
                raise UnsafeRegex(
                    "regex nested classes and [:posix:] classes read otherwise in Java"
                )
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                raise UnsafeRegex("regex ']' first in a class: Java and RE2 read it differently")
        elif char == "{" and not _QUANTIFIER.match(pattern, i):
            raise UnsafeRegex("regex '{' that is not a quantifier: Java refuses it")
        elif pattern.startswith("(?P", i):
            raise UnsafeRegex("regex (?P...) groups: Java refuses them")
        i += 1


def _unescaped(pattern: str) -> str:
    """The pattern with escaped characters removed, to look for bare `.` and `\\s`."""
    return re.sub(r"\\.", lambda m: "" if m.group(0) not in ("\\s",) else "\\s", pattern)


@lru_cache(maxsize=512)
def _compile(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafeRegex(f"regex pattern longer than {MAX_PATTERN_LENGTH} characters")
    if _JAVA_ONLY.search(pattern):
        raise UnsafeRegex("regex uses Java syntax the server's engine reads differently")
    _java_syntax(pattern)
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        message = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise UnsafeRegex(f"regex the server's engine cannot run: {message}") from exc


def _check_subject(pattern: str, subject: str) -> None:
    bare = _unescaped(pattern)
    if "." in bare and not _DOT_EXCLUDED.isdisjoint(subject):
        raise UnsafeRegex("regex '.' on text with a line separator")
    if "\x0b" in subject and "\\s" in bare:
        raise UnsafeRegex("regex '\\s' on text with a vertical tab")
    if subject.isascii():
        return
    if _WORD_BOUNDARY.search(pattern):
        raise UnsafeRegex("regex word boundary on non-ASCII text")
    if _CASELESS.search(pattern):
        raise UnsafeRegex("case-insensitive regex on non-ASCII text")


def regex_matches(subject: str, pattern: str, *, search: bool = False) -> bool:
    """JavaRosa's `regex(subject, pattern)` (or Enketo's with `search=True`)."""
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise UnsafeRegex(f"regex subject longer than {MAX_SUBJECT_LENGTH} characters")
    compiled = _compile(pattern)
    _check_subject(pattern, subject)
    if search:
        return compiled.search(subject) is not None
    return compiled.fullmatch(subject) is not None
