"""The reply classifier's weights: learned from labelled replies, shipped, refitted per installation.

The examples are the corpus shipped in `bot/corpus/` (written for Relance, French and English,
every kind) plus the kinds the credit controller set or corrected on this installation's own
messages (`relance label`, the triage UI). `fit` learns a multinomial logistic regression
(scikit-learn) over the features `rules.intent` reads; the result is a plain `Model` value (a
weight per feature and kind) that `rules.intent.score` applies without scikit-learn.

`relance learn` refits and stores the model in the database, where every instance reads it; with
none stored, the shipped `bot/corpus/model.json` is used (`python -m bot.learn` rebuilds it, and a
test checks that it was built from the corpus as it is)."""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.models import Classifier, Inbound, InboundRaw, table
from bot.store import session
from bot.understand import parse, written
from rules.classify import Kind, MailFacts, reading_of
from rules.intent import Model, bag

CORPUS = resources.files("bot") / "corpus"
C = 1.0  # inverse regularisation strength: chosen by 5-fold cross-validation on the shipped corpus (bench/learning.py)


@dataclass(frozen=True)
class Example:
    facts: MailFacts
    kind: str
    source: str  # "corpus:<id>" or "label:<message id>"


def corpus_files() -> list[Any]:
    return sorted((f for f in CORPUS.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


def corpus_digest() -> str:
    h = hashlib.sha256()
    for f in corpus_files():
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def facts_of_case(case: dict[str, Any]) -> MailFacts:
    """What the pipeline would see of a labelled case (FORMAT.md): the message as parsed, or its
    body as the person wrote it, with quotes stripped like a real reply's."""
    if case.get("raw"):
        raw = case["raw"].replace("{reminder_message_id}", "relance.x@acme.example").replace(
            "{reminder_subject}", "Rappel : facture — ACME SAS")
        return parse(raw.lstrip("\n").replace("\n", "\r\n").encode("utf-8")).facts
    headers = {k.lower(): str(v) for k, v in case.get("headers", {}).items()}
    headers.setdefault("from", case.get("from", ""))
    return MailFacts(sender=case.get("from", "").lower(), subject=case.get("subject", ""),
                     text=written(case.get("body", ""), case.get("subject", "")), headers=headers,
                     attachments=tuple(case.get("attachments", ())))


def corpus_examples(files: Iterable[Any] | None = None) -> list[Example]:
    out = []
    for f in files if files is not None else corpus_files():
        doc = tomllib.loads(f.read_text(encoding="utf-8"))
        out += [Example(facts_of_case(c), c["kind"], f"corpus:{c['id']}") for c in doc["case"]]
    return out


def fit(examples: Sequence[Example], c: float = C, version: str = "") -> Model:
    """A model learned from `examples` (every kind must have at least one)."""
    from sklearn.feature_extraction import DictVectorizer  # noqa: PLC0415 - heavy, for learning only
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    vectorizer = DictVectorizer()
    x = vectorizer.fit_transform([bag(reading_of(e.facts)) for e in examples])
    y = [e.kind for e in examples]
    lr = LogisticRegression(C=c, max_iter=3000)
    lr.fit(x, y)
    kinds = tuple(str(k) for k in lr.classes_)
    names = vectorizer.get_feature_names_out()
    weights: dict[str, tuple[float, ...]] = {}
    for j, name in enumerate(names):
        column = tuple(round(float(lr.coef_[k, j]), 4) for k in range(len(kinds)))
        if any(abs(w) >= 1e-3 for w in column):
            weights[str(name)] = column
    return Model(kinds=kinds, bias=tuple(round(float(b), 4) for b in lr.intercept_), weights=weights,
                 version=version or f"{len(examples)} examples")


def dumps(model: Model, **meta: Any) -> str:
    return json.dumps({"kinds": model.kinds, "bias": model.bias, "version": model.version, **meta,
                       "weights": model.weights}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def loads(text: str) -> Model:
    doc = json.loads(text)
    return Model(kinds=tuple(doc["kinds"]), bias=tuple(doc["bias"]),
                 weights={k: tuple(v) for k, v in doc["weights"].items()}, version=doc.get("version", ""))


@functools.cache
def shipped() -> Model:
    return loads((CORPUS / "model.json").read_text(encoding="utf-8"))


_fitted: dict[int, Model] = {}


def current(engine: Engine) -> Model:
    """The model this installation uses: its latest refit (`relance learn`), else the shipped one."""
    cl = table(Classifier)
    with engine.connect() as c:
        latest = c.execute(sa.select(sa.func.max(cl.c.id))).scalar()
        if latest is None:
            return shipped()
        if latest not in _fitted:
            _fitted[latest] = loads(c.execute(sa.select(cl.c.data).where(cl.c.id == latest)).scalar_one())
    return _fitted[latest]


def labelled_examples(engine: Engine) -> list[Example]:
    """The messages a person labelled on this installation, read as the pipeline reads them."""
    in_t = table(Inbound)
    out = []
    with engine.connect() as c:
        raw_t = table(InboundRaw)
        for mid, raw, label in c.execute(sa.select(in_t.c.id, raw_t.c.raw, in_t.c.label)
                                         .join(raw_t, raw_t.c.inbound_id == in_t.c.id)
                                         .where(in_t.c.label.is_not(None)).order_by(in_t.c.id)):
            try:
                out.append(Example(parse(raw).facts, label, f"label:{mid}"))
            except Exception:  # noqa: S112 - a message that cannot be read teaches nothing
                continue
    return out


def learn(engine: Engine, now: datetime) -> tuple[Model, int, int]:
    """Refit on the shipped corpus plus this installation's labelled messages and store the model,
    which every instance then uses. Returns (model, examples, of which labelled here)."""
    own = labelled_examples(engine)
    examples = corpus_examples() + own
    model = fit(examples, version=f"{now.date().isoformat()}: {len(examples)} examples, {len(own)} labelled here")
    with session(engine) as s:
        s.execute(sa.insert(table(Classifier)).values(created_at=now, examples=len(examples), labelled=len(own),
                                                      data=dumps(model)))
    return model, len(examples), len(own)


NIGHT = (1, 5)  # local hours when the daemon refits, away from the day's mail


def refit_if_due(engine: Engine, zone: ZoneInfo, now: datetime) -> str:
    """The daemon's nightly refit: at night, when people labelled messages since the last fit,
    refit with them (`learn`). Returns a line for the log, "" when nothing was due."""
    if not NIGHT[0] <= now.astimezone(zone).hour < NIGHT[1]:
        return ""
    cl, in_t = table(Classifier), table(Inbound)
    with engine.connect() as c:
        last = c.execute(sa.select(sa.func.max(cl.c.created_at))).scalar()
        newer = sa.select(sa.func.count()).select_from(in_t).where(in_t.c.label.is_not(None))
        if last is not None:
            newer = newer.where(in_t.c.labelled_at > last)
        if not c.execute(newer).scalar():
            return ""
    model, examples, own = learn(engine, now)
    return f"classifier refitted on {examples} examples ({own} labelled here): {model.version}"


def shipped_meta() -> dict[str, Any]:
    doc = json.loads((CORPUS / "model.json").read_text(encoding="utf-8"))
    return {k: v for k, v in doc.items() if k != "weights"}


def build_shipped(now: datetime) -> Path:
    """Refit on the shipped corpus and write `bot/corpus/model.json` (for maintainers)."""
    examples = corpus_examples()
    kinds = {e.kind for e in examples}
    if kinds != {k.value for k in Kind}:
        raise ValueError(f"the corpus lacks {sorted({k.value for k in Kind} - kinds)}")
    digest = corpus_digest()
    model = fit(examples, version=f"shipped {digest}")
    path = Path(str(CORPUS / "model.json"))
    path.write_text(dumps(model, corpus=digest, examples=len(examples), built=now.date().isoformat()) + "\n",
                    encoding="utf-8")
    shipped.cache_clear()
    return path


if __name__ == "__main__":
    from datetime import UTC

    print(build_shipped(datetime.now(UTC)))  # noqa: T201
