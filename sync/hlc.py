"""Hybrid logical clock (Kulkarni et al.) in the wire form `"<wall_ms:013d>:<counter:05d>:<node>"`.

Fixed-width, zero-padded fields make plain string comparison equal to causal order, so the
database can index and compare HLCs as text. The clock never reads the time itself: `now_ms` is
injected (device clock plus the offset learned from `server_hlc`, or a fake clock in tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from schemas.errors import CodedError, ErrorCode

MAX_WALL_MS = 10**13 - 1
MAX_COUNTER = 10**5 - 1
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000  # PROTOCOL.md push rule 6

_HLC_RE = re.compile(r"^([0-9]{13}):([0-9]{5}):([A-Za-z0-9_-]{1,64})$")
_NODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class HLCInvalid(CodedError, ValueError):
    code = ErrorCode.HLC_INVALID


class ClockSkew(CodedError, ValueError):
    """A device's HLC is too far ahead of the server clock; carries the server time to adopt."""

    code = ErrorCode.CLOCK_SKEW

    def __init__(self, hlc: str, server_now_ms: int) -> None:
        super().__init__(f"HLC {hlc} is more than the allowed skew ahead of the server clock")
        self.server_now_ms = server_now_ms


@dataclass(frozen=True, order=True, slots=True)
class HLC:
    """One timestamp; ordering of instances equals ordering of their formatted strings."""

    wall_ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        if not 0 <= self.wall_ms <= MAX_WALL_MS:
            raise HLCInvalid(f"wall time out of range: {self.wall_ms}")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise HLCInvalid(f"counter out of range: {self.counter}")
        if not _NODE_RE.match(self.node):
            raise HLCInvalid(f"node must be 1-64 of [A-Za-z0-9_-]: {self.node!r}")

    @classmethod
    def parse(cls, text: str) -> HLC:
        match = _HLC_RE.match(text)
        if match is None:
            raise HLCInvalid(f"not an HLC: {text!r}")
        return cls(int(match[1]), int(match[2]), match[3])

    def format(self) -> str:
        return f"{self.wall_ms:013d}:{self.counter:05d}:{self.node}"

    def __str__(self) -> str:
        return self.format()


def wall_ms(hlc: str) -> int:
    """The physical part of an HLC string, in Unix milliseconds."""
    return HLC.parse(hlc).wall_ms


def is_too_far_ahead(hlc: str, server_now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> bool:
    """True when the HLC's wall time is more than `max_skew_ms` ahead of the server clock."""
    return wall_ms(hlc) - server_now_ms > max_skew_ms


def check_skew(hlc: str, server_now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> None:
    """Raise `ClockSkew` (code `clock_skew`) for a push whose HLC is too far ahead."""
    if is_too_far_ahead(hlc, server_now_ms, max_skew_ms):
        raise ClockSkew(hlc, server_now_ms)


class Clock:
    """A node's clock. Not thread-safe: one per device (or per server process, behind a lock)."""

    def __init__(self, node: str, now_ms: Callable[[], int], last: str | None = None) -> None:
        self.node = node
        self._now_ms = now_ms
        start = HLC.parse(last) if last else HLC(0, 0, node)
        self._wall = start.wall_ms
        self._counter = start.counter
        HLC(0, 0, node)  # validates the node name

    @property
    def last(self) -> str:
        """The latest timestamp issued or observed (persist it to survive restarts)."""
        return HLC(self._wall, self._counter, self.node).format()

    def send(self) -> str:
        """A new timestamp for a local event, greater than every one issued or received before."""
        physical = self._now_ms()
        if physical > self._wall:
            self._wall, self._counter = physical, 0
        else:
            self._wall, self._counter = _after(self._wall, self._counter)
        return self.last

    tick = send

    def receive(self, remote: str) -> str:
        """Merge a remote timestamp; the result is greater than both it and every local one."""
        other = HLC.parse(remote)
        physical = self._now_ms()
        wall = max(self._wall, other.wall_ms, physical)
        if wall == self._wall and wall == other.wall_ms:
            self._wall, self._counter = _after(wall, max(self._counter, other.counter))
        elif wall == self._wall:
            self._wall, self._counter = _after(wall, self._counter)
        elif wall == other.wall_ms:
            self._wall, self._counter = _after(wall, other.counter)
        else:
            self._wall, self._counter = wall, 0
        return self.last


def _after(wall: int, counter: int) -> tuple[int, int]:
    """The next timestamp: the counter's next value, or on overflow the next millisecond (order
    and format both stay valid). Nothing comes after the last one of the range (year 2286)."""
    if counter < MAX_COUNTER:
        return wall, counter + 1
    if wall < MAX_WALL_MS:
        return wall + 1, 0
    raise HLCInvalid("no timestamp comes after the end of the clock's range")
