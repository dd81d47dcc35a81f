"""Cron expressions in a time zone: what is accepted (and the field a refusal names), and
the slots they give, in UTC, across both daylight-saving changes."""

from __future__ import annotations

import datetime as dt

import pytest

from app.core.cron import Cron, InvalidCron, InvalidTimezone, due

UTC = dt.UTC


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "five"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   4 * *   1-5 ", "0 4 * * 1-5"),
        ("0 4 1 * *", "0 4 1 * *"),
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@MONTHLY", "0 0 1 * *"),
        ("30 2 * jan,jul mon", "30 2 * jan,jul mon"),
    ],
)
def test_accepted_expressions(expression: str, five: str) -> None:
    assert Cron.parse(expression, "UTC").expression == five


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "the minute field '61'"),
        ("0 24 * * *", "the hour field '24'"),
        ("0 0 32 * *", "the day of month field '32'"),
        ("0 0 * 13 *", "the month field '13'"),
        ("0 0 * * 8", "the day of week field '8'"),
        ("H * * * *", "the minute field 'H'"),
        ("* * * *", "5 fields"),
        ("0 * * * * *", "5 fields"),  # seconds are not offered
        ("@yearly", "unknown nickname"),
        ("@reboot", "unknown nickname"),
        ("0 0 30 2 *", "matches no date"),
        ("", "5 fields"),
    ],
)
def test_refused_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(InvalidCron, match=message):
        Cron.parse(expression, "UTC")


@pytest.mark.parametrize("name", ["Mars/Olympus", "utc ", "", "../etc/passwd", "Europe/"])
def test_refused_time_zones(name: str) -> None:
    with pytest.raises(InvalidTimezone, match="not an IANA time zone"):
        Cron.parse("@daily", name)


def test_wall_clock_slots_keep_their_local_time_across_the_autumn_change() -> None:
    """04:00 in Berlin is 02:00 UTC in summer and 03:00 UTC in winter (clocks went back on
    2026-10-25)."""
    cron = Cron.parse("0 4 * * *", "Europe/Berlin")
    slots, moment = [], at(2026, 10, 23, 12)
    for _ in range(3):
        moment = cron.next_after(moment)
        slots.append(moment)
    assert slots == [at(2026, 10, 24, 2), at(2026, 10, 25, 3), at(2026, 10, 26, 3)]


def test_a_time_the_clocks_skip_fires_after_the_gap() -> None:
    """On 2026-03-29 Berlin's clocks jump from 02:00 to 03:00: the 02:30 slot fires at
    03:30 summer time (01:30 UTC), once; the days around keep 02:30 local."""
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    slots, moment = [], at(2026, 3, 27, 12)
    for _ in range(3):
        moment = cron.next_after(moment)
        slots.append(moment)
    assert slots == [at(2026, 3, 28, 1, 30), at(2026, 3, 29, 1, 30), at(2026, 3, 30, 0, 30)]


def test_a_repeated_local_time_fires_once() -> None:
    """02:30 happens twice in Berlin on 2026-10-25 (00:30 and 01:30 UTC): one slot."""
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    first = cron.next_after(at(2026, 10, 24, 12))
    assert first == at(2026, 10, 25, 0, 30)
    assert cron.next_after(first) == at(2026, 10, 26, 1, 30)
    # Asked from inside the repeated hour, the slot already passed: the next day's.
    assert cron.next_after(at(2026, 10, 25, 1, 0)) == at(2026, 10, 26, 1, 30)


def test_new_york_changes_on_other_days() -> None:
    cron = Cron.parse("@daily", "America/New_York")
    assert cron.next_after(at(2026, 3, 7, 12)) == at(2026, 3, 8, 5)  # EST midnight
    assert cron.next_after(at(2026, 3, 8, 12)) == at(2026, 3, 9, 4)  # EDT midnight


def test_next_after_is_strictly_after() -> None:
    cron = Cron.parse("*/15 * * * *", "UTC")
    assert cron.next_after(at(2026, 1, 1, 10, 15)) == at(2026, 1, 1, 10, 30)
    assert cron.next_after(at(2026, 1, 1, 10, 14, 59)) == at(2026, 1, 1, 10, 15)


def test_at_or_before() -> None:
    cron = Cron.parse("0 * * * *", "UTC")
    assert cron.at_or_before(at(2026, 1, 1, 10)) == at(2026, 1, 1, 10)
    assert cron.at_or_before(at(2026, 1, 1, 10, 59)) == at(2026, 1, 1, 10)
    berlin = Cron.parse("*/30 * * * *", "Europe/Berlin")
    assert berlin.at_or_before(at(2026, 10, 25, 1, 45)) == at(2026, 10, 25, 0, 30)


def test_due_slots_after_a_downtime() -> None:
    cron = Cron.parse("@hourly", "UTC")
    found = due(cron, at(2026, 1, 1, 1), at(2026, 1, 1, 4, 0, 30), keep=2)
    assert found is not None
    assert (found.count, found.first, found.complete) == (4, at(2026, 1, 1, 1), True)
    assert found.recent == [at(2026, 1, 1, 3), at(2026, 1, 1, 4)]
    assert due(cron, at(2026, 1, 1, 5), at(2026, 1, 1, 4, 59), keep=2) is None


def test_a_very_long_downtime_is_bounded() -> None:
    """A minute schedule down for a month: the scan stops at its limit and the latest
    slots are found from the end."""
    cron = Cron.parse("* * * * *", "UTC")
    found = due(cron, at(2026, 1, 1), at(2026, 2, 1, 0, 0, 30), keep=3)
    assert found is not None
    assert not found.complete
    assert found.count >= 10_000
    assert found.recent == [at(2026, 1, 31, 23, 58), at(2026, 1, 31, 23, 59), at(2026, 2, 1)]
