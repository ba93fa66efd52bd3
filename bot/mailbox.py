"""Reading an IMAP folder without changing what people see: read-only SELECT, BODY.PEEK.

`ImapSource` wraps imapclient (blocking: callers run it in a thread); `MemorySource` is the
double for unit tests and the demo."""

from __future__ import annotations

import bisect
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from bot.config import ImapConfig, Secret
from bot.errors import FolderError, MailboxError, TokenError
from bot.tokens import Credential, TokenSource, hide

log = logging.getLogger("relance")


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    internaldate: datetime | None


def _aware(moment: datetime | None) -> datetime | None:
    """imapclient gives INTERNALDATE as a naive local time."""
    return moment.astimezone() if moment is not None and moment.tzinfo is None else moment


def within_budget(sizes: Sequence[int], budget: int) -> int:
    """How many of `sizes`, taken in order, fit in `budget` bytes: at least one, so that a message
    larger than the budget is fetched, alone."""
    total = 0
    for n, size in enumerate(sizes):
        total += size
        if total > budget:
            return max(n, 1)
    return len(sizes)


class MailSource(Protocol):
    uidnext: int  # of the selected folder, as SELECT reported it (0 when unknown)

    def select(self, folder: str) -> int:
        """Open `folder` read-only; return its UIDVALIDITY."""
        ...

    def fetch_after(self, last_uid: int, limit: int, budget: int) -> list[Fetched]:
        """Up to `limit` messages of the selected folder with a UID above `last_uid`, oldest first,
        no more than `budget` bytes together (a message larger than that comes alone)."""
        ...

    def move(self, folder: str, uidvalidity: int, uids: list[int], dest: str) -> bool:
        """Move `uids` of `folder` to `dest` (created if missing). False, and nothing moved, when the
        folder's UIDVALIDITY is no longer `uidvalidity` (the UIDs no longer name those messages)."""
        ...

    def close(self) -> None: ...


class ImapSource:
    def __init__(self, cfg: ImapConfig, password: Credential) -> None:
        self.cfg = cfg
        self.password = password  # a Secret, or a TokenSource for auth = "xoauth2" / "oauthbearer"
        self.method = ""  # how the connection logged in: "password", "xoauth2" or "oauthbearer"
        self._client: IMAPClient | None = None
        self.uidnext = 0  # of the selected folder, as SELECT reported it
        self._ahead: list[int] = []  # UIDs of the selected folder a SEARCH found, not fetched yet (sorted)

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
        if not self.cfg.verify_certificates:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        cfg = self.cfg
        where = f"IMAP server {cfg.host}:{cfg.port}"
        try:
            client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.tls == "implicit",
                                ssl_context=self._context() if cfg.tls != "none" else None, timeout=30)
            if cfg.tls == "starttls":
                client.starttls(self._context())
            if isinstance(self.password, Secret) or self.password is None:
                client.login(cfg.username, self.password.reveal() if self.password else "")
                self.method = "password"
            else:
                self._token_login(client, self.password, where)
        except IMAPClientError as e:
            raise MailboxError(f"{where} refused the login of {cfg.username!r}: {e}") from e
        except (OSError, ssl.SSLError) as e:
            raise MailboxError(f"cannot reach {where} ({cfg.tls} TLS): {e}") from e
        self._client = client
        return client

    def _token_login(self, client: IMAPClient, tokens: TokenSource, where: str) -> None:
        """SASL XOAUTH2 or OAUTHBEARER. A refused token (expired, revoked) is replaced by a fresh
        one, once. Raises MailboxError; no token in its message."""
        cfg = self.cfg
        mech = cfg.auth.upper()
        if f"AUTH={mech}".encode() not in client.capabilities():
            client.shutdown()
            raise MailboxError(f"{where} does not offer AUTH={mech}; check imap.auth and imap.tls")
        for attempt in (1, 2):
            try:
                token = tokens.token(fresh=attempt == 2)
            except TokenError as e:
                client.shutdown()
                raise MailboxError(str(e)) from e
            try:
                if cfg.auth == "oauthbearer":
                    client.oauthbearer_login(cfg.username, token.reveal())
                else:
                    client.oauth2_login(cfg.username, token.reveal())
            except LoginError as e:
                if attempt == 1:
                    log.info("imap: %s refused the access token of %s; getting a new one", where, cfg.username)
                    continue
                client.shutdown()
                raise MailboxError(f"{where} refused the {cfg.auth} login of {cfg.username!r}: {hide(str(e))}") from e
            self.method = cfg.auth
            return

    def select(self, folder: str) -> int:
        client = self.connect()
        try:
            info: dict[bytes, Any] = client.select_folder(folder, readonly=True)
        except (IMAPClientAbortError, OSError) as e:
            self._drop()
            raise MailboxError(f"connection lost opening folder {folder!r}: {e}") from e
        except IMAPClientError as e:  # the server said NO: this folder, not the connection
            raise FolderError(f"cannot open folder {folder!r}: {e}") from e
        self.uidnext = int(info.get(b"UIDNEXT", 0))
        self._ahead = []
        return int(info[b"UIDVALIDITY"])

    def fetch_after(self, last_uid: int, limit: int, budget: int) -> list[Fetched]:
        client = self.connect()
        try:
            while True:
                start = bisect.bisect_right(self._ahead, last_uid)
                if start == len(self._ahead):
                    # One SEARCH for the backlog, not one a batch: `UID n:*` asked again for every 200
                    # messages of a first sync of 20,000 returned a million UIDs. It always includes
                    # the highest UID, even when that is below n: filter.
                    self._ahead = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
                    start = 0
                    if not self._ahead:
                        return []
                uids = self._ahead[start:start + limit]
                # Sizes first: the bytes in memory are bounded by the budget, not by what people send.
                sizes = client.fetch(uids, ["RFC822.SIZE"])
                uids = uids[:within_budget([int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) for u in uids], budget)]
                data = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
                got = [Fetched(u, data[u][b"BODY[]"], _aware(data[u].get(b"INTERNALDATE"))) for u in uids if u in data]
                if got:
                    return got
                last_uid = uids[-1]  # all expunged since the SEARCH: the next ones (an empty batch ends the pass)
        except (IMAPClientError, OSError) as e:  # a socket timeout or reset is not wrapped by imaplib
            self._drop()
            raise MailboxError(f"fetching after UID {last_uid}: {e}") from e

    def capabilities(self) -> set[bytes]:
        try:
            return set(self.connect().capabilities())
        except (IMAPClientError, OSError) as e:
            self._drop()
            raise MailboxError(f"asking the server what it can do: {e}") from e

    def can_idle(self) -> bool:
        return b"IDLE" in self.capabilities()

    def can_move(self) -> bool:
        """MOVE, or COPY + UID EXPUNGE of exactly our UIDs (UIDPLUS); never a plain EXPUNGE."""
        return bool(self.capabilities() & {b"MOVE", b"UIDPLUS"})

    def wait(self, seconds: float, stop: threading.Event, check: float = 1.0) -> bool:
        """Block until the selected folder changes (IMAP IDLE), `seconds` pass or `stop` is set.

        Returns True when the server announced something. Falls back to sleeping where the server
        has no IDLE. `idle_done` gets a hard socket timeout: it is known to hang on a dead link."""
        client = self.connect()
        if b"IDLE" not in client.capabilities():
            stop.wait(seconds)
            return False
        deadline = time.monotonic() + seconds
        changed = False
        try:
            client.idle()
            while not stop.is_set() and time.monotonic() < deadline:
                responses = client.idle_check(timeout=check)
                bye = next((r for r in responses if r and r[0] == b"BYE"), None)
                if bye is not None:  # e.g. Microsoft's "Session invalidated - AccessTokenExpired"
                    said = b" ".join(x for x in bye[1:] if isinstance(x, bytes)).decode("ascii", "replace")
                    self._drop()
                    raise MailboxError("the server ended the session while waiting for mail: "
                                       + "".join(c if c.isprintable() else " " for c in said)[:200])
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    changed = True
                    break
        except (IMAPClientError, OSError) as e:
            self._drop()
            raise MailboxError(f"connection lost while waiting for mail: {e}") from e
        try:
            client.socket().settimeout(15)
            _, responses = client.idle_done()  # what arrived while leaving IDLE is announced here
            client.socket().settimeout(30)
        except (IMAPClientError, OSError) as e:
            self._drop()
            raise MailboxError(f"connection lost when leaving IDLE: {e}") from e
        return changed or any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    def move(self, folder: str, uidvalidity: int, uids: list[int], dest: str) -> bool:
        client = self.connect()
        try:
            if not client.folder_exists(dest):
                client.create_folder(dest)
            info: dict[bytes, Any] = client.select_folder(folder)  # read-write, for this step only
            if int(info[b"UIDVALIDITY"]) != uidvalidity:
                return False
            caps = client.capabilities()
            if b"MOVE" in caps:
                client.move(uids, dest)
            elif b"UIDPLUS" in caps:  # COPY, then expunge exactly these UIDs, never other people's deletions
                client.copy(uids, dest)
                client.delete_messages(uids)
                client.uid_expunge(uids)
            else:
                raise MailboxError(f"cannot move messages to {dest!r}: the server has neither MOVE nor UIDPLUS, "
                                   "and a plain EXPUNGE would remove messages other people deleted; "
                                   "set imap.move_handled_to = \"\"")
        except (IMAPClientError, OSError) as e:
            self._drop()
            raise MailboxError(f"moving {len(uids)} message(s) from {folder!r} to {dest!r}: {e}") from e
        finally:
            self.uidnext = 0  # the folder is no longer selected read-only: callers select again
            self._ahead = []
        return True

    def _drop(self) -> None:
        self._ahead = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.shutdown()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.logout()
            except (IMAPClientError, OSError):
                self._client.shutdown()
            self._client = None


@dataclass
class MemorySource:
    """Folders as lists of raw messages; UIDs are positions + 1."""

    folders: dict[str, list[bytes]] = field(default_factory=dict)
    uidvalidity: int = 1
    uidnext: int = 0
    moved: dict[str, list[bytes]] = field(default_factory=dict)
    _current: str = ""

    def select(self, folder: str) -> int:
        if folder not in self.folders:
            raise FolderError(f"cannot open folder {folder!r}: no such folder")
        self._current = folder
        self.uidnext = len(self.folders[folder]) + 1
        return self.uidvalidity

    def fetch_after(self, last_uid: int, limit: int, budget: int) -> list[Fetched]:
        msgs = self.folders[self._current]
        after = [Fetched(i + 1, raw, None) for i, raw in enumerate(msgs) if i + 1 > last_uid][:limit]
        return after[:within_budget([len(f.raw) for f in after], budget)]

    def move(self, folder: str, uidvalidity: int, uids: list[int], dest: str) -> bool:
        """Records the move (UIDs are positions here, so the messages stay in place)."""
        if uidvalidity != self.uidvalidity:
            return False
        self.moved.setdefault(dest, []).extend(self.folders[folder][u - 1] for u in uids)
        return True

    def close(self) -> None:
        return None
