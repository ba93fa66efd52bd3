"""OAuth2 access tokens for signing in to IMAP and SMTP with SASL XOAUTH2 or OAUTHBEARER.

Three sources, one interface (`TokenSource.token`): a site's own token broker run as a command
(`token_command`), or the refresh token `relance login` stored for Microsoft (an MSAL cache) or
Google. A token is a `Secret` from the moment it is read: it never reaches a log line, an error
message or the database. `token(fresh=True)` is asked for after a server refused the token it
was given: the command runs again, the file-backed sources refresh whatever their expiry says."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from bot import tokenfile
from bot.config import Config, OAuthConfig, Secret
from bot.errors import TokenError
from bot.i18n import t

# RFC 6750 b64token: what may follow "Bearer ". Anything else (a space, a line break that would
# end the SASL command early) is refused before it reaches a server.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9\-._~+/=]{24,}")  # hidden from any text we show
MAX_TOKEN = 65536
COMMAND_SECONDS = 30
HTTP_SECONDS = 30
REFRESH_MARGIN = 300  # seconds: a token closer than this to its expiry is refreshed before use

SCOPES = {
    "microsoft": ("https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"),
    "google": ("https://mail.google.com/",),
}
AUTHORITIES = {"microsoft": "https://login.microsoftonline.com", "google": "https://oauth2.googleapis.com"}


class TokenSource(Protocol):
    def token(self, fresh: bool = False) -> Secret:
        """An access token; `fresh` after a server refused the last one."""
        ...

    def describe(self) -> str:
        """Where tokens come from, for `relance check` (never a token)."""
        ...

    def check(self) -> None:
        """What can be checked without the network: the program is there, the token file is safe
        and was written for this provider. TokenError otherwise."""
        ...


Credential = Secret | TokenSource | None


def checked(raw: str, where: str) -> Secret:
    """`raw` as a token, or TokenError saying what was wrong with it (and not what it was)."""
    token = raw.strip()
    if not token:
        raise TokenError(f"{where}: " + t("no access token (empty output)"))
    if len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
        raise TokenError(f"{where}: " + t("what was printed is not one access token ({n} characters; expected "
                                          "one line of letters, digits and -._~+/=)", n=len(token)))
    return Secret(token)


def hide(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with the secrets, and anything long enough to be a token, replaced by "***"."""
    for s in secrets:
        if len(s) >= 8:
            text = text.replace(s, "***")
    text = _TOKEN_LIKE.sub("***", text)
    return "".join(c if c.isprintable() else " " for c in text)[:300]


class CommandTokens:
    """A site's token broker: `argv` runs without a shell, its standard output is the token."""

    def __init__(self, argv: Sequence[str], where: str) -> None:
        self.argv = tuple(argv)
        self.where = where

    def describe(self) -> str:
        return t("token from {where} ({program})", where=self.where, program=self.argv[0])

    def check(self) -> None:
        program = self.argv[0]
        found = shutil.which(program)
        if found is None:
            raise TokenError(f"{self.where}: " + t("{program}: no such program", program=repr(program)))
        if not os.access(found, os.X_OK):
            raise TokenError(f"{self.where}: " + t("{program}: not executable", program=repr(program)))

    def token(self, fresh: bool = False) -> Secret:
        program = self.argv[0]
        try:
            done = subprocess.run(self.argv, stdin=subprocess.DEVNULL, capture_output=True,  # noqa: S603 - the
                                  timeout=COMMAND_SECONDS, check=False)  # configured argv, no shell
        except FileNotFoundError:
            raise TokenError(f"{self.where}: " + t("{program}: no such program", program=repr(program))) from None
        except PermissionError:
            raise TokenError(f"{self.where}: " + t("{program}: not executable", program=repr(program))) from None
        except subprocess.TimeoutExpired:
            raise TokenError(f"{self.where}: " + t("{program} did not finish within {n} s", program=repr(program),
                                                   n=COMMAND_SECONDS)) from None
        except OSError as e:
            raise TokenError(f"{self.where}: {program!r}: {e.strerror or type(e).__name__}") from None
        out = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
            said = ": " + hide(lines[-1], out.split()) if lines else ""
            raise TokenError(f"{self.where}: " + t("{program} failed (exit status {code}){said}",
                                                   program=repr(program), code=done.returncode, said=said))
        return checked(out, self.where)


_locks: dict[Path, threading.Lock] = {}
_locks_lock = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    """One refresh at a time per token file in this process (the watcher's threads share it)."""
    with _locks_lock:
        return _locks.setdefault(path.resolve(), threading.Lock())


def _context() -> ssl.SSLContext:
    return ssl.create_default_context()


def post_form(url: str, fields: dict[str, str], where: str) -> tuple[int, dict[str, Any]]:
    """POST a form, read a JSON object: (HTTP status, object). TokenError when unreachable or not JSON."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_SECONDS, context=_context()) as r:  # noqa: S310 - https,
            status, body = r.status, r.read(tokenfile.MAX_BYTES)  # or http on loopback (config checks it)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(tokenfile.MAX_BYTES)
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise TokenError(f"{where}: " + t("cannot reach {url}: {why}", url=url, why=why)) from None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise TokenError(f"{where}: " + t("{url} answered {status} with something that is not JSON", url=url,
                                          status=status))
    return status, doc


def provider_error(doc: dict[str, Any]) -> str:
    """The OAuth error a provider gave (RFC 6749 5.2), shortened and with nothing token-like."""
    code = doc.get("error")
    text = doc.get("error_description")
    parts = [str(x) for x in (code, text) if isinstance(x, str) and x]
    return hide(": ".join(parts)) or "?"


class GoogleTokens:
    """The refresh token `relance login google` stored; access tokens refreshed before they expire."""

    def __init__(self, oauth: OAuthConfig, source: str, clock: Callable[[], float] = time.time) -> None:
        self.oauth = oauth
        self.path = oauth.path(source)
        self.clock = clock
        self.url = (oauth.authority or AUTHORITIES["google"]).rstrip("/") + "/token"

    def describe(self) -> str:
        return t("token from {path} (google, refreshed as needed)", path=self.path)

    def check(self) -> None:
        self._read()

    def _read(self) -> dict[str, Any]:
        doc = tokenfile.read(self.path)
        if doc.get("provider") != "google" or not isinstance(doc.get("refresh_token"), str):
            raise TokenError(f"{self.path}: " + t("not a token file of `relance login {provider}`: run it again",
                                                  provider="google"))
        return doc

    def token(self, fresh: bool = False) -> Secret:
        where = str(self.path)
        with _lock(self.path):
            doc = self._read()
            access, expires = doc.get("access_token"), doc.get("expires_at")
            if not fresh and isinstance(access, str) and isinstance(expires, int | float) \
                    and expires - self.clock() > REFRESH_MARGIN:
                return checked(access, where)
            secret = client_secret(self.oauth)
            status, answer = post_form(self.url, {
                "client_id": self.oauth.client_id, "client_secret": secret.reveal() if secret else "",
                "refresh_token": doc["refresh_token"], "grant_type": "refresh_token"}, where)
            if status != 200 or not isinstance(answer.get("access_token"), str):
                raise TokenError(f"{where}: " + t("google refused to refresh the token ({why}): run `relance login "
                                                  "google` again", why=provider_error(answer)))
            token = checked(answer["access_token"], where)
            lifetime = answer.get("expires_in")
            lifetime = lifetime if isinstance(lifetime, int) and 0 < lifetime <= 86400 else 3600
            doc.update(access_token=token.reveal(), expires_at=int(self.clock()) + lifetime)
            if isinstance(answer.get("refresh_token"), str):  # a provider may rotate it
                doc["refresh_token"] = answer["refresh_token"]
            tokenfile.write(self.path, doc)
            return token


def client_secret(oauth: OAuthConfig) -> Secret | None:
    """The OAuth client's secret from the environment (Google's device flow wants one)."""
    value = os.environ.get(oauth.client_secret_env)
    return Secret(value) if value else None


def microsoft_app(oauth: OAuthConfig, cache: Any) -> Any:
    """An MSAL public client application on `cache` (msal is imported here, for those who use it)."""
    import msal  # noqa: PLC0415

    base = (oauth.authority or AUTHORITIES["microsoft"]).rstrip("/")
    custom = bool(oauth.authority) and not oauth.authority.startswith(AUTHORITIES["microsoft"])
    try:
        return msal.PublicClientApplication(oauth.client_id, authority=f"{base}/{oauth.tenant}", token_cache=cache,
                                            instance_discovery=False if custom else None)
    except OSError as e:  # requests' errors are OSErrors: the authority cannot be reached
        raise TokenError("microsoft: " + t("cannot reach {url}: {why}", url=f"{base}/{oauth.tenant}",
                                           why=type(e).__name__)) from None
    except ValueError as e:  # not an OpenID provider, or not an https:// address
        raise TokenError("microsoft: " + t("cannot use {url}: {why}", url=f"{base}/{oauth.tenant}",
                                           why=shown(str(e)))) from None


def shown(text: str) -> str:
    """A server's or a library's words, for a person: one line, printable, short."""
    first = text.splitlines()[0] if text else ""
    return "".join(c if c.isprintable() else " " for c in first)[:200]


class MicrosoftTokens:
    """The MSAL token cache `relance login microsoft` stored; MSAL refreshes before expiry."""

    def __init__(self, oauth: OAuthConfig, source: str, username: str) -> None:
        self.oauth = oauth
        self.path = oauth.path(source)
        self.username = username

    def describe(self) -> str:
        return t("token from {path} (microsoft, refreshed as needed)", path=self.path)

    def check(self) -> None:
        self._read()

    def _read(self) -> dict[str, Any]:
        doc = tokenfile.read(self.path)
        if doc.get("provider") != "microsoft" or not isinstance(doc.get("msal_cache"), str):
            raise TokenError(f"{self.path}: " + t("not a token file of `relance login {provider}`: run it again",
                                                  provider="microsoft"))
        return doc

    def token(self, fresh: bool = False) -> Secret:
        import msal  # noqa: PLC0415

        where = str(self.path)
        with _lock(self.path):
            doc = self._read()
            cache = msal.SerializableTokenCache()
            cache.deserialize(doc["msal_cache"])
            app = microsoft_app(self.oauth, cache)
            accounts = app.get_accounts(username=self.username) or app.get_accounts()
            if len(accounts) != 1:
                raise TokenError(f"{where}: " + t("no signed-in account for {user}: run `relance login microsoft` "
                                                  "and sign in as {user}", user=repr(self.username)))
            result = app.acquire_token_silent_with_error(list(scopes(self.oauth)), accounts[0], force_refresh=fresh)
            if cache.has_state_changed:
                doc["msal_cache"] = cache.serialize()
                tokenfile.write(self.path, doc)
            if not result or "access_token" not in result:
                why = provider_error(result) if result else t("no refresh token in the cache")
                raise TokenError(f"{where}: " + t("microsoft refused to refresh the token ({why}): run `relance login "
                                                  "microsoft` again", why=why))
            return checked(result["access_token"], where)


def scopes(oauth: OAuthConfig) -> tuple[str, ...]:
    return oauth.scopes or SCOPES.get(oauth.provider, ())


def credential(cfg: Config, section: Literal["smtp", "imap"]) -> Credential:
    """What `section` signs in with: its password (None: no login), or where its tokens come from."""
    s = cfg.smtp if section == "smtp" else cfg.imap
    if s.auth == "password":
        return s.password(cfg.source)
    if s.token_command:
        return CommandTokens(s.token_command, f"{cfg.source}: {section}.token_command")
    if cfg.oauth.provider == "microsoft":
        return MicrosoftTokens(cfg.oauth, cfg.source, s.username)
    return GoogleTokens(cfg.oauth, cfg.source)


def sasl(mechanism: str, user: str, token: Secret) -> bytes:
    """The client's first (and only) SASL message for XOAUTH2 or OAUTHBEARER (RFC 7628), not encoded."""
    if mechanism == "oauthbearer":
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={authzid},\x01auth=Bearer {token.reveal()}\x01\x01".encode()
    return f"user={user}\x01auth=Bearer {token.reveal()}\x01\x01".encode()


def sasl_b64(mechanism: str, user: str, token: Secret) -> str:
    return base64.b64encode(sasl(mechanism, user, token)).decode("ascii")
