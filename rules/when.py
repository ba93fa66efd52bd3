"""Dates as clients write them, read relative to the day they wrote: "fin du mois", "début mai",
"mi-juin", "next Friday", "vendredi prochain", "sous 15 jours", "sous huitaine", "d'ici la semaine
prochaine", "within two weeks", "le 30", "by the 20th", "after the 15th", "end of Q2", "demain".

Dates written in full ("15 mai 2027", "30/04") are read by dateparser in bot/understand.py; this
module reads what dateparser does not: expressions that need the day of writing and a business
habit ("fin de mois" is the month's last day, "début" its 5th, "mi-" its 15th). "à réception de
notre paiement client", "dès que possible" or "next payment run" give no date: a person decides.

Pure: the day of writing is a parameter."""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date, timedelta

_MONTHS = {
    "janvier": 1, "janv": 1, "jan": 1, "january": 1, "fevrier": 2, "fevr": 2, "fev": 2, "feb": 2, "february": 2,
    "mars": 3, "mar": 3, "march": 3, "avril": 4, "avr": 4, "apr": 4, "april": 4, "mai": 5, "may": 5, "juin": 6,
    "jun": 6, "june": 6, "juillet": 7, "juil": 7, "jul": 7, "july": 7, "aout": 8, "aug": 8, "august": 8,
    "septembre": 9, "sept": 9, "sep": 9, "september": 9, "octobre": 10, "oct": 10, "october": 10, "novembre": 11,
    "nov": 11, "november": 11, "decembre": 12, "dec": 12, "december": 12,
}
_WEEKDAYS = {"lundi": 0, "mardi": 1, "mercredi": 2, "jeudi": 3, "vendredi": 4, "samedi": 5, "dimanche": 6,
             "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6}
_NUMBERS = {"un": 1, "une": 1, "one": 1, "a": 1, "deux": 2, "two": 2, "trois": 3, "three": 3, "quatre": 4, "four": 4,
            "cinq": 5, "five": 5, "six": 6, "sept": 7, "seven": 7, "huit": 8, "eight": 8, "dix": 10, "ten": 10,
            "quinze": 15, "fifteen": 15, "vingt": 20, "twenty": 20, "trente": 30, "thirty": 30}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_NUM = r"\d{1,3}|" + "|".join(sorted(_NUMBERS, key=len, reverse=True))

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(p)) for name, p in (
    ("end_of_next_month", r"\b(?:fin du mois prochain|end of next month)\b"),
    ("end_of_month_named", rf"\b(?:fin|end of|late|the end of)\s+(?:(?:du mois )?d[e']\s*)?({_MONTH})\b"),
    ("end_of_month", r"\b(?:fin (?:du |de |de ce )?mois|end of (?:the |this )?month|month[- ]end|eom)\b"),
    ("start_of_month", rf"\b(?:debut|early|beginning of|start of|the start of|first week of)\s+"
                       rf"(?:d[e']\s*)?({_MONTH})\b"),
    ("start_of_next_month", r"\b(?:debut du mois prochain|early next month|beginning of next month|"
                            r"start of next month|le mois prochain|next month)\b"),
    ("mid_month", rf"\b(?:mi|mid|the middle of|middle of)[- ]\s*({_MONTH})\b"),
    ("quarter", r"\b(?:end of |fin (?:du )?)(?:q|t|trimestre\s*)([1-4])\b|\bend of (?:the )?quarter\b|"
                r"\bfin (?:du |de )?trimestre\b"),
    ("end_of_next_week", r"\b(?:(?:a la )?fin de (?:la )?semaine prochaine|end of next week)\b"),
    ("early_next_week", r"\b(?:debut de (?:la )?semaine prochaine|early next week|start of next week)\b"),
    ("end_of_week", r"\b(?:fin (?:de (?:la )?|de cette )?semaine|end of (?:the |this )?week|"
                    r"cette semaine|this week)\b"),
    ("weekend", r"\b(?:ce|this|by the|over the|during the|pendant le|d'ici le|avant le) (?:week-?end)\b"),
    ("next_week", r"\b(?:(?:d'ici |courant |dans )?la semaine prochaine|(?:during |by )?next week)\b"),
    ("within_business_days", rf"\b(?:sous|dans|d'ici|within|in|en)\s+(?:les\s+|the\s+next\s+)?({_NUM})\s*"
                             r"(?:jours? ouvr(?:es|ables)|(?:working|business) days)"),
    ("within_days", rf"\b(?:sous|dans|d'ici|within|in|en)\s+(?:les\s+|the\s+next\s+)?({_NUM})\s*"
                    r"(?:jours?|days?|j\b)"),
    ("within_weeks", rf"\b(?:sous|dans|d'ici|within|in)\s+(?:les\s+|the\s+next\s+)?({_NUM})\s*(?:semaines?|weeks?)\b"),
    ("hours", r"\b(?:sous|dans|d'ici|within|in)\s+(24|48|72)\s*(?:h|heures|hours|hrs)\b"),
    ("huitaine", r"\bsous (?:hu|hui)taine\b"),
    ("quinzaine", r"\bsous quinzaine\b|\bdans (?:une|la) quinzaine\b"),
    ("tomorrow", r"\b(?:demain|tomorrow|tmrw)\b"),
    ("day_after", r"\bapres[- ]demain\b|\bday after tomorrow\b"),
    ("today", r"\b(?:aujourd'hui|ce jour|ce soir|dans la journee|today|tonight|this evening|"
              r"end of (?:the )?day|later today)\b"),
    ("weekday", rf"\b(?:(?:next|this|on|by|coming)\s+)?({_DAY})\b(?:\s+(?:prochain|qui vient|next))?"),
    ("day_of_month_en", r"\b(?:by|on|before|after|until) the\s+(\d{1,2})(?:(?:st|nd|rd|th)\b|(?=\s*(?:[.,;!?)]|$)))"),
    ("day_of_month", r"\b(?:le|avant le|apres le|pour le|d'ici le|au plus tard le)\s+(\d{1,2})"
                     r"(?:er|st|nd|rd|th)?\b(?![.,/-]\d)"
                     r"(?!\s*(?:h\b|%|€|eur|jours?|days?|semaines?|weeks?|mois|months?|ans?|years?|"
                     r"units?|pieces?|articles?|" + _MONTH + r"))"),
    ("day_ordinal", r"\bthe (\d{1,2})(?:st|nd|rd|th)\b"),
))


_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")  # combining


def plain(text: str) -> str:
    """`text` lower-cased, one kind of apostrophe, no accents: as people type it without them."""
    return _MARKS.sub("", unicodedata.normalize("NFD", text.lower().replace("’", "'")))


def _month_day(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _next_month(d: date, n: int = 1) -> tuple[int, int]:
    m = d.month - 1 + n
    return d.year + m // 12, m % 12 + 1


def _named(written: date, month: int, day: int) -> date:
    """Day `day` of the named month, this year or the next (never in the past)."""
    year = written.year if month >= written.month else written.year + 1
    return _month_day(year, month, day)


def _number(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBERS.get(token, 0)


def _resolve(name: str, m: re.Match[str], written: date) -> date | None:
    g = m.group(1) if m.groups() else None
    if name == "end_of_month_named" and g:
        return _named(written, _MONTHS[g], 31)
    if name == "end_of_month":
        return _month_day(written.year, written.month, 31)
    if name == "end_of_next_month":
        return _month_day(*_next_month(written), 31)
    if name == "start_of_month" and g:
        return _named(written, _MONTHS[g], 5)
    if name == "start_of_next_month":
        return _month_day(*_next_month(written), 5)
    if name == "mid_month" and g:
        return _named(written, _MONTHS[g], 15)
    if name == "quarter":
        q = int(g) if g else (written.month - 1) // 3 + 1
        end = _month_day(written.year, q * 3, 31)
        return end if end >= written else _month_day(written.year + 1, q * 3, 31)
    if name == "end_of_next_week":
        return written + timedelta(days=7 - written.weekday() + 4)
    if name == "early_next_week":
        return written + timedelta(days=7 - written.weekday() + 1)  # Tuesday of next week
    if name == "weekend":
        return written + timedelta(days=6 - written.weekday())
    if name == "within_business_days" and g:
        n, cursor = _number(g), written
        while 0 < n <= 60:
            cursor += timedelta(days=1)
            n -= cursor.weekday() < 5
        return cursor if 0 < _number(g) <= 60 else None
    if name == "end_of_week":
        return written + timedelta(days=max(0, 4 - written.weekday()))
    if name == "next_week":
        return written + timedelta(days=7 - written.weekday() + 4)  # Friday of next week
    if name == "within_days" and g:
        return written + timedelta(days=_number(g)) if 0 < _number(g) <= 120 else None
    if name == "within_weeks" and g:
        return written + timedelta(weeks=_number(g)) if 0 < _number(g) <= 16 else None
    if name == "hours" and g:
        return written + timedelta(days=int(g) // 24)
    if name == "huitaine":
        return written + timedelta(days=8)
    if name == "quinzaine":
        return written + timedelta(days=15)
    if name == "tomorrow":
        return written + timedelta(days=1)
    if name == "day_after":
        return written + timedelta(days=2)
    if name == "today":
        return written
    if name == "weekday" and g:
        ahead = (_WEEKDAYS[g] - written.weekday()) % 7 or 7
        return written + timedelta(days=ahead)
    if name in ("day_of_month", "day_of_month_en", "day_ordinal") and g:
        day = int(g)
        if not 1 <= day <= 31:
            return None
        when = _month_day(written.year, written.month, day) if day > written.day else _month_day(
            *_next_month(written), day)
        # "after the 15th": the day after (counted once the day is known: "après le 30" in April is 1 May)
        return when + timedelta(days=1) if m.group(0).startswith(("after", "apres")) else when
    return None


def relative_dates(text: str, written: date) -> tuple[tuple[int, date], ...]:
    """(position, date) of each date expression in `text`, in the order written, resolved from the
    day of writing; never before that day."""
    plain_text = plain(text[:5000])
    found: list[tuple[int, int, date]] = []
    for name, pattern in _PATTERNS:
        for m in pattern.finditer(plain_text):
            if any(start <= m.start() < end for start, end, _ in found):
                continue  # a longer expression already read this place ("fin du mois prochain")
            when = _resolve(name, m, written)
            if when is not None and when >= written:
                found.append((m.start(), m.end(), when))
    return tuple((start, when) for start, _, when in sorted(found))
