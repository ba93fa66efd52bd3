"""`relance login microsoft|google`: the OAuth2 device-code flow (RFC 8628), once, at a terminal.

The person opens the provider's page on any device, types the code shown here and consents; the
refresh token that comes back is stored in `oauth.token_file` (owner-only, see bot/tokenfile.py),
from which bot/tokens.py gets fresh access tokens for months. Microsoft's side is MSAL's
(`initiate_device_flow`, `acquire_token_by_device_flow`, its serialisable cache); Google's is two
HTTP endpoints, spoken here with the standard library. What the provider sends is not trusted:
codes and addresses are shown only when printable and short, tokens never."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from bot import tokenfile
from bot.config import Config
from bot.errors import TokenError
from bot.i18n import t
from bot.tokens import AUTHORITIES, checked, client_secret, microsoft_app, post_form, provider_error, scopes

Say = Callable[[str], None]
_SHOWN = re.compile(r"[\x21-\x7e]{1,200}")  # a code or an address, as printed for a person


def _shown(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHOWN.fullmatch(value):
        raise TokenError(t("the provider sent no usable {what}", what=t(what)))
    return value


def _invite(say: Say, url: str, code: str, seconds: Any) -> None:
    minutes = seconds // 60 if isinstance(seconds, int) and seconds > 0 else 15
    say(t("To sign in, open {url} in a browser (on any device), enter the code {code} and sign in as the "
          "mailbox's user; this waits for you, at most {n} minutes.", url=url, code=code, n=minutes))


def login(cfg: Config, provider: str, say: Say = print, sleep: Callable[[float], None] = time.sleep) -> str:
    """Run the flow for `provider` as [oauth] configures it; returns what to tell the person."""
    o = cfg.oauth
    if o.provider != provider:
        raise TokenError(f"{cfg.source}: oauth.provider = {o.provider!r}: " + t(
            'expected "{provider}" (with its client_id) to sign in with {provider}', provider=provider))
    path = o.path(cfg.source)
    if not path.parent.is_dir():
        raise TokenError(f"{cfg.source}: oauth.token_file: " + t("no such directory ({path})", path=path.parent))
    if provider == "microsoft":
        return _microsoft(cfg, say)
    return _google(cfg, say, sleep)


def _microsoft(cfg: Config, say: Say) -> str:
    import msal  # noqa: PLC0415

    o = cfg.oauth
    cache = msal.SerializableTokenCache()
    app = microsoft_app(o, cache)
    flow = app.initiate_device_flow(scopes=list(scopes(o)))
    if "user_code" not in flow:
        raise TokenError(t("microsoft refused to start the sign-in ({why})", why=provider_error(flow)))
    _invite(say, _shown(flow.get("verification_uri"), "address"), _shown(flow["user_code"], "code"),
            flow.get("expires_in"))
    result = app.acquire_token_by_device_flow(flow)  # polls at the interval Microsoft asked for
    if "access_token" not in result:
        raise TokenError(t("microsoft did not sign you in ({why})", why=provider_error(result)))
    checked(result["access_token"], "microsoft")
    path = o.path(cfg.source)
    tokenfile.write(path, {"provider": "microsoft", "client_id": o.client_id, "msal_cache": cache.serialize()})
    who = ", ".join(a.get("username", "?") for a in app.get_accounts()) or "?"
    return t("signed in to {provider} as {user}; the refresh token is in {path} (readable by you alone)",
             provider="microsoft", user=who, path=path)


def _google(cfg: Config, say: Say, sleep: Callable[[float], None]) -> str:
    o = cfg.oauth
    base = (o.authority or AUTHORITIES["google"]).rstrip("/")
    where = "google"
    status, start = post_form(base + "/device/code", {"client_id": o.client_id, "scope": " ".join(scopes(o))}, where)
    if status != 200 or not isinstance(start.get("device_code"), str):
        raise TokenError(t("google refused to start the sign-in ({why})", why=provider_error(start)))
    url = _shown(start.get("verification_url") or start.get("verification_uri"), "address")
    _invite(say, url, _shown(start.get("user_code"), "code"), start.get("expires_in"))
    interval = start.get("interval")
    interval = interval if isinstance(interval, int) and 0 < interval <= 60 else 5
    lifetime = start.get("expires_in")
    deadline = time.monotonic() + (lifetime if isinstance(lifetime, int) and 0 < lifetime <= 3600 else 900)
    secret = client_secret(o)
    while True:
        sleep(interval)
        status, answer = post_form(base + "/token", {
            "client_id": o.client_id, "client_secret": secret.reveal() if secret else "",
            "device_code": start["device_code"], "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}, where)
        error = answer.get("error")
        if status == 200 and isinstance(answer.get("refresh_token"), str):
            break
        if error == "authorization_pending" and time.monotonic() < deadline:
            continue
        if error == "slow_down" and time.monotonic() < deadline:  # RFC 8628 3.5: 5 s more from now on
            interval += 5
            continue
        raise TokenError(t("google did not sign you in ({why})", why=provider_error(answer) if error else status))
    token = checked(answer.get("access_token", ""), where)
    refresh = checked(answer["refresh_token"], where)
    lifetime = answer.get("expires_in")
    lifetime = lifetime if isinstance(lifetime, int) and 0 < lifetime <= 86400 else 3600
    path = o.path(cfg.source)
    tokenfile.write(path, {"provider": "google", "client_id": o.client_id, "refresh_token": refresh.reveal(),
                           "access_token": token.reveal(), "expires_at": int(time.time()) + lifetime})
    return t("signed in to {provider} as {user}; the refresh token is in {path} (readable by you alone)",
             provider="google", user=cfg.imap.username or cfg.smtp.username, path=path)
