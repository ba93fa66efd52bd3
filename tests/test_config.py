"""Config loading: the example is complete and valid; every mistake names file, key and value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load
from bot.errors import ConfigError
from tests.conftest import EXAMPLE, ROOT, merge


def test_example_config_loads() -> None:
    cfg = load(ROOT / "config.example.toml")
    assert [s.name for s in cfg.stages] == ["reminder", "second_reminder", "formal_notice"]
    assert cfg.ladder[0].delay_days == 3 and cfg.ladder[2].penalties


def test_example_documents_every_field() -> None:
    """Every config field appears in config.example.toml (Datasette-style documentation test)."""
    text = (ROOT / "config.example.toml").read_text()
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        section = f.name
        assert re.search(rf"^\[\[?{section}\]\]?$", text, re.M), f"[{section}] is not documented"
    for section, cls in [(s, type(getattr(load(ROOT / "config.example.toml"), s)))
                         for s in ("database", "company", "smtp", "imap", "oauth", "schedule", "pause",
                                   "penalties", "templates", "costs")]:
        for field in dataclasses.fields(cls):
            assert re.search(rf"^{field.name}\s*=", text, re.M), f"{section}.{field.name} is not documented"


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    from tests.test_contract_like import toml_dump

    path = tmp_path / "config.toml"
    path.write_text(toml_dump(doc))
    return path


@pytest.mark.parametrize(("over", "message"), [
    ({"smtp": {"hots": "x"}}, r"smtp\.hots: unknown key; did you mean 'smtp\.host'\?"),
    ({"shedule": {}}, r"shedule: unknown key; did you mean 'schedule'\?"),
    ({"smtp": {"port": "587"}}, r"smtp\.port = '587': expected a whole number"),
    ({"smtp": {"tls": "ssl"}}, r"smtp\.tls = 'ssl': expected one of 'starttls', 'implicit', 'none'"),
    ({"schedule": {"business_days_only": "yes"}}, r"schedule\.business_days_only = 'yes': expected true or false"),
    ({"schedule": {"timezone": "Paris"}}, r"schedule\.timezone = 'Paris': expected an IANA time zone"),
    ({"schedule": {"window": ["17:00", "09:00"]}}, r"schedule\.window"),
    ({"schedule": {"holidays": "XX"}}, r"schedule\.holidays = 'XX'"),
    ({"penalties": {"fixed_indemnity": "forty"}}, r"penalties\.fixed_indemnity = 'forty': expected a decimal"),
    ({"penalties": {"ecb_rates": {"2025-S1": "3.15"}}}, r'penalties\.ecb_rates\."2025-S1"'),
    ({"stages": [{"name": "a", "after_previous_days": 3}]}, r"stages\[0\]\.after_due_days: missing"),
    ({"stages": [{"name": "a", "after_due_days": 3}, {"name": "b"}]}, r"stages\[1\]\.after_previous_days"),
    ({"stages": [{"name": "a", "after_due_days": 3, "delay": 2}]}, r"stages\[0\]\.delay: unknown key"),
    # what the composer would refuse on every message: refused here, not on each reminder
    ({"company": {"reply_to": "Compta <ar+{token}@acme.example>"}}, r"company\.reply_to = "),
    ({"company": {"email": "relances@acme.example\nBcc: x@evil.example"}}, r"company\.email = "),
    ({"daemon": {"metrics_port": 70000}}, r"daemon\.metrics_port = 70000: expected a TCP port from 1 to 65535 \(served "
                                          r"on 127\.0\.0\.1 only\), or 0"),
    ({"daemon": {"metrics_port": "9464"}}, r"daemon\.metrics_port = '9464': expected a whole number"),
    ({"daemon": {"metrics_prot": 9464}}, r"daemon\.metrics_prot: unknown key; did you mean 'daemon\.metrics_port'\?"),
])
def test_config_errors_name_file_key_and_value(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    path = write(tmp_path, merge(EXAMPLE, over))
    with pytest.raises(ConfigError, match=message) as e:
        load(path)
    assert str(e.value).startswith(str(path))


def test_missing_password_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELANCE_SMTP_PASSWORD", raising=False)
    cfg = load(ROOT / "config.example.toml")
    with pytest.raises(ConfigError, match="RELANCE_SMTP_PASSWORD.* is not set"):
        cfg.smtp.password(cfg.source)


def test_password_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_SMTP_PASSWORD", "hunter2")
    cfg = load(ROOT / "config.example.toml")
    secret = cfg.smtp.password(cfg.source)
    assert secret is not None and secret.reveal() == "hunter2"
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in repr(cfg)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\nhost = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
