"""The language of what the command line prints for the person at the terminal.

French when RELANCE_LANG, or else LC_ALL / LC_MESSAGES / LANG, starts with "fr"; English
otherwise. (The language of the reminders themselves is each client's, from the ledger.)"""

from __future__ import annotations

import os
import re
from decimal import Decimal
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
    "{why}: a formal notice sent now would fail": "{why} : une mise en demeure envoyée maintenant échouerait",
    "{n} invoice(s) get no reminder until their data is fixed (next action fix_data in `relance status`)":
        "{n} facture(s) sans relance tant que leurs données ne sont pas corrigées (suite : corriger les données "
        "dans `relance status`)",
    "outside the sending window: it opens {when}; {n} message(s) would go then":
        "hors de la plage d'envoi : elle ouvre le {when} ; {n} message(s) partirai(en)t alors",
    "database: ok": "base : ok",
    "expected a TCP port from 1 to 65535 (served on 127.0.0.1 only), or 0 for no metrics endpoint":
        "attendu : un port TCP de 1 à 65535 (servi sur 127.0.0.1 seulement), ou 0 pour aucune page de métriques",
    "digest not sent: its template failed: {why}": "récapitulatif non envoyé : son modèle a échoué : {why}",
    "digest to {to} not sent: {why}": "récapitulatif pour {to} non envoyé : {why}",
    "digest to {to}: {invoices} invoice(s) and {messages} message(s) wait for a person":
        "récapitulatif pour {to} : {invoices} facture(s) et {messages} message(s) attendent une personne",
    "classifier refitted on {examples} examples ({own} labelled here); {features} features":
        "classifieur réappris sur {examples} exemples (dont {own} étiquetés ici) ; {features} caractéristiques",
    "none": "aucun",
    "{folder}: UIDVALIDITY changed, folder read again (duplicates skipped)":
        "{folder} : UIDVALIDITY a changé, dossier relu (doublons ignorés)",
    "{stored} new message(s) stored, {processed} understood": "{stored} nouveau(x) message(s) stocké(s), "
        "{processed} compris",
    "{moved} handled message(s) moved to {folder}": "{moved} message(s) traité(s) déplacé(s) vers {folder}",
    "active": "en cours", "paused": "en pause", "disputed": "litige", "plan": "échéancier", "paid": "payée",
    "bounced": "adresse en échec", "manual": "suivi manuel", "resume": "reprendre", "triage": "à trier",
    "fix_contact": "corriger le contact",
    "fix_data": "corriger les données",
    "unreadable CSV row: {why}; no column takes more than {limit} characters":
        "ligne CSV illisible : {why} ; aucune colonne ne prend plus de {limit} caractères",
    "control character (line break, tab, NUL...) at position {pos}":
        "caractère de contrôle (saut de ligne, tabulation, NUL...) en position {pos}",
    "{length} characters, more than the {limit} this column takes":
        "{length} caractères, plus que les {limit} que prend cette colonne",
    # `relance check --online`
    "smtp: connected and logged in": "smtp : connexion et identification réussies",
    "smtp: connected; no login (smtp.username is empty: a relay that needs none)":
        "smtp : connexion réussie ; pas d'identification (smtp.username est vide : un relais qui n'en demande pas)",
    "imap: folder {folder} opens read-only": "imap : le dossier {folder} s'ouvre en lecture seule",
    "imap: IDLE {idle}": "imap : IDLE {idle}", "yes": "oui",
    "no: the folders are polled every {n} s": "non : les dossiers sont relevés toutes les {n} s",
    'neither MOVE nor UIDPLUS: set imap.move_handled_to = ""':
        'ni MOVE ni UIDPLUS : mettez imap.move_handled_to = ""',
    # `relance demo`
    "the demo's database and files are kept in {work}": "la base et les fichiers de la démo sont gardés dans {work}",
    "Mail sandbox: SMTP 127.0.0.1:{smtp} delivers into IMAP 127.0.0.1:{imap} (user {user}: what clients "
    "receive lands in {delivered}, their answers in INBOX)":
        "Bac à sable mail : SMTP 127.0.0.1:{smtp} livre dans IMAP 127.0.0.1:{imap} (utilisateur {user} : ce que "
        "reçoivent les clients arrive dans {delivered}, leurs réponses dans INBOX)",
    "Imported {rows} invoices ({settled} already paid). Ladder: {ladder}":
        "{rows} factures importées ({settled} déjà payées). Escalade : {ladder}",
    "received": "reçu", "undelivered": "non remis",
    "Status on {day}:": "État au {day} :",
    "Waiting for a person (relance messages --triage):": "En attente d'une personne (relance messages --triage) :",
    "The sandbox IMAP mailbox received {n} messages, e.g.:": "La boîte IMAP du bac à sable a reçu {n} messages, dont :",
    "threaded: yes": "dans le fil : oui", "threaded: first": "dans le fil : premier",
    "attached: {files}": "pièces jointes : {files}",
    "A formal notice, as the client reads it:": "Une mise en demeure, telle que le client la lit :",
    # What a message is, and where it stands, as the tables show it (JSON keeps the codes).
    "payment_claim": "paiement annoncé", "promise_to_pay": "promesse de paiement", "payment_plan": "échéancier proposé",
    "dispute": "contestation", "auto_reply": "réponse automatique", "bounce": "non distribué",
    "human_reply": "réponse", "applied": "appliqué", "quarantined": "en quarantaine", "closed": "classé",
    "new": "nouveau",
    "Decided": "Traité", "Kind": "Nature",
    "kind ({kinds}), a promise's date after it; Enter; Escape cancels":
        "nature ({kinds}), la date d'une promesse après ; Entrée ; Échap annule",
    "unknown kind {kind} (one of {kinds})": "nature inconnue {kind} (l'une de {kinds})",
    "{value}: expected a date as YYYY-MM-DD": "{value} : attendu : une date AAAA-MM-JJ",
    "Assign to invoices": "Rattacher aux factures",
    "invoice number(s), then Enter; Escape cancels": "numéro(s) de facture, puis Entrée ; Échap annule",
    "Pause 7 days": "Pause 7 jours", "Resume": "Reprendre", "Paid": "Payée",
    "Refresh": "Actualiser", "Quit": "Quitter", "To triage": "À trier", "Open invoices": "Factures ouvertes",
    "Select an invoice first": "Choisissez d'abord une facture", "Nothing to triage": "Rien à trier",
    # Importing invoices (`relance import`): FILE:LINE: column: then this.
    "no such file": "fichier introuvable",
    "not UTF-8 ({reason} at byte {start}); save the file as UTF-8 CSV":
        "pas en UTF-8 ({reason} à l'octet {start}) ; enregistrez le fichier en CSV UTF-8",
    "missing required column": "colonne obligatoire manquante",
    "unknown column (known: {known})": "colonne inconnue (connues : {known})",
    "{n} more cell(s) than the header has columns": "{n} cellule(s) de plus que de colonnes dans l'en-tête",
    "{number} already on line {line} with different values": "{number} déjà à la ligne {line}, avec d'autres valeurs",
    "empty (required)": "vide (obligatoire)",
    "{value}: {why}": "{value} : {why}",
    "{value}: must be greater than zero": "{value} : doit être supérieur à zéro",
    "expected an amount >= 0 with at most two decimals, such as 1234.56 or 1234,56":
        "attendu : un montant >= 0 avec au plus deux décimales, comme 1234,56 ou 1234.56",
    "{value}: more than the amount {amount}": "{value} : plus que le montant {amount}",
    "expected a date as YYYY-MM-DD or DD/MM/YYYY": "attendu : une date JJ/MM/AAAA ou AAAA-MM-JJ",
    "{value}: before the issue date {issue}": "{value} : avant la date d'émission {issue}",
    "{value}: not a valid email address": "{value} : adresse e-mail invalide",
    "{value}: expected an ISO 4217 code such as EUR": "{value} : attendu : un code ISO 4217 comme EUR",
    "{value}: expected fr or en": "{value} : attendu : fr ou en",
    "{value}: expected business or consumer": "{value} : attendu : business (entreprise) ou consumer (particulier)",
    "{value}: no such file (looked for {path})": "{value} : fichier introuvable (cherché : {path})",
    "healthy": "en bonne santé",
    "NOT HEALTHY: a part has failed for {n} min or more": "EN DÉFAUT : une partie échoue depuis {n} min ou plus",
    "failing since {when}: {why}": "en échec depuis {when} : {why}",
    "last worked {when}": "a fonctionné pour la dernière fois {when}",
    "never": "jamais",
    "{value}: outside the attachments folder {folder} (attachments.folder in the config)":
        "{value} : hors du dossier des pièces jointes {folder} (attachments.folder dans la configuration)",
    "{n} problem(s), nothing imported": "{n} problème(s), rien n'est importé",
    # The config file: FILE: key = value: then this.
    "environment variable {var} is not set (it must hold the SMTP password of {user}; "
    'or set smtp.username = "")':
        "la variable d'environnement {var} n'est pas définie (elle doit contenir le mot de passe SMTP de {user} ; "
        'ou mettez smtp.username = "")',
    "environment variable {var} is not set (it must hold the IMAP password of {user})":
        "la variable d'environnement {var} n'est pas définie (elle doit contenir le mot de passe IMAP de {user})",
    "no such config file (copy config.example.toml to config.toml, or pass --config PATH)":
        "fichier de configuration introuvable (copiez config.example.toml en config.toml, ou passez --config CHEMIN)",
    "cannot read the config file: {why}": "impossible de lire le fichier de configuration : {why}",
    "not valid TOML: {why}": "TOML invalide : {why}",
    "unknown key; did you mean {key}?": "clé inconnue ; vouliez-vous dire {key} ?",
    "unknown key; known keys: {keys}": "clé inconnue ; clés connues : {keys}",
    "expected a table, got {value}": "attendu : une table, reçu {value}",
    "expected {what}": "attendu : {what}",
    "one of {choices}": "l'une des valeurs {choices}",
    "true or false": "true ou false",
    "a whole number >= 0": "un nombre entier >= 0",
    "a string in quotes": "une chaîne entre guillemets",
    'a decimal number, written as a string ("40.00")': 'un nombre décimal, écrit comme une chaîne ("40.00")',
    'a decimal number such as "40.00"': 'un nombre décimal comme "40.00"',
    "a finite decimal number >= 0": "un nombre décimal fini >= 0",
    "a list of strings": "une liste de chaînes",
    "an inline table such as {example}": "une table en ligne comme {example}",
    "expected at least one [[stages]] table": "attendu : au moins une table [[stages]]",
    "missing (each stage needs a name)": "manquant (chaque étape a besoin d'un nom)",
    "missing (the first stage counts from the due date)": "manquant (la première étape compte depuis l'échéance)",
    "the first stage takes after_due_days instead": "la première étape prend after_due_days à la place",
    "missing (later stages count from the previous one sent)":
        "manquant (les étapes suivantes comptent depuis la précédente envoyée)",
    "only the first stage counts from the due date; use after_previous_days":
        "seule la première étape compte depuis l'échéance ; utilisez after_previous_days",
    "name {name} used twice": "nom {name} utilisé deux fois",
    'expected an IANA time zone such as "Europe/Paris"': 'attendu : un fuseau horaire IANA comme "Europe/Paris"',
    "expected at least 1": "attendu : au moins 1",
    "expected a number from 0 to 1": "attendu : un nombre de 0 à 1",
    'expected two times ["HH:MM", "HH:MM"], the first before the second ("24:00" for the end of the day)':
        'attendu : deux heures ["HH:MM", "HH:MM"], la première avant la seconde ("24:00" pour la fin de journée)',
    'expected a country code of the holidays package such as "FR", or ""':
        'attendu : un code pays du paquet holidays comme "FR", ou ""',
    "expected a folder that is not watched (imap.folders = {folders})":
        "attendu : un dossier qui n'est pas surveillé (imap.folders = {folders})",
    "expected an email address": "attendu : une adresse e-mail",
    'expected an email address, optionally with {token} ("ar+{token}@acme.example")':
        'attendu : une adresse e-mail, avec {token} si vous voulez ("ar+{token}@acme.example")',
    'expected a half-year key such as "2025-H1" or "2025-H2"':
        'attendu : une clé de semestre comme "2025-H1" ou "2025-H2"',
    "no such directory ({path})": "dossier introuvable ({path})",
    "empty (expected sqlite:///relance.db or a postgresql+psycopg:// URL)":
        "vide (attendu : sqlite:///relance.db ou une URL postgresql+psycopg://)",
    # OAuth2 sign-in (auth = "xoauth2" / "oauthbearer", relance login)
    "no login": "pas d'authentification",
    "password from ${var}": "mot de passe lu dans ${var}",
    "smtp: connected and logged in ({method})": "smtp : connecté et authentifié ({method})",
    "imap: connected and logged in ({method})": "imap : connecté et authentifié ({method})",
    "expected the application (client) id registered with {provider}":
        "attendu : l'identifiant d'application (client) enregistré auprès de {provider}",
    "expected the mailbox's address: {name}.auth = {auth!r} signs in as a user":
        "attendu : l'adresse de la boîte : {name}.auth = {auth!r} se connecte en tant qu'utilisateur",
    'expected a program and its arguments, as a list ["/usr/local/bin/get-token", "--user", "..."]':
        'attendu : un programme et ses arguments, en liste ["/usr/local/bin/get-token", "--user", "..."]',
    'expected {name}.token_command, or [oauth] provider = "microsoft" or "google" '
    "(then run `relance login PROVIDER` once)":
        'attendu : {name}.token_command, ou [oauth] provider = "microsoft" ou "google" '
        "(puis lancez `relance login FOURNISSEUR` une fois)",
    'expected an https:// address such as "https://login.microsoftonline.us", or "" for the provider\'s own':
        'attendu : une adresse https:// comme "https://login.microsoftonline.us", ou "" pour celle du fournisseur',
    'only used with {name}.auth = "xoauth2" or "oauthbearer" (it is "password")':
        'ne sert qu\'avec {name}.auth = "xoauth2" ou "oauthbearer" (ici "password")',
    "signed in to {provider} as {user}; the refresh token is in {path} (readable by you alone)":
        "connecté à {provider} en tant que {user} ; le jeton de renouvellement est dans {path} (lisible par vous seul)",
    "To sign in, open {url} in a browser (on any device), enter the code {code} and sign in as the mailbox's user; "
    "this waits for you, at most {n} minutes.":
        "Pour vous connecter, ouvrez {url} dans un navigateur (sur n'importe quel appareil), saisissez le code "
        "{code} et connectez-vous avec le compte de la boîte ; la commande vous attend {n} minutes au plus.",
    "the provider sent no usable {what}": "le fournisseur n'a envoyé aucun {what} utilisable",
    "code": "code", "address": "lien",
    "microsoft refused to start the sign-in ({why})": "microsoft a refusé de commencer la connexion ({why})",
    "microsoft did not sign you in ({why})": "microsoft ne vous a pas connecté ({why})",
    "google refused to start the sign-in ({why})": "google a refusé de commencer la connexion ({why})",
    "google did not sign you in ({why})": "google ne vous a pas connecté ({why})",
    'expected "{provider}" (with its client_id) to sign in with {provider}':
        'attendu : "{provider}" (avec son client_id) pour se connecter avec {provider}',
    "larger than {n} bytes: not a token file": "plus de {n} octets : ce n'est pas un fichier de jetons",
    "not a token file written by `relance login` (not JSON)":
        "pas un fichier de jetons écrit par `relance login` (pas du JSON)",
    "no token file: run `relance login` once (see the README)":
        "pas de fichier de jetons : lancez `relance login` une fois (voir le README)",
    "cannot open the token file: {why}": "impossible d'ouvrir le fichier de jetons : {why}",
    "not a regular file": "pas un fichier ordinaire",
    "belongs to another user (uid {uid}): refused; run `relance login` as the user that runs relance":
        "appartient à un autre utilisateur (uid {uid}) : refusé ; lancez `relance login` sous l'utilisateur qui "
        "fait tourner relance",
    "others can read or write it (mode {mode}): refused; run `chmod 600 {path}` and consider the token leaked "
    "(sign in again)":
        "d'autres peuvent le lire ou l'écrire (mode {mode}) : refusé ; lancez `chmod 600 {path}` et tenez le "
        "jeton pour divulgué (reconnectez-vous)",
    "cannot write the token file: {why}": "impossible d'écrire le fichier de jetons : {why}",
    "token from {where} ({program})": "jeton fourni par {where} ({program})",
    "token from {path} (google, refreshed as needed)": "jeton tiré de {path} (google, renouvelé au besoin)",
    "token from {path} (microsoft, refreshed as needed)": "jeton tiré de {path} (microsoft, renouvelé au besoin)",
    "no access token (empty output)": "aucun jeton d'accès (sortie vide)",
    "what was printed is not one access token ({n} characters; expected one line of letters, digits and -._~+/=)":
        "ce qui a été affiché n'est pas un jeton d'accès ({n} caractères ; attendu : une ligne de lettres, "
        "chiffres et -._~+/=)",
    "{url} answered {status} with something that is not JSON": "{url} a répondu {status} avec autre chose que du JSON",
    "{program} failed (exit status {code}){said}": "{program} a échoué (code de sortie {code}){said}",
    "cannot reach {url}: {why}": "impossible de joindre {url} : {why}",
    "cannot use {url}: {why}": "impossible d'utiliser {url} : {why}",
    "no refresh token in the cache": "aucun jeton de renouvellement dans le cache",
    "{program}: no such program": "{program} : programme introuvable",
    "{program}: not executable": "{program} : non exécutable",
    "{program} did not finish within {n} s": "{program} n'a pas fini en {n} s",
    "not a token file of `relance login {provider}`: run it again":
        "pas un fichier de jetons de `relance login {provider}` : relancez-le",
    "google refused to refresh the token ({why}): run `relance login google` again":
        "google a refusé de renouveler le jeton ({why}) : relancez `relance login google`",
    "no signed-in account for {user}: run `relance login microsoft` and sign in as {user}":
        "aucun compte connecté pour {user} : lancez `relance login microsoft` et connectez-vous en tant que {user}",
    "microsoft refused to refresh the token ({why}): run `relance login microsoft` again":
        "microsoft a refusé de renouveler le jeton ({why}) : relancez `relance login microsoft`",
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


# Reasons are codes with parameters, rendered from one catalog: bot/reasons.py.


# Amounts, dates and stage names as a person reads them, in the same language as the words.

_LOCALES = {"fr": "fr_FR", "en": "en_GB"}
STAGES_FR = {"reminder": "relance", "second_reminder": "deuxième relance", "formal_notice": "mise en demeure"}


def money(amount: Any, currency: str = "EUR") -> str:
    """`5000.00` as `5 000,00 €` (fr) or `€5,000.00` (en)."""
    from babel.numbers import format_currency  # noqa: PLC0415 - babel only for what a person reads

    return str(format_currency(amount, currency, locale=_LOCALES[language()]))


# An amount at the start of what a person typed: grouped by spaces (`1 500,00`), or digits with `.`
# and `,` (`1,500.00`, `1500,5`), a currency after it or not; then the rest (a reason).
_AMOUNT = re.compile(r"\s*([-+]?(?:\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?|\d[\d.,]*))\s*(?:€|EUR\b)?\s*(.*)",
                     re.DOTALL | re.IGNORECASE)


def amount(text: str) -> Decimal:
    """An amount as a person types it, read in their language first: `1 500,00` and `1500,5` (fr),
    `1,500.00` (en); `1,500` is 1.5 in French and 1500 in English. Refused, saying what was
    expected, when it is not an amount, has more than two decimals, or is not above zero."""
    digits, rest = _split(text)
    if rest:
        raise _not_an_amount(text)
    return _amount(digits, text)


def amount_then(text: str) -> tuple[Decimal, str]:
    """The amount a person typed first, and what they wrote after it (`1 500,00 geste commercial`)."""
    digits, rest = _split(text)
    return _amount(digits, text), rest


def _split(text: str) -> tuple[str, str]:
    found = _AMOUNT.match(text)  # its last group takes the rest: a match is whole
    if found is None:
        raise _not_an_amount(text)
    return found.group(1), found.group(2).strip()


def _not_an_amount(text: str) -> Exception:
    return _refused(t("{value}: expected an amount such as 250.00", value=repr(text.strip())))


def number(value: Any) -> str:
    """A figure (a rate, a count of days) in the reader's language: `33,3` (fr), `33.3` (en)."""
    from babel.numbers import format_decimal  # noqa: PLC0415

    return str(format_decimal(Decimal(str(value)), "#,##0.#", locale=_LOCALES[language()]))


def figure(value: Any) -> str:
    """A decimal as it came (a classifier's margin, `0.059`), in the reader's format: `0,059` (fr).
    Text that is not a number is returned as it is."""
    from babel.numbers import format_decimal  # noqa: PLC0415

    try:
        return str(format_decimal(Decimal(str(value)), "#,##0.0##", locale=_LOCALES[language()]))
    except ArithmeticError:
        return str(value)


def percent(value: Any) -> str:
    """A share (`0.2`) as a person reads it: `20 %` (fr), `20%` (en)."""
    from babel.numbers import format_percent  # noqa: PLC0415

    return str(format_percent(Decimal(str(value)), locale=_LOCALES[language()]))


def amount_typed(value: Decimal) -> str:
    """An amount as `amount` reads it back, to prefill a prompt: `12 500,50` (fr), `12,500.50` (en)."""
    from babel.numbers import format_decimal  # noqa: PLC0415

    return str(format_decimal(value, "#,##0.00", locale=_LOCALES[language()]))


def _refused(message: str) -> Exception:
    from bot.errors import RelanceError  # noqa: PLC0415 - bot.errors reads its messages from here

    return RelanceError(message)


def _amount(digits: str, text: str) -> Decimal:
    from babel.numbers import NumberFormatError, parse_decimal  # noqa: PLC0415

    grouped = re.sub(r"[ \u00a0\u202f]", "\u202f", digits)
    for lang in dict.fromkeys((language(), "fr", "en")):
        try:
            value = parse_decimal(grouped if lang == "fr" else grouped.replace("\u202f", ","),
                                  locale=_LOCALES[lang], strict=True)
        except NumberFormatError:
            continue
        if value <= 0:
            raise _refused(t("{value}: expected an amount above zero", value=repr(text.strip())))
        if value != value.quantize(Decimal("0.01")):
            raise _refused(t("{value}: expected an amount with two decimals at most", value=repr(text.strip())))
        return value.quantize(Decimal("0.01"))
    raise _not_an_amount(text)


def day(value: Any) -> str:
    """A date, short and unambiguous: `6 avr. 2027` / `6 Apr 2027`."""
    from babel.dates import format_date  # noqa: PLC0415

    return str(format_date(value, "medium", locale=_LOCALES[language()])) if value else ""


def moment(value: Any, zone: Any) -> str:
    """A stored UTC time in the company's zone, to the minute."""
    from babel.dates import format_datetime  # noqa: PLC0415

    if not value:
        return ""
    return str(format_datetime(value, "short" if language() == "fr" else "dd MMM yyyy HH:mm", tzinfo=zone,
                               locale=_LOCALES[language()]))


def stage(name: str | None, labels: dict[str, tuple[str, str]] | None = None) -> str:
    """A stage's name as a person reads it: its label in the config (`label_fr`, `label_en`: see
    `stage_labels`), else the shipped stages' names translated, else the name as configured."""
    if not name:
        return ""
    fr, en = (labels or {}).get(name, ("", ""))
    if language() == "fr":
        return fr or STAGES_FR.get(name, name.replace("_", " "))
    return en or name.replace("_", " ")


def stage_labels(stages: Any) -> dict[str, tuple[str, str]]:
    """The labels of the configured stages, for `stage`."""
    return {s.name: (s.label_fr, s.label_en) for s in stages}


FR.update({
    # The triage UI (tui/): keys, columns, prompts and the lines that confirm a decision.
    "STAKE": "ENJEU", "PAGE": "PAGE", "AMOUNT": "MONTANT", "PAID": "PAYÉ", "DUE DATE": "ÉCHÉANCE",
    "[b]settled per week[/b], {n} weeks from {day}: {total} in all, {last} the last week":
        "[b]soldé par semaine[/b], {n} semaines depuis le {day} : {total} en tout, {last} la dernière semaine",
    "[b]replies per week[/b], {n} weeks from {day}: {total} in all, {last} the last week":
        "[b]réponses par semaine[/b], {n} semaines depuis le {day} : {total} en tout, {last} la dernière semaine",
    "Queue": "À décider", "Invoices": "Factures", "KPIs": "Indicateurs", "held": "bloquée",
    "Open": "Ouvrir", "Confirm": "Confirmer", "Mark paid": "Paiement", "Accept plan": "Accepter l'échéancier",
    "Reject plan": "Refuser l'échéancier", "Settle dispute": "Régler le litige", "New address": "Nouvelle adresse",
    "Pause": "Pause", "Dismiss": "Écarter", "Ignore sender": "Ignorer l'expéditeur", "Undo": "Annuler",
    "Search": "Chercher", "Filter": "Filtrer", "Select": "Sélectionner", "Help": "Aide", "Next page": "Page suivante",
    "Previous page": "Page précédente", "Sort": "Trier", "Original": "Original", "Back": "Retour",
    "Save attachment": "Enregistrer la pièce jointe",
    "{first}–{last} of {total}": "{first}–{last} sur {total}",
    "nothing waits for a person": "rien n'attend de décision",
    # The line above the footer: the undo key first, so that 80 columns always show it.
    "u: undo · {what} · by {actor}": "u : annuler · {what} · par {actor}",
    "amount received for {number} (due {due}); Enter; Escape cancels":
        "montant reçu pour {number} ({due} dû) ; Entrée ; Échap annule",
    "instalments for {number}: amount date, amount date…; Enter; Escape cancels":
        "échéances de {number} : montant date, montant date… ; Entrée ; Échap annule",
    "why the plan is declined (kept in the history); Enter; Escape cancels":
        "pourquoi l'échéancier est refusé (gardé dans l'historique) ; Entrée ; Échap annule",
    "dispute on {number}: resume, cancel, or a credit note amount; then why; Enter":
        "litige sur {number} : resume (reprendre), cancel (annuler) ou le montant d'un avoir ; puis le motif ; Entrée",
    "new address for {number} (was {email}); Enter; Escape cancels":
        "nouvelle adresse pour {number} (avant : {email}) ; Entrée ; Échap annule",
    "pause {number} until YYYY-MM-DD, then why; Enter; Escape cancels":
        "pause de {number} jusqu'au AAAA-MM-JJ, puis le motif ; Entrée ; Échap annule",
    "search a number, a client or a sender; Enter; empty clears":
        "chercher un numéro, un client ou un expéditeur ; Entrée ; vide efface",
    "filter: kind=… client=… lang=fr|en box=FOLDER; Enter; empty clears":
        "filtre : kind=… client=… lang=fr|en box=DOSSIER ; Entrée ; vide efface",
    "this item concerns no single invoice: open it (Enter) or assign it (a)":
        "cet élément ne concerne pas une seule facture : ouvrez-le (Entrée) ou rattachez-le (a)",
    "not a message: nothing to read or dismiss": "pas un message : rien à lire ni à écarter",
    "{value}: expected an amount such as 250.00": "{value} : attendu : un montant comme 250,00",
    "{address} is the address of {client}: a client cannot be ignored; dismiss this message instead (d)":
        "{address} est l'adresse de {client} : un client ne peut pas être ignoré ; classez plutôt ce message (d)",
    "{amount}: expected an amount greater than zero": "{amount} : attendu : un montant supérieur à zéro",
    "{amount}: more than the {due} due on {number}": "{amount} : plus que les {due} dus sur {number}",
    "credit note of {amount}": "avoir de {amount}",
    "{number}: {what} recorded, {rest}": "{number} : {what} enregistré ; {rest}",
    "nothing left due": "plus rien n'est dû",
    "{due} still due": "reste dû : {due}",
    "{number} is not disputed ({state}): no dispute to settle":
        "{number} n'est pas en litige ({state}) : aucun litige à régler",
    "{actor} changed the same invoices while decision #{id} ran ({kind}): its undo would undo theirs too; nothing "
    "undone, change them by hand": "{actor} a modifié les mêmes factures pendant la décision n° {id} ({kind}) : "
    "l'annuler annulerait aussi sa modification ; rien n'est annulé, corrigez-les à la main",
    "{number} is paid: there is nothing to pause": "{number} est payée : il n'y a rien à mettre en pause",
    "{number} is paid: there is nothing to resume": "{number} est payée : il n'y a rien à reprendre",
    "{day}: that is not in the future": "{day} : cette date n'est pas à venir",
    "{number} paused until {day}": "{number} en pause jusqu'au {day}",
    "{number} paused until resumed": "{number} en pause jusqu'à la reprise",
    "{number} resumed": "{number} reprise",
    "#{id} was not waiting for a person: nothing changed": "n° {id} n'attendait personne : rien n'a changé",
    "#{id} closed": "n° {id} classé",
    "{numbers}: new address {email}": "{numbers} : nouvelle adresse {email}",
    "a pause says why: the date, then the reason": "une pause dit pourquoi : la date, puis la raison",
    "{day}: more than a year ahead; a longer hold is a dispute or a plan":
        "{day} : plus d'un an à l'avance ; une attente plus longue est un litige ou un échéancier",
    "{value}: expected key=value (kind, client, lang, box)": "{value} : attendu : clé=valeur (kind, client, lang, box)",
    "lang={value}: expected fr or en": "lang={value} : attendu : fr ou en",
    "#{id} {kind} -> {numbers}: {status}": "n° {id} {kind} -> {numbers} : {status}",
    "#{id} labelled {kind}": "n° {id} lu comme {kind}",
    "(read as {kind})": "(le bot avait lu {kind})",
    "for {numbers}": "pour {numbers}",
    "the ladder goes on for {numbers}": "les relances reprennent pour {numbers}",
    "not due yet": "pas encore échues",
    "{days} days late": "{days} jours de retard",
    "nothing to undo in this session": "rien à annuler dans cette session",
    "{value}: expected a plain email address such as compta@client.example ({why})":
        "{value} : attendu : une adresse électronique simple comme compta@client.example ({why})",
    "(--until YYYY-MM-DD)": "(--until AAAA-MM-JJ)",
    "message #{id}: no date to come was read for this promise: give its date":
        "message n° {id} : aucune date à venir n'a été lue pour cette promesse : donnez-la",
    "{value}: expected an amount above zero": "{value} : attendu : un montant supérieur à zéro",
    "{value}: expected an amount with two decimals at most": "{value} : attendu : un montant à deux décimales au plus",
    "{value}: expected a date as YYYY-MM-DD, then why": "{value} : attendu : une date AAAA-MM-JJ, puis le motif",
    "{n} selected": "{n} sélectionné(s)",
    "reading: {kind}, confidence {confidence}": "lecture : {kind}, confiance {confidence}",
    "evidence:": "indices :", "attachments:": "pièces jointes :", "timeline:": "chronologie :",
    "saved to {path}": "enregistré dans {path}",
    "{number} was changed meanwhile ({kind} by {actor}): nothing done, read it again":
        "{number} a changé entre-temps ({kind} par {actor}) : rien n'est fait, relisez",
    "message #{id} was decided meanwhile: nothing done, read it again":
        "le message n°{id} a été traité entre-temps : rien n'est fait, relisez",
    "nothing to undo": "rien à annuler", "no decision #{id}": "pas de décision n°{id}",
    "decision #{id} was already undone": "la décision n°{id} est déjà annulée",
    "undone: {what}": "annulé : {what}",
    "changed again since (by the daemon or another person): not undone":
        "modifié depuis (par le démon ou une autre personne) : pas annulé",
    "{value}: expected an amount and a date (400.00 2027-05-01)":
        "{value} : attendu : un montant et une date (400,00 2027-05-01)",
    "a plan needs at least one instalment": "un échéancier demande au moins une échéance",
    "each instalment needs an amount and a date": "chaque échéance demande un montant et une date",
    "instalment of {day}: the dates must be in the future and in order":
        "échéance du {day} : les dates doivent être à venir et dans l'ordre",
    "the instalments add up to {total}, {due} is due": "les échéances font {total}, {due} est dû",
    "{number} is paid: no plan to accept": "{number} est payée : pas d'échéancier à accepter",
    "{number} is paid: no plan to reject": "{number} est payée : pas d'échéancier à refuser",
    "{number}: plan of {n} instalment(s) accepted, next on {day}":
        "{number} : échéancier de {n} échéance(s) accepté, prochaine le {day}",
    "{number}: plan declined, the ladder goes on": "{number} : échéancier refusé, l'escalade reprend",
    "{value}: expected one of {choices}": "{value} : attendu : l'un de {choices}",
    "a credit note needs its amount": "un avoir demande son montant",
    "{n} message(s) dismissed": "{n} message(s) écarté(s)",
    "{address} ignored ({n} message(s) dismissed)": "{address} ignoré ({n} message(s) écarté(s))",
    "DSO (days)": "DSO (jours)", "open receivables": "encours", "recovery rate": "taux de recouvrement",
    "reply rate": "taux de réponse", "days to pay after the first reminder": "jours pour payer après la 1re relance",
    "amicable conversion": "recouvrement amiable", "cost of recovery": "coût du recouvrement",
    "recovered per stage": "recouvré par étape", "ageing of open receivables": "ancienneté de l'encours",
    "waiting per kind": "en attente par nature",
    "Keys": "Touches", "Escape closes": "Échap ferme",
    "invoice number(s), or part of one or of a client's name and Tab; Enter; Escape cancels":
        "numéro(s) de facture, ou une partie d'un numéro ou du nom d'un client et Tab ; Entrée ; Échap annule",
    "Reminder": "Relance", "Reply": "Réponse", "Event": "Événement",
    "Reminder as sent": "Relance telle qu'envoyée", "no reminder sent yet": "aucune relance envoyée",
    # Event kinds as the timeline shows them.
    "imported": "importée", "released": "libérée", "resumed": "reprise",
    "payment": "paiement", "credit_note": "avoir", "contact_changed": "contact changé",
    "plan_accepted": "échéancier accepté", "plan_ended": "échéancier terminé", "undone": "annulé",
    "triage_closed": "traité", "message_assigned": "rattaché", "reminder_sent": "relance envoyée",
    "cancel": "facture annulée", "credit": "avoir",
})

# Codes (kinds, states, event kinds) in words, for screens; the command line's tables keep the codes
# in English, as scripts read them.
WORDS_EN = {
    "payment_claim": "payment claimed", "promise_to_pay": "promise to pay", "payment_plan": "payment plan proposed",
    "auto_reply": "auto-reply", "bounce": "undelivered", "human_reply": "reply", "fix_contact": "fix the contact",
    "message_assigned": "assigned", "triage_closed": "decided", "contact_changed": "contact changed",
    "plan_accepted": "plan accepted", "plan_ended": "plan ended", "credit_note": "credit note",
    "reminder_sent": "reminder sent", "cancel": "invoice cancelled", "credit": "credit note",
    "fix_data": "fix the data",
}


def words(code: str) -> str:
    """A code as a person reads it, in the user's language."""
    if language() == "fr":
        return FR.get(code, code.replace("_", " "))
    return WORDS_EN.get(code, code.replace("_", " "))


FR.update({
    # Replies to clients (bot/replies.py) and their keys in the triage UI.
    "no message #{id}": "pas de message n°{id}", "no invoice {number}": "pas de facture {number}",
    "sending": "en cours d'envoi", "cancelled": "annulé", "pending": "en attente", "failed": "échoué",
    "message #{id} concerns no invoice: assign it first (a)":
        "le message n°{id} ne concerne aucune facture : rattachez-le d'abord (a)",
    "message #{id}: its sender {address} is not an address a reply can go to":
        "message n°{id} : son expéditeur {address} n'est pas une adresse à laquelle répondre",
    "message #{id}: its Reply-To {address} is not an address a reply can go to":
        "message n°{id} : son adresse de réponse (Reply-To) {address} n'est pas une adresse à laquelle répondre",
    "the reply is empty: nothing queued": "la réponse est vide : rien n'est mis en file",
    "the reply is {n} characters long (at most {max})": "la réponse fait {n} caractères (au plus {max})",
    "the reply cannot be written: {why}": "la réponse ne peut pas être écrite : {why}",
    "reply to {to} about {numbers} queued: the next pass sends it (undo cancels it until then)":
        "réponse à {to} sur {numbers} mise en file : le prochain passage l'envoie (annuler la retire d'ici là)",
    "the reply to {to} is already {status}: a mail that went out cannot be undone; nothing undone":
        "la réponse à {to} est déjà {status} : un courriel parti ne peut pas être annulé ; rien n'est annulé",
    "the editor {editor} exited with {code}: nothing queued":
        "l'éditeur {editor} s'est terminé avec le code {code} : rien n'est mis en file",
    "sent: a mail that went out cannot be undone": "envoyé : un courriel parti ne peut pas être annulé",
    "Reply to the client": "Répondre au client", "Queue the reply": "Mettre la réponse en file",
    "Without a reply": "Sans réponse", "Edit in $EDITOR": "Modifier dans $EDITOR", "Template": "Modèle",
    "reply_queued": "réponse en file", "reply_sent": "réponse envoyée", "reply_cancelled": "réponse annulée",
    "reply_failed": "réponse non envoyée",
    "ack_claim": "accuser réception d'un paiement annoncé", "accept_plan": "accepter l'échéancier",
    "decline_plan": "refuser l'échéancier", "answer_dispute": "répondre à une contestation",
    "reply to {to} · {subject}": "réponse à {to} · {subject}",
    "Ctrl+S queues the reply · Ctrl+E opens $EDITOR · Escape cancels":
        "Ctrl+S met la réponse en file · Ctrl+E ouvre $EDITOR · Échap annule",
    "Ctrl+S decides and queues the reply · Ctrl+W decides without a reply · Ctrl+E opens $EDITOR · Escape cancels":
        "Ctrl+S décide et met la réponse en file · Ctrl+W décide sans réponse · Ctrl+E ouvre $EDITOR · "
        "Échap annule",
    "a reply answers a message: open one from the queue": "une réponse répond à un message : ouvrez-en un dans la file",
})
WORDS_EN.update({"reply_queued": "reply queued", "reply_sent": "reply sent", "reply_cancelled": "reply cancelled",
                 "reply_failed": "reply not sent", "ack_claim": "acknowledge a payment claim",
                 "accept_plan": "accept the plan", "decline_plan": "decline the plan",
                 "answer_dispute": "answer a dispute"})
