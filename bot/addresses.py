"""Email addresses and header text that come from outside (the ledger, the command line, the
store): plain addr-specs only, control characters nowhere.

An address is checked by email-validator (RFC 5321/5322 syntax, IDNA domains) and kept as the
store keeps it: lower case, the domain in its ASCII form. What a comment, a quoted local part, a
domain literal or a display name would allow is refused: the address a server gets at RCPT must be
the one the `To:` shows. An internationalised local part (`josé@…`) is valid; it can only travel
over a server that offers SMTPUTF8, which the mailer checks."""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: the longest path a server must accept, less the brackets
# C0 and C1 controls (CR, LF, TAB, VT, FF, NUL, ...), DEL, and the Unicode line and paragraph
# separators: Python's email generator treats several of them as line ends. And the bidirectional
# embeddings, overrides and isolates: "Facture\u202e0441-AF" shows as another number than it is,
# in a mail client or a terminal.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# What a header or an SMTP command can carry as it is: one @, nothing that would need quoting.
_ADDR_SPEC = re.compile(r"[^\s<>()\[\]\\\",;:@]+@[^\s<>()\[\]\\\",;:@]+")


class AddressError(ValueError):
    """Not a plain email address; the message says why, in English (email-validator's words)."""


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None


def plain_address(text: str) -> str:
    """`text` as the store keeps it, or AddressError."""
    if has_control(text):
        raise AddressError("control character")
    if len(text) > MAX_ADDRESS:
        raise AddressError(f"longer than {MAX_ADDRESS} characters")
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _DOT_ATOM.fullmatch(local):  # the common case: checked in parts
        return f"{local}@{_domain(domain)}".lower()
    return _validated(text)


# RFC 5322 dot-atom in ASCII: what email-validator takes as it is for a local part.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)  # a ledger's addresses share a few hundred domains
def _domain(domain: str) -> str:
    return _validated(f"a@{domain}").partition("@")[2]


def _validated(address: str) -> str:
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False,
                               allow_domain_literal=False, allow_display_name=False, allow_empty_local=False)
    except EmailNotValidError as e:
        raise AddressError(str(e)) from None
    return f"{valid.local_part}@{valid.ascii_domain}".lower()


def writable(address: str) -> bool:
    """Cheap check for the send path (the import did the full one): a plain addr-spec with no
    control character, safe to write in a header and in MAIL FROM / RCPT TO."""
    return not has_control(address) and _ADDR_SPEC.fullmatch(address) is not None


def needs_smtputf8(address: str) -> bool:
    """An internationalised local part: only a server offering SMTPUTF8 can take it."""
    return not address.isascii()
