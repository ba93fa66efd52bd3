"""Sending mail: the `Mailer` interface, its SMTP implementation (aiosmtplib) and an in-memory double.

A mailer is used as an async context manager around a batch: one connection per batch. `send`
raises TransientDeliveryError (4xx, nothing accepted), PermanentDeliveryError (a 5xx for the
recipient: RCPT, or DATA with a mailbox status 5.1.x / 5.2.x), MessageDataError (the message
cannot go as it is: an address the server cannot take, a 5xx for the message itself such as
`500 Line too long`; nothing accepted, the recipient not blamed) or UncertainDeliveryError (the
connection died while the server held the message body, so it may have been accepted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import aiosmtplib

from bot.addresses import needs_smtputf8, writable
from bot.config import Secret, SmtpConfig
from bot.errors import (
    ConnectionFailedError,
    DeliveryError,
    MessageDataError,
    PermanentDeliveryError,
    ServerUnavailableError,
    TokenError,
    TransientDeliveryError,
)
from bot.tokens import Credential, TokenSource, hide, sasl_b64

log = logging.getLogger("relance")


class UncertainDeliveryError(DeliveryError):
    """The connection failed during DATA: the server may or may not have accepted the message."""


class Mailer(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def send(self, sender: str, recipients: list[str], data: bytes,
                   ready: Callable[[], Awaitable[None]] | None = None) -> list[str]:
        """Send `data`; return the recipients refused while others were accepted.

        `ready` is started with the envelope (it runs while the server reads MAIL FROM) and awaited
        once the envelope is accepted, right before DATA: the outbox records the message as being
        sent meanwhile. When it raises, nothing is sent and the exception propagates; when the
        envelope fails, it is cancelled if it has not started yet."""
        ...


def _reason(e: aiosmtplib.SMTPResponseException) -> str:
    return f"{e.code} {e.message}".strip()


def _refusal(e: aiosmtplib.SMTPResponseException) -> DeliveryError:
    """A refusal of the message: 5xx is final, 4xx is worth retrying. Nothing was accepted."""
    if e.code == 421:  # RFC 5321 3.8: the server is closing the channel; it says so for every message
        return ServerUnavailableError(f"the SMTP server is not available: {_reason(e)}")
    error = PermanentDeliveryError if e.code >= 500 else TransientDeliveryError
    return error(_reason(e))


_MAILBOX_STATUS = re.compile(r"5\.[12]\.\d{1,3}\b")  # RFC 3463: bad address, mailbox disabled or full


def _data_refusal(e: aiosmtplib.SMTPResponseException) -> DeliveryError:
    """A refusal after DATA: the recipient's only when the status names the mailbox."""
    if e.code >= 500 and not _MAILBOX_STATUS.match(e.message.strip()):
        return MessageDataError(f"the server refused the message itself (not its recipient): {_reason(e)}")
    return _refusal(e)


class SmtpMailer:
    """aiosmtplib over one connection, TLS per config, certificates verified unless disabled."""

    def __init__(self, cfg: SmtpConfig, password: Credential) -> None:
        self.cfg = cfg
        self.password = password  # a Secret, or a TokenSource for auth = "xoauth2" / "oauthbearer"
        self.method = ""  # how the last connection logged in: "password", "xoauth2", "oauthbearer" ("" none)
        self._smtp: aiosmtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.cfg.tls == "none":
            return None
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
        if not self.cfg.verify_certificates:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def connect(self) -> None:
        cfg = self.cfg
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, timeout=cfg.timeout_seconds,
            use_tls=cfg.tls == "implicit", start_tls=cfg.tls == "starttls",
            tls_context=self._tls_context(), validate_certs=cfg.verify_certificates,
        )
        where = f"SMTP server {cfg.host}:{cfg.port}"
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as e:
            await _close(smtp)
            raise ConnectionFailedError(f"{where} refused the session: {_reason(e)}") from e
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as e:
            await _close(smtp)
            raise ConnectionFailedError(f"cannot reach {where} ({cfg.tls} TLS): {e}") from e
        login = self.password if cfg.username else None
        if isinstance(login, Secret):
            try:
                await smtp.login(cfg.username, login.reveal())
            except aiosmtplib.SMTPResponseException as e:
                await _close(smtp)
                raise ConnectionFailedError(f"{where} refused the login of {cfg.username!r}: {_reason(e)}") from e
            except (aiosmtplib.SMTPException, OSError) as e:
                # The server was reached: a wrong password is often answered by a delay (a tarpit)
                # or a closed connection, and "cannot reach" would send the reader the wrong way.
                await _close(smtp)
                raise ConnectionFailedError(f"{where} refused the login of {cfg.username!r} (no answer to the "
                                            f"login: {e or type(e).__name__}); check the password in "
                                            f"${cfg.password_env}") from e
            self.method = "password"
        elif login is not None:
            await self._token_login(smtp, login, where)
        self._smtp = smtp

    async def _token_login(self, smtp: aiosmtplib.SMTP, tokens: TokenSource, where: str) -> None:
        """SASL XOAUTH2 or OAUTHBEARER in one message. A token refused with 535 (expired, revoked)
        is replaced by a fresh one, once."""
        cfg = self.cfg
        mech = cfg.auth.upper()
        try:
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except (aiosmtplib.SMTPException, OSError) as e:
            await _close(smtp)
            raise ConnectionFailedError(f"{where}: connection lost before the login: {e}") from e
        offered = [m.upper() for m in smtp.server_auth_methods]
        if mech not in offered:
            await _close(smtp)
            raise ConnectionFailedError(f"{where} does not offer AUTH {mech} (it offers: "
                                        f"{', '.join(offered) or 'no AUTH'}); check smtp.auth and smtp.tls")
        for attempt in (1, 2):
            try:
                # A broker command or an HTTP refresh blocks: in a thread, the daemon's loop goes on.
                token = await asyncio.to_thread(tokens.token, attempt == 2)
            except TokenError as e:
                await _close(smtp)
                raise ConnectionFailedError(str(e)) from e
            try:
                answer = await smtp.execute_command(b"AUTH", mech.encode(),
                                                    sasl_b64(cfg.auth, cfg.username, token).encode())
                if answer.code == 334:  # the error, as a challenge: an empty reply gets the final answer
                    answer = await smtp.execute_command(b"")
            except (aiosmtplib.SMTPException, OSError) as e:
                await _close(smtp)
                raise ConnectionFailedError(f"{where} refused the {cfg.auth} login of {cfg.username!r} (no answer "
                                            f"to the login: {e or type(e).__name__})") from e
            if answer.code == 235:
                self.method = cfg.auth
                return
            if attempt == 1 and answer.code == 535:
                log.info("smtp: %s refused the access token of %s; getting a new one", where, cfg.username)
                continue
            await _close(smtp)
            raise ConnectionFailedError(f"{where} refused the {cfg.auth} login of {cfg.username!r}: "
                                        f"{answer.code} {hide(answer.message)}")

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._smtp is not None:
            await _close(self._smtp)
            self._smtp = None

    async def send(self, sender: str, recipients: list[str], data: bytes,
                   ready: Callable[[], Awaitable[None]] | None = None) -> list[str]:
        if self._smtp is None or not self._smtp.is_connected:
            await self.connect()
        smtp = self._smtp
        assert smtp is not None
        for address in (sender, *recipients):
            if not writable(address):
                raise MessageDataError(f"{address[:100]!r} is not a plain email address")
        utf8 = any(needs_smtputf8(a) for a in (sender, *recipients))
        if utf8 and smtp.is_ehlo_or_helo_needed:  # what the server offers is known after EHLO
            try:
                await smtp.ehlo()
            except (aiosmtplib.SMTPException, OSError) as e:
                await self._drop()
                raise ServerUnavailableError(f"connection lost before the message was sent: {e}") from e
        if utf8 and not smtp.supports_extension("smtputf8"):
            needing = next(a for a in (sender, *recipients) if needs_smtputf8(a))
            raise MessageDataError(f"{needing}: an internationalised address, and the SMTP server "
                                   f"{self.cfg.host} does not offer SMTPUTF8; give an ASCII address "
                                   "(relance contact NUMBER --email ...)")
        options, encoding = (["SMTPUTF8"], "utf-8") if utf8 else ([], "ascii")
        # Started now, it runs at the loop's next turn: once MAIL FROM is written, while the server reads it.
        marking = asyncio.ensure_future(ready()) if ready is not None else None
        try:
            refused = await self._envelope(smtp, sender, recipients, options, encoding)
        except BaseException:
            if marking is not None:
                await _abandon(marking)
            raise
        if marking is not None:
            try:
                await marking
            except BaseException:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    if smtp.is_connected:
                        await smtp.rset()
                raise
        try:
            await smtp.data(data)
        except aiosmtplib.SMTPResponseException as e:
            raise _data_refusal(e) from e
        except (aiosmtplib.SMTPException, OSError) as e:
            await self._drop()
            raise UncertainDeliveryError(f"connection lost while sending the message body: {e}") from e
        return refused

    async def _envelope(self, smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], options: list[str],
                        encoding: str) -> list[str]:
        """MAIL FROM and RCPT TO; returns the Cc addresses refused while the first was accepted."""
        refused: list[str] = []
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
            for i, rcpt in enumerate(recipients):
                try:
                    await smtp.rcpt(rcpt, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as e:
                    if i == 0 or e.code < 500:  # the main recipient, or a temporary refusal
                        if smtp.is_connected:  # (a 421 has closed it)
                            await smtp.rset()
                        raise
                    refused.append(f"{rcpt}: {_reason(e)}")
        except aiosmtplib.SMTPSenderRefused as e:
            if e.code < 500:
                raise _refusal(e) from e
            # Not this recipient's fault: our configuration is wrong, no message will go.
            raise ConnectionFailedError(f"the SMTP server refused the sender {sender!r}: {_reason(e)}") from e
        except aiosmtplib.SMTPResponseException as e:
            raise _refusal(e) from e
        except (aiosmtplib.SMTPException, OSError) as e:
            await self._drop()
            raise ServerUnavailableError(f"connection lost before the message was sent: {e}") from e
        return refused

    async def _drop(self) -> None:
        if self._smtp is not None:
            await _close(self._smtp)
            self._smtp = None


async def _abandon(task: asyncio.Future[None]) -> None:
    """The envelope failed: `ready` is not run if it has not started; if it has, its end is
    awaited (its outcome is the caller's to know) and its own error, if any, dropped."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: not reported as "never retrieved"


async def _close(smtp: aiosmtplib.SMTP) -> None:
    """Say QUIT and wait until the socket is really closed.

    Over TLS, closing starts a TLS shutdown that ends a few loop turns later; a command that ends
    its event loop right after would leave the socket to the garbage collector."""
    sock = smtp.get_transport_info("socket") if smtp.is_connected else None
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
    for _ in range(_CLOSE_TURNS):
        if sock is None or sock.fileno() == -1:
            return
        await asyncio.sleep(0.01)


_CLOSE_TURNS = 100  # at most a second for the peer to end the TLS session


@dataclass
class MemoryMailer:
    """Keeps what it is given. `refuse` maps a recipient to the (code, reason) the 'server' answers."""

    sent: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def send(self, sender: str, recipients: list[str], data: bytes,
                   ready: Callable[[], Awaitable[None]] | None = None) -> list[str]:
        if recipients and recipients[0] in self.refuse:
            code, reason = self.refuse[recipients[0]]
            error = PermanentDeliveryError if code >= 500 else TransientDeliveryError
            raise error(f"{code} {reason}")
        if ready is not None:
            await ready()
        self.sent.append((sender, recipients, data))
        return []
