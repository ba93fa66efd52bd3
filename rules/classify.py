"""What an inbound message is: bounce, auto-reply, payment claim, promise, plan, dispute, reply.

Bounces are tested before auto-replies (many real bounces carry `Auto-Submitted: auto-replied`).
Each result carries a confidence and the cues that produced it, so a person can see why."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from enum import StrEnum


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
_AUTO_SUBJECTS = (
    r"r[ée]ponse automatique", r"absence du bureau", r"absent\b", r"out of (the )?office", r"automatic reply",
    r"auto[- ]?reply", r"autoreply", r"on vacation", r"en cong[ée]s?", r"message automatique",
)
_CLAIM = (
    r"virement (a été |a ete |est )?(effectu|envoy|émis|emis|pass|réalis|fait|parti\b)",
    r"(avons|ai) (bien )?(réglé|regle|payé|paye|viré|vire)",
    r"(avons|ai) (bien )?(effectué|effectue|fait|procédé à|procédé au|envoyé|émis|passé|lancé) "
    r"(le |un |au |notre |l')?(virement|paiement|règlement|reglement)",
    r"r[èe]glement (a été |a ete )?(effectu|envoy|émis|pass|fait)",
    r"paiement (a été |a ete )?(effectu|envoy|émis|pass|fait)",
    r"\b(r[ée]gl[ée]e?|pay[ée]e?) (ce jour|aujourd['’]hui|ce matin|hier)\b",
    r"\bpayment (has |have )?(gone|went) through\b",
    r"\b(sent|posted|mailed) (you )?(a |the |our )?(cheque|check)\b",
    r"\b(cheque|check) (is |was )?in the (post|mail)\b",
    r"ch[èe]que\b.{0,40}?(a été |a ete |est )(envoy|post|exp[ée]di)", r"\b(has|have) been paid\b",
    r"\b(was|were) (already )?paid\b", r"\bpaid (it|this|the invoice)\b", r"\bc['’]est (bien |déjà )?(réglé|payé)",
    r"\b(transfer|payment|wire)\b.{0,40}\bwent out\b",
    r"\bpayment (was|has been) (made|sent|processed|issued)\b", r"remittance advice", r"avis de (paiement|virement)",
    r"\bwe (have )?(paid|transferred|wired)\b", r"\btransfer (was|has been) (made|sent)\b", r"\bproof of payment\b",
    r"preuve de (paiement|virement)", r"d[ée]j[àa] (été )?(réglé|regle|payé|paye)",
)
# A bank or a payment processor telling us money came in: sent by a robot, but a payment all the same.
_NOTICE = (
    r"vous avez re[çc]u un (virement|paiement|règlement|reglement)", r"\bvirement (sepa )?(re[çc]u|entrant)\b",
    r"avis de (virement|crédit|credit) re[çc]u", r"\b(a|ont) été crédité", r"paiement (re[çc]u|confirmé|encaissé)",
    r"le paiement de .{0,80}a été (confirmé|re[çc]u|encaissé)",
    r"\byou(['’]ve| have)? received (a |an )?(payment|transfer|wire)\b", r"\bpayment (received|confirmed)\b",
    r"\bpayment of .{0,60} (has been|was) (received|confirmed|credited)\b", r"\bfunds (have been|were) credited\b",
)
_PROMISE = (
    r"(nous )?(réglerons|reglerons|paierons|payerons|virerons|procéderons au (paiement|règlement|virement))",
    r"(je|nous) vais (régler|regler|payer|virer)", r"(sera|seront) (réglée?s?|payée?s?|viré)",
    r"(\bwill|['’]ll) (pay|be paid|settle|transfer|process)\b", r"\bpayment (will be|is scheduled)\b",
    r"(virement|paiement|r[èe]glement|ch[èe]que) (partira|interviendra|sera (effectu|envoy|émis|fait|lanc))",
    r"prochain (virement|paiement|règlement)", r"\bby (the )?end of\b", r"d'ici (la fin|le)",
    r"\bpayment run\b", r"\bscheduled for (payment|our next)\b",
)
_PLAN = (
    r"[ée]ch[ée]ancier", r"\ben \d+ (fois|versements|mensualit[ée]s)", r"paiements? (échelonn|echelonn|fractionn)",
    r"\binstal?lments?\b", r"payment plan", r"\bpay in \d+\b", r"mensualit[ée]s", r"étaler le paiement",
    r"\bsplit (the )?(payment|amount|invoice|balance)", r"\b(\d+|two|three|four|six) monthly payments\b",
    r"\bla moitié\b.{0,60}\b(le reste|le solde)\b", r"\bhalf\b.{0,60}\b(the rest|the remainder|the balance)\b",
)
_DISPUTE = (
    r"\blitige\b", r"(nous )?contest(ons|e|é)", r"\bdisput(e|ing)\b", r"(not|never) received", r"pas (été )?re[çc]u",
    r"wrong (amount|invoice)", r"montant (erron|incorrect|faux)", r"\bavoir\b", r"credit note",
    r"erreur (sur|de) (la )?facture",
    r"ne (correspond|concerne) pas", r"\bdéfectueu", r"non conforme", r"réclamation",
    r"\bdoublon\b", r"factur[ée]e? deux fois", r"\bduplicate (invoice|billing|charge)\b", r"\bbilled twice\b",
    r"\bovercharged\b",
)


def classify(facts: MailFacts, company_domain: str) -> Understanding:
    h = facts.headers
    sender = facts.sender.lower()
    subject = facts.subject or ""

    cues: list[str] = []
    if facts.content_type == "multipart/report" and "delivery-status" in facts.report_type:
        cues.append("multipart/report; report-type=delivery-status (RFC 3464)")
    from_header = h.get("from", sender).lower()
    cues += [f"sender ~ {p}" for p in _any(_BOUNCE_SENDERS, from_header)]
    is_reply = re.match(r"^\s*(re|tr|fw|fwd|aw|réf)\s*:", subject, re.IGNORECASE) is not None
    subject_cues = [f"subject ~ {p}" for p in _any(_BOUNCE_SUBJECTS, subject)]
    if not is_reply:
        cues += subject_cues
    elif subject_cues:  # "RE: ... non remis (delivery failed)": only with a failure report in the body too
        body = _any(_BOUNCE_BODY, facts.text)
        cues += [*subject_cues, *(f"body ~ {p}" for p in body)] if body else []
    if h.get("x-failed-recipients"):
        cues.append("X-Failed-Recipients")
    robot = h.get("return-path", "x").strip() in ("<>", "") or h.get("auto-submitted", "no").lower() != "no"
    if robot and not cues:
        cues += [f"body ~ {p}" for p in _any(_BOUNCE_BODY, facts.text)[:2]]
    if cues:
        return Understanding(Kind.BOUNCE, Decimal("0.99") if len(cues) > 1 else Decimal("0.85"), tuple(cues))

    text = f"{subject}\n{facts.text}"
    auto: list[str] = []
    auto_submitted = h.get("auto-submitted", "").lower()
    if auto_submitted and auto_submitted != "no":
        auto.append(f"Auto-Submitted: {auto_submitted}")
    auto += [f"{name}" for name in ("x-autoreply", "x-autorespond", "x-ms-exchange-generated-message-source",
                                     "x-ms-exchange-inbox-rules-loop", "list-id") if name in h]
    if h.get("precedence", "").lower() in ("auto_reply", "bulk", "junk", "list"):
        auto.append(f"Precedence: {h['precedence']}")
    if h.get("return-path", "x").strip() in ("<>", ""):
        auto.append("empty Return-Path")
    auto += [f"subject ~ {p}" for p in _any(_AUTO_SUBJECTS, subject)]
    if sender.endswith("@" + company_domain.lower()):
        auto.append("sent from our own domain (a loop)")
    if auto and (notice := _any(_NOTICE, text)):  # not an answer, but the money came in
        return Understanding(Kind.PAYMENT_CLAIM, Decimal("0.85"),
                             ("payment notice from a bank or a payment processor", *notice, *auto))
    if auto:
        return dated(Understanding(Kind.AUTO_REPLY, Decimal("0.98") if len(auto) > 1 else Decimal("0.85"),
                                   tuple(auto)), facts.dates)

    scores: list[tuple[Kind, list[str]]] = [
        (Kind.DISPUTE, _any(_DISPUTE, text)),
        (Kind.PAYMENT_PLAN, _any(_PLAN, text)),
        (Kind.PAYMENT_CLAIM, _any(_CLAIM, text) + [f"attachment {a}" for a in facts.attachments
                                                    if re.search(r"remittance|avis|virement|payment|paiement|preuve",
                                                                 a, re.IGNORECASE)]),
        (Kind.PROMISE_TO_PAY, _any(_PROMISE, text)),
    ]
    found = [(k, c) for k, c in scores if c]
    if not found:
        return Understanding(Kind.HUMAN_REPLY, Decimal("0.60"), ("no payment, plan or dispute wording",))
    kind, kcues = found[0]  # a dispute or a plan outweighs a claim or a promise in the same message
    confidence = Decimal("0.90") if len(found) == 1 else Decimal("0.70")
    others = [f"also {k.value}" for k, _ in found[1:]]
    return dated(Understanding(kind, confidence, tuple(kcues + others)), facts.dates)


def dated(u: Understanding, dates: tuple[date, ...]) -> Understanding:
    """`u` with the dates found in the text: a promise's payment date (the first one written), an
    out-of-office's return (the latest one: "absent from 6 April, back on 19 April"). Only these
    two kinds look at dates, so the (costly) date reading is done for them alone."""
    if not dates or u.kind not in (Kind.PROMISE_TO_PAY, Kind.AUTO_REPLY):
        return u
    if u.kind is Kind.AUTO_REPLY:
        return replace(u, date=max(dates))
    when = dates[0]
    others = tuple(c for c in u.cues if c.startswith("also "))
    own = tuple(c for c in u.cues if not c.startswith("also "))
    return replace(u, cues=(*own, f"date {when.isoformat()}", *others), date=when)
