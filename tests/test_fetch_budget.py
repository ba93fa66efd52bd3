"""Fetching by size against a real Dovecot: sizes first, a byte budget per fetch, a large message
alone, so that the bytes in memory do not follow what people send."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from imapclient import IMAPClient

from bot.config import Config, Secret
from bot.mailbox import ImapSource, within_budget
from tests.servers import Dovecot, dovecot_server

KB = 1024


@pytest.mark.parametrize(("sizes", "budget", "taken"), [
    ([], 100, 0),
    ([10, 20, 30], 100, 3),
    ([10, 20, 80], 100, 2),
    ([500, 10], 100, 1),  # larger than the budget: alone
    ([10, 500], 100, 1),  # ... and not with the one before it
    ([100], 100, 1),
])
def test_within_budget(sizes: list[int], budget: int, taken: int) -> None:
    assert within_budget(sizes, budget) == taken


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server() as d:
        yield d


def _message(n: int, size: int) -> bytes:
    body = (b"x" * 76 + b"\r\n") * (size // 78)
    return (f"From: c{n}@client.example\r\nTo: ar@acme.example\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@client.example>\r\n\r\n").encode() + body


def test_a_fetch_stays_within_its_byte_budget(dovecot: Dovecot, make_config: Callable[..., Config]) -> None:
    sizes = [1 * KB, 1 * KB, 700 * KB, 700 * KB, 1 * KB]
    c = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    c.login(dovecot.user, dovecot.password)
    for n, size in enumerate(sizes):
        c.append("INBOX", _message(n, size))
    c.logout()
    cfg = make_config(imap={"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": dovecot.user})
    source = ImapSource(cfg.imap, Secret(dovecot.password))
    try:
        source.select("INBOX")
        batches, last = [], 0
        while batch := source.fetch_after(last, 200, 1024 * KB):
            batches.append([f.raw.split(b"Subject: ")[1][:2].strip() for f in batch])
            last = batch[-1].uid
    finally:
        source.close()
    assert batches == [[b"m0", b"m1", b"m2"], [b"m3", b"m4"]]
