from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.hlc import (
    HLC,
    MAX_COUNTER,
    MAX_WALL_MS,
    Clock,
    ClockSkew,
    HLCInvalid,
    check_skew,
    is_too_far_ahead,
    wall_ms,
)

walls = st.integers(min_value=0, max_value=10**13 - 1)
counters = st.integers(min_value=0, max_value=99_999)
nodes = st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z")
hlcs = st.builds(HLC, walls, counters, nodes)


class FakeTime:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_format_is_fixed_width() -> None:
    assert HLC(1_700_000_000_123, 7, "dev-1").format() == "1700000000123:00007:dev-1"


@given(hlcs)
def test_parse_inverts_format(hlc: HLC) -> None:
    assert HLC.parse(hlc.format()) == hlc


@given(hlcs, hlcs)
def test_string_order_equals_timestamp_order(left: HLC, right: HLC) -> None:
    assert (left.format() < right.format()) == (left < right)


@pytest.mark.parametrize(
    "text",
    ["", "123:00001:n", "1700000000123:1:n", "1700000000123:00001:", "1700000000123:00001:a:b"],
)
def test_parse_refuses_malformed(text: str) -> None:
    with pytest.raises(HLCInvalid) as info:
        HLC.parse(text)
    assert info.value.code == "hlc_invalid"


def test_node_must_not_contain_separator() -> None:
    with pytest.raises(HLCInvalid):
        Clock("a:b", FakeTime(0))


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "receive"]),
            st.integers(min_value=-5_000, max_value=5_000),  # physical clock jumps, also backwards
            hlcs,
        ),
        max_size=40,
    )
)
def test_clock_is_strictly_monotonic_and_after_what_it_received(steps: list) -> None:
    time = FakeTime(1_700_000_000_000)
    clock = Clock("device-a", time)
    previous = clock.last
    for kind, jump, remote in steps:
        time.now = max(0, time.now + jump)
        if kind == "send":
            stamp = clock.send()
        else:
            try:
                stamp = clock.receive(remote.format())
            except HLCInvalid:  # only the very end of the range has no successor
                assert (remote.wall_ms, remote.counter) == (MAX_WALL_MS, MAX_COUNTER)
                continue
            assert stamp > remote.format() or HLC.parse(stamp) > remote
        assert stamp > previous
        assert HLC.parse(stamp).node == "device-a"
        assert wall_ms(stamp) >= time.now  # never behind the physical clock
        previous = stamp


def test_nothing_is_issued_after_the_last_timestamp_of_the_range() -> None:
    # Found by the property above: a remote stamp at the very end of the range (year 2286) has
    # no successor; the clock refuses it rather than issue an invalid stamp.
    clock = Clock("device-a", FakeTime(1_700_000_000_000))
    with pytest.raises(HLCInvalid):
        clock.receive(HLC(MAX_WALL_MS, MAX_COUNTER, "device-b").format())
    assert HLC.parse(clock.last).wall_ms < MAX_WALL_MS  # the clock itself did not move


def test_send_resets_counter_when_physical_time_advances() -> None:
    time = FakeTime(1000)
    clock = Clock("n1", time)
    assert clock.send() == "0000000001000:00000:n1"
    assert clock.send() == "0000000001000:00001:n1"
    time.now = 999  # the physical clock went backwards: logical time does not
    assert clock.send() == "0000000001000:00002:n1"
    time.now = 2000
    assert clock.tick() == "0000000002000:00000:n1"


def test_receive_from_a_clock_ahead_adopts_its_time() -> None:
    clock = Clock("n1", FakeTime(1000))
    assert clock.receive("0000000005000:00003:n2") == "0000000005000:00004:n1"
    assert clock.send() == "0000000005000:00005:n1"


def test_counter_overflow_borrows_next_millisecond() -> None:
    clock = Clock("n1", FakeTime(1000), last="0000000001000:99999:n1")
    assert clock.send() == "0000000001001:00000:n1"


def test_restart_from_persisted_last_stays_monotonic() -> None:
    first = Clock("n1", FakeTime(5000))
    stamp = first.send()
    restarted = Clock("n1", FakeTime(10), last=first.last)
    assert restarted.send() > stamp


def test_skew_check() -> None:
    server_now = 1_700_000_000_000
    ahead = HLC(server_now + 300_001, 0, "n").format()
    at_limit = HLC(server_now + 300_000, 0, "n").format()
    assert is_too_far_ahead(ahead, server_now)
    assert not is_too_far_ahead(at_limit, server_now)
    assert not is_too_far_ahead(HLC(0, 0, "n").format(), server_now)  # behind is fine
    check_skew(at_limit, server_now)
    with pytest.raises(ClockSkew) as info:
        check_skew(ahead, server_now)
    assert info.value.code == "clock_skew"
    assert info.value.server_now_ms == server_now
