"""The exceptions Relance raises on purpose. Each carries what it concerns."""

from __future__ import annotations

from bot.i18n import t


class RelanceError(Exception):
    """Base class: anything the CLI reports as a one-line error with exit code 1."""


class ConfigError(RelanceError):
    """The config file is missing, unreadable, or a key has a wrong name, type or value.

    The message names the file, the key, the value and what was expected."""


class ImportFileError(RelanceError):
    """An invoice file has invalid rows; nothing was imported.

    `errors` holds one `FILE:LINE: column: message` string per problem."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + t("{n} problem(s), nothing imported", n=len(errors)))


class TemplateError(RelanceError):
    """A template is missing or fails to render (syntax error, undefined variable)."""


class StoreError(RelanceError):
    """The database is unreachable, or not initialised (`relance init`), or an object is not found."""


class NotFoundError(StoreError):
    """An invoice number (or message) named on the command line does not exist."""


class DeliveryError(RelanceError):
    """Sending a message failed. `message_id` names the message, when one was involved."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        self.reason = reason
        self.message_id = message_id
        super().__init__(reason if message_id is None else f"{message_id}: {reason}")


class TransientDeliveryError(DeliveryError):
    """The server answered 4xx or the connection dropped: retry later, nothing is lost."""


class ServerUnavailableError(TransientDeliveryError):
    """The server said 421 (it is closing the channel) or the connection dropped before it had the
    message: about the server, not the message. Nothing was accepted; the batch stops and every
    message left waits, pending, for the next pass."""


class PermanentDeliveryError(DeliveryError):
    """The server refused the recipient or the message (5xx): do not retry this message."""


class MessageDataError(DeliveryError):
    """This message cannot be built or sent from the data it was given, whoever the server: a
    control character or an over-long value for a header, an address that needs SMTPUTF8 where the
    server does not offer it, an address the SMTP client cannot write, or a 5xx the server gave
    the message itself rather than its recipient (`500 Line too long`, `554 content refused`).

    Raised before the server accepted anything. The message fails alone; its invoices keep their
    state and wait for their data to be fixed; the recipient's address is not blamed."""


class ConnectionFailedError(DeliveryError):
    """The SMTP server cannot be reached, or refused the TLS handshake or the login.

    Raised before any message is claimed, so nothing is marked sent."""


class MailboxError(RelanceError):
    """The IMAP server is unreachable or refused an operation."""


class FolderError(MailboxError):
    """The server will not open a watched folder (it does not exist, or no permission): the other
    folders are still read."""


class TokenError(RelanceError):
    """No OAuth2 access token can be had for `auth = "xoauth2"`: the token command failed or
    printed something that is not a token, the token file is missing, unsafe (others may read
    it) or unreadable, or the provider refused to refresh it. The message says which and what to
    do; it never contains a token."""


class StaleError(RelanceError):
    """Someone else (a person, or the daemon) changed an invoice or a message after it was read for
    a decision: nothing was changed; read it again and decide anew (the lost-update check)."""


class DateNeededError(RelanceError):
    """A promise to pay was labelled with no date to come: the caller asks for one (the command
    line names its flag, the triage screen its prompt)."""
