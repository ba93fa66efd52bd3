"""`relance run`: sends what is due, and on SIGTERM finishes the message in flight and exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from tests.servers import SmtpSink, smtp_server
from tests.test_contract_like import Cli

# Five days overdue by the real clock (the daemon reads it), whatever the day the tests run.
DUE = date.today() - timedelta(days=5)  # noqa: DTZ011 - the daemon runs on the real clock
LEDGER = "number,client,email,amount,currency,issue_date,due_date\n" + "".join(
    f"F-{i},Client {i},c{i}@exemple.example,{100 + i}.00,EUR,{DUE - timedelta(days=30)},{DUE}\n" for i in range(5))


def start(tmp_path: Path, port: int, rate: int, *options: str, metrics_port: int = 0
          ) -> tuple[Cli, subprocess.Popen[str]]:
    cli = Cli(tmp_path, port)
    cfg = (tmp_path / "config.toml").read_text()
    cfg = cfg.replace("metrics_port = 0", f"metrics_port = {metrics_port}")
    cfg = cfg.replace('window = ["09:00", "17:00"]', 'window = ["00:00", "24:00"]')
    cfg = cfg.replace("business_days_only = true", "business_days_only = false")
    cfg = cfg.replace('holidays = "FR"', 'holidays = ""')
    cfg = cfg.replace("rate_per_minute = 0", f"rate_per_minute = {rate}")
    (tmp_path / "config.toml").write_text(cfg)
    cli("init")
    (tmp_path / "ledger.csv").write_text(LEDGER)
    assert cli("import", "ledger.csv").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(tmp_path / "config.toml"), "run",
                             *options],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return cli, proc


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError


@dataclass
class Daemon:
    """A `relance run` started by `daemon()`; `err` is its stderr once it has stopped."""

    cli: Cli
    proc: subprocess.Popen[str]
    sink: SmtpSink
    port: int
    err: str = ""


@contextmanager
def daemon(tmp_path: Path, rate: int = 0, *options: str, metrics_port: int = 0) -> Iterator[Daemon]:
    """`relance run` with an SMTP server of its own, stopped by SIGTERM when the block ends."""
    with smtp_server() as (sink, port):
        cli, proc = start(tmp_path, port, rate, *options, metrics_port=metrics_port)
        run = Daemon(cli, proc, sink, port)
        try:
            yield run
        finally:
            proc.send_signal(signal.SIGTERM)
            _, run.err = proc.communicate(timeout=30)


def test_run_sends_and_stops_gracefully(tmp_path: Path) -> None:
    with daemon(tmp_path) as run:
        wait_for(lambda: len(run.sink.received) == 5)
    assert run.proc.returncode == 0, run.err
    assert "relance stopped" in run.err and run.err.count("INFO sent F-") == 5


def test_sigterm_finishes_the_message_in_flight_and_leaves_the_rest_pending(tmp_path: Path) -> None:
    with daemon(tmp_path, rate=60) as run:  # one a second
        wait_for(lambda: len(run.sink.received) >= 1)
    got = len(run.sink.received)
    assert run.proc.returncode == 0, run.err
    assert 1 <= got < 5
    cli = run.cli
    rows = json.loads(cli("status", "--json").stdout)
    assert sum(1 for r in rows if r["stage"] == "reminder") == got, "what went out is recorded as sent"
    with smtp_server() as (sink2, port2):
        cfg = (tmp_path / "config.toml").read_text()
        cfg = cfg.replace(f"port = {run.port}", f"port = {port2}")
        cfg = cfg.replace("rate_per_minute = 60", "rate_per_minute = 0")
        (tmp_path / "config.toml").write_text(cfg)
        r = cli("tick")
        assert r.returncode == 0, r.stderr
        assert len(sink2.received) == 5 - got, "the rest goes out at the next pass, none twice"


def test_a_second_daemon_on_the_same_sqlite_file_stops_with_a_clear_message(tmp_path: Path) -> None:
    with daemon(tmp_path) as run:
        wait_for(lambda: len(run.sink.received) == 5)
        second = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(tmp_path / "config.toml"),
                                 "run"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1, second.stderr
        assert "another `relance run` uses this database (pid " in second.stderr, second.stderr
        assert run.proc.poll() is None, "the first one runs on"
    assert run.proc.returncode == 0, run.err


def test_sighup_reloads_the_configuration_and_refuses_a_bad_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    with daemon(tmp_path) as run:
        wait_for(lambda: len(run.sink.received) == 5)
        good = config.read_text()
        config.write_text(good.replace("[company]", "[company\n"))  # not TOML
        run.proc.send_signal(signal.SIGHUP)
        time.sleep(2)  # the handler reads the file when the loop takes the signal
        config.write_text(good.replace('name = "ACME SAS"', 'name = "ACME Holding"'))
        run.proc.send_signal(signal.SIGHUP)
        time.sleep(2)  # the handler reads the file when the loop takes the signal
        assert run.proc.poll() is None, "a bad configuration never stops the daemon"
    assert run.proc.returncode == 0, run.err
    assert "SIGHUP: configuration not reloaded, the running one stays:" in run.err and "config.toml" in run.err
    assert f"SIGHUP: configuration and templates reloaded from {config}" in run.err


def test_json_logs_are_one_object_a_line(tmp_path: Path) -> None:
    with daemon(tmp_path, 0, "--log-format", "json") as run:
        wait_for(lambda: len(run.sink.received) == 5)
    assert run.proc.returncode == 0, run.err
    lines = [json.loads(line) for line in run.err.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert sum(1 for d in lines if d["message"].startswith("sent F-")) == 5
    assert lines[-1]["message"] == "relance stopped"
    doc = json.loads(run.cli("status", "--health", "--json").stdout)
    assert doc["healthy"] and doc["last_send_at"], "the pass's heartbeats and sends are on record"
    assert doc["components"]["scheduler"]["last_ok_at"] and doc["components"]["smtp"]["last_ok_at"]
