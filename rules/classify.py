"""What an inbound message is: bounce, auto-reply, payment claim, promise, plan, dispute, reply.

Robots are recognised by rules where rules are exact: delivery reports (RFC 3464), the headers of
automatic replies (RFC 3834 and the common vendor ones). What a person wrote is read by the model
of `rules.intent`. Bounces are tested before auto-replies (many real bounces carry
`Auto-Submitted: auto-replied`). Each result carries a confidence (for a person's text, the margin
between the two likeliest kinds) and the evidence behind it in words, so a person can see why."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum

from rules.intent import MAX_TEXT, Model, Reading, Scores, normalise, read, score


class Kind(StrEnum):
    PAYMENT_CLAIM = "payment_claim"
    PROMISE_TO_PAY = "promise_to_pay"
    PAYMENT_PLAN = "payment_plan"
    DISPUTE = "dispute"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    HUMAN_REPLY = "human_reply"


@dataclass(frozen=True)
class MailFacts:
    """What the parser saw; header names lower-case."""

    sender: str
    subject: str
    text: str  # what the person wrote: quotes and signature removed
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"
    report_type: str = ""  # multipart/report; report-type=...
    attachments: tuple[str, ...] = ()
    dates: tuple[date, ...] = ()  # dates found in the text, in order


@dataclass(frozen=True)
class Understanding:
    kind: Kind
    confidence: Decimal
    cues: tuple[str, ...]
    date: date | None = None  # promised payment date, or an out-of-office's return date
    evidence: str = ""  # the clause the reading rests on, as normalised (where a promise's date is looked for)
    sentence: str = ""  # a claim's or a promise's: the whole sentence that clause is in (the invoices it names)


_COMPILED: dict[str, re.Pattern[str]] = {}


def _any(patterns: tuple[str, ...], text: str) -> list[str]:
    """The patterns found in `text`, whatever its case. The patterns are lower-case and matched
    against the lower-cased text: case-sensitive patterns let the regex engine skip ahead to their
    literal parts, several times faster than re.IGNORECASE."""
    found = []
    text = text.lower()
    for p in patterns:
        rx = _COMPILED.get(p)
        if rx is None:
            rx = _COMPILED[p] = re.compile(p)
        if rx.search(text):
            found.append(p)
    return found


_BOUNCE_SENDERS = (r"mailer-daemon", r"postmaster", r"mail delivery (sub)?system", r"mail\.delivery\.system",
                   r"@amazonses\.com",
                   r"\bmdaemon@", r"jetmail system", r"antivirus_for_smtp", r"_smtp_mail_service@")
_BOUNCE_SUBJECTS = (
    r"undeliver(ed|able)", r"delivery status notification", r"returned mail", r"failure notice",
    r"delivery (has )?failed", r"mail delivery failed", r"non remis", r"remise .{0,20}échec",
    r"échec de (la )?(remise|distribution)", r"message (non )?distribu", r"could not be delivered",
    r"delivery failure", r"\bmail error\b", r"user unknown", r"undelivered mail returned",
    r"nondeliverable", r"non-delivery", r"rejected:", r"delivery notification: delivery has failed",
)
_BOUNCE_BODY = (
    r"(delivery|message) to the following recipients? (failed|could not)", r"following addresse?s? (had|failed)",
    r"\buser unknown\b", r"\bunknown user\b", r"mailbox (unavailable|not found|is full)", r"no such (user|mailbox)",
    r"\b5\.\d\.\d+\b", r"\b55[0-4][ -]", r"permanent(ly)? (error|fatal)", r"could not be delivered",
    r"n'a pas pu (être|etre) (remis|distribu|d[ée]livr)", r"adresse (inconnue|introuvable)",
)
# Amazon SES bounces relayed by SNS: a JSON notification, not a DSN, sent with no robot header.
_SES = (r'\\?"notificationtype\\?"\s*:\s*\\?"bounce', r'\\?"bouncetype\\?"\s*:\s*\\?"permanent')
_AUTO_SUBJECTS = (
    r"r[ée]ponse automatique", r"absence du bureau", r"absent\b", r"out of (the )?office", r"automatic reply",
    r"auto[- ]?reply", r"autoreply", r"on vacation", r"en cong[ée]s?", r"message automatique",
    # mailing lists' administrative notices: a robot, not a client
    r"awaits? moderator approval", r"en attente de mod[ée]ration", r"message (rejected|held) by",
    r"post(ing)? to .{0,60} (requires approval|rejected)", r"your message to .{1,60} (is being held|was rejected)",
)
_FORWARDED = re.compile(r"^\s*(tr|fw|fwd|wg)\s*:", re.IGNORECASE)  # "TR: ...", "Fwd: ..."
_ROBOT_SENDER = re.compile(r"^(no-?reply|ne-?pas-?repondre|notifications?|alerts?|info|news(letter)?|bounces?)[@+._-]")
_PAYMENT_ATTACHMENT = re.compile(r"remittance|avis|virement|payment|paiement|preuve|transfer|receipt|re[çc]u",
                                 re.IGNORECASE)


def reading_of(facts: MailFacts) -> Reading:
    """What the model reads of a message: the person's text, the subject they typed (not "RE:" of
    ours), and what the headers and attachments say about who sent it."""
    h = facts.headers
    extra = []
    if h.get("auto-submitted", "no").lower() != "no":
        extra.append("H:auto-submitted")
    extra += [f"H:{name}" for name in ("x-autoreply", "x-autorespond", "list-unsubscribe", "list-id",
                                        "x-ms-exchange-generated-message-source") if name in h]
    if h.get("precedence", "").lower() in ("auto_reply", "bulk", "junk", "list"):
        extra.append("H:precedence")
    if _ROBOT_SENDER.match(facts.sender):
        extra.append("H:robot-sender")
    if facts.content_type == "multipart/report":
        extra.append("H:report")
    if facts.attachments:
        extra.append("ATTACHMENT")
    extra += ["ATTACHMENT:payment" for a in facts.attachments[:1] if _PAYMENT_ATTACHMENT.search(a)]
    subject = facts.subject or ""
    forwarded = _FORWARDED.match(subject) is not None
    if forwarded:
        extra.append("FORWARDED")
    typed = "" if re.match(r"^\s*(re|aw|sv|réf|ref)\s*:", subject, re.IGNORECASE) else subject
    return read(facts.text, typed, extra)


def classify(facts: MailFacts, company_domain: str, model: Model, reading: Reading | None = None) -> Understanding:
    """What `facts` is; `reading` is `reading_of(facts)` when the caller has it already."""
    h = facts.headers
    sender = facts.sender.lower()
    subject = facts.subject or ""

    cues: list[str] = []
    if facts.content_type == "multipart/report" and "delivery-status" in facts.report_type:
        cues.append("multipart/report; report-type=delivery-status (RFC 3464)")
    from_header = h.get("from", sender).lower()
    cues += [f"sender ~ {p}" for p in _any(_BOUNCE_SENDERS, from_header)]
    # "RE: ... non remis" may be a person quoting; "TR: Undelivered Mail" is a colleague passing a bounce on.
    is_reply = re.match(r"^\s*(re|aw|réf)\s*:", subject, re.IGNORECASE) is not None
    subject_cues = [f"subject ~ {p}" for p in _any(_BOUNCE_SUBJECTS, subject)]
    if not is_reply:
        cues += subject_cues
    elif subject_cues:  # "RE: ... non remis (delivery failed)": only with a failure report in the body too
        body = _any(_BOUNCE_BODY, facts.text)
        cues += [*subject_cues, *(f"body ~ {p}" for p in body)] if body else []
    if h.get("x-failed-recipients"):
        cues.append("X-Failed-Recipients")
    cues += [f"Amazon SES notification ~ {p}" for p in _any(_SES, facts.text[:20000])]
    robot = h.get("return-path", "x").strip() in ("<>", "") or h.get("auto-submitted", "no").lower() != "no"
    if robot and not cues:
        cues += [f"body ~ {p}" for p in _any(_BOUNCE_BODY, facts.text)[:2]]
    if not cues and len(failure := _any(_BOUNCE_BODY, facts.text[:20000])) >= 2:
        # A colleague or the client forwarding the server's report: what it carries is a bounce.
        cues += ["a delivery failure report, forwarded", *(f"body ~ {p}" for p in failure[:2])]
    if cues:
        return Understanding(Kind.BOUNCE, Decimal("0.99") if len(cues) > 1 else Decimal("0.85"), tuple(cues))

    auto: list[str] = []
    auto_submitted = h.get("auto-submitted", "").lower()
    if auto_submitted and auto_submitted != "no":
        auto.append(f"Auto-Submitted: {auto_submitted}")
    auto += [f"{name}" for name in ("x-autoreply", "x-autorespond", "x-ms-exchange-generated-message-source",
                                     "x-ms-exchange-inbox-rules-loop") if name in h]
    if h.get("precedence", "").lower() in ("auto_reply", "junk"):
        auto.append(f"Precedence: {h['precedence']}")
    if h.get("return-path", "x").strip() in ("<>", ""):
        auto.append("empty Return-Path")
    auto += [f"subject ~ {p}" for p in _any(_AUTO_SUBJECTS, subject)]
    # Weaker signs: a list or a group mailbox relays people too, and a colleague may forward us a
    # client's message. They make a robot only when the text is not a person's payment business.
    weak = ["list-id"] if "list-id" in h else []
    if h.get("precedence", "").lower() in ("bulk", "list"):
        weak.append(f"Precedence: {h['precedence']}")
    ours = sender.endswith("@" + company_domain.lower())
    if ours:
        weak.append("sent from our own domain (a loop)")
    scores = score(model, reading if reading is not None else reading_of(facts))
    forwarded = _FORWARDED.match(subject) is not None
    if weak and not auto and scores.kind in _PERSONS and (forwarded or not ours):
        weak = []  # a person's claim, promise, plan or dispute that came through a list, or a colleague's forward
    auto += weak
    if auto:
        if scores.kind == Kind.PAYMENT_CLAIM:  # a robot, but the money came in: a bank's or a processor's notice
            return Understanding(Kind.PAYMENT_CLAIM, _confidence(scores.margin),
                                 ("payment notice from a bank or a payment processor", *_said(scores), *auto))
        return dated(Understanding(Kind.AUTO_REPLY, Decimal("0.98") if len(auto) > 1 else Decimal("0.85"),
                                   tuple(auto)), facts.dates)
    kind, margin, said = Kind(scores.kind), scores.margin, _said(scores)
    # A person's message that also disputes or proposes a plan in one of its clauses is never
    # applied alone: a person reads it, the clause shown. Its kind stays the whole message's: one
    # clause read alone is often wrong ("nous ne pourrons pas payer en une fois" begins a plan).
    # So is a claim or a promise with a clause that says another payment business ("paid 2,000
    # today, the balance will follow in May"; "0444 went this morning, 0445 goes on Friday").
    weightier = [(Kind(k), text) for k, text in scores.also
                 if (kind in _WEIGHT and k in _WEIGHT[:2] and _WEIGHT.index(k) < _WEIGHT.index(kind))
                 or (kind in _ALONE and k in _PERSONS and k != kind)]
    if weightier:
        top, text = min(weightier, key=lambda kt: _WEIGHT.index(kt[0]))  # the weightiest, shown
        said = (f"«{text[:160]}» reads as {top.value}", f"also {kind.value}", *said)
        return dated(Understanding(top if top in _WEIGHT[:2] else kind, _confidence(0.0), said,
                                   evidence=text if top in _WEIGHT[:2] else scores.evidence), facts.dates)
    if kind in _ALONE and "?" in scores.evidence:
        # "Do you take card payments?": a question about paying says nothing was paid or promised.
        said, margin = ("its evidence is a question", *said), 0.0
    (_, _), (second, p2) = scores.probabilities[:2]
    if kind in (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY) and second in _WEIGHT[:2] and p2 >= RUNNER_UP:
        # "we pay on the 10th, but we dispute the shipping": a payment reading with a dispute or a
        # plan close behind is not one to apply alone.
        said, margin = (f"also reads as {second} ({p2:.0%})", *said), 0.0
    return dated(Understanding(kind, _confidence(margin), said, evidence=scores.evidence,
                               sentence=_sentence_of(facts.text, scores.evidence) if kind in _ALONE else ""),
                 facts.dates)


# Sentences, not clauses ("les factures 418, 419 et 420"); "no. 453", "n°. 12", "réf. 7" go on.
_SENTENCE = re.compile(r"(?<!\bno\.)(?<!\bnr\.)(?<!\bnos\.)(?<!\bref\.)(?<!\bréf\.)(?<!\bn°\.)(?<!\binv\.)"
                       r"(?<!\bfact\.)(?<=[.!?;])\s+|\n+")


def _sentence_of(text: str, clause: str) -> str:
    """The sentence of `text` (normalised as the model reads it) that holds `clause`."""
    if not clause:
        return ""
    return next((s for s in _SENTENCE.split(normalise(text[:MAX_TEXT])) if clause in s), clause)


RUNNER_UP = 0.25  # a dispute or a plan this likely behind a claim or a promise sends it to a person
_PERSONS = (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY, Kind.PAYMENT_PLAN, Kind.DISPUTE)
_ALONE = (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY)  # the kinds of a person's message applied without a person
_WEIGHT = (Kind.DISPUTE, Kind.PAYMENT_PLAN, Kind.PROMISE_TO_PAY, Kind.PAYMENT_CLAIM, Kind.HUMAN_REPLY)



def _confidence(margin: float) -> Decimal:
    return Decimal(str(round(margin, 3)))


def _said(scores: Scores) -> tuple[str, ...]:
    """The evidence in words: the sentence that weighed most, what in it did, and the runner-up."""
    (_, p1), (k2, p2) = scores.probabilities[0], scores.probabilities[1]
    said = (f"«{scores.evidence[:160]}»",) if scores.evidence else ()
    return (*said, *scores.words, f"{p1:.0%} against {k2} {p2:.0%}")


def dated(u: Understanding, dates: tuple[date, ...]) -> Understanding:
    """`u` with the dates found in the text: a promise's payment date (the first one written), an
    out-of-office's return (the latest one: "absent from 6 April, back on 19 April"), the latest
    day a claim names ("paid, you will see it on the 20th": a claim that is in fact a promise is
    held that long). Only these kinds look at dates, so the (costly) date reading is for them alone."""
    if not dates or u.kind not in (Kind.PROMISE_TO_PAY, Kind.AUTO_REPLY, Kind.PAYMENT_CLAIM):
        return u
    if u.kind in (Kind.AUTO_REPLY, Kind.PAYMENT_CLAIM):
        return replace(u, date=max(dates))
    when = dates[0]
    others = tuple(c for c in u.cues if c.startswith("also "))
    own = tuple(c for c in u.cues if not c.startswith("also "))
    return replace(u, cues=(*own, f"date {when.isoformat()}", *others), date=when)
