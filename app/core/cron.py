"""Cron expressions in a time zone: validation, and the slots they name, in UTC.

A schedule's slots are *wall-clock* times in its time zone (``0 4 * * *`` in
``Europe/Berlin`` is 04:00 in Berlin, winter and summer), stored and compared in UTC.
croniter walks the expression over naive local times; each match is then placed in the
zone the way ``java.time`` resolves a local time:

- a local time the clocks skip (spring forward: 02:30 on the night the clocks go from
  02:00 to 03:00) fires as much later as the clocks jumped (03:30 summer time);
- a local time the clocks repeat (fall back) fires once, at its first occurrence.

Slots are strictly increasing in UTC; a match that would land on or before the previous
slot (the repeated hour) is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadCronError, CroniterBadDateError, CroniterError

# The nicknames accepted besides five fields; each is a five-field expression.
NICKNAMES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
FIELDS = ("minute", "hour", "day of month", "month", "day of week")
# How many slots a scan walks at most (a minute schedule down for a week); beyond it,
# counts are lower bounds and only the most recent slots are listed.
SCAN_LIMIT = 10_000


class InvalidCron(ValueError):
    """The expression is not a five-field cron expression (the message says which field)."""


class InvalidTimezone(ValueError):
    """Not an IANA time zone name."""


def expand(expression: str) -> str:
    """The five fields of ``expression`` (a nickname replaced), single-spaced; raises
    :class:`InvalidCron` naming the first bad field."""
    text = expression.strip()
    if text.startswith("@"):
        try:
            return NICKNAMES[text.lower()]
        except KeyError:
            known = ", ".join(NICKNAMES)
            raise InvalidCron(f"unknown nickname {text!r} (known: {known})") from None
    fields = text.split()
    if len(fields) != len(FIELDS):
        raise InvalidCron(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}"
        )
    for position, (name, value) in enumerate(zip(FIELDS, fields, strict=True)):
        alone = " ".join(value if i == position else "*" for i in range(len(FIELDS)))
        if value.upper().startswith("H") or not croniter.is_valid(alone):
            raise InvalidCron(f"the {name} field {value!r} is not valid")
    joined = " ".join(fields)
    if not croniter.is_valid(joined):
        raise InvalidCron(f"{joined!r} is not a valid cron expression")
    return joined


def zone(name: str) -> ZoneInfo:
    try:
        if not name or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimezone(f"not an IANA time zone: {name!r}") from None


def _resolve(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A naive local time as a UTC instant (fold 0: the earlier offset; a skipped time
    is read with the offset before the jump, so it lands after the gap)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)


@dataclass(frozen=True)
class Cron:
    """A validated expression in a time zone."""

    expression: str  # the five fields
    tz: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str) -> Cron:
        """Raises :class:`InvalidCron` or :class:`InvalidTimezone`; also refuses an
        expression that matches no date (``0 0 30 2 *``)."""
        cron = cls(expand(expression), zone(timezone))
        try:
            cron.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        except InvalidCron:
            raise InvalidCron(f"{expression.strip()!r} matches no date") from None
        return cron

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first slot strictly after ``after`` (UTC)."""
        local = after.astimezone(self.tz).replace(tzinfo=None)
        try:
            walk = croniter(self.expression, local)
            for _ in range(1000):
                candidate = _resolve(walk.get_next(dt.datetime), self.tz)
                if candidate > after:
                    return candidate
        except (CroniterBadDateError, CroniterBadCronError, CroniterError) as exc:
            raise InvalidCron(str(exc)) from None
        raise InvalidCron(f"{self.expression!r} matches no time after {after.isoformat()}")

    def at_or_before(self, moment: dt.datetime) -> dt.datetime | None:
        """The last slot at or before ``moment`` (None if none in croniter's range)."""
        start = moment + dt.timedelta(microseconds=1)
        local = start.astimezone(self.tz).replace(tzinfo=None)
        try:
            walk = croniter(self.expression, local)
            for _ in range(1000):
                candidate = _resolve(walk.get_prev(dt.datetime), self.tz)
                # A skipped local time resolves later than the walk's position: such
                # a match may lie after ``moment``; the one before it does not.
                if candidate <= moment:
                    break
            else:
                return None
            # A repeated local time resolves to its first occurrence: a later slot may
            # still come before ``moment``.
            following = self.next_after(candidate)
            while following <= moment:
                candidate, following = following, self.next_after(following)
            return candidate
        except (CroniterBadDateError, CroniterError):
            return None


@dataclass(frozen=True)
class Due:
    """The slots from ``first`` up to a moment: how many, and the most recent ones."""

    count: int  # a lower bound when ``complete`` is False
    first: dt.datetime
    recent: list[dt.datetime]  # the latest ``keep`` slots, oldest first; recent[-1] is the last
    complete: bool


def due(cron: Cron, first: dt.datetime, until: dt.datetime, keep: int) -> Due | None:
    """The slots ``first`` (a slot itself: the schedule's ``next_run_at``) and after, up
    to and including ``until``; None when ``first`` is later than ``until``. At most
    :data:`SCAN_LIMIT` slots are walked; beyond that the most recent ``keep`` are found
    walking back from ``until``."""
    if first > until:
        return None
    recent: deque[dt.datetime] = deque(maxlen=max(keep, 1))
    slot, count = first, 0
    while slot <= until and count < SCAN_LIMIT:
        recent.append(slot)
        count += 1
        slot = cron.next_after(slot)
    if slot <= until:  # the scan stopped early: find the last ones from the end
        tail: list[dt.datetime] = []
        moment: dt.datetime | None = until
        while moment is not None and len(tail) < max(keep, 1):
            found = cron.at_or_before(moment)
            if found is None or found < first:
                break
            tail.append(found)
            moment = found - dt.timedelta(microseconds=1)
        return Due(count=count, first=first, recent=sorted(tail), complete=False)
    return Due(count=count, first=first, recent=list(recent), complete=True)
