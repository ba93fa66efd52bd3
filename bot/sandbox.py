"""A mail sandbox on loopback: an SMTP server (aiosmtpd) that delivers every message into an IMAP
server (pymap, in memory), so the demo needs no mail server of the user's. One account: what
the SMTP server delivers goes to its `Delivered` folder (what the clients received), and the
clients' answers are put in its INBOX, the AR inbox the inbound side reads. Both servers stop
when the context exits; nothing is left running."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

from bot.errors import RelanceError

DELIVERED = "Delivered"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until something listens on 127.0.0.1:`port`; TimeoutError, or RuntimeError if not `alive()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server meant for port {port} exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class _Delivery:
    """aiosmtpd handler: refuses addresses at `refuse_domains`, APPENDs the rest to the mailbox."""

    sandbox: MailSandbox
    refuse_domains: tuple[str, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: Any) -> str:
        if address.rpartition("@")[2] in self.refuse_domains:
            return f"550 5.1.2 <{address}>: domain not found"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        import asyncio  # noqa: PLC0415

        await asyncio.to_thread(self.sandbox.append, envelope.content, DELIVERED)
        return "250 OK delivered to the sandbox mailbox"


class MailSandbox:
    def __init__(self, user: str = "ar@acme.example", password: str = "demo",  # noqa: S107 - a throwaway
                 refuse_domains: tuple[str, ...] = ("invalid.example",)) -> None:
        self.user, self.password = user, password
        self.refuse_domains = refuse_domains
        self.imap_port = free_port()
        self.smtp_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._controller: Any = None
        self._imap: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            from aiosmtpd.controller import Controller  # noqa: PLC0415
            from imapclient import IMAPClient  # noqa: PLC0415
        except ImportError as e:
            raise RelanceError("the demo needs its extras: pip install 'relance[demo]'") from e
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-c", "from pymap.main import main; main()", "--host", "127.0.0.1",
             "--port", str(self.imap_port), "--no-tls", "dict", "--demo-user", self.user,
             "--demo-password", self.password],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc = self._proc
            try:
                wait_port(self.imap_port, alive=lambda: proc.poll() is None)
            except (TimeoutError, RuntimeError) as e:
                raise RelanceError(f"the sandbox IMAP server did not start: {e}") from e
            self._imap = IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10)
            self._imap.login(self.user, self.password)
            self._imap.create_folder(DELIVERED)
            self._controller = Controller(_Delivery(self, self.refuse_domains), hostname="127.0.0.1",
                                          port=self.smtp_port)
            self._controller.start()
        except BaseException:
            self.stop()
            raise

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self._lock:
            self._imap.append(folder, raw)

    def messages(self, folder: str = DELIVERED) -> list[EmailMessage]:
        """Everything in `folder` (read-only: nothing gets marked seen)."""
        with self._lock:
            self._imap.select_folder(folder, readonly=True)
            uids = self._imap.search("ALL")
            data = self._imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [message_from_bytes(data[u][b"BODY[]"], policy=policy.default)
                for u in sorted(data)]

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._imap is not None:
            with contextlib.suppress(Exception):  # the server may already be gone; we are closing anyway
                self._imap.logout()
            self._imap = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
