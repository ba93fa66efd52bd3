"""From raw bytes to what the rules need: headers, the text the person wrote, dates, references.

Parsing uses mail-parser (charsets, HTML-only mail, attachments); quoted history is removed by
structure first (HTML quote containers), then by mail-parser-reply, then by a few rules of ours
for what it misses (phone signatures, Outlook header blocks, wrapped French attribution lines)."""

from __future__ import annotations

import calendar
import contextlib
import email
import functools
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

import mailparser
from mailparser.dates import parse_mail_date
from mailparser_reply.parser import EmailMessage

from rules.classify import Kind, MailFacts, Understanding, classify, dated, reading_of
from rules.intent import Model, Reading, read_together, replaced
from rules.plan import instalments
from rules.when import relative_dates

_QUOTE_CONTAINERS = re.compile(
    r'<(div|blockquote)[^>]*(class="[^"]*(gmail_quote|moz-cite-prefix|yahoo_quoted|OutlookMessageHeader)[^"]*"'
    r'|id="(divRplyFwdMsg|appendonsend|x_divRplyFwdMsg|mail-editor-reference-message-container)")'
    r'|<blockquote[^>]*type="cite"|<hr[^>]*id="stopSpelling"', re.IGNORECASE)
_OUR_IDS = re.compile(rb"<relance\.[A-Za-z0-9.\-]+@[A-Za-z0-9.\-]+>")  # bot/compose.py's Message-IDs
_TAGS = re.compile(r"<(script|style)[^>]*>.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_BREAKS = re.compile(r"<(br|/p|/div|/tr|/li|/h\d)[^>]*>", re.IGNORECASE)
_SPACES = (("\u00a0", " "), ("\u202f", " "), ("\u2007", " "))
_CUT = re.compile(
    r"^\s*(?:"
    r"[*_]*-{2,}\s*(?:Original Message|Message d'origine|Message original|Forwarded message|Message transféré)"
    r"\s*-{2,}[*_]*"
    r"|_{5,}"
    r"|(?:De|From)\s*:\s.*\n\s*(?:Envoyé|Sent|Date|À|To)\s*:"
    r"|-{2,}\s*[^\W\d_][^\n-]{2,40}\s*-{2,}\s*$"  # any "-----Ursprüngliche Nachricht-----"
    r"|={3,}\s*$"
    r"|Le\s(?:(?!\n\s*\n).){0,300}?a\s+écrit\s*:"  # wraps over two lines at most, never a paragraph
    r"|On\s(?:(?!\n\s*\n).){0,300}?wrote\s*:?\s*$"
    r"|At\s[^\n]{0,80}\bwrote\s*:\s*$"  # Eudora and old Outlook: "At 6/16/2016 08:32 PM, you wrote:"
    r"|(?:Envoyé|Envoye|Sent|Gesendet)\s+(?:de|depuis|from|à partir de|von)\s+(?:mon|my|Outlook|mein)\b.*"
    r"|Get Outlook for \w+.*"
    r"|[^\n]{0,120}<[^<>\s@]+@[^<>\s@]+>[^\n]{0,60}:\s*$"  # an attribution line: "..., Name <a@b.c>:"
    r"|[^\n]{0,120}<\s*\n[^<>\s@]+@[^<>\s@]+>[^\n]{0,60}:\s*$"  # the same, wrapped before the address
    # "... skrev Name <a@b.c" + ">:" wrapped to a line of its own, which starts with ">" and went with the quotes
    r"|[^\n]{0,120}\b(?:wrote|a écrit|schrieb|skrev|kirjoitti|escreveu|schreef)\s[^\n]{0,80}"
    r"<[^<>\s@]+@[^<>\s@]+(?:>\s*:)?\s*$"
    # an attribution wrapped over two lines (a line ending a sentence is the reply's own, not the first half);
    # first, without backtracking, that the next line has an address and one of the words after it:
    # the rest alone, tried at every line, was nine tenths of the time of this whole pattern
    r"|(?=[^\n]*+\n[^@\n]*+@[^\n]*?(?:wrote|a écrit|schrieb|scrisse|skrev|napisał\(a\)|kirjoitti|ha scritto"
    r"|schreef|escreveu))"
    r"(?:[^\n]{0,159}[^\n.!?\s])?\n(?=[^\n]*@)[^\n]{0,40}<?[^<>\s@]+@[^<>\s@]+>?[^\n]{0,40}"
    r"(?:wrote|a écrit|schrieb|scrisse|skrev|"
    r"napisał\(a\)|kirjoitti|ha scritto|schreef|escreveu)\s*:?\s*$"
    r"|(?:Von|Van|Da|De|Fra|Od|From)\s*:\s.*\n\s*(?:Gesendet|Verzonden|Inviato|Envoyé|Sendt|Wysłane|Sent|Date|Dato)\s*:"
    r"|--\s*$"
    r")", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_BULLETS = re.compile(r"^[ \t]*[-*][ \t]+\S.*\n[ \t]*[-*][ \t]+\S.*(?:\n[ \t]*[-*][ \t]+\S.*)*", re.MULTILINE)
_TRAILING_RULE = re.compile(r"(?:\n[ \t]*[-_=*]{5,}[ \t]*)+\s*$")
_BULLET = re.compile(r"^([ \t]*)[-*][ \t]+", re.MULTILINE)
# mail-parser-reply's languages: French and English first; the other European languages it knows,
# for clients across the EU.
_REPLY_LANGUAGES = ("fr", "en", "de", "it", "es", "nl", "pl", "da", "sv", "cs")
_NEVER = re.compile(r"(?!)")
_HEADER_LIKE = re.compile(r":[ \t]*$|^[>* \t]*[^\W\d_]\w*(?: \w+)?[ \t]*:|^[ \t>]*-{5,}", re.MULTILINE)
# The words without which another language's reply header cannot match ("Am … schrieb …:",
# "Von: …", "Il … ha scritto:", "Da: …"): its part of the header pattern is left out without them.
_HEADER_WORDS = {
    "de": ("schrieb", "von", "gesendet", "betreff"), "it": ("scritto", "da", "inviato", "oggetto"),
    "es": ("escribió", "enviado", "asunto", "para"), "nl": ("schreef", "van", "verzonden", "onderwerp"),
    "pl": ("napisał", "nadesłał", "od", "wysłano", "temat"), "da": ("skrev", "fra", "sendt", "emne", "oprindelig"),
    "sv": ("skrev", "från", "skickat", "ämne"), "cs": ("napsal", "od", "odesláno", "předmět"),
}
_HEADER_WORD = re.compile(r"\b(" + "|".join(sorted({w for ws in _HEADER_WORDS.values() for w in ws})) + r")\b",
                          re.IGNORECASE)


def _header_languages(text: str) -> tuple[str, ...] | None:
    """The languages whose reply headers may be in `text`; None when no line looks like a header
    at all (every header mail-parser-reply knows is a line ending with a colon, "Le … a écrit :",
    lines opening with a word or two and a colon, "De : …", or a "-----" line)."""
    if _HEADER_LIKE.search(text) is None:
        return None
    words = {m.lower() for m in _HEADER_WORD.findall(text)}
    return ("fr", "en", *(lang for lang, ws in _HEADER_WORDS.items() if words.intersection(ws)))


@functools.cache
def _reply_regexes(header_languages: tuple[str, ...] | None) -> dict[str, Any]:
    """mail-parser-reply builds and compiles its patterns for every message; built once here and
    handed to each message, they cost nothing after the first. Its ten-language header pattern took
    0.3 ms a message: only the languages a message may hold are in it (see `_header_languages`)."""
    every = EmailMessage(text="", languages=list(_REPLY_LANGUAGES))
    header = EmailMessage(text="", languages=list(header_languages)).HEADER_REGEX if header_languages else _NEVER
    return {"_header_regex": header, "_signature_regex": every.SIGNATURE_REGEX,
            "_disclaimers_regex": every.DISCLAIMERS_REGEX}


@dataclass(frozen=True)
class Parsed:
    message_id: str
    sender: str
    sender_name: str
    recipients: tuple[str, ...]
    subject: str
    received_at: datetime | None
    refs: tuple[str, ...]  # In-Reply-To then References, deduplicated
    facts: MailFacts


def html_to_text(body: str) -> str:
    cut = _QUOTE_CONTAINERS.search(body)
    if cut:
        body = body[:cut.start()]
    return html.unescape(_TAGS.sub("", _BREAKS.sub("\n", body)))


def strip_quotes(text: str) -> str:
    """What the person wrote: quoted history, forwarded blocks and signature removed."""
    text = replaced(text.replace("\r\n", "\n"), _SPACES)
    text = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))
    # A list the person wrote ("- FA-2027-0456", "* 15 May: 800 €") is the reply, not a signature:
    # mail-parser-reply takes a line opening with a dash for one, so the bullets become "•".
    text = _BULLETS.sub(lambda m: _BULLET.sub(r"\1• ", m.group(0)), text)
    cut = _CUT.search(text)
    if cut and text[:cut.start()].strip():
        text = text[:cut.start()]
    elif cut:  # bottom-posting: the reply comes after the quoted text; drop the attribution line only
        text = text[:cut.start()] + text[cut.end():]
    try:
        regexes = _reply_regexes(_header_languages(text))
        reply = EmailMessage(text=text, languages=list(_REPLY_LANGUAGES), **regexes).read()
        body = reply.replies[0].body if reply.replies else text
    except Exception:
        body = text
    body = _TRAILING_RULE.sub("", body or text)  # a separator line left above what was cut
    return re.sub(r"\n{3,}", "\n\n", body).strip()


_FORWARD_SUBJECT = re.compile(r"^\s*(?:(?:re|aw|sv)\s*:\s*)*(?:tr|fw|fwd|wg|transf)\s*:", re.IGNORECASE)
# A forward's own markers; and the separators replies use too, which count under a "TR:"/"Fwd:" subject.
_FORWARD_MARK = re.compile(
    r"^[ \t>]*-{2,}\s*(?:Forwarded message|Message transféré)\s*-{2,}[ \t]*$"
    r"|^[ \t>]*(?:Begin forwarded message|Début du message (?:ré)?(?:expédié|transféré))\s*:[ \t]*$",
    re.IGNORECASE | re.MULTILINE)
_SEPARATOR = re.compile(
    r"^[ \t>]*-{2,}\s*(?:Original Message|Message d'origine|Message original)\s*-{2,}[ \t]*$"
    r"|^[ \t>]*(?:De|From)\s*:[^\n]*\n[ \t>]*(?:Envoyé|Sent|Date)\s*:", re.IGNORECASE | re.MULTILINE)
_FORWARD_HEADER = re.compile(r"^(?:De|From|Date|Envoyé|Sent|À|A|To|Cc|Objet|Subject|Reply-To)\s*:.*$",
                             re.IGNORECASE)


def written(text: str, subject: str) -> str:
    """What the sender wrote. A forward ("TR:", "Fwd:") brings its content along: the bank's
    confirmation, the bounce, the client's message a colleague passes on are what it is about, so
    the forwarded part is kept (its header block and its own quotes removed) after the sender's words."""
    mark = _FORWARD_MARK.search(text) or (_SEPARATOR.search(text) if _FORWARD_SUBJECT.match(subject) else None)
    if mark is None:
        return strip_quotes(text)
    own = strip_quotes(text[:mark.start()]) if text[:mark.start()].strip() else ""
    lines = [line.lstrip("> \t") for line in text[mark.start():].replace("\r\n", "\n").split("\n")][:200]
    if not _FORWARD_HEADER.match(lines[0].strip()):
        lines.pop(0)  # the "---- Forwarded message ----" line itself
    while lines and (not lines[0].strip() or _FORWARD_HEADER.match(lines[0].strip())):
        lines.pop(0)
    part = strip_quotes("\n".join(lines))[:4000]
    return f"{own}\n\n{part}".strip() if part else own


def _header_map(msg: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in msg.items():
        out.setdefault(k.lower(), str(v)[:2000])
    return out


def parse(raw: bytes) -> Parsed:
    """Parse `raw`; raises ValueError when it is not a readable message at all."""
    return _parse(raw)[0]


@dataclass(frozen=True)
class _Mail:
    """What the parsing needs of a message, from mail-parser or, where it fails, the standard library."""

    message: Message
    text_plain: list[str]
    text_html: list[str]
    subject: str
    attachments: list[dict[str, Any]]
    date: datetime | None


def _stdlib_mail(raw: bytes) -> _Mail:
    """The standard library's reading, for the odd message mail-parser cannot take (a real bounce
    with a header it trips on): the text parts, decoded with their charset, else latin-1."""
    msg = email.message_from_bytes(raw)
    plain: list[str] = []
    page: list[str] = []
    files: list[dict[str, Any]] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name:
            files.append({"filename": str(name)})
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or part.get_content_maintype() != "text":
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            body = payload.decode(charset, "replace")
        except LookupError:
            body = payload.decode("latin-1")
        (page if part.get_content_subtype() == "html" else plain).append(body)
    subject = _subject(msg, str(msg.get("subject", "")), raw)
    try:
        sent: datetime | None = parsedate_to_datetime(str(msg.get("date", "")))
    except (TypeError, ValueError, IndexError):
        sent = None
    return _Mail(msg, plain, page, subject, files, sent)


def _subject(msg: Message, fallback: str, raw_message: bytes = b"") -> str:
    """The subject as the standard library decodes it: an encoded word folded onto the next line
    keeps the space after it ("facture FA-2027-0412 — ACME SAS", where mail-parser writes "—ACME").

    With the fallbacks mail clients use, so that no letter is lost ("Rgl" for "Règl"): an encoded
    word whose bytes are not in its declared (or a made-up) charset is read as UTF-8, then
    Windows-1252; raw 8-bit bytes (no encoded word) as UTF-8 (RFC 6532), then Windows-1252."""
    raw = msg.get("subject")
    if raw is None:
        return fallback
    text = str(raw)
    eight_bit = _RAW_SUBJECT.search(raw_message[:65536])  # a parser may have replaced raw bytes by U+FFFD
    if eight_bit is not None and not eight_bit.group(1).isascii():
        text = _decode_with_fallbacks(eight_bit.group(1), None)
    if not text.isascii() and "=?" not in text:
        return " ".join(text.split())
    try:
        parts = [(d, cs) if cs is None or isinstance(d, str) else (_decode_with_fallbacks(d, cs).encode(), "utf-8")
                 for d, cs in decode_header(text)]
        return " ".join(str(make_header(parts)).split())
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return fallback


LIGHTEN_FROM = 1_000_000  # bytes: smaller messages (every reply people write) are parsed whole
# The headers of a part that is neither text nor a message nor a container (an attachment), up to
# the blank line before its body.
_ATTACHMENT_HEAD = re.compile(
    rb"^Content-Type:[ \t]*+(?!text/|message/|multipart/)[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n",
    re.IGNORECASE | re.MULTILINE)


def _without_attachment_bytes(raw: bytes) -> bytes:
    """A large message as the understanding reads it: every part's headers (an attachment's name is
    a cue) and the text parts, without the attachments' bodies, which nothing reads (mail-parser
    decoding a 40 MB scan took 225 MB more than the message). A body ends at the next line that
    starts with "--" (its part's boundary); cutting less than that is harmless."""
    kept: list[bytes] = []
    pos = 0
    for head in _ATTACHMENT_HEAD.finditer(raw):
        if head.start() < pos:  # inside a body already left out
            continue
        kept.append(raw[pos:head.end()])
        boundary = raw.find(b"\n--", head.end())
        pos = len(raw) if boundary < 0 else boundary + 1
    kept.append(raw[pos:])
    return b"".join(kept)


_RAW_SUBJECT = re.compile(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _decode_with_fallbacks(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8", "cp1252"):
        if candidate:
            try:
                return data.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("latin-1")  # every byte is a latin-1 character: nothing is dropped


# The headers mail servers add on the way, which nothing here reads: the hops, DKIM and ARC
# signatures, authentication results. On mail from a big provider they are 3 KB or more, and
# mail-parser parses every Received line; the stored message keeps them all.
_TRANSPORT = re.compile(
    rb"^(?:(?:x-)?received|(?:x-google-)?dkim-signature|arc-[a-z-]+|authentication-results|received-spf"
    rb"|x-gm-message-state|x-google-smtp-source|x-ms-exchange-antispam[a-z-]*|x-microsoft-antispam[a-z-]*"
    rb"|x-forefront-antispam-report[a-z-]*)[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*", re.IGNORECASE | re.MULTILINE)
_HEADERS_END = re.compile(rb"\r?\n\r?\n")


def _without_transport(raw: bytes) -> bytes:
    """`raw` without the transport headers of its top-level header block (see `_TRANSPORT`), each
    with its folded lines."""
    end = _HEADERS_END.search(raw, 0, 200_000)
    if end is None:
        return raw
    return _TRANSPORT.sub(b"", raw[:end.end()]) + raw[end.end():]


def _mail(raw: bytes) -> _Mail:
    """mail-parser reads the body (its parts, their charsets, the attachments); the standard library
    the header block, which mail-parser would otherwise parse in full (every address header with
    its own parser: a quarter of its time) for what `_parse` reads again anyway."""
    if len(raw) > LIGHTEN_FROM:
        raw = _without_attachment_bytes(raw)
    raw = _without_transport(raw)
    try:
        head = BytesHeaderParser(policy=compat32).parsebytes(raw)
        msg = mailparser.parse_from_bytes(_mime_only(raw))
        message = msg.message
        for name in dict.fromkeys(message.keys()):
            del message[name]
        for name, value in head.raw_items():  # the whole header block, as written, in its order
            message.set_raw(name, value)
        date = parse_mail_date(head.get_all("date", [None])[0]).value  # as mail-parser reads a Date
        return _Mail(message, msg.text_plain, msg.text_html, _subject(message, str(head.get("subject", "")), raw),
                     msg.attachments, date if isinstance(date, datetime) else None)
    except Exception:  # mail-parser's own bug on an odd message: the standard library still reads it
        return _stdlib_mail(raw)


# A header field as the standard library's parser takes one (its name: printable ASCII but the
# colon, no space), with its folded lines.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]*):[^\n]*\n(?:[ \t][^\n]*\n)*")


def _mime_only(raw: bytes) -> bytes:
    """`raw` with only the headers of its top-level block that tell how the body is made
    (Content-*, MIME-Version). From a line that is not a header on (a malformed block, where the
    standard library starts the body), everything is kept as it is."""
    end = _HEADERS_END.search(raw, 0, 200_000)
    if end is None:
        return raw
    cut = end.start() + (2 if raw.startswith(b"\r\n", end.start()) else 1)  # after the last header's line end
    kept: list[bytes] = []
    pos = raw.find(b"\n") + 1 if raw.startswith(b"From ") else 0  # an mbox "From " line: not a header
    while pos < cut and (field := _FIELD.match(raw, pos, cut)) is not None:
        if field.group(1).lower().startswith((b"content-", b"mime-version")):
            kept.append(field.group(0))
        pos = field.end()
    return b"".join(kept) + raw[pos:]


def _parse(raw: bytes) -> tuple[Parsed, Message]:
    mail = _mail(raw)
    msg = mail.message  # the stdlib message mail-parser already built: no second parse
    headers = _header_map(msg)
    text = "\n".join(mail.text_plain).strip()
    if not text and mail.text_html:
        text = html_to_text("\n".join(mail.text_html))
    refs: list[str] = []
    for name in ("in-reply-to", "references"):
        for ref in re.findall(r"<[^<>\s]+>", headers.get(name, ""))[:200]:  # thousands of References: cap
            if ref not in refs:
                refs.append(ref)
    # Our own Message-IDs anywhere else: the original attached to a bounce (message/rfc822,
    # text/rfc822-headers), or quoted headers of a forwarded reminder.
    for ref in _OUR_IDS.findall(raw[:2_000_000])[:50]:
        text_ref = ref.decode("ascii", "replace")
        if text_ref not in refs:
            refs.append(text_ref)
    name, sender = parseaddr(headers.get("from", ""))
    if "=?" in name:  # an encoded word ("=?utf-8?q?Andr=C3=A9?= Leroux"): the name as the person wrote it
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
            name = " ".join(str(make_header(decode_header(name))).split())
    recipients = tuple(a.lower() for _, a in getaddresses([headers.get(h, "") for h in ("to", "cc", "delivered-to")])
                       if a)
    ctype = msg.get_content_type()
    facts = MailFacts(
        sender=sender.lower(), subject=mail.subject or "", text=written(text, mail.subject or ""), headers=headers,
        content_type=ctype, report_type=str(msg.get_param("report-type") or "") if ctype == "multipart/report" else "",
        attachments=tuple(a.get("filename") or "" for a in mail.attachments),
    )
    received = mail.date
    return Parsed(message_id=headers.get("message-id", "").strip(), sender=sender.lower(), sender_name=name,
                  recipients=recipients, subject=mail.subject or "", received_at=received, refs=tuple(refs),
                  facts=facts), msg


_MONTHS = (r"janv\w*|f[ée]vr\w*|mars|avr\w*|mai|juin|juil\w*|ao[ûu]t|sept\w*|oct\w*|nov\w*|d[ée]c\w*|"
           r"jan\w*|feb\w*|march|apr\w*|may|june?|july?|aug\w*|sep\w*|oct\w*|nov\w*|dec\w*")
_WRITTEN_DATE = re.compile(
    rf"\b\d{{1,2}}(?:er|st|nd|rd|th)?\s+(?:{_MONTHS})\.?(?:\s+\d{{4}})?\b"
    rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b"
    r"|\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}(?:[/.]\d{2,4})?\b"
    rf"|\b\d{{1,2}}-(?:\d{{1,2}}|{_MONTHS})(?:-\d{{2,4}})?\b"
    # not an amount ("10.30 €") nor a span ("1-2 weeks")
    r"(?!\s*(?:€|eur\b|euros?\b|\$|£|%|days?\b|jours?\b|weeks?\b|semaines?\b|months?\b|mois\b))",
    re.IGNORECASE)


@functools.lru_cache(maxsize=4)
def _date_parser(today: date) -> Any:
    """One dateparser reader per day (its locale set-up is most of the cost of a parse)."""
    from dateparser.date import DateDataParser  # noqa: PLC0415 - heavy; only loaded when a date matters

    base = datetime(today.year, today.month, today.day)  # noqa: DTZ001 - dateparser wants a naive base
    return DateDataParser(languages=["fr", "en"], try_previous_locales=True,
                          settings={"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future", "DATE_ORDER": "DMY",
                                    # what our pattern hands it is a date in full; "next Friday" and
                                    # "fin du mois" are rules.when's (dateparser's relative parser
                                    # cost 60 % of each read)
                                    "PARSERS": ["absolute-time"]})


def find_dates(text: str, today: date) -> tuple[date, ...]:
    """Dates written in `text`, in the order written, none before `today` (the day it was written):
    in full ("le 15 décembre", "12 April 2027", "30/04": our pattern finds them, dateparser reads
    each), and as people say them ("fin du mois", "next Friday", "sous huitaine": rules.when)."""
    head = text[:5000]
    found: list[tuple[int, date]] = list(relative_dates(head, today))
    for m in _WRITTEN_DATE.finditer(head):
        parsed = _read_date(" ".join(m.group(0).lower().split()), today)
        # A day and month with no year ("mandatée le 2 avril") that is past is not next year's.
        if parsed is not None and today <= parsed <= today + timedelta(days=300):
            found.append((m.start(), parsed))
    out: list[date] = []
    for _, when in sorted(found, key=lambda pw: pw[0]):
        if when not in out:
            out.append(when)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _read_date(fragment: str, today: date) -> date | None:
    """One date fragment read by dateparser, remembered for the day: clients write the same few
    dates ("le 15 décembre", "30/04") again and again, and a dateparser read costs about a millisecond.
    A date in digits alone ("30/04", "15.04.2027", "2027-04-30") is read by `_digit_date`, as
    dateparser reads it, at a hundredth of the cost."""
    if _DIGIT_DATE.fullmatch(fragment):
        return _digit_date(fragment, today)
    parsed = _date_parser(today).get_date_data(fragment).date_obj
    return parsed.date() if parsed is not None else None


_DIGIT_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}([/.])\d{1,2}(?:\1\d{2}|\1\d{4})?")


def _digit_date(fragment: str, today: date) -> date | None:
    """A date in digits, read with the settings `_date_parser` gives dateparser: ISO order when it
    opens with the year, else day first ("03/04" is the 3rd of April) unless the second number
    cannot be a month ("03/31": the 31st of March); with no year, the next such day from `today`
    (the day itself included); a two-digit year in this century."""
    if "-" in fragment:
        try:
            return date.fromisoformat(fragment)
        except ValueError:
            return None
    parts = [int(p) for p in re.split(r"[/.]", fragment)]
    first, second = parts[0], parts[1]
    year = parts[2] if len(parts) == 3 else None
    if year is not None and year < 100:
        year += 2000
    for day, month in ((first, second), (second, first)):
        if year is not None:
            if _exists(year, month, day):
                return date(year, month, day)
        elif 1 <= month <= 12 and 1 <= day <= 31:
            if _exists(today.year, month, day) and date(today.year, month, day) >= today:
                return date(today.year, month, day)
            return _next_existing(today.year + 1, month, day)
    return None


def _exists(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _next_existing(year: int, month: int, day: int) -> date | None:
    """The 29th of February from `year` on, within four years; any other day in `year`."""
    for y in range(year, year + 4):
        if _exists(y, month, day):
            return date(y, month, day)
    return None


_SES_RECIPIENT = re.compile(rb'\\?"emailAddress\\?"\s*:\s*\\?"([^"\\\s]+@[^"\\\s]+)')
_TOKEN = re.compile(r"^[^+@]+\+([0-9a-f]{6,})@")  # ar+TOKEN@domain: the reply address of a reminder


@dataclass(frozen=True)
class Understood:
    id: int
    parsed: Parsed | None  # None: the message could not be read; `failure` says why
    understanding: Understanding | None = None
    tokens: tuple[str, ...] = ()
    failure: str = ""
    applied_before: bool = False  # its effects were applied by an earlier pass (reprocess)
    failed: tuple[str, ...] = ()  # a bounce: the addresses the server gave up on (lower-case)
    delayed: tuple[str, ...] = ()  # a bounce: addresses the server is still trying (a delay warning)


def bounce_recipients(raw: bytes | Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(failed for good, only delayed) addresses a bounce names: flufl.bounce's detectors (RFC 3464
    and many servers' own formats), plus `X-Failed-Recipients`. flufl finds them in most bounces,
    not all: recognising a bounce never depends on this, only knowing which address failed."""
    from flufl.bounce import all_failures  # noqa: PLC0415 - loaded for bounces only

    msg = email.message_from_bytes(raw[:5_000_000]) if isinstance(raw, bytes) else raw
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on a malformed bounce: keep what the headers say
        temporary, permanent = frozenset(), frozenset()
    failed = {a.decode("utf-8", "replace").strip().lower() for a in permanent}
    failed |= {a.lower() for _, a in getaddresses([str(msg.get("x-failed-recipients", ""))]) if "@" in a}
    if not failed and not msg.is_multipart():  # Amazon SES through SNS: the addresses are in its JSON
        body = msg.get_payload(decode=True)
        if isinstance(body, bytes) and b"bounceType" in body[:200_000]:
            failed |= {a.decode("utf-8", "replace").lower() for a in _SES_RECIPIENT.findall(body[:200_000])}
    delayed = {a.decode("utf-8", "replace").strip().lower() for a in temporary} - failed
    return tuple(sorted(a for a in failed if "@" in a)), tuple(sorted(a for a in delayed if "@" in a))


def first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def understand_batch(messages: Sequence[tuple[int, bytes, bool]], domain: str, today: date, model: Model
                     ) -> list[Understood]:
    """Parse and classify each message (pure: no store, no transaction); failures are kept, not raised.
    Runs in a worker process for large backlogs, so everything it takes and returns pickles.
    Messages go READ_TOGETHER at a time: parsed, their clauses read by the model together, then
    each classified."""
    out: list[Understood] = []
    for start in range(0, len(messages), READ_TOGETHER):
        parsed: list[tuple[int, bool, Parsed, Message, Reading] | Understood] = []
        for inbound_id, raw, applied_before in messages[start:start + READ_TOGETHER]:
            try:
                p, message = _parse(raw)
            except Exception as e:
                parsed.append(Understood(inbound_id, None, failure=f"unreadable: {first_line(e)}"))
                continue
            try:
                parsed.append((inbound_id, applied_before, p, message, reading_of(p.facts)))
            except Exception as e:
                parsed.append(Understood(inbound_id, None, failure=f"could not be processed: {first_line(e)}"))
        read_together(model, (one[4] for one in parsed if not isinstance(one, Understood)))
        out += [one if isinstance(one, Understood) else _understood(*one, domain, today, model) for one in parsed]
    return out


READ_TOGETHER = 50


def _understood(inbound_id: int, applied_before: bool, parsed: Parsed, message: Message, reading: Reading,
                domain: str, today: date, model: Model) -> Understood:
    try:
        understanding = _classify(parsed, domain, today, model, reading)
        failed, delayed = bounce_recipients(message) if understanding.kind is Kind.BOUNCE else ((), ())
        if failed or delayed:
            understanding = replace(understanding, cues=(
                *understanding.cues, *(f"failed: {a}" for a in failed[:20]),
                *(f"delayed, the server keeps trying: {a}" for a in delayed[:20])))
        return Understood(inbound_id, parsed, understanding,
                          tuple(m.group(1) for r in parsed.recipients if (m := _TOKEN.match(r))),
                          applied_before=applied_before, failed=failed, delayed=delayed)
    except Exception as e:
        return Understood(inbound_id, None, failure=f"could not be processed: {first_line(e)}")


def _classify(parsed: Parsed, domain: str, today: date, model: Model, reading: Reading | None = None
              ) -> Understanding:
    understood = classify(parsed.facts, domain, model, reading)
    if understood.kind in (Kind.PROMISE_TO_PAY, Kind.AUTO_REPLY, Kind.PAYMENT_PLAN, Kind.PAYMENT_CLAIM):
        # "vendredi", "fin du mois": counted from the day the client wrote (its Date header), unless
        # that claims a day still to come (a sender's clock off).
        sent = parsed.received_at.date() if parsed.received_at is not None else today
        written_on = sent if sent <= today else today
        if understood.kind is Kind.PROMISE_TO_PAY:
            # The date in the clause that promises ("nous paierons à la fin du mois"), not one of
            # another sentence ("suite à votre mail de lundi"); several dates elsewhere: a person reads.
            dates = find_dates(understood.evidence, written_on)
            if not dates:
                elsewhere = find_dates(parsed.facts.text, written_on)
                dates = elsewhere if len(set(elsewhere)) == 1 else ()
        else:
            dates = find_dates(parsed.facts.text, written_on)
        understood = dated(understood, dates)
        if understood.kind is Kind.PAYMENT_PLAN:
            proposal = instalments(parsed.facts.text, dates)
            understood = replace(understood, cues=(*understood.cues, *(
                "proposes " + (f"{i.amount}" if i.amount is not None else "?") + " on "
                + (i.due.isoformat() if i.due else "?") for i in proposal)))
    return understood
