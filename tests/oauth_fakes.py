"""What OAuth2 sign-in is tested against: a token broker command, an SMTP server that checks the
XOAUTH2 / OAUTHBEARER string, and a provider's token endpoints on loopback (http.server)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult

from tests.servers import SmtpSink

# Pops the first token of the queue file at each run (under a lock); the last one stays.
BROKER = """\
import fcntl, pathlib, sys
queue = pathlib.Path(sys.argv[1])
with open(queue.with_suffix(".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    tokens = queue.read_text().split()
    if len(tokens) > 1:
        queue.write_text("\\n".join(tokens[1:]))
    with open(queue.with_suffix(".runs"), "a") as runs:
        runs.write("x")
print(tokens[0])
"""


def new_token(label: str) -> str:
    """A token as providers make them: long, opaque, unique to this test."""
    return f"{label}.{uuid.uuid4().hex}{uuid.uuid4().hex}"


@dataclass
class Broker:
    """A site's token broker: `argv` for token_command; `hand_out` sets what its next runs print."""

    queue: Path

    @property
    def argv(self) -> list[str]:
        return [sys.executable, str(self.queue.with_name("broker.py")), str(self.queue)]

    def hand_out(self, *tokens: str) -> None:
        self.queue.write_text("\n".join(tokens))

    @property
    def runs(self) -> int:
        path = self.queue.with_suffix(".runs")
        return len(path.read_text()) if path.exists() else 0


def broker(folder: Path) -> Broker:
    (folder / "broker.py").write_text(BROKER)
    return Broker(folder / "queue.txt")


_XOAUTH2 = re.compile(rb"user=([^\x01]+)\x01auth=Bearer ([^\x01]+)\x01\x01")
_OAUTHBEARER = re.compile(rb"n,a=([^,]*),\x01auth=Bearer ([^\x01]+)\x01\x01")


@dataclass
class OAuthSink(SmtpSink):
    """An SMTP server (aiosmtpd handler) that signs `user` in with XOAUTH2 or OAUTHBEARER when the
    bearer token is one of `valid`; refusals as Gmail and Microsoft give them (a JSON challenge,
    then 535)."""

    user: str = "relances@acme.example"
    valid: set[str] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)  # "XOAUTH2 ok", "XOAUTH2 refused", ...

    async def _check(self, server: Any, args: list[str], pattern: re.Pattern[bytes], mech: str) -> AuthResult:
        blob = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
        m = pattern.fullmatch(blob) if isinstance(blob, bytes) else None
        if m and m[1].decode().replace("=2C", ",").replace("=3D", "=") == self.user and m[2].decode() in self.valid:
            self.logins.append(f"{mech} ok")
            return AuthResult(success=True, auth_data=m[1])
        self.logins.append(f"{mech} refused")
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"}))
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check(server, args, _XOAUTH2, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check(server, args, _OAUTHBEARER, "OAUTHBEARER")


Route = Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]]


@dataclass
class Endpoint:
    """A provider's endpoints on loopback: `routes` maps a path to what answers it; every request
    is kept in `seen` (path, form)."""

    url: str
    routes: dict[str, Route]
    seen: list[tuple[str, dict[str, str]]]


@contextmanager
def endpoint(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Iterator[Endpoint]:
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, form: dict[str, str]) -> None:
            path = urllib.parse.urlsplit(self.path).path
            seen.append((path, form))
            route = routes.get(path)
            status, doc = route(path, form) if route else (404, {"error": "not_found"})
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self._answer(form)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield Endpoint(f"{scheme}://127.0.0.1:{server.server_address[1]}", routes, seen)
    finally:
        server.shutdown()
        server.server_close()
