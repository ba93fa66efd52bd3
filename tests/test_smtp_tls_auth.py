"""SMTP transport: STARTTLS and implicit TLS with verified certificates, refused logins."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import AuthResult

from bot.config import Config, Secret
from bot.errors import ConnectionFailedError
from bot.mailer import SmtpMailer
from tests.servers import smtp_server

MESSAGE = b"From: a@acme.example\r\nTo: b@exemple.example\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def send(cfg: Config, password: Secret | None = None) -> str:
    """Sends MESSAGE; returns how the mailer logged in ("" for not at all)."""
    async def run() -> str:
        async with SmtpMailer(cfg.smtp, password) as m:
            await m.send("a@acme.example", ["b@exemple.example"], MESSAGE)
            return m.method
    return asyncio.run(run())


def smtp_cfg(make_config: Callable[..., Config], port: int, **kw: Any) -> Config:
    return make_config(smtp={"host": "127.0.0.1", "port": port, "username": "", "timeout_seconds": 5, **kw})


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_starttls_with_a_trusted_ca(ca: trustme.CA, ca_file: str, make_config: Callable[..., Config]) -> None:
    with smtp_server(tls_context=server_context(ca), require_starttls=True) as (sink, port):
        send(smtp_cfg(make_config, port, tls="starttls", ca_file=ca_file))
    assert len(sink.received) == 1


def test_starttls_refuses_an_unknown_certificate(ca: trustme.CA, make_config: Callable[..., Config]) -> None:
    with smtp_server(tls_context=server_context(ca), require_starttls=True) as (sink, port), \
            pytest.raises(ConnectionFailedError, match="cannot reach SMTP server"):
        send(smtp_cfg(make_config, port, tls="starttls"))
    assert sink.received == []


def test_implicit_tls(ca: trustme.CA, ca_file: str, make_config: Callable[..., Config]) -> None:
    with smtp_server(ssl_context=server_context(ca)) as (sink, port):
        send(smtp_cfg(make_config, port, tls="implicit", ca_file=ca_file))
    assert len(sink.received) == 1


class Authenticator:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = auth_data.login == b"relances@acme.example" and auth_data.password == b"right"
        return AuthResult(success=ok, handled=False)


@pytest.mark.parametrize(("password", "ok"), [("right", True), ("wrong", False)])
def test_login_over_starttls(password: str, ok: bool, ca: trustme.CA, ca_file: str,
                             make_config: Callable[..., Config]) -> None:
    with smtp_server(authenticator=Authenticator(), auth_required=True, tls_context=server_context(ca),
                     require_starttls=True) as (sink, port):
        cfg = smtp_cfg(make_config, port, tls="starttls", ca_file=ca_file, username="relances@acme.example")
        if ok:
            assert send(cfg, Secret(password)) == "password"
        else:
            with pytest.raises(ConnectionFailedError, match="refused the login of 'relances@acme.example'") as e:
                send(cfg, Secret(password))
            assert password not in str(e.value)
    assert len(sink.received) == (1 if ok else 0)
