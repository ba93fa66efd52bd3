"""Real servers for the integration tests: aiosmtpd on loopback, a throwaway PostgreSQL cluster.

Where PostgreSQL is not installed the tests that need it skip with how to install it, except in
CI (CI=true), where they fail."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiosmtpd.controller import Controller

from bot.sandbox import free_port, wait_port


@dataclass
class SmtpSink:
    """An aiosmtpd handler that keeps every message and refuses the recipients it is told to."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> "550 reason"
    fail_data: list[str] = field(default_factory=list)  # answers to give to the next DATA commands

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.fail_data:
            return self.fail_data.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(raw, policy=policy.default) for _, _, raw in self.received]  # type: ignore[misc]


@contextmanager
def smtp_server(**controller_kwargs: Any) -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port, **controller_kwargs)
    ctl.start()
    try:
        yield sink, port
    finally:
        ctl.stop()


def missing(server: str, package: str) -> NoReturn:
    """Skip a test whose server is not installed, saying how to install it; in CI, fail instead."""
    msg = f"{server} is not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}: CI must run these tests")
    pytest.skip(msg)


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port, which a test can stop and start again
    (the database unreachable for a while)."""

    bindir: str
    base: str
    port: int
    fsync: bool = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://relance@127.0.0.1:{self.port}"

    def _as_pg(self, cmd: str) -> None:
        subprocess.run(["su", "postgres", "-c", cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_pg(f"{self.bindir}/pg_ctl -D {self.base}/data -o '-k {self.base} -p {self.port} "
                    f"-c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'}' "
                    f"-l {self.base}/log -w start")

    def stop(self) -> None:
        """Stop at once, ending every session (`-m immediate`, as a crash or a cut does)."""
        self._as_pg(f"{self.bindir}/pg_ctl -D {self.base}/data -m immediate -w stop")


@contextmanager
def postgres_server(fsync: bool = False) -> Iterator[Postgres]:
    """Start a throwaway cluster on a loopback port (database `postgres`); removed at the end.
    `fsync` off for the tests (nothing to keep); on for a benchmark, as a server runs."""
    bindir = _pg_bin()
    if bindir is None:
        missing("PostgreSQL", "postgresql")
    base = tempfile.mkdtemp(prefix="relance-pg-")
    os.chmod(base, 0o755)
    shutil.chown(base, "postgres", "postgres")
    server = Postgres(bindir, base, free_port(), fsync)
    server._as_pg(f"{bindir}/initdb -D {base}/data -A trust -U relance")
    server.start()
    try:
        yield server
    finally:
        server._as_pg(f"{bindir}/pg_ctl -D {base}/data -m fast -w stop")
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres_cluster(fsync: bool = False) -> Iterator[str]:
    """A cluster's base URL: $RELANCE_TEST_PG_URL's when set, else a throwaway one's."""
    url = os.environ.get("RELANCE_TEST_PG_URL")
    if url:
        yield url
        return
    with postgres_server(fsync) as server:
        yield server.url


@contextmanager
def fresh_database(base: str, prefix: str) -> Iterator[str]:
    """The URL of an empty database of its own on the cluster at `base`, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    name = prefix + uuid.uuid4().hex[:12]
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


class TcpProxy:
    """A loopback TCP proxy to `port` that a test can cut: `cut()` closes every connection that
    goes through it at that moment (both ends, as a NAT or a firewall that forgets them), and
    new connections go through again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.bytes = 0  # relayed, both ways: a test can tell a transfer is under way
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.open += [client, server]
            ends = threading.Barrier(2)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b, ends), daemon=True, name="proxy-pipe").start()

    def _pipe(self, src: socket.socket, dst: socket.socket, ends: threading.Barrier) -> None:
        try:
            while data := src.recv(65536):
                self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            if ends.wait() == 0:  # both ways ended: let the sockets go
                with self.lock:
                    self.open = [s for s in self.open if s not in (src, dst)]
                src.close()
                dst.close()

    def cut(self) -> int:
        """Close every connection now; returns how many there were."""
        with self.lock:
            conns, self.open = self.open, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        return len(conns) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


@dataclass
class Dovecot:
    """A throwaway Dovecot on a loopback port: one user, a maildir in a temp dir."""

    base: str
    port: int
    user: str = "ar@acme.example"
    password: str = "secret"

    def start(self) -> None:
        # dovecot forks into the background: its output must not be a pipe we wait on.
        subprocess.run(["dovecot", "-c", f"{self.base}/dovecot.conf"], check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def accept_tokens(self, *tokens: str) -> None:
        """From now on the user signs in with one of `tokens` (Dovecot's XOAUTH2 and OAUTHBEARER
        check the bearer token against the passdb's password); every other token is refused."""
        path = Path(f"{self.base}/passwd")
        tmp = path.with_suffix(".new")
        tmp.write_text("".join(f"{self.user}:{{PLAIN}}{tok}\n" for tok in tokens[:1]))
        # Dovecot reads the file again when its mtime (whole seconds) or size changes: move it on.
        stamp = max(time.time(), path.stat().st_mtime + 1) if path.exists() else time.time()
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)
        time.sleep(1.1)  # and it looks at most once a second

    def kick(self) -> None:
        """End every IMAP session of the user, as a provider does when their token expires."""
        subprocess.run(["doveadm", "-c", f"{self.base}/dovecot.conf", "kick", self.user], check=True, timeout=30,
                       capture_output=True)

    def stop(self) -> None:
        pid_file = f"{self.base}/run/master.pid"
        if not os.path.exists(pid_file):
            return
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, 9)


def _dovecot_conf(base: str, port: int, tls: bool = False, mechanisms: str = "plain login") -> str:
    ssl = f"ssl = yes\nssl_cert = <{base}/cert.pem\nssl_key = <{base}/key.pem" if tls else "ssl = no"
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
default_internal_group = dovecot
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    # unreachable: no growing delay after a failed login (the tests fail logins on purpose)
    mode = 0
  }}
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
"""


@contextmanager
def dovecot_server(cert_pem: bytes = b"", key_pem: bytes = b"", mechanisms: str = "plain login"
                   ) -> Iterator[Dovecot]:
    """Start Dovecot for one test module; skip (fail in CI) where it is not installed. With a
    certificate and its key, it offers STARTTLS. With `mechanisms = "xoauth2 oauthbearer"`, the
    passwd-file's password is the access token the mechanism must carry (`Dovecot.accept_tokens`)."""
    if shutil.which("dovecot") is None:
        missing("Dovecot", "dovecot-imapd")
    base = tempfile.mkdtemp(prefix="relance-dovecot-")
    os.chmod(base, 0o755)
    for sub in ("run", "state", "mail"):
        os.makedirs(f"{base}/{sub}")
    shutil.chown(f"{base}/mail", "dovecot", "dovecot")
    server = Dovecot(base, free_port())
    with open(f"{base}/passwd", "w") as f:
        f.write(f"{server.user}:{{PLAIN}}{server.password}\n")
    if cert_pem:
        Path(f"{base}/cert.pem").write_bytes(cert_pem)
        Path(f"{base}/key.pem").write_bytes(key_pem)
    with open(f"{base}/dovecot.conf", "w") as f:
        f.write(_dovecot_conf(base, server.port, tls=bool(cert_pem), mechanisms=mechanisms))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
