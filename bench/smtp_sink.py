"""An SMTP sink for the benchmark, in its own process so it does not share our GIL.

Usage: python bench/smtp_sink.py PORT  (prints "ready" once listening; counts messages on SIGTERM)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller


class Count:
    n = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.n += 1
        return "250 OK"


def main() -> None:
    handler = Count()
    ctl = Controller(handler, hostname="127.0.0.1", port=int(sys.argv[1]))
    ctl.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    ctl.stop()
    print(handler.n, flush=True)


if __name__ == "__main__":
    main()
