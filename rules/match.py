"""Which invoices a message is about, in order of evidence:

1. `In-Reply-To` / `References` naming our reminders' Message-IDs;
2. a reply token in the address it was sent to (`ar+TOKEN@...`);
3. invoice numbers in the subject, body or attachment names, normalised ("F-2026-001",
   "F2026001", "facture n° 2026-001");
4. numbers as people shorten them ("facture 412", "fa 2027 412", "n°2027/0412", "invoices 456
   and 457", "0437 à 0439"), read only among the invoices of the client the message is about (the
   thread's, or the sender's): the same short number at another client is never taken for sure;
5. the sender's client, when it has exactly one open invoice;
6. for a sender the ledger does not know (an accountant, a spouse, a personal mailbox), the client
   it names ("Margaret from Greenleaf here", "facture 0435 Paul Marchand"), or the client whose
   contacts write from its own mail domain (a colleague: r.patel@oakridge-dental.example when the
   ledger knows admin@oakridge-dental.example): only a guess, for a person to confirm, but that
   client's invoices wait for the person.

When the evidence is weak or conflicting the result says so, and the message goes to a person:
a wrong match is worse than no match."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import simplemma

from rules.plan import amounts
from rules.reasons import join, reason
from rules.when import plain

_CANDIDATE = re.compile(r"[A-Za-z]{0,6}[\s\-_/.°#:]{0,4}(?:n[o°]?\s*)?\d(?:[\dA-Za-z\-_/.]| (?=\d))*")


_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_NOT_DIGIT = re.compile(r"\D")
_PREFIX = re.compile(r"^[A-Za-z]{0,6}[\s\-_/.°#:]{0,4}(?:n[o°]?\s*)?")  # "facture n° ", "F-", "Inv#"
_NOT_MONEY = r"(?!\s*(?:€|eur\b|euros?\b|\$|£|%|[.,]\d))"  # "1500 €", "12.50" are amounts
_NUM = r"(?:n[°o]\.?\s*)?(?:20\d\d\s*[-/ .]\s*)?(\d{2,6})\b" + _NOT_MONEY
# "facture 412", "factures 402, 403 et 404", "invoices 0418 to 0420", "fa 2027 412", "n°2027/0412",
# "#0412", "la 0410 et la 0411": a word that says an invoice follows (group 1: an invoice word, which
# makes it sure; "n°", "ref", "#" or an article before a leading zero only make it likely).
_SHORT = re.compile(
    r"(?:(?:\b(factures?|fact\.?|fac|fa|f|invoices?|inv\.?)|\b(?:no\.?|nos\.?|num[ée]ros?|n[°o]s?\.?|ref\.?)|#)"
    r"\s*[-:#.]?\s*" + _NUM + r"|\b(?:la|le|les|the)\s+(0\d{2,5})\b" + _NOT_MONEY + ")"
    r"((?:\s*(?:,|;|/|&|\+|et|and|ou|or|à|a|au|to|through|thru|jusqu'à|-|–)\s*(?:(?:la|le|the)\s+)?"
    r"(?:n[°o]\.?\s*)?(?:20\d\d\s*[-/ .]\s*)?\d{2,6}\b" + _NOT_MONEY + ")*)", re.IGNORECASE)
_MORE = re.compile(r"(,|;|/|&|\+|\bet\b|\band\b|\bou\b|\bor\b|\bà\b|\ba\b|\bau\b|\bto\b|\bthrough\b|\bthru\b|"
                   r"jusqu'à|-|–)\s*(?:(?:la|le|the)\s+)?(?:n[°o]\.?\s*)?(?:20\d\d\s*[-/ .]\s*)?(\d{2,6})\b"
                   + _NOT_MONEY, re.IGNORECASE)
# Within the invoices of a client the message is already tied to (our thread, a full number it
# cites), looser forms are enough: "les 408 a 410", "0445 and 0444 are the same job".
_LOOSE = re.compile(r"(?:\b(?:la|le|les|the|et|and|&)\s+(\d{3,6})\b|(?<![\w-])(0\d{2,5})\b)" + _NOT_MONEY
                    + r"((?:\s*(?:,|;|/|&|\+|et|and|ou|or|à|a|au|to|-|–)\s*(?:(?:la|le|the)\s+)?\d{2,6}\b"
                    + _NOT_MONEY + ")*)", re.IGNORECASE)
_RANGE = frozenset({"à", "a", "au", "to", "through", "thru", "jusqu'à", "-", "–"})
MAX_RANGE = 20


def normalise(number: str) -> str:
    return _NOT_ALNUM.sub("", number.upper())


def digits(number: str) -> str:
    return _NOT_DIGIT.sub("", number)


def sequence(number: str) -> int | None:
    """The running number at the end of an invoice number ("FA-2027-0412" -> 412), people's short form."""
    m = re.search(r"(\d+)\D*$", number)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Known:
    """What the store knows, as lookup tables (built by the caller)."""

    by_message_id: Mapping[str, tuple[str, ...]]  # our reminders' Message-IDs -> invoice numbers
    by_token: Mapping[str, tuple[str, ...]]
    by_normalised: Mapping[str, str]  # normalise(number) -> number
    by_digits: Mapping[str, tuple[str, ...]]  # digits(number) -> numbers (ambiguous when several)
    sender_open: tuple[str, ...] = ()  # open invoices of the sender's client
    siblings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # number -> its client's open invoices
    named: str = ""  # an unknown sender: the client it names (see `NameIndex`)
    named_open: tuple[str, ...] = ()  # that client's open invoices
    client_of: Mapping[str, int] = field(default_factory=dict)  # an invoice number -> its client
    amounts: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)  # number -> (amount, still due)


@dataclass(frozen=True)
class Match:
    numbers: tuple[str, ...]
    method: str  # headers | token | number | sender | none
    sure: bool
    reason: str


def find_numbers(texts: Sequence[str], known: Known) -> tuple[list[str], list[str]]:
    """Invoice numbers cited in `texts`: (certain, ambiguous digit-only hits)."""
    found: list[str] = []
    ambiguous: list[str] = []
    for text in texts:
        for m in _CANDIDATE.finditer(text):
            token = m.group(0).rstrip("-_/.")  # "F-2026-001." at the end of a sentence
            hit = known.by_normalised.get(normalise(token))
            tail = _PREFIX.sub("", token)
            if hit is None:
                hit = known.by_normalised.get(normalise(tail))
            if hit is None and len(digits(tail)) >= 4:
                cands = known.by_digits.get(digits(tail), ())
                if len(cands) == 1:
                    hit = cands[0]
                elif cands:
                    ambiguous += [c for c in cands if c not in ambiguous]
            if hit is not None and hit not in found:
                found.append(hit)
    return found, ambiguous


def short_numbers(texts: Iterable[str], sure_only: bool = False, loose: bool = False) -> list[int]:
    """The running numbers people write ("factures 402, 403 et 404", "0437 à 0439"), in order;
    with `sure_only`, those after an invoice word only ("facture", "invoice", "fa"), not "n°" or "#";
    with `loose`, also bare ones ("les 408 a 410", "0445 and 0444"), for a client already known."""
    out: list[int] = []
    for text in texts:
        found = [(m.group(2) or m.group(3), m.group(4)) for m in _SHORT.finditer(text[:20000])
                 if m.group(1) or not sure_only]
        if loose:
            found += [(m.group(1) or m.group(2), m.group(3)) for m in _LOOSE.finditer(text[:20000])]
        for first_text, rest in found:
            seq = [int(first_text)]
            for more in _MORE.finditer(rest or ""):
                n = int(more.group(2))
                if more.group(1).lower() in _RANGE and seq[-1] < n <= seq[-1] + MAX_RANGE:
                    seq += range(seq[-1] + 1, n + 1)
                else:
                    seq.append(n)
            out += [n for n in seq if n not in out]
    return out


def within(shorts: Sequence[int], scope: Iterable[str]) -> list[str]:
    """The invoices of `scope` whose running number is one of `shorts` (a number several of them
    share is left out: the reader could not tell which)."""
    by_seq: dict[int, list[str]] = {}
    for number in scope:
        s = sequence(number)
        if s is not None and number not in by_seq.setdefault(s, []):
            by_seq[s].append(number)
    return [by_seq[s][0] for s in shorts if len(by_seq.get(s, ())) == 1]


def match(refs: Sequence[str], tokens: Sequence[str], texts: Sequence[str], known: Known,
          found: tuple[list[str], list[str]] | None = None) -> Match:
    """Which invoices the message is about; `found` is `find_numbers(texts, known)` when the caller
    has it already."""
    by_headers: list[str] = []
    for ref in refs:
        for n in known.by_message_id.get(ref.strip(), ()):
            if n not in by_headers:
                by_headers.append(n)
    cited, ambiguous = found if found is not None else find_numbers(texts, known)
    by_token = [n for t in tokens for n in known.by_token.get(t, ())]
    # A number read from its digits alone ("2027-0417", "..._20270414.pdf") that belongs to another
    # client than the one the message is tied to (its thread, its sender, the numbers it writes in
    # full) is a payment advice's own reference or a date, not taken. Written in full, another
    # client's number is meant: an accountant writes for several clients.
    anchor = {known.client_of.get(n) for n in (by_headers or by_token or known.sender_open)} - {None}
    spread = {known.client_of.get(n) for n in cited} - {None}
    full: list[str] = []
    if len(spread) > 1 or (anchor and not spread <= anchor):  # only then can a number be another client's
        whole = normalise(" ".join(texts))
        full = [n for n in cited if normalise(n) in whole]
    if not anchor and len(owners := {known.client_of.get(n) for n in full} - {None}) == 1:
        anchor = owners
    foreign = [n for n in cited if n not in full and anchor and known.client_of.get(n) not in anchor]
    cited = [n for n in cited if n not in foreign]
    narrowed, dropped = "", set[str]()
    if len(cited) > 1 and texts and any(c.isdigit() for c in texts[0]):
        # "RE: Invoices 0459 and 0460" over "your question on 0460": the text says which one.
        said = [n for n in cited if normalise(n) in normalise(" ".join(texts[1:]))]
        in_subject = [n for n in cited if normalise(n) in normalise(texts[0])]
        if said and len(in_subject) > 1 and set(cited) - set(said) <= set(in_subject):
            dropped = set(cited) - set(said)
            narrowed = reason("match.subject_names", numbers=", ".join(n for n in cited if n in dropped))
            cited = said
    aside = join(reason("match.foreign", numbers=", ".join(foreign)) if foreign else "", narrowed)
    if by_headers:
        family = [s for n in by_headers for s in known.siblings.get(n, ())] + list(known.sender_open)
        extra = [n for n in cited + within(short_numbers(texts, loose=True), family) if n not in by_headers]
        extra = list(dict.fromkeys(extra))
        body = normalise(" ".join(texts[1:]))
        if not any(normalise(n) in body for n in extra) and (one := _by_amount(by_headers + extra, texts, known)):
            # Several invoices by the thread or the subject, one by the amount the text writes.
            number, amount = one
            others = reason("match.subject_names", numbers=", ".join(extra)) if extra else ""
            if by_headers == [number]:
                return Match((number,), "headers", True, join(
                    reason("match.headers", numbers=number), others,
                    reason("match.amount_of", number=number, amount=str(amount)), aside))
            return Match((number,), "headers", False, join(
                reason("match.headers", numbers=", ".join(by_headers)), others,
                reason("match.amount_guess", number=number, amount=str(amount)), aside))
        if extra:  # "one transfer for three invoices": the reply thread plus numbers it cites
            return Match(tuple(by_headers + extra), "headers", True, join(reason(
                "match.headers_also", numbers=", ".join(by_headers), extra=", ".join(extra)), aside))
        return Match(tuple(by_headers), "headers", True,
                     join(reason("match.headers", numbers=", ".join(by_headers)), aside))
    if by_token:
        return Match(tuple(dict.fromkeys(by_token + cited)), "token", True, join(reason("match.token"), aside))
    if not anchor and len({known.client_of.get(n) for n in cited}) > 1:
        return Match(tuple(cited), "number", False, reason("match.several_clients", numbers=", ".join(cited)))
    # The client the full numbers it cites belong to: "factures FA-2027-0402, 0403 et 0404".
    family = [s for n in cited for s in known.siblings.get(n, ())]
    own = [n for n in within(short_numbers(texts, sure_only=True), known.sender_open)
           + within(short_numbers(texts, loose=True), family) if n not in cited and n not in dropped]
    own = list(dict.fromkeys(own))
    if cited or own:
        numbers = cited + own
        body = normalise(" ".join(texts[1:]))
        if not any(normalise(n) in body for n in numbers) and (one := _by_amount(numbers, texts, known)):
            return Match((one[0],), "number", False, join(
                reason("match.subject_cites", numbers=", ".join(numbers)),
                reason("match.amount_guess", number=one[0], amount=str(one[1])), aside))
        return Match(tuple(numbers), "number", True, join(reason("match.cites", numbers=", ".join(numbers)), aside))
    likely = within(short_numbers(texts), known.sender_open)  # "n° 412", "#412": likely, for a person to confirm
    if likely:
        return Match(tuple(likely), "number", False, reason("match.probably", numbers=", ".join(likely)))
    if known.named_open:
        # What the text names first: the subject may be an older thread's ("RE: facture 0405").
        named = (within(short_numbers(texts[1:], loose=True), known.named_open)
                 or within(short_numbers(texts[:1], loose=True), known.named_open)) or (
            list(known.named_open) if len(known.named_open) == 1 else [])
        if named:
            return Match(tuple(named), "name", False,
                         reason("match.named", client=known.named, numbers=", ".join(named)))
        return Match((), "name", False, reason("match.named_none", client=known.named, n=len(known.named_open)))
    if ambiguous:
        return Match((), "none", False, reason("match.ambiguous", numbers=", ".join(ambiguous)))
    if len(known.sender_open) == 1:
        return Match(known.sender_open, "sender", False, reason("match.sender_only", number=known.sender_open[0]))
    if known.sender_open:
        return Match((), "none", False, reason("match.sender_none", n=len(known.sender_open)))
    return Match((), "none", False, reason("match.none"))


def _by_amount(candidates: Sequence[str], texts: Sequence[str], known: Known) -> tuple[str, Decimal] | None:
    """(the invoice, the amount) when the text of a message about several invoices (a reminder for
    three, a subject citing three) writes the amount of exactly one of them, in full or still due
    ("la facture de 350,00 €", "the €1,450.00 one"): a reader takes it for that invoice, but a person
    confirms. None when it writes no amount, or one several of them share."""
    if len(candidates) < 2 or len(texts) < 2 or not known.amounts:
        return None
    written = set(amounts(texts[1][:5000]))
    hits = [(n, a) for n in dict.fromkeys(candidates) for a in known.amounts.get(n, ()) if a in written]
    return hits[0] if len({n for n, _ in hits}) == 1 else None


# Words of a company's name that say nothing of which company it is.
_NAME_NOISE = frozenset({
    "sas", "sasu", "sarl", "eurl", "sci", "snc", "scop", "ltd", "limited", "llc", "llp", "inc", "corp", "gmbh",
    "plc", "cie", "and", "the", "des", "les", "pour", "for", "sons", "group", "groupe", "company", "societe",
    "services", "service", "france", "europe", "international", "holding", "cabinet", "etablissements", "ets",
})
_NAME_WORD = re.compile(r"[^\W\d_]{3,}")


def name_words(name: str) -> tuple[str, ...]:
    """The words of a client's name that can tell it ("Garage Leroux SARL": "garage", "leroux")."""
    return tuple(w for w in _NAME_WORD.findall(plain(name)) if w not in _NAME_NOISE)


@dataclass(frozen=True)
class NameIndex:
    """Where a message names a client: its whole name ("Paul Marchand", "Greenleaf Organics"), or one
    word of it that belongs to that client alone and to no dictionary ("Greenleaf", "Leroux"; not
    "Martin", "Rose" or "Petit", which people write for other reasons)."""

    phrases: Mapping[str, tuple[tuple[tuple[str, ...], int], ...]]  # first word -> (words, client)
    words: Mapping[str, int]  # a telling word -> the one client whose name has it

    @classmethod
    def of(cls, names: Mapping[int, str]) -> NameIndex:
        phrases: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        owners: dict[str, set[int]] = {}
        written: dict[str, str] = {}  # a plain word -> as the name writes it ("ecole" -> "école")
        for client, name in names.items():
            words = name_words(name)
            written.update((plain(w), w) for w in _NAME_WORD.findall(name.lower()))
            if len(words) >= 2:
                phrases.setdefault(words[0], []).append((words, client))
            for w in words:
                owners.setdefault(w, set()).add(client)
        telling = {w: next(iter(ids)) for w, ids in owners.items()
                   if len(ids) == 1 and len(w) >= 5 and not _known_word(written.get(w, w))}
        return cls({w: tuple(p) for w, p in phrases.items()}, telling)

    def named(self, texts: Iterable[str]) -> int | None:
        """The one client `texts` name, or None (none, or several)."""
        found: set[int] = set()
        for text in texts:
            words = _NAME_WORD.findall(plain(text[:5000]))
            for i, w in enumerate(words):
                if w in self.words:
                    found.add(self.words[w])
                for phrase, client in self.phrases.get(w, ()):
                    if tuple(words[i:i + len(phrase)]) == phrase:
                        found.add(client)
        return found.pop() if len(found) == 1 else None


def _known_word(word: str) -> bool:
    return simplemma.is_known(word, lang="fr") or simplemma.is_known(word, lang="en")


# Mail domains people of many companies write from: a sender there says nothing of its company.
PUBLIC_MAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "outlook.fr", "hotmail.com", "hotmail.fr", "hotmail.co.uk",
    "live.com", "live.fr", "msn.com", "yahoo.com", "yahoo.fr", "yahoo.co.uk", "ymail.com", "icloud.com", "me.com",
    "mac.com", "aol.com", "gmx.com", "gmx.de", "gmx.fr", "gmx.net", "web.de", "t-online.de", "orange.fr",
    "wanadoo.fr", "free.fr", "sfr.fr", "neuf.fr", "laposte.net", "bbox.fr", "numericable.fr", "club-internet.fr",
    "proton.me", "protonmail.com", "pm.me", "zoho.com", "mail.com", "yandex.ru", "yandex.com", "tutanota.com",
    "btinternet.com", "sky.com", "virginmedia.com", "comcast.net", "att.net", "verizon.net", "libero.it",
})


def domain_index(contacts: Iterable[tuple[int, str]]) -> dict[str, int]:
    """A mail domain -> the one client whose contacts write from it (a domain several clients share,
    or a public one, tells nothing)."""
    owners: dict[str, set[int]] = {}
    for client, email in contacts:
        domain = email.rpartition("@")[2].lower()
        if domain and domain not in PUBLIC_MAIL:
            owners.setdefault(domain, set()).add(client)
    return {d: next(iter(ids)) for d, ids in owners.items() if len(ids) == 1}
