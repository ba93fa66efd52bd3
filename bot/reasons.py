"""The one catalog of reasons: each code's sentence in English and in French (rules/reasons.py says
how they are stored). `render` writes a stored reason for a person, in the user's language, dates
and kinds in words; `plain` writes it in English with its values as stored, for `--json` (the
sentences scripts read before codes existed). A piece that is text (from outside, or a row from
before codes) is shown as it is; a code this version does not know shows as its code."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from bot.i18n import amount_typed, day, figure, language, money, words
from rules.reasons import pieces

__all__ = ["CATALOG", "fit", "pieces", "plain_cue", "plain_text", "render"]

CATALOG: dict[str, tuple[str, str]] = {
    # How a message was tied to its invoices (rules/match.py).
    "match.headers": ("replies to our reminder of {numbers}", "répond à notre relance de {numbers}"),
    "match.headers_also": ("replies to our reminder of {numbers}; also cites {extra}",
                           "répond à notre relance de {numbers} ; cite aussi {extra}"),
    "match.foreign": ("{numbers}, of another client, left out", "{numbers}, d'un autre client, écarté(s)"),
    "match.subject_names": ("the subject also names {numbers}", "l'objet cite aussi {numbers}"),
    "match.token": ("sent to a reply address of ours", "envoyé à l'une de nos adresses de réponse"),
    "match.several_clients": ("cites invoices of several clients ({numbers}) and the sender is none of them: "
                              "a person decides",
                              "cite des factures de plusieurs clients ({numbers}) et l'expéditeur n'est aucun "
                              "d'eux : à décider"),
    "match.cites": ("cites {numbers}", "cite {numbers}"),
    "match.subject_cites": ("the subject cites {numbers}", "l'objet cite {numbers}"),
    "match.amount_of": ("the text writes its amount ({amount})", "le texte en donne le montant ({amount})"),
    "match.amount_guess": ("the text writes the amount of {number} alone ({amount}): probably {number} (to confirm)",
                           "le texte ne donne que le montant de {number} ({amount}) : probablement {number} "
                           "(à confirmer)"),
    "match.probably": ("probably {numbers} (to confirm)", "probablement {numbers} (à confirmer)"),
    "match.named": ("a sender the ledger does not know, writing for {client} (its name or mail domain): "
                    "probably {numbers} (to confirm)",
                    "un expéditeur inconnu du grand livre, qui écrit pour {client} (son nom ou son domaine) : "
                    "probablement {numbers} (à confirmer)"),
    "match.named_none": ("a sender the ledger does not know, writing for {client} (its name or mail domain), "
                         "who has {n} open invoices and cites none",
                         "un expéditeur inconnu du grand livre, qui écrit pour {client} (son nom ou son domaine), "
                         "qui a {n} factures ouvertes et n'en cite aucune"),
    "match.ambiguous": ("a number that could be several invoices: {numbers}",
                        "un numéro qui peut désigner plusieurs factures : {numbers}"),
    "match.sender_only": ("the sender's only open invoice is {number} (to confirm)",
                          "seule facture ouverte de l'expéditeur : {number} (à confirmer)"),
    "match.sender_none": ("the sender has {n} open invoices and cites none",
                          "l'expéditeur a {n} factures ouvertes et n'en cite aucune"),
    "match.none": ("no reminder, invoice number or known sender",
                   "ni relance, ni numéro de facture, ni expéditeur connu"),
    "match.bounce": ("the server gave up on {addresses}, the contact of {numbers}",
                     "le serveur a renoncé à {addresses}, contact de {numbers}"),
    # What a message does (rules/effects.py, bot/apply.py).
    "reply.about_paid": ("{kind} about a paid invoice", "{kind} sur une facture payée"),
    "bounce.delayed": ("delivery delayed, the server keeps trying: nothing to do yet",
                       "distribution retardée, le serveur réessaie : rien à faire pour l'instant"),
    "bounce.fix_contact": ("delivery failure: fix the contact, then resume",
                           "échec de distribution : corrigez le contact, puis reprenez"),
    # Why an invoice with no message waits in the triage queue (bot/triage.py).
    "queue.address_fails": ("{email} fails ({why}): give a new address",
                            "{email} ne répond plus ({why}) : donnez une nouvelle adresse"),
    "queue.data_error": ("its last reminder could not be sent ({why}): fix the data, then resume",
                         "sa dernière relance n'a pas pu partir ({why}) : corrigez les données, puis reprenez"),
    "bounce.gave_up": ("delivery failure: the server gave up on {addresses}",
                       "échec de distribution : le serveur a renoncé à {addresses}"),
    "bounce.reported": ("delivery failure reported by the recipient's server",
                        "échec de distribution signalé par le serveur du destinataire"),
    "auto.no_invoice": ("auto-reply, no invoice concerned ({why})",
                        "réponse automatique, aucune facture concernée ({why})"),
    "triage.client_waits": ("the client's open invoices wait for a person",
                            "les factures ouvertes du client attendent une personne"),
    "triage.decides": ("{kind}: a person decides", "{kind} : à décider"),
    "triage.partly_named": ("the sentence that reads as {kind} names {named}, not {others}: a person decides",
                            "la phrase lue comme {kind} cite {named}, pas {others} : à décider"),
    "triage.promise_no_date": ("a promise with no date to come: a person decides",
                               "une promesse sans date à venir : à décider"),
    "triage.human_reply": ("a client's reply: read it and decide", "réponse d'un client : à lire pour décider"),
    "triage.not_sure": ("not sure it is a {kind} (margin {margin} < {threshold}): a person decides",
                        "pas sûr que ce soit : {kind} (marge {margin} < {threshold}) : à décider"),
    "triage.reread": ("read again as {kind} for {numbers} (was {old} for {old_numbers}); the first reading's "
                      "effects stay: decide",
                      "relu comme {kind} pour {numbers} (avant : {old} pour {old_numbers}) ; les effets de la "
                      "première lecture restent : à décider"),
    "inbound.ignored_sender": ("from a sender a person chose to ignore: filed, nothing done",
                               "d'un expéditeur qu'une personne a choisi d'ignorer : classé, rien n'est fait"),
    "hold.claim": ("the client says it has paid", "le client dit avoir payé"),
    "hold.promise": ("promise to pay on {until}", "promesse de paiement pour le {until}"),
    "hold.out_of_office": ("out of office until {until}", "absent jusqu'au {until}"),
    "hold.until_decided": ("until a person decides", "jusqu'à la décision d'une personne"),
    "hold.client_answered": ("the client answered", "le client a répondu"),
    "hold.other_invoice": ("the client answered about another of its invoices",
                           "le client a répondu au sujet d'une autre de ses factures"),
    "hold.reread": ("read again differently: a person compares the two readings",
                    "relu autrement : une personne compare les deux lectures"),
    # A person's decisions (bot/actions.py, bot/decisions.py).
    "person.read": ("a person has read the message: the ladder goes on",
                    "une personne a lu le message : l'escalade reprend"),
    "person.decided": ("decided by {actor}", "décidé par {actor}"),
    "person.decided_why": ("decided by {actor}: {why}", "décidé par {actor} : {why}"),
    "person.labelled_for": ("labelled by {actor} for {numbers}", "étiqueté par {actor} pour {numbers}"),
    "person.assigned": ("assigned by {actor} to {numbers}", "rattaché par {actor} à {numbers}"),
    "person.labelled": ("labelled {kind} by {actor}", "étiqueté {kind} par {actor}"),
    "state.was": ("was {state}", "était {state}"),
    # The ledger and the outbox.
    "ledger.paid_column": ("paid column of {source}", "colonne paid de {source}"),
    "ledger.paid_undone": ("paid column of {source} no longer covers the amount",
                           "la colonne paid de {source} ne couvre plus le montant"),
    "ledger.line": ("line {line} of {source}", "ligne {line} de {source}"),
    "outbox.late_start": ("{stage}: late start, {due} is due instead",
                          "{stage} : démarrage tardif, {due} est due à la place"),
    "outbox.cc_refused": ("cc refused: {address}", "copie refusée : {address}"),
    "plan.undone": ("undone", "annulé"),
    "plan.accepted": ("plan of {n} instalment(s) accepted, the first on {until}",
                      "échéancier de {n} échéance(s) accepté, la première le {until}"),
    # Why a person decided, as the triage screen records it (the decision event; bot/desk.py).
    "decision.confirm": ("reading confirmed", "lecture confirmée"),
    "decision.label": ("kind corrected to {kind}", "nature corrigée : {kind}"),
    "decision.assign": ("assigned to {numbers}", "rattaché à {numbers}"),
    "decision.paid": ("{amount} received", "{amount} reçu(s)"),
    "decision.accept_plan": ("plan of {n} instalment(s) accepted", "échéancier de {n} échéance(s) accepté"),
    "decision.reply": ("reply {template}", "réponse {template}"),
    "decision.settle": ("dispute settled: {how}", "litige réglé : {how}"),
    "decision.contact": ("new address {address}", "nouvelle adresse {address}"),
    "decision.resume": ("resumed", "reprise"),
    "decision.dismiss": ("noise", "bruit"),
    "decision.ignore": ("ignore {address}", "ignorer {address}"),
    "decision.command": ("{action}, on the command line", "{action}, en ligne de commande"),
    "plan.accepted_by": ("plan accepted by {actor}", "échéancier accepté par {actor}"),
    "plan.declined": ("plan declined", "échéancier refusé"),
    "plan.declined_by": ("plan declined by {actor}", "échéancier refusé par {actor}"),
    "dispute.settled": ("dispute settled", "litige réglé"),
    "dispute.credit_note": ("dispute settled with a credit note", "litige réglé par un avoir"),
    "decision.undone": ("undid {action}: {text}", "annulé : {action} : {text}"),
    "payment.recorded": ("{amount} recorded", "{amount} enregistré(s)"),
    "payment.credit_note": ("{amount} credit note", "avoir de {amount}"),
    "contact.changed": ("{old} -> {new}", "{old} -> {new}"),
    "contact.resumed": ("resumed", "reprise"),
    "reply.cancelled": ("undone before it was sent", "annulée avant d'être envoyée"),
    "outbox.uncertain": ("left in 'sending' by {instance}: it may or may not have been delivered; counted as sent, "
                         "please check",
                         "laissé « en cours d'envoi » par {instance} : peut-être distribué, peut-être pas ; "
                         "compté comme envoyé, à vérifier"),
    "plan.instalment": ("instalment {index}: {amount} due on {until}", "échéance {index} : {amount} au {until}"),
    "plan.ended": ("the plan ended", "l'échéancier a pris fin"),
    "plan.covered": ("instalment {index} is paid", "l'échéance {index} est payée"),
    "plan.missed": ("instalment {index} was missed: the ladder resumes",
                    "échéance {index} manquée : l'escalade reprend"),
    "outbox.not_active": ("invoice is {state}", "la facture est : {state}"),
    "outbox.nothing_due": ("nothing left to pay", "plus rien à payer"),
    "outbox.paused": ("paused until {until}", "en pause jusqu'au {until}"),
    "outbox.held": ("a client's message (#{id}) waits for a person",
                    "un message du client (n°{id}) attend une personne"),
    "outbox.failing": ("contact {address} is failing", "le contact {address} est en échec"),
}
DATES = {"until"}  # ISO dates, written as a person reads them
KINDS = {"kind", "old", "state", "how"}  # codes of kinds, states and settlements, in words
# A person's decisions (bot/desk.py's `action`), in words.
ACTIONS: dict[str, tuple[str, str]] = {
    "confirm": ("reading confirmed", "lecture confirmée"), "label": ("kind corrected", "nature corrigée"),
    "assign": ("assignment", "rattachement"), "paid": ("payment recorded", "paiement enregistré"),
    "accept_plan": ("plan accepted", "échéancier accepté"), "reject_plan": ("plan declined", "échéancier refusé"),
    "reply": ("reply", "réponse"), "settle": ("dispute settled", "litige réglé"),
    "contact": ("new address", "nouvelle adresse"), "pause": ("pause", "pause"), "resume": ("resumed", "reprise"),
    "dismiss": ("dismissed as noise", "écarté comme bruit"), "ignore": ("sender ignored", "expéditeur ignoré"),
}
NESTED = {"why"}  # a stored reason inside another
FIGURES = {"margin", "threshold"}  # decimals (a classifier's margin), in the reader's format
# "amount" (with "currency" when the piece has it): an amount in the reader's format; as stored
# (`400.00 EUR`) in plain text.


def _value(key: str, value: Any, plain: bool) -> str:
    text = str(value)
    if key in NESTED:
        return plain_text(text) if plain else render(text)
    if plain:
        return text
    if key in DATES:
        try:
            return day(date.fromisoformat(text))
        except ValueError:
            return text
    if key in KINDS:
        return words(text)
    if key == "action":
        said = ACTIONS.get(text)
        return text if said is None else said[1] if language() == "fr" else said[0]
    if key in FIGURES:
        return figure(text)
    return text


def _one(piece: dict[str, Any] | str, plain: bool) -> str:
    if isinstance(piece, str):
        return piece
    code = str(piece["code"])
    sentences = CATALOG.get(str(code))
    if sentences is None:
        return code
    template = sentences[0] if plain or language() != "fr" else sentences[1]
    values = {k: _value(k, v, plain) for k, v in piece.items() if k not in ("code", "currency")}
    if "amount" in piece:
        values["amount"] = _amount(str(piece["amount"]), str(piece.get("currency", "")), plain)
    try:
        return str(template.format(**values))
    except (KeyError, IndexError):  # a parameter missing: the code rather than a half sentence
        return code


def _amount(value: str, currency: str, plain: bool) -> str:
    if plain:
        return f"{value} {currency}".strip()
    try:
        return money(Decimal(value), currency) if currency else amount_typed(Decimal(value))
    except (ArithmeticError, ValueError, KeyError):  # not an amount, or a currency babel does not know
        return f"{value} {currency}".strip()


def render(stored: str | list[Any]) -> str:
    """A stored reason (or its `pieces`, as `--json` gives them) for a person, in the user's language."""
    parts = stored if isinstance(stored, list) else pieces(stored or "")
    return (" ; " if language() == "fr" else "; ").join(_one(p, False) for p in parts)


def plain_text(stored: str) -> str:
    """A stored reason in English with its values as stored (`--json`)."""
    return "; ".join(_one(p, True) for p in pieces(stored or ""))


def fit(stored: str, limit: int = 1000) -> str:
    """A stored reason that fits its column. A coded one cut short would show as its JSON: one that
    is too long (assigned to eighty invoices) is kept as its English sentence, cut."""
    return stored if len(stored) <= limit else plain_text(stored)[:limit - 1] + "…"


def plain_cue(cue: str) -> str:
    """A cue as `--json` gives it: how the invoice was found (`match: METHOD: reason`) in words."""
    head, sep, rest = cue.partition(": ")
    if head == "match" and sep:
        method, sep, why = rest.partition(": ")
        return f"match: {method}: {plain_text(why)}" if sep else cue
    return cue
