"""The service files in contrib/: the systemd unit passes `systemd-analyze verify`, and the
container image builds, where the machine has the tools (a container build needs a Docker daemon)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    relance = Path(sys.executable).parent / "relance"
    unit = (ROOT / "contrib" / "relance.service").read_text().replace("/opt/relance/.venv/bin/relance", str(relance))
    (tmp_path / "relance.service").write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "relance.service")], capture_output=True,
                       text=True, check=False, timeout=60)
    assert r.returncode == 0 and "Unknown" not in r.stderr, r.stderr
    for hardening in ("ProtectSystem=strict", "PrivateTmp=true", "NoNewPrivileges=true", "StateDirectory=relance",
                      "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert hardening in unit


def test_the_container_image_builds() -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True,
                                                         check=False).returncode != 0:
        pytest.skip("no Docker daemon on this machine")
    r = subprocess.run(["docker", "build", "-q", "-f", "contrib/Dockerfile", "-t", "relance-test", "."], cwd=ROOT,
                       capture_output=True, text=True, check=False, timeout=900)
    assert r.returncode == 0, r.stderr
