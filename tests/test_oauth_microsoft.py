"""Microsoft 365 sign-in through MSAL, against a fake Entra ID on loopback (HTTPS with a throwaway
CA): the device flow of `relance login microsoft`, the token cache in its owner-only file, the
silent refresh before expiry and after a server's refusal. Microsoft itself is not reachable here."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from bot import tokenfile
from bot.config import Config
from bot.devicelogin import login
from bot.errors import TokenError
from bot.tokens import MicrosoftTokens
from tests.oauth_fakes import Endpoint, endpoint, new_token

TENANT = "acme-tenant"
CLIENT = "11111111-2222-3333-4444-555555555555"
USER = "ar@acme.example"


def b64url(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


class FakeEntra:
    """Discovery, device code and token endpoints as Entra ID answers them (v2.0)."""

    def __init__(self) -> None:
        self.base = ""
        self.issued: list[str] = []
        self.lifetime = 3600
        self.pending = 1  # polls answered authorization_pending before the person has signed in

    def routes(self) -> dict[str, Any]:
        t = f"/{TENANT}"
        return {f"{t}/v2.0/.well-known/openid-configuration": self.discovery,
                f"{t}/oauth2/v2.0/devicecode": self.devicecode, f"{t}/oauth2/v2.0/token": self.token}

    def discovery(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        t = f"{self.base}/{TENANT}"
        return 200, {"issuer": f"{t}/v2.0", "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
                     "token_endpoint": f"{t}/oauth2/v2.0/token",
                     "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode"}

    def devicecode(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assert form["client_id"] == CLIENT and "https://outlook.office.com/IMAP.AccessAsUser.All" in form["scope"]
        return 200, {"device_code": "dev-ms", "user_code": "MS4CODE9", "verification_uri":
                     "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1,
                     "message": "To sign in, use a web browser..."}

    def token(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        if grant.endswith("device_code"):
            if self.pending:
                self.pending -= 1
                return 400, {"error": "authorization_pending", "error_description": "AADSTS70016: pending"}
        elif grant != "refresh_token" or form.get("refresh_token") != f"rt-{len(self.issued)}":
            return 400, {"error": "invalid_grant", "error_description": "AADSTS70008: the refresh token has expired"}
        self.issued.append(new_token("eyJ0eXAi"))
        now = int(time.time())
        claims = {"iss": f"{self.base}/{TENANT}/v2.0", "aud": CLIENT, "sub": "s", "oid": "oid-1", "tid": TENANT,
                  "iat": now, "exp": now + 3600, "preferred_username": USER}
        return 200, {"token_type": "Bearer", "scope": "https://outlook.office.com/IMAP.AccessAsUser.All "
                     "https://outlook.office.com/SMTP.Send", "expires_in": self.lifetime,
                     "access_token": self.issued[-1], "refresh_token": f"rt-{len(self.issued)}",
                     "id_token": f"{b64url({'alg': 'none'})}.{b64url(claims)}.",
                     "client_info": b64url({"uid": "oid-1", "utid": TENANT})}


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeEntra, Endpoint]]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))  # MSAL speaks through requests
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    fake = FakeEntra()
    with endpoint(fake.routes(), tls=ctx) as ep:
        fake.base = ep.url
        yield fake, ep


def ms_cfg(make_config: Callable[..., Config], ep: Endpoint, tmp_path: Path) -> Config:
    return make_config(oauth={"provider": "microsoft", "client_id": CLIENT, "tenant": TENANT, "authority": ep.url,
                              "token_file": str(tmp_path / "ms.json")},
                       imap={"username": USER, "auth": "xoauth2"}, smtp={"username": USER, "auth": "xoauth2"})


def token_calls(ep: Endpoint) -> list[str]:
    return [form.get("grant_type", "") for path, form in ep.seen if path.endswith("/token")]


def test_device_flow_then_tokens_from_the_cache(entra: tuple[FakeEntra, Endpoint], tmp_path: Path,
                                                make_config: Callable[..., Config]) -> None:
    """`relance login microsoft`: the person is shown the code; MSAL polls until signed in; the
    cache goes to a 0600 file. Then a token comes from the cache without asking Entra again,
    and `fresh` (the server refused it) redeems the refresh token."""
    fake, ep = entra
    cfg = ms_cfg(make_config, ep, tmp_path)
    said: list[str] = []
    done = login(cfg, "microsoft", say=said.append)
    assert "https://microsoft.com/devicelogin" in said[0] and "MS4CODE9" in said[0]
    assert f"as {USER}" in done
    path = tmp_path / "ms.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token_calls(ep) == ["urn:ietf:params:oauth:grant-type:device_code"] * 2, "pending once, then signed in"
    assert fake.issued[0] not in "".join(said) + done

    source = MicrosoftTokens(cfg.oauth, cfg.source, USER)
    assert source.token().reveal() == fake.issued[0]
    assert len(token_calls(ep)) == 2, "a valid token comes from the cache"
    assert source.token(fresh=True).reveal() == fake.issued[1]
    assert token_calls(ep)[-1] == "refresh_token"
    assert json.loads(path.read_text())["provider"] == "microsoft" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MicrosoftTokens(cfg.oauth, cfg.source, USER).token().reveal() == fake.issued[1], "the new one was stored"


def test_a_token_near_its_expiry_is_refreshed_before_use(entra: tuple[FakeEntra, Endpoint], tmp_path: Path,
                                                         make_config: Callable[..., Config]) -> None:
    fake, ep = entra
    fake.pending = 0
    fake.lifetime = 120  # MSAL renews what expires within 5 minutes
    cfg = ms_cfg(make_config, ep, tmp_path)
    login(cfg, "microsoft", say=lambda _: None)
    fake.lifetime = 3600
    assert MicrosoftTokens(cfg.oauth, cfg.source, USER).token().reveal() == fake.issued[1]
    assert token_calls(ep)[-1] == "refresh_token"


def test_an_expired_refresh_token_says_to_sign_in_again(entra: tuple[FakeEntra, Endpoint], tmp_path: Path,
                                                        make_config: Callable[..., Config]) -> None:
    fake, ep = entra
    fake.pending = 0
    cfg = ms_cfg(make_config, ep, tmp_path)
    login(cfg, "microsoft", say=lambda _: None)
    fake.issued.append("revoked")  # the stored refresh token is no longer the one Entra expects
    with pytest.raises(TokenError, match=r"microsoft refused to refresh the token \(invalid_grant: AADSTS70008.*\): "
                                         r"run `relance login microsoft` again"):
        MicrosoftTokens(cfg.oauth, cfg.source, USER).token(fresh=True)


def test_a_cache_without_the_account_says_to_sign_in(entra: tuple[FakeEntra, Endpoint], tmp_path: Path,
                                                     make_config: Callable[..., Config]) -> None:
    """A cache with no account in it (signed out, or written for nobody): sign in again, as whom."""
    fake, ep = entra
    fake.pending = 0
    cfg = ms_cfg(make_config, ep, tmp_path)
    login(cfg, "microsoft", say=lambda _: None)
    doc = tokenfile.read(tmp_path / "ms.json")
    doc["msal_cache"] = json.dumps({"Account": {}, "AccessToken": {}, "RefreshToken": {}, "IdToken": {}})
    tokenfile.write(tmp_path / "ms.json", doc)
    with pytest.raises(TokenError, match=r"no signed-in account for 'ar@acme.example': run `relance login microsoft`"):
        MicrosoftTokens(cfg.oauth, cfg.source, USER).token()


def test_an_unreachable_authority_is_named_plainly(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    """No network to Entra ID: the error names the address and that it cannot be reached."""
    cfg = make_config(oauth={"provider": "microsoft", "client_id": CLIENT, "tenant": TENANT,
                             "authority": "https://127.0.0.1:1", "token_file": str(tmp_path / "ms.json")})
    with pytest.raises(TokenError, match=r"^microsoft: cannot reach https://127\.0\.0\.1:1/acme-tenant: \w+Error$"):
        login(cfg, "microsoft", say=lambda _: None)
    assert not (tmp_path / "ms.json").exists()
