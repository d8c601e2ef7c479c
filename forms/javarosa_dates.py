"""Dates as JavaRosa 5.1 (ODK Collect's engine) reads, counts and prints them.

JavaRosa holds every date, dateTime and time as an instant (`java.util.Date`) and reads or prints
its fields in the device's time zone; here that zone is the form's (`zone`), and an instant is an
aware `datetime`. Sources: `org.javarosa.core.model.utils.DateUtils` at v5.1.0.
- A date ('2026-06-17', also '2026-6-7') is local midnight; a dateTime without an offset is local
  time, with 'Z' or '+07:00' the instant it names; a time alone is that local time on 1970-01-01.
- As a number a date is the count of whole local days since 1970-01-01 (`toNumeric`); as a double
  (`abs()`, `pow()`, ...) it is fractional days since local midnight of 1970-01-01.
- As text it is its local date only: string(now()) is '2026-06-17'.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final

DAY_MS: Final = 86_400_000
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class DateError(ValueError):
    """The text is not a date JavaRosa reads, or the date is outside what can be represented."""


def _java_int(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise DateError(text)
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise DateError(text)
    return value


def _ms(moment: datetime) -> int:
    """Milliseconds since the UTC epoch, as `Date.getTime()`."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(milliseconds: int, zone: tzinfo) -> datetime:
    try:
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=milliseconds)).astimezone(
            zone
        )
    except OverflowError as exc:
        raise DateError("out of range") from exc


def local(
    year: int,
    month: int,
    day: int,
    zone: tzinfo,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    """Joda's `LocalDateTime(...).toDate()`: these wall-clock fields in `zone`."""
    try:
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone)
    except (ValueError, OverflowError) as exc:
        raise DateError("out of range") from exc


def round_date(moment: datetime, zone: tzinfo) -> datetime:
    """Local midnight of the moment's local day (`DateUtils.roundDate`)."""
    fields = moment.astimezone(zone)
    return local(fields.year, fields.month, fields.day, zone)


def _epoch(zone: tzinfo) -> datetime:
    return local(1970, 1, 1, zone)


def local_days(moment: datetime, zone: tzinfo) -> int:
    """`DateUtils.daysSinceEpoch`: whole local days since local 1970-01-01 (the half day absorbs
    offset changes, such as Saigon's +08:00 of 1970)."""
    span = _ms(round_date(moment, zone)) - _ms(_epoch(zone)) + DAY_MS // 2
    return span // DAY_MS


def fractional_days(moment: datetime, zone: tzinfo) -> float:
    """`DateUtils.fractionalDaysSinceEpoch`: days since local midnight of 1970-01-01."""
    return (_ms(moment) - _ms(_epoch(zone))) / DAY_MS


def decimal_date_time(moment: datetime) -> float:
    """`decimal-date-time()`: days since the UTC epoch."""
    return _ms(moment) / DAY_MS


def decimal_time(moment: datetime, zone: tzinfo, now: datetime) -> float:
    """`DateUtils.decimalTimeOfLocalDay`: the fraction of the local day (at today's offset)."""
    offset = now.astimezone(zone).utcoffset() or timedelta()
    value = (_ms(moment) + offset.total_seconds() * 1000) / DAY_MS
    return value - math.floor(value)


def add_days(days: int, zone: tzinfo) -> datetime:
    """`date(n)`: local midnight n days after 1970-01-01."""
    try:
        day = date(1970, 1, 1) + timedelta(days=days)
    except OverflowError as exc:
        raise DateError("out of range") from exc
    return local(day.year, day.month, day.day, zone)


def _check(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return 1 <= day <= days


def _parse_day(text: str) -> tuple[int, int, int]:
    pieces = text.split("-")
    if len(pieces) != 3:
        raise DateError(text)
    year, month, day = (_java_int(piece) for piece in pieces)
    if not _check(year, month, day):
        raise DateError(text)
    return year, month, day


def _parse_clock(text: str) -> tuple[int, int, int, int]:
    pieces = text.split(":")
    if len(pieces) not in (2, 3):
        raise DateError(text)
    hour, minute = _java_int(pieces[0]), _java_int(pieces[1])
    second = ticks = 0
    if len(pieces) == 3:
        seconds = re.match(r"[0-9.]*", pieces[2])
        assert seconds is not None
        raw = seconds.group(0)
        try:
            fsec = float(raw) if raw else 0.0
        except ValueError as exc:
            raise DateError(text) from exc
        second = int(fsec)
        ticks = int(1000.0 * fsec - 1000.0 * second)
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59 and 0 <= ticks <= 999):
        raise DateError(text)
    return hour, minute, second, ticks


def _parse_time(
    text: str, day: tuple[int, int, int], zone: tzinfo
) -> datetime:  # DateUtils.parseTime
    if not text:
        raise DateError(text)
    offset: tuple[int, int] | None = None
    if text.endswith("Z"):
        text = text[:-1]
        offset = (0, 0)
    elif "+" in text or "-" in text:
        pieces, sign = text.split("+"), -1
        if len(pieces) == 1:
            pieces, sign = text.split("-"), 1
        text, raw = pieces[0], pieces[1]
        minutes = 0
        if ":" in raw:
            raw, raw_minutes = raw.split(":")[0], raw.split(":")[1]
            minutes = _java_int(raw_minutes) * sign
        offset = (_java_int(raw) * sign, minutes)
    hour, minute, second, ticks = _parse_clock(text)
    if offset is None:
        return local(*day, zone, hour, minute, second, ticks * 1000)
    try:
        utc = datetime(*day, hour, minute, second, ticks * 1000, tzinfo=UTC)
        return (utc + timedelta(hours=offset[0], minutes=offset[1])).astimezone(zone)
    except (ValueError, OverflowError) as exc:
        raise DateError(text) from exc


def parse_date_time(text: str, zone: tzinfo) -> datetime:
    """`DateUtils.parseDateTime`: 'Y-M-D' or 'Y-M-DThh:mm[:ss[.sss]][Z|±hh[:mm]]'."""
    head, separator, clock = text.partition("T")
    day = _parse_day(head)
    if not separator:
        return local(*day, zone)
    return _parse_time(clock, day, zone)


def parse_time(text: str, zone: tzinfo, today: date) -> datetime:
    """A `time` field's value: that clock time on the day it is read (`DateUtils.parseTime`
    starts from today's local fields)."""
    return _parse_time(text, (today.year, today.month, today.day), zone)


def iso_date(moment: datetime, zone: tzinfo) -> str:
    """`DateUtils.formatDate(d, FORMAT_ISO8601)`: what string() of any date gives."""
    fields = moment.astimezone(zone)
    return f"{fields.year}-{fields.month:02d}-{fields.day:02d}"


def _week_of_year(day: date) -> int:
    """`Calendar.WEEK_OF_YEAR` in the US convention (weeks start on Sunday, week 1 holds 1 Jan)."""
    following_new_year = date(day.year + 1, 1, 1)
    days_to_saturday = (5 - day.weekday()) % 7
    if day + timedelta(days=days_to_saturday) >= following_new_year:
        return 1
    first = date(day.year, 1, 1)
    first_sunday_offset = (first.weekday() + 1) % 7  # days from the Sunday starting week 1
    return (day.toordinal() - first.toordinal() + first_sunday_offset) // 7 + 1


def format_date(moment: datetime, pattern: str, zone: tzinfo) -> str:
    """`DateUtils.format`: %Y %y %m %n %b %d %e %H %h %M %S %3 %a %W; month and day names in
    English, as a device in an English locale prints them."""
    fields = moment.astimezone(zone)
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(pattern):
            raise DateError("date format string ends with %")
        code = pattern[i + 1]
        i += 2
        if code == "%":
            out.append("%")
        elif code == "Y":
            out.append(f"{fields.year:04d}")
        elif code == "y":
            out.append(f"{fields.year:04d}"[2:])
        elif code == "m":
            out.append(f"{fields.month:02d}")
        elif code == "n":
            out.append(str(fields.month))
        elif code == "b":
            out.append(_MONTHS[fields.month - 1])
        elif code == "d":
            out.append(f"{fields.day:02d}")
        elif code == "e":
            out.append(str(fields.day))
        elif code == "H":
            out.append(f"{fields.hour:02d}")
        elif code == "h":
            out.append(str(fields.hour))
        elif code == "M":
            out.append(f"{fields.minute:02d}")
        elif code == "S":
            out.append(f"{fields.second:02d}")
        elif code == "3":
            out.append(f"{fields.microsecond // 1000:03d}")
        elif code == "a":
            out.append(_DAYS[fields.weekday()])
        elif code == "W":
            out.append(str(_week_of_year(fields.date())))
        else:
            raise DateError(f"unrecognized escape in date format string [%{code}]")
    return "".join(out)
