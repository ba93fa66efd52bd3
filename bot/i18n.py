"""The language of what the command line prints for the person at the terminal.

French when RELANCE_LANG, or else LC_ALL / LC_MESSAGES / LANG, starts with "fr"; English
otherwise. (The language of the reminders themselves is each client's, from the ledger.)"""

from __future__ import annotations

import os
from typing import Any

FR: dict[str, str] = {
    "NUMBER": "NUMÉRO", "CLIENT": "CLIENT", "DUE": "DÛ", "LATE": "RETARD", "STAGE": "ÉTAPE", "STATE": "ÉTAT",
    "NEXT": "SUITE", "WHEN": "QUAND", "AT": "DATE", "STATUS": "STATUT", "SUBJECT": "OBJET", "KIND": "TYPE",
    "BY": "PAR", "WHY": "MOTIF", "RECEIVED": "REÇU", "FROM": "DE", "INVOICES": "FACTURES",
    "(none)": "(aucune)",
    "reminders:": "relances :", "events:": "historique :", "messages:": "messages :",
    "database ready ({where}, schema {revision})": "base prête ({where}, schéma {revision})",
    "{path}: {rows} rows: {created} new, {updated} updated, {unchanged} unchanged, {settled} settled":
        "{path} : {rows} lignes : {created} nouvelles, {updated} modifiées, {unchanged} inchangées, "
        "{settled} soldées",
    "would send": "enverrait", "sent": "envoyé", "uncertain": "incertain", "deferred": "différé",
    "refused": "refusé",
    "{n} message(s) due (dry run: nothing sent, nothing recorded)":
        "{n} message(s) dû(s) (essai : rien n'est envoyé ni enregistré)",
    "{sent} sent, {deferred} deferred, {refused} refused, {uncertain} uncertain, {cancelled} cancelled":
        "{sent} envoyé(s), {deferred} différé(s), {refused} refusé(s), {uncertain} incertain(s), "
        "{cancelled} annulé(s)",
    "tick stopped: {why}": "passage interrompu : {why}",
    "some messages were not sent (see above)": "certains messages n'ont pas été envoyés (voir ci-dessus)",
    "passes over {stages}": "saute {stages}",
    "WOULD FAIL: {why}": "ÉCHOUERAIT : {why}",
    "{n} reminder(s) from {start} to {end} (simulation: nothing sent, nothing recorded)":
        "{n} relance(s) du {start} au {end} (simulation : rien n'est envoyé ni enregistré)",
    "config {source}: ok ({stages} stages, {zone}, holidays {holidays})":
        "config {source} : ok ({stages} étapes, {zone}, jours fériés {holidays})",
    "templates: ok ({stages} stages x fr, en rendered with a sample invoice)":
        "modèles : ok ({stages} étapes x fr, en rendues avec une facture d'exemple)",
    "warning: {why}: formal notices sent now will fail until it is there":
        "attention : {why} : les mises en demeure échoueront tant qu'il manque",
    "database: ok": "base : ok",
    "none": "aucun",
    "{folder}: UIDVALIDITY changed, folder read again (duplicates skipped)":
        "{folder} : UIDVALIDITY a changé, dossier relu (doublons ignorés)",
    "{stored} new message(s) stored, {processed} understood": "{stored} nouveau(x) message(s) stocké(s), "
        "{processed} compris",
    "{moved} handled message(s) moved to {folder}": "{moved} message(s) traité(s) déplacé(s) vers {folder}",
    "active": "en cours", "paused": "en pause", "disputed": "litige", "plan": "échéancier", "paid": "payée",
    "bounced": "adresse en échec", "manual": "suivi manuel", "resume": "reprendre", "triage": "à trier",
    "fix_contact": "corriger le contact",
    "Decided": "Traité", "Assign to invoices": "Rattacher aux factures",
    "invoice number(s), then Enter; Escape cancels": "numéro(s) de facture, puis Entrée ; Échap annule",
    "Pause 7 days": "Pause 7 jours", "Resume": "Reprendre", "Paid": "Payée",
    "Refresh": "Actualiser", "Quit": "Quitter", "To triage": "À trier", "Open invoices": "Factures ouvertes",
    "Select an invoice first": "Choisissez d'abord une facture", "Nothing to triage": "Rien à trier",
}


def language() -> str:
    for var in ("RELANCE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return "fr" if value.lower().startswith("fr") else "en"
    return "en"


def t(text: str, **values: Any) -> str:
    """`text` in the user's language, with `values` filled in."""
    if language() == "fr":
        text = FR.get(text, text)
    return text.format(**values) if values else text
