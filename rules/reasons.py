"""Reasons as data: a code and its parameters, never an English sentence to parse back.

A stored reason is one or more pieces joined by "; ": a piece is either a code with its
parameters, written as compact JSON (`{"code":"hold.promise","until":"2027-03-01"}`), or text
that came from outside and is shown as it is (a server's own words, a person's why). bot/reasons.py
renders them per language from one catalog. Rows written before codes existed hold English prose:
read as text, shown as stored."""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()


def reason(code: str, **params: Any) -> str:
    """The stored form of reason `code` with `params` (strings, numbers; a parameter may itself be a
    stored reason)."""
    return json.dumps({"code": code, **{k: v if isinstance(v, int | str) else str(v) for k, v in params.items()}},
                      ensure_ascii=False, separators=(",", ":"))


def join(*pieces: str) -> str:
    """Several reasons in one (the empty ones left out)."""
    return "; ".join(p for p in pieces if p)


def pieces(stored: str) -> list[dict[str, Any] | str]:
    """A stored reason's pieces: codes (dicts with `code`) and text. Prose from before codes, or a
    code cut short, comes back as text."""
    if not stored.startswith("{"):
        return [stored] if stored else []
    out: list[dict[str, Any] | str] = []
    i = 0
    while i < len(stored):
        if stored[i] == "{":
            try:
                obj, end = _DECODER.raw_decode(stored, i)
            except ValueError:
                obj, end = None, i
            if isinstance(obj, dict) and isinstance(obj.get("code"), str):
                out.append(obj)
                i = end + 2 if stored.startswith("; ", end) else end
                continue
        j = stored.find("; {", i)
        j = len(stored) if j < 0 else j
        out.append(stored[i:j])
        i = j + 2
    return out


def codes(stored: str) -> list[str]:
    """The codes of a stored reason, in order (text pieces left out)."""
    return [p["code"] for p in pieces(stored) if isinstance(p, dict)]
