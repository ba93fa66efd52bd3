"""Where access tokens come from: the owner-only token file, Google's refresh and device flow
against a fake token endpoint on loopback, and the config that chooses them."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import tokenfile
from bot.config import Config
from bot.devicelogin import login
from bot.errors import ConfigError, TokenError
from bot.mailbox import ImapSource
from bot.tokens import GoogleTokens, credential
from tests.conftest import EXAMPLE, merge
from tests.oauth_fakes import Endpoint, endpoint, new_token
from tests.servers import Dovecot, dovecot_server

NOW = 1_900_000_000.0


# --- the token file ----------------------------------------------------------------------------


def test_the_token_file_is_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    old = os.umask(0)
    try:
        tokenfile.write(path, {"provider": "google", "refresh_token": "r"})
        tokenfile.write(path, {"provider": "google", "refresh_token": "r2"})  # replaced, still 0600
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokenfile.read(path)["refresh_token"] == "r2"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"], "no temporary file left behind"


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    tokenfile.write(path, {"provider": "google"})
    path.chmod(0o644)
    with pytest.raises(TokenError, match=r"others can read or write it \(mode 0o644\): refused; run `chmod 600"):
        tokenfile.read(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    tokenfile.write(path, {"provider": "google"})
    os.chown(path, 65534, 65534)
    with pytest.raises(TokenError, match=r"belongs to another user \(uid 65534\)"):
        tokenfile.read(path)


def test_a_symlink_missing_file_or_garbage_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    tokenfile.write(target, {"provider": "google"})
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(TokenError, match="cannot open the token file"):
        tokenfile.read(tmp_path / "link.json")
    with pytest.raises(TokenError, match="no token file: run `relance login` once"):
        tokenfile.read(tmp_path / "absent.json")
    tokenfile.write(target, {"provider": "google"})
    target.write_text("[1, 2]")
    with pytest.raises(TokenError, match="not JSON"):
        tokenfile.read(target)


# --- Google: refresh before expiry, and after a refusal --------------------------------------------


@pytest.fixture
def google(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Endpoint, list[str]]]:
    """A Google-like token endpoint: each refresh hands out the next of `issued`."""
    issued: list[str] = []

    def token(path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == "refresh-1" \
                and form.get("client_secret") == "s3cret":
            issued.append(new_token("ya29"))
            return 200, {"access_token": issued[-1], "expires_in": 3599, "token_type": "Bearer"}
        return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}

    monkeypatch.setenv("RELANCE_OAUTH_CLIENT_SECRET", "s3cret")
    with endpoint({"/token": token}) as ep:
        yield ep, issued


def google_cfg(make_config: Callable[..., Config], ep: Endpoint, tmp_path: Path, **imap: Any) -> Config:
    return make_config(oauth={"provider": "google", "client_id": "cid.apps.googleusercontent.com",
                              "authority": ep.url, "token_file": str(tmp_path / "google.json")},
                       imap={"username": "ar@acme.example", "auth": "xoauth2", **imap})


def stored(tmp_path: Path, access: str, expires_at: float, refresh: str = "refresh-1") -> Path:
    path = tmp_path / "google.json"
    tokenfile.write(path, {"provider": "google", "client_id": "cid", "refresh_token": refresh,
                           "access_token": access, "expires_at": int(expires_at)})
    return path


@pytest.mark.parametrize(("expires_in", "fresh", "refreshed"), [
    (3600, False, False),   # valid for an hour: used as it is
    (60, False, True),      # expires within the margin: refreshed before use
    (-10, False, True),     # expired
    (3600, True, True),     # the server refused it: refreshed whatever its expiry
])
def test_google_access_token_refreshed_before_expiry(google: tuple[Endpoint, list[str]], tmp_path: Path,
                                                     make_config: Callable[..., Config], expires_in: int,
                                                     fresh: bool, refreshed: bool) -> None:
    ep, issued = google
    cfg = google_cfg(make_config, ep, tmp_path)
    path = stored(tmp_path, "ya29.current", NOW + expires_in)
    source = GoogleTokens(cfg.oauth, cfg.source, clock=lambda: NOW)
    got = source.token(fresh=fresh).reveal()
    assert got == (issued[-1] if refreshed else "ya29.current")
    assert len(ep.seen) == (1 if refreshed else 0)
    doc = tokenfile.read(path)
    assert doc["access_token"] == got and stat.S_IMODE(path.stat().st_mode) == 0o600
    if refreshed:
        assert doc["expires_at"] == int(NOW) + 3599 and ep.seen[0][1]["grant_type"] == "refresh_token"


def test_google_refusing_the_refresh_says_to_sign_in_again(google: tuple[Endpoint, list[str]], tmp_path: Path,
                                                           make_config: Callable[..., Config]) -> None:
    ep, _ = google
    cfg = google_cfg(make_config, ep, tmp_path)
    stored(tmp_path, "ya29.old", NOW - 1, refresh="refresh-revoked")
    with pytest.raises(TokenError, match=r"google refused to refresh the token \(invalid_grant: Token has been "
                                         r"expired or revoked\.\): run `relance login google` again") as e:
        GoogleTokens(cfg.oauth, cfg.source, clock=lambda: NOW).token()
    assert "refresh-revoked" not in str(e.value)


def test_an_unreachable_endpoint_is_named(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    cfg = make_config(oauth={"provider": "google", "client_id": "cid", "authority": "http://127.0.0.1:1",
                             "token_file": str(tmp_path / "google.json")})
    stored(tmp_path, "ya29.old", NOW - 1)
    with pytest.raises(TokenError, match=r"cannot reach http://127\.0\.0\.1:1/token"):
        GoogleTokens(cfg.oauth, cfg.source, clock=lambda: NOW).token()


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server(mechanisms="xoauth2") as d:
        yield d


def test_google_token_refused_by_the_server_is_refreshed_and_retried(google: tuple[Endpoint, list[str]],
                                                                     dovecot: Dovecot, tmp_path: Path,
                                                                     make_config: Callable[..., Config]) -> None:
    """Real Dovecot: the stored access token is not expired by its clock but the server has revoked
    it; Relance refreshes once at the token endpoint, and the new token gets in."""
    ep, issued = google
    revoked = new_token("ya29")
    stored(tmp_path, revoked, 4_000_000_000)
    cfg = google_cfg(make_config, ep, tmp_path, host="127.0.0.1", port=dovecot.port, tls="none")
    issued_next = []

    def grant(path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        issued_next.append(new_token("ya29"))
        dovecot.accept_tokens(issued_next[-1])
        return 200, {"access_token": issued_next[-1], "expires_in": 3599}

    dovecot.accept_tokens(new_token("someone-else"))
    ep.routes["/token"] = grant
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    try:
        source.select("INBOX")
    finally:
        source.close()
    assert len(issued_next) == 1 and not issued and source.method == "xoauth2"
    assert tokenfile.read(tmp_path / "google.json")["access_token"] == issued_next[0]


# --- Google: the device flow ---------------------------------------------------------------------


def device_endpoints(answers: list[tuple[int, dict[str, Any]]], code: str = "ABCD-EFGH") -> dict[str, Any]:
    def device(path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        return 200, {"device_code": "dev-123", "user_code": code, "verification_url": "https://www.google.com/device",
                     "expires_in": 1800, "interval": 5}

    def token(path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assert form["device_code"] == "dev-123" and form["grant_type"].endswith("device_code")
        return answers.pop(0)

    return {"/device/code": device, "/token": token}


def test_google_device_flow_stores_the_refresh_token_owner_only(tmp_path: Path, make_config: Callable[..., Config],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending, slow down (5 s more), then the tokens: the person saw the code and the address;
    the refresh token is in a 0600 file; neither token was printed."""
    monkeypatch.setenv("RELANCE_OAUTH_CLIENT_SECRET", "s3cret")
    access, refresh = new_token("ya29"), new_token("1//refresh")
    answers = [(428, {"error": "authorization_pending"}), (429, {"error": "slow_down"}),
               (200, {"access_token": access, "refresh_token": refresh, "expires_in": 3599})]
    said: list[str] = []
    waits: list[float] = []
    with endpoint(device_endpoints(answers)) as ep:
        cfg = google_cfg(make_config, ep, tmp_path)
        done = login(cfg, "google", say=said.append, sleep=waits.append)
    assert waits == [5, 5, 10]
    assert "https://www.google.com/device" in said[0] and "ABCD-EFGH" in said[0]
    path = tmp_path / "google.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and str(path) in done
    doc = json.loads(path.read_text())
    assert doc["refresh_token"] == refresh and doc["access_token"] == access and doc["provider"] == "google"
    assert all(access not in s and refresh not in s for s in [*said, done])


@pytest.mark.parametrize(("answer", "message"), [
    ((403, {"error": "access_denied"}), r"google did not sign you in \(access_denied\)"),
    ((400, {"error": "expired_token"}), r"google did not sign you in \(expired_token\)"),
    ((200, {"access_token": "a b", "refresh_token": "r"}), "not one access token"),
])
def test_google_device_flow_failures(tmp_path: Path, make_config: Callable[..., Config], answer: Any,
                                     message: str) -> None:
    with endpoint(device_endpoints([answer])) as ep:
        cfg = google_cfg(make_config, ep, tmp_path)
        with pytest.raises(TokenError, match=message):
            login(cfg, "google", say=lambda _: None, sleep=lambda _: None)
    assert not (tmp_path / "google.json").exists()


def test_a_code_that_is_not_printable_is_not_shown(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    """What the provider sends is not trusted: a terminal escape in the code is refused."""
    with endpoint(device_endpoints([], code="\x1b]0;pwned\x07")) as ep:
        cfg = google_cfg(make_config, ep, tmp_path)
        with pytest.raises(TokenError, match="no usable code"):
            login(cfg, "google", say=lambda _: None, sleep=lambda _: None)


def test_login_needs_the_provider_configured(make_config: Callable[..., Config]) -> None:
    with pytest.raises(TokenError, match=r"oauth\.provider = '': expected \"microsoft\""):
        login(make_config(), "microsoft")


# --- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("over", "message"), [
    ({"smtp": {"auth": "kerberos"}}, r"smtp\.auth = 'kerberos': expected one of 'password', 'xoauth2', 'oauthbearer'"),
    ({"imap": {"auth": "xoauth2"}}, r"imap\.auth = 'xoauth2': expected imap\.token_command, or \[oauth\] provider"),
    ({"smtp": {"token_command": ["get-token"]}}, r"smtp\.token_command: only used with smtp\.auth = \"xoauth2\""),
    ({"smtp": {"auth": "xoauth2", "username": "", "token_command": ["t"]}}, r"smtp\.username = '': expected the "),
    ({"imap": {"auth": "xoauth2", "token_command": "get-token"}}, r"imap\.token_command = 'get-token': expected a "
                                                                  r"list of strings"),
    ({"oauth": {"provider": "microsoft"}}, r"oauth\.client_id = '': expected the application"),
    ({"oauth": {"authority": "http://login.example.com"}}, r"oauth\.authority = 'http://login\.example\.com': "
                                                           r"expected an https://"),
    ({"oauth": {"provider": "yahoo"}}, r"oauth\.provider = 'yahoo': expected one of '', 'microsoft', 'google'"),
])
def test_sign_in_config_errors(over: dict[str, Any], message: str) -> None:
    from bot.config import from_dict

    with pytest.raises(ConfigError, match=message):
        from_dict(merge(EXAMPLE, over), "config.toml")


def test_sign_in_config_errors_in_french(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import from_dict

    monkeypatch.setenv("RELANCE_LANG", "fr")
    with pytest.raises(ConfigError, match=r"imap\.auth = 'xoauth2': attendu : imap\.token_command, ou \[oauth\]"):
        from_dict(merge(EXAMPLE, {"imap": {"auth": "xoauth2"}}), "config.toml")


def test_existing_configs_keep_signing_in_with_the_password(make_config: Callable[..., Config],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No `auth` key: the password, from the environment, as before."""
    monkeypatch.setenv("RELANCE_IMAP_PASSWORD", "hunter2")
    cfg = make_config()
    assert cfg.smtp.auth == cfg.imap.auth == "password"
    login_with = credential(cfg, "imap")
    assert login_with is not None and login_with.reveal() == "hunter2"  # type: ignore[union-attr]


def test_check_refuses_an_unsafe_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`relance check` (offline) looks at the token file: one others can read fails the check."""
    from bot.cli import main
    from tests.test_contract_like import toml_dump

    monkeypatch.setenv("RELANCE_LANG", "en")
    monkeypatch.setenv("RELANCE_SMTP_PASSWORD", "x")
    doc = merge(EXAMPLE, {"database": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
                          "imap": {"auth": "xoauth2"},
                          "oauth": {"provider": "google", "client_id": "cid", "token_file": "tok.json"}})
    (tmp_path / "config.toml").write_text(toml_dump(doc))
    assert main(["--config", str(tmp_path / "config.toml"), "init"]) == 0
    tokenfile.write(tmp_path / "tok.json", {"provider": "google", "refresh_token": "r"})
    args = ["--config", str(tmp_path / "config.toml"), "check", "--now", "2026-03-02T10:00:00+01:00"]
    assert main(args) == 0
    assert "imap: imap.example.com:993 (implicit), xoauth2, token from " in capsys.readouterr().out
    (tmp_path / "tok.json").chmod(0o640)
    assert main(args) == 1
    assert "others can read or write it (mode 0o640): refused" in capsys.readouterr().err


def test_check_looks_for_the_token_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`relance check` (offline) finds the broker program, without running it."""
    from bot.cli import main
    from tests.test_contract_like import toml_dump

    monkeypatch.setenv("RELANCE_LANG", "en")
    monkeypatch.setenv("RELANCE_IMAP_PASSWORD", "x")
    marker = tmp_path / "ran"
    args = ["--config", str(tmp_path / "config.toml"), "check", "--now", "2026-03-02T10:00:00+01:00"]
    for command, code in (([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], 0),
                          (["/nonexistent/mail-token"], 1)):
        doc = merge(EXAMPLE, {"database": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
                              "smtp": {"auth": "xoauth2", "token_command": command}})
        (tmp_path / "config.toml").write_text(toml_dump(doc))
        assert main(["--config", str(tmp_path / "config.toml"), "init"]) == 0
        assert main(args) == code
    out = capsys.readouterr()
    assert "smtp: smtp.example.com:587 (starttls), xoauth2, token from " in out.out
    assert "'/nonexistent/mail-token': no such program" in out.err
    assert not marker.exists(), "the check does not run the broker"
