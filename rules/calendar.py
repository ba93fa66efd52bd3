"""When a reminder may go out: business days, public holidays and a local sending window."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

_MAX_DAYS_AHEAD = 400  # no real calendar has a year without a single business day


@dataclass(frozen=True)
class SendingCalendar:
    """Allowed moments: inside [start, end) local time, on business days when asked.

    `holidays` is any container of dates (the `holidays` package's objects qualify)."""

    zone: tzinfo
    start: time = time(9, 0)
    end: time = time(17, 0)
    business_days_only: bool = True
    holidays: Container[date] = field(default_factory=frozenset)
    # Many invoices share a due date: memoise the roll-forward (a pure function of its argument).
    _memo: dict[datetime, datetime] = field(default_factory=dict, compare=False, repr=False)

    def is_business_day(self, day: date) -> bool:
        if not self.business_days_only:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def is_allowed(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        return self.is_business_day(local.date()) and self.start <= local.time() < self.end

    def next_allowed(self, at: datetime) -> datetime:
        """The first allowed moment at or after `at`."""
        found = self._memo.get(at)
        if found is None:
            found = self._memo[at] = self._next_allowed(at)
        return found

    def _next_allowed(self, at: datetime) -> datetime:
        local = at.astimezone(self.zone)
        day = local.date()
        if local.time() >= self.end:
            day += timedelta(days=1)
        for _ in range(_MAX_DAYS_AHEAD):
            if self.is_business_day(day):
                opening = datetime.combine(day, self.start, self.zone)
                return max(opening, local) if day == local.date() else opening
            day += timedelta(days=1)
        raise ValueError(f"no business day within {_MAX_DAYS_AHEAD} days of {day}")

    def start_of_day(self, day: date) -> datetime:
        return datetime.combine(day, time(0, 0), self.zone)
