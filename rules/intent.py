"""What a person's reply says, read sentence by sentence and scored by a linear model.

The text is normalised (case, accents, apostrophes, SMS forms), split into sentences and words;
each word is lemmatised (simplemma) and reduced to its family (Snowball: "réglerons", "réglé",
"regle", "règlement" are one family). Each sentence then gives its features:

- the families and lemmas it holds, alone and in pairs;
- the same families marked with what the sentence does with them: done (passé composé, "has been
  paid", "-ed"), to come (futur, "va payer", "will", "going to"), asked (a question), and denied
  (inside the scope of ne…pas / jamais / plus, not, never, n't, "pas encore", "not yet");
- who acts (nous / we, vous / you), and what it carries: amounts, dates, an invoice number,
  instalments ("en 3 fois", "500 a month", "half now").

A linear model (weights learned by `bot/learn.py`, shipped with the package) scores each kind
from the features; the gap between the best two probabilities is the margin the policy compares
with `understanding.auto_apply_margin`. The evidence a person sees is the sentence that weighed
most for the kind chosen, and the words in it that did.

Pure: no I/O, no clock; the model is a value handed in."""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import simplemma
import snowballstemmer

_APOSTROPHES = (("’", "'"), ("‘", "'"), ("`", "'"), ("´", "'"), ("\u00a0", " "), ("\u202f", " "))
# SMS and mail shorthand, word for word (after lower-casing, before splitting into words).
_SHORTHAND = {
    "c": "c'est", "cé": "c'est", "bjr": "bonjour", "slt": "salut", "svp": "s'il vous plaît",
    "stp": "s'il te plaît", "pr": "pour", "pk": "pourquoi", "pq": "pourquoi", "pcq": "parce que",
    "jsp": "je ne sais pas", "dsl": "désolé", "tkt": "ne t'inquiète pas", "qd": "quand", "qq": "quelque",
    "qqch": "quelque chose", "rdv": "rendez-vous", "tt": "tout", "bcp": "beaucoup", "nn": "non",
    "asap": "as soon as possible", "pls": "please", "plz": "please", "thx": "thanks",
    "thks": "thanks", "ty": "thank you", "u": "you", "ur": "your", "r": "are", "im": "i am", "gonna": "going to",
    "wanna": "want to", "pmt": "payment", "pymt": "payment", "inv": "invoice", "eom": "end of month",
    "cb": "carte bancaire", "vir": "virement", "regl": "règlement",
}
_SHORT_FORM = re.compile(r"(?<![\w'])(" + "|".join(map(re.escape, sorted(_SHORTHAND, key=len, reverse=True)))
                         + r")(?![\w'])")
_CONTRACTIONS = tuple((re.compile(p), r) for p, r in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "cannot"), (r"\bshan't\b", "shall not"), (r"n't\b", " not"),
    (r"(?<=[a-z])'ll\b", " will"), (r"(?<=[a-z])'ve\b", " have"), (r"(?<=[a-z])'re\b", " are"),
    (r"\bi'm\b", "i am"), (r"(?<=[a-z])'d\b", " would")))
_CONTRACTED = re.compile(r"'(?:t|ll|ve|re|m|d)\b")  # what every one of _CONTRACTIONS holds
_WORD = re.compile(r"[a-zà-öø-ÿœæ]+(?:'(?=[a-zà-öø-ÿ]))?|\d+(?:[.,]\d+)?|[€$£%?!]")  # normalised text is lower-case
# Clauses, not only sentences: "we have not paid yet, we will pay on the 30th" says two things.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+|(?<=[.!?])(?=[A-ZÀ-Ý])|,\s+|\s+[-–—]\s+"
                           r"|\s+(?=(?:but|mais|however|cependant|sauf|except|par contre|en revanche)\b)")
_FR_STOP = frozenset({"le", "la", "les", "de", "des", "du", "un", "une", "et", "est", "nous", "vous", "je", "pas",
                      "ne", "que", "qui", "pour", "sur", "avec", "ce", "cette", "bonjour", "merci", "cordialement",
                      "avons", "sera", "été", "au", "aux", "votre", "notre", "facture"})
_EN_STOP = frozenset({"the", "a", "an", "of", "and", "is", "we", "you", "i", "not", "to", "for", "on", "with",
                      "this", "that", "hi", "hello", "thanks", "regards", "have", "has", "been", "will", "our",
                      "your", "invoice"})
_NEGATORS = frozenset({"ne", "n'", "pas", "jamais", "aucun", "aucune", "rien", "not", "never", "no", "nor",
                       "cannot", "sans", "without", "none", "nobody", "personne"})
_NEG_STOP = frozenset({"mais", "but", "et", "and", "car", "because", "donc", "so", "however", "cependant",
                       "puis", "then", "?", "!"})
_FUTURE_AUX = frozenset({"will", "shall"})
_FUTURE_ENDINGS = ("rai", "ras", "ra", "rons", "rez", "ront")
_PARTICIPLE_ENDINGS = ("é", "ée", "és", "ées", "i", "is", "it", "u", "ue", "ed", "en", "id", "ent", "aid", "ait")
_GO = frozenset({"va", "vais", "vas", "allons", "allez", "vont", "allait"})
_HAVE_BE = frozenset({"ai", "as", "a", "avons", "avez", "ont", "est", "sont", "suis", "sommes", "été", "etait",
                      "était", "have", "has", "had", "was", "were", "been", "is", "are"})
_QUESTION_OPENERS = frozenset({"pouvez", "pourriez", "peut", "peux", "pourrions", "pourrait", "est-ce", "serait",
                               "accepteriez", "auriez", "avez-vous", "can", "could", "would", "may", "might", "do",
                               "does", "did", "is", "are", "shall", "should", "will", "when", "why", "how", "what",
                               "quand", "pourquoi", "comment", "quel", "quelle", "combien"})
_WE = frozenset({"nous", "on", "we", "our", "je", "j'", "i", "notre", "nos", "my", "us"})
_YOU = frozenset({"vous", "you", "votre", "vos", "your"})
# Read in normalised (lower-case) text: case-sensitive patterns run several times faster.
_AMOUNT = re.compile(r"\d[\d\s.,]*\s?(?:€|eur\b|euros?\b|£|\$)|(?:€|£|\$)\s?\d")
_NOT_YET = re.compile(r"\bpas encore\b|\bnot\b.{0,30}\byet\b|\bnot received\b")
_DATE = re.compile(r"\b\d{1,2}[/.-]\d{1,2}\b|\b\d{1,2}(?:er|st|nd|rd|th)?\s+(?:janv|f[ée]v|mars|avr|mai|juin|juil|"
                   r"ao[uû]|sept|oct|nov|d[ée]c|jan|feb|mar|apr|may|jun|jul|aug|sep)")
_INSTALMENTS = re.compile(
    r"\b(?:en|in)\s+(?:\d+|deux|trois|quatre|cinq|six|dix|douze|two|three|four|five|six|ten|twelve)\s+"
    r"(?:fois|versements?|mensualit|[ée]ch[ée]ances?|paiements?|payments?|instal|goes|parts|tranches?|months?|mois)"
    r"|\b(?:\d+|two|three|four|six|deux|trois|quatre|six)\s+(?:monthly|mensualit|versements|instal|tranches)"
    r"|(?:par|per|a|each|every|chaque)\s+(?:mois|month|semaine|week)\b|/\s?mois|/\s?month"
    r"|\bmoiti[ée]\b|\bhalf\b|\breste\b|\bsolde\b|\bthe rest\b|\bremainder\b|\bbalance\b")
_INVOICE_NUMBER = re.compile(r"\b[a-z]{1,4}[-\s/]?\d{4}[-\s/]?\d{2,5}\b|\bn[°o]\s?\d+")
_STEMMERS = {"fr": snowballstemmer.stemmer("french"), "en": snowballstemmer.stemmer("english")}


@functools.lru_cache(maxsize=65536)
def _plain(word: str) -> str:
    """`word` without accents: writers who type none and those who do meet in one form."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


@functools.lru_cache(maxsize=65536)
def _family(word: str, lang: str) -> tuple[str, str]:
    """(lemma, family) of a lower-case word, both without accents."""
    lemma = simplemma.lemmatize(word, lang=lang) if word.isalpha() else word
    return _plain(lemma), _plain(_STEMMERS[lang].stemWord(lemma))


@functools.lru_cache(maxsize=65536)
def _grams(word: str) -> tuple[str, ...]:
    """A word's letters four by four ("<payee>": "<pay", "paye", "ayee", "yee>"): typos and
    missing accents still share most of them."""
    padded = f"<{_plain(word)}>"
    return tuple(f"C:{padded[k:k + 4]}" for k in range(len(padded) - 3))


def replaced(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """`text` with each pair's first character replaced by its second: what `str.translate` does,
    thirty times faster for a few characters that most texts do not hold."""
    for old, new in pairs:
        if old in text:
            text = text.replace(old, new)
    return text


def normalise(text: str) -> str:
    """Lower case, one kind of apostrophe and space, SMS forms spelled out."""
    text = unicodedata.normalize("NFC", replaced(text, _APOSTROPHES)).lower()
    if _CONTRACTED.search(text):  # one scan for an apostrophe before a contraction's ending, not nine
        for pattern, spelled in _CONTRACTIONS:
            text = pattern.sub(spelled, text)
    return _SHORT_FORM.sub(lambda m: _SHORTHAND[m.group(1)], text)


def language(words: Sequence[str]) -> str:
    """'fr' or 'en', by the common words each language uses (ties go to French)."""
    fr = sum(1 for w in words if w in _FR_STOP)
    en = sum(1 for w in words if w in _EN_STOP)
    return "en" if en > fr else "fr"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


@dataclass(frozen=True)
class Sentence:
    text: str
    features: tuple[str, ...]

    def __hash__(self) -> int:  # the text alone: hashing its forty features on every lookup cost more
        return hash(self.text)


def _aspect(words: Sequence[str], lemmas: Sequence[str], lang: str) -> set[str]:
    """What a sentence does with its verbs: DONE, TOCOME, ASKED (several may hold)."""
    out: set[str] = set()
    for i, w in enumerate(words):
        lemma = lemmas[i]
        nxt = words[i + 1:i + 4]
        future = (w in _FUTURE_AUX or (w == "going" and nxt[:1] == ["to"])
                  or (w in _GO and any(n.endswith(("er", "ir", "re")) for n in nxt[:2]))
                  or (lang == "fr" and lemma != w and len(w) > 2 and w.endswith(_FUTURE_ENDINGS)))  # sera, ira
        done = ((w in _HAVE_BE and any(n.endswith(_PARTICIPLE_ENDINGS) and n not in _NEGATORS for n in nxt[:3]))
                or (lang == "en" and w.endswith("ed") and len(w) > 4 and i > 0))
        if future:
            out.add("TOCOME")
        elif done:
            out.add("DONE")
    if words and (words[-1] == "?" or words[0] in _QUESTION_OPENERS or "?" in words):
        out.add("ASKED")
    return out


@functools.lru_cache(maxsize=65536)
def _word_features(word: str, lang: str) -> tuple[str, ...]:
    """What a word adds besides its family: its lemma, the form as written (which keeps its tense:
    "paid", "payée", "réglerons") and its letters four by four."""
    lemma, family = _family(word, lang)
    out = [f"L:{lemma}"] if lemma != family else []
    if _plain(word) not in (family, lemma):
        out.append(f"W:{_plain(word)}")
    if len(word) > 2 and word not in _FR_STOP and word not in _EN_STOP:
        out += _grams(word)
    return tuple(out)


@functools.lru_cache(maxsize=16384)  # greetings, sign-offs and signatures come back in message after message
def sentence_features(text: str, lang: str) -> Sentence:
    words = _WORD.findall(text)  # normalised text: lower-case
    pairs = [_family(w, lang) for w in words]
    lemmas = [p[0] for p in pairs]
    fams = [p[1] for p in pairs]
    aspect = _aspect(words, lemmas, lang)
    feats: list[str] = [f"ASPECT:{a}" for a in sorted(aspect)]
    negated = [False] * len(words)
    scope = 0
    for i, w in enumerate(words):
        if w in _NEG_STOP:
            scope = 0
        if w in _NEGATORS:
            scope = 4
            continue
        if scope > 0:
            negated[i] = True
            scope -= 1
    if any(negated) or any(w in _NEGATORS for w in words):
        feats.append("NEG")
    if _NOT_YET.search(text):
        feats.append("NOT_YET")
    if any(w in _WE for w in words[:4]):
        feats.append("ACTOR:WE")
    if any(w in _YOU for w in words[:4]):
        feats.append("ACTOR:YOU")
    for flag in ("NEG", "ACTOR:WE", "ACTOR:YOU"):  # done / to come / asked, by whom, denied or not
        if flag in feats:
            feats += [f"ASPECT:{a}+{flag}" for a in sorted(aspect)]
    amounts = len(_AMOUNT.findall(text))
    if amounts:
        feats.append("AMOUNT")
    if amounts >= 2:
        feats.append("AMOUNTS")
    if _DATE.search(text):
        feats.append("DATE")
    if _INSTALMENTS.search(text):
        feats.append("INSTALMENTS")
    if _INVOICE_NUMBER.search(text):
        feats.append("INVOICE_NO")
    kept = [i for i, f in enumerate(fams) if len(f) > 1 or f in "€$£?"]
    for i in kept:
        f = fams[i]
        feats.append(f"NOT:{f}" if negated[i] else f)
        feats += _word_features(words[i], lang)
    for i, j in itertools.pairwise(kept):
        feats.append(f"{'NOT:' if negated[i] else ''}{fams[i]}_{'NOT:' if negated[j] else ''}{fams[j]}")
    return Sentence(text, tuple(feats))


@dataclass(frozen=True)
class Reading:
    """Everything the model is given about one message."""

    sentences: tuple[Sentence, ...]
    extra: tuple[str, ...]  # whole-message features: robots' headers, attachments, subject
    lang: str


SENTENCE_SURE = 0.45  # a clause alone this likely to be another kind counts as saying it (bench/learning.py)
MAX_TEXT = 4000  # what a person wrote beyond this is not needed to know what they mean


def read(text: str, subject: str = "", extra: Sequence[str] = ()) -> Reading:
    norm = normalise(text[:MAX_TEXT])
    words = _WORD.findall(norm)
    lang = language(words)
    sents = tuple(sentence_features(s, lang) for s in sentences(norm))
    subj = normalise(subject)
    feats = [*extra, *(f"SUBJ:{_family(w.lower(), lang)[1]}" for w in _WORD.findall(subj))]
    if not sents:
        feats.append("EMPTY")
    return Reading(sents, tuple(feats), lang)


def bag(reading: Reading) -> dict[str, float]:
    """The features of a message, counted once each (what the model is trained on)."""
    out = dict.fromkeys(reading.extra, 1.0)
    for s in reading.sentences:
        for f in s.features:
            out[f] = 1.0
    out[f"LANG:{reading.lang}"] = 1.0
    return out


@dataclass(frozen=True)
class Model:
    """A multinomial logistic model: for each feature, a weight per kind."""

    kinds: tuple[str, ...]
    bias: tuple[float, ...]
    weights: Mapping[str, tuple[float, ...]]
    version: str = "shipped"

    @functools.cached_property
    def table(self) -> tuple[dict[str, int], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Each feature's row, the weights as a matrix (a row per feature, a column per kind), the bias."""
        index = {f: i for i, f in enumerate(self.weights)}
        matrix = np.array(list(self.weights.values()), dtype=np.float64).reshape(len(index), len(self.kinds))
        return index, matrix, np.array(self.bias, dtype=np.float64)

    def __getstate__(self) -> dict[str, object]:
        """What pickles (for worker processes): the model itself, not what it has cached."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @functools.cached_property
    def clauses(self) -> dict[Sentence, _Clause]:
        """What this model reads in each clause it has met (greetings, sign-offs and signatures
        come back in message after message); see `_clauses`."""
        return {}


@dataclass(frozen=True)
class Scores:
    probabilities: tuple[tuple[str, float], ...]  # best first
    margin: float  # best minus second best
    evidence: str  # the sentence that weighed most for the best kind, as written
    words: tuple[str, ...]  # the features in it that weighed most, in words
    also: tuple[tuple[str, str], ...] = ()  # (kind, clause): clauses that alone read as another kind

    @property
    def kind(self) -> str:
        return self.probabilities[0][0]


def _probabilities(model: Model, rows: Sequence[int]) -> list[tuple[str, float]]:
    """Each kind's probability given the features at `rows` (softmax of the linear scores), best first."""
    _, matrix, bias = model.table
    logits = bias + matrix[list(rows)].sum(axis=0)
    exp = np.exp(logits - logits.max())
    return sorted(zip(model.kinds, (exp / exp.sum()).tolist(), strict=True), key=lambda kp: -kp[1])


@dataclass(frozen=True)
class _Clause:
    rows: tuple[int, ...]  # the model's rows of the features the clause has
    found: tuple[str, ...]  # those features, in the same order
    kind: str  # what the clause alone reads as
    p: float  # and how likely
    weight: tuple[float, ...]  # per kind: the sum of the clause's weights that speak for it


def _clauses(model: Model, sentences: Sequence[Sentence]) -> list[_Clause]:
    """Each clause as the model reads it alone, remembered (see `Model.clauses`). The clauses not
    met before are scored together: one matrix operation for all of them, not one per clause."""
    known = model.clauses
    new = [s for s in dict.fromkeys(sentences) if s not in known]
    if new:
        index, matrix, bias = model.table
        get = index.get
        found = [{r: f for f in s.features if (r := get(f)) is not None} for s in new]
        sizes = np.array([len(f) for f in found])
        if len(known) + len(new) > 50_000:
            known.clear()
        nothing = (0.0,) * len(model.kinds)
        if sizes.sum():
            picked = matrix[[r for f in found for r in f]]
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            with_rows = sizes > 0  # reduceat reads an empty segment as its next row: those are left out
            logits = bias + np.add.reduceat(picked, starts[with_rows], axis=0)
            positive = np.add.reduceat(np.maximum(picked, 0.0), starts[with_rows], axis=0)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            p = exp / exp.sum(axis=1, keepdims=True)
            best = p.argmax(axis=1).tolist()
            p_best = p.max(axis=1).tolist()
            weights = positive.tolist()
        row = 0
        for s, f in zip(new, found, strict=True):
            if f:
                known[s] = _Clause(tuple(f), tuple(f.values()), model.kinds[best[row]], p_best[row],
                                   tuple(weights[row]))
                row += 1
            else:
                known[s] = _Clause((), (), "", 0.0, nothing)
    return [known[s] for s in sentences]


def read_together(model: Model, readings: Iterable[Reading]) -> None:
    """Read the clauses of many messages at once (one matrix operation for all the clauses not met
    before, not one per message: numpy's cost per call was half of a message's scoring), so that
    `score` finds each of them read."""
    _clauses(model, [s for r in readings for s in r.sentences])


def score(model: Model, reading: Reading) -> Scores:
    index, matrix, _ = model.table
    clauses = list(zip(reading.sentences, _clauses(model, reading.sentences), strict=True))
    rows = {r for _, c in clauses for r in c.rows}  # each feature counts once (see `bag`)
    rows.update(index[f] for f in (*reading.extra, f"LANG:{reading.lang}") if f in index)
    probs = _probabilities(model, sorted(rows))
    k = model.kinds.index(probs[0][0])
    # One pass over the clauses: the one that weighs most for the kind chosen is the evidence; and
    # a clause may say what the whole does not weigh enough ("we will pay on the 10th, but we dispute
    # the shipping costs"): one read alone as another kind is kept, for the caller to weigh.
    heaviest: tuple[Sentence, _Clause] | None = None
    also: list[tuple[str, str]] = []
    for s, c in clauses:
        if not c.rows:
            continue
        if c.p >= SENTENCE_SURE and c.kind != probs[0][0] and c.kind not in (a for a, _ in also):
            also.append((c.kind, s.text))
        if c.weight[k] > (heaviest[1].weight[k] if heaviest else 0.0):
            heaviest = (s, c)
    evidence, words = "", tuple[str, ...]()
    if heaviest is not None:
        s, c = heaviest
        mine = sorted(((w, f) for r, f in zip(c.rows, c.found, strict=True) if (w := float(matrix[r, k])) > 0),
                      reverse=True)
        evidence, words = s.text, tuple(describe(f) for _, f in mine[:3])
    return Scores(tuple(probs), probs[0][1] - (probs[1][1] if len(probs) > 1 else 0.0), evidence, words, tuple(also))


_ASPECT_WORDS = {"DONE": "done", "TOCOME": "to come", "ASKED": "asked"}
_FLAG_WORDS = {"NEG": "a negation", "NOT_YET": "not yet", "ACTOR:WE": "the sender acts",
               "ACTOR:YOU": "addressed to us", "AMOUNT": "an amount", "AMOUNTS": "several amounts",
               "DATE": "a date", "INSTALMENTS": "instalments", "INVOICE_NO": "an invoice number"}


def describe(feature: str) -> str:
    """A feature in words: "to come: 'partir'", "not 'pai'", "the words 'virement parti'"."""
    if feature in _FLAG_WORDS:
        return _FLAG_WORDS[feature]
    if feature.startswith("ASPECT:"):
        return _ASPECT_WORDS.get(feature[7:], feature[7:])
    head, _, rest = feature.partition(":")
    if head in _ASPECT_WORDS and rest:
        return f"{_ASPECT_WORDS[head]}: '{describe(rest).strip(chr(39))}'"
    if head == "NOT" and rest:
        return f"not '{rest}'"
    if head == "L" and rest:
        return f"'{rest}'"
    return "'" + feature.replace("NOT:", "not ").replace("_", " ") + "'"
