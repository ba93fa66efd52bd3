"""OAuth2 sign-in against real servers on loopback: Dovecot checking the XOAUTH2 / OAUTHBEARER
bearer token, aiosmtpd checking the same string; tokens from a broker command. An expired token
is replaced once; no token ever shows in a log, an error or the database."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from bot.config import Config
from bot.errors import ConnectionFailedError, MailboxError, TokenError
from bot.mailbox import ImapSource
from bot.mailer import SmtpMailer
from bot.sandbox import free_port
from bot.tokens import CommandTokens, credential
from tests.oauth_fakes import Broker, OAuthSink, broker, new_token
from tests.servers import Dovecot, dovecot_server

USER = "ar@acme.example"
MESSAGE = b"From: a@acme.example\r\nTo: b@exemple.example\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server(mechanisms="plain xoauth2 oauthbearer") as d:
        yield d


@pytest.fixture
def tokens(tmp_path: Path) -> Broker:
    return broker(tmp_path)


def imap_cfg(make_config: Callable[..., Config], dovecot: Dovecot, tokens: Broker, auth: str = "xoauth2") -> Config:
    return make_config(imap={"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": USER,
                             "auth": auth, "token_command": tokens.argv, "folders": ["INBOX"]})


def leaked(text: str, user: str, *tokens: str) -> bool:
    """Is any of `tokens` in `text`, as it is or as the base64 SASL string that carries it?"""
    forms = list(tokens)
    forms += [base64.b64encode(f"user={user}\x01auth=Bearer {tok}\x01\x01".encode()).decode() for tok in tokens]
    return any(f in text for f in forms)


def relance_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What Relance and the mail libraries it drives logged (the test servers' own logs aside)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("mail.log", "aiosmtpd")))


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_imap_signs_in_with_the_token_the_command_prints(auth: str, dovecot: Dovecot, tokens: Broker,
                                                         make_config: Callable[..., Config]) -> None:
    """The broker's token goes in the SASL string; Dovecot lets the user in; the method is known."""
    good = new_token("imap")
    dovecot.accept_tokens(good)
    tokens.hand_out(good)
    cfg = imap_cfg(make_config, dovecot, tokens, auth)
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    try:
        source.select("INBOX")
        assert source.method == auth
    finally:
        source.close()
    assert f"method={auth.upper()}" in Path(f"{dovecot.base}/dovecot.log").read_text()


def test_imap_an_expired_token_is_replaced_once_mid_run(dovecot: Dovecot, tokens: Broker,
                                                        caplog: pytest.LogCaptureFixture,
                                                        make_config: Callable[..., Config]) -> None:
    """Signed in; the token expires at the server; the next connection is refused with the old one,
    asks the broker again and gets in, and says so without the token."""
    caplog.set_level(logging.DEBUG)
    old, new = new_token("old"), new_token("new")
    dovecot.accept_tokens(old)
    tokens.hand_out(old)
    cfg = imap_cfg(make_config, dovecot, tokens)
    first = ImapSource(cfg.imap, credential(cfg, "imap"))
    first.select("INBOX")
    first.close()
    dovecot.accept_tokens(new)  # `old` has expired
    tokens.hand_out(old, new)  # the broker's cache still hands out `old` once
    second = ImapSource(cfg.imap, credential(cfg, "imap"))
    try:
        second.select("INBOX")
    finally:
        second.close()
    assert tokens.runs == 3, "one run for the first login, two for the second (refused, then fresh)"
    logs = relance_logs(caplog)
    assert "refused the access token of ar@acme.example; getting a new one" in logs
    assert "AUTHENTICATE" in logs, "imapclient's own debug log was captured too"
    assert not leaked(logs, USER, old, new)


def test_imap_a_token_refused_twice_is_an_error_without_the_token(dovecot: Dovecot, tokens: Broker,
                                                                 make_config: Callable[..., Config]) -> None:
    bad = new_token("revoked")
    dovecot.accept_tokens(new_token("other"))
    tokens.hand_out(bad)
    cfg = imap_cfg(make_config, dovecot, tokens)
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    with pytest.raises(MailboxError, match="refused the xoauth2 login of 'ar@acme.example'") as e:
        source.select("INBOX")
    assert bad not in str(e.value) and tokens.runs == 2


def test_imap_a_server_without_the_mechanism_says_so(tokens: Broker, make_config: Callable[..., Config]) -> None:
    """A server that does not offer XOAUTH2 is named, and no token is even asked for."""
    with dovecot_server() as plain:
        cfg = imap_cfg(make_config, plain, tokens)
        with pytest.raises(MailboxError, match="does not offer AUTH=XOAUTH2"):
            ImapSource(cfg.imap, credential(cfg, "imap")).select("INBOX")
    assert tokens.runs == 0


# --- SMTP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp_oauth(ca: trustme.CA) -> Iterator[tuple[OAuthSink, int]]:
    """aiosmtpd over STARTTLS, AUTH required, XOAUTH2 and OAUTHBEARER checked by the handler."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    sink = OAuthSink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     auth_required=True, auth_exclude_mechanism=["LOGIN", "PLAIN"])
    ctl.start()
    try:
        yield sink, port
    finally:
        ctl.stop()


def smtp_cfg(make_config: Callable[..., Config], port: int, tokens: Broker, ca: trustme.CA, tmp_path: Path,
             auth: str = "xoauth2") -> Config:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": str(ca_file),
                             "username": "relances@acme.example", "auth": auth, "token_command": tokens.argv,
                             "timeout_seconds": 5})


def send(cfg: Config) -> str:
    async def run() -> str:
        async with SmtpMailer(cfg.smtp, credential(cfg, "smtp")) as m:
            await m.send("a@acme.example", ["b@exemple.example"], MESSAGE)
            return m.method
    return asyncio.run(run())


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_smtp_signs_in_with_the_token(auth: str, smtp_oauth: tuple[OAuthSink, int], tokens: Broker, ca: trustme.CA,
                                      tmp_path: Path, make_config: Callable[..., Config]) -> None:
    sink, port = smtp_oauth
    good = new_token("smtp")
    sink.valid = {good}
    tokens.hand_out(good)
    assert send(smtp_cfg(make_config, port, tokens, ca, tmp_path, auth)) == auth
    assert sink.logins == [f"{auth.upper()} ok"] and len(sink.received) == 1


def test_smtp_an_expired_token_is_replaced_once_mid_run(smtp_oauth: tuple[OAuthSink, int], tokens: Broker,
                                                        ca: trustme.CA, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture,
                                                        make_config: Callable[..., Config]) -> None:
    """Two batches: between them the token expires; the second batch is refused with it (535),
    gets a fresh one and sends; the log says so without the token."""
    caplog.set_level(logging.DEBUG)
    sink, port = smtp_oauth
    old, new = new_token("old"), new_token("new")
    sink.valid = {old}
    tokens.hand_out(old)
    cfg = smtp_cfg(make_config, port, tokens, ca, tmp_path)
    send(cfg)
    sink.valid = {new}
    tokens.hand_out(old, new)
    send(cfg)
    assert sink.logins == ["XOAUTH2 ok", "XOAUTH2 refused", "XOAUTH2 ok"] and len(sink.received) == 2
    logs = relance_logs(caplog)
    assert "refused the access token of relances@acme.example; getting a new one" in logs
    assert not leaked(logs, "relances@acme.example", old, new)


def test_smtp_a_token_refused_twice_fails_the_connection(smtp_oauth: tuple[OAuthSink, int], tokens: Broker,
                                                         ca: trustme.CA, tmp_path: Path,
                                                         make_config: Callable[..., Config]) -> None:
    """Refused again after the retry: ConnectionFailedError (nothing is claimed), no token in it."""
    sink, port = smtp_oauth
    bad = new_token("revoked")
    sink.valid = {new_token("other")}
    tokens.hand_out(bad)
    with pytest.raises(ConnectionFailedError, match="refused the xoauth2 login of 'relances@acme.example': 535") as e:
        send(smtp_cfg(make_config, port, tokens, ca, tmp_path))
    assert bad not in str(e.value) and sink.logins == ["XOAUTH2 refused", "XOAUTH2 refused"]
    assert sink.received == []


def test_smtp_a_failing_broker_is_a_connection_failure(smtp_oauth: tuple[OAuthSink, int], ca: trustme.CA,
                                                       tmp_path: Path, make_config: Callable[..., Config]) -> None:
    _, port = smtp_oauth
    script = tmp_path / "fail.py"
    script.write_text("import sys; print('tok', 'x'*40); sys.stderr.write('vault sealed\\n'); sys.exit(3)")
    cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "starttls", "verify_certificates": False,
                            "username": "relances@acme.example", "auth": "xoauth2",
                            "token_command": [sys.executable, str(script)], "timeout_seconds": 5})
    with pytest.raises(ConnectionFailedError, match=r"smtp\.token_command: .* failed \(exit status 3\): vault sealed"):
        send(cfg)


# --- the token command, alone -----------------------------------------------------------------


def run_command(tmp_path: Path, code: str) -> CommandTokens:
    script = tmp_path / "cmd.py"
    script.write_text(code)
    return CommandTokens([sys.executable, str(script)], "smtp.token_command")


@pytest.mark.parametrize(("code", "message"), [
    ("print('')", "no access token"),
    ("print('abc\\r\\nA1 LOGOUT')", "not one access token"),  # a line break would end the SASL command early
    ("print('Bearer abc def')", "not one access token"),
    ("print('x' * 70000)", "not one access token"),
    ("import time; time.sleep(60)", "did not finish within"),
])
def test_what_the_command_prints_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str,
                                            message: str) -> None:
    monkeypatch.setattr("bot.tokens.COMMAND_SECONDS", 1)
    with pytest.raises(TokenError, match=message) as e:
        run_command(tmp_path, code).token()
    assert "LOGOUT" not in str(e.value)


def test_a_failing_command_never_shows_its_token(tmp_path: Path) -> None:
    """A broker that prints the token and fails, or writes it to stderr: the error hides it."""
    secret = new_token("leak")
    command = run_command(tmp_path, f"import sys; print({secret!r}); "
                                    f"sys.stderr.write('refresh failed for token {secret}\\n'); sys.exit(1)")
    with pytest.raises(TokenError, match=r"failed \(exit status 1\): refresh failed for token \*\*\*") as e:
        command.token()
    assert secret not in str(e.value) and secret[:24] not in str(e.value)


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="'/nonexistent/get-token': no such program"):
        CommandTokens(["/nonexistent/get-token"], "imap.token_command").token()


def test_the_command_runs_without_a_shell(tmp_path: Path) -> None:
    """Shell syntax in an argument is an argument, not a command."""
    marker = tmp_path / "pwned"
    command = CommandTokens([sys.executable, "-c", "import sys; print('tok' + str(len(sys.argv)))",
                             f"; touch {marker}"], "smtp.token_command")
    assert command.token().reveal() == "tok2" and not marker.exists()


def test_check_online_says_how_each_side_logged_in(dovecot: Dovecot, smtp_oauth: tuple[OAuthSink, int],
                                                   tokens: Broker, ca: trustme.CA, tmp_path: Path) -> None:
    """`relance check --online` with xoauth2 on both sides: both log in, each says how; the token
    shows nowhere in what it prints."""
    import subprocess

    from tests.conftest import EXAMPLE, merge
    from tests.test_contract_like import toml_dump

    sink, port = smtp_oauth
    good = new_token("both")
    sink.valid = {good}
    dovecot.accept_tokens(good)
    tokens.hand_out(good)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cfg = merge(EXAMPLE, {
        "database": {"url": f"sqlite:///{tmp_path / 'relance.db'}"},
        "smtp": {"host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": str(ca_file),
                 "username": "relances@acme.example", "auth": "xoauth2", "token_command": tokens.argv},
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": USER, "auth": "xoauth2",
                 "token_command": tokens.argv, "folders": ["INBOX"]}})
    (tmp_path / "config.toml").write_text(toml_dump(cfg))
    run = [sys.executable, "-m", "bot.cli", "--config", str(tmp_path / "config.toml")]
    subprocess.run([*run, "init"], check=True, capture_output=True)
    results = {}
    for lang in ("en", "fr"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")}
        results[lang] = subprocess.run([*run, "check", "--online", "--now", "2026-03-02T10:00:00+01:00"],
                                       capture_output=True, text=True, timeout=60, check=False,
                                       env={**env, "RELANCE_LANG": lang})
    en, fr = results["en"], results["fr"]
    assert en.returncode == 0, en.stderr
    assert "smtp: connected and logged in (xoauth2)" in en.stdout
    assert "imap: connected and logged in (xoauth2)" in en.stdout
    assert "smtp: 127.0.0.1:" in en.stdout and "xoauth2, token from" in en.stdout
    assert "smtp : connecté et authentifié (xoauth2)" in fr.stdout, fr.stderr
    assert "imap : connecté et authentifié (xoauth2)" in fr.stdout
    for r in (en, fr):
        assert good not in r.stdout + r.stderr


def test_no_token_reaches_the_database_or_the_health_record(dovecot: Dovecot, tokens: Broker, engine: Any,
                                                            make_config: Callable[..., Config]) -> None:
    """A pass of the watcher that signs in, then one whose token is refused twice: the failure is
    recorded for `status --health`, and no token is in any row of any table."""
    import threading
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from bot.watcher import Watcher

    good, bad = new_token("good"), new_token("bad")
    dovecot.accept_tokens(good)
    tokens.hand_out(good)
    cfg = imap_cfg(make_config, dovecot, tokens)
    stop = threading.Event()
    watcher = Watcher(engine, cfg, stop, clock=lambda: datetime.now(UTC))
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    watcher.one_pass(source)
    source.close()
    tokens.hand_out(bad)
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    with pytest.raises(MailboxError) as e:
        watcher.one_pass(source)
    stop.set()
    watcher._failed(e.value, source, 0.0, "")  # what the watcher does with it: logs it, records it for --health
    dump = []
    with engine.connect() as c:
        for name in sa.inspect(c).get_table_names():
            dump += [repr(tuple(row)) for row in c.execute(sa.text(f'SELECT * FROM "{name}"'))]
    text = "\n".join(dump)
    assert "refused the xoauth2 login" in text, "the failure is recorded"
    assert good not in text and bad not in text


def test_the_daemon_gets_a_new_token_when_the_server_refuses_the_old_one(
        dovecot: Dovecot, smtp_oauth: tuple[OAuthSink, int], tokens: Broker, ca: trustme.CA, tmp_path: Path) -> None:
    """`relance run` on xoauth2 both ways: it sends what is due and watches the inbox; the token
    then expires and the IMAP server drops every session; the watcher's next login is refused with
    the broker's stale token, asks again, gets in and reads the new mail. The log says so; no
    token is in the log or the database."""
    import json
    import signal
    import subprocess

    import sqlalchemy as sa
    from imapclient import IMAPClient

    from tests.conftest import EXAMPLE, merge
    from tests.test_contract_like import toml_dump
    from tests.test_daemon import LEDGER, wait_for

    sink, port = smtp_oauth
    old, new = new_token("old"), new_token("new")
    sink.valid = {old}
    dovecot.accept_tokens(old)
    tokens.hand_out(old)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    doc = merge(EXAMPLE, {
        "database": {"url": f"sqlite:///{tmp_path / 'relance.db'}"},
        "schedule": {"window": ["00:00", "24:00"], "business_days_only": False, "holidays": ""},
        "smtp": {"host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": str(ca_file), "rate_per_minute": 0,
                 "username": "relances@acme.example", "auth": "xoauth2", "token_command": tokens.argv},
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": USER, "auth": "xoauth2",
                 "token_command": tokens.argv, "folders": ["INBOX"]}})
    (tmp_path / "config.toml").write_text(toml_dump(doc))
    (tmp_path / "ledger.csv").write_text(LEDGER)
    run = [sys.executable, "-m", "bot.cli", "--config", str(tmp_path / "config.toml")]
    subprocess.run([*run, "init"], check=True, capture_output=True)
    subprocess.run([*run, "import", "ledger.csv"], check=True, capture_output=True, cwd=tmp_path)
    proc = subprocess.Popen([*run, "run", "--log-format", "json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(sink.received) == 5)
        wait_for(lambda: tokens.runs >= 3)  # the SMTP login, the watcher's pass and its IDLE
        sink.valid = {new}
        dovecot.accept_tokens(new)  # `old` has expired...
        tokens.hand_out(old, new)  # ...but the broker hands it out once more
        dovecot.kick()  # and the server ends every session: the watcher logs in again
        c = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        c.oauth2_login(USER, new)
        c.append("INBOX", b"From: <c1@exemple.example>\r\nTo: relances@acme.example\r\nSubject: Re: facture F-1\r\n"
                          b"Message-ID: <after-expiry@exemple.example>\r\n\r\nNous avons fait le virement.\r\n")
        c.logout()
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'relance.db'}")

        def stored() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM inbound WHERE message_id = "
                                            "'<after-expiry@exemple.example>'")).scalar() == 1
        wait_for(stored, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("refused the access token of ar@acme.example; getting a new one" in x["message"] for x in lines), err
    assert not leaked(err, USER, old, new)
    dump = []
    with engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            dump += [repr(tuple(row)) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))]
    engine.dispose()
    assert not leaked("\n".join(dump), USER, old, new)
