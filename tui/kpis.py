"""The KPI screen: `relance kpi` as numbers, small bar charts where a picture reads faster, and
the weekly series (money recovered, replies) as sparklines under their titles."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from bot.i18n import day, money, number, stage, t, words


def kpi_text(k: dict[str, Any], labels: dict[str, tuple[str, str]], per_kind: dict[str, int]) -> str:
    """The KPIs of `relance kpi` in words, amounts in the reader's language; stages by their labels."""
    def pct(v: str | None) -> str:
        return f"{number(v)} %" if v is not None else "—"

    def figure(v: str | None) -> str:
        return number(v) if v else "—"

    lines = [f"[b]{t('DSO (days)')}[/b]: {figure(k['dso_days'])}",
             f"[b]{t('open receivables')}[/b]: {money(Decimal(k['open_receivables']))}",
             f"[b]{t('recovery rate')}[/b]: {pct(k['recovery_rate_pct'])}",
             f"[b]{t('reply rate')}[/b]: {pct(k['reply_rate_pct'])}",
             f"[b]{t('days to pay after the first reminder')}[/b]: "
             f"{figure(k['mean_days_to_pay_after_first_reminder'])}",
             f"[b]{t('amicable conversion')}[/b]: {pct(k['amicable_conversion_pct'])}",
             f"[b]{t('cost of recovery')}[/b]: {money(Decimal(k['cost_of_recovery']))}", "",
             f"[b]{t('recovered per stage')}[/b]"]
    lines += _bars({stage(n, labels): Decimal(v) for n, v in k["recovered_per_stage"].items()})
    if "ageing" in k:
        lines += ["", f"[b]{t('ageing of open receivables')}[/b]"]
        lines += _bars({t("not due yet") if b == "not_due" else t("{days} days late", days=b): Decimal(v)
                        for b, v in k["ageing"].items()})
    lines += ["", f"[b]{t('waiting per kind')}[/b]"]
    lines += [f"  {words(kind):<24} {n}" for kind, n in sorted(per_kind.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def _bars(values: dict[str, Decimal], width: int = 30) -> list[str]:
    """A small bar chart in text: a picture reads faster than a column of amounts."""
    top = max(values.values(), default=Decimal(0)) or Decimal(1)
    return [f"  {name:<18} {'█' * int(v * width / top):<{width}} {money(v)}" for name, v in values.items()]



def series_title(k: dict[str, Any], key: str) -> str:
    """The title over a weekly sparkline: what it counts, since when, its total and its latest week."""
    values = k[key]
    start = day(date.fromisoformat(k["weeks_from"]))
    if key == "settled_per_week":
        amounts = [Decimal(v) for v in values]
        return t("[b]settled per week[/b], {n} weeks from {day}: {total} in all, {last} the last week",
                 n=len(values), day=start, total=money(sum(amounts, Decimal(0))), last=money(amounts[-1]))
    return t("[b]replies per week[/b], {n} weeks from {day}: {total} in all, {last} the last week",
             n=len(values), day=start, total=sum(values), last=values[-1])


def series_points(k: dict[str, Any], key: str) -> list[int]:
    """A series as the sparkline's bar heights (cents for money: exact, and only their ratio shows)."""
    return [int(Decimal(v) * 100) for v in k[key]] if key == "settled_per_week" else [int(v) for v in k[key]]
