"""IMAP over TLS with a private CA (a throwaway one from trustme), against a real Dovecot: the CA
file is trusted, verification stays on; an unknown certificate is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from bot.config import Config, Secret
from bot.errors import MailboxError
from bot.mailbox import ImapSource
from tests.servers import Dovecot, dovecot_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def dovecot(ca: trustme.CA) -> Iterator[Dovecot]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with dovecot_server(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()) as server:
        yield server


def _source(make_config: Callable[..., Config], server: Dovecot, **imap: object) -> ImapSource:
    cfg = make_config(imap={"host": "127.0.0.1", "port": server.port, "tls": "starttls",
                            "username": server.user, **imap})
    return ImapSource(cfg.imap, Secret(server.password))


def test_starttls_with_a_private_ca(dovecot: Dovecot, ca: trustme.CA, tmp_path: Path,
                                    make_config: Callable[..., Config]) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    source = _source(make_config, dovecot, ca_file=str(ca_file))
    try:
        source.select("INBOX")
    finally:
        source.close()


def test_an_unknown_certificate_is_refused(dovecot: Dovecot, make_config: Callable[..., Config]) -> None:
    source = _source(make_config, dovecot)
    with pytest.raises(MailboxError, match="certificate verify failed"):
        source.select("INBOX")
    source.close()
